"""The quantization math against torch's own kernels and plain references."""
import math

import numpy as np
import pytest
import torch

from quantviz.core.numerics.qparams import clipped_fraction, compute_qparams, fake_quantize, qrange, quantize_int
from quantviz.core.numerics.sqnr import tensor_sqnr_db
from quantviz.core.numerics.ranges import group_matrix, weight_range
from quantviz.core.numerics.spec import RangeSpec

obs = pytest.importorskip("torch.ao.quantization.observer")


def _weights(seed=0, shape=(16, 8, 3, 3)):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g) * torch.linspace(0.1, 3.0, shape[0]).view(-1, *([1] * (len(shape) - 1)))
    return w


@pytest.mark.parametrize("symmetric", [True, False])
def test_per_tensor_8bit_matches_torch_observer_bit_for_bit(symmetric):
    w = _weights()
    if symmetric:
        o = obs.MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
        qmin, qmax = -128, 127
    else:
        o = obs.MinMaxObserver(dtype=torch.quint8, qscheme=torch.per_tensor_affine)
        qmin, qmax = 0, 255
    o(w)
    scale, zp = o.calculate_qparams()
    m = group_matrix(w, "per_tensor", 0, None)
    lo, hi = weight_range(m, RangeSpec("minmax"), 8, symmetric, "torch")  # torch's rule: the "torch" grid
    qp = compute_qparams(lo, hi, 8, symmetric, "torch")
    assert (qp.qmin, qp.qmax) == (qmin, qmax)
    assert torch.equal(qp.scale, scale.float().flatten())
    assert int(qp.zero_point[0]) == int(zp.flatten()[0])
    ours = fake_quantize(w, qp)
    ref = torch.fake_quantize_per_tensor_affine(w, float(scale), int(zp), qmin, qmax)
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("symmetric", [True, False])
def test_per_channel_8bit_matches_torch_observer_bit_for_bit(symmetric):
    w = _weights(1)
    if symmetric:
        o = obs.PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
        qmin, qmax = -128, 127
    else:
        o = obs.PerChannelMinMaxObserver(ch_axis=0, dtype=torch.quint8, qscheme=torch.per_channel_affine)
        qmin, qmax = 0, 255
    o(w)
    scale, zp = o.calculate_qparams()
    m = group_matrix(w, "per_channel", 0, None)
    lo, hi = weight_range(m, RangeSpec("minmax"), 8, symmetric, "torch")
    qp = compute_qparams(lo, hi, 8, symmetric, "torch")
    assert torch.equal(qp.scale, scale.float())
    assert torch.equal(qp.zero_point.long(), zp.long())
    ours = fake_quantize(w, qp, axis=0)
    ref = torch.fake_quantize_per_channel_affine(w, scale.float(), zp.int(), 0, qmin, qmax)
    assert torch.equal(ours, ref)


def _reference_fq(x: np.ndarray, lo: float, hi: float, bits: int, symmetric: bool, grid: str = "full") -> np.ndarray:
    """A plain numpy reference of the documented formulas."""
    eps = np.finfo(np.float32).eps
    if symmetric:
        qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        lo_, hi_ = np.float32(min(lo, 0.0)), np.float32(max(hi, 0.0))
        amax = max(-lo_, hi_)
        if grid == "full":
            raw = max(hi_ / np.float32(qmax), lo_ / np.float32(qmin))
        elif grid == "torch":
            raw = amax / np.float32((qmax - qmin) / 2)
        else:
            qmin = -qmax
            raw = amax / np.float32(qmax)
        scale = np.float32(max(raw, eps))
        zp = 0
    else:
        qmin, qmax = 0, 2**bits - 1
        lo_, hi_ = min(lo, 0.0), max(hi, 0.0)
        scale = np.float32(max(np.float32(hi_ - lo_) / np.float32(qmax - qmin), eps))
        zp = int(np.clip(qmin - np.round(np.float32(lo_) / scale), qmin, qmax))
    inv = np.float32(1.0) / scale
    q = np.clip(np.round(x.astype(np.float32) * inv) + zp, qmin, qmax)
    return ((q - zp) * scale).astype(np.float32)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 12, 16])
@pytest.mark.parametrize("symmetric,grid", [(True, "full"), (True, "torch"), (True, "restricted"), (False, "full")])
def test_other_bit_widths_match_plain_reference(bits, symmetric, grid):
    x = _weights(2, (6, 50))
    qp = compute_qparams(x.min(dim=1).values, x.max(dim=1).values, bits, symmetric, grid)
    ours = fake_quantize(x, qp, axis=0).numpy()
    for c in range(x.shape[0]):
        ref = _reference_fq(x[c].numpy(), float(x[c].min()), float(x[c].max()), bits, symmetric, grid)
        np.testing.assert_allclose(ours[c], ref, rtol=0, atol=float(qp.scale[c]) * 1e-5)
        levels = np.unique(quantize_int(x[c : c + 1], compute_qparams(x[c].min(), x[c].max(), bits, symmetric, grid)).numpy())
        qmin, qmax = qrange(bits, symmetric, grid)
        assert levels.min() >= qmin and levels.max() <= qmax


