"""ONNX models as a source (issue 27 §1): converted to torch with ONNX Runtime's float outputs,
layers named after the ONNX initializers / node scopes, one-line errors for unsupported
operators, and a QDQ model's quantization imported as the config."""
from __future__ import annotations

import contextlib
import io
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from quantviz.core.errors import SourceError  # noqa: E402
from quantviz.core.sources import load_model  # noqa: E402
from quantviz.session import Session  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from fixtures import resnet18  # noqa: E402


class TinyEncoder(nn.Module):
    """Transformer-style: a token projection, two encoder layers (attention, LayerNorm, MLP), a head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Linear(16, 32)
        self.enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True), 2,
                                         enable_nested_tensor=False)
        with torch.no_grad():  # the two layers start as copies: make them differ
            for p in self.enc.layers[1].parameters():
                p.add_(0.05 * torch.randn_like(p))
        self.head = nn.Linear(32, 5)

    def forward(self, x):
        return self.head(self.enc(self.embed(x)).mean(dim=1))


def _export(model: nn.Module, x: torch.Tensor, path: Path) -> Path:
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, opset_version=17)
    return path


def _ort(path: Path, x: torch.Tensor) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x.numpy()})[0]


def _layers(m: nn.Module) -> list[str]:
    return [n for n, mod in m.named_modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx_src")
    g = torch.Generator().manual_seed(3)
    r = resnet18()
    t = TinyEncoder().eval()
    return {"resnet": (r, _export(r, torch.randn(2, 3, 32, 32, generator=g), d / "resnet.onnx"), (3, 32, 32)),
            "encoder": (t, _export(t, torch.randn(2, 8, 16, generator=g), d / "encoder.onnx"), (8, 16)), "dir": d}


@pytest.mark.parametrize("which", ["resnet", "encoder"])
def test_converted_model_computes_what_onnxruntime_computes(models, which):
    torch_model, path, shape = models[which]
    bundle = load_model(str(path))
    assert bundle.kind == "onnx"
    g = torch.Generator().manual_seed(7)
    for n in (1, 5):  # the batch axis stays dynamic
        x = torch.randn(n, *shape, generator=g)
        with torch.no_grad():
            got = bundle.model(x).numpy()
        want = _ort(path, x)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_resnet_layers_are_named_after_the_torch_modules(models):
    """BatchNorm-folded convolutions lose their weight names (onnx::Conv_N): the node scope names them."""
    torch_model, path, _ = models["resnet"]
    bundle = load_model(str(path))
    assert sorted(_layers(bundle.model)) == sorted(_layers(torch_model))  # in graph order
    weights = {i.name for i in onnx.load(str(path)).graph.initializer}
    assert bundle.meta["onnx_layer_tensors"]["fc"] == "fc.weight" and "fc.weight" in weights  # Gemm: its initializer


def test_encoder_layers_from_initializer_and_scope_names(models):
    _, path, _ = models["encoder"]
    names = set(_layers(load_model(str(path)).model))
    for i in (0, 1):
        # out_proj is a Gemm on its own initializer; linear1 / linear2 MatMuls take their scope's name;
        # the attention's in-projection MatMul sits beside out_proj under self_attn
        assert {f"enc.layers.{i}.self_attn.out_proj", f"enc.layers.{i}.linear1", f"enc.layers.{i}.linear2",
                f"enc.layers.{i}.self_attn.matmul"} <= names
    assert {"embed", "head"} <= names
    assert len(names) == 10


def test_session_on_onnx_and_its_export_name_the_same_tensors(models, tmp_path):
    _, path, shape = models["encoder"]
    g = torch.Generator().manual_seed(5)
    x = torch.randn(24, *shape, generator=g)
    np.savez(tmp_path / "d.npz", x=x.numpy())
    s = Session.open(str(path), data=str(tmp_path / "d.npz"), batch_size=8)
    s.apply_preset("W8A8")
    assert s.check(record=False).metrics["sqnr_db"] > 20
    out = tmp_path / "q.onnx"
    res = s.export("onnx", out)
    tensors = res.details["tensors"]
    assert set(tensors) == set(s.layer_names)
    assert all(t["weight"] == f"{name}.weight" for name, t in tensors.items())
    dq_outputs = {n.output[0] for n in onnx.load(str(out)).graph.node if n.op_type == "DequantizeLinear"}
    assert {f"{n}.weight" for n in s.layer_names} <= dq_outputs


def _graph_with(op: str, node_name: str, path: Path) -> Path:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    w = helper.make_tensor("fc.weight", TensorProto.FLOAT, [4, 4], np.eye(4, dtype=np.float32).ravel().tolist())
    nodes = [helper.make_node("Gemm", ["x", "fc.weight"], ["h"], name="/fc/Gemm", transB=1),
             helper.make_node(op, ["h"], ["y"], name=node_name)]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w]), opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def test_unsupported_operator_is_one_line_naming_it_and_its_node(tmp_path, cli):
    path = _graph_with("Hardmax", "/head/Hardmax_7", tmp_path / "odd.onnx")
    with pytest.raises(SourceError) as err:
        load_model(str(path))
    msg = str(err.value)
    assert "\n" not in msg and "odd.onnx" in msg and "Hardmax" in msg and "/head/Hardmax_7" in msg
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 4), np.float32))
    r = cli("inspect", str(path), "--data", str(tmp_path / "d.npz"))
    assert r.code != 0 and "Traceback" not in r.err and "Hardmax" in r.err


def test_a_supported_graph_beside_it_opens(tmp_path):
    path = _graph_with("Relu", "/act/Relu", tmp_path / "ok.onnx")
    b = load_model(str(path))
    assert _layers(b.model) == ["fc"]
    x = torch.tensor([[-1.0, 2.0, -3.0, 4.0]])
    assert torch.equal(b.model(x), torch.relu(x))


def test_qdq_model_opens_with_its_quantization_as_the_config(tmp_path, cli):
    demo = Session.open("demo")
    demo.apply_preset("W8A8")
    sim = demo.check(record=False).metrics
    path = tmp_path / "demo_qdq.onnx"
    demo.export("onnx", path)
    x, y = demo.eval_data.x, demo.eval_data.y
    np.savez(tmp_path / "eval.npz", x=x.numpy(), y=y.numpy())
    np.savez(tmp_path / "calib.npz", x=demo.calib_data.x.numpy())
    s = Session.open(str(path), data=str(tmp_path / "eval.npz"), calib=str(tmp_path / "calib.npz"))
    assert s.layer_names == demo.layer_names
    for name in s.layer_names:
        spec, want = s.specs[name], demo.specs[name]
        assert (spec.weight.bits, spec.weight.symmetric, spec.weight.granularity) == (8, True, "per_channel")
        assert spec.activation.bits == 8 and not spec.activation.symmetric
        assert spec.activation.range.method == "manual"
        # the imported clip range gives the exported scale and zero point
        got_q, want_q = s.sim.input_qparams(name, spec), demo.sim.input_qparams(name, want)
        assert torch.allclose(got_q.scale, want_q.scale, rtol=1e-5)
        assert torch.equal(got_q.zero_point, want_q.zero_point)
        w_got = s.sim.quantize_weight(name, spec.weight).tensor
        w_want = demo.sim.quantize_weight(name, want.weight).tensor
        assert torch.allclose(w_got, w_want, atol=1e-6)
    got = s.check(record=False).metrics
    assert abs(got["accuracy"] - sim["accuracy"]) <= 0.002
    # the CLI, given no --config / --preset, uses the imported config too
    r = cli("evaluate", str(path), "--data", str(tmp_path / "eval.npz"), "--json")
    assert r.code == 0, r.err


# ---------------------------------------------------------------- a model exported by another framework
SKL = Path(__file__).resolve().parents[1] / "data" / "sklearn_mlp_digits.onnx"  # scripts/make_sklearn_onnx.py
SKL_DATA = SKL.with_name("sklearn_digits_heldout.npz")


def test_a_scikit_learn_model_exported_by_skl2onnx_opens_and_computes_what_onnxruntime_computes():
    """skl2onnx's graph: ai.onnx.ml Scaler and ArrayFeatureExtractor around MatMul / Add, and two
    outputs, an int64 label and the float probabilities: the metrics read the probabilities."""
    bundle = load_model(str(SKL))
    assert sorted(_layers(bundle.model)) == ["matmul_2", "matmul_5", "matmul_8"]
    x = np.load(SKL_DATA)["x"][:64]
    sess = ort.InferenceSession(str(SKL), providers=["CPUExecutionProvider"])
    label, probs = sess.run(["label", "probabilities"], {"X": x})
    with torch.no_grad():
        got_label, got_probs = bundle.model(torch.from_numpy(x))
    np.testing.assert_array_equal(got_label.numpy(), label)
    np.testing.assert_allclose(got_probs.numpy(), probs, rtol=1e-4, atol=1e-6)


def test_a_scikit_learn_model_quantized_and_exported_runs_in_onnxruntime_as_simulated(tmp_path):
    s = Session.open(str(SKL), data=str(SKL_DATA), batch_size=64)
    float_acc = s.check(record=False).metrics["accuracy"]
    s.apply_preset("W8A8")
    res = s.check(record=False)
    assert res.metrics["accuracy"] > 0.8 and abs(res.metrics["accuracy"] - float_acc) < 0.02
    out = tmp_path / "q.onnx"
    s.export("onnx", out)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["label", "probabilities"]  # the file's own names
    x, y = s.eval_data.x.numpy(), s.eval_data.y.numpy()
    label, probs = sess.run(None, {sess.get_inputs()[0].name: x})
    np.testing.assert_array_equal(label, probs.argmax(1))
    assert abs(float((label == y).mean()) - res.metrics["accuracy"]) <= 2 / len(y)
