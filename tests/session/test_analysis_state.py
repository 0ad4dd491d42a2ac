"""The session owns analysis results: each store is an event, autosave follows."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from sens_models import ResNetish, make_session, residual_data  # noqa: E402

from quantviz.session.analysis import Analysis  # noqa: E402
from quantviz.session.autosave import Autosaver  # noqa: E402


@pytest.fixture(scope="module")
def session():
    torch.manual_seed(0)
    return make_session(ResNetish().eval(), residual_data(48))


def test_sensitivity_result_alone_reaches_the_autosave_file(session, tmp_path):
    saver = Autosaver(session, tmp_path / "recovery.json")
    events = []
    session.events.connect(lambda kind, payload: events.append((kind, payload)))
    try:
        assert not saver.flush()  # nothing happened yet: nothing written
        res = session.run_sensitivity("e2e", bits=(2, 4), act_bits=())
        assert ("analysis_changed", {"what": "sensitivity", "method": "e2e"}) in events
        assert saver.flush()  # no edit after the sweep: the sweep alone made the session dirty
        saved = json.loads((tmp_path / "recovery.json").read_text())
        assert saved["analysis"]["sensitivity"]["e2e"]["key"] == res["key"]
        assert set(saved["analysis"]["scores"]["scores"]) == set(session.layer_names)
    finally:
        saver.close()


def test_search_result_alone_reaches_the_autosave_file(session, tmp_path):
    saver = Autosaver(session, tmp_path / "recovery.json")
    try:
        res = session.run_search(avg_bits=3, bits=(2, 4), pareto_steps=2)
        assert saver.flush()
        saved = json.loads((tmp_path / "recovery.json").read_text())["analysis"]["search"]
        assert saved["chosen"]["bits"] == res["chosen"]["bits"]
        # every point carries the full config it stands for, with the searched bits
        layers = saved["chosen"]["config"]["layers"]
        assert {n: layers[n]["weight"]["bits"] for n in res["chosen"]["bits"]} == res["chosen"]["bits"]
    finally:
        saver.close()


def test_cached_sensitivity_is_returned_without_an_event(session):
    first = session.run_sensitivity("local", bits=(2, 4), act_bits=())
    events = []
    session.events.connect(lambda kind, payload: events.append(kind))
    assert session.run_sensitivity("local", bits=(2, 4), act_bits=()) is first
    assert events == []


def test_version_1_extras_are_read_into_the_typed_analysis():
    old = {"sensitivity": {"e2e": {"method": "e2e"}}, "sensitivity_score": {"a": 0.5},
           "sensitivity_score_info": {"method": "e2e", "bits": 2, "metric": "accuracy"}, "search": {"chosen": {}}}
    a = Analysis.from_dict(old)
    assert a.sensitivity == {"e2e": {"method": "e2e"}} and a.search == {"chosen": {}}
    assert a.scores.scores == {"a": 0.5} and a.scores.bits == 2 and a.scores.metric == "accuracy"
    assert Analysis.from_dict(a.to_dict()) == a
