"""bf16 / fp16 layers on the CPU compute in float32 (quantviz.core.model.cpucompute): float and quantized runs
match a float32 computation, keep the model's dtype, and the switch turns it off."""
import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from quantviz.core.model import cpucompute
from quantviz.core.sim.fakequant import QuantSim
from quantviz.core.numerics.spec import ActSpec, LayerSpec, WeightSpec


def _models():
    torch.manual_seed(0)
    yield "linear", nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 16)), torch.randn(6, 64)
    yield "conv", nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect"), nn.ReLU(),
                                nn.Conv2d(8, 4, 1)), torch.randn(2, 3, 9, 9)
    pytest.importorskip("transformers")
    from transformers.pytorch_utils import Conv1D

    yield "conv1d_hf", nn.Sequential(Conv1D(24, 40), nn.GELU(), Conv1D(8, 24)), torch.randn(2, 5, 40)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_float_and_quantized_runs_match_float32_and_keep_the_dtype(dtype, monkeypatch):
    monkeypatch.delenv(cpucompute.ENV, raising=False)
    for kind, model, x in _models():
        ref32 = copy.deepcopy(model).float()
        model = model.to(dtype).eval()
        sim = QuantSim(model)
        assert len(sim._upcast) == len(sim.layers) == 2, kind
        xh = x.to(dtype)
        with torch.no_grad():
            out = sim.float_model(xh)
            # float32 through every layer, rounded to the model dtype after each layer as the upcast does
            h = xh
            for m32 in ref32:
                h = m32(h.float()).to(dtype)
        assert out.dtype == dtype, kind
        torch.testing.assert_close(out.float(), h.float(), rtol=2e-2, atol=2e-2, msg=kind)
        # quantized: the fake-quantized weight it runs with, multiplied in float32
        sim.apply({l.name: LayerSpec(WeightSpec(bits=4), ActSpec(bits=None)) for l in sim.layers})
        with torch.no_grad():
            q = sim.qmodel(xh)
            first = sim.float_model[0]
            y0 = cpucompute.compute(first, xh, sim.applied_weight("0").to(dtype), first.bias)
        assert q.dtype == dtype and y0.dtype == dtype
        assert not torch.equal(q, out)  # the quantized weights were used
        with torch.no_grad(), sim.quantized():
            got0 = sim.float_model[0](xh)
            ref0 = ref32[0].float()
            wq = sim.applied_weight("0").float()
            if kind == "conv":
                want0 = ref0._conv_forward(xh.float(), wq, ref0.bias).to(dtype)
            elif kind == "linear":
                want0 = F.linear(xh.float(), wq, ref0.bias).to(dtype)
            else:
                want0 = (xh.float().reshape(-1, 40) @ wq + ref0.bias).view(2, 5, 24).to(dtype)
        torch.testing.assert_close(got0.float(), want0.float(), rtol=1e-2, atol=1e-2, msg=kind)
        torch.testing.assert_close(y0.float(), want0.float(), rtol=1e-2, atol=1e-2, msg=kind)
        sim.close()
        assert "forward" not in vars(sim.float_model[0])


def test_switch_off_computes_in_the_model_dtype(monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 96)).to(torch.bfloat16)
    x = torch.randn(16, 128).to(torch.bfloat16)
    sim = QuantSim(model)
    with torch.no_grad():
        native = F.linear(x, model[0].weight, model[0].bias)
        up = sim.float_model(x)
        monkeypatch.setenv(cpucompute.ENV, "0")
        off = sim.float_model(x)
    assert torch.equal(off, native)
    exact = F.linear(x.float(), model[0].weight.float(), model[0].bias.float()).to(torch.bfloat16)
    assert torch.equal(up, exact)
    # a model built with the switch off is not changed at all
    other = nn.Sequential(nn.Linear(8, 8)).to(torch.bfloat16)
    assert QuantSim(other)._upcast == [] and "forward" not in vars(other[0])


def test_float32_models_and_copies_are_left_alone(monkeypatch):
    monkeypatch.delenv(cpucompute.ENV, raising=False)
    f32 = nn.Sequential(nn.Linear(8, 8))
    assert QuantSim(f32)._upcast == [] and "forward" not in vars(f32[0])
    model = nn.Sequential(nn.Linear(8, 4)).to(torch.bfloat16)
    sim = QuantSim(model)
    assert sim._upcast == [model[0]]
    x = torch.randn(3, 8).to(torch.bfloat16)
    native = F.linear(x, model[0].weight, model[0].bias)
    twins = [copy.deepcopy(model)]  # (a model under a live QuantSim does not pickle: its hooks hold the sim)
    for twin in twins:
        with torch.no_grad():
            assert torch.equal(twin(x), native)  # its own forward, not bound to the original
        twin[0].weight.data.zero_()
        with torch.no_grad():
            assert torch.equal(twin(x), twin[0].bias.expand(3, 4))  # the copy's own (zeroed) weight
    assert not torch.equal(model[0].weight, torch.zeros_like(model[0].weight))
    sim.close()
    again = pickle.loads(pickle.dumps(model))  # closed: the model is the caller's plain model again
    assert "forward" not in vars(model[0]) and "forward" not in vars(again[0])


def test_half_call_upcasts_only_cpu_half_pairs():
    x, w = torch.randn(4, 8), torch.randn(3, 8)
    assert torch.equal(cpucompute.half_call(F.linear, x, w), F.linear(x, w))
    xb, wb = x.to(torch.bfloat16), w.to(torch.bfloat16)
    out = cpucompute.half_call(F.linear, xb, wb)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, F.linear(xb.float(), wb.float()).to(torch.bfloat16))


def test_a_large_linear_is_upcast_in_blocks(monkeypatch):
    monkeypatch.setattr(cpucompute, "BLOCK_ELEMS", 64)  # 64 elements: blocks of 4 rows of 16
    torch.manual_seed(0)
    lin = nn.Linear(16, 10).to(torch.bfloat16)
    x = torch.randn(2, 3, 16).to(torch.bfloat16)
    out = cpucompute.compute(lin, x, lin.weight, lin.bias)
    want = F.linear(x.float(), lin.weight.float(), lin.bias.float()).to(torch.bfloat16)
    assert out.dtype == torch.bfloat16 and out.shape == (2, 3, 10)
    torch.testing.assert_close(out.float(), want.float(), rtol=1e-2, atol=1e-2)
