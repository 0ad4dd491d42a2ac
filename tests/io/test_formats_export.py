"""Float / block formats through the config file and every export: ONNX FP8 Q/DQ in ONNX Runtime,
FP4 (FLOAT4E2M1, opset 23) in onnx.reference, quantviz JSON block scales, AIMET's refusal."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from quantviz.core.errors import QuantvizError
from quantviz.io.config import ConfigError, QuantConfig, parse_config_text, preset
from quantviz.session import Session

ROOT = Path(__file__).resolve().parents[2]
onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def demo():
    return Session.open("demo")


@pytest.fixture(scope="module")
def transformer():
    return Session.open(str(ROOT / "resources" / "recipes" / "tiny_transformer.py"), trust=True, batch_size=64)


def _simulated(s):
    x = s.eval_data.first_input()
    s.sim.apply(s.specs)
    with torch.no_grad():
        return x, s.sim.qmodel(x).float().numpy()


def _feeds(ex, x):
    return {ex.input_names[0]: x.numpy()}


# ------------------------------------------------------------------ config
def test_version_2_file_loads_unchanged_and_formats_round_trip():
    old = parse_config_text(json.dumps({"format": "quantviz-config", "version": 2,
                                        "default": {"weight": {"bits": 4, "grid": "full"}}}))
    assert old.to_dict()["version"] == 3 and old.default == {"weight": {"bits": 4, "grid": "full"}}
    cfg = preset("MXFP4A-MXFP8")
    again = parse_config_text(cfg.to_json())
    assert again == cfg
    from quantviz.core.model.layers import LayerInfo

    spec = again.resolve(LayerInfo("fc", "Linear", (8, 64), 520, 0, True, 0))
    assert (spec.weight.format, spec.weight.bits, spec.activation.format, spec.activation.bits) == ("mxfp4", 4, "mxfp8_e4m3", 8)
    # a float format fixes the element width: bits only says quantized or float
    cfg.set_layer("fc", {"weight": {"bits": 8}})
    assert cfg.resolve(LayerInfo("fc", "Linear", (8, 64), 520, 0, True, 0)).weight.bits == 4
    with pytest.raises(ConfigError, match=r"layers\.fc\.weight\.format: unknown format \"fp4\""):
        QuantConfig.from_dict({"format": "quantviz-config", "version": 3, "layers": {"fc": {"weight": {"format": "fp4"}}}})


# -------------------------------------------------------------------- ONNX
@pytest.mark.parametrize("which", ["demo", "transformer"])
def test_onnx_fp8_qdq_in_onnxruntime_equals_the_simulation(which, request):
    from quantviz.core.backends.onnxrt import make_session
    from quantviz.io.onnx_export import build_qdq
    from quantviz.io.onnx_formats import ort_optimize_ok

    s = request.getfixturevalue(which)
    s.apply_preset("W-FP8A-FP8")
    x, ref = _simulated(s)
    ex = build_qdq(s.sim, s.specs, x)
    types = {i.data_type for i in ex.model.graph.initializer}
    assert onnx.TensorProto.FLOAT8E4M3FN in types
    assert any(n.op_type == "QuantizeLinear" for n in ex.model.graph.node)
    sess = make_session(ex.model.SerializeToString(), optimize=ort_optimize_ok(s.specs))
    out = sess.run(None, _feeds(ex, x))[0]
    assert np.array_equal(out.argmax(1), ref.argmax(1))
    assert np.abs(out - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())


@pytest.mark.parametrize("name", ["MXFP4", "NVFP4", "MXFP8", "MXFP6"])
def test_onnx_block_formats_in_the_reference_evaluator_equal_the_simulation(demo, name):
    from onnx.reference import ReferenceEvaluator

    from quantviz.io.onnx_export import build_qdq

    demo.apply_preset(name)
    x, ref = _simulated(demo)
    ex = build_qdq(demo.sim, demo.specs, x)
    assert max(o.version for o in ex.model.opset_import if o.domain in ("", "ai.onnx")) >= 23
    dq = [n for n in ex.model.graph.node if n.op_type == "DequantizeLinear" and n.name.endswith("weight_dequantize")]
    assert dq and all(any(a.name == "block_size" for a in n.attribute) for n in dq)
    if name in ("MXFP4", "NVFP4"):
        assert onnx.TensorProto.FLOAT4E2M1 in {i.data_type for i in ex.model.graph.initializer}
    out = ReferenceEvaluator(ex.model).run(None, _feeds(ex, x))[0]
    assert np.array_equal(out.argmax(1), ref.argmax(1))
    assert np.abs(out - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())


def test_block_format_activations_stay_float_in_onnx_with_a_note(demo):
    from quantviz.io.onnx_export import build_qdq

    demo.apply_preset("MXFP4A-MXFP8")
    ex = build_qdq(demo.sim, demo.specs, demo.eval_data.first_input())
    assert any("cannot express" in n for n in ex.notes)


# -------------------------------------------------------- JSON, AIMET, torchao
def test_json_carries_every_block_scale_and_aimet_refuses(demo, tmp_path):
    demo.apply_preset("NVFP4")
    demo.export("json", tmp_path / "q.json")
    doc = json.loads((tmp_path / "q.json").read_text())
    for info in demo.layers:
        w = doc["layers"][info.name]["weight"]
        per_row = info.weight_numel // info.channels
        blocks = info.channels * -(-per_row // 16)
        assert w["format"] == "nvfp4" and len(w["scale"]) == len(w["scale_e4m3"]) == blocks
        assert w["partial_last_block"] == per_row % 16
        assert np.allclose(np.array(w["scale"]), np.array(w["scale_e4m3"]) * w["tensor_scale"], rtol=1e-6)
    with pytest.raises(QuantvizError, match=r"^layers\.features\.0\.weight\.format: AIMET encodings cannot express NVFP4"):
        demo.export("aimet", tmp_path / "a.json")
    res = demo.export("torchao", tmp_path / "t.py", force=True)
    assert all("simulated" in n for n in res.notes if n.startswith(demo.layers[0].name))
