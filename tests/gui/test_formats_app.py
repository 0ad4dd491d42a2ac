"""GPT-2, .pt2 and TorchScript models in the app look like any other model (issue 12, section 5):
the table, the summary's language-model metrics, the histograms, and a weights-only file's note."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from fixtures import resnet18, tiny_gpt2, token_npz  # noqa: E402

pytest.importorskip("transformers")


class _Loopy(torch.nn.Module):
    """A scripted module torch's converter cannot take (a data-dependent loop): weights only."""

    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(6, 8)
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, x):
        y = self.fc1(x)
        for i in range(int(x.shape[0] % 3)):
            y = torch.relu(y) + float(i)
        return self.fc(y)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("formats_app")
    tiny_gpt2(d / "gpt2")
    token_npz(d / "tokens.npz", n=8, seq=16, pad_from=10)
    m = resnet18()
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        np.savez(d / "data.npz", x=x.numpy(), y=m(x).argmax(1).numpy())
        torch.jit.save(torch.jit.trace(m, x[:4]), str(d / "dyn.ts"))
    torch.export.save(torch.export.export(m, (x[:1],)), str(d / "one.pt2"))
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(_Loopy().eval()), str(d / "loopy.ts"))
    np.savez(d / "d6.npz", x=torch.randn(16, 6).numpy())
    return d


@pytest.fixture
def open_window(qtbot, wait_idle):
    from quantviz.gui.main_window import MainWindow

    wins = []

    def open_(model, data):
        win = MainWindow()
        qtbot.addWidget(win)
        win.resize(1280, 800)
        win.show()
        win.open_model(str(model), data=str(data))
        qtbot.waitUntil(lambda: win.session is not None or win.last_error is not None, timeout=120000)
        wait_idle(win, 120000)
        assert win.session is not None, win.last_error
        wins.append(win)
        return win

    yield open_
    for win in wins:
        win.unsaved.mark_clean()
        win.close()


def test_gpt2_table_summary_histogram_and_sensitivity(files, open_window, wait_idle):
    from PySide6.QtCore import Qt

    from quantviz.gui.views.layer_model import COL
    from quantviz.gui.views.sensitivity import NAME_PX

    win = open_window(files / "gpt2", files / "tokens.npz")
    t = win.table
    types = {t.proxy.index(r, COL["name"]).data(): t.proxy.index(r, COL["type"]).data() for r in range(t.proxy.rowCount())}
    for i in range(2):
        for proj in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            assert types[f"transformer.h.{i}.{proj}"] == "Conv1D"
    # the summary leads with the language model's task metric and shows the KL divergence
    rows = win.summary.metric_rows()
    assert rows[0] == "perplexity" and "kl_div" in rows
    assert win.summary.cells["kl_div"][3].text() == ""  # against float's 0 the change is the value itself
    # a Conv1D layer's histograms, as for any layer
    t.select_layer("transformer.h.1.mlp.c_fc")
    h = win.histogram
    assert "Conv1D · weight 32×128" in h.header.text()
    assert h.weights.stats.text() and "SQNR" in h.weights.stats.text()
    # rank by KL: the table's column says so; long names keep their end on the heatmap's axis
    assert win.sensitivity.metric_combo.currentData() == "perplexity"
    pareto = win.pareto.metric_combo
    assert pareto.currentData() == "perplexity"  # the hand-made points are drawn by the task metric
    win.session.set_analysis_metric("kl_div")
    assert pareto.currentData() == "kl_div"  # and follow the metric chosen for ranking
    win.session.run_sensitivity("e2e", bits=(2, 8))
    wait_idle(win)
    win.session.run_search(avg_bits=5.0, bits=(2, 8), pareto_steps=2)
    wait_idle(win)
    assert pareto.currentData() == "kl_div"  # the search's metric
    i = pareto.findData("cosine")
    pareto.setCurrentIndex(i)
    pareto.activated.emit(i)  # the user's own choice stays through later results
    win.session.set_analysis_metric(None)
    assert pareto.currentData() == "cosine"
    win.session.set_analysis_metric("kl_div")
    assert t.model.headerData(COL["sensitivity"], Qt.Horizontal) == "ΔKL @2b"
    assert "KL divergence increase" in t.model.headerData(COL["sensitivity"], Qt.Horizontal, Qt.ToolTipRole)
    ticks = [s for _v, s in win.sensitivity.heat.getPlotItem().getAxis("left")._tickLevels[0]]
    assert ticks[2].startswith("…") and ticks[2].endswith("h.0.attn.c_attn")
    fm = win.sensitivity.fontMetrics()
    assert max(fm.horizontalAdvance(s) for s in ticks) <= NAME_PX


def test_weights_only_torchscript_says_so_in_one_line(files, open_window):
    from quantviz.gui.views.layer_model import COL

    win = open_window(files / "loopy.ts", files / "d6.npz")
    t = win.table
    note = t.note
    assert note.isVisible() and note.text().startswith("⚠")
    assert "\n" not in note.text() and note.height() < 2.5 * note.fontMetrics().height()  # one line
    assert note.text().endswith("activations cannot be simulated")  # elided in the middle: the verdict shows
    assert "prim::Loop" in note.toolTip()
    for key in ("act_bits", "act_range", "act_sqnr_db"):
        idx = t.proxy.index(0, COL[key])
        assert idx.data() == "—" and not (idx.flags() & idx.flags().ItemIsEditable)
    assert "not simulated" in win.histogram.header.text()
    # a toy model's sizes read in bytes, not "KB (x0.001)"
    label = win.summary.plot.getAxis("bottom").labelString()
    assert "size (B)" in label and "x0.001" not in label


def test_pt2_and_torchscript_look_like_any_model(files, open_window):
    from quantviz.gui.views.layer_model import COL

    names = {}
    for f in ("one.pt2", "dyn.ts"):
        win = open_window(files / f, files / "data.npz")
        t = win.table
        names[f] = [t.model.name_at(r) for r in range(t.model.rowCount())]
        assert t.proxy.index(0, COL["weight_sqnr_db"]).data().endswith("dB")
        assert "Conv2d" in win.histogram.header.text()
        assert not t.note.text().startswith("⚠")  # both simulate weights and activations
        win.table.apply_field("act_bits", 8, names[f])  # activations simulated: the A SQNR column fills
        assert t.proxy.index(1, COL["act_bits"]).data() == "8"
    assert names["one.pt2"] == names["dyn.ts"] and len(names["dyn.ts"]) == 21
    assert "conv1" in names["dyn.ts"] and "layer1.0.conv1" in names["dyn.ts"]
