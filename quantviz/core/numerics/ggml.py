"""llama.cpp's (ggml's) weight types, simulated exactly: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K.

Each type stores a row of weights in blocks (32 values for the legacy types,
256-value *super-blocks* for the K-quants) with FP16 scales (and minima), and
small integer codes:

======= ===== ====== ============================================================ =======
type    block bytes  per block                                                    bits/w
======= ===== ====== ============================================================ =======
Q8_0      32     34  FP16 d, 32 int8 codes; w = d * q                                8.5
Q4_0      32     18  FP16 d, 4-bit q in [0, 15]; w = d * (q - 8)                     4.5
Q4_1      32     20  FP16 d, FP16 m, 4-bit q; w = d * q + m                          5.0
Q5_0      32     22  FP16 d, 5-bit q; w = d * (q - 16)                               5.5
Q5_1      32     24  FP16 d, FP16 m, 5-bit q; w = d * q + m                          6.0
Q2_K     256     84  FP16 d, dmin; 16 sub-blocks of 16 with 4-bit scale and min;     2.625
                     2-bit q; w = d*sc * q - dmin*m
Q3_K     256    110  FP16 d; 16 sub-blocks of 16 with 6-bit signed scale; 3-bit q;   3.4375
                     w = d*(sc - 32) * (q - 4)
Q4_K     256    144  FP16 d, dmin; 8 sub-blocks of 32 with 6-bit scale and min;      4.5
                     4-bit q; w = d*sc * q - dmin*m
Q5_K     256    176  as Q4_K with 5-bit q                                            5.5
Q6_K     256    210  FP16 d; 16 sub-blocks of 16 with int8 scale; 6-bit q;           6.5625
                     w = d*sc * (q - 32)
======= ===== ====== ============================================================ =======

The codes are chosen as llama.cpp's CPU reference quantizer chooses them
without an importance matrix (``quantize_row_*_ref`` in ``ggml-quants.c``,
which ``llama-quantize`` runs when it is given no imatrix): the legacy types
round from the block's extreme value; the K-quants search each sub-block's
scale (and minimum) over a fixed set of trial scales by weighted least squares,
quantize the sub-block scales to 4, 6 or 8 bits under the super-block's FP16
scale, and round every weight again under its quantized scale. The arithmetic
here is float32, operation for operation in the reference's order (the
reference's running sums are sequential float32 sums, so they are summed
position by position here), so the codes and the FP16 scales are bit-equal;
``dequantize`` computes the weights as ggml's dequantizers do. Everything is
vectorised over all blocks of a tensor (loops run over the positions inside a
block and the trial scales, never over blocks).

Rows whose length is not a multiple of the block are zero-padded in the
simulation; llama.cpp cannot store such a row in that type (export refuses it).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

QK_K = 256


@dataclass(frozen=True)
class GGMLType:
    name: str  # llama.cpp's name, "Q4_K"
    block: int  # weights per block
    type_size: int  # bytes per block
    sub: int  # weights per scale (sub-block)
    qmin: int  # the codes' range, after the type's offset is taken off
    qmax: int
    affine: bool  # a minimum per (sub-)block (w = d*q - m) rather than a symmetric offset
    code_bits: int
    gguf_id: int  # GGMLQuantizationType value

    @property
    def bits_per_weight(self) -> float:
        return self.type_size * 8 / self.block

    @property
    def format_name(self) -> str:
        return self.name.lower()


GGML_TYPES: dict[str, GGMLType] = {t.format_name: t for t in (
    GGMLType("Q8_0", 32, 34, 32, -127, 127, False, 8, 8),
    GGMLType("Q4_0", 32, 18, 32, -8, 7, False, 4, 2),
    GGMLType("Q4_1", 32, 20, 32, 0, 15, True, 4, 3),
    GGMLType("Q5_0", 32, 22, 32, -16, 15, False, 5, 6),
    GGMLType("Q5_1", 32, 24, 32, 0, 31, True, 5, 7),
    GGMLType("Q2_K", QK_K, 84, 16, 0, 3, True, 2, 10),
    GGMLType("Q3_K", QK_K, 110, 16, -4, 3, False, 3, 11),
    GGMLType("Q4_K", QK_K, 144, 32, 0, 15, True, 4, 12),
    GGMLType("Q5_K", QK_K, 176, 32, 0, 31, True, 5, 13),
    GGMLType("Q6_K", QK_K, 210, 16, -32, 31, False, 6, 14),
)}
GGML_FORMAT_NAMES = tuple(GGML_TYPES)


def ggml_type(name: str) -> GGMLType:
    try:
        return GGML_TYPES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown llama.cpp type {name!r} (allowed: "
                         f"{', '.join(t.name for t in GGML_TYPES.values())})") from None


@dataclass
class GGMLQuant:
    """One tensor (rows, n) in a ggml type: the dequantized weights, the packed bytes
    (rows, blocks_per_row * type_size) and each sub-block's effective scale and offset
    (w = scale * q + offset for the codes q in [qmin, qmax])."""

    type: GGMLType
    deq: torch.Tensor
    packed: torch.Tensor
    scale: torch.Tensor  # (rows, sub-blocks per row) float32
    offset: torch.Tensor


# ------------------------------------------------------------------ arithmetic
def _f16(x: torch.Tensor) -> torch.Tensor:
    """GGML_FP32_TO_FP16 then back: round to nearest even FP16, as float32."""
    return x.half().float()


def _f16_bytes(x: torch.Tensor) -> torch.Tensor:
    return x.half().contiguous().view(torch.uint8).reshape(*x.shape, 2)


def _full(like: torch.Tensor, v: float) -> torch.Tensor:
    return torch.full_like(like, float(np.float32(v)))


def _recip_or_zero(d: torch.Tensor) -> torch.Tensor:
    """``d ? 1.0f/d : 0.0f``"""
    return torch.where(d != 0, torch.ones_like(d) / torch.where(d != 0, d, torch.ones_like(d)), torch.zeros_like(d))


def _nearest(v: torch.Tensor) -> torch.Tensor:
    """ggml's nearest_int: round half to even, as int32."""
    return torch.round(v).to(torch.int32)


