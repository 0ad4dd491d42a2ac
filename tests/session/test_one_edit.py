"""One edit resolves its config once and computes what changed once (#24 item 3): the session
hands the resolved, immutable specs with the re-check request; the simulation, the re-check's
cache and the ConfigChange all read the one diff."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import quantviz.core.numerics.specmap as specmap
from quantviz.core.model.data import Dataset
from quantviz.core.numerics.specmap import SpecMap
from quantviz.core.sources.base import ModelBundle
from quantviz.io.config import QuantConfig, preset
from quantviz.session import Session
from quantviz.session.session import CheckRequest


def _session() -> Session:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 5)).eval()
    x = torch.randn(32, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 5, (32,), generator=torch.Generator().manual_seed(2))
    data = Dataset(x, y, name="test data")
    bundle = ModelBundle(model, "test-model", "recipe", "test-model", calib=data, eval=data)
    s = Session(bundle, eval_data=data, calib_data=data, config=preset("W8A8"), batch_size=16)
    s.prepare()
    return s


@pytest.fixture
def counted(monkeypatch):
    """Counts of config resolutions and spec diffs from here on."""
    n = {"resolve": 0, "diff": 0}
    resolve_all, diff = QuantConfig.resolve_all, specmap.diff_specs

    def counting_resolve(self, layers):
        n["resolve"] += 1
        return resolve_all(self, layers)

    def counting_diff(old, new):
        n["diff"] += 1
        return diff(old, new)

    monkeypatch.setattr(QuantConfig, "resolve_all", counting_resolve)
    monkeypatch.setattr(specmap, "diff_specs", counting_diff)
    return n


def _check(s: Session):
    req = s.request_check()
    return req, s.check(request=req)


def test_one_edit_is_resolved_once_and_diffed_once(monkeypatch):
    s = _session()
    _check(s)  # the re-check cache and the simulation hold the current config
    layer = s.layer_names[1]
    changes = []
    s.events.connect(lambda kind, payload: changes.append(payload["change"]) if kind == "config_changed" else None)
    n = {"resolve": 0, "diff": 0}
    resolve_all, diff = QuantConfig.resolve_all, specmap.diff_specs
    monkeypatch.setattr(QuantConfig, "resolve_all", lambda self, layers: n.update(resolve=n["resolve"] + 1)
                        or resolve_all(self, layers))
    monkeypatch.setattr(specmap, "diff_specs", lambda old, new: n.update(diff=n["diff"] + 1) or diff(old, new))

    s.edit_layers([layer], {"weight": {"bits": 4}})
    req, res = _check(s)

    assert n == {"resolve": 1, "diff": 1}
    assert req.specs is s.specs and req.config is s.config  # handed over, not copied or resolved again
    assert [c.layers for c in changes] == [[layer]]
    assert s.recheck.last["mode"] == "suffix" and s.recheck.last["changed"] == [layer]
    assert s.sim.applied_specs is s.specs
    monkeypatch.undo()
    full = s.check(record=False, incremental=False)  # the same numbers as a full pass from scratch
    assert full.metrics == res.metrics
    assert s.spec(layer).weight.bits == 4 and res.config == s.config.to_dict()


def test_undo_and_redo_resolve_once_and_diff_once(counted):
    s = _session()
    before = s.check(record=False).metrics
    layer = s.layer_names[0]
    s.edit_layers([layer], {"activation": {"bits": 4}})
    after = s.check(record=False).metrics
    assert after != before
    counted.update(resolve=0, diff=0)
    assert s.undo()
    res = s.check(record=False)
    assert counted == {"resolve": 1, "diff": 1}
    assert res.metrics == before and s.recheck.last["changed"] == [layer]
    counted.update(resolve=0, diff=0)
    assert s.redo()
    assert s.check(record=False).metrics == after
    assert counted == {"resolve": 1, "diff": 1}


def test_a_config_from_elsewhere_is_resolved_by_the_worker(counted):
    s = _session()
    counted.update(resolve=0)
    res = s.check(config=preset("W4"), record=False)
    assert counted["resolve"] == 1
    assert res.config == preset("W4").to_dict()
    # a request built without specs (an older caller) is resolved too
    counted.update(resolve=0)
    s.check(request=CheckRequest(99, preset("W4"), "W4"), record=False)
    assert counted["resolve"] == 1


def test_resolved_specs_are_immutable_and_diffed_once_per_pair(counted):
    s = _session()
    counted.update(diff=0)
    specs = s.specs
    assert isinstance(specs, SpecMap)
    with pytest.raises(TypeError):
        specs["x"] = specs[s.layer_names[0]]
    other = SpecMap({**specs, s.layer_names[2]: preset("W4").resolve(s.layer(s.layer_names[2]))})
    assert other.changed_from(specs) == (s.layer_names[2],)
    assert other.changed_from(specs) == (s.layer_names[2],) and counted["diff"] == 1  # remembered
    assert other.changed_from(dict(specs)) == (s.layer_names[2],) and counted["diff"] == 2  # a plain dict: compared
    assert other.changed_from(None) == tuple(s.layer_names) and other.changed_from(other) == ()
    assert other == dict(other) and other != specs
    fewer = SpecMap({n: sp for n, sp in specs.items() if n != s.layer_names[0]})
    assert fewer.changed_from(specs) == (s.layer_names[0],)  # a layer gone counts as changed
