"""Error trace: accumulated vs local SQNR per layer, checked against a plain two-model computation."""
import math

import pytest
import torch
from torch import nn

from quantviz.core.model.data import Dataset
from quantviz.core.errors import Cancelled
from quantviz.core.sim.fakequant import QuantSim
from quantviz.core.numerics.spec import FLOAT_SPEC, ActSpec, LayerSpec, WeightSpec
from quantviz.core.analysis.trace import TraceResult, trace

from sens_models import ResNetish, residual_data, transformer_model


def chain():
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 24), nn.Tanh(), nn.Linear(24, 24), nn.ReLU(),
                         nn.Linear(24, 24), nn.ReLU(), nn.Linear(24, 5)).eval()


def chain_data(n=50):
    g = torch.Generator().manual_seed(0)
    return Dataset(torch.randn(n, 12, generator=g), name="chain")


def _reference(sim, specs, data):
    """Per-layer sums computed the plain way: collect every output of both models, then compare."""
    sim.apply(specs)
    outs = {"f": {}, "q": {}}
    hooks = []
    for l in sim.layers:  # one model: its quantized view runs the same modules, with sim.active set
        def hook(mod, args, out, _n=l.name):
            outs["q" if sim.active else "f"].setdefault(_n, []).append(out.detach().clone().double())
        hooks.append(sim.float_model.get_submodule(l.name).register_forward_hook(hook))
    with torch.no_grad():
        for x, _ in data.batches(7):
            sim.float_model(x)
            sim.qmodel(x)
    for h in hooks:
        h.remove()
    res = {}
    for n in outs["f"]:
        f, q = torch.cat(outs["f"][n]), torch.cat(outs["q"][n])
        res[n] = (float((f ** 2).sum()), float(((f - q) ** 2).sum()))
    return res


def test_one_quantized_layer_in_a_chain():
    """Float (inf dB) before the quantized layer, a drop at it, local error only there."""
    sim = QuantSim(chain())
    names = [l.name for l in sim.layers]
    k = 2  # the third Linear
    specs = {n: FLOAT_SPEC for n in names}
    specs[names[k]] = LayerSpec(WeightSpec(bits=3), ActSpec(bits=None))
    r = trace(sim, specs, chain_data(), batch_size=8)
    assert r.names == names
    acc = [l.accumulated_sqnr_db for l in r.layers]
    loc = [l.local_sqnr_db for l in r.layers]
    assert all(math.isinf(v) and v > 0 for v in acc[:k])
    assert all(math.isfinite(v) for v in acc[k:])
    assert [math.isfinite(v) for v in loc] == [i == k for i in range(len(names))]
    assert r.entry == k
    # the layer's input is still exact, so its accumulated error is its own error, bit for bit
    assert r.layers[k].acc_noise == r.layers[k].local_noise > 0
    assert acc[k] < 40
    assert r.layers[k].input_clipped_fraction is None  # its input is not quantized
    d = r.to_dict()
    assert d["entry"] == names[k]
    assert d["layers"][0]["accumulated_sqnr_db"] is None  # identical to float
    assert d["layers"][k]["local_sqnr_db"] == pytest.approx(loc[k], abs=1e-3)


def test_matches_a_plain_two_model_comparison_with_activations_and_in_place_ops():
    torch.manual_seed(1)
    sim = QuantSim(ResNetish().eval())  # `z += y` mutates a layer's output after its hook
    data = residual_data()
    sim.calibrate(data)
    specs = {l.name: LayerSpec(WeightSpec(bits=4), ActSpec(bits=6)) for l in sim.layers}
    r = trace(sim, specs, data, batch_size=16)
    ref = _reference(sim, specs, data)
    assert set(r.names) == set(ref)
    for l in r.layers:
        sig, noise = ref[l.name]
        assert l.signal == pytest.approx(sig, rel=1e-4)
        assert l.acc_noise == pytest.approx(noise, rel=1e-3), l.name
        assert l.input_clipped_fraction is not None and 0 <= l.input_clipped_fraction < 0.5
        assert math.isfinite(l.input_local_sqnr_db) and math.isfinite(l.local_sqnr_db)
    # the first layer sees the model's input: accumulated == local there, for output and input
    first = r.layers[0]
    assert first.name == "stem"
    assert first.accumulated_sqnr_db == pytest.approx(first.local_sqnr_db, abs=1e-9)
    assert first.input_accumulated_sqnr_db == pytest.approx(first.input_local_sqnr_db, abs=1e-9)
    # deeper, propagated error makes the accumulated figure worse than the local one
    assert r.layers[-1].accumulated_sqnr_db < r.layers[-1].local_sqnr_db


def test_local_term_matches_quantizing_that_layer_alone():
    torch.manual_seed(2)
    sim = QuantSim(ResNetish().eval())
    data = residual_data()
    sim.calibrate(data)
    spec = LayerSpec(WeightSpec(bits=3), ActSpec(bits=5))
    full = trace(sim, {l.name: spec for l in sim.layers}, data, batch_size=16)
    for name in ("a", "fc"):
        alone = trace(sim, {name: spec}, data, batch_size=16)  # everything else float
        assert alone.layer(name).acc_noise == pytest.approx(full.layer(name).local_noise, rel=1e-4)


