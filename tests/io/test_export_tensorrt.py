"""``--format onnx --target tensorrt``: signed int8 / int4 with zero point 0, TensorRT's Q/DQ
placement, ONNX Runtime reproducing the symmetric simulation, one-line refusals."""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from quantviz.core.backends import onnxrt  # noqa: E402
from quantviz.core.errors import QuantvizError  # noqa: E402
from quantviz.core.sim.fakequant import iterate_outputs  # noqa: E402
from quantviz.core.numerics.sqnr import tensor_sqnr_db  # noqa: E402
from quantviz.io.config import preset  # noqa: E402
from quantviz.session import Session  # noqa: E402

HERE_FIXTURES = Path(__file__).resolve().parents[1] / "models"
sys.path.insert(0, str(HERE_FIXTURES))
from fixtures import resnet18  # noqa: E402


def _symmetric_w8a8(s):
    s.apply_preset("W8A8")
    s.edit_layers(s.layer_names, {"activation": {"symmetric": True}})


def _qdq(model):
    inits = {i.name: i for i in model.graph.initializer}
    return [(n, inits.get(n.input[2]) if len(n.input) > 2 else None) for n in model.graph.node
            if n.op_type in ("QuantizeLinear", "DequantizeLinear")], inits


def _ort_vs_sim(s, path):
    sess = onnxrt.make_session(path.read_bytes())
    out, labels = onnxrt.run_dataset(sess, s.eval_data)
    with s.lock:
        s.sim.apply(s.specs)
        sim_out = torch.cat([o for _, o, _ in iterate_outputs(s.sim.qmodel, s.eval_data, device="cpu")])
    return out, labels, sim_out


def test_demo_w8a8_every_qdq_is_int8_zero_point_0_and_ort_matches_the_simulation(demo, tmp_path):
    _symmetric_w8a8(demo)
    sim_acc = demo.check(record=False).metrics["accuracy"]
    path = tmp_path / "trt.onnx"
    res = demo.export("onnx", path, target="tensorrt")
    assert res.details["target"] == "tensorrt"
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    qdq, inits = _qdq(model)
    assert len(qdq) >= len(demo.layers)
    for node, zp in qdq:
        assert zp is not None and zp.data_type == onnx.TensorProto.INT8, node.name
        assert not onnx.numpy_helper.to_array(zp).any(), node.name  # zero point 0 everywhere
    # weights per channel on the output axis: Conv (O, I, kh, kw) and Gemm (transB: (out, in)) axis 0
    consumers = {i: n for n in model.graph.node for i in n.input}
    for info in demo.layers:
        dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == f"{info.name}.weight")
        axis = {a.name: a.i for a in dq.attribute}["axis"]
        user = consumers[dq.output[0]]
        assert user.op_type in ("Conv", "Gemm")
        trans_b = {a.name: a.i for a in user.attribute}.get("transB", 0)
        assert axis == (0 if user.op_type == "Conv" or trans_b else 1)
        scale = onnx.numpy_helper.to_array(inits[dq.input[1]])
        assert scale.shape == (info.weight_shape[info.channel_axis],)
    # every Conv / Gemm input is a DequantizeLinear output
    producers = {o: n for n in model.graph.node for o in n.output}
    for n in model.graph.node:
        if n.op_type in ("Conv", "Gemm"):
            assert producers[n.input[0]].op_type == "DequantizeLinear"
    out, labels, sim_out = _ort_vs_sim(demo, path)
    assert abs(onnxrt.accuracy(out, labels) - sim_acc) <= 0.002
    assert tensor_sqnr_db(sim_out, out) > 40.0


def test_the_ort_target_differs_where_the_rules_differ(demo, tmp_path):
    demo.apply_preset("W8A8")  # asymmetric uint8 activations: fine for ort, refused for tensorrt
    demo.export("onnx", tmp_path / "ort.onnx")
    qdq, _ = _qdq(onnx.load(str(tmp_path / "ort.onnx")))
    assert any(zp.data_type == onnx.TensorProto.UINT8 for _, zp in qdq)
    with pytest.raises(QuantvizError, match=r"^--target tensorrt cannot express features\.0: asymmetric activations"):
        demo.export("onnx", tmp_path / "trt.onnx", target="tensorrt")
    assert not (tmp_path / "trt.onnx").exists()


