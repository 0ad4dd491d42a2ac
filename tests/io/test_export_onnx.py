"""The ONNX QDQ export runs in ONNX Runtime and reproduces the simulation."""
from __future__ import annotations

import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from quantviz.core.backends import onnxrt  # noqa: E402
from quantviz.core.sim.fakequant import iterate_outputs  # noqa: E402
from quantviz.core.numerics.sqnr import tensor_sqnr_db  # noqa: E402
from quantviz.io.onnx_export import build_qdq  # noqa: E402


def _mixed(s):
    s.apply_preset("W8A8")
    s.apply_preset("W4", ["features.3"])
    s.edit_layers(["classifier.1"], {"weight": {"bits": 6, "granularity": "per_group", "group_size": 32},
                                     "activation": {"bits": 6}})
    s.edit_layers(["features.7"], {"weight": {"bits": 16}, "activation": {"bits": 16, "symmetric": True}})
    s.edit_layers(["features.0"], {"weight": {"bits": 3, "granularity": "per_tensor"}})


def _run(s, path):
    s.export("onnx", path)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    sess = onnxrt.make_session(path.read_bytes())
    out, labels = onnxrt.run_dataset(sess, s.eval_data)
    with s.lock:
        s.sim.apply(s.specs)
        sim_out = torch.cat([o for _, o, _ in iterate_outputs(s.sim.qmodel, s.eval_data, device="cpu")])
    return model, out, labels, sim_out


@pytest.mark.parametrize("config", ["W8A8", "W4A8", "mixed", "restricted"])
def test_onnxruntime_matches_simulation(demo, tmp_path, config):
    if config == "mixed":
        _mixed(demo)
    elif config == "restricted":  # int8 [-127, 127] weights and symmetric activations
        from quantviz.io.config import preset, with_grid

        demo.set_config(with_grid(preset("W8A8"), "restricted"))
        demo.edit_layers(demo.layer_names, {"activation": {"symmetric": True}})
    else:
        demo.apply_preset(config)
    sim_acc = demo.check(record=False).metrics["accuracy"]
    model, out, labels, sim_out = _run(demo, tmp_path / "m.onnx")
    assert any(o.domain in ("", "ai.onnx") and o.version >= 21 for o in model.opset_import)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("DequantizeLinear") >= len(demo.layers)
    assert abs(onnxrt.accuracy(out, labels) - sim_acc) <= 0.002
    assert tensor_sqnr_db(sim_out, out) > 40.0
    if config == "W4A8":
        types = {i.data_type for i in model.graph.initializer}
        assert onnx.TensorProto.INT4 in types  # native 4-bit weights
    if config == "mixed":
        assert "Clip" in ops  # the 6-bit activation grid is clamped inside uint8
        w = {i.name: i for i in model.graph.initializer}["features.0.weight_quantized"]
        vals = onnx.numpy_helper.to_array(w)
        assert vals.min() >= -4 and vals.max() <= 3  # 3-bit values stored in int4
    if config == "restricted":
        assert "Clip" in ops  # int8 saturates at -128: the restricted grid is clamped to -127 steps first
        for i in model.graph.initializer:
            if i.name.endswith(".weight_quantized"):
                assert onnx.numpy_helper.to_array(i).min() >= -127


def test_weights_dequantize_to_the_simulated_weights(demo):
    demo.apply_preset("W4G32")
    ex = build_qdq(demo.sim, demo.specs, demo.eval_data.first_input())
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    inits = {i.name: numpy_helper.to_array(i) for i in ex.model.graph.initializer}
    assert "classifier.1.weight" not in inits  # replaced by int + DequantizeLinear
    node = next(n for n in ex.model.graph.node if n.output[0] == "classifier.1.weight")
    attrs = {a.name: a.i for a in node.attribute}
    assert attrs.get("block_size") == 32
    got = ReferenceEvaluator(onnx.helper.make_model(onnx.helper.make_graph(
        [node], "g", [], [onnx.helper.make_tensor_value_info("classifier.1.weight", onnx.TensorProto.FLOAT, None)],
        [i for i in ex.model.graph.initializer if i.name in node.input]),
        opset_imports=[onnx.helper.make_opsetid("", 21)])).run(None, {})[0]
    want = demo.sim.quantize_weight("classifier.1", demo.specs["classifier.1"].weight).tensor.numpy()
    assert (got == want).all()
