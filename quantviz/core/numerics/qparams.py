"""Integer grids, scale / zero-point computation and fake quantization.

Conventions follow torch's observers (``torch.ao.quantization.MinMaxObserver``)
and torchao's ``choose_qparams_affine``:

* a *symmetric* b-bit grid is signed with zero point 0; its ``grid`` rule
  (``lo' = min(lo, 0)``, ``hi' = max(hi, 0)``) is one of

  - ``"full"`` (default): ``[-2**(b-1), 2**(b-1) - 1]``,
    ``scale = max(hi' / qmax, lo' / qmin)``: both ends of the range are on
    the grid, nothing inside it is clipped (AIMET's rule; torchao's
    ``SYMMETRIC_NO_CLIPPING_ERR``);
  - ``"torch"``: ``[-2**(b-1), 2**(b-1) - 1]``,
    ``scale = max(|lo'|, hi') / ((qmax - qmin) / 2)`` (torch's observers,
    torchao's ``SYMMETRIC``): ``max(|lo|, |hi|)`` falls on a rounding tie at
    ``+-(qmax + 0.5)`` steps, so a positive extreme is clipped to ``qmax``;
  - ``"restricted"``: ``[-(2**(b-1) - 1), 2**(b-1) - 1]``,
    ``scale = max(|lo'|, hi') / qmax`` (many inference backends);
* an *asymmetric* b-bit grid is unsigned, ``[0, 2**b - 1]`` with
  ``scale = (hi' - lo') / (qmax - qmin)`` and
  ``zero_point = qmin - round(lo' / scale)`` clamped into the grid, where
  ``lo' = min(lo, 0)`` and ``hi' = max(hi, 0)`` so that 0 is exactly
  representable;
* scales are at least ``float32`` epsilon;
* rounding is round-half-to-even (``torch.round``) and values are clamped to
  ``[qmin, qmax]``; fake quantization is ``(clamp(round(x / s) + z) - z) * s``
  evaluated exactly as torch's ``fake_quantize_per_*_affine`` kernels do.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

EPS = float(torch.finfo(torch.float32).eps)

# Clip ranges are limited to +-RANGE_LIMIT so that the scale and every grid
# point stay finite in float32 even for ranges near float32's maximum.
RANGE_LIMIT = float(torch.finfo(torch.float32).max) / 4

MIN_BITS = 2
MAX_BITS = 16

GRIDS = ("full", "torch", "restricted")  # symmetric grid rules (see the module docstring)
DEFAULT_GRID = "full"


def qrange(bits: int, symmetric: bool, grid: str = DEFAULT_GRID) -> tuple[int, int]:
    """Return ``(qmin, qmax)`` of the integer grid for ``bits`` bits (``grid``: symmetric only)."""
    if not (MIN_BITS <= int(bits) <= MAX_BITS):
        raise ValueError(f"bits must be in {MIN_BITS}..{MAX_BITS}, got {bits}")
    if symmetric:
        if grid not in GRIDS:
            raise ValueError(f"unknown grid {grid!r} (allowed: {', '.join(GRIDS)})")
        half = 2 ** (bits - 1)
        return (-(half - 1) if grid == "restricted" else -half), half - 1
    return 0, 2**bits - 1


def symmetric_scale(lo_neg: torch.Tensor, hi_pos: torch.Tensor, qmin: int, qmax: int, grid: str) -> torch.Tensor:
    """The scale of a symmetric grid for ``lo_neg <= 0 <= hi_pos`` (any float dtype), before the EPS floor."""
    if grid == "full":
        return torch.maximum(hi_pos / float(qmax), lo_neg / float(qmin))
    amax = torch.maximum(-lo_neg, hi_pos)
    if grid == "torch":
        return amax / (float(qmax - qmin) / 2)
    if grid == "restricted":
        return amax / float(qmax)
    raise ValueError(f"unknown grid {grid!r} (allowed: {', '.join(GRIDS)})")


@dataclass
class QParams:
    """Quantization parameters of one tensor.

    ``scale`` and ``zero_point`` are 1-D tensors with one entry per
    quantization group (a single entry for per-tensor); ``lo`` / ``hi`` are the
    clip range each group was computed from.
    """

    scale: torch.Tensor
    zero_point: torch.Tensor
    qmin: int
    qmax: int
    lo: torch.Tensor
    hi: torch.Tensor
    bits: int
    symmetric: bool
    grid: str = DEFAULT_GRID  # the symmetric grid rule (meaningless when asymmetric)

    @property
    def groups(self) -> int:
        return int(self.scale.numel())

    def grid_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The float values of the lowest and highest grid points per group."""
        return ((self.qmin - self.zero_point) * self.scale, (self.qmax - self.zero_point) * self.scale)

    def to_dict(self) -> dict:
        return {
            "bits": self.bits,
            "symmetric": self.symmetric,
            **({"grid": self.grid} if self.symmetric else {}),
            "qmin": self.qmin,
            "qmax": self.qmax,
            "scale": [float(v) for v in self.scale.flatten()],
            "zero_point": [int(v) for v in self.zero_point.flatten()],
            "min": [float(v) for v in self.lo.flatten()],
            "max": [float(v) for v in self.hi.flatten()],
        }


