"""Weights and activations in the float / block formats of :mod:`.formats`.

:func:`quantize_weight_format` is the format branch of
:func:`.quantize.quantize_weight_tensor` (so the simulation and the live
preview share it); :func:`activation_params` and :func:`activation_error`
are the activation counterparts used by :class:`~.fakequant.QuantSim` and the
histogram preview.

Weights: FP8 takes the spec's granularity (one FP32 scale per tensor, per
output channel or per group) and its range method (the clip range's largest
magnitude maps onto the element's largest value); block formats run their
blocks along each output channel's flattened input dimension, and their
scales follow the format's own rule (the range method does not apply: the
hardware computes the block scale from the block's maximum).

Activations: FP8 gets a per-tensor scale from the calibrated range; MX and
NVFP4 compute block scales on the fly along the layer's input-channel axis
(the last axis; axis 1 of a convolution's input), NVFP4 under a per-tensor
FP32 scale from the calibrated maximum. Their SQNR from a histogram alone is
an estimate: values drawn from the calibration histogram (fixed seed) are
grouped into blocks and quantized.
"""
from __future__ import annotations


import torch

from .formats import (FORMATS, Format, FormatParams, GGMLParams, fp_scale, quantize_activation, quantize_blocks,
                      quantize_scaled)
from .ggml import quantize_rows
from .ranges import RangeError, activation_range, group_matrix, weight_range
from .spec import ActSpec, WeightSpec
from .sqnr import sqnr_db

ACT_SAMPLES = 1 << 15  # values drawn from a histogram to estimate a block format's activation error


def _rows(w: torch.Tensor, axis: int) -> torch.Tensor:
    return w.movedim(axis, 0).reshape(w.shape[axis], -1)


def _unrows(rows: torch.Tensor, w: torch.Tensor, axis: int) -> torch.Tensor:
    moved_shape = w.movedim(axis, 0).shape
    return rows.reshape(moved_shape).movedim(0, axis).contiguous()


def quantize_weight_format(w: torch.Tensor, spec: WeightSpec, channel_axis: int, name: str = ""):
    """The format branch of the weight kernel: the fields of a :class:`~.quantize.TensorQuant`
    (fake-quantized weight, params, grouped matrix, lo, hi, SQNR dB, MSE, clipped fraction)."""
    fmt = FORMATS[spec.format]
    w = w.detach().float()
    rows = _rows(w, channel_axis)
    if fmt.scale == "ggml":  # a llama.cpp type: its reference quantizer, exactly (quantviz.core.numerics.ggml)
        g = quantize_rows(rows, fmt.gtype)
        q_rows, m = g.deq, rows
        params = GGMLParams(fmt.name, g.scale.flatten(), rows.shape[0], fmt.block, offset=g.offset.flatten(),
                            qmin=fmt.gtype.qmin, qmax=fmt.gtype.qmax)
        lo, hi = params.lo, params.hi
        n = rows.shape[1]
        lo_el = lo.view(rows.shape[0], -1).repeat_interleave(fmt.block, dim=1)[:, :n]
        hi_el = hi.view(rows.shape[0], -1).repeat_interleave(fmt.block, dim=1)[:, :n]
        tol = 1e-6 * torch.maximum(lo_el.abs(), hi_el.abs())
        clipped = float(((rows < lo_el - tol) | (rows > hi_el + tol)).float().mean()) if rows.numel() else 0.0
    elif fmt.is_block:
        q_rows, params = quantize_blocks(rows, fmt)
        m = rows
        hi_el = params.hi.view(rows.shape[0], -1).repeat_interleave(fmt.block, dim=1)[:, :rows.shape[1]]
        clipped = float((rows.abs() > hi_el * (1 + 1e-6)).float().mean()) if rows.numel() else 0.0
        lo, hi = params.lo, params.hi
    else:
        gs = spec.effective_group_size()
        try:
            m = group_matrix(w, spec.granularity, channel_axis, gs)
            lo, hi = weight_range(m, spec.range, 8, True, "full")
        except RangeError as exc:
            raise RangeError(f"layer {name}: {exc}" if name else str(exc)) from exc
        amax = torch.maximum(lo.abs(), hi.abs())
        scale = fp_scale(amax, fmt.element)
        params = FormatParams(fmt.name, scale.flatten(), m.shape[0] if spec.granularity != "per_tensor" else 1,
                              None, amax=amax.flatten())
        if spec.granularity == "per_tensor":
            q_rows = quantize_scaled(rows, scale.view(1, 1), fmt.element)
        elif spec.granularity == "per_channel":
            q_rows = quantize_scaled(rows, scale.view(-1, 1), fmt.element)
        else:
            n = rows.shape[1]
            el_scale = scale.view(rows.shape[0], -1).repeat_interleave(gs, dim=1)[:, :n]
            q_rows = quantize_scaled(rows, el_scale, fmt.element)
            params.rows = rows.shape[0]
        mh = params.hi.view(-1, 1)
        clipped = float((m.abs() > mh * (1 + 1e-6)).float().mean()) if m.numel() else 0.0
    wq = _unrows(q_rows, w, channel_axis)
    d = (wq - w).flatten()
    noise, signal = float(torch.dot(d, d)), float(torch.dot(w.flatten(), w.flatten()))
    return wq, params, m, lo, hi, sqnr_db(signal, noise), noise / max(w.numel(), 1), clipped


