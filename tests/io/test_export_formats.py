"""JSON, torchao and report exports; atomic, no-overwrite, nothing left on failure."""
from __future__ import annotations

import json
import re

import pytest
import torch

from quantviz.core.errors import SourceError
from quantviz.io.atomic import OutputExists
from quantviz.io.export import pt2e_program_path, torchao_script_path
from quantviz.session import Session


@pytest.fixture(scope="module")
def demo():
    try:
        s = Session.open("demo")
    except SourceError as exc:
        pytest.skip(f"demo not available: {exc}")
    s.apply_preset("W8A8")
    s.apply_preset("W4G32", ["classifier.1"])
    return s


def test_json_has_config_qparams_and_onnx_names(demo, tmp_path):
    p = tmp_path / "q.json"
    demo.export("json", p)
    doc = json.loads(p.read_text())
    assert doc["config"] == demo.config.to_dict()
    lay = doc["layers"]["classifier.1"]
    wq = demo.sim.quantize_weight("classifier.1", demo.specs["classifier.1"].weight).qparams
    assert lay["weight"]["scale"] == [float(v) for v in wq.scale]
    assert lay["weight"]["granularity"] == "per_group" and lay["weight"]["group_size"] == 32
    aq = demo.sim.activation_qparams("features.3", demo.specs["features.3"].activation)
    assert doc["layers"]["features.3"]["activation"]["zero_point"] == [int(aq.zero_point[0])]
    assert doc["layers"]["features.0"]["onnx"]["weight"] == "features.0.weight"
    assert doc["layers"]["features.0"]["onnx"]["input"] == "input"


def test_existing_file_needs_force_and_failure_leaves_nothing(demo, tmp_path, monkeypatch):
    p = tmp_path / "q.json"
    p.write_text("keep me")
    with pytest.raises(OutputExists):
        demo.export("json", p)
    assert p.read_text() == "keep me"
    demo.export("json", p, force=True)
    assert json.loads(p.read_text())["format"] == "quantviz-export"

    from quantviz.io import onnx_export

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(onnx_export, "save_model", boom)
    with pytest.raises(RuntimeError):
        demo.export("onnx", tmp_path / "m.onnx")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["q.json"]  # no partial or temp file


def test_cancelled_export_writes_nothing(demo, tmp_path):
    from quantviz.core.errors import Cancelled

    with pytest.raises(Cancelled):
        demo.export("onnx", tmp_path / "m.onnx", cancel=lambda: True)
    assert list(tmp_path.iterdir()) == []


def test_torchao_export_quantizes_linear_and_lists_simulated(demo, tmp_path):
    pytest.importorskip("torchao")
    p = tmp_path / "m.pt"
    res = demo.export("torchao", p)
    script = torchao_script_path(p)
    assert p.is_file() and script.is_file()
    saved = torch.load(p, weights_only=False)
    assert set(saved["kernels"]) == {"classifier.1", "classifier.3"}
    assert set(saved["simulated"]) == {"features.0", "features.3", "features.7"}
    assert "IntxWeightOnlyConfig" in saved["kernels"]["classifier.1"]
    src = script.read_text()
    compile(src, str(script), "exec")
    ns: dict = {}
    exec(src, ns)  # the script builds the same FqnToConfig with the installed torchao
    assert set(ns["CONFIG"].fqn_to_config) == {"classifier.1", "classifier.3"}
    assert any("features.0" in n for n in res.notes)
    wq = saved["state_dict"]["classifier.3.weight"]
    assert type(wq).__name__ != "Tensor" or wq.dtype != torch.float32  # really quantized storage


def test_torchao_export_writes_the_pt2e_int8_program_for_convolutions(demo, tmp_path):
    pytest.importorskip("torchao")
    p = tmp_path / "m.pt"
    res = demo.export("torchao", p)
    prog = pt2e_program_path(p)
    assert prog in res.paths and prog.is_file()
    assert any("pt2e int8 program" in n and "features.0" in n for n in res.notes)
    module = torch.export.load(str(prog)).module()
    xs = demo.eval_data.subset(13).x  # another batch size than the export's example
    with torch.no_grad():
        out = module(xs)
        demo.sim.apply(demo.specs)
        sim = demo.sim.qmodel(xs)
    from quantviz.core.numerics.sqnr import tensor_sqnr_db

    assert out.shape == sim.shape and tensor_sqnr_db(sim, out) > 30


