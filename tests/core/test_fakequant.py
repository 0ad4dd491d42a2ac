"""QuantSim: weight cache, per-group edge cases, activation quantization."""
import math

import pytest
import torch
from torch import nn

from quantviz.core.model.data import Dataset
from quantviz.core.errors import QuantvizError
from quantviz.core.sim.fakequant import QuantSim
from quantviz.core.numerics.spec import ActSpec, LayerSpec, RangeSpec, WeightSpec


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)).eval()


def _data(n=64, d=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Dataset(torch.randn(n, d, generator=g), torch.randint(0, 4, (n,), generator=g), name="t")


W8 = LayerSpec(WeightSpec(bits=8), ActSpec(bits=None))


def test_apply_recomputes_only_changed_layers(monkeypatch):
    calls = []
    from quantviz.core.numerics import quantize as kernel

    real = kernel.fake_quantize
    monkeypatch.setattr(kernel, "fake_quantize", lambda *a, **k: calls.append(1) or real(*a, **k))
    sim = QuantSim(_mlp())
    names = [l.name for l in sim.layers]
    specs = {n: W8 for n in names}
    assert sim.apply(specs) == names and len(calls) == 3
    assert sim.apply(specs) == [] and len(calls) == 3  # nothing changed, nothing computed
    w4 = LayerSpec(WeightSpec(bits=4), ActSpec(bits=None))
    before = {n: sim.applied_weight(n).clone() for n in names}
    assert sim.apply(dict(specs, **{"2": w4})) == ["2"] and len(calls) == 4
    assert torch.equal(sim.applied_weight("0"), before["0"])
    assert not torch.equal(sim.applied_weight("2"), before["2"])
    # going back to the earlier setting is a cache hit: the layer changes, nothing is quantized
    assert sim.apply(specs) == ["2"] and len(calls) == 4
    assert torch.equal(sim.applied_weight("2"), before["2"])
    # a float layer gets its float weight back
    assert sim.apply(dict(specs, **{"4": LayerSpec(WeightSpec(bits=None))})) == ["4"]
    assert torch.equal(sim.applied_weight("4"), sim.float_weight("4"))
    assert len(calls) == 4


@pytest.mark.parametrize("grid", ["full", "torch"])
def test_per_group_with_group_size_not_dividing_the_row(grid):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(10, 3)).eval()
    with torch.no_grad():
        model[0].weight[:, 8:] *= 0.01  # the last, partial group holds much smaller values
    sim = QuantSim(model)
    spec = WeightSpec(bits=4, granularity="per_group", group_size=4, grid=grid)
    q = sim.quantize_weight("0", spec)
    w = sim.float_weight("0")
    assert q.qparams.groups == 3 * 3  # ceil(10 / 4) groups per row
    scale = q.qparams.scale.view(3, 3)
    for r in range(3):
        for gi, (a, b) in enumerate([(0, 4), (4, 8), (8, 10)]):
            block = w[r, a:b]
            if grid == "torch":  # symmetric 4-bit: amax / ((qmax - qmin) / 2)
                expected = float(block.abs().max()) / 7.5
            else:  # both ends on the grid: max(hi / qmax, lo / qmin)
                expected = max(float(block.max()) / 7, float(block.min()) / -8)
            assert float(scale[r, gi]) == pytest.approx(expected, rel=1e-6)
            assert torch.all((q.tensor[r, a:b] - block).abs() <= scale[r, gi] / 2 + 1e-9)
    # the small tail keeps its precision: its own range, not the row's
    assert float((q.tensor[:, 8:] - w[:, 8:]).abs().max()) < 0.01 * float(w[:, :8].abs().max()) / 7
    assert q.tensor.shape == w.shape


def test_quantize_weight_cache_and_float_spec():
    sim = QuantSim(_mlp())
    spec = WeightSpec(bits=6, range=RangeSpec("percentile", p=99.0))
    a = sim.quantize_weight("0", spec)
    assert sim.quantize_weight("0", spec) is a
    assert sim.quantize_weight("0", WeightSpec(bits=None)) is None
    assert math.isfinite(a.sqnr_db) and 0 < a.clipped_fraction < 0.2


def test_activation_quantization_changes_outputs_and_inputs_lie_on_the_grid():
    model, data = _mlp(), _data()
    sim = QuantSim(model)
    with pytest.raises(QuantvizError, match="calibrat"):
        sim.apply({"0": LayerSpec(WeightSpec(bits=8), ActSpec(bits=8))})
    sim.calibrate(data, batch_size=16)
    assert set(sim.act_obs) == {"0", "2", "4"}
    assert sim.act_obs["0"].count == 64 * 10
    x = data.x
    sim.apply({n: W8 for n in ("0", "2", "4")})
    with torch.no_grad():
        w_only = sim.qmodel(x)
    a4 = LayerSpec(WeightSpec(bits=8), ActSpec(bits=4))
    assert sim.apply({n: a4 for n in ("0", "2", "4")}) == ["0", "2", "4"]  # weights cached, activations changed
    seen = {}
    sim.qmodel.get_submodule("2").register_forward_hook(lambda m, a, o: seen.update(x=a[0]))
    with torch.no_grad():
        wa = sim.qmodel(x)
    assert not torch.allclose(wa, w_only)
    qp = sim.state["2"].act_qp
    codes = seen["x"] / qp.scale[0] + qp.zero_point[0]
    assert torch.allclose(codes, codes.round(), atol=1e-3)
    assert codes.round().unique().numel() <= 16
    s8 = sim.activation_sqnr("2", ActSpec(bits=8))
    s4 = sim.activation_sqnr("2", ActSpec(bits=4))
    assert math.isfinite(s8) and math.isfinite(s4) and s8 > s4 + 12  # ~6 dB per bit
    assert sim.activation_sqnr("2", ActSpec(bits=None)) is None
    # back to float activations restores the weight-only outputs exactly
    sim.apply({n: W8 for n in ("0", "2", "4")})
    with torch.no_grad():
        assert torch.equal(sim.qmodel(x), w_only)


