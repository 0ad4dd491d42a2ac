"""`quantviz inspect` / `quantviz evaluate` on the demo, in JSON and human form."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from quantviz.cli.main import main
from quantviz.core.sources.demo_model import DemoNet

ROOT = Path(__file__).resolve().parents[2]
DEMO_LAYERS = ["features.0", "features.3", "features.7", "classifier.1", "classifier.3"]


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_json_lists_the_demo_layers(capsys):
    code, out, err = _run(capsys, "inspect", "demo", "--json")
    assert code == 0
    info = json.loads(out)
    assert [l["name"] for l in info["layers"]] == DEMO_LAYERS
    net = DemoNet()
    for l in info["layers"]:
        mod = net.get_submodule(l["name"])
        assert l["type"] == type(mod).__name__
        assert l["weight_shape"] == list(mod.weight.shape)
        assert l["params"] == mod.weight.numel() + mod.weight.shape[0]  # weight + (folded) bias
    assert [c for c, _ in info["folded_batchnorm"]] == ["features.0", "features.3", "features.7"]


def test_inspect_human_table_and_no_fold(capsys):
    code, out, _ = _run(capsys, "inspect", "demo")
    assert code == 0
    lines = out.splitlines()
    assert any(l.split()[:2] == ["layer", "type"] for l in lines)
    for name in DEMO_LAYERS:
        assert any(l.startswith(name + " ") for l in lines), name
    assert "5 quantizable layers" in out and "BatchNorm folded" in out
    code, out, _ = _run(capsys, "inspect", "demo", "--no-fold-bn", "--json")
    assert code == 0 and json.loads(out)["folded_batchnorm"] == []


def _evaluate_json(capsys, *extra):
    code, out, err = _run(capsys, "evaluate", "demo", "--json", *extra)
    assert code == 0, err
    return json.loads(out)


def test_evaluate_w8a8_keeps_accuracy_and_is_four_times_smaller(capsys):
    rep = _evaluate_json(capsys, "--preset", "W8A8")
    f, q = rep["float"], rep["quantized"]
    assert set(q["metrics"]) >= {"accuracy", "sqnr_db", "cosine", "top1_agreement"}
    assert f["metrics"]["accuracy"] > 0.9
    assert abs(q["metrics"]["accuracy"] - f["metrics"]["accuracy"]) <= 0.005
    assert q["metrics"]["sqnr_db"] > 20 and q["metrics"]["cosine"] > 0.99
    ratio = f["size_bytes"] / q["size_bytes"]
    assert 3.5 <= ratio <= 4.1
    assert q["compression"] == pytest.approx(ratio) and q["element_bits"] == 8 and 8 < q["avg_bits"] < 8.5


def test_evaluate_w2_drops_accuracy_a_lot(capsys):
    float_acc = _evaluate_json(capsys, "--preset", "float")
    assert float_acc["quantized"]["metrics"]["sqnr_db"] >= 199  # nothing quantized: identical
    rep = _evaluate_json(capsys, "--preset", "W2")
    assert rep["float"]["metrics"]["accuracy"] - rep["quantized"]["metrics"]["accuracy"] > 0.1
    assert rep["quantized"]["metrics"]["sqnr_db"] < 15
    assert rep["quantized"]["element_bits"] == 2


def test_evaluate_human_output_is_a_table(capsys):
    code, out, _ = _run(capsys, "evaluate", "demo", "--preset", "W4")
    assert code == 0
    assert "metric" in out and "float" in out and "quantized" in out
    assert any(l.startswith("accuracy") and l.count("%") == 2 for l in out.splitlines())
    assert "compression" in out and "avg bits / weight" in out


def test_evaluate_with_a_config_file(capsys, tmp_path):
    cfg = {"format": "quantviz-config", "version": 1, "default": {"weight": {"bits": 8}},
           "layers": {"classifier.3": {"weight": {"bits": None}}}}
    p = tmp_path / "cfg.json"
    p.write_text(json.dumps(cfg))
    rep = _evaluate_json(capsys, "--config", str(p))
    assert 8 < rep["quantized"]["avg_bits"] < 9  # one small layer stays float


def test_grid_flag_and_version_1_files_keep_torch_rule(capsys, tmp_path):
    full = _evaluate_json(capsys, "--preset", "W3")
    torch_rule = _evaluate_json(capsys, "--preset", "W3", "--grid", "torch")
    assert full["config"]["default"]["weight"]["grid"] == "full"
    assert torch_rule["config"]["default"]["weight"]["grid"] == "torch"
    # min-max with torch's rule clips the top of every channel whose extreme is positive: the
    # full grid is clearly better at 3 bits on the demo (14.0 vs 8.6 dB when this was written)
    assert full["quantized"]["metrics"]["sqnr_db"] > torch_rule["quantized"]["metrics"]["sqnr_db"] + 3
    assert full["quantized"]["size_bytes"] == torch_rule["quantized"]["size_bytes"]
    old = tmp_path / "w3_v1.json"  # the W3 preset as a version-1 file: it meant torch's rule
    old.write_text(json.dumps({"format": "quantviz-config", "version": 1, "default": {
        "weight": {"bits": 3, "granularity": "per_channel", "symmetric": True, "range": {"method": "minmax"}},
        "activation": {"bits": None}}}))
    migrated = _evaluate_json(capsys, "--config", str(old))
    assert migrated["quantized"]["metrics"] == torch_rule["quantized"]["metrics"]
    with pytest.raises(SystemExit):  # argparse: --config and --preset stay exclusive
        main(["evaluate", "demo", "--preset", "W3", "--grid", "torch", "--config", str(old)])
    with pytest.raises(SystemExit):
        main(["evaluate", "demo", "--preset", "W3", "--grid", "narrow"])
    assert "invalid choice: 'narrow'" in capsys.readouterr().err


@pytest.mark.parametrize("args,needle", [
    (["--preset", "W7"], "unknown preset"),
    (["--config", "{missing}"], "no such file"),
    (["--config", "{bad}"], "bits"),
])
def test_bad_preset_or_config_is_one_line_exit_1(capsys, tmp_path, args, needle):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"version": 1, "default": {"weight": {"bits": 99}}}))
    args = [a.format(missing=tmp_path / "nope.json", bad=bad) for a in args]
    code, out, err = _run(capsys, "evaluate", "demo", *args)
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and needle in err and "Traceback" not in err


def test_progress_bar_goes_to_stderr_and_cuda_is_refused_cleanly(capsys):
    code, out, err = _run(capsys, "evaluate", "demo", "--preset", "W8", "--progress", "--json")
    assert code == 0 and "%" in err and "evaluating" in err
    json.loads(out)  # stdout stays clean JSON
    import torch

    if not torch.cuda.is_available():
        code, out, err = _run(capsys, "evaluate", "demo", "--device", "cuda")
        assert code == 1 and "CUDA" in err and len(err.strip().splitlines()) == 1


def _cli(*argv):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    return subprocess.run([sys.executable, "-m", "quantviz", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env)


def test_subprocess_evaluate_json():
    """``python -m quantviz`` in a real process: exit status 0 and the report as JSON on stdout. (A real
    process's exit status 1 with one error line is tested in tests/reliability/test_bad_inputs_cli.py.)"""
    ok = _cli("evaluate", "demo", "--preset", "W8A8", "--json", "--threads", "1")
    assert ok.returncode == 0, ok.stderr
    rep = json.loads(ok.stdout)
    assert rep["float"]["size_bytes"] > 3.5 * rep["quantized"]["size_bytes"]


def test_bad_preset_and_missing_model_are_one_line_errors(cli):
    """In this process: the error path is the same as a subprocess's (main returns the exit status)."""
    bad = cli("evaluate", "demo", "--preset", "nope")
    assert bad.code == 1 and bad.out == ""
    assert bad.err.strip().startswith("quantviz: error:") and len(bad.err_lines) == 1
    assert "Traceback" not in bad.err
    res = cli("inspect", "no_such_model.pt", "--json")
    assert res.code == 1 and "no_such_model.pt" in res.err and "Traceback" not in res.err
    assert len(res.err_lines) == 1 and res.out == ""


@pytest.mark.parametrize("preset, element", [("MXFP4", 4), ("NVFP4", 4), ("W4", 4)])
def test_bits_per_weight_count_the_scales_like_the_size(capsys, preset, element):
    """Issue 22 B: MXFP4 printed 4.00 bits / weight while its size counted the block scales (4.25).
    Bits per weight count every scale, as the size does; the element bits have their own field."""
    rep = _evaluate_json(capsys, "--preset", preset)["quantized"]
    assert rep["element_bits"] == element
    floor = {"MXFP4": 4.25, "NVFP4": 4.5, "W4": 4.0}[preset]
    assert floor < rep["avg_bits"] < floor + 0.5 or (preset != "W4" and rep["avg_bits"] == floor)
    code, out, _ = _run(capsys, "evaluate", "demo", "--preset", preset)
    line = next(l for l in out.splitlines() if l.startswith("avg bits / weight"))
    assert line.split()[-1] == f"{rep['avg_bits']:.2f}"
    assert any(l.startswith("element bits") and l.split()[-1] == f"{element:.2f}" for l in out.splitlines())
