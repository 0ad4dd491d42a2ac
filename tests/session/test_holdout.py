"""Held-out evaluation (#22 §2): one data set is split so calibration never sees the samples the
figures are measured on; both counts are known; an explicit --calib, the demo's own data and
sessions saved before keep their data."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from quantviz.core.model.data import MIN_HELD_OUT, DataError, Dataset, split_holdout
from quantviz.session import Session

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"


def _numbered(n: int) -> Dataset:
    """Samples that say which they are: x[i] == i."""
    return Dataset(torch.arange(n, dtype=torch.float32).view(n, 1), torch.arange(n) % 3, name="nums")


@pytest.mark.parametrize("n, asked, calib", [(100, 512, 50), (1000, 512, 500), (2000, 512, 512), (100, 30, 30), (17, 512, 8),
                                             (2 * MIN_HELD_OUT, 512, MIN_HELD_OUT)])
def test_split_counts_no_overlap_and_order(n, asked, calib):
    c, e, split = split_holdout(_numbered(n), asked)
    assert (len(c), len(e)) == (calib, n - calib) == (split.calib_samples, split.eval_samples)
    assert split.held_out and split.same_source and not split.on_calibration_data
    cx, ex = c.x.view(-1).tolist(), e.x.view(-1).tolist()
    assert not set(cx) & set(ex)  # no sample in both
    assert cx == list(range(calib)) and ex == list(range(calib, n))  # first for calibration, the rest evaluated
    assert torch.equal(e.y, torch.arange(calib, n) % 3)  # labels travel with their samples
    assert len(e) >= len(c)  # at least half is held out
    c2, e2, split2 = split_holdout(_numbered(n), asked)  # deterministic
    assert torch.equal(c2.x, c.x) and torch.equal(e2.x, e.x) and split2 == split


def test_too_few_samples_or_no_holdout_say_the_figures_are_on_calibration_data():
    n = 2 * MIN_HELD_OUT - 1
    c, e, split = split_holdout(_numbered(n), 512)
    assert len(e) == n and len(c) == n and split.on_calibration_data and not split.held_out
    assert "figures are on calibration data" in split.describe() and f"{n} samples are too few" in split.describe()
    c, e, split = split_holdout(_numbered(100), 40, hold_out=False)
    assert (len(c), len(e)) == (40, 100) and split.on_calibration_data
    assert "hold-out turned off" in split.describe()
    assert split.to_dict()["on_calibration_data"] is True
    with pytest.raises(DataError, match="at least 1"):
        split_holdout(_numbered(100), 0)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """64 of the demo's test samples as --data, and 10 as a set too small to split."""
    d = np.load(DEMO / "digits_test.npz")
    folder = tmp_path_factory.mktemp("holdout")
    np.savez(folder / "d64.npz", x=d["x"][:64], y=d["y"][:64])
    np.savez(folder / "d10.npz", x=d["x"][:10], y=d["y"][:10])
    np.savez(folder / "c20.npz", x=d["x"][100:120], y=d["y"][100:120])
    return folder


def test_session_with_data_alone_holds_out(digits):
    s = Session.open("demo", data=str(digits / "d64.npz"), calib_samples=24, prepare=False)
    assert (len(s.calib_data), len(s.eval_data)) == (24, 40)
    assert s.split.held_out and (s.split.calib_samples, s.split.eval_samples) == (24, 40)
    x = torch.as_tensor(np.load(digits / "d64.npz")["x"])
    assert torch.equal(s.calib_data.x, x[:24]) and torch.equal(s.eval_data.x, x[24:])
    assert "40 held-out samples" in s.split.describe() and "24 others" in s.split.describe()


def test_explicit_calib_the_demos_own_data_and_no_holdout_keep_their_data(digits):
    s = Session.open("demo", data=str(digits / "d64.npz"), calib=str(digits / "c20.npz"), prepare=False)
    assert (len(s.calib_data), len(s.eval_data)) == (20, 64)  # as given
    assert not s.split.same_source and not s.split.on_calibration_data
    same = Session.open("demo", data=str(digits / "d64.npz"), calib=str(digits / "d64.npz"), prepare=False)
    assert same.split.on_calibration_data and "--calib names the same data" in same.split.describe()
    demo = Session.open("demo", prepare=False)  # its own calibration and evaluation files
    assert (len(demo.calib_data), len(demo.eval_data)) == (256, 597) and not demo.split.same_source
    old = Session.open("demo", data=str(digits / "d64.npz"), holdout=False, prepare=False)
    assert len(old.eval_data) == 64 and old.split.on_calibration_data
    tiny = Session.open("demo", data=str(digits / "d10.npz"), prepare=False)
    assert len(tiny.eval_data) == 10 and tiny.split.on_calibration_data


def test_a_recipe_with_only_evaluation_data_is_split(tmp_path):
    recipe = tmp_path / "r.py"
    recipe.write_text("import torch\nfrom torch import nn\n"
                      "def build_model():\n    torch.manual_seed(0)\n    return nn.Sequential(nn.Linear(4, 3))\n"
                      "def evaluation_data():\n    return (torch.arange(160.).view(40, 4),)\n")
    s = Session.open(str(recipe), prepare=False)
    assert (len(s.calib_data), len(s.eval_data)) == (20, 20) and s.split.held_out
    assert float(s.eval_data.x[0, 0]) == 80.0  # the second half


def test_session_files_keep_the_split_and_older_files_open_on_their_data(digits, tmp_path):
    s = Session.open("demo", data=str(digits / "d64.npz"), calib_samples=24)
    s.check()
    path = tmp_path / "s.qvs"
    s.save(path)
    saved = json.loads(path.read_text())
    assert saved["calib_samples"] == 24 and saved["holdout"] is True
    again = Session.load(path)
    assert (len(again.calib_data), len(again.eval_data)) == (24, 40) and again.split.held_out
    assert again.results[-1].metrics == s.results[-1].metrics
    for key in ("calib_samples", "holdout", "seq_len", "batch_size"):  # as written before held-out evaluation
        saved.pop(key)
    old = tmp_path / "old.qvs"
    old.write_text(json.dumps(saved))
    before = Session.load(old)  # measured on all 64 samples, calibrated on the first 512 (all): opens so
    assert (len(before.calib_data), len(before.eval_data)) == (64, 64) and before.split.on_calibration_data


def test_the_report_states_which_samples_its_figures_are_on(digits, tmp_path):
    s = Session.open("demo", data=str(digits / "d64.npz"))
    facts = s.report_facts()
    assert (facts.eval_samples, facts.calib_samples) == (32, 32)
    assert facts.data_note == "evaluated on 32 held-out samples; calibrated on 32 others of the same data"
    out = s.export("report", tmp_path / "r.html")
    html = Path(out.paths[0]).read_text(encoding="utf-8")
    assert "evaluated on 32 held-out samples; calibrated on 32 others of the same data" in html
