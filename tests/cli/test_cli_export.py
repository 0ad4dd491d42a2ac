"""``quantviz export`` and ``quantviz benchmark`` from the command line."""
from __future__ import annotations

import json

import pytest

from quantviz.cli.main import main
from quantviz.core.errors import SourceError


@pytest.fixture(scope="module", autouse=True)
def _demo_available():
    from quantviz.core.sources import load_model

    try:
        load_model("demo")
    except SourceError as exc:
        pytest.skip(f"demo not available: {exc}")


def test_export_json_then_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "cfg.json"
    assert main(["export", "demo", "--preset", "W8A8", "--format", "json", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["config"]["name"] == "W8A8"
    before = out.read_bytes()
    assert main(["export", "demo", "--preset", "W4", "--format", "json", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert out.read_bytes() == before
    assert main(["export", "demo", "--preset", "W4", "--format", "json", "--out", str(out), "--force"]) == 0
    assert json.loads(out.read_text())["config"]["name"] == "W4"


def test_export_needs_a_config(tmp_path, capsys):
    assert main(["export", "demo", "--format", "json", "--out", str(tmp_path / "x.json")]) == 1
    assert "--preset" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_benchmark_json(capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torchao")
    assert main(["benchmark", "demo", "--preset", "W8", "--json", "--repeats", "1", "--batch", "4"]) == 0
    rep = json.loads(capsys.readouterr().out)
    for k in ("float", "torchao", "onnxruntime"):
        assert rep[k]["size_bytes"] > 0 and rep[k]["latency_ms"] > 0
    assert rep["onnxruntime"]["size_bytes"] < rep["onnxruntime_float"]["size_bytes"]
    assert abs(rep["onnxruntime"]["accuracy"] - rep["simulated"]["accuracy"]) <= 0.002
    assert set(rep["torchao"]["real_kernels"]) == {"classifier.1", "classifier.3"}
    assert rep["pt2e"]["real_kernels"] == []  # W8 keeps activations float: no int8 kernel
    assert set(rep["pt2e"]["simulated"]) == set(rep["torchao"]["simulated"]) | {"classifier.1", "classifier.3"}


def test_benchmark_pt2e_runs_convolutions_on_int8_kernels(capsys):
    pytest.importorskip("torchao")
    assert main(["benchmark", "demo", "--preset", "W8A8", "--json", "--repeats", "1", "--batch", "8",
                 "--backends", "pt2e"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert "torchao" not in rep and "onnxruntime" not in rep
    assert {"features.0", "features.3", "features.7"} <= set(rep["pt2e"]["real_kernels"])
    assert rep["pt2e"]["size_bytes"] < 0.5 * rep["float"]["size_bytes"]
    assert abs(rep["pt2e"]["accuracy"] - rep["simulated"]["accuracy"]) <= 0.005
    assert rep["pt2e"]["sqnr_db_vs_simulated"] > 30
