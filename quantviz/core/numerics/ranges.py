"""Clip-range methods: minmax, percentile, MSE-optimal clip, entropy (KL), manual.

Weights: computed on the tensor itself, one range per quantization group
(rows of a ``(groups, n)`` matrix). Activations: computed on a streamed
:class:`~quantviz.core.numerics.observers.Histogram`.

* ``minmax``: the exact minimum and maximum.
* ``percentile`` (p): asymmetric ``[q(1-p), q(p)]``; symmetric ``+-q_|x|(p)``.

Symmetric ranges: with the ``torch`` and ``restricted`` grids only
``max(|lo|, |hi|)`` matters and the range is returned as ``+-max``; the
``full`` grid puts each end of the range on its own side of the grid, so
min-max, KL and manual ranges keep their two ends, MSE scales both ends by
the same factor, and percentile takes the two-sided ``[q(1-p), q(p)]``.
* ``mse``: the clip ``alpha * range`` (alpha on a coarse grid of 100 values in
  (0, 1], then refined) that minimises the mean squared quantization error.
* ``kl``: TensorRT / ONNX Runtime entropy calibration: a histogram of ``|x|``
  (2048 bins), the threshold whose clipped-and-quantized distribution has the
  smallest KL divergence to the original; range ``[max(min, -T), min(max, T)]``.
  For weights one threshold per tensor is computed and applied to every group.
* ``manual`` [lo, hi]: the user's range; per-channel / per-group, each group's
  own range intersected with it.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import QuantvizError
from .observers import Histogram
from .qparams import DEFAULT_GRID, EPS, qrange, symmetric_scale
from .spec import DEFAULT_PERCENTILE, RangeSpec

N_ALPHA = 100
KL_BINS = 2048
KL_MAX_CANDIDATES = 512


class RangeError(QuantvizError, ValueError):
    pass


# ----------------------------------------------------------------- grouping
def group_matrix(w: torch.Tensor, granularity: str, axis: int, group_size: int | None) -> torch.Tensor:
    """Arrange a weight as ``(groups, n)`` rows, one row per quantization group."""
    w = w.detach().float()
    if granularity == "per_tensor":
        return w.reshape(1, -1)
    rows = w.movedim(axis, 0).reshape(w.shape[axis], -1)
    if granularity == "per_channel":
        return rows
    gs = int(group_size)
    n = rows.shape[1]
    pad = (-n) % gs
    if pad:
        # Replicate the last (partial) group's own values so that padding
        # never changes that group's range.
        r = n % gs
        partial = rows[:, n - r:]
        reps = int(np.ceil(pad / r))
        filler = partial.repeat(1, reps)[:, :pad]
        rows = torch.cat([rows, filler], dim=1)
    return rows.reshape(-1, gs)


# ------------------------------------------------------- fake quant helpers
def _fq_rows(m: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool,
             grid: str = DEFAULT_GRID) -> torch.Tensor:
    """Fake-quantize each row of ``m`` with its own range (float math)."""
    qmin, qmax = qrange(bits, symmetric, grid)
    lo_n = torch.clamp(lo, max=0.0)
    hi_p = torch.clamp(hi, min=0.0)
    if symmetric:
        scale = torch.clamp(symmetric_scale(lo_n, hi_p, qmin, qmax, grid), min=EPS)
        zp = torch.zeros_like(scale)
    else:
        scale = torch.clamp((hi_p - lo_n) / (qmax - qmin), min=EPS)
        zp = torch.clamp(qmin - torch.round(lo_n / scale), qmin, qmax)
    s = scale.view(-1, *([1] * (m.dim() - 1)))
    z = zp.view(-1, *([1] * (m.dim() - 1)))
    q = torch.clamp(torch.round(m / s) + z, qmin, qmax)
    return (q - z) * s


def _alpha_search(m: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool,
                  weights: torch.Tensor | None = None, grid: str = DEFAULT_GRID):
    """Per-row alpha in (0, 1] minimising the (weighted) MSE of fake quantization."""

    def errors(alphas: torch.Tensor) -> torch.Tensor:
        errs = []
        for a in alphas:
            a_lo, a_hi = lo * a, hi * a
            d = (_fq_rows(m, a_lo, a_hi, bits, symmetric, grid) - m) ** 2
            if weights is not None:
                d = d * weights
            errs.append(d.sum(dim=1))
        return torch.stack(errs)  # (n_alpha, rows)

    coarse = torch.linspace(1.0 / N_ALPHA, 1.0, N_ALPHA)
    err = errors(coarse)
    best = torch.argmin(err, dim=0)
    step = 1.0 / N_ALPHA
    centre = coarse[best]
    fine_offsets = torch.linspace(-step, step, 21)
    fine = torch.clamp(centre.view(1, -1) + fine_offsets.view(-1, 1), min=step / 10, max=1.0)  # (21, rows)
    errs = []
    for k in range(fine.shape[0]):
        a = fine[k]
        d = (_fq_rows(m, lo * a, hi * a, bits, symmetric, grid) - m) ** 2
        if weights is not None:
            d = d * weights
        errs.append(d.sum(dim=1))
    ferr = torch.stack(errs)
    fbest = torch.argmin(ferr, dim=0)
    return fine[fbest, torch.arange(fine.shape[1])]


def _sym(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.maximum(lo.abs(), hi.abs())
    return -a, a


# ---------------------------------------------------------------- KL (TRT)
def kl_threshold(abs_counts: np.ndarray, bin_width: float, bits: int) -> float:
    """Entropy-calibration threshold on a histogram of ``|x|`` starting at 0."""
    hist = np.asarray(abs_counts, dtype=np.float64)
    nlevels = max(2 ** (bits - 1), 1)
    if hist.sum() <= 0:
        return 0.0
    last_nonzero = int(np.nonzero(hist)[0][-1]) + 1
    if last_nonzero <= nlevels:
        return last_nonzero * bin_width
    start = nlevels
    stop = last_nonzero
    step = max(1, (stop - start) // KL_MAX_CANDIDATES)
    best_i, best_kl = stop, np.inf
    for i in list(range(start, stop, step)) + [stop]:
        p = hist[:i].copy()
        p[i - 1] += hist[i:].sum()
        ref = hist[:i]
        # merge i bins into nlevels groups
        idx = (np.arange(i) * nlevels) // i
        merged = np.bincount(idx, weights=ref, minlength=nlevels)
        nonzero = (ref > 0).astype(np.float64)
        nz_per = np.bincount(idx, weights=nonzero, minlength=nlevels)
        with np.errstate(divide="ignore", invalid="ignore"):
            per_bin = np.where(nz_per > 0, merged / np.maximum(nz_per, 1), 0.0)
        q = per_bin[idx] * nonzero
        ps, qs = p.sum(), q.sum()
        if ps <= 0 or qs <= 0:
            continue
        p = p / ps
        q = q / qs
        mask = p > 0
        qm = np.where(q[mask] > 0, q[mask], 1e-12)
        kl = float(np.sum(p[mask] * np.log(p[mask] / qm)))
        if kl < best_kl - 1e-12:
            best_kl, best_i = kl, i
    return best_i * bin_width


def _abs_histogram_from_values(values: np.ndarray, weights: np.ndarray, bins: int = KL_BINS) -> tuple[np.ndarray, float]:
    a = np.abs(values)
    amax = float(a.max()) if a.size else 0.0
    if amax <= 0:
        return np.zeros(bins), 1.0
    counts, _ = np.histogram(a, bins=bins, range=(0.0, amax), weights=weights)
    return counts, amax / bins


# ------------------------------------------------------------ weight ranges
@torch.no_grad()
def weight_range(m: torch.Tensor, rng: RangeSpec, bits: int, symmetric: bool,
                 grid: str = DEFAULT_GRID) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip range per row of the ``(groups, n)`` matrix ``m``."""
    two_sided = symmetric and grid == "full"  # the full grid uses both ends of a symmetric range
    lo, hi = m.min(dim=1).values, m.max(dim=1).values
    # NaN propagates through min / max and Inf shows in them: no full-size mask needed
    if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):
        raise RangeError("weights contain NaN or Inf")
    method = rng.method
    if method == "minmax":
        pass
    elif method == "percentile":
        p = (rng.p if rng.p is not None else DEFAULT_PERCENTILE) / 100.0
        if symmetric and not two_sided:
            a = _quantile_rows(m.abs(), p)
            return -a, a
        # p below 50 names the same two-sided range as 100 - p (never lo > hi)
        lo, hi = _quantile_rows(m, min(p, 1.0 - p)), _quantile_rows(m, max(p, 1.0 - p))
    elif method == "mse":
        if symmetric and not two_sided:
            lo, hi = _sym(lo, hi)
        alpha = _alpha_search(m, lo, hi, bits, symmetric, grid=grid)
        return lo * alpha, hi * alpha
    elif method == "kl":
        flat = m.flatten().numpy()
        counts, width = _abs_histogram_from_values(flat, None)
        t = kl_threshold(counts, width, bits)
        # the threshold is one magnitude for the whole tensor; a row whose values all lie beyond it
        # (one-sided, e.g. [0.5, 1.0] with t = 0.5) is clipped to [0, t], as its grid includes 0 anyway
        return torch.clamp(torch.clamp(lo, max=0.0), min=-t), torch.clamp(torch.clamp(hi, min=0.0), max=t)
    elif method == "manual":
        if rng.lo is None or rng.hi is None:
            raise RangeError("manual range needs lo and hi")
        mlo, mhi = float(rng.lo), float(rng.hi)
        lo = torch.clamp(lo, min=mlo)
        hi = torch.clamp(hi, max=mhi)
        hi = torch.maximum(hi, lo)
        if m.shape[0] == 1:
            lo = torch.full_like(lo, mlo)
            hi = torch.full_like(hi, mhi)
    else:
        raise RangeError(f"unknown range method {method!r}")
    if symmetric and not two_sided:
        lo, hi = _sym(lo, hi)
    return lo, hi


