"""A re-check runs pending per-layer algorithms first: with progress, cancellable, then cached."""
from __future__ import annotations

import pytest

from quantviz.core.errors import Cancelled, SourceError
from quantviz.session import Session


@pytest.fixture(scope="module")
def demo():
    try:
        return Session.open("demo")
    except SourceError as exc:
        pytest.skip(str(exc))


def test_recheck_runs_algorithms_with_progress_and_cancel(demo):
    s = demo
    s.apply_preset("W3")
    s.edit_layers(["features.7", "classifier.1"], {"weight": {"algorithm": "adaround",
                                                              "algorithm_options": {"iterations": 200}}})
    assert sorted(s.sim.pending_algorithms(s.specs)) == ["classifier.1", "features.7"]
    seen = []
    with pytest.raises(Cancelled):
        s.check(record=False, progress=lambda d, t, m="": seen.append(m),
                cancel=lambda: any("AdaRound" in m for m in seen))
    assert any("AdaRound features.7" in m for m in seen)
    msgs = []
    plain = s.check(config=s.config.copy(), record=False)  # recomputes what the cancel left pending
    assert not s.sim.pending_algorithms(s.specs)
    again = s.check(record=False, progress=lambda d, t, m="": msgs.append(m))
    assert not any("AdaRound" in m for m in msgs)  # cached: nothing recomputed
    assert again.metrics == plain.metrics
    # an edit after the algorithm layers keeps them; an edit before them recomputes them
    s.edit_layers(["classifier.3"], {"weight": {"bits": 8}})
    assert s.sim.pending_algorithms(s.specs) == []
    s.edit_layers(["features.0"], {"weight": {"bits": 8}})
    assert sorted(s.sim.pending_algorithms(s.specs)) == ["classifier.1", "features.7"]
    s.undo()
    assert s.sim.pending_algorithms(s.specs) == []  # undo finds the earlier results