def compute_qparams(lo: torch.Tensor | float, hi: torch.Tensor | float, bits: int, symmetric: bool,
                    grid: str = DEFAULT_GRID) -> QParams:
    """Scale and zero point from a clip range (``grid="torch"``: exactly as torch's min-max observers do)."""
    lo_t = torch.as_tensor(lo, dtype=torch.float32).flatten()
    hi_t = torch.as_tensor(hi, dtype=torch.float32).flatten()
    lo_t = torch.nan_to_num(lo_t, nan=0.0, posinf=0.0, neginf=0.0).clamp(-RANGE_LIMIT, RANGE_LIMIT)
    hi_t = torch.nan_to_num(hi_t, nan=0.0, posinf=0.0, neginf=0.0).clamp(-RANGE_LIMIT, RANGE_LIMIT)
    hi_t = torch.maximum(hi_t, lo_t)
    qmin, qmax = qrange(bits, symmetric, grid)
    lo_neg = torch.clamp(lo_t, max=0.0)
    hi_pos = torch.clamp(hi_t, min=0.0)
    if symmetric:
        scale = torch.clamp(symmetric_scale(lo_neg, hi_pos, qmin, qmax, grid), min=EPS)
        zp = torch.zeros_like(scale, dtype=torch.int32)
    else:
        scale = (hi_pos - lo_neg) / float(qmax - qmin)
        scale = torch.clamp(scale, min=EPS)
        zp = qmin - torch.round(lo_neg / scale)
        zp = torch.clamp(zp, qmin, qmax).to(torch.int32)
    return QParams(scale=scale, zero_point=zp, qmin=qmin, qmax=qmax, lo=lo_t, hi=hi_t, bits=int(bits), symmetric=bool(symmetric),
                   grid=str(grid) if symmetric else DEFAULT_GRID)


def clipped_fraction(m: torch.Tensor, qp: QParams) -> float:
    """Fraction of the values of ``m`` (one row per group of ``qp``) beyond the grid's end points.

    A value counts when it lies more than 1/1000 of a step outside: a range end that
    the grid represents (the ``full`` rule puts it on ``qmin`` or ``qmax``) is not
    counted because of the last bit of float rounding in ``qmax * (hi / qmax)``.
    """
    glo, ghi = qp.grid_range()
    tol = qp.scale * 1e-3
    m2 = m.reshape(qp.groups, -1)
    out = (m2 < (glo - tol).view(-1, 1)) | (m2 > (ghi + tol).view(-1, 1))
    return float(out.float().mean()) if m2.numel() else 0.0


def spec_qparams(lo, hi, spec) -> QParams:
    """:func:`compute_qparams` with a ``WeightSpec`` / ``ActSpec``'s bits, symmetry and grid."""
    return compute_qparams(lo, hi, spec.bits, spec.symmetric, spec.grid)


def fake_quantize(x: torch.Tensor, qp: QParams, axis: int | None = None, group_size: int | None = None) -> torch.Tensor:
    """Quantize and dequantize ``x`` on the grid of ``qp``.

    ``axis`` selects per-channel quantization along that axis; ``group_size``
    (with ``axis``) splits every channel's remaining elements, flattened in
    row-major order after moving ``axis`` first, into groups of that size.
    """
    x = x.detach().float()
    if axis is None:
        return torch.fake_quantize_per_tensor_affine(
            x, float(qp.scale[0]), int(qp.zero_point[0]), qp.qmin, qp.qmax
        )
    if group_size is None:
        return torch.fake_quantize_per_channel_affine(
            x.contiguous(), qp.scale, qp.zero_point, axis, qp.qmin, qp.qmax
        )
    moved = x.movedim(axis, 0)
    shape = moved.shape
    grouped = moved.reshape(shape[0], -1)
    n = grouped.shape[1]
    pad = (-n) % group_size
    if pad:
        grouped = torch.nn.functional.pad(grouped, (0, pad))
    flat = grouped.reshape(-1, group_size).contiguous()
    out = torch.fake_quantize_per_channel_affine(flat, qp.scale, qp.zero_point, 0, qp.qmin, qp.qmax)
    out = out.reshape(shape[0], -1)[:, :n].reshape(shape).movedim(0, axis)
    return out.contiguous()


def quantize_int(x: torch.Tensor, qp: QParams, axis: int | None = None, group_size: int | None = None) -> torch.Tensor:
    """The integer codes (int64) that :func:`fake_quantize` would dequantize."""
    x = x.detach().float()
    if axis is None:
        s, z = qp.scale[0], qp.zero_point[0].float()
        return torch.clamp(torch.round(x * (1.0 / s)) + z, qp.qmin, qp.qmax).long()
    moved = x.movedim(axis, 0)
    shape = moved.shape
    if group_size is None:
        view = moved.reshape(shape[0], -1)
        s = qp.scale.view(-1, 1)
        z = qp.zero_point.view(-1, 1).float()
        q = torch.clamp(torch.round(view * (1.0 / s)) + z, qp.qmin, qp.qmax)
        return q.reshape(shape).movedim(0, axis).long()
    grouped = moved.reshape(shape[0], -1)
    n = grouped.shape[1]
    pad = (-n) % group_size
    if pad:
        grouped = torch.nn.functional.pad(grouped, (0, pad))
    flat = grouped.reshape(-1, group_size)
    q = torch.clamp(torch.round(flat * (1.0 / qp.scale.view(-1, 1))) + qp.zero_point.view(-1, 1).float(), qp.qmin, qp.qmax)
    return q.reshape(shape[0], -1)[:, :n].reshape(shape).movedim(0, axis).long()


