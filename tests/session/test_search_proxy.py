"""The search ranked by a cheap proxy (``local`` / ``hessian``) instead of the e2e sweep (issue 16, section 1):
within the budget, measured end to end, and reusing a proxy sweep already in the score cache."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from sens_models import make_session, transformer_data, transformer_model  # noqa: E402

from quantviz.core.analysis import proxies
from quantviz.core.analysis.search import SearchError
from quantviz.io.config import QuantConfig


def _session(preset="W8"):
    torch.manual_seed(0)
    m = transformer_model()
    return make_session(m, transformer_data(m), preset)


@pytest.fixture()
def counted(monkeypatch):
    """How many times the local proxy's calibration pass ran."""
    calls = []
    real = proxies.local_totals

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(proxies, "local_totals", spy)
    return calls


def test_local_ranked_search_fits_the_budget_and_is_measured(tmp_path, monkeypatch, counted):
    monkeypatch.setenv("QUANTVIZ_CACHE_DIR", str(tmp_path))
    s = _session()
    res = s.run_search(avg_bits=4, bits=(2, 4, 8), pareto_steps=3, sensitivity="local")
    assert res["sensitivity"] == "local" and not res["sensitivity_from_cache"] and len(counted) == 1
    assert "e2e" not in s.analysis.sensitivity  # no e2e sweep ran: the proxy ranked the layers
    assert s.analysis.sensitivity["local"]["method"] == "local"
    chosen = res["chosen"]
    assert chosen["avg_bits"] <= 4 + 1e-9 and res["candidates"] >= 2
    # the recorded metric is the chosen config's measured one
    again = s.check(config=QuantConfig.from_dict(chosen["config"]), record=False)
    assert again.metrics == pytest.approx(chosen["metrics"])
    assert "accuracy" in chosen["metrics"]
    sizes = [q["size_bytes"] for q in res["pareto"]]
    assert sizes == sorted(sizes) and len(res["pareto"]) >= 2
    # a drop budget works from the proxy's noise alone (no drop in a local result): the measured drop decides
    res = s.run_search(max_drop=0.05, bits=(2, 4, 8), pareto_steps=3, sensitivity="local")
    ref = s.reference.metrics["accuracy"]
    assert ref - res["chosen"]["metrics"]["accuracy"] <= 0.05 + 1e-12
    assert res["chosen"]["avg_bits"] < 8  # not the trivial answer
    assert len(counted) == 1  # the session's own local result was reused


def test_search_reuses_a_cached_local_sweep(tmp_path, monkeypatch, counted):
    monkeypatch.setenv("QUANTVIZ_CACHE_DIR", str(tmp_path))
    first = _session()
    first.run_sensitivity("local", bits=(2, 4, 8), act_bits=())  # as `quantviz sensitivity --method local`
    assert len(counted) == 1
    fresh = _session()  # another process, same model and data: only the cache is shared
    res = fresh.run_search(avg_bits=4, bits=(2, 4, 8), pareto_steps=2, sensitivity="local")
    assert len(counted) == 1 and res["sensitivity_from_cache"]  # no second sweep
    assert res["chosen"]["avg_bits"] <= 4 + 1e-9


def test_search_reuses_a_local_sweep_with_activation_bits(tmp_path, monkeypatch, counted):
    """With quantized activations `quantviz sensitivity --method local` also sweeps activation bits by
    default; the search takes that result too instead of running a weights-only sweep."""
    monkeypatch.setenv("QUANTVIZ_CACHE_DIR", str(tmp_path))
    _session("W8A8").run_sensitivity("local", bits=(2, 4, 8))
    assert len(counted) == 1
    res = _session("W8A8").run_search(avg_bits=4, bits=(2, 4, 8), pareto_steps=2, sensitivity="local")
    assert len(counted) == 1 and res["sensitivity_from_cache"]


def test_hessian_ranked_search_and_a_bad_method(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTVIZ_CACHE_DIR", str(tmp_path))
    s = _session()
    res = s.run_search(avg_bits=5, bits=(2, 4, 8), pareto_steps=2, sensitivity="hessian")
    assert res["sensitivity"] == "hessian" and res["chosen"]["avg_bits"] <= 5 + 1e-9
    with pytest.raises(SearchError, match=r"unknown search sensitivity 'loo' \(choose from e2e, local, hessian\)"):
        s.run_search(avg_bits=4, bits=(2, 4), sensitivity="loo")


def test_the_report_says_what_ranked_the_layers(tmp_path):
    from quantviz.session import Session

    s = Session.open("demo")
    s.run_search(avg_bits=4, bits=(2, 4, 8), pareto_steps=2, sensitivity="local", cache=False)
    p = tmp_path / "r.html"
    s.export("report", p)
    html = p.read_text()
    n = s.analysis.search["candidates"]
    assert f"Layers ranked by the local (layer output SQNR) proxy; {n} candidate configs measured end to end." in html
