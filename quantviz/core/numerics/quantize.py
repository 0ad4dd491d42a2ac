"""The one quantize / clip / error kernel that the simulation and the live preview share.

:func:`quantize_weight_tensor` turns a float weight and a :class:`WeightSpec`
into its fake-quantized tensor, qparams, clipped fraction, SQNR and MSE;
:class:`~.fakequant.QuantSim` caches its results per spec and
:mod:`.preview` calls it for a dragged clip range, so both report the same
numbers by construction. :func:`histogram_error` is the same for a tensor
known only through a histogram (activations from calibration).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .qparams import QParams, clipped_fraction, compute_qparams, fake_quantize
from .ranges import RangeError, group_matrix, weight_range
from .spec import WeightSpec
from .sqnr import sqnr_db


@dataclass
class TensorQuant:
    tensor: torch.Tensor  # fake-quantized, float32, the weight's shape
    qparams: QParams  # or formats.FormatParams for a float / block format
    matrix: torch.Tensor  # the float weight grouped as the grid sees it: one row per group
    lo: torch.Tensor  # clip range per group
    hi: torch.Tensor
    sqnr_db: float
    mse: float
    clipped_fraction: float


def quantize_weight_tensor(w: torch.Tensor, spec: WeightSpec, channel_axis: int, name: str = "") -> TensorQuant:
    """Quantize ``w`` (float32, CPU) under ``spec`` (bits must be set)."""
    if spec.format != "int":  # FP8 / MX / NVFP4 (quantviz.core.numerics.formats)
        from .format_quant import quantize_weight_format

        return TensorQuant(*quantize_weight_format(w, spec, channel_axis, name))
    gs = spec.effective_group_size()
    try:
        m = group_matrix(w, spec.granularity, channel_axis, gs)
        lo, hi = weight_range(m, spec.range, spec.bits, spec.symmetric, spec.grid)
    except RangeError as exc:
        raise RangeError(f"layer {name}: {exc}" if name else str(exc)) from exc
    qp = compute_qparams(lo, hi, spec.bits, spec.symmetric, spec.grid)
    axis = None if spec.granularity == "per_tensor" else channel_axis
    wq = fake_quantize(w, qp, axis=axis, group_size=gs)
    # float32 dot products: exact enough for dB and MSE, without float64 copies
    d = (wq - w).flatten()
    noise, signal = float(torch.dot(d, d)), float(torch.dot(w.flatten(), w.flatten()))
    return TensorQuant(wq, qp, m, lo, hi, sqnr_db(signal, noise), noise / max(w.numel(), 1), clipped_fraction(m, qp))


def histogram_error(centers, counts, qp: QParams, lo: float | None = None, hi: float | None = None
                    ) -> tuple[float, float, float, torch.Tensor, torch.Tensor]:
    """(SQNR dB, MSE, clipped fraction, quantized centres, weights) of a per-tensor grid
    applied to values given as histogram bin centres (clamped to [lo, hi], the observed
    min / max) with their counts."""
    c = torch.as_tensor(centers, dtype=torch.float32)
    if lo is not None and hi is not None:
        c = c.clamp(lo, hi)
    wts = torch.as_tensor(counts, dtype=torch.float64)
    q = torch.fake_quantize_per_tensor_affine(c, float(qp.scale[0]), int(qp.zero_point[0]), qp.qmin, qp.qmax)
    noise = float((wts * (c.double() - q.double()) ** 2).sum())
    signal = float((wts * c.double() ** 2).sum())
    total = float(wts.sum())
    gmin, gmax = qp.grid_range()
    tol = float(qp.scale[0]) * 1e-3  # as qparams.clipped_fraction counts
    outside = (c < float(gmin[0]) - tol) | (c > float(gmax[0]) + tol)
    clipped = float(wts[outside].sum()) / total if total else 0.0
    sqnr = sqnr_db(signal, noise)
    return sqnr, (noise / total if total else 0.0), clipped, q, wts


__all__ = ["TensorQuant", "quantize_weight_tensor", "histogram_error"]
