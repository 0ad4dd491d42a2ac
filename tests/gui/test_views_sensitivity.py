import pytest
import torch
from torch import nn

from quantviz.core.model.data import Dataset
from quantviz.core.sources.base import ModelBundle
from quantviz.io.config import preset
from quantviz.session import Session


@pytest.fixture(scope="module")
def session():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    with torch.no_grad():
        m[2].weight[:, 0] *= 30.0
    x = torch.randn(48, 6)
    with torch.no_grad():
        y = m(x).argmax(1)
    data = Dataset(x, y)
    s = Session(ModelBundle(model=m, name="mlp", kind="recipe", reference="mlp", eval=data, calib=data),
                eval_data=data, calib_data=data, config=preset("W8"), batch_size=16)
    s.prepare()

    s.run_sensitivity("e2e", bits=(2, 4))
    s.run_sensitivity("local", bits=(2, 4))
    s.check(config=preset("W4"))
    s.run_search(avg_bits=5.5, bits=(2, 4), pareto_steps=2)  # tiny layers: scales add 2.8 bits / weight
    return s


def test_sensitivity_view_shows_heatmap_and_emits_layer(qtbot, session):
    from quantviz.gui.views.sensitivity import SensitivityView

    w = SensitivityView()
    qtbot.addWidget(w)
    w.set_session(session)
    assert [w.method_combo.itemData(i) for i in range(w.method_combo.count())] == ["e2e", "local"]
    assert w._values.shape == (3, 2)
    assert w._bar_names[0] in ("0", "2", "4") and len(w._bar_names) == 3
    # 2-bit cells are at least as bad as 4-bit ones (fidelity colouring)
    w.mode_combo.setCurrentIndex(w.mode_combo.findData("fid"))
    assert (w._values[:, 0] >= w._values[:, 1]).all()
    with qtbot.waitSignal(w.layerClicked) as sig:
        w._on_bars_clicked.__self__.layerClicked.emit(w._bar_names[0])
    assert sig.args == [w._bar_names[0]]


def test_pareto_view_emits_full_config(qtbot, session):
    from quantviz.gui.views.pareto import ParetoView

    w = ParetoView()
    qtbot.addWidget(w)
    w.set_session(session)
    pts = w.front_item.scatter.points()
    assert len(pts) == len(session.analysis.search["pareto"]) and len(w.hist_item.points()) == 1
    with qtbot.waitSignal(w.configChosen) as sig:
        w._on_points_clicked(pts[:1])
    assert sig.args[0]["format"] == "quantviz-config" and sig.args[0]["layers"]


def test_config_diff_lists_differing_layers(qtbot, session):
    from quantviz.gui.views.config_diff import ConfigDiffView

    w = ConfigDiffView()
    qtbot.addWidget(w)
    other = preset("W8").copy()
    other.set_layer("2", {"weight": {"bits": 4}})
    w.set_data(session.layers, session.config, other)
    assert w.summary.text() == "1 of 3 layers differ"
    assert w.table.item(0, 0).text() == "2" and "W INT4" in w.table.item(0, 2).text()
    w.only_diff.setChecked(True)
    assert w.table.rowCount() == 1


def test_config_diff_describes_formats_and_algorithms_and_marks_only_real_differences():
    """Issue 22 G: NVFP4 / MXFP4 layers read "W4 per-ch minmax" without the algorithm, and against the
    NVFP4 preset rows were marked differing while reading the same."""
    from quantviz.core.numerics.describe import describe_layer
    from quantviz.gui.views.config_diff import diff_rows
    from quantviz.io.config import QuantConfig

    s = Session.open("demo", prepare=False)
    # NVFP4 reached another way: a block format ignores granularity and range method
    same = QuantConfig.from_dict({"version": 1, "default": {"weight": {
        "bits": 4, "format": "nvfp4", "granularity": "per_group", "group_size": 64, "range": {"method": "mse"}}}})
    rows = diff_rows(s.layers, same, preset("NVFP4"))
    assert all("NVFP4 block 16" in a and "per-ch" not in a for _, a, _, _ in rows)
    assert not any(d for *_, d in rows)
    other = same.copy()
    other.set_layer("features.7", {"weight": {"format": "int", "algorithm": "gptq"}})  # algorithms fit int grids
    other.set_layer("classifier.1", {"weight": {"format": "mxfp4"}})
    rows = {n: (a, b, d) for n, a, b, d in diff_rows(s.layers, preset("NVFP4"), other)}
    assert rows["features.7"][2] and "gptq" in rows["features.7"][1] and "NVFP4" not in rows["features.7"][1]
    assert rows["classifier.1"][2] and "MXFP4 block 32" in rows["classifier.1"][1]
    assert all(a != b for a, b, d in rows.values() if d) and sum(d for *_, d in rows.values()) == 2
    assert rows["features.0"][0] == describe_layer(preset("NVFP4").resolve(s.layer("features.0")))
