"""The live preview (:mod:`.preview`) for tensors in a float / block format.

Same dictionary as the integer preview, so the histogram panel draws it the
same way, with these differences: ``levels`` are the format's own
(non-uniform, denser near zero) values under the widest group's scale;
the quantized histogram spreads each value over its own cell (the local
spacing of the format around it); for block formats ``channel_lo/hi`` is
each output channel's per-block clip envelope (+-scale * element max of its
widest block) and ``block`` is True: their scales follow each block's maximum,
so the clip range cannot be dragged. FP8 per-tensor / per-channel clip ranges
can (the range's largest magnitude maps onto the element's largest value).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from .format_quant import activation_error, activation_params
from .formats import FORMATS, local_step
from .quantize import quantize_weight_tensor
from .spec import ActSpec, RangeSpec, WeightSpec

MAX_LEVELS_DRAWN = 256


def _levels(params, group: int) -> tuple[np.ndarray, int, int]:
    lv = params.levels(group).numpy()
    step = max(1, -(-len(lv) // MAX_LEVELS_DRAWN))
    drawn = lv[::step]
    if drawn[-1] != lv[-1]:
        drawn = np.append(drawn, lv[-1])
    return drawn, len(lv), step


def _cell_scales(q: torch.Tensor, el_scale: torch.Tensor, fmt) -> torch.Tensor:
    """Each quantized value's cell width: the format's spacing around it, in real units."""
    safe = torch.where(el_scale > 0, el_scale, torch.ones_like(el_scale))
    return local_step(q / safe, fmt.element) * safe


def _describe(fmt) -> str:
    if fmt.scale == "ggml":
        t = fmt.gtype
        kind = "scale and minimum" if t.affine else "scale"
        return (f"{fmt.label} (llama.cpp): {t.code_bits}-bit codes, a {kind} per {t.sub} weights"
                + (f" in super-blocks of {t.block}" if t.block != t.sub else "") + f", {t.bits_per_weight:g} bits/weight")
    if fmt.is_block:
        scale = "E8M0 power-of-two" if fmt.scale == "e8m0" else "E4M3 (× one FP32 per tensor)"
        return f"{fmt.label}: {fmt.element.name.upper()} elements, {scale} scale per block of {fmt.block}"
    return f"{fmt.label}: FP32 scale = amax / {fmt.element.max:g}"


def preview_weight_format(sim, name: str, wspec: WeightSpec, lo, hi, base: dict, rows: torch.Tensor,
                          stride: int, edges: np.ndarray, cell_density) -> dict:
    fmt = FORMATS[wspec.format]
    info = sim.by_name[name]
    w = sim.float_weight(name).detach().float().cpu()
    if lo is not None and hi is not None and not fmt.is_block:
        wspec = replace(wspec, range=RangeSpec(method="manual", lo=float(lo), hi=float(hi)))
    t = quantize_weight_tensor(w, wspec, info.channel_axis, name)
    params = t.qparams
    widest = int(torch.argmax(params.scale.abs())) if params.groups else 0
    levels, total, step = _levels(params, widest)
    qrows = t.tensor.movedim(info.channel_axis, 0).reshape(rows.shape)
    C, n = rows.shape
    per = params.groups // max(C, 1) if params.rows > 1 else 0
    if fmt.is_block:
        el_scale = params.scale.view(C, per).repeat_interleave(fmt.block, dim=1)[:, :n]
    elif params.groups == 1:
        el_scale = params.scale.expand(C, n)
    elif wspec.granularity == "per_channel":
        el_scale = params.scale.view(C, 1).expand(C, n)
    else:
        gs = wspec.effective_group_size()
        el_scale = params.scale.view(C, -1).repeat_interleave(gs, dim=1)[:, :n]
    if fmt.scale == "ggml":  # integer codes: each value's cell is its sub-block's scale
        cells = el_scale.abs()
        glo, ghi = params.lo.view(C, per), params.hi.view(C, per)
        ch_lo, ch_hi = glo.min(dim=1).values, ghi.max(dim=1).values
        eff = float(torch.maximum(ch_lo.abs(), ch_hi.abs()).max())
    else:
        cells = _cell_scales(qrows, el_scale, fmt)
        env = (el_scale * fmt.element.max)
        ch_hi = env.max(dim=1).values
        ch_lo = -ch_hi
        eff = float(ch_hi.max())
    qcounts = cell_density(qrows.flatten()[::stride].numpy(), cells.flatten()[::stride].numpy(), edges) * stride
    req_lo = float(lo) if lo is not None and not fmt.is_block else -eff
    req_hi = float(hi) if hi is not None and not fmt.is_block else eff
    out = dict(base)
    out.update({
        "float": False, "format": fmt.name, "format_label": fmt.label, "format_note": _describe(fmt),
        "block": fmt.is_block, "lo": req_lo, "hi": req_hi,
        "sqnr_db": float(t.sqnr_db), "mse": float(t.mse), "clipped": float(t.clipped_fraction),
        "levels": levels, "levels_total": total, "levels_step": step, "levels_group": widest,
        "grid_lo": -eff, "grid_hi": eff, "bits": fmt.bits, "symmetric": False, "grid": None,
        "quant_counts": qcounts, "granularity": "per_block" if fmt.is_block else wspec.granularity,
        "range": ("llama.cpp reference" if fmt.scale == "ggml" else "block max") if fmt.is_block
        else wspec.range.describe(), "groups": params.groups,
        "eff_lo": -eff, "eff_hi": eff, "group_lo": params.lo.numpy(), "group_hi": params.hi.numpy(),
        "channel_lo": ch_lo.numpy(), "channel_hi": ch_hi.numpy(),
    })
    return out


def preview_activation_format(hist, aspec: ActSpec, lo, hi, base: dict, disp_edges, cell_density) -> dict:
    fmt = FORMATS[aspec.format]
    p = activation_params(hist, aspec, lo=None if fmt.is_block else lo, hi=None if fmt.is_block else hi)
    mask = hist.counts > 0
    sqnr, mse, clipped, q, wts = activation_error(hist.centers[mask], hist.counts[mask], p, hist.min, hist.max)
    amax = float(p.amax[0])
    if fmt.is_block:  # levels under the scale the observed maximum's block would get
        from .formats import quantize_blocks

        _, bp = quantize_blocks(torch.tensor([[amax]]), fmt, p.tensor_scale)
        lv_params, s = bp, float(bp.scale[0])
    else:
        lv_params, s = p, float(p.scale[0])
    levels, total, step = _levels(lv_params, 0)
    cells = _cell_scales(q, torch.full_like(q, s), fmt)
    qcounts = cell_density(q.numpy(), cells.numpy(), disp_edges, weights=wts.numpy() * (float(hist.total) / max(float(wts.sum()), 1e-300)))
    top = s * fmt.element.max
    rlo = float(lo) if lo is not None and not fmt.is_block else -top
    rhi = float(hi) if hi is not None and not fmt.is_block else top
    out = dict(base)
    out.update({
        "float": False, "format": fmt.name, "format_label": fmt.label, "format_note": _describe(fmt),
        "block": fmt.is_block, "lo": rlo, "hi": rhi, "sqnr_db": float(sqnr), "mse": float(mse),
        "clipped": float(clipped), "levels": levels, "levels_total": total, "levels_step": step, "levels_group": 0,
        "grid_lo": -top, "grid_hi": top, "bits": fmt.bits, "symmetric": False, "grid": None,
        "quant_counts": qcounts, "granularity": "per_block" if fmt.is_block else "per_tensor",
        "range": "block max (estimated from calibration values)" if fmt.is_block else aspec.range.describe(),
        "groups": 1, "eff_lo": -top, "eff_hi": top, "activation": True,
    })
    return out


__all__ = ["preview_weight_format", "preview_activation_format"]
