"""Cheap, Qt-free previews of one layer's quantization for the histogram view.

While the user drags a clip range the app must show, at once and without a
model pass, what that range does to one tensor: its SQNR, MSE, the fraction of
values clipped, the quantization levels and the quantized histogram. These
functions compute exactly what :class:`~quantviz.core.sim.fakequant.QuantSim`
computes for the same settings (same grouping, range, qparams and fake
quantization), so a manual range equal to the min-max range reproduces the
engine's own numbers.

The *quantized histogram* is drawn in the same units as the float one
("values per display bin"): every quantized value's count is spread evenly
over its quantization cell ``[v - s/2, v + s/2]``, so the staircase can be
compared with the float histogram bin for bin (a spike per level would dwarf
it).
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch

from .observers import Histogram
from .qparams import QParams, compute_qparams
from .quantize import histogram_error, quantize_weight_tensor
from .spec import ActSpec, RangeSpec, WeightSpec

MAX_LEVELS_DRAWN = 256  # more levels than this are subsampled for drawing
MAX_HIST_SAMPLES = 1 << 20  # quantized-histogram estimate uses at most this many values
OUTLIER_RATIO = 3.0  # a channel whose |range| exceeds this x median is an outlier


# ------------------------------------------------------------------ helpers
def display_edges(lo: float, hi: float, n: int, bins: int | None = None) -> np.ndarray:
    """Display bin edges over ``[lo, hi]`` padded by 4 %; ~2 sqrt(n) bins in [24, 200]."""
    if bins is None:
        bins = int(min(200, max(24, 2 * math.sqrt(max(n, 1)))))
    span = hi - lo
    if not span > 0:
        span = max(abs(lo), abs(hi), 1e-6) * 0.1
        lo, hi = lo - span / 2, hi + span / 2
    pad = 0.04 * span
    return np.linspace(lo - pad, hi + pad, bins + 1)


def cell_density(values: np.ndarray, scales: np.ndarray, edges: np.ndarray,
                 weights: np.ndarray | None = None) -> np.ndarray:
    """Mass per display bin when each value's weight is spread over ``[v - s/2, v + s/2]``.

    The mixture's cumulative distribution is piecewise linear with slope
    changes at the cell ends, so it is exact and costs one sort. Mass that
    falls outside ``edges`` is counted in the first / last bin.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    s = np.broadcast_to(np.asarray(scales, dtype=np.float64), v.shape).ravel()
    w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    keep = (w > 0) & (s > 0)
    v, s, w = v[keep], s[keep], w[keep]
    if v.size == 0:
        return np.zeros(len(edges) - 1)
    x = np.concatenate([v - s / 2, v + s / 2])
    slope = w / s
    d = np.concatenate([slope, -slope])
    order = np.argsort(x, kind="stable")
    x, d = x[order], d[order]
    cum_slope = np.cumsum(d)
    cdf = np.concatenate([[0.0], np.cumsum(cum_slope[:-1] * np.diff(x))])
    at_edges = np.interp(edges, x, cdf, left=0.0, right=cdf[-1])
    out = np.clip(np.diff(at_edges), 0.0, None)
    # the half cells of the grid's end levels may reach past the display range: their
    # mass goes into the end bins, so the staircase keeps every value
    out[0] += max(at_edges[0], 0.0)
    out[-1] += max(cdf[-1] - at_edges[-1], 0.0)
    return out


def grid_levels(qp: QParams, group: int = 0) -> tuple[np.ndarray, int]:
    """The float values of group ``group``'s grid, subsampled to <= MAX_LEVELS_DRAWN.

    Returns ``(levels, step)``; ``step`` > 1 means only every step-th level
    is included (plus the last one).
    """
    n = qp.qmax - qp.qmin + 1
    step = max(1, int(math.ceil(n / MAX_LEVELS_DRAWN)))
    codes = np.arange(qp.qmin, qp.qmax + 1, step)
    if codes[-1] != qp.qmax:
        codes = np.append(codes, qp.qmax)
    s = float(qp.scale[group])
    z = int(qp.zero_point[group])
    return (codes - z) * s, step


