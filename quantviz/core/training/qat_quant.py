"""Trainable fake quantizers for quantization-aware training (:mod:`.qat`).

Both quantizers use the grids of :mod:`.qparams` and the ranges of
:mod:`.ranges`, so a trained model quantizes exactly as :class:`~.fakequant.QuantSim`
simulates it:

* :class:`WeightQuantizer` is a parametrization of a layer's ``weight``
  (every granularity: per tensor, per channel, per group). Frozen mode: the
  grid follows the config's range rule on the *current* weight at every step
  (what the simulation computes from the trained weight afterwards), through
  torch's ``fake_quantize_per_*_affine`` kernels, whose gradient is the
  clipped straight-through estimator. LSQ mode (Esser et al. 2020): one
  learned scale per quantization group, initialised from the calibrated
  range, with LSQ's gradient scale ``1 / sqrt(n * qmax)``.
* :class:`ActQuantizer` fake-quantizes a layer's input (per tensor, as the
  simulation does) with the frozen calibrated qparams or a learned scale.

The zero point of an asymmetric grid stays at its calibrated value.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..numerics.qparams import QParams, compute_qparams, qrange
from ..numerics.ranges import group_matrix, weight_range
from ..numerics.spec import ActSpec, WeightSpec


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round to nearest even with the identity as its gradient."""
    return (torch.round(x) - x).detach() + x


def grad_scaled(s: torch.Tensor, g: float) -> torch.Tensor:
    """``s`` in the forward pass, its gradient multiplied by ``g`` (LSQ)."""
    return (s - s * g).detach() + s * g


