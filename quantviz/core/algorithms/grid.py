"""The integer grid of a weight as ``(out, in)`` matrices, for the algorithms.

A Linear or convolution weight is handled as the matrix ``W`` of shape
``(out, in)`` (a conv's ``C_in x kh x kw`` flattened, the order of
``F.unfold``). Per-channel scales are rows, per-group scales cover
``group_size`` consecutive columns of a row (quantviz's group layout), a
per-tensor scale covers everything. :class:`Grid` expands the scales and
zero points to full matrices so that rounding, clamping and dequantizing are
elementwise and computed exactly as ``torch.fake_quantize_per_*_affine``
(``x * (1/s)``, round half to even, clamp, ``(q - z) * s``).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..numerics.qparams import QParams, compute_qparams
from ..numerics.ranges import group_matrix, weight_range
from ..numerics.spec import WeightSpec
from ..numerics.sqnr import sqnr_db


def qparams_for(m: torch.Tensor, spec: WeightSpec) -> QParams:
    """QParams of the rows of ``m`` (one group per row) under ``spec``'s range rule."""
    rule = (getattr(spec, "grid", None),) if getattr(spec, "grid", None) else ()  # the symmetric grid rule
    lo, hi = weight_range(m, spec.range, spec.bits, spec.symmetric, *rule)
    return compute_qparams(lo, hi, spec.bits, spec.symmetric, *rule)


def expand(v: torch.Tensor, out: int, n: int, granularity: str, group_size: int | None) -> torch.Tensor:
    """Per-group values -> an ``(out, n)`` matrix."""
    v = v.flatten()
    if granularity == "per_tensor":
        return v[:1].view(1, 1).expand(out, n)
    if granularity == "per_channel":
        return v.view(out, 1).expand(out, n)
    ng = v.numel() // out
    return v.view(out, ng).repeat_interleave(group_size, dim=1)[:, :n]


@dataclass
class Grid:
    scale: torch.Tensor  # (out, in) float32
    inv: torch.Tensor  # float32 1/scale, as torch's kernels compute it
    zero: torch.Tensor  # (out, in) float32
    qmin: int
    qmax: int

    @classmethod
    def of(cls, qp: QParams, out: int, n: int, granularity: str, group_size: int | None) -> "Grid":
        s = expand(qp.scale.float(), out, n, granularity, group_size).contiguous()
        z = expand(qp.zero_point.float(), out, n, granularity, group_size).contiguous()
        return cls(s, torch.reciprocal(s), z, qp.qmin, qp.qmax)

    def nearest(self, w: torch.Tensor) -> torch.Tensor:
        """Integer codes (as float) of rounding ``w`` to nearest."""
        return torch.clamp(torch.round(w * self.inv) + self.zero, self.qmin, self.qmax)

    def dequant(self, codes: torch.Tensor) -> torch.Tensor:
        return (codes - self.zero) * self.scale


def weight_grid(w2: torch.Tensor, spec: WeightSpec) -> tuple[QParams, Grid]:
    """The min-max (or the spec's range rule) grid of the ``(out, in)`` matrix ``w2``."""
    gs = spec.effective_group_size()
    m = group_matrix(w2, spec.granularity, 0, gs)
    qp = qparams_for(m, spec)
    return qp, Grid.of(qp, w2.shape[0], w2.shape[1], spec.granularity, gs)


def with_values(qp: QParams, scale: torch.Tensor, zero: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> QParams:
    return replace(qp, scale=scale.flatten(), zero_point=zero.flatten().to(torch.int32), lo=lo.flatten(), hi=hi.flatten())


def output_sqnr_db(w: torch.Tensor, wq: torch.Tensor, stats) -> float:
    """SQNR of the layer's output (before bias) on the calibration data: the float layer on
    its float inputs ``f`` against the layer with weight ``wq`` on its simulated inputs ``x``,
    ``E||W f||^2 / E||W f - Wq x||^2``, from the input statistics alone."""
    w = w.to(torch.float64)
    q = wq.to(torch.float64)
    sig = float(((w @ stats.float_gram.double()) * w).sum())
    noise = sig - 2 * float(((w @ stats.cross.double()) * q).sum()) + float(((q @ stats.gram.double()) * q).sum())
    if 0 < noise <= sig * 1e-12:  # below float64 cancellation in the expanded sums: 120 dB
        noise = sig * 1e-12
    return sqnr_db(sig, noise)