def _summary(lo: float, hi: float, qp: QParams, group: int, sqnr: float, mse: float, clipped: float) -> dict:
    levels, step = grid_levels(qp, group)
    glo, ghi = qp.grid_range()
    return {
        "lo": float(lo), "hi": float(hi),
        "sqnr_db": float(sqnr), "mse": float(mse), "clipped": float(clipped),
        "levels": levels, "levels_total": qp.qmax - qp.qmin + 1, "levels_step": step, "levels_group": int(group),
        "grid_lo": float(glo.min()), "grid_hi": float(ghi.max()),
        "bits": qp.bits, "symmetric": qp.symmetric, "grid": qp.grid if qp.symmetric else None,
    }


# ------------------------------------------------------------------ weights
def _element_scales(scale: torch.Tensor, rows: int, n: int, granularity: str, group_size: int | None) -> torch.Tensor:
    """Each element's scale, in the ``(channels, n)`` layout of the weight."""
    if granularity == "per_tensor":
        return scale[0].expand(rows, n)
    if granularity == "per_channel":
        return scale.view(rows, 1).expand(rows, n)
    ng = -(-n // group_size)
    return scale.view(rows, ng).repeat_interleave(group_size, dim=1)[:, :n]


def preview_weight(sim, name: str, wspec: WeightSpec, lo: float | None = None, hi: float | None = None,
                   *, edges: np.ndarray | None = None) -> dict:
    """Quantize layer ``name``'s float weight under ``wspec`` with clip range [lo, hi].

    ``lo``/``hi`` = None uses ``wspec``'s own range method (the current
    config); otherwise the range becomes ``manual [lo, hi]`` exactly as the
    engine applies it (per-channel / per-group: each group's own range
    intersected with it). Returns a dict with ``sqnr_db``, ``mse``,
    ``clipped`` (fraction outside each group's grid, as the engine counts it),
    ``levels`` (one group's grid, the widest), ``grid_lo/hi``, ``eff_lo/hi``
    (envelope of the groups' clip ranges), ``group_lo/hi`` (per group),
    ``channel_lo/hi`` (clip envelope per output channel), ``edges``,
    ``float_counts``, ``quant_counts`` and ``float`` False; or, for a float
    layer (bits None), only the float histogram with ``float`` True.
    """
    info = sim.by_name[name]
    w = sim.float_weight(name).detach().float().cpu()
    n_el = w.numel()
    wmin, wmax = float(w.min()), float(w.max())
    if edges is None:
        edges = display_edges(wmin, wmax, n_el)
    rows = w.movedim(info.channel_axis, 0).reshape(w.shape[info.channel_axis], -1)
    stride = max(1, int(math.ceil(n_el / MAX_HIST_SAMPLES)))
    flat = rows.flatten()
    fcounts, _ = np.histogram(flat[::stride].numpy(), bins=edges)
    fcounts = fcounts.astype(np.float64) * stride
    base = {"name": name, "edges": edges, "float_counts": fcounts, "data_lo": wmin, "data_hi": wmax,
            "numel": n_el, "sample_stride": stride}
    if wspec.bits is None:
        return {**base, "float": True}
    if wspec.format != "int":  # FP8 / MX / NVFP4
        from .format_preview import preview_weight_format

        return preview_weight_format(sim, name, wspec, lo, hi, base, rows, stride, edges, cell_density)
    if lo is not None and hi is not None:
        wspec = replace(wspec, range=RangeSpec(method="manual", lo=float(lo), hi=float(hi)))
    gs = wspec.effective_group_size()
    t = quantize_weight_tensor(w, wspec, info.channel_axis, name)
    wq, qp, glo, ghi = t.tensor, t.qparams, t.lo, t.hi
    sqnr, mse, clipped = t.sqnr_db, t.mse, t.clipped_fraction
    algo_note = None
    if wspec.algorithm != "none":
        # the config's algorithm result when the re-check computed it (never computed here)
        res = sim.quantize_weight(name, wspec, compute=False) if lo is None else None
        if res is None:
            algo_note = (f"{wspec.algorithm}: pending (runs with the next re-check)" if lo is None else
                         f"{wspec.algorithm} is not previewed while dragging: rounding to nearest shown")
        else:
            algo_note = algorithm_text(res.algorithm_info)
            if res.input_scale is None and res.qparams.scale.shape == qp.scale.shape:
                wq, qp = res.tensor.float(), res.qparams
                sqnr, mse, clipped = res.sqnr_db, res.mse, res.clipped_fraction
    widest = int(torch.argmax(qp.scale))
    if lo is None and wspec.range.method == "manual":  # show the stored range, not its symmetric envelope
        lo, hi = wspec.range.lo, wspec.range.hi
    req_lo = float(lo) if lo is not None else float(glo.min())
    req_hi = float(hi) if hi is not None else float(ghi.max())
    out = _summary(req_lo, req_hi, qp, widest, sqnr, mse, clipped)
    qrows = wq.movedim(info.channel_axis, 0).reshape(rows.shape)
    scales = _element_scales(qp.scale, rows.shape[0], rows.shape[1], wspec.granularity, gs)
    qcounts = cell_density(qrows.flatten()[::stride].numpy(), scales.flatten()[::stride].numpy(), edges) * stride
    if wspec.granularity == "per_tensor":
        ch_lo = torch.full((rows.shape[0],), float(glo[0]))
        ch_hi = torch.full((rows.shape[0],), float(ghi[0]))
    else:
        per = glo.numel() // rows.shape[0]
        ch_lo = glo.view(rows.shape[0], per).min(dim=1).values
        ch_hi = ghi.view(rows.shape[0], per).max(dim=1).values
    out.update(base)
    out.update({
        "float": False, "quant_counts": qcounts, "granularity": wspec.granularity,
        "range": wspec.range.describe(), "groups": qp.groups,
        "eff_lo": float(glo.min()), "eff_hi": float(ghi.max()),
        "group_lo": glo.numpy(), "group_hi": ghi.numpy(),
        "channel_lo": ch_lo.numpy(), "channel_hi": ch_hi.numpy(),
    })
    if algo_note:
        out["algorithm_note"] = algo_note
    return out


def algorithm_text(info: dict) -> str | None:
    """What a layer's algorithm changed, in one line (rounding flips and where they are)."""
    if not info:
        return None
    if info.get("skipped"):
        return info["skipped"]
    algo = info.get("algorithm", "")
    parts = []
    if algo in ("adaround", "gptq") and "changed" in info:
        t = f"{info['changed']:,} weights ({info.get('changed_fraction', 0) * 100:.1f}%) round differently from nearest"
        if info.get("changed"):
            t += f" ({info.get('changed_up', 0):,} up)"
            per = info.get("changed_per_channel") or []
            top = sorted(range(len(per)), key=lambda i: -per[i])[:3]
            if per:
                t += ", most in channels " + ", ".join(f"{i} ({per[i]})" for i in top if per[i])
            if info.get("changed_near_tie") is not None:
                t += f"; {info['changed_near_tie'] * 100:.0f}% of them within a quarter step of a rounding tie"
        parts.append(t)
    if "bias_shift_max" in info:
        parts.append(f"bias shifted by up to {info['bias_shift_max']:.3g}" + (" (bias created)" if info.get("bias_created") else ""))
    if "scale_min" in info:
        parts.append(f"input scales {info['scale_min']:.3g}..{info['scale_max']:.3g}")
    a, b = info.get("output_sqnr_db_nearest"), info.get("output_sqnr_db")
    if a is not None and b is not None and math.isfinite(a) and math.isfinite(b):
        parts.append(f"layer output SQNR {a:.1f} → {b:.1f} dB")
    return f"{algo}: " + "; ".join(parts)


def channel_ranges(sim, name: str) -> dict:
    """Per output channel of layer ``name``: min, max, 1st/99th percentile, and outliers.

    ``outliers`` are channels whose largest magnitude exceeds OUTLIER_RATIO
    times the median channel's; ``spread`` is max / median of the channels'
    largest magnitudes (large values argue for per-channel quantization).
    """
    info = sim.by_name[name]
    w = sim.float_weight(name).detach().float().cpu()
    rows = w.movedim(info.channel_axis, 0).reshape(w.shape[info.channel_axis], -1)
    cmin, cmax = rows.min(dim=1).values, rows.max(dim=1).values
    if rows.shape[1] > 1:
        q = torch.quantile(rows, torch.tensor([0.01, 0.99]), dim=1) if rows.numel() <= 16_000_000 else torch.stack([cmin, cmax])
    else:
        q = torch.stack([cmin, cmax])
    amax = torch.maximum(cmin.abs(), cmax.abs())
    med = float(torch.median(amax))
    spread = float(amax.max()) / med if med > 0 else float("inf") if float(amax.max()) > 0 else 1.0
    outliers = np.nonzero((amax > OUTLIER_RATIO * med).numpy())[0] if med > 0 else np.array([], dtype=np.int64)
    return {"min": cmin.numpy(), "max": cmax.numpy(), "p01": q[0].numpy(), "p99": q[1].numpy(),
            "absmax": amax.numpy(), "median_absmax": med, "spread": spread, "outliers": outliers,
            "channels": int(rows.shape[0])}


# -------------------------------------------------------------- activations
def activation_qparams(hist: Histogram, aspec: ActSpec, lo: float | None = None, hi: float | None = None) -> tuple[QParams, float, float]:
    """Qparams of an activation with manual [lo, hi] (or ``aspec``'s own method)."""
    from .ranges import activation_range

    if lo is None or hi is None:
        lo, hi = activation_range(hist, aspec.range, aspec.bits, aspec.symmetric, aspec.grid)
    return compute_qparams(float(lo), float(hi), aspec.bits, aspec.symmetric, aspec.grid), float(lo), float(hi)


def preview_activation(hist: Histogram, aspec: ActSpec, lo: float | None = None, hi: float | None = None,
                       *, bins: int = 160) -> dict:
    """The activation counterpart of :func:`preview_weight`, from calibration statistics.

    Values are the histogram's bin centres (clamped to the observed min/max)
    weighted by their counts, exactly as ``QuantSim.activation_sqnr``
    estimates the input's SQNR. The display histogram is the calibration
    histogram re-binned to about ``bins`` bins over its occupied range, with a
    4 % empty margin on both sides.
    """
    disp = hist.rebinned(bins)
    k = max(1, int(round(0.04 * len(disp.counts))))  # empty margin bins: end cells and handles stay in view
    disp = Histogram(np.pad(disp.counts.astype(np.float64), k), disp.lo - k * disp.width, disp.width, disp.min, disp.max)
    base = {"edges": disp.edges, "float_counts": disp.counts,
            "data_lo": hist.min, "data_hi": hist.max, "numel": hist.total}
    if aspec.bits is None:
        return {**base, "float": True}
    if aspec.format != "int":  # FP8 / MX / NVFP4
        from .format_preview import preview_activation_format

        return preview_activation_format(hist, aspec, lo, hi, base, disp.edges, cell_density)
    qp, rlo, rhi = activation_qparams(hist, aspec, lo, hi)
    mask = hist.counts > 0
    sqnr, mse, clipped, q, wts = histogram_error(hist.centers[mask], hist.counts[mask], qp, hist.min, hist.max)
    out = _summary(rlo, rhi, qp, 0, sqnr, mse, clipped)
    qcounts = cell_density(q.numpy(), float(qp.scale[0]), disp.edges, weights=wts.numpy())
    out.update(base)
    out.update({"float": False, "quant_counts": qcounts, "granularity": "per_tensor",
                "range": aspec.range.describe() if lo is None else f"manual[{rlo:.4g}, {rhi:.4g}]",
                "groups": 1, "eff_lo": rlo, "eff_hi": rhi})
    return out


__all__ = ["preview_weight", "preview_activation", "channel_ranges", "cell_density", "grid_levels",
           "display_edges", "activation_qparams"]
