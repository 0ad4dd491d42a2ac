"""Found walking the app on a tiny GPT-2 whose data is saved as ``x`` (#22): the ONNX export failed
with "No module named 'onnxscript'", the fallback exporter's reason, hiding the TorchScript exporter's
(transformers' GPT-2 without an attention mask runs ``aten::diff``, which no ONNX opset has). The
refusal names both; where an exporter succeeds, the model gives every token's logits."""
import numpy as np
import pytest
import torch


def test_gpt2_with_a_plain_tensor_input_exports_or_says_why(tmp_path):
    transformers = pytest.importorskip("transformers")
    ort = pytest.importorskip("onnxruntime")
    from quantviz.core.errors import QuantvizError
    from quantviz.session import Session

    cfg = transformers.GPT2Config(vocab_size=40, n_embd=16, n_layer=1, n_head=2, n_positions=16)
    torch.manual_seed(0)
    folder = tmp_path / "gpt2"
    transformers.GPT2LMHeadModel(cfg).eval().save_pretrained(str(folder))
    ids = np.random.default_rng(0).integers(0, 40, size=(8, 10)).astype(np.int64)
    np.savez(tmp_path / "x.npz", x=ids)
    s = Session.open(str(folder), data=str(tmp_path / "x.npz"), batch_size=8)
    out = tmp_path / "m.onnx"
    try:
        s.export("onnx", out)
    except QuantvizError as exc:
        msg = str(exc)
        assert "\n" not in msg and "TorchScript exporter:" in msg and "dynamo exporter:" in msg, msg
        return
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert len(sess.get_inputs()) == 1
    logits = sess.run(None, {sess.get_inputs()[0].name: ids[:2]})[0]
    assert logits.shape == (2, 10, 40)  # every token, not the last one only