def lsq_fake_quant(m: torch.Tensor, s: torch.Tensor, z: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """``(clamp(round(m / s) + z) - z) * s`` row-wise; gradients to ``m`` (clipped STE) and ``s`` (LSQ)."""
    q = torch.clamp(round_ste(m / s + z), qmin, qmax)
    return (q - z) * s


class WeightQuantizer(nn.Module):
    """A ``weight`` parametrization: returns the fake-quantized weight."""

    def __init__(self, w0: torch.Tensor, spec: WeightSpec, axis: int, *, lsq: bool = False):
        super().__init__()
        self.spec, self.axis, self.lsq = spec, int(axis), bool(lsq)
        self.granularity = spec.granularity
        self.gs = spec.effective_group_size()
        self.qmin, self.qmax = qrange(spec.bits, spec.symmetric, spec.grid)
        qp = self.qparams_of(w0.detach())
        self.register_buffer("zp", qp.zero_point.float())
        self.register_buffer("scale0", qp.scale.detach().clone())
        if self.lsq:
            self.scale = nn.Parameter(qp.scale.detach().clone())
        self.register_buffer("codes0", self.codes(w0.detach(), qp.scale).to(torch.int32))
        n = w0.numel() // max(qp.scale.numel(), 1)
        self.grad_factor = 1.0 / math.sqrt(max(n, 1) * max(self.qmax, 1))

    # -------------------------------------------------------- grouping
    def rows(self, w: torch.Tensor) -> torch.Tensor:
        """``w`` as one row per quantization group (zero padded; differentiable)."""
        if self.granularity == "per_tensor":
            return w.reshape(1, -1)
        r = w.movedim(self.axis, 0).reshape(w.shape[self.axis], -1)
        if self.gs is None:
            return r
        pad = (-r.shape[1]) % self.gs
        if pad:
            r = nn.functional.pad(r, (0, pad))
        return r.reshape(-1, self.gs)

    def unrows(self, m: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if self.granularity == "per_tensor":
            return m.reshape(like.shape)
        moved = like.movedim(self.axis, 0).shape
        c = moved[0]
        n = like.numel() // c
        return m.reshape(c, -1)[:, :n].reshape(moved).movedim(0, self.axis)

    # ---------------------------------------------------------- qparams
    def qparams_of(self, w: torch.Tensor) -> QParams:
        """The simulation's qparams of ``w`` under the config's range rule."""
        m = group_matrix(w.detach().float().cpu(), self.granularity, self.axis, self.gs)
        lo, hi = weight_range(m, self.spec.range, self.spec.bits, self.spec.symmetric, self.spec.grid)
        return compute_qparams(lo, hi, self.spec.bits, self.spec.symmetric, self.spec.grid)

    def current_scale(self, w: torch.Tensor) -> torch.Tensor:
        if self.lsq:
            return self.scale.detach().abs().clamp_min(1e-12)
        return self.qparams_of(w).scale.to(w.device)

    def current_zp(self, w: torch.Tensor) -> torch.Tensor:
        if self.lsq:
            return self.zp
        return self.qparams_of(w).zero_point.float().to(w.device)

    @torch.no_grad()
    def codes(self, w: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor | None = None) -> torch.Tensor:
        """Integer codes of ``w`` (the weight's shape)."""
        z = (self.zp if zp is None else zp).view(-1, 1)
        m = self.rows(w.float())
        q = torch.clamp(torch.round(m / scale.view(-1, 1).to(m) + z), self.qmin, self.qmax)
        return self.unrows(q, w)

    @torch.no_grad()
    def stats(self, w: torch.Tensor) -> dict:
        """Mean scale, its mean relative distance from the start, the fraction of
        codes changed since the start and the clipped fraction, for ``w`` now."""
        s = self.current_scale(w)
        z = self.current_zp(w)
        codes = self.codes(w, s, z)
        m = self.rows(w.float())
        lo = (self.qmin - z.view(-1, 1)) * s.view(-1, 1)
        hi = (self.qmax - z.view(-1, 1)) * s.view(-1, 1)
        tol = s.view(-1, 1) * 1e-3
        clipped = self.unrows(((m < lo - tol) | (m > hi + tol)).float(), w)
        return {"scale": float(s.mean()), "dist": float(((s - self.scale0) / self.scale0).abs().mean()),
                "changed": float((codes != self.codes0).float().mean()), "clipped": float(clipped.mean()),
                "lo": float(lo.mean()), "hi": float(hi.mean())}

    # ---------------------------------------------------------- forward
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.lsq:
            s = grad_scaled(self.scale, self.grad_factor).abs().clamp_min(1e-12).view(-1, 1)
            return self.unrows(lsq_fake_quant(self.rows(w), s, self.zp.view(-1, 1), self.qmin, self.qmax), w)
        qp = self.qparams_of(w)
        s, z = qp.scale.to(w.device), qp.zero_point.to(w.device)
        if self.granularity == "per_tensor":
            return torch.fake_quantize_per_tensor_affine(w, float(s[0]), int(z[0]), self.qmin, self.qmax)
        m = self.rows(w).contiguous()
        out = torch.fake_quantize_per_channel_affine(m, s, z.int(), 0, self.qmin, self.qmax)
        return self.unrows(out, w)

    @torch.no_grad()
    def baked(self, w: torch.Tensor) -> torch.Tensor:
        """The trained float weight to keep: LSQ's learned range is applied as a clip
        (so the simulation's min-max range of the kept weight is the learned one
        wherever training clipped); frozen mode keeps ``w`` as is."""
        if not self.lsq:
            return w.detach().clone()
        s = self.current_scale(w).view(-1, 1)
        z = self.zp.view(-1, 1)
        m = self.rows(w.float())
        return self.unrows(torch.maximum(torch.minimum(m, (self.qmax - z) * s), (self.qmin - z) * s), w).to(w.dtype)

    def learned_range(self) -> tuple[float, float] | None:
        """Per-tensor LSQ: the clip range whose qparams (config rule) give the learned scale."""
        if not self.lsq or self.granularity != "per_tensor":
            return None
        return range_for_scale(float(self.current_scale(self.scale)[0]), float(self.zp[0]), self.qmin, self.qmax,
                               self.spec.symmetric, self.spec.grid)


def range_for_scale(s: float, z: float, qmin: int, qmax: int, symmetric: bool, grid: str) -> tuple[float, float]:
    """A manual clip range ``[lo, hi]`` that :func:`~.qparams.compute_qparams` maps back to scale ``s``."""
    if not symmetric:
        return (qmin - z) * s, (qmax - z) * s
    if grid == "full":
        return qmin * s, qmax * s
    amax = s * ((qmax - qmin) / 2 if grid == "torch" else qmax)
    return -amax, amax


class ActQuantizer(nn.Module):
    """Fake quantization of a layer's input (per tensor)."""

    def __init__(self, qp: QParams, spec: ActSpec, *, lsq: bool = False):
        super().__init__()
        self.spec, self.lsq = spec, bool(lsq)
        self.qmin, self.qmax = qp.qmin, qp.qmax
        self.z = float(qp.zero_point[0])
        self.s0 = float(qp.scale[0])
        if self.lsq:
            self.scale = nn.Parameter(qp.scale[:1].detach().clone().float())
        self.grad_factor: float | None = None  # LSQ: 1 / sqrt(features * qmax), set on the first batch
        self.record = False
        self.clipped = 0.0

    def current_scale(self) -> float:
        return abs(float(self.scale[0])) if self.lsq else self.s0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.record:
            s = self.current_scale()
            lo, hi = (self.qmin - self.z) * s, (self.qmax - self.z) * s
            self.clipped = float(((x < lo) | (x > hi)).float().mean())
        if not self.lsq:
            return torch.fake_quantize_per_tensor_affine(x, self.s0, int(self.z), self.qmin, self.qmax)
        if self.grad_factor is None:
            self.grad_factor = 1.0 / math.sqrt(max(x[0].numel(), 1) * max(self.qmax, 1))
        s = grad_scaled(self.scale, self.grad_factor).abs().clamp_min(1e-12)
        z = torch.tensor(self.z, dtype=x.dtype, device=x.device)
        return lsq_fake_quant(x, s.to(x.dtype), z, self.qmin, self.qmax)

    def stats(self) -> dict:
        s = self.current_scale()
        return {"scale": s, "dist": abs(s - self.s0) / self.s0 if self.s0 else 0.0, "clipped": self.clipped,
                "lo": (self.qmin - self.z) * s, "hi": (self.qmax - self.z) * s}

    def learned_range(self) -> tuple[float, float]:
        return range_for_scale(self.current_scale(), self.z, self.qmin, self.qmax, self.spec.symmetric, self.spec.grid)


__all__ = ["WeightQuantizer", "ActQuantizer", "range_for_scale", "round_ste", "lsq_fake_quant"]