def test_budget_and_chunks_do_not_change_the_numbers():
    torch.manual_seed(1)
    sim = QuantSim(ResNetish().eval())
    data = residual_data()
    sim.calibrate(data)
    specs = {l.name: LayerSpec(WeightSpec(bits=4), ActSpec(bits=8)) for l in sim.layers}
    big = trace(sim, specs, data, batch_size=16)
    partial = []
    tiny = trace(sim, specs, data, batch_size=16, budget_bytes=1, on_partial=partial.append)
    assert len(partial) == len(data) - 2  # a first chunk of 16 // 8 samples, then one sample per chunk
    assert partial[0].samples == 2 and partial[0].layers[0].signal > 0
    for a, b in zip(big.layers, tiny.layers):
        assert a.name == b.name and a.calls == 2 and b.calls == len(data) - 1  # big: 2 samples, then the other 38 at once
        assert b.acc_noise == pytest.approx(a.acc_noise, rel=1e-4)
        assert b.local_noise == pytest.approx(a.local_noise, rel=1e-4)
        # the calibrated max is a data value: a different chunking may round it one ulp past the grid
        assert abs(b.clipped - a.clipped) <= 1 and b.in_count == a.in_count


def test_incremental_equals_full_recompute():
    torch.manual_seed(4)
    sim = QuantSim(ResNetish().eval())
    data = residual_data()
    sim.calibrate(data)
    base = {l.name: LayerSpec(WeightSpec(bits=6), ActSpec(bits=8)) for l in sim.layers}
    r0 = trace(sim, base, data, batch_size=16)
    new = dict(base, b=LayerSpec(WeightSpec(bits=2), ActSpec(bits=4)))
    inc = trace(sim, new, data, batch_size=16, previous=r0, changed=["b"])
    full = trace(sim, new, data, batch_size=16)
    assert inc.recomputed["local"] == 1 and inc.recomputed["accumulated"] < len(inc.layers)
    for a, b in zip(inc.layers, full.layers):
        for k in ("signal", "acc_noise", "local_noise", "in_signal", "in_acc_noise", "in_local_noise", "clipped"):
            assert getattr(a, k) == pytest.approx(getattr(b, k), rel=1e-5), (a.name, k)
    # the JSON form round-trips
    back = TraceResult.from_dict(inc.to_dict())
    assert [l.accumulated_sqnr_db for l in back.layers] == [l.accumulated_sqnr_db for l in inc.layers]


class MaskedLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 16)
        self.fc = nn.Linear(16, 16)
        self.out = nn.Linear(16, 20)

    def forward(self, input_ids, attention_mask):
        h = torch.relu(self.fc(self.emb(input_ids)))
        return self.out(h * attention_mask.unsqueeze(-1))


def test_text_models_count_real_tokens_only():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(1, 20, (10, 9), generator=g)
    mask = torch.ones(10, 9, dtype=torch.long)
    mask[:, 6:] = 0
    mask[0, :] = 1
    sim = QuantSim(MaskedLM().eval())
    data = Dataset({"input_ids": ids, "attention_mask": mask}, name="text")
    sim.calibrate(data)
    specs = {l.name: LayerSpec(WeightSpec(bits=3), ActSpec(bits=4)) for l in sim.layers}
    a = trace(sim, specs, data, batch_size=4)
    assert a.tokens == int(mask.sum())
    # what sits in the padding must not change the numbers
    other = ids.clone()
    other[mask == 0] = 0
    b = trace(sim, specs, Dataset({"input_ids": other, "attention_mask": mask}, name="text"), batch_size=4)
    for la, lb in zip(a.layers, b.layers):
        assert la.acc_noise == pytest.approx(lb.acc_noise, rel=1e-5)
        assert la.signal == pytest.approx(lb.signal, rel=1e-5)
    fc = a.layer("fc")
    assert fc.in_count == int(mask.sum()) * 16


def test_tied_transformer_and_cancel():
    m = transformer_model()
    g = torch.Generator().manual_seed(1)
    data = Dataset(torch.randint(0, 32, (24, 8), generator=g), name="tok")
    sim = QuantSim(m)
    sim.calibrate(data)
    specs = {l.name: LayerSpec(WeightSpec(bits=4), ActSpec(bits=8)) for l in sim.layers}
    r = trace(sim, specs, data, batch_size=8)
    assert r.names[0] == "emb" and r.names[-1] == "head"  # execution order
    assert r.layer("emb").input_clipped_fraction is None  # indices are not quantized
    assert all(math.isfinite(l.accumulated_sqnr_db) for l in r.layers)
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 1

    mods = list(sim.float_model.modules())
    before = [len(m._forward_hooks) for m in mods]  # the simulation's own hooks
    with pytest.raises(Cancelled):
        trace(sim, specs, data, batch_size=8, cancel=cancel)
    assert [len(m._forward_hooks) for m in mods] == before  # the trace's hooks are gone after a cancel
