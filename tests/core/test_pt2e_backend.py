"""Convolutions on real int8 kernels through torchao's pt2e flow (x86 oneDNN lowering)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("torchao")

from quantviz.core.backends import pt2e_backend as pb  # noqa: E402
from quantviz.core.model.data import Dataset  # noqa: E402
from quantviz.core.errors import QuantvizError  # noqa: E402
from quantviz.core.sim.fakequant import QuantSim  # noqa: E402
from quantviz.core.numerics.sqnr import tensor_sqnr_db  # noqa: E402
from quantviz.io.config import preset  # noqa: E402
from quantviz.session import Session  # noqa: E402


@pytest.fixture(scope="module")
def demo():
    s = Session.open("demo")
    s.apply_preset("W8A8")
    s.apply_preset("W4A8", ["features.3"])
    return s


def test_plan_names_the_layers_with_int8_kernels_and_why_others_are_simulated(demo):
    p = pb.plan(demo.layers, demo.specs)
    assert p.kernels == ["features.0", "features.7", "classifier.1", "classifier.3"]
    assert "8-bit symmetric per-channel weights" in p.simulated["features.3"]
    w8 = pb.plan(demo.layers, preset("W8").resolve_all(demo.layers))
    assert w8.kernels == [] and len(w8.simulated) == len(demo.layers)  # float activations: no int8 kernel


def test_lowered_demo_runs_onednn_kernels_and_matches_the_simulation(demo):
    calib = [x for x, _ in demo.calib_data.batches(64)]
    example = demo.eval_data.subset(32).x
    model, _converted, p = pb.build(demo.sim, demo.specs, calib, example)
    ops = {str(n.target) for n in model.graph.nodes if n.op == "call_function"}
    assert "onednn.qconv_pointwise.default" in ops and "onednn.qlinear_pointwise.default" in ops
    xs = torch.cat([x for x, _ in demo.eval_data.batches(64)])
    labels = torch.cat([y for _, y in demo.eval_data.batches(64)])
    with torch.no_grad():
        real = pb.run_batched(model, xs, 32)  # 597 samples: the last batch is padded
        demo.sim.apply(demo.specs)
        sim = demo.sim.qmodel(xs)
    assert real.shape == sim.shape
    assert tensor_sqnr_db(sim, real) > 30
    acc = lambda o: float((o.argmax(1) == labels).float().mean())  # noqa: E731
    assert abs(acc(real) - acc(sim)) <= 0.005


def test_converted_program_keeps_quantviz_grids_and_drops_float_weights(demo):
    calib = [x for x, _ in demo.calib_data.batches(64)]
    converted, p = pb.convert(demo.sim, demo.specs, calib, demo.eval_data.subset(8).x)
    sd = converted.state_dict()
    int8 = [v for v in sd.values() if v.dtype == torch.int8]
    assert len(int8) == len(p.kernels)
    assert not any(k.endswith(".weight") and v.dtype == torch.float32 and k.split(".weight")[0] in p.kernels
                   for k, v in sd.items())
    # the int8 codes are quantviz's: its weight grid scaled back
    wq = demo.sim.quantize_weight("features.7", demo.specs["features.7"].weight)
    codes = torch.round(wq.tensor / wq.qparams.scale.view(-1, 1, 1, 1)).to(torch.int8)
    assert any(torch.equal(codes, v) for v in int8)


class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x):
        if float(x.sum()) > 0:  # data-dependent Python control flow: torch.export cannot follow it
            return self.conv(x)
        return -self.conv(x)


def test_a_model_that_cannot_be_exported_gets_a_one_line_error():
    sim = QuantSim(_Branchy().eval())
    data = Dataset(torch.randn(16, 1, 8, 8), name="random")
    sim.calibrate(data, batch_size=8)
    specs = preset("W8A8").resolve_all(sim.layers)
    with pytest.raises(QuantvizError) as err:
        pb.convert(sim, specs, [data.x[:8]], data.x[:8])
    assert str(err.value).startswith("pt2e: this model could not be exported") and "\n" not in str(err.value)


def test_a_lowering_that_changes_the_outputs_is_refused(demo):
    calib = [x for x, _ in demo.calib_data.batches(64)]
    example = demo.eval_data.subset(16).x
    converted, _ = pb.convert(demo.sim, demo.specs, calib, example)
    with pytest.raises(QuantvizError, match="disagrees with the Q/DQ program"):
        pb.lower(converted, example, min_db=1000.0)


def test_build_falls_back_to_convolutions_when_linear_lowering_fails(demo, monkeypatch):
    real_lower = pb.lower
    calls = []

    def picky_lower(converted, example, **kw):
        linear_ops = [n for n in converted.graph.nodes if n.target == torch.ops.aten.linear.default]
        calls.append(len(linear_ops))
        if len(calls) == 1:
            raise QuantvizError("pt2e: the oneDNN lowering disagrees with the Q/DQ program on this model (20.0 dB < 30 dB)")
        return real_lower(converted, example, **kw)

    monkeypatch.setattr(pb, "lower", picky_lower)
    calib = [x for x, _ in demo.calib_data.batches(64)]
    model, converted, p = pb.build(demo.sim, demo.specs, calib, demo.eval_data.subset(16).x)
    assert p.kernels == ["features.0", "features.7"]
    assert "Linear layers left to the torchao backend" in p.simulated["classifier.1"]
    ops = {str(n.target) for n in model.graph.nodes if n.op == "call_function"}
    assert "onednn.qconv_pointwise.default" in ops and "onednn.qlinear_pointwise.default" not in ops
