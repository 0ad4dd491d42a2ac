"""Exports carry what the per-layer algorithms computed (codes, biases, input scales)."""
from __future__ import annotations

import json

import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from quantviz.core.backends import onnxrt  # noqa: E402
from quantviz.core.sim.fakequant import iterate_outputs  # noqa: E402
from quantviz.core.numerics.qparams import quantize_int  # noqa: E402
from quantviz.core.numerics.sqnr import tensor_sqnr_db  # noqa: E402


def _configure(s):
    s.apply_preset("W4A8")
    fast = {"algorithm": "adaround", "algorithm_options": {"iterations": 100}}
    s.edit_layers(["features.0", "features.3", "features.7"], {"weight": fast})
    s.edit_layers(["classifier.1"], {"weight": {"algorithm": "gptq", "granularity": "per_group", "group_size": 32}})
    s.edit_layers(["classifier.3"], {"weight": {"algorithm": "bias_correction"}})


def test_onnx_export_reproduces_the_algorithms(demo, tmp_path):
    _configure(demo)
    res = demo.export("onnx", tmp_path / "m.onnx")
    assert any("bias replaced by bias_correction" in n for n in res.notes)
    model = onnx.load(str(tmp_path / "m.onnx"))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    with demo.lock:
        demo.sim.apply(demo.specs)
        wq = demo.sim.quantize_weight("features.3", demo.specs["features.3"].weight)
        sim_out = torch.cat([o for _, o, _ in iterate_outputs(demo.sim.qmodel, demo.eval_data, device="cpu")])
    codes = torch.as_tensor(inits["features.3.weight_quantized"].astype("int64"))
    assert torch.equal(codes, wq.codes.long())
    nearest = quantize_int(demo.sim.float_weight("features.3"), wq.qparams, axis=0)
    assert int((codes != nearest).sum()) == wq.algorithm_info["changed"] > 0  # AdaRound's choices, not nearest
    sess = onnxrt.make_session((tmp_path / "m.onnx").read_bytes())
    out, labels = onnxrt.run_dataset(sess, demo.eval_data)
    assert tensor_sqnr_db(sim_out, out) > 40.0


def test_json_export_carries_codes_and_bias(demo, tmp_path):
    _configure(demo)
    demo.export("json", tmp_path / "q.json")
    doc = json.loads((tmp_path / "q.json").read_text())
    l3 = doc["layers"]["features.3"]["weight"]
    assert l3["algorithm"]["algorithm"] == "adaround" and len(l3["codes"]) == 4 * 32 * 9
    c3 = doc["layers"]["classifier.3"]["weight"]
    assert len(c3["bias"]) == 10 and c3["algorithm"]["algorithm"] == "bias_correction"
    assert doc["layers"]["classifier.3"]["spec"]["weight"]["algorithm"] == "bias_correction"


def test_onnx_export_of_smoothquant_scales_the_input_and_creates_biases(tmp_path):
    from torch import nn

    from quantviz.core.model.data import Dataset
    from quantviz.core.sim.fakequant import QuantSim
    from quantviz.core.numerics.spec import ActSpec, LayerSpec, WeightSpec
    from quantviz.io.onnx_export import build_qdq, save_model

    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8, bias=False))
    x = torch.randn(200, 16)
    x[:, 2] *= 20
    sim = QuantSim(m)
    sim.calibrate(Dataset(x, name="calib"))
    specs = {"0": LayerSpec(WeightSpec(bits=8, algorithm="smoothquant"), ActSpec(bits=8)),
             "2": LayerSpec(WeightSpec(bits=4, algorithm="bias_correction"), ActSpec(bits=8))}
    sim.apply(specs)
    ex = build_qdq(sim, specs, x[:1])
    assert any("explicit Mul" in n for n in ex.notes) and any("bias created" in n for n in ex.notes)
    save_model(ex.model, tmp_path / "s.onnx")
    sess = onnxrt.make_session((tmp_path / "s.onnx").read_bytes())
    out, _ = onnxrt.run_dataset(sess, Dataset(x, name="x"))
    with torch.no_grad():
        want = sim.qmodel(x)
    assert tensor_sqnr_db(want, out) > 35.0


def test_smoothquant_scale_folds_into_a_layernorm_that_feeds_only_that_layer(tmp_path):
    from torch import nn

    from quantviz.core.model.data import Dataset
    from quantviz.core.sim.fakequant import QuantSim
    from quantviz.core.numerics.spec import ActSpec, LayerSpec, WeightSpec
    from quantviz.io.onnx_export import build_qdq, save_model

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln, self.fc, self.ln2, self.q, self.k = nn.LayerNorm(16), nn.Linear(16, 16), nn.LayerNorm(16), nn.Linear(16, 8), nn.Linear(16, 8)

        def forward(self, x):
            h = self.fc(self.ln(x))
            y = self.ln2(h)
            return self.q(y) + self.k(y)  # ln2 feeds two layers: their scales cannot both fold into it

    torch.manual_seed(0)
    m = M().eval()
    with torch.no_grad():
        m.ln.weight[3] = 25.0
        m.ln2.weight[5] = 25.0
    x = torch.randn(300, 16)
    sim = QuantSim(m)
    sim.calibrate(Dataset(x, name="calib"))
    sq = LayerSpec(WeightSpec(bits=8, algorithm="smoothquant"), ActSpec(bits=8))
    specs = {"fc": sq, "q": sq, "k": sq}
    sim.apply(specs)
    ex = build_qdq(sim, specs, x[:1])
    notes = " | ".join(ex.notes)
    assert "fc: smoothquant input scale as folded into the LayerNorm" in notes
    assert "q: smoothquant input scale as an explicit Mul" in notes and "k: smoothquant input scale as an explicit Mul" in notes
    save_model(ex.model, tmp_path / "f.onnx")
    out, _ = onnxrt.run_dataset(onnxrt.make_session((tmp_path / "f.onnx").read_bytes()), Dataset(x, name="x"))
    with torch.no_grad():
        want = sim.qmodel(x)
    assert tensor_sqnr_db(want, out) > 35.0