def _roundf(v: torch.Tensor) -> torch.Tensor:
    """C roundf: half away from zero."""
    r = torch.trunc(v)
    return r + torch.where((v - r).abs() >= 0.5, torch.sign(v), torch.zeros_like(v))


def _seqsum(t: torch.Tensor, start: torch.Tensor | None = None) -> torch.Tensor:
    """A float32 running sum along the last axis, in order (what a C loop ``s += t[i]`` gives)."""
    acc = torch.zeros(t.shape[:-1], dtype=torch.float32) if start is None else start.clone()
    for i in range(t.shape[-1]):
        acc = acc + t[..., i]
    return acc


def _first_absmax(x: torch.Tensor) -> torch.Tensor:
    """The value of largest magnitude along the last axis (the first of equals), keepdim; +0.0 for an
    all-zero row (the reference only takes a value of larger magnitude than 0, so -0.0 never)."""
    v = torch.gather(x, -1, x.abs().argmax(dim=-1, keepdim=True))
    return torch.where(v == 0, torch.zeros_like(v), v)


def _first_min(x: torch.Tensor) -> torch.Tensor:
    """``if (v < min) min = v`` along the last axis: the first of equal minima (-0.0 and 0.0 differ in sign)."""
    return torch.gather(x, -1, x.argmin(dim=-1, keepdim=True))


def _first_max(x: torch.Tensor) -> torch.Tensor:
    return torch.gather(x, -1, x.argmax(dim=-1, keepdim=True))


# ------------------------------------------------------------- legacy types
def _q8_0(x):
    amax = x.abs().amax(-1, keepdim=True)
    d = amax / _full(amax, 127)
    q = _roundf(x * _recip_or_zero(d))
    return q.to(torch.int32), d


def _q_0(x, half: int):  # Q4_0 (half=8), Q5_0 (half=16)
    mx = _first_absmax(x)
    d = mx / _full(mx, -half)
    v = x * _recip_or_zero(d) + _full(x, half + 0.5)
    q = torch.trunc(v).clamp(max=2 * half - 1).to(torch.int32)
    return q, d


def _q_1(x, nmax: int, clamp: bool):  # Q4_1 (15), Q5_1 (31)
    mn, mx = _first_min(x), _first_max(x)
    d = (mx - mn) / _full(mx, nmax)
    v = (x - mn) * _recip_or_zero(d) + _full(x, 0.5)
    q = torch.trunc(v)
    if clamp:
        q = q.clamp(max=nmax)
    return q.to(torch.int32), d, mn


