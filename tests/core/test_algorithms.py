"""Per-layer PTQ algorithms: each one on tensors, then inside QuantSim (cache, context, cancel)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from quantviz.core.algorithms import run_algorithm
from quantviz.core.algorithms.adaround import adaround
from quantviz.core.algorithms.grid import output_sqnr_db, weight_grid
from quantviz.core.algorithms.gptq import gptq
from quantviz.core.algorithms.scaling import awq
from quantviz.core.algorithms.stats import capture_input_stats, columns
from quantviz.core.model.data import Dataset
from quantviz.core.errors import Cancelled
from quantviz.core.sim.fakequant import QuantSim
from quantviz.core.numerics.spec import ActSpec, LayerSpec, WeightSpec


def _stats_for(layer: nn.Module, x: torch.Tensor):
    model = nn.Sequential(layer)
    return capture_input_stats(model, layer, None, None, Dataset(x, name="calib"))


def _linear_case(seed=0, n_in=48, n_out=16, samples=512):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(n_in, n_in, generator=g) / math.sqrt(n_in)
    x = torch.randn(samples, n_in, generator=g) @ mix  # correlated inputs: rounding choices interact
    lin = nn.Linear(n_in, n_out)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n_out, n_in, generator=g) * 0.1)
    return lin, x


def _out_err(w, wq, x):
    return float(((x @ (w - wq).T) ** 2).mean())


def test_unfold_columns_reproduce_the_convolution():
    conv = nn.Conv2d(3, 5, 3, padding=1, stride=2, bias=False)
    x = torch.randn(2, 3, 9, 9)
    cols = columns(conv, x)
    y = cols @ conv.weight.reshape(5, -1).T
    ref = conv(x).permute(0, 2, 3, 1).reshape(-1, 5)
    assert torch.allclose(y, ref, atol=1e-5)


def test_adaround_beats_rounding_to_nearest_on_the_calibration_data():
    lin, x = _linear_case()
    spec = WeightSpec(bits=3)
    st = _stats_for(lin, x)
    w = lin.weight.detach()
    qp, grid = weight_grid(w, spec)
    near = grid.dequant(grid.nearest(w))
    codes = adaround(w, grid, st.gram, iterations=300)
    assert ((codes >= grid.qmin) & (codes <= grid.qmax)).all() and torch.equal(codes, codes.round())
    # every code is floor or ceil of w / s: AdaRound only chooses the rounding direction
    ws = w * grid.inv
    assert ((codes == torch.floor(ws)) | (codes == torch.ceil(ws)) | (codes == grid.qmin) | (codes == grid.qmax)).all()
    ada = grid.dequant(codes)
    assert _out_err(w, ada, x) < 0.8 * _out_err(w, near, x)
    assert int((codes != grid.nearest(w)).sum()) > 0


@pytest.mark.parametrize("granularity,act_order", [("per_channel", False), ("per_group", False), ("per_group", True),
                                                   ("per_tensor", True)])
def test_gptq_lowers_output_error_and_keeps_the_grid_layout(granularity, act_order):
    lin, x = _linear_case(seed=1, n_in=80)
    spec = WeightSpec(bits=4, granularity=granularity, group_size=32)
    st = _stats_for(lin, x)
    w = lin.weight.detach()
    codes, qp, grid = gptq(w, spec, st.gram, act_order=act_order, block_size=48)
    qp0, g0 = weight_grid(w, spec)
    assert qp.scale.shape == qp0.scale.shape  # one scale per channel / per group of 32 (80 = 32 + 32 + 16)
    assert ((codes >= grid.qmin) & (codes <= grid.qmax)).all()
    assert _out_err(w, grid.dequant(codes), x) < 0.9 * _out_err(w, g0.dequant(g0.nearest(w)), x)


def test_gptq_on_a_convolution_uses_unfolded_inputs():
    torch.manual_seed(0)  # seeded: the margin over nearest rounding depends on the draw
    conv = nn.Conv2d(4, 8, 3, padding=1)
    x = torch.randn(64, 4, 6, 6)
    st = _stats_for(conv, x)
    w = conv.weight.detach().reshape(8, -1)
    spec = WeightSpec(bits=3)
    codes, qp, grid = gptq(w, spec, st.gram)
    _, g0 = weight_grid(w, spec)
    cols = columns(conv, x)
    assert _out_err(w, grid.dequant(codes), cols) < _out_err(w, g0.dequant(g0.nearest(w)), cols)


def test_bias_correction_restores_the_output_mean_and_creates_a_bias():
    g = torch.Generator().manual_seed(3)
    lin = nn.Linear(32, 8, bias=False)
    x = torch.rand(400, 32, generator=g) + 0.5  # positive inputs: rounding errors shift the mean
    sim = QuantSim(nn.Sequential(lin))
    sim.calibrate(Dataset(x, name="calib"))
    spec = LayerSpec(weight=WeightSpec(bits=3, algorithm="bias_correction"))
    sim.apply({"0": spec})
    assert sim.applied_bias("0") is not None and sim.float_model[0].bias is None
    with torch.no_grad():
        fmean = sim.float_model(x).mean(0)
        qmean = sim.qmodel(x).mean(0)
        plain = x @ sim.quantize_weight("0", spec.weight.without_algorithm()).tensor.T
    assert torch.allclose(qmean, fmean, atol=1e-4)
    assert (plain.mean(0) - fmean).abs().max() > 1e-3  # there was a shift to correct
    info = sim.quantize_weight("0", spec.weight).algorithm_info
    assert info["bias_created"] and info["bias_shift_max"] > 1e-3
    sim.apply({"0": LayerSpec(weight=WeightSpec(bits=3))})
    assert sim.applied_bias("0") is None  # back to the float layer's (absent) bias


def test_smoothquant_simulation_is_exactly_the_scaled_product():
    g = torch.Generator().manual_seed(4)
    lin = nn.Linear(16, 6)
    x = torch.randn(256, 16, generator=g)
    x[:, 3] *= 30  # an outlier channel
    sim = QuantSim(nn.Sequential(lin))
    sim.calibrate(Dataset(x, name="calib"))
    spec = LayerSpec(weight=WeightSpec(bits=8, algorithm="smoothquant"), activation=ActSpec(bits=8))
    sim.apply({"0": spec})
    wq = sim.quantize_weight("0", spec.weight)
    s = wq.input_scale
    assert s[3] > s.median() * 3  # the outlier channel moved into the weight
    qp = sim.input_qparams("0", spec)
    from quantviz.core.sim.fakequant import fake_quantize_tensor

    xs = fake_quantize_tensor(x / s, qp)
    wcodes = wq.codes.float()
    w_scaled = wcodes * wq.qparams.scale.view(-1, 1)
    want = xs @ w_scaled.T + lin.bias.detach()
    with torch.no_grad():
        got = sim.qmodel(x)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)
    # and it helps W8A8 on this input: better than quantizing x directly
    plain = LayerSpec(weight=WeightSpec(bits=8), activation=ActSpec(bits=8))
    sim.apply({"0": plain})
    with torch.no_grad():
        ref, p = sim.float_model(x), sim.qmodel(x)
    assert ((got - ref) ** 2).mean() < ((p - ref) ** 2).mean()


def test_awq_is_never_worse_than_rounding_on_calibration_data():
    lin, x = _linear_case(seed=5)
    x[:, :4] *= 8
    st = _stats_for(lin, x)
    w = lin.weight.detach()
    spec = WeightSpec(bits=3, granularity="per_group", group_size=16)
    codes, qp, grid, s, eff, a = awq(w, spec, st.absmean, st.gram)
    _, g0 = weight_grid(w, spec)
    assert _out_err(w, eff, x) <= _out_err(w, g0.dequant(g0.nearest(w)), x) + 1e-9
    assert 0 <= a < 1


def _two_layer(seed=6):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(24, 32), nn.ReLU(), nn.Linear(32, 10))
    x = torch.randn(300, 24)
    return m, Dataset(x, name="calib")


def test_quantsim_caches_per_layer_context_and_calibration():
    m, data = _two_layer()
    sim = QuantSim(m)
    sim.calibrate(data)
    ada = LayerSpec(weight=WeightSpec(bits=3, algorithm="adaround", algorithm_options=(("iterations", 50),)))
    specs = {"0": ada, "2": ada}
    calls = []
    sim.apply(specs, progress=lambda d, t, msg="": calls.append(msg))
    assert any("AdaRound" in c for c in calls)
    first = {n: sim.quantize_weight(n, ada.weight) for n in specs}
    assert not sim.algorithm_pending("0", ada.weight)
    # the same config again: cached, nothing recomputed
    sim.apply({"0": LayerSpec(weight=WeightSpec(bits=8)), "2": ada})
    sim.apply(specs)
    assert all(sim.quantize_weight(n, ada.weight) is first[n] for n in specs)
    # a change to the last layer keeps the first layer's result; a change to the first recomputes the second
    other = LayerSpec(weight=WeightSpec(bits=4))
    sim.apply({"0": other, "2": ada})
    assert sim.algorithm_pending("2", ada.weight) is False
    assert sim.quantize_weight("2", ada.weight) is not first["2"]
    # new calibration data: every result recomputed
    sim.apply(specs)
    sim.calibrate(Dataset(data.x[:200], name="calib2"))
    assert sim.algorithm_pending("0", ada.weight)


def test_apply_of_spec_maps_follows_the_one_diff_and_reruns_later_algorithms():
    from quantviz.core.numerics.specmap import SpecMap

    m, data = _two_layer()
    sim = QuantSim(m)
    sim.calibrate(data)
    ada = LayerSpec(weight=WeightSpec(bits=3, algorithm="adaround", algorithm_options=(("iterations", 50),)))
    a = SpecMap({"0": ada, "2": ada})
    sim.apply(a)
    assert sim.applied_specs is a
    # only "0" differs, but "2"'s algorithm sees "0"'s output: it is looked at and recomputed too
    b = SpecMap({"0": LayerSpec(weight=WeightSpec(bits=4)), "2": ada})
    assert sim.apply(b) == ["0", "2"] and not sim.algorithm_pending("2", ada.weight)
    assert sim.apply(dict(b)) == []  # a full look at every layer finds nothing left to do
    c = SpecMap({"0": LayerSpec(weight=WeightSpec(bits=4)), "2": LayerSpec(weight=WeightSpec(bits=8))})
    sim.apply(b)
    assert sim.apply(c) == ["2"] and sim.apply(c) == []
    sim.calibrate(data)  # new calibration: the next apply looks at every layer again
    assert sim.applied_specs is None and sim.apply(c) == ["0", "2"]  # their input quantizers were reset


def test_algorithm_is_cancellable_and_leaves_the_simulation_usable():
    m, data = _two_layer()
    sim = QuantSim(m)
    sim.calibrate(data)
    spec = LayerSpec(weight=WeightSpec(bits=3, algorithm="adaround"))
    n = [0]

    def cancel():
        n[0] += 1
        return n[0] > 3

    with pytest.raises(Cancelled):
        sim.apply({"0": spec, "2": spec}, cancel=cancel)
    assert sim.algorithm_pending("0", spec.weight)
    sim.apply({"0": LayerSpec(weight=WeightSpec(bits=8)), "2": LayerSpec(weight=WeightSpec(bits=8))})
    with torch.no_grad():
        assert torch.isfinite(sim.qmodel(data.x)).all()


def test_algorithm_on_a_layer_it_does_not_apply_to_is_reported_and_rounds_to_nearest():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Embedding(20, 8), nn.Linear(8, 4))
    sim = QuantSim(m)
    sim.calibrate(Dataset(torch.randint(0, 20, (50, 5)), name="tok"))
    spec = WeightSpec(bits=4, algorithm="gptq")
    sim.apply({"0": LayerSpec(weight=spec), "1": LayerSpec(weight=spec)})
    wq = sim.quantize_weight("0", spec)
    assert "does not apply to Embedding" in wq.algorithm_info["skipped"]
    assert torch.equal(wq.tensor, sim.quantize_weight("0", spec.without_algorithm()).tensor)
    assert "skipped" not in sim.quantize_weight("1", spec).algorithm_info


def test_run_algorithm_reports_flips_and_layer_output_sqnr():
    lin, x = _linear_case(seed=7)
    st = _stats_for(lin, x)
    w = lin.weight.detach()
    r = run_algorithm(w, WeightSpec(bits=3, algorithm="adaround", algorithm_options=(("iterations", 200),)), st)
    info = r.info
    assert info["changed"] == int((r.codes != r.grid.nearest(w)).sum()) > 0
    assert sum(info["changed_per_channel"]) == info["changed"]
    assert info["output_sqnr_db"] > info["output_sqnr_db_nearest"]
    assert abs(info["output_sqnr_db"] - output_sqnr_db(w, r.weight, st)) < 1e-9
