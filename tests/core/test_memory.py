"""One model, no spare copies: the quantized view, the weight cache's budget and codes."""
from __future__ import annotations

import torch
from torch import nn

from quantviz.core.data import Dataset
from quantviz.core.evaluate import evaluate_quantized, float_reference
from quantviz.core.fakequant import QuantSim
from quantviz.core.spec import ActSpec, LayerSpec, WeightSpec
from quantviz.core.wcodes import encode


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)).eval()


def _specs(sim, act=8, **w):
    return {l.name: LayerSpec(WeightSpec(**w), ActSpec(bits=act)) for l in sim.layers}


def test_no_copy_of_a_model_without_batchnorm():
    m = _mlp()
    sim = QuantSim(m)
    assert sim.float_model is m
    assert sim.float_weight("0").data_ptr() == m[0].weight.data_ptr()  # a view, not a clone
    sim.close()


def test_budgeted_cache_gives_the_same_outputs():
    x = torch.randn(40, 32)
    data = Dataset(x, name="d")
    outs = []
    for budget in (1 << 30, 0, 20_000):  # everything kept / nothing kept / some kept, some as codes
        sim = QuantSim(_mlp(), weight_cache_bytes=budget)
        sim.calibrate(data, batch_size=16)
        ref = float_reference(sim.float_model, data, batch_size=16)
        for spec in (dict(bits=8), dict(bits=4, granularity="per_group", group_size=16)):
            sim.apply(_specs(sim, **spec))
            with torch.no_grad():
                outs.append((budget, str(spec), sim.qmodel(x)))
            m = evaluate_quantized(sim.qmodel, data, ref)
            assert m["sqnr_db"] < 200
        assert sim.cache_stats["bytes"] <= budget
        # the float model is untouched after quantized runs
        with torch.no_grad():
            assert torch.equal(sim.float_model(x), _mlp()(x))
        sim.close()
    by = {}
    for budget, spec, o in outs:
        by.setdefault(spec, []).append(o)
    for spec, os_ in by.items():
        assert all(torch.equal(o, os_[0]) for o in os_), spec


def test_codes_round_trip_exactly():
    sim = QuantSim(_mlp())
    for spec, axis in ((WeightSpec(bits=4, granularity="per_group", group_size=24), 0),
                       (WeightSpec(bits=8, granularity="per_tensor", symmetric=False), None),
                       (WeightSpec(bits=3), 0)):
        wq = sim.quantize_weight("2", spec)
        codes = encode(wq.tensor, wq.qparams, axis, spec.effective_group_size())
        assert codes is not None and codes.q.dtype in (torch.int8, torch.uint8)
        assert torch.equal(codes.decode(), wq.tensor)
    # a tensor off its grid is refused
    wq = sim.quantize_weight("2", WeightSpec(bits=8))
    assert encode(wq.tensor + 1e-3, wq.qparams, 0, None) is None
    sim.close()


def test_bf16_model_keeps_its_dtype():
    m = _mlp().to(torch.bfloat16)
    sim = QuantSim(m)
    sim.apply(_specs(sim, act=None, bits=8))
    wq = sim.quantize_weight("0", WeightSpec(bits=8))
    assert wq.tensor.dtype == torch.bfloat16 and sim.float_weight("0").dtype == torch.bfloat16
    x = torch.randn(4, 32, dtype=torch.bfloat16)
    with torch.no_grad():
        assert sim.qmodel(x).dtype == torch.bfloat16
    sim.close()