def test_calibration_histograms_hold_every_value_in_fixed_memory():
    sim = QuantSim(_mlp())
    data = _data(n=200)
    sim.calibrate(data, batch_size=7)
    obs = sim.act_obs["0"]
    assert obs.count == 200 * 10 and obs.counts.numel() == obs.bins
    assert obs.min == pytest.approx(float(data.x.min())) and obs.max == pytest.approx(float(data.x.max()))
    h = obs.histogram()
    assert h.total == 200 * 10
    assert obs.mean == pytest.approx(float(data.x.mean()), abs=1e-5)
    assert obs.std == pytest.approx(float(data.x.std(unbiased=False)), rel=1e-4)


def test_calibration_rejects_nan_activations():
    model = _mlp()
    x = torch.randn(8, 10)
    x[3, 2] = float("nan")
    with pytest.raises(QuantvizError, match="NaN"):
        QuantSim(model).calibrate(Dataset(x, None, name="bad"))


def test_manual_activation_range_is_used_verbatim():
    sim = QuantSim(_mlp())
    sim.calibrate(_data())
    qp = sim.activation_qparams("2", ActSpec(bits=8, symmetric=False, range=RangeSpec("manual", lo=-1.0, hi=3.0)))
    assert float(qp.scale[0]) == pytest.approx(4.0 / 255)
    lo, hi = qp.grid_range()
    assert float(lo[0]) == pytest.approx(-1.0, abs=float(qp.scale[0])) and float(hi[0]) == pytest.approx(3.0, abs=float(qp.scale[0]))


@pytest.mark.parametrize("module,axis", [(nn.ConvTranspose2d(3, 5, 3), 1), (nn.Conv1d(4, 6, 5), 0)],
                         ids=["convtranspose2d", "conv1d"])
def test_per_group_follows_the_output_channel_axis(module, axis):
    from quantviz.core.numerics.ranges import group_matrix

    torch.manual_seed(2)
    sim = QuantSim(nn.Sequential(module).eval())
    spec = WeightSpec(bits=3, granularity="per_group", group_size=4)
    q = sim.quantize_weight("0", spec)
    w = sim.float_weight("0")
    per_channel = w.numel() // w.shape[axis]
    assert q.qparams.groups == w.shape[axis] * math.ceil(per_channel / 4)
    rows_w = group_matrix(w, "per_group", axis, 4)
    rows_q = group_matrix(q.tensor, "per_group", axis, 4)
    s = q.qparams.scale.view(-1, 1)
    assert torch.all((rows_q - rows_w).abs() <= s / 2 + 1e-7)  # every value on its own group's grid
    codes = rows_q / s
    assert torch.allclose(codes, codes.round(), atol=1e-4)


@pytest.mark.parametrize("bits,symmetric", [(8, False), (8, True), (4, False), (2, True), (16, False)])
def test_activation_fake_quant_matches_torch_bit_for_bit(bits, symmetric):
    from quantviz.core.sim.fakequant import fake_quantize_tensor
    from quantviz.core.numerics.qparams import compute_qparams

    g = torch.Generator().manual_seed(bits)
    x = torch.randn(20000, generator=g) * 3
    x[:7] = torch.tensor([0.0, 1e30, -1e30, 2.5, -2.5, 1e-30, 7.0])
    for lo, hi in [(-1.0, 4.0), (-2.3, 2.3), (0.0, 0.7), (-1e-3, 1e-3)]:
        qp = compute_qparams(lo, hi, bits, symmetric)
        ref = torch.fake_quantize_per_tensor_affine(x, float(qp.scale[0]), int(qp.zero_point[0]), qp.qmin, qp.qmax)
        ours = fake_quantize_tensor(x, qp)
        assert torch.equal(ours, ref), (lo, hi)


def test_an_abandoned_output_iterator_leaves_autograd_on():
    """Stopping early (a cancel, a break) must not leave the caller's thread in no_grad mode."""
    from quantviz.core.model.data import Dataset
    from quantviz.core.sim.fakequant import iterate_outputs

    data = Dataset(torch.randn(8, 4), None, name="x")
    it = iterate_outputs(torch.nn.Linear(4, 2), data, device="cpu", batch_size=2)
    next(it)
    assert torch.is_grad_enabled()
    del it
    assert torch.is_grad_enabled()
