"""Honest figures by default (#22 §2): the CLI says which samples its figures are on, the search's
pick is measured on the held-out samples, and the default search tries per-group and GPTQ settings
where they apply to the model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"


@pytest.fixture(scope="module")
def d64(tmp_path_factory):
    d = np.load(DEMO / "digits_test.npz")
    path = tmp_path_factory.mktemp("cli-holdout") / "d64.npz"
    np.savez(path, x=d["x"][:64], y=d["y"][:64])
    return path


def test_evaluate_names_both_counts_in_text_and_json(cli, d64):
    r = cli("evaluate", "demo", "--data", d64, "--preset", "W4", "--threads", "1")
    assert r.code == 0, r.err
    assert "digits-cnn (demo): 32 samples" in r.out
    assert "evaluated on 32 held-out samples; calibrated on 32 others of the same data" in r.out
    assert "calibration data" not in r.err
    r = cli("evaluate", "demo", "--data", d64, "--preset", "W4", "--calib-samples", "16", "--json", "--threads", "1")
    rep = json.loads(r.out)
    assert (rep["samples"], rep["calibration_samples"]) == (48, 16)
    assert rep["data"]["held_out"] is True and rep["data"]["on_calibration_data"] is False
    assert (rep["data"]["evaluation_samples"], rep["data"]["calibration_samples"]) == (48, 16)


def test_no_holdout_says_the_figures_are_on_calibration_data(cli, d64):
    r = cli("evaluate", "demo", "--data", d64, "--preset", "W4", "--no-holdout", "--json", "--threads", "1")
    assert r.code == 0, r.err
    rep = json.loads(r.out)  # stdout stays one JSON document
    assert rep["samples"] == 64 and rep["data"]["on_calibration_data"] is True
    assert "quantviz: note: evaluated on 64 samples, calibrated on 64 of the same samples: figures are on " \
           "calibration data (hold-out turned off)" in r.err
    r = cli("evaluate", "demo", "--data", d64, "--preset", "W4", "--no-holdout", "--threads", "1")
    assert "figures are on calibration data" in r.out


def test_bad_calib_samples_is_a_one_line_error(cli, d64):
    r = cli("evaluate", "demo", "--data", d64, "--calib-samples", "0")
    assert r.code != 0 and "Traceback" not in r.err
    assert "--calib-samples must be at least 1, got 0" in r.err and len(r.err.strip().splitlines()) == 1


def test_sensitivity_output_names_the_data(cli, d64):
    r = cli("sensitivity", "demo", "--data", d64, "--bits", "4,8", "--threads", "1", "--no-cache")
    assert r.code == 0, r.err
    assert "evaluated on 32 held-out samples" in r.out
    r = cli("sensitivity", "demo", "--data", d64, "--bits", "4,8", "--threads", "1", "--json")
    assert json.loads(r.out)["data"]["held_out"] is True


def test_search_pick_is_measured_on_the_held_out_samples(cli, d64, tmp_path):
    out = tmp_path / "pick.json"
    r = cli("search", "demo", "--data", d64, "--avg-bits", "4", "--candidates", "int2,int4,int4g32+gptq,int8",
            "--steps", "3", "--out", out, "--json", "--threads", "1", "--no-cache")
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert res["data"]["held_out"] is True and res["data"]["evaluation_samples"] == 32
    # the pick's metric is what evaluate measures for that config on the same held-out samples
    r2 = cli("evaluate", "demo", "--data", d64, "--config", out, "--json", "--threads", "1")
    ev = json.loads(r2.out)
    assert ev["samples"] == 32 and ev["data"]["held_out"] is True
    for k in ("accuracy", "sqnr_db"):
        assert ev["quantized"]["metrics"][k] == pytest.approx(res["chosen"]["metrics"][k], rel=1e-5, abs=1e-6)
    r = cli("search", "demo", "--data", d64, "--avg-bits", "4", "--candidates", "int2,int4,int8", "--steps", "2",
            "--threads", "1")
    assert "on 32 held-out samples (calibrated on 32 others)" in r.out


def test_default_search_tries_per_group_and_gptq_on_the_demo(cli, d64):
    r = cli("search", "demo", "--data", d64, "--avg-bits", "4", "--steps", "2", "--json", "--threads", "1")
    assert r.code == 0, r.err
    tried = json.loads(r.out)["bits"]
    assert {"int2", "int3", "int4", "int6", "int8", "int4g32", "int3g32", "int4+gptq", "int4g32+gptq",
            "int3g32+gptq"} == set(tried)
    r = cli("search", "demo", "--data", d64, "--avg-bits", "4", "--steps", "2", "--bits", "2,4,8", "--json",
            "--threads", "1")
    assert json.loads(r.out)["bits"] == [2, 4, 8]  # --bits: those bit-widths, nothing else


DEPTHWISE = '''
import torch
from torch import nn

def build_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1, groups=4),
                         nn.Flatten()).eval()

def evaluation_data():
    g = torch.Generator().manual_seed(1)
    return (torch.randn(48, 4, 5, 5, generator=g),)
'''


def test_default_search_stays_with_bit_widths_where_nothing_else_applies(cli, tmp_path):
    recipe = tmp_path / "depthwise.py"
    recipe.write_text(DEPTHWISE)  # grouped convolutions (no GPTQ) with rows of 9 weights (no groups of 32)
    r = cli("search", recipe, "--avg-bits", "8", "--steps", "2", "--json", "--threads", "1", "--no-cache")
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert res["bits"] == [2, 3, 4, 6, 8]
    assert res["data"]["held_out"] is True and res["data"]["evaluation_samples"] == 24