def test_int4_weight_only(demo, tmp_path):
    demo.set_config(preset("W4G32"))
    path = tmp_path / "w4.onnx"
    demo.export("onnx", path, target="tensorrt")
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    qdq, _ = _qdq(model)
    assert {n.op_type for n, _ in qdq} == {"DequantizeLinear"}  # weight-only: no activation Q/DQ
    assert {zp.data_type for _, zp in qdq} == {onnx.TensorProto.INT4}
    sim_acc = demo.check(record=False).metrics["accuracy"]
    out, labels, sim_out = _ort_vs_sim(demo, path)
    assert abs(onnxrt.accuracy(out, labels) - sim_acc) <= 0.002


@pytest.mark.parametrize("edit, message", [
    ({"weight": {"bits": 6}}, r"6-bit weights"),
    ({"weight": {"symmetric": False}}, r"asymmetric weights"),
    ({"weight": {"granularity": "per_group", "group_size": 16}}, r"per-group 8-bit weights"),
    ({"weight": {"format": "mxfp4"}}, r"its weights are mxfp4"),
    ({"activation": {"bits": 16}}, r"16-bit activations"),
    ({"weight": {"bits": 4}}, r"4-bit weights with a quantized input"),
])
def test_refusals_name_the_layer_in_one_line(demo, tmp_path, edit, message):
    _symmetric_w8a8(demo)
    demo.edit_layers(["features.3"], edit)
    with pytest.raises(QuantvizError) as err:
        demo.export("onnx", tmp_path / "x.onnx", target="tensorrt")
    text = str(err.value)
    assert "\n" not in text and text.startswith("--target tensorrt cannot express features.3:")
    assert pytest.importorskip("re").search(message, text)


def test_qnn_is_refused_not_pretended(demo, tmp_path):
    with pytest.raises(QuantvizError, match="--target qnn is not implemented"):
        demo.export("onnx", tmp_path / "q.onnx", target="qnn")
    with pytest.raises(QuantvizError, match="is for --format onnx"):
        demo.export("json", tmp_path / "q.json", target="tensorrt")


def test_cli_target_and_one_line_refusal(cli, tmp_path):
    out = tmp_path / "d.onnx"
    r = cli("export", "demo", "--preset", "W8A8", "--format", "onnx", "--target", "tensorrt", "-o", str(out))
    code, err = r.code, r.err
    assert code != 0 and "Traceback" not in err
    assert "asymmetric activations" in err and len(err.strip().splitlines()) == 1
    r = cli("export", "demo", "--preset", "W8A8", "--format", "onnx", "--target", "qnn", "-o", str(out))
    code, err = r.code, r.err
    assert code != 0 and "not implemented" in err and "Traceback" not in err
    assert not out.exists()


# ------------------------------------------------------------ ResNet-style residual adds
@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    d = tmp_path_factory.mktemp("trt_resnet")
    m = resnet18()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(24, 3, 32, 32, generator=g)
    with torch.no_grad():
        y = m(x).argmax(1)
    np.savez(d / "data.npz", x=x.numpy(), y=y.numpy())
    (d / "recipe.py").write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(HERE_FIXTURES)!r})
        from fixtures import resnet18
        NAME = "resnet18"
        def build_model():
            return resnet18()
    """))
    s = Session.open(str(d / "recipe.py"), data=str(d / "data.npz"), batch_size=8)
    _symmetric_w8a8(s)
    return s


def test_resnet_residual_adds_get_int8_qdq(resnet, tmp_path):
    path = tmp_path / "r.onnx"
    res = resnet.export("onnx", path, target="tensorrt")
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    adds = [n for n in model.graph.node if n.op_type == "Add"
            and all(producers.get(i) is not None for i in n.input)]
    assert len(adds) == 8  # one per basic block of ResNet-18
    for add in adds:
        kinds = sorted(producers[i].op_type for i in add.input)
        assert kinds == ["Conv", "DequantizeLinear"], kinds  # fused Conv + the residual's int8 Q/DQ
    qdq, _ = _qdq(model)
    for node, zp in qdq:
        assert zp.data_type == onnx.TensorProto.INT8 and not onnx.numpy_helper.to_array(zp).any()
    assert any("residual input of 8 Add(s)" in n for n in res.notes)
    # the residual Q/DQ adds rounding the simulation does not have: close, not equal
    out, labels, sim_out = _ort_vs_sim(resnet, path)
    assert tensor_sqnr_db(sim_out, out) > 20.0