def test_per_group_matches_reference_and_shapes():
    w = _weights(3, (4, 10))  # 10 elements per channel, group 4 -> 3 groups (last padded)
    m = group_matrix(w, "per_group", 0, 4)
    assert m.shape == (12, 4)
    lo, hi = weight_range(m, RangeSpec("minmax"), 4, True)
    qp = compute_qparams(lo, hi, 4, True)
    out = fake_quantize(w, qp, axis=0, group_size=4)
    assert out.shape == w.shape
    for c in range(4):
        for g, (a, b) in enumerate([(0, 4), (4, 8), (8, 10)]):
            seg = w[c, a:b].numpy()
            ref = _reference_fq(seg, float(seg.min()), float(seg.max()), 4, True)
            np.testing.assert_allclose(out[c, a:b].numpy(), ref, rtol=0, atol=1e-6)


def test_round_half_to_even_and_clamp():
    qp = compute_qparams(torch.tensor(-1.0), torch.tensor(1.0), 8, False)
    s, z = float(qp.scale[0]), int(qp.zero_point[0])
    x = torch.tensor([(0.5 - z) * s, (1.5 - z) * s, 10.0, -10.0])
    q = quantize_int(x, qp)
    assert q[2] == 255 and q[3] == 0
    assert int(q[0]) % 2 == 0 or abs(float(x[0]) / s - round(float(x[0]) / s)) > 1e-3


def test_zero_range_and_nan_are_handled():
    qp = compute_qparams(torch.tensor(0.0), torch.tensor(0.0), 8, True)
    assert torch.isfinite(qp.scale).all() and float(qp.scale[0]) > 0
    out = fake_quantize(torch.zeros(5), qp)
    assert torch.equal(out, torch.zeros(5))
    qp = compute_qparams(torch.tensor(float("nan")), torch.tensor(1.0), 4, False)
    assert torch.isfinite(qp.scale).all()


def test_sqnr():
    x = torch.randn(1000)
    assert tensor_sqnr_db(x, x) == math.inf
    noisy = x + 0.1 * torch.randn(1000)
    assert 15 < tensor_sqnr_db(x, noisy) < 25


def test_symmetric_grid_rules():
    assert qrange(4, True) == (-8, 7) and qrange(4, True, "torch") == (-8, 7)
    assert qrange(4, True, "restricted") == (-7, 7) and qrange(8, True, "restricted") == (-127, 127)
    assert qrange(4, False, "restricted") == (0, 15)  # asymmetric grids ignore the rule
    with pytest.raises(ValueError, match="unknown grid"):
        qrange(4, True, "fancy")
    lo, hi = torch.tensor([-1.6, -0.7, 0.0]), torch.tensor([0.7, 1.4, 0.35])
    full = compute_qparams(lo, hi, 4, True, "full")
    # the binding end lands exactly on the grid's end: -1.6 on -8 steps, 1.4 on +7, 0.35 on +7
    assert torch.allclose(full.scale, torch.tensor([0.2, 0.2, 0.05]))
    torch_rule = compute_qparams(lo, hi, 4, True, "torch")
    assert torch.allclose(torch_rule.scale, torch.tensor([1.6, 1.4, 0.35]) / 7.5)
    restricted = compute_qparams(lo, hi, 4, True, "restricted")
    assert torch.allclose(restricted.scale, torch.tensor([1.6, 1.4, 0.35]) / 7)
    assert (restricted.qmin, restricted.qmax) == (-7, 7)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_full_grid_min_max_clips_nothing_where_torch_rule_clips_the_top(bits):
    w = _weights(4, (32, 40))
    m = group_matrix(w, "per_channel", 0, None)
    pos = m.max(dim=1).values > -m.min(dim=1).values  # channels whose largest magnitude is positive
    assert pos.any() and not pos.all()
    for grid in ("full", "torch", "restricted"):
        lo, hi = weight_range(m, RangeSpec("minmax"), bits, True, grid)
        qp = compute_qparams(lo, hi, bits, True, grid)
        err = (fake_quantize(w, qp, axis=0) - w).abs().reshape(32, -1)
        assert bool((err <= qp.scale.view(-1, 1) / 2 * (1 + 1e-4)).all())  # never worse than rounding
        frac = clipped_fraction(m, qp)
        if grid == "torch":
            # max|w| sits on the tie qmax + 0.5: the top of every positive channel lies above the grid
            top = m > (qp.scale * qp.qmax).view(-1, 1) * (1 + 1e-6)
            assert frac > 0 and bool(top[pos].any(dim=1).all())
        else:
            assert frac == 0.0, grid
