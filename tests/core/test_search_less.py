"""Searches that measure less (#25 §4): the candidates that can be the answer are screened on a
subset of the evaluation samples and only those the screen cannot rule out are measured end to
end. The pick equals the exhaustive search's (``measure="all"``), or is measured better on the
held-out samples, with fewer full evaluations than candidates."""
from __future__ import annotations

import pytest

from quantviz.core.analysis.search import FULL_LIMIT, SearchError, _better
from quantviz.io.config import preset
from quantviz.session import Session
from quantviz.core.sources.base import ModelBundle

from sens_models import transformer_data, transformer_model


@pytest.fixture(scope="module")
def tiny():
    """The tiny transformer, calibrated on 24 sequences and evaluated on 48 others (held out)."""
    m = transformer_model()
    data = transformer_data(m, n=72)
    calib, evald = data.rows(0, 24, name="calib"), data.rows(24, None, name="held-out")
    bundle = ModelBundle(model=m, name="tiny", kind="recipe", reference="test", calib=calib, eval=evald)
    s = Session(bundle, eval_data=evald, calib_data=calib, config=preset("W8"), batch_size=16)
    s.prepare()
    s.run_sensitivity("e2e", bits=(2, 4, 8))
    return s


@pytest.fixture(scope="module")
def demo():
    s = Session.open("demo")
    s.prepare()
    assert not s.split.on_calibration_data  # the pick's metric is on samples calibration did not see
    s.run_sensitivity("e2e", bits=(2, 4, 8))
    return s


def _same_or_better(less: dict, full: dict) -> bool:
    if less["chosen"]["bits"] == full["chosen"]["bits"]:
        return True
    # a different pick must be measured better end to end (it is: "samples" absent)
    assert "samples" not in less["chosen"]
    return _better(less["chosen"], full["chosen"], full["metric"])


def _check(s, **budget):
    full = s.run_search(bits=(2, 4, 8), pareto_steps=5, measure="all", **budget)
    less = s.run_search(bits=(2, 4, 8), pareto_steps=5, measure="less", **budget)
    assert full["measure"] == "all" and full["full_evaluations"] == full["candidates"] and full["screened"] == 0
    assert less["measure"] == "less" and less["candidates"] == full["candidates"]  # the same proposals
    assert 1 <= less["full_evaluations"] < less["candidates"]
    assert less["screened"] <= less["candidates"]
    assert less["screen_samples"] < less["eval_samples"] == len(s.parts((), None).data)
    assert _same_or_better(less, full), (budget, less["chosen"]["name"], full["chosen"]["name"])
    return less, full


@pytest.mark.parametrize("budget", [{"avg_bits": 3.0}, {"avg_bits": 4.5}, {"avg_bits": 6.0}, {"max_drop": 0.05}])
def test_tiny_transformer_pick_equals_the_exhaustive_one(tiny, budget):
    less, full = _check(tiny, **budget)
    if "avg_bits" in budget:
        assert less["full_evaluations"] <= FULL_LIMIT
        assert less["chosen"]["avg_bits"] <= budget["avg_bits"] + 1e-9
    else:
        ref = tiny.reference.metrics["accuracy"]
        assert ref - less["chosen"]["metrics"]["accuracy"] <= 0.05 + 1e-12


@pytest.mark.parametrize("budget", [{"avg_bits": 3.0}, {"avg_bits": 4.5}, {"max_drop": 0.02}])
def test_demo_pick_equals_the_exhaustive_one(demo, budget):
    less, _ = _check(demo, **budget)
    # the pick was measured end to end on every held-out sample, and the front says what was only screened
    assert "samples" not in less["chosen"]
    screened_only = [q for q in less["pareto"] if q.get("samples")]
    assert all(q["samples"] == less["screen_samples"] and "bands" in q for q in screened_only)
    metric = less["metric"]
    full_front = [q for q in less["pareto"] if not q.get("samples")]
    assert less["chosen"] in full_front or not any(_better(q, less["chosen"], metric) for q in full_front)
    for front in (full_front, screened_only):  # each front compares like with like: sizes up, metric better
        for a, b in zip(front, front[1:]):
            assert a["size_bytes"] < b["size_bytes"] and _better(b, a, metric)
    for q in screened_only:  # a screened point's band holds its screened value
        lo, hi = q["bands"][metric]
        assert lo <= q["metrics"][metric] <= hi


def test_screened_metrics_are_those_of_the_subset(tiny):
    """A screen measures the first samples: the same metrics as a full evaluation of a session whose
    evaluation data are those samples."""
    res = tiny.run_search(avg_bits=4.5, bits=(2, 4, 8), pareto_steps=3, measure="less")
    k = res["screen_samples"]
    q = next((q for q in res["pareto"] if q.get("samples")), None)
    if q is None:
        pytest.skip("every front point was measured end to end")
    from quantviz.io.config import QuantConfig

    sub = tiny.parts((), None).data.subset(k)
    bundle = ModelBundle(model=tiny.bundle.model, name="tiny", kind="recipe", reference="test",
                         calib=tiny.calib_data, eval=sub)
    s2 = Session(bundle, eval_data=sub, calib_data=tiny.calib_data, config=preset("W8"), batch_size=16)
    s2.prepare()
    got = s2.check(config=QuantConfig.from_dict(q["config"]), record=False).metrics
    assert got["accuracy"] == pytest.approx(q["metrics"]["accuracy"])
    assert got["sqnr_db"] == pytest.approx(q["metrics"]["sqnr_db"], abs=1e-4)


def test_unknown_measure_mode_is_refused(tiny):
    with pytest.raises(SearchError, match="measure"):
        tiny.run_search(avg_bits=4.5, bits=(2, 4, 8), pareto_steps=2, measure="some")