# ---------------------------------------------------------------- K helpers
def _qkx2(x, w, nmax: int, rmin: float, rdelta: float, nstep: int, use_mad: bool):
    """make_qkx2_quants over rows of ``x`` (sub-blocks): (scale, the_min, L)."""
    mn, mx = _first_min(x), _first_max(x)
    sum_w = _seqsum(w[:, 1:], w[:, 0])
    sum_x = _seqsum((w * x)[:, 1:], w[:, 0] * x[:, 0])
    mn = torch.where(mn > 0, torch.zeros_like(mn), mn)
    flat = (mx == mn)
    rng = torch.where(flat, torch.ones_like(mx), mx - mn)
    iscale = _full(rng, nmax) / rng
    scale = torch.ones_like(iscale) / iscale
    L = _nearest(iscale * (x - mn)).clamp(0, nmax)

    def err(sc, m, lv):
        diff = (sc * lv.float() + m) - x
        diff = diff.abs() if use_mad else diff * diff
        return _seqsum(w * diff)

    best = err(scale, mn, L)
    scale = scale.squeeze(1)
    mn = mn.squeeze(1)
    for k in range(nstep + 1):
        num = np.float32(rmin) + np.float32(rdelta) * np.float32(k) + np.float32(nmax)
        cur_min = mn.unsqueeze(1)  # the reference's min moves to the best fit found so far
        rng_k = torch.where(flat, torch.ones_like(mx), mx - cur_min)
        isc = _full(rng_k, num) / rng_k
        La = _nearest(isc * (x - cur_min)).clamp(0, nmax)
        lf = La.float()
        wl = w * lf
        sum_l = _seqsum(wl)
        sum_l2 = _seqsum(wl * lf)
        sum_xl = _seqsum(wl * x)
        D = sum_w * sum_l2 - sum_l * sum_l
        ok = D > 0
        Ds = torch.where(ok, D, torch.ones_like(D))
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / Ds
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / Ds
        pos = this_min > 0
        l2s = torch.where(sum_l2 != 0, sum_l2, torch.ones_like(sum_l2))
        this_scale = torch.where(pos, sum_xl / l2s, this_scale)
        this_min = torch.where(pos, torch.zeros_like(this_min), this_min)
        cur = err(this_scale.unsqueeze(1), this_min.unsqueeze(1), La)
        take = ok & (cur < best) & ~flat.squeeze(1)
        L = torch.where(take.unsqueeze(1), La, L)
        best = torch.where(take, cur, best)
        scale = torch.where(take, this_scale, scale)
        mn = torch.where(take, this_min, mn)
    fl = flat.squeeze(1)
    L = torch.where(fl.unsqueeze(1), torch.zeros_like(L), L)
    scale = torch.where(fl, torch.zeros_like(scale), scale)
    return scale, -mn, L


def _qx(x, nmax: int):
    """make_qx_quants with rmse_type 1 (Q6_K): (scale, L as codes + nmax)."""
    mx = _first_absmax(x)
    amax = mx.abs()
    zero = (amax < 1e-15).squeeze(1)
    mxs = torch.where(amax < 1e-15, torch.ones_like(mx), mx)
    w = x * x

    def trial(isc):
        lv = _nearest(isc * x).clamp(-nmax, nmax - 1)
        lf = lv.float()
        return lv, _seqsum(w * x * lf), _seqsum(w * lf * lf)

    L, sumlx, suml2 = trial(_full(mxs, -nmax) / mxs)
    scale = torch.where(suml2 != 0, sumlx / torch.where(suml2 != 0, suml2, torch.ones_like(suml2)),
                        torch.zeros_like(suml2))
    best = scale * sumlx
    for k in range(-9, 10):
        if k == 0:
            continue
        num = -(np.float32(nmax) + np.float32(0.1) * np.float32(k))
        lv, slx, sl2 = trial(_full(mxs, num) / mxs)
        take = (sl2 > 0) & (slx * slx > best * sl2)
        L = torch.where(take.unsqueeze(1), lv, L)
        scale = torch.where(take, slx / torch.where(sl2 > 0, sl2, torch.ones_like(sl2)), scale)
        best = torch.where(take, scale * slx, best)
    L = torch.where(zero.unsqueeze(1), torch.full_like(L, -nmax), L)
    scale = torch.where(zero, torch.zeros_like(scale), scale)
    return scale, L + nmax


