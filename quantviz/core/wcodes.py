"""Compact storage of fake-quantized weights: integer codes plus the qparams.

A fake-quantized weight holds only grid values ``(q - z) * s``; keeping ``q``
as int8 (int16 above 8 bits) takes a quarter (half) of the float32 bytes. The
weight cache of :class:`~quantviz.core.fakequant.QuantSim` stores a layer's
quantized weight this way when the full tensor does not fit its budget, and
decodes it when the layer runs. :func:`encode` checks that decoding gives the
tensor back bit for bit; a tensor that is not exactly on its grid is not
encoded (``None``).
"""
from __future__ import annotations

import torch

from .qparams import QParams


def _rows(t: torch.Tensor, axis: int | None, group_size: int | None) -> tuple[torch.Tensor, int]:
    """``t`` as (groups, n) rows in the qparams' order, and the padding added."""
    if axis is None:
        return t.reshape(1, -1), 0
    moved = t.movedim(axis, 0)
    rows = moved.reshape(moved.shape[0], -1)
    if group_size is None:
        return rows, 0
    pad = (-rows.shape[1]) % group_size
    if pad:
        rows = torch.nn.functional.pad(rows, (0, pad))
    return rows.reshape(-1, group_size), pad


def _unrows(rows: torch.Tensor, like_shape: tuple, axis: int | None, group_size: int | None, pad: int) -> torch.Tensor:
    if axis is None:
        return rows.reshape(like_shape)
    moved_shape = (like_shape[axis],) + tuple(s for i, s in enumerate(like_shape) if i != axis)
    r = rows.reshape(moved_shape[0], -1)
    if pad:
        r = r[:, : r.shape[1] - pad]
    return r.reshape(moved_shape).movedim(0, axis)


def _code_dtype(qp: QParams) -> torch.dtype:
    if qp.qmin >= -128 and qp.qmax <= 127:
        return torch.int8
    if qp.qmin >= 0 and qp.qmax <= 255:
        return torch.uint8
    return torch.int16 if qp.qmin >= -32768 and qp.qmax <= 32767 else torch.int32


class Codes:
    __slots__ = ("q", "qp", "axis", "group_size", "shape", "dtype", "device")

    def __init__(self, q, qp, axis, group_size, shape, dtype, device):
        self.q, self.qp, self.axis, self.group_size = q, qp, axis, group_size
        self.shape, self.dtype, self.device = shape, dtype, device

    @property
    def nbytes(self) -> int:
        return self.q.numel() * self.q.element_size()

    def decode(self) -> torch.Tensor:
        s = self.qp.scale.float().to(self.q.device).view(-1, 1)
        z = self.qp.zero_point.float().to(self.q.device).view(-1, 1)
        rows = (self.q.float() - z).mul_(s)
        pad = 0
        if self.axis is not None:  # padding columns per output channel (per-group rows)
            c = self.shape[self.axis]
            pad = rows.numel() // c - _numel(self.shape) // c
        out = _unrows(rows, self.shape, self.axis, self.group_size, pad)
        return out.to(device=self.device, dtype=self.dtype).contiguous()


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def encode(wq: torch.Tensor, qp: QParams, axis: int | None, group_size: int | None) -> Codes | None:
    """Integer codes of ``wq`` (a fake-quantized weight on ``qp``'s grid), or None if not exact."""
    rows, pad = _rows(wq.detach().float(), axis, group_size)
    s = qp.scale.float().to(rows.device).view(-1, 1)
    z = qp.zero_point.float().to(rows.device).view(-1, 1)
    if s.shape[0] != rows.shape[0]:
        return None
    q = torch.round(rows / s).add_(z).clamp_(qp.qmin, qp.qmax).to(_code_dtype(qp))
    codes = Codes(q, qp, axis, group_size, tuple(wq.shape), wq.dtype, wq.device)
    if not torch.equal(codes.decode(), wq):
        return None
    return codes


__all__ = ["Codes", "encode"]
