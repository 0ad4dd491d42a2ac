"""Cancelling a job at any moment leaves the session consistent.

A cancel function that answers True from its k-th poll on is passed to
Session.open / prepare / check for every k until the job completes; after
each cancellation the session's config, results and undo history are
unchanged and a following check gives exactly the uncancelled numbers.
"""
from __future__ import annotations

import threading

import pytest

from corpus import good_data, write_recipe
from quantviz.core.errors import Cancelled
from quantviz.io.config import preset
from quantviz.session import Session

BATCH = 8  # 48 samples: 24 calibrate, 24 are evaluated (held out) -> 3 batches per pass: many cancellation points


class TripAfter:
    """A cancel function that turns True on its k-th call (0: immediately)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.calls > self.k


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("cancel")
    return str(write_recipe(d / "mlp.py")), str(good_data(d / "mlp.npz"))


def _state(s: Session) -> tuple:
    return (s.config.to_dict(), [r.to_dict() for r in s.results], s.history.undo_label, s.history.can_redo,
            s.prepared)


def test_cancel_open_at_every_point(model):
    recipe, data = model
    completed = None
    for k in range(200):
        tok = TripAfter(k)
        try:
            s = Session.open(recipe, data=data, batch_size=BATCH, cancel=tok)
        except Cancelled:
            continue
        completed = k
        break
    assert completed is not None and completed > 10  # many points were tried
    assert s.prepared and s.check().metrics["cosine"] > 0.99


def test_cancel_prepare_and_check_at_every_point(model):
    recipe, data = model
    s = Session.open(recipe, data=data, batch_size=BATCH, config=preset("W4A8"))
    s.apply_preset("W4A8")
    s.edit_layers([s.layer_names[0]], {"weight": {"bits": 3}})
    base = s.check(record=False).metrics
    s.check()  # one recorded result to keep
    before = _state(s)
    ref = s.reference

    for k in range(100):
        try:
            s.prepare(cancel=TripAfter(k))
        except Cancelled:
            assert _state(s) == before and s.reference is ref
            continue
        break
    else:
        pytest.fail("prepare never completed")

    other = preset("W2")
    other.options = dict(s.config.options)
    cancelled = 0
    for job_config in (None, other):
        for k in range(100):
            try:
                s.check(config=job_config, cancel=TripAfter(k))
            except Cancelled:
                cancelled += 1
                assert _state(s)[:4] == before[:4]
                assert s.check(record=False).metrics == base  # the simulation follows the config again
                continue
            s.results.pop()  # the completed check recorded one result
            break
    assert cancelled >= 2 * (len(s.eval_data) // BATCH) and len(s.eval_data) == 24
    assert _state(s) == before
    assert s.check(record=False).metrics == base


def test_cancel_a_recipe_that_never_returns(tmp_path):
    recipe = tmp_path / "forever.py"
    recipe.write_text("def build_model():\n    while True:\n        pass\n", encoding="utf-8")
    flag = threading.Event()
    threading.Timer(0.5, flag.set).start()
    with pytest.raises(Cancelled):  # pytest-timeout fails the test if it hangs
        Session.open(str(recipe), cancel=flag.is_set)
    assert flag.is_set()


def _cancel_everywhere(job, check_state, limit: int = 400) -> int:
    """Run ``job(cancel)`` with a cancel tripping after k polls, k = 0, 1, ...; return the cancel count."""
    cancelled = 0
    for k in range(limit):
        try:
            job(TripAfter(k))
        except Cancelled:
            cancelled += 1
            check_state()
            continue
        return cancelled
    pytest.fail("the job never completed")


def test_cancel_sensitivity_search_and_export_at_every_point(model, tmp_path):
    from quantviz.core.analysis.sensitivity import sweep
    from quantviz.session.analysis import Analysis
    from quantviz.io import export as export_mod

    recipe, data = model
    s = Session.open(recipe, data=data, batch_size=BATCH)
    s.edit_layers([s.layer_names[1]], {"weight": {"bits": 4}})
    base = s.check(record=False).metrics
    before = _state(s)
    analysis = s.analysis.to_dict()

    def consistent():
        assert _state(s) == before and s.analysis.to_dict() == analysis
        assert s.check(record=False).metrics == base

    n = _cancel_everywhere(lambda c: sweep(s.parts(), "e2e", bits=(4, 2), cancel=c), consistent)
    assert n >= 4
    n = _cancel_everywhere(lambda c: s.run_search(avg_bits=7, bits=(8, 4, 2), pareto_steps=3, cancel=c),
                           lambda: (_state(s) == before) or pytest.fail("search changed the session"))
    assert n >= 4
    s.analysis = Analysis.from_dict(analysis)  # the completed search stored its result
    folder = tmp_path / "out"
    folder.mkdir()
    for fmt in ("json", "onnx"):
        target = folder / f"model{export_mod.SUFFIX[fmt]}"

        def exported_nothing():
            consistent()
            assert list(folder.iterdir()) == []  # neither the file nor a temporary

        _cancel_everywhere(lambda c: s.export(fmt, target, cancel=c), exported_nothing)
        assert target.exists()
        for p in folder.iterdir():
            p.unlink()
