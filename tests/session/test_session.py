"""The session: edits, undo / redo, presets, ranges, checks, save / load."""
import json
import textwrap

import pytest
import torch

from quantviz.core.numerics.spec import RangeSpec
from quantviz.io.config import ConfigError, QuantConfig, preset
from quantviz.session import Session
from quantviz.session.session import SessionError

RECIPE = textwrap.dedent('''
    import torch
    from torch import nn

    NAME = "session-test-net"

    def build_model():
        with torch.random.fork_rng():
            torch.manual_seed(0)
            m = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                              nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                              nn.Linear(8 * 6 * 6, 16), nn.ReLU(), nn.Linear(16, 5))
            with torch.no_grad():
                m[1].running_mean.uniform_(-0.2, 0.2)
                m[1].running_var.uniform_(0.5, 1.5)
        return m.eval()

    def evaluation_data():
        g = torch.Generator().manual_seed(1)
        x = torch.randn(96, 2, 6, 6, generator=g)
        with torch.no_grad():
            y = build_model()(x).argmax(1)
        return x, y
''')

LAYERS = ["0", "3", "6", "8"]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    p = tmp_path_factory.mktemp("recipe") / "net.py"
    p.write_text(RECIPE)
    return p


@pytest.fixture
def session(recipe):
    s = Session.open(str(recipe), batch_size=32)
    events = []
    s.events.connect(lambda kind, payload: events.append((kind, payload)))
    s.test_events = events
    return s


def test_open_prepares_layers_and_float_reference(session):
    assert session.prepared and session.name == "session-test-net"
    assert session.layer_names == LAYERS
    assert session.sim.folded_pairs == [("0", "1")]
    assert session.reference.metrics["accuracy"] == 1.0  # labels are the float model's own predictions
    assert set(session.sim.act_obs) == set(LAYERS)


def test_edits_undo_and_redo(session):
    assert session.spec("3").weight.bits == 8
    session.edit_layers(["3", "6"], {"weight": {"bits": 4, "granularity": "per_tensor"}})
    assert [session.spec(n).weight.bits for n in LAYERS] == [8, 4, 4, 8]
    assert session.spec("6").weight.granularity == "per_tensor"
    kind, payload = session.test_events[-1]
    assert kind == "config_changed" and payload["layers"] == ["3", "6"]
    session.edit_layers(["0"], {"activation": {"bits": 6}})
    assert session.spec("0").activation.bits == 6
    assert session.undo() and session.spec("0").activation.bits is None
    assert session.test_events[-1][1]["layers"] == ["0"]
    assert session.undo() and session.spec("3").weight.bits == 8
    assert not session.undo()  # nothing left
    assert session.redo() and session.spec("6").weight.bits == 4
    assert session.history.redo_label is not None
    session.edit_layers(["8"], {"weight": {"bits": 2}})  # a new edit drops the redo branch
    assert not session.history.can_redo and not session.redo()
    with pytest.raises(SessionError, match="no quantizable layer"):
        session.edit_layers(["nope"], {"weight": {"bits": 4}})
    with pytest.raises(ConfigError, match="bits"):
        session.edit_layers(["0"], {"weight": {"bits": 1}})


def test_presets_all_layers_or_a_selection(session):
    session.apply_preset("W4A8")
    assert all(session.spec(n).weight.bits == 4 and session.spec(n).activation.bits == 8 for n in LAYERS)
    session.apply_preset("W2", layers=["8"])
    assert session.spec("8").weight.bits == 2 and session.spec("8").activation.bits is None
    assert session.spec("6").weight.bits == 4
    assert session.undo() and session.spec("8").weight.bits == 4
    with pytest.raises(ConfigError, match="unknown preset"):
        session.apply_preset("W7")