# ---------------------------------------------------------------- activations
def activation_axis(layer_type: str, weight_rank: int) -> int:
    """The input axis that a layer reduces over: channels (1) for a convolution, else the last."""
    return 1 if layer_type.startswith("Conv") and weight_rank >= 3 else -1


def activation_params(hist, spec: ActSpec, axis: int = -1, name: str = "",
                      lo: float | None = None, hi: float | None = None) -> FormatParams:
    """The per-tensor part of an activation's format parameters, from its calibration histogram:
    FP8's scale (from the range method's clip range, or ``lo``/``hi``), NVFP4's tensor amax."""
    fmt = FORMATS[spec.format]
    if lo is None or hi is None:
        try:
            lo, hi = activation_range(hist, spec.range, 8, True, "full")
        except RangeError as exc:
            raise RangeError(f"layer {name} activation: {exc}" if name else str(exc)) from exc
    amax = max(abs(float(lo)), abs(float(hi)))
    if fmt.is_block:
        return FormatParams(fmt.name, torch.ones(0), 1, fmt.block, tensor_scale=amax if fmt.scale == "e4m3" else None,
                            amax=torch.tensor([amax]), axis=axis)
    return FormatParams(fmt.name, fp_scale(torch.tensor([amax]), fmt.element), 1, None, amax=torch.tensor([amax]),
                        axis=axis)


def fake_quantize_activation(x: torch.Tensor, p: FormatParams) -> torch.Tensor:
    fmt = p.fmt
    if fmt.is_block:
        return quantize_activation(x, fmt, axis=p.axis, tensor_amax=p.tensor_scale)
    return quantize_activation(x, fmt, scale=float(p.scale[0]))


def _samples(centers, counts, lo: float, hi: float) -> torch.Tensor:
    c = torch.as_tensor(centers, dtype=torch.float32).clamp(lo, hi)
    w = torch.as_tensor(counts, dtype=torch.float64)
    if float(w.sum()) <= 0:
        return c[:0]
    g = torch.Generator().manual_seed(0)
    idx = torch.multinomial(w / w.sum(), ACT_SAMPLES, replacement=True, generator=g)
    return c[idx]


def activation_error(centers, counts, p: FormatParams, lo: float, hi: float):
    """(SQNR dB, MSE, clipped fraction, quantized values, weights) of an activation in a format.

    FP8: exact over the histogram's bin centres (as :func:`.quantize.histogram_error`);
    block formats: an estimate from values drawn from the histogram, grouped into blocks.
    """
    fmt = p.fmt
    if fmt.is_block:
        v = _samples(centers, counts, lo, hi)
        wts = torch.ones(v.numel(), dtype=torch.float64)
        if not v.numel():
            return float("inf"), 0.0, 0.0, v, wts
        q, bp = quantize_blocks(v.view(1, -1), fmt, p.tensor_scale)
        q = q.flatten()
        hi_el = bp.hi.view(1, -1).repeat_interleave(fmt.block, dim=1)[0, :v.numel()]
        clipped = float((v.abs() > hi_el * (1 + 1e-6)).double().mean())
    else:
        v = torch.as_tensor(centers, dtype=torch.float32).clamp(lo, hi)
        wts = torch.as_tensor(counts, dtype=torch.float64)
        s = float(p.scale[0])
        q = quantize_scaled(v, torch.tensor(s), fmt.element)
        clipped = float(wts[v.abs() > s * fmt.element.max * (1 + 1e-6)].sum() / max(float(wts.sum()), 1e-300))
    noise = float((wts * (v.double() - q.double()) ** 2).sum())
    signal = float((wts * v.double() ** 2).sum())
    total = float(wts.sum())
    return sqnr_db(signal, noise), (noise / total if total else 0.0), clipped, q, wts


def format_of(spec) -> Format | None:
    return FORMATS.get(getattr(spec, "format", "int"))


__all__ = ["quantize_weight_format", "activation_params", "fake_quantize_activation", "activation_error",
           "activation_axis", "format_of"]