def test_torchao_notes_say_per_layer_type_what_runs_on_int8_kernels(demo, tmp_path):
    """Convolutions the pt2e program lowers to int8 kernels are not called "simulated" without
    saying where; without a pt2e program they are simulated."""
    pytest.importorskip("torchao")
    res = demo.export("torchao", tmp_path / "m.pt")
    convs = [l.name for l in demo.layers if l.type == "Conv2d"]
    assert set(convs) <= set(res.details["pt2e_kernels"])
    assert "Conv2d: 3 on int8 kernels in the pt2e program m_pt2e.pt2 (3 of them fake-quantized in m.pt: " \
           "torchao has no Conv2d kernel)" in res.notes
    assert any(n.startswith("Linear: 2 on torchao kernels in m.pt; ") for n in res.notes)
    for c in convs:
        mine = [n for n in res.notes if n.startswith(f"{c}:")]
        assert len(mine) == 1 and mine[0].startswith(f"{c}: int8 kernel in the pt2e program m_pt2e.pt2; simulated in m.pt")
    s = Session.open("demo")
    s.apply_preset("W8")  # float activations: no pt2e program, the convolutions are simulated
    res = s.export("torchao", tmp_path / "w8.pt")
    assert res.details["pt2e_kernels"] == [] and not pt2e_program_path(tmp_path / "w8.pt").exists()
    assert "Conv2d: 3 simulated (fake-quantized weights)" in res.notes
    assert not any("int8 kernel" in n for n in res.notes)
    assert all(any(n.startswith(f"{c}: simulated (") for n in res.notes) for c in convs)


def test_torchao_script_applies_the_pt2e_flow_to_a_fresh_model(tmp_path):
    pytest.importorskip("torchao")
    from quantviz.core.numerics.sqnr import tensor_sqnr_db
    from quantviz.core.sources import load_model

    s = Session.open("demo")
    s.apply_preset("W8A8")
    p = tmp_path / "m.pt"
    s.export("torchao", p)
    ns: dict = {}
    exec(torchao_script_path(p).read_text(), ns)
    assert set(ns["PT2E_INPUT_RANGES"]) == set(s.layer_names)
    fresh = load_model("demo").model  # the user's own model: BatchNorm not folded, float weights
    calib = [x for x, _ in s.calib_data.batches(64)]
    mine = ns["apply_pt2e"](fresh, (calib[0],), calib[1:])
    saved = torch.export.load(str(pt2e_program_path(p))).module()
    xs = s.eval_data.subset(64).x
    with torch.no_grad():
        assert tensor_sqnr_db(saved(xs), mine(xs)) > 30


def test_report_is_self_contained_html_with_charts(demo, tmp_path):
    cell = lambda d: {"metrics": {"sqnr_db": 30.0}, "drop": {"accuracy": d}}  # noqa: E731
    demo.analysis.sensitivity = {"e2e": {"method": "e2e", "metric": "accuracy", "bits": [8, 4, 2],
                                          "layers": [{"name": n, "results": {"8": cell(0.0), "4": cell(0.01), "2": cell(0.2)}}
                                                     for n in demo.layer_names]}}
    pt = lambda size, acc: {"size_bytes": size, "avg_bits": 4.0, "metrics": {"accuracy": acc}}  # noqa: E731
    demo.analysis.search = {"pareto": [pt(20000, 0.95), pt(40000, 0.99)], "chosen": pt(40000, 0.99),
                             "metric": "accuracy", "candidates": 2}
    p = tmp_path / "r.html"
    try:
        demo.export("report", p)
    finally:
        demo.clear_analysis()
    html = p.read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert html.count("<svg") >= 5  # size, metrics, heatmap, pareto, histograms
    assert "Sensitivity" in html and "Pareto" in html and "accuracy drop" in html
    assert not re.search(r'(src|href)="(http|file|/)', html)  # nothing external
    for name in demo.layer_names:
        assert name in html
    p2 = tmp_path / "r2.html"
    demo.export("report", p2)
    assert "Sensitivity" not in p2.read_text()  # skipped when not computed
