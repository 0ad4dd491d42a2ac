"""Compact storage of fake-quantized weights: integer codes plus the qparams.

A fake-quantized weight holds only grid values ``(q - z) * s``; keeping ``q``
as int8 (int16 above 8 bits) takes a quarter (half) of the float32 bytes. The
weight cache of :class:`~quantviz.core.sim.fakequant.QuantSim` stores a layer's
quantized weight this way when the full tensor does not fit its budget, and
decodes it when the layer runs. :func:`encode` checks that decoding gives the
tensor back bit for bit; a tensor that is not exactly on its grid is not
encoded (``None``).

:func:`quantize_codes` quantizes a large weight straight to codes, a block of
output channels at a time, so that no full-size float32 copy of the weight
(nor of its fake-quantized form) ever exists: for per-channel / per-group
grids whose range rule looks at each row alone, every block gives the same
qparams and codes as the whole tensor would. :meth:`Codes.decode` writes the
weight in its own dtype block by block for the same reason.
"""
from __future__ import annotations

import torch

from ..numerics.qparams import QParams


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
        if self.axis is None or self.q.numel() <= BLOCK_ELEMS:
            return self._decode_rows(0, self.q.shape[0], self.shape)
        # block by block into the weight's own dtype: no float32 copy of the whole weight
        c = self.shape[self.axis]
        rpc = self.q.shape[0] // c  # code rows per output channel
        out = torch.empty(self.shape, dtype=self.dtype, device=self.device)
        moved = out.movedim(self.axis, 0)
        step = max(1, BLOCK_ELEMS // max(1, self.q[0].numel() * rpc))
        for a in range(0, c, step):
            b = min(c, a + step)
            block_shape = (b - a,) + tuple(moved.shape[1:])
            moved[a:b].copy_(self._decode_rows(a * rpc, b * rpc, block_shape, moved_first=True))
        return out

    def take(self, ids: torch.Tensor) -> torch.Tensor:
        """``decode()[ids]`` (rows of the first axis: an embedding lookup) without decoding the rest;
        the same values bit for bit. Only for codes along axis 0 or per tensor."""
        c = self.shape[0]
        flat = ids.reshape(-1).to(self.q.device)
        if self.axis is None:
            s = self.qp.scale.float().to(self.q.device)[:1]
            z = self.qp.zero_point.float().to(self.q.device)[:1]
            rows = (self.q.view(c, -1)[flat].float() - z).mul_(s)
        else:
            rpc = self.q.shape[0] // c
            s = self.qp.scale.float().to(self.q.device).view(c, rpc, 1)[flat]
            z = self.qp.zero_point.float().to(self.q.device).view(c, rpc, 1)[flat]
            rows = (self.q.view(c, rpc, -1)[flat].float() - z).mul_(s)
            rows = rows.reshape(flat.numel(), -1)[:, : _numel(self.shape[1:])]
        out = rows.reshape((flat.numel(),) + tuple(self.shape[1:])).to(device=self.device, dtype=self.dtype)
        return out.reshape(tuple(ids.shape) + tuple(self.shape[1:]))

    def _decode_rows(self, r0: int, r1: int, shape: tuple, moved_first: bool = False) -> torch.Tensor:
        """Rows ``r0:r1`` of the codes decoded to ``shape`` (the weight, or a block of its channels
        with the channel axis first when ``moved_first``)."""
        s = self.qp.scale.float().to(self.q.device)[r0:r1].view(-1, 1)
        z = self.qp.zero_point.float().to(self.q.device)[r0:r1].view(-1, 1)
        rows = (self.q[r0:r1].float() - z).mul_(s)
        axis = 0 if moved_first else self.axis
        pad = 0
        if axis is not None:  # padding columns per output channel (per-group rows)
            c = shape[axis]
            pad = rows.numel() // c - _numel(shape) // c
        out = _unrows(rows, shape, axis, self.group_size, pad)
        return out.to(device=self.device, dtype=self.dtype).contiguous()


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def encode(wq: torch.Tensor, qp: QParams, axis: int | None, group_size: int | None) -> Codes | None:
    """Integer codes of ``wq`` (a fake-quantized weight on ``qp``'s grid), or None if not exact."""
    rows, pad = _rows(wq.detach(), axis, group_size)  # in the weight's dtype (a view where it can be)
    s = qp.scale.float().to(rows.device).view(-1, 1)
    z = qp.zero_point.float().to(rows.device).view(-1, 1)
    if s.shape[0] != rows.shape[0]:
        return None
    # a block of rows (or, per tensor, of columns) at a time: no float32 copy of a big weight
    q = torch.empty(rows.shape, dtype=_code_dtype(qp), device=rows.device)
    if rows.shape[0] == 1:
        step = BLOCK_ELEMS
        for a in range(0, rows.shape[1], step):
            q[:, a:a + step] = torch.round(rows[:, a:a + step].float() / s).add_(z).clamp_(qp.qmin, qp.qmax)
    else:
        step = max(1, BLOCK_ELEMS // max(1, rows.shape[1]))
        for a in range(0, rows.shape[0], step):
            b = min(rows.shape[0], a + step)
            q[a:b] = torch.round(rows[a:b].float() / s[a:b]).add_(z[a:b]).clamp_(qp.qmin, qp.qmax)
    codes = Codes(q, qp, axis, group_size, tuple(wq.shape), wq.dtype, wq.device)
    if not torch.equal(codes.decode(), wq):
        return None
    return codes


# a block of this many elements (16 MB of float32) is quantized / decoded at a time
BLOCK_ELEMS = 1 << 22
# range rules that look at each row (group) of the weight alone: blocks of rows give the whole's result
ROW_LOCAL_RANGES = ("minmax", "percentile", "mse")


def blockable(spec, numel: int) -> bool:
    """Can :func:`quantize_codes` quantize a weight of ``numel`` elements under ``spec`` block-wise?"""
    return (numel > BLOCK_ELEMS and spec.format == "int" and spec.algorithm == "none"
            and spec.granularity in ("per_channel", "per_group") and spec.range.method in ROW_LOCAL_RANGES)


def quantize_codes(w: torch.Tensor, spec, axis: int, name: str = ""):
    """Quantize ``w`` (any float dtype) under ``spec`` a block of channels at a time, straight to codes.

    Returns ``(codes, qparams, sqnr_db, mse, clipped_fraction)`` -- the same codes and qparams as
    quantizing the whole tensor, decoding to ``quantize_weight_tensor(w.float()).tensor`` cast to
    ``w``'s dtype -- or None when a block's fake-quantized values are not exactly encodable (the
    caller then quantizes the whole tensor). Only for :func:`blockable` specs."""
    from ..numerics.quantize import quantize_weight_tensor
    from ..numerics.sqnr import sqnr_db
    from ..numerics.qparams import QParams

    gs = spec.effective_group_size() if spec.granularity == "per_group" else None
    c = w.shape[axis]
    per = max(1, w.numel() // max(c, 1))
    step = max(2, BLOCK_ELEMS // per)  # at least two channels: a one-row block is a per-tensor case
    q = None
    parts: list[QParams] = []
    noise = signal = clipped = 0.0
    m_numel = 0
    row = 0
    bounds, a = [], 0
    while a < c:
        b = min(c, a + step)
        if c - b == 1:  # never leave a last block of one channel
            b = c
        bounds.append((a, b))
        a = b
    for a, b in bounds:
        n = b - a
        wb = w.detach().narrow(axis, a, n).float()
        tq = quantize_weight_tensor(wb, spec, axis, name)
        wq = tq.tensor.to(w.dtype)
        codes = encode(wq, tq.qparams, axis, gs)
        if codes is None:
            return None
        if q is None:
            rows_per_ch = codes.q.shape[0] // n
            q = torch.empty((c * rows_per_ch,) + tuple(codes.q.shape[1:]), dtype=codes.q.dtype, device=codes.q.device)
        q[row:row + codes.q.shape[0]].copy_(codes.q)
        row += codes.q.shape[0]
        parts.append(tq.qparams)
        d = (wq.float() - wb).flatten()
        noise += float(torch.dot(d, d))
        signal += float(torch.dot(wb.flatten(), wb.flatten()))
        clipped += tq.clipped_fraction * tq.matrix.numel()
        m_numel += tq.matrix.numel()
        del wb, tq, wq, codes, d
    p0 = parts[0]
    qp = QParams(scale=torch.cat([p.scale for p in parts]), zero_point=torch.cat([p.zero_point for p in parts]),
                 qmin=p0.qmin, qmax=p0.qmax, lo=torch.cat([p.lo for p in parts]), hi=torch.cat([p.hi for p in parts]),
                 bits=p0.bits, symmetric=p0.symmetric, grid=p0.grid)
    codes = Codes(q, qp, axis, gs, tuple(w.shape), w.dtype, w.device)
    return codes, qp, sqnr_db(signal, noise), noise / max(w.numel(), 1), clipped / max(m_numel, 1)


__all__ = ["BLOCK_ELEMS", "Codes", "blockable", "encode", "quantize_codes"]
