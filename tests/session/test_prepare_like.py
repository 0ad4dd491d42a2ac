"""Session.prepare_like: a session prepared from another one's calibration and float reference
measures exactly what a session that calibrated itself measures, and shares nothing with the other."""
import pytest
import torch

from quantviz.io.config import preset
from quantviz.session import Session
from quantviz.session.session import SessionError


@pytest.fixture(scope="module")
def prepared():
    return Session.open("demo")


def test_prepared_like_another_measures_the_same_and_shares_nothing(prepared):
    s = Session.open("demo", prepare=False)
    events = []
    s.events.connect(lambda kind, payload: events.append(kind))
    s.prepare_like(prepared)
    assert s.prepared and events == ["loaded"]
    assert s.reference.metrics == prepared.reference.metrics
    # activation settings read the calibration: a W8A8 and a W4A8 check equal those of a session that
    # calibrated itself, exactly
    own = Session.open("demo")
    for name in ("W8A8", "W4A8"):
        cfg = preset(name)
        assert s.check(config=cfg, record=False).metrics == own.check(config=cfg, record=False).metrics, name
    # nothing is shared: statistics and outputs are copies, and edits stay in their session
    n = s.layer_names[-1]
    assert s.sim.act_obs[n] is not prepared.sim.act_obs[n]
    assert all(a is not b for a, b in zip(s.reference.outputs, prepared.reference.outputs))
    before = prepared.check(config=preset("W4A8"), record=False).metrics
    s.apply_preset("W4A8")
    s.sim.act_obs[n].update(torch.full((4, 8), 1e3))  # a wider range in this session only
    s.check()
    assert prepared.config.to_dict() == preset("W8").to_dict() and not prepared.history.can_undo
    assert prepared.check(config=preset("W4A8"), record=False).metrics == before


def test_prepare_like_refuses_what_differs(prepared):
    with pytest.raises(SessionError, match="not prepared"):
        Session.open("demo", prepare=False).prepare_like(Session.open("demo", prepare=False))
    with pytest.raises(SessionError, match="batch size"):
        Session.open("demo", prepare=False, batch_size=32).prepare_like(prepared)
    other = Session.open("demo", prepare=False)
    with torch.no_grad():
        other.sim.float_model.state_dict()[next(iter(other.sim.float_model.state_dict()))].add_(1e-3)
    with pytest.raises(SessionError, match="float models"):
        other.prepare_like(prepared)
    assert not other.prepared
    fewer = Session.open("demo", prepare=False)
    fewer.eval_data = fewer.eval_data.subset(100, name=fewer.eval_data.name)
    with pytest.raises(SessionError, match="evaluation or calibration data"):
        fewer.prepare_like(prepared)
