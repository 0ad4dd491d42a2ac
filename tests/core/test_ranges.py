"""Range methods on known distributions, and the streaming histogram."""
import numpy as np
import pytest
import torch

from quantviz.core.numerics.observers import HistogramObserver, histogram_of
from quantviz.core.numerics.ranges import activation_range, kl_threshold, weight_range
from quantviz.core.numerics.spec import RangeSpec


def test_percentile_on_weights_is_exact():
    x = torch.randn(3, 5001, generator=torch.Generator().manual_seed(0))
    lo, hi = weight_range(x, RangeSpec("percentile", p=99.0), 8, symmetric=False)
    for r in range(3):
        assert float(lo[r]) == pytest.approx(np.percentile(x[r].numpy(), 1.0), abs=1e-6)
        assert float(hi[r]) == pytest.approx(np.percentile(x[r].numpy(), 99.0), abs=1e-6)
    for grid in ("torch", "restricted"):  # these grids use max(|lo|, |hi|) only: a percentile of |x|
        lo, hi = weight_range(x, RangeSpec("percentile", p=90.0), 8, symmetric=True, grid=grid)
        for r in range(3):
            t = np.percentile(np.abs(x[r].numpy()), 90.0)
            assert float(hi[r]) == pytest.approx(t, abs=1e-6) and float(lo[r]) == pytest.approx(-t, abs=1e-6)
    # the full grid puts each end on its own side: the two-sided percentile range
    lo, hi = weight_range(x, RangeSpec("percentile", p=90.0), 8, symmetric=True, grid="full")
    for r in range(3):
        assert float(lo[r]) == pytest.approx(np.percentile(x[r].numpy(), 10.0), abs=1e-6)
        assert float(hi[r]) == pytest.approx(np.percentile(x[r].numpy(), 90.0), abs=1e-6)


def test_percentile_on_histogram_is_close():
    x = torch.rand(200_000, generator=torch.Generator().manual_seed(1)) * 10
    obs = HistogramObserver()
    for chunk in x.split(10_000):
        obs.update(chunk)
    lo, hi = activation_range(obs.histogram(), RangeSpec("percentile", p=99.0), 8, symmetric=False)
    assert lo == pytest.approx(0.1, abs=0.03) and hi == pytest.approx(9.9, abs=0.03)


# Max (1960): the MSE-optimal uniform quantizer of a unit Gaussian has step
# 0.3352 with 16 levels and 0.5860 with 8 levels. torch's symmetric grid has
# step alpha / ((qmax - qmin) / 2), so alpha = step * 7.5 (4 bits) or 3.5 (3 bits);
# the full grid puts the (two-sided, nearly symmetric) range's top on qmax: hi = step * qmax.
@pytest.mark.parametrize("bits,step", [(4, 0.3352), (3, 0.5860)])
@pytest.mark.parametrize("grid", ["torch", "full"])
def test_mse_clip_on_gaussian_lands_where_theory_says(bits, step, grid):
    x = torch.randn(1, 400_000, generator=torch.Generator().manual_seed(2))
    lo, hi = weight_range(x, RangeSpec("mse"), bits, symmetric=True, grid=grid)
    expected = step * ((2**bits - 1) / 2 if grid == "torch" else 2 ** (bits - 1) - 1)
    assert float(hi[0]) == pytest.approx(expected, rel=0.06)
    if grid == "torch":
        assert float(lo[0]) == pytest.approx(-float(hi[0]))
    else:  # both ends scaled by the same factor
        assert float(lo[0]) / float(x.min()) == pytest.approx(float(hi[0]) / float(x.max()), rel=1e-6)
    # the same on the activation path (histogram)
    h = histogram_of(x.flatten())
    alo, ahi = activation_range(h, RangeSpec("mse"), bits, symmetric=True, grid=grid)
    assert ahi == pytest.approx(expected, rel=0.08)


def test_kl_threshold_on_known_histogram():
    # A bulk on [0, 1) whose bin-to-bin structure (alternating counts) can only
    # be kept at full resolution, plus a very thin tail out to 10: keeping the
    # tail merges bulk bins and loses the structure, clipping the bulk loses
    # mass, so the entropy-optimal threshold is the bulk's edge, 1.0.
    counts = np.zeros(2048)
    k = np.arange(205)  # bins of width 10/2048: the bulk covers [0, 1.001)
    counts[:205] = 1000 + 500 * (-1.0) ** k
    counts[205:] = 0.01
    t = kl_threshold(counts, 10.0 / 2048, 8)
    assert t == pytest.approx(1.0, abs=0.02)
    # everything inside the representable levels: no clipping at all
    counts = np.zeros(2048)
    counts[:100] = 5
    assert kl_threshold(counts, 1.0, 8) == pytest.approx(100.0)
    # fewer bits clip harder
    g = np.random.default_rng(0)
    x = np.concatenate([np.abs(g.standard_normal(200_000)), [40.0]])
    h, _ = np.histogram(x, bins=2048, range=(0, 40))
    t8, t4 = kl_threshold(h, 40 / 2048, 8), kl_threshold(h, 40 / 2048, 4)
    assert 2.0 < t4 < t8 < 6.0


def test_kl_range_for_activations_clips_outliers():
    g = torch.Generator().manual_seed(3)
    x = torch.cat([torch.rand(100_000, generator=g), torch.tensor([50.0])])
    lo, hi = activation_range(histogram_of(x), RangeSpec("kl"), 8, symmetric=False)
    assert lo == pytest.approx(0.0, abs=1e-3) and 0.8 < hi < 5.0


def test_manual_range_per_channel_is_intersected():
    w = torch.tensor([[-1.0, 2.0], [-0.2, 0.1]])
    lo, hi = weight_range(w, RangeSpec("manual", lo=-0.5, hi=0.5), 8, symmetric=False)
    assert lo.tolist() == pytest.approx([-0.5, -0.2]) and hi.tolist() == pytest.approx([0.5, 0.1])


def test_nan_weights_raise_clear_error():
    with pytest.raises(ValueError, match="NaN"):
        weight_range(torch.tensor([[1.0, float("nan")]]), RangeSpec("minmax"), 8, True)


def test_histogram_observer_memory_is_fixed_and_counts_are_exact():
    obs = HistogramObserver(bins=256)
    g = torch.Generator().manual_seed(4)
    total = 0
    for i in range(50):
        batch = torch.randn(1000, generator=g) * (1 + i)  # growing range forces re-binning
        obs.update(batch)
        total += batch.numel()
        assert obs.counts.numel() == 256
    h = obs.histogram()
    assert h.total == pytest.approx(total)
    assert h.edges[0] <= h.min and h.edges[-1] >= h.max
    assert obs.count == total


def test_histogram_observer_counts_nonfinite():
    obs = HistogramObserver()
    obs.update(torch.tensor([1.0, float("nan"), float("inf"), 2.0]))
    assert obs.nonfinite == 2 and obs.count == 2
