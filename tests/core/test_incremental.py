import torch
from torch import nn

from quantviz.core.sim.fakequant import QuantSim
from quantviz.core.sim.incremental import SuffixRunner
from quantviz.core.numerics.spec import ActSpec, LayerSpec, WeightSpec

from sens_models import ResNetish, residual_data, transformer_data, transformer_model


def _full(sim, data, bs):
    with torch.no_grad():
        return [sim.qmodel(x).float() for x, _ in data.batches(bs)]


def _check_all_layers(sim, data, runner, spec):
    for l in sim.layers:
        changed = sim.apply({l.name: spec})
        outs = runner.run(changed)
        full = _full(sim, data, runner.batch_size)
        assert len(outs) == len(full)
        for a, b in zip(outs, full):
            assert torch.equal(a, b), l.name
        sim.apply({})


def test_residual_model_suffix_equals_full_pass_exactly():
    torch.manual_seed(0)
    sim = QuantSim(ResNetish().eval())
    data = residual_data()
    sim.calibrate(data)
    r = SuffixRunner(sim.qmodel, data, batch_size=16)
    assert r.incremental and r.has_mutation
    base = r.baseline()
    assert all(torch.equal(a, b) for a, b in zip(base, _full(sim, data, 16)))
    _check_all_layers(sim, data, r, LayerSpec(WeightSpec(bits=3), ActSpec(bits=4)))
    # a change to the last layer only reruns the tail of the graph
    assert r.affected_fraction(["fc"]) < 0.5 < r.affected_fraction(["stem"])
    # the cache is still intact after all those runs (in-place ops did not corrupt it)
    assert all(torch.equal(a, b) for a, b in zip(r.run([]), base))


def test_tiny_budget_evicts_and_stays_exact():
    torch.manual_seed(1)
    sim = QuantSim(ResNetish().eval())
    data = residual_data()
    sim.calibrate(data)
    big = SuffixRunner(sim.qmodel, data, batch_size=16)
    big.baseline()
    small = SuffixRunner(sim.qmodel, data, batch_size=16, budget_bytes=big.cache_bytes // 4)
    small.baseline()
    assert small.cache_bytes <= big.cache_bytes // 4 < big.cache_bytes
    _check_all_layers(sim, data, small, LayerSpec(WeightSpec(bits=2)))


def test_transformer_with_tied_weights():
    m = transformer_model()
    data = transformer_data(m)
    sim = QuantSim(m)
    sim.calibrate(data)
    r = SuffixRunner(sim.qmodel, data, batch_size=16)
    assert r.incremental
    r.baseline()
    _check_all_layers(sim, data, r, LayerSpec(WeightSpec(bits=4), ActSpec(bits=8)))


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = self.a(x)
        if h.sum() > 0:  # data-dependent control flow: not traceable
            h = h * 2
        return self.b(h)


def test_untraceable_model_falls_back_to_full_passes():
    from quantviz.core.model.data import Dataset

    sim = QuantSim(Branchy().eval())
    data = Dataset(torch.randn(20, 4))
    r = SuffixRunner(sim.qmodel, data, batch_size=8)
    assert not r.incremental and r.reason
    r.baseline()
    changed = sim.apply({"a": LayerSpec(WeightSpec(bits=2))})
    outs = r.run(changed)
    assert all(torch.equal(a, b) for a, b in zip(outs, _full(sim, data, 8)))
