"""The score cache: cell by cell, resumable, instant on a repeat, keyed by the model and data."""
import json
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from sens_models import ResNetish, make_session, residual_data  # noqa: E402

from quantviz.core.errors import Cancelled
from quantviz.core.model.fingerprint import data_fingerprint, model_fingerprint
from quantviz.io.score_cache import ScoreCache, default_root


def _cells(res):
    return {(e["name"], k): c["metrics"] for e in res["layers"] for k, c in e["results"].items()}


def _equal(a, b):
    ca, cb = _cells(a), _cells(b)
    assert ca.keys() == cb.keys()
    for k in ca:
        for m, v in ca[k].items():
            assert math.isclose(v, cb[k][m], rel_tol=1e-9, abs_tol=1e-9), (k, m)


@pytest.fixture()
def session():
    torch.manual_seed(0)
    return make_session(ResNetish().eval(), residual_data(), "W8")


def test_root_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTVIZ_CACHE_DIR", str(tmp_path / "c"))
    assert default_root() == tmp_path / "c"
    monkeypatch.delenv("QUANTVIZ_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_root() == tmp_path / "x" / "quantviz" / "scores"


def test_interrupted_sweep_resumes_and_repeat_is_instant(session, tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTVIZ_CACHE_DIR", str(tmp_path))
    calls = []

    def cancel_after_five():
        return len(calls) >= 5

    with pytest.raises(Cancelled):
        session.run_sensitivity("e2e", bits=(2, 4), progress=lambda d, t, m="": calls.append(m), cancel=cancel_after_five)
    stored = list(tmp_path.glob("*/cells/*.json"))
    assert 3 <= len(stored) < 8  # the cells measured before the cancel are kept, not the rest
    seen = []
    res = session.run_sensitivity("e2e", bits=(2, 4), progress=lambda d, t, m="": seen.append(m))
    assert res["cached_cells"] == len(stored)
    measured = [m for m in seen if " at W" in m]
    assert len(measured) == 8 - len(stored)  # only the missing cells were measured
    fresh = session.run_sensitivity("e2e", bits=(2, 4), cache=False, force=True)
    _equal(res, fresh)
    again = []
    hit = session.run_sensitivity("e2e", bits=(2, 4), force=False, progress=lambda d, t, m="": again.append(m))
    assert hit is fresh  # the session keeps its newest result in memory
    session.analysis.sensitivity.clear()
    hit = session.run_sensitivity("e2e", bits=(2, 4), progress=lambda d, t, m="": again.append(m))
    assert hit.get("from_cache") and again[-1] == "from the score cache"
    _equal(hit, fresh)


def test_added_bit_width_reuses_cells(session, tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTVIZ_CACHE_DIR", str(tmp_path))
    session.run_sensitivity("e2e", bits=(4,))
    res = session.run_sensitivity("e2e", bits=(2, 4))
    assert res["cached_cells"] == 4 and not res.get("from_cache")


def test_no_cache_writes_nothing_and_partial_files_are_ignored(session, tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTVIZ_CACHE_DIR", str(tmp_path))
    session.run_sensitivity("loo", bits=(4,), cache=False)
    assert not any(tmp_path.iterdir())
    session.run_sensitivity("loo", bits=(4,), force=True)
    cells = sorted(tmp_path.glob("*/cells/*.json"))
    assert len(cells) == 5  # the all-quantized base and one cell per layer
    cells[0].write_text('{"key": "trunc')  # a damaged file is measured again, not trusted
    for r in tmp_path.glob("*/result-*.json"):
        r.unlink()
    session.analysis.sensitivity.clear()
    res = session.run_sensitivity("loo", bits=(4,))
    assert res["cached_cells"] == 4
    assert json.loads(cells[0].read_text())["value"]


def test_other_weights_or_data_or_settings_get_their_own_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTVIZ_CACHE_DIR", str(tmp_path))
    torch.manual_seed(0)
    a = ResNetish().eval()
    b = ResNetish().eval()
    b.load_state_dict(a.state_dict())
    assert model_fingerprint(a) == model_fingerprint(b)
    with torch.no_grad():
        b.fc.weight[2, 3] += 1e-3
    assert model_fingerprint(a) != model_fingerprint(b)
    d = residual_data()
    assert data_fingerprint(d) == data_fingerprint(residual_data())
    assert data_fingerprint(d) != data_fingerprint(residual_data(seed=1))
    s1 = make_session(a, d, "W8")
    s1.run_sensitivity("local", bits=(4,))
    s2 = make_session(b, d, "W8")
    res = s2.run_sensitivity("local", bits=(4,))
    assert not res.get("from_cache")
    s3 = make_session(a, d, "W8")
    assert s3.run_sensitivity("local", bits=(4,)).get("from_cache")
    assert not s3.run_sensitivity("local", bits=(4,), sketch=False).get("from_cache")  # other options
    assert len(list(tmp_path.iterdir())) == 3
    assert ScoreCache(tmp_path).size_bytes() > 0