def _quantile_rows(m: torch.Tensor, q: float) -> torch.Tensor:
    """Linear-interpolated quantile per row (like numpy's default), any size."""
    s, _ = torch.sort(m, dim=1)
    n = s.shape[1]
    pos = q * (n - 1)
    i0 = int(np.floor(pos))
    i1 = min(i0 + 1, n - 1)
    frac = pos - i0
    return s[:, i0] + (s[:, i1] - s[:, i0]) * frac


# -------------------------------------------------------- activation ranges
def activation_range(h: Histogram, rng: RangeSpec, bits: int, symmetric: bool,
                     grid: str = DEFAULT_GRID) -> tuple[float, float]:
    """Clip range of an activation tensor from its calibration histogram."""
    two_sided = symmetric and grid == "full"
    if h.total <= 0:
        raise RangeError("no calibration statistics")
    lo, hi = h.min, h.max
    method = rng.method
    centers = h.centers
    counts = h.counts
    if method == "minmax":
        pass
    elif method == "percentile":
        p = (rng.p if rng.p is not None else DEFAULT_PERCENTILE) / 100.0
        if symmetric and not two_sided:
            order = np.argsort(np.abs(centers))
            a = np.abs(centers)[order]
            cdf = np.cumsum(counts[order]) / counts.sum()
            t = float(np.interp(p, cdf, a))
            return -t, t
        lo = _hist_quantile(h, min(p, 1.0 - p))
        hi = _hist_quantile(h, max(p, 1.0 - p))
    elif method == "mse":
        mask = counts > 0
        vals = torch.tensor(np.clip(centers[mask], h.min, h.max), dtype=torch.float64).view(1, -1)
        wts = torch.tensor(counts[mask], dtype=torch.float64).view(1, -1)
        l, u = torch.tensor([lo], dtype=torch.float64), torch.tensor([hi], dtype=torch.float64)
        if symmetric and not two_sided:
            l, u = _sym(l, u)
        alpha = float(_alpha_search(vals, l, u, bits, symmetric, weights=wts, grid=grid)[0])
        return float(l[0]) * alpha, float(u[0]) * alpha
    elif method == "kl":
        mask = counts > 0
        abs_counts, width = _abs_histogram_from_values(np.clip(centers[mask], h.min, h.max), counts[mask])
        t = kl_threshold(abs_counts, width, bits)
        lo, hi = max(lo, -t), min(hi, t)
    elif method == "manual":
        if rng.lo is None or rng.hi is None:
            raise RangeError("manual range needs lo and hi")
        return float(rng.lo), float(rng.hi)
    else:
        raise RangeError(f"unknown range method {method!r}")
    if symmetric and not two_sided:
        a = max(abs(lo), abs(hi))
        return -a, a
    return float(lo), float(hi)


def _hist_quantile(h: Histogram, q: float) -> float:
    cdf = np.concatenate([[0.0], np.cumsum(h.counts)]) / h.counts.sum()
    val = float(np.interp(q, cdf, h.edges))
    return float(np.clip(val, h.min, h.max))