def _q3(x, nmax: int):
    """make_q3_quants with do_rmse (Q3_K): (scale, L as codes + nmax)."""
    n = x.shape[1]
    mx = _first_absmax(x)
    zero = (mx.abs() < 1e-15).squeeze(1)
    mxs = torch.where(mx.abs() < 1e-15, torch.ones_like(mx), mx)
    L = _nearest((_full(mxs, -nmax) / mxs) * x).clamp(-nmax, nmax - 1)
    w = x * x
    wx = w * x
    sumlx = _seqsum(wx * L.float())
    suml2 = _seqsum(w * L.float() * L.float())
    for _ in range(5):  # a pass without change leaves everything as it is: running all five is the same
        for i in range(n):
            li = L[:, i].float()
            slx = sumlx - wx[:, i] * li
            pos = slx > 0
            sl2 = suml2 - w[:, i] * li * li
            nl = _nearest(x[:, i] * sl2 / torch.where(pos, slx, torch.ones_like(slx))).clamp(-nmax, nmax - 1)
            nlf = nl.float()
            slx2 = slx + wx[:, i] * nlf
            sl22 = sl2 + w[:, i] * nlf * nlf
            take = pos & (nl != L[:, i]) & (sl22 > 0) & (slx2 * slx2 * suml2 > sumlx * sumlx * sl22)
            L[:, i] = torch.where(take, nl, L[:, i])
            sumlx = torch.where(take, slx2, sumlx)
            suml2 = torch.where(take, sl22, suml2)
    scale = torch.where(suml2 > 0, sumlx / torch.where(suml2 > 0, suml2, torch.ones_like(suml2)),
                        torch.zeros_like(suml2))
    L = torch.where(zero.unsqueeze(1), torch.full_like(L, -nmax), L)
    scale = torch.where(zero, torch.zeros_like(scale), scale)
    return scale, L + nmax


def _pos_max(v: torch.Tensor) -> torch.Tensor:
    """``m = 0; if (v > m) m = v`` over each row: +0.0 unless some value is positive (never -0.0)."""
    mx = v.amax(1, keepdim=True)
    return torch.where(mx > 0, mx, torch.zeros_like(mx))


def _u8(v: torch.Tensor) -> torch.Tensor:
    """C's conversion of an int to uint8_t (modulo 256)."""
    return torch.remainder(v, 256)


# ------------------------------------------------------------------ K types
def _q2_k(x):
    nb = x.shape[0]
    s = x.reshape(nb * 16, 16)
    scales, mins, L = _qkx2(s, s.abs(), 3, -0.5, 0.1, 15, True)
    scales, mins, L = scales.view(nb, 16), mins.view(nb, 16), L.view(nb, 16, 16)
    max_scale = _pos_max(scales)
    max_min = _pos_max(mins)
    has_s, has_m = max_scale > 0, max_min > 0
    ms = torch.where(has_s, max_scale, torch.ones_like(max_scale))
    mm = torch.where(has_m, max_min, torch.ones_like(max_min))
    ls = torch.where(has_s, _nearest((_full(ms, 15) / ms) * scales), torch.zeros_like(scales, dtype=torch.int32))
    lm = torch.where(has_m, _nearest((_full(mm, 15) / mm) * mins), torch.zeros_like(mins, dtype=torch.int32))
    sc_byte = _u8(_u8(ls) | (lm << 4))
    d = torch.where(has_s, _f16(max_scale / _full(ms, 15)), torch.zeros_like(max_scale))
    dmin = torch.where(has_m, _f16(max_min / _full(mm, 15)), torch.zeros_like(max_min))
    dl = d * (sc_byte & 0xF).float()
    ml = dmin * (sc_byte >> 4).float()
    dls = torch.where(dl != 0, dl, torch.ones_like(dl))
    Lr = _nearest((x.view(nb, 16, 16) + ml.unsqueeze(2)) / dls.unsqueeze(2)).clamp(0, 3)
    L = torch.where((dl != 0).unsqueeze(2), Lr, L).reshape(nb, QK_K)
    qs = torch.zeros(nb, 64, dtype=torch.int32)
    for j in range(0, QK_K, 128):
        qs[:, j // 4:j // 4 + 32] = (L[:, j:j + 32] | (L[:, j + 32:j + 64] << 2) | (L[:, j + 64:j + 96] << 4)
                                     | (L[:, j + 96:j + 128] << 6))
    packed = torch.cat([sc_byte.to(torch.uint8), qs.to(torch.uint8), _f16_bytes(d.squeeze(1)),
                        _f16_bytes(dmin.squeeze(1))], 1)
    deq = (dl.unsqueeze(2) * L.view(nb, 16, 16).float() - ml.unsqueeze(2)).reshape(nb, QK_K)
    return deq, packed, dl, -ml