def test_set_range_makes_a_manual_range_and_validates(session):
    w = session.sim.float_weight("6")
    lo, hi = float(w.min()) / 2, float(w.max()) / 2
    before = session.layer_row("6")
    session.set_range("6", "weight", lo, hi)
    spec = session.spec("6")
    assert spec.weight.range == RangeSpec("manual", lo=lo, hi=hi)
    row = session.layer_row("6")
    assert row["range"].startswith("manual[") and row["clipped"] > before["clipped"]
    assert row["weight_sqnr_db"] != before["weight_sqnr_db"]
    session.set_range("3", "activation", 0.0, 1.0)
    assert session.spec("3").activation.range == RangeSpec("manual", lo=0.0, hi=1.0)
    with pytest.raises(ConfigError, match="smaller"):
        session.set_range("6", "weight", 1.0, -1.0)
    with pytest.raises(ConfigError):
        session.set_range("6", "weight", float("nan"), 1.0)


def test_check_reports_metrics_size_events_and_activation_sqnr(session):
    session.apply_preset("W8A8")
    res = session.check()
    assert set(res.metrics) >= {"accuracy", "sqnr_db", "cosine", "top1_agreement"}
    assert 20 < res.metrics["sqnr_db"] < 200 and res.metrics["cosine"] > 0.99
    assert res.size["quantized_bytes"] < res.size["float_bytes"]
    kinds = [k for k, _ in session.test_events]
    assert kinds[-1] == "result" and kinds.count("estimate") >= 2  # 96 samples in batches of 32 stream
    first = next(p for k, p in session.test_events if k == "estimate")
    assert first["snapshot"]["samples"] < 96 and first["generation"] == res.generation
    row = session.layer_row("3")
    assert row["act_bits"] == 8 and row["act_sqnr_db"] is not None and row["act_sqnr_db"] > 20
    low = session.check(config=preset("W2"), record=False)
    assert low.metrics["sqnr_db"] < res.metrics["sqnr_db"] and len(session.results) == 1
    assert low.size["element_bits"] == 2 and low.size["avg_bits"] > 2  # scales counted


def test_fold_bn_cannot_change_in_an_open_session(session):
    cfg = session.config.copy()
    cfg.options["fold_bn"] = False
    with pytest.raises(ConfigError, match="fold_bn"):
        session.set_config(cfg)


def test_fold_bn_false_session_keeps_batchnorm(recipe):
    cfg = preset("W8")
    cfg.options["fold_bn"] = False
    s = Session.open(str(recipe), config=cfg, prepare=False)
    assert s.sim.folded_pairs == [] and isinstance(s.sim.float_model[1], torch.nn.BatchNorm2d)


def test_save_and_load_round_trip(session, tmp_path):
    session.edit_layers(["6"], {"weight": {"bits": 5, "granularity": "per_group", "group_size": 16}})
    session.set_range("3", "weight", -0.1, 0.1)
    res = session.check(label="mine")
    session.set_deploy({"k": [1, 2]})
    path = session.save(tmp_path / "s.quantviz.json")
    obj = json.loads(path.read_text())
    assert obj["format"] == "quantviz-session" and obj["model"] == session.bundle.reference
    loaded = Session.load(path)
    assert loaded.config == session.config
    assert loaded.specs == session.specs
    assert [r.to_dict() for r in loaded.results] == json.loads(json.dumps([res.to_dict()]))
    assert loaded.analysis.deploy == {"k": [1, 2]}
    assert loaded.next_generation() == res.generation + 1
    again = loaded.check()
    assert again.metrics["sqnr_db"] == pytest.approx(res.metrics["sqnr_db"], rel=1e-6)


def test_loading_a_file_that_is_not_a_session(tmp_path):
    p = tmp_path / "x.json"
    p.write_text(json.dumps(QuantConfig().to_dict()))
    with pytest.raises(SessionError, match="not a quantviz session"):
        Session.load(p)
    with pytest.raises(SessionError, match="no such file"):
        Session.load(tmp_path / "missing.json")
