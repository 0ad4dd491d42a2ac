"""QAT as a session state: one undo entry, cancel changes nothing, saved and loaded
with its weights, exported from the trained weights, curves in the analysis."""
import json

import pytest
import torch

from quantviz.core.errors import Cancelled
from quantviz.core.training.qat import QATOptions
from quantviz.io.config import preset
from quantviz.session.session import Session


@pytest.fixture(scope="module")
def demo():
    torch.set_num_threads(1)
    return Session.open("demo", config=preset("W2"))


def _fresh():
    return Session.open("demo", config=preset("W2"))


def test_qat_becomes_the_state_and_undo_restores(demo):
    s = demo
    events = []
    s.events.connect(lambda kind, payload: events.append((kind, payload)))
    w0 = {n: s.sim.float_weight(n).clone() for n in s.layer_names}
    before = s.check().metrics["accuracy"]
    rec = s.run_qat(QATOptions(steps=30, lr=1e-3, eval_every=30))  # held-out curve: first and last step only
    after = s.check().metrics["accuracy"]
    assert rec["before"]["metrics"]["accuracy"] == pytest.approx(before)
    assert rec["after"]["metrics"]["accuracy"] == pytest.approx(after)
    assert after > before + 0.15  # 2-bit weights: QAT recovers most of the accuracy
    assert s.weights_tag == "qat-1" and s.analysis.qat["tag"] == "qat-1"
    assert any(not torch.equal(s.sim.float_weight(n), w0[n]) for n in s.layer_names)
    kinds = [(k, p.get("what")) for k, p in events]
    assert ("analysis_changed", "qat") in kinds
    change = [p["change"] for k, p in events if k == "config_changed"][-1]
    assert set(change.layers) == set(s.layer_names)  # every layer's weights changed
    # one undo entry, back to the untrained weights and their result
    assert s.history.undo_label.startswith("QAT")
    s.undo()
    assert s.weights_tag is None
    assert all(torch.equal(s.sim.float_weight(n), w0[n]) for n in s.layer_names)
    assert s.check().metrics["accuracy"] == pytest.approx(before)
    s.redo()
    assert s.weights_tag == "qat-1" and s.check().metrics["accuracy"] == pytest.approx(after)


def test_save_load_and_export_keep_trained_weights(demo, tmp_path):
    s = demo
    assert s.weights_tag == "qat-1"
    path = s.save(tmp_path / "trained.qvs")
    obj = json.loads(path.read_text())
    assert obj["weights"]["file"] == "trained.qat-1.pt" and (tmp_path / "trained.qat-1.pt").is_file()
    assert obj["analysis"]["qat"]["curves"]["loss"]
    s2 = Session.load(path)
    assert s2.weights_tag == "qat-1" and not s2.history.can_undo
    for n in s.layer_names:
        assert torch.equal(s2.sim.float_weight(n), s.sim.float_weight(n))
    assert s2.check().metrics["accuracy"] == pytest.approx(s.check().metrics["accuracy"])
    # an export reads the simulation: the trained weights' quantized values
    out = s.export("onnx", tmp_path / "m.onnx")
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(tmp_path / "m.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    name = s.layer_names[0]
    qp = s.sim.quantize_weight(name, s.specs[name].weight).qparams
    assert torch.allclose(torch.from_numpy(inits[f"{name}.weight_scale"].astype("float32").copy()), qp.scale)
    trained_bias = s.trained["qat-1"][f"{name}.bias"]
    assert torch.allclose(torch.from_numpy(inits[f"{name}.bias"].copy()), trained_bias), out
    (tmp_path / "trained.qat-1.pt").unlink()
    with pytest.raises(Exception, match="missing"):
        Session.load(path)


def test_cancel_leaves_the_session_unchanged():
    s = _fresh()
    w0 = {n: s.sim.float_weight(n).clone() for n in s.layer_names}
    cfg = s.config.to_dict()
    steps = []
    with pytest.raises(Cancelled):
        s.run_qat(QATOptions(steps=50), on_step=steps.append, cancel=lambda: len(steps) >= 3)
    assert s.config.to_dict() == cfg and s.analysis.qat is None and not s.history.can_undo
    assert all(torch.equal(s.sim.float_weight(n), w0[n]) for n in s.layer_names)
    assert not s.trained


def test_recovery_file_carries_trained_weights(demo, tmp_path):
    from quantviz.session.autosave import Autosaver

    s = demo
    assert s.weights_tag == "qat-1"
    saver = Autosaver(s, tmp_path / "rec.json")
    saver.dirty = True
    assert saver.flush()
    assert (tmp_path / "rec.qat-1.pt").is_file()
    s2 = Session.load(tmp_path / "rec.json")
    assert s2.weights_tag == "qat-1"
    name = s.layer_names[0]
    assert torch.equal(s2.sim.float_weight(name), s.sim.float_weight(name))
    saver.close()
    assert not (tmp_path / "rec.qat-1.pt").exists()


def test_trace_follows_the_trained_weights(demo):
    from quantviz.session.trace import run_trace

    s = demo
    assert s.weights_tag == "qat-1"
    s.undo()
    before = run_trace(s, samples=64)
    s.redo()
    after = run_trace(s, samples=64)
    assert after is not before and after.to_dict() != before.to_dict()