def _q3_k(x):
    nb = x.shape[0]
    scales, L = _q3(x.reshape(nb * 16, 16), 4)
    scales, L = scales.view(nb, 16), L.view(nb, 16, 16)
    idx = scales.abs().argmax(1, keepdim=True)
    amax = scales.abs().amax(1, keepdim=True)
    max_scale = torch.where(amax > 0, torch.gather(scales, 1, idx), torch.zeros_like(amax))
    has = max_scale != 0
    msafe = torch.where(has, max_scale, torch.ones_like(max_scale))
    iscale = _full(msafe, -32) / msafe
    l = _nearest(iscale * scales).clamp(-32, 31) + 32  # int8_t conversion: the values fit
    l = torch.where(has, l, torch.zeros_like(l))  # memset 0, so sc = -32 below
    d = torch.where(has, _f16(torch.ones_like(iscale) / iscale), torch.zeros_like(iscale))
    sc = (l - 32).float()
    dl = d * sc
    dls = torch.where(dl != 0, dl, torch.ones_like(dl))
    Lr = _nearest(x.view(nb, 16, 16) / dls.unsqueeze(2)).clamp(-4, 3) + 4
    L = torch.where((dl != 0).unsqueeze(2), Lr, L).reshape(nb, QK_K)
    # scale bytes: low nibbles of 0..7 in bytes 0..7, of 8..15 in their high nibbles; top 2 bits in bytes 8..11
    sbytes = torch.zeros(nb, 12, dtype=torch.int32)
    sbytes[:, :8] = (l[:, :8] & 0xF) | ((l[:, 8:] & 0xF) << 4)
    hi = l >> 4
    for j in range(16):
        sbytes[:, 8 + j % 4] |= hi[:, j] << (2 * (j // 4))
    hbit = (L > 3).to(torch.int32)
    Llow = L - 4 * hbit
    hmask = torch.zeros(nb, 32, dtype=torch.int32)
    for b in range(8):
        hmask |= hbit[:, 32 * b:32 * b + 32] << b
    qs = torch.zeros(nb, 64, dtype=torch.int32)
    for j in range(0, QK_K, 128):
        qs[:, j // 4:j // 4 + 32] = (Llow[:, j:j + 32] | (Llow[:, j + 32:j + 64] << 2)
                                     | (Llow[:, j + 64:j + 96] << 4) | (Llow[:, j + 96:j + 128] << 6))
    packed = torch.cat([hmask.to(torch.uint8), qs.to(torch.uint8), sbytes.to(torch.uint8),
                        _f16_bytes(d.squeeze(1))], 1)
    deq = (dl.unsqueeze(2) * (L.view(nb, 16, 16) - 4).float()).reshape(nb, QK_K)
    return deq, packed, dl, torch.zeros_like(dl)


def _scale_min_k4(ls, lm):
    """Pack eight 6-bit scales and minima into Q4_K / Q5_K's 12 bytes."""
    nb = ls.shape[0]
    b = torch.zeros(nb, 12, dtype=torch.int32)
    b[:, 0:4] = ls[:, :4] | ((ls[:, 4:] >> 4) << 6)
    b[:, 4:8] = lm[:, :4] | ((lm[:, 4:] >> 4) << 6)
    b[:, 8:12] = (ls[:, 4:] & 0xF) | ((lm[:, 4:] & 0xF) << 4)
    return b


def _qk_affine(x, nmax: int, rmin: float, nstep: int):  # Q4_K (15, -1, 20), Q5_K (31, -0.5, 15)
    nb = x.shape[0]
    s = x.reshape(nb * 8, 32)
    av = torch.sqrt((_seqsum(s * s) / _full(s[:, 0], 32)).double()).float()  # sqrtf, correctly rounded
    # (torch's float32 sqrt is not: off by one ulp on some values)
    w = av.unsqueeze(1) + s.abs()
    scales, mins, L = _qkx2(s, w, nmax, rmin, 0.1, nstep, False)
    scales, mins, L = scales.view(nb, 8), mins.view(nb, 8), L.view(nb, 8, 32)
    max_scale = _pos_max(scales)
    max_min = _pos_max(mins)
    inv_s = torch.where(max_scale > 0, _full(max_scale, 63) / torch.where(max_scale > 0, max_scale,
                        torch.ones_like(max_scale)), torch.zeros_like(max_scale))
    inv_m = torch.where(max_min > 0, _full(max_min, 63) / torch.where(max_min > 0, max_min,
                        torch.ones_like(max_min)), torch.zeros_like(max_min))
    ls = _u8(_nearest(inv_s * scales)).clamp(max=63)
    lm = _u8(_nearest(inv_m * mins)).clamp(max=63)
    d = _f16(max_scale / _full(max_scale, 63))
    dmin = _f16(max_min / _full(max_min, 63))
    dl = d * ls.float()
    ml = dmin * lm.float()
    dls = torch.where(dl != 0, dl, torch.ones_like(dl))
    Lr = _nearest((x.view(nb, 8, 32) + ml.unsqueeze(2)) / dls.unsqueeze(2)).clamp(0, nmax)
    L = torch.where((dl != 0).unsqueeze(2), Lr, L).reshape(nb, QK_K)
    head = torch.cat([_f16_bytes(d.squeeze(1)), _f16_bytes(dmin.squeeze(1)),
                      _scale_min_k4(ls, lm).to(torch.uint8)], 1)
    deq = (dl.unsqueeze(2) * L.view(nb, 8, 32).float() - ml.unsqueeze(2)).reshape(nb, QK_K)
    return deq, head, L, dl, -ml


def _q4_k(x):
    deq, head, L, dl, off = _qk_affine(x, 15, -1.0, 20)
    qs = torch.cat([L[:, j:j + 32] | (L[:, j + 32:j + 64] << 4) for j in range(0, QK_K, 64)], 1)
    return deq, torch.cat([head, qs.to(torch.uint8)], 1), dl, off


def _q5_k(x):
    deq, head, L, dl, off = _qk_affine(x, 31, -0.5, 15)
    nb = x.shape[0]
    qh = torch.zeros(nb, 32, dtype=torch.int32)
    parts = []
    for k, n in enumerate(range(0, QK_K, 64)):
        l1, l2 = L[:, n:n + 32], L[:, n + 32:n + 64]
        qh |= ((l1 > 15).to(torch.int32) << (2 * k)) | ((l2 > 15).to(torch.int32) << (2 * k + 1))
        parts.append((l1 & 0xF) | ((l2 & 0xF) << 4))
    return deq, torch.cat([head, qh.to(torch.uint8), torch.cat(parts, 1).to(torch.uint8)], 1), dl, off


def _q6_k(x):
    nb = x.shape[0]
    scales, L = _qx(x.reshape(nb * 16, 16), 32)
    scales, L = scales.view(nb, 16), L.view(nb, 16, 16)
    absmax = scales.abs().amax(1, keepdim=True)
    max_scale = torch.gather(scales, 1, scales.abs().argmax(1, keepdim=True))
    empty = absmax < 1e-15
    msafe = torch.where(empty, torch.ones_like(max_scale), max_scale)
    iscale = _full(msafe, -128) / msafe
    d = torch.where(empty, torch.zeros_like(iscale), _f16(torch.ones_like(iscale) / iscale))
    sc = torch.where(empty, torch.zeros_like(scales, dtype=torch.int32), _nearest(iscale * scales).clamp(max=127))
    dl = d * sc.float()
    dls = torch.where(dl != 0, dl, torch.ones_like(dl))
    Lr = _nearest(x.view(nb, 16, 16) / dls.unsqueeze(2)).clamp(-32, 31) + 32
    L = torch.where((dl != 0).unsqueeze(2), Lr, L)
    L = torch.where(empty.unsqueeze(2), torch.zeros_like(L), L).reshape(nb, QK_K)  # memset 0
    ql, qh = [], []
    for j in range(0, QK_K, 128):
        a, b, c, e = (L[:, j + o:j + o + 32] for o in (0, 32, 64, 96))
        ql += [(a & 0xF) | ((c & 0xF) << 4), (b & 0xF) | ((e & 0xF) << 4)]
        qh.append((a >> 4) | ((b >> 4) << 2) | ((c >> 4) << 4) | ((e >> 4) << 6))
    packed = torch.cat([torch.cat(ql, 1).to(torch.uint8), torch.cat(qh, 1).to(torch.uint8),
                        _u8(sc).to(torch.uint8), _f16_bytes(d.squeeze(1))], 1)
    deq = (dl.unsqueeze(2) * (L.view(nb, 16, 16) - 32).float()).reshape(nb, QK_K)
    return deq, packed, dl, torch.zeros_like(dl)


def _legacy(t: GGMLType, x):
    if t.name == "Q8_0":
        q, d = _q8_0(x)
        d16 = _f16(d)
        return d16 * q.float(), torch.cat([_f16_bytes(d.squeeze(1)), _u8(q).to(torch.uint8)], 1), d16, \
            torch.zeros_like(d16)
    if t.name in ("Q4_0", "Q5_0"):
        half = 8 if t.name == "Q4_0" else 16
        q, d = _q_0(x, half)
        d16 = _f16(d)
        deq = (q - half).float() * d16
        parts = [_f16_bytes(d.squeeze(1))]
        if t.name == "Q5_0":
            parts.append(_qh32(q))
        parts.append(((q[:, :16] & 0xF) | ((q[:, 16:] & 0xF) << 4)).to(torch.uint8))
        return deq, torch.cat(parts, 1), d16, torch.zeros_like(d16)
    nmax = 15 if t.name == "Q4_1" else 31
    q, d, mn = _q_1(x, nmax, clamp=t.name == "Q4_1")
    d16, m16 = _f16(d), _f16(mn)
    deq = d16 * q.float() + m16
    parts = [_f16_bytes(d.squeeze(1)), _f16_bytes(mn.squeeze(1))]
    if t.name == "Q5_1":
        parts.append(_qh32(q))
    parts.append(((q[:, :16] & 0xF) | ((q[:, 16:] & 0xF) << 4)).to(torch.uint8))
    return deq, torch.cat(parts, 1), d16, m16


def _qh32(q):
    """The fifth bits of 32 codes as a little-endian uint32."""
    bits = (q >> 4) & 1
    out = torch.zeros(q.shape[0], 4, dtype=torch.int32)
    for j in range(32):
        out[:, j // 8] |= bits[:, j] << (j % 8)
    return out.to(torch.uint8)


_K = {"Q2_K": _q2_k, "Q3_K": _q3_k, "Q4_K": _q4_k, "Q5_K": _q5_k, "Q6_K": _q6_k}


def quantize_rows(m: torch.Tensor, t: GGMLType | str) -> GGMLQuant:
    """Quantize the rows of ``m`` (rows, n) in ggml type ``t`` as llama.cpp's reference does."""
    t = ggml_type(t) if isinstance(t, str) else t
    m = m.detach().float().contiguous()
    rows, n = m.shape
    pad = (-n) % t.block
    if pad:
        m = F.pad(m, (0, pad))
    blocks = m.reshape(-1, t.block)
    if t.name in _K:
        deq, packed, sc, off = _K[t.name](blocks)
    else:
        deq, packed, sc, off = _legacy(t, blocks)
    deq = deq.reshape(rows, -1)[:, :n].contiguous()
    per_row = (n + pad) // t.sub
    return GGMLQuant(t, deq, packed.reshape(rows, -1), sc.reshape(rows, per_row).contiguous(),
                     off.reshape(rows, per_row).contiguous())


def row_bytes(t: GGMLType, n: int) -> int:
    return -(-n // t.block) * t.type_size


__all__ = ["GGMLType", "GGMLQuant", "GGML_TYPES", "GGML_FORMAT_NAMES", "QK_K", "ggml_type",
           "quantize_rows", "row_bytes"]
