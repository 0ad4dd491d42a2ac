"""Floating-point and microscaling number formats: FP8, MX (OCP MX v1.0) and NVFP4.

Every format is an *element* format (a small float, or MXINT8's fixed point)
plus a *scale* rule:

========== ========= ===================================================== =================
format     element   scale                                                  bits / element
========== ========= ===================================================== =================
fp8_e4m3   E4M3FN    one FP32 per tensor (or per channel), amax / 448       8 (+ scale)
fp8_e5m2   E5M2      one FP32 per tensor (or per channel), amax / 57344     8 (+ scale)
mxfp8_e4m3 E4M3FN    E8M0 (power of two) per block of 32                    8 + 8/32 = 8.25
mxfp8_e5m2 E5M2      E8M0 per block of 32                                   8.25
mxfp6_e2m3 E2M3      E8M0 per block of 32                                   6.25
mxfp6_e3m2 E3M2      E8M0 per block of 32                                   6.25
mxfp4      E2M1      E8M0 per block of 32                                   4.25
mxint8     INT8      E8M0 per block of 32 (elements are k * 2^-6)            8.25
nvfp4      E2M1      E4M3 per block of 16, times one FP32 per tensor        4 + 8/16 = 4.5
========== ========= ===================================================== =================

Elements are rounded to the nearest representable value, ties to even, and
saturate at the format's largest finite value (E4M3FN +-448, E5M2 +-57344,
E2M3 +-7.5, E3M2 +-28, E2M1 +-6; MXINT8 +-127/64). The MX shared exponent is
the OCP rule ``floor(log2(amax)) - emax_elem`` (clamped to E8M0's
[-127, 127]); NVFP4's block scale is ``amax_block / 6 / s_tensor`` cast to
E4M3 with ``s_tensor = amax_tensor / (448 * 6)``. The arithmetic follows
torchao's reference quantizers (``to_mx`` with FLOOR scaling,
``nvfp4_quantize`` with a per-tensor scale) operation for operation, so the
two agree bit for bit (tests check this).

Blocks run along a matrix's rows (the weight's input / reduction dimension
once the output channel axis is moved first). A row whose length is not a
multiple of the block size ends in a *partial block*: it is padded with zeros,
which never change the block's amax, so the partial block gets its own scale
from its own values (what the MX / NVFP4 hardware layouts do after zero
padding).

Everything is vectorised: one pass per operation over the whole tensor,
no Python loop over blocks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .ggml import GGML_TYPES, GGMLType


@dataclass(frozen=True)
class Element:
    name: str
    ebits: int
    mbits: int
    bias: int
    max: float
    fixed_point: bool = False  # MXINT8: two's complement k * 2^-6, |k| <= 127

    @property
    def bits(self) -> int:
        return 8 if self.fixed_point else 1 + self.ebits + self.mbits

    @property
    def emax(self) -> int:
        """Exponent of the largest power of two the element represents (OCP ``emax_elem``)."""
        return int(math.floor(math.log2(self.max)))

    @property
    def emin(self) -> int:
        return 1 - self.bias

    def magnitudes(self) -> torch.Tensor:
        """Every non-negative finite value, ascending (float64)."""
        if self.fixed_point:
            return torch.arange(0, 128, dtype=torch.float64) / 64
        vals = {0.0}
        for m in range(1, 2 ** self.mbits):  # subnormals
            vals.add(m * 2.0 ** (self.emin - self.mbits))
        for e in range(self.emin, self.emax + 1):
            for m in range(2 ** self.mbits):
                v = (1 + m / 2 ** self.mbits) * 2.0 ** e
                if v <= self.max:
                    vals.add(v)
        return torch.tensor(sorted(vals), dtype=torch.float64)


E4M3 = Element("e4m3", 4, 3, 7, 448.0)
E5M2 = Element("e5m2", 5, 2, 15, 57344.0)
E2M3 = Element("e2m3", 2, 3, 1, 7.5)
E3M2 = Element("e3m2", 3, 2, 3, 28.0)
E2M1 = Element("e2m1", 2, 1, 1, 6.0)
INT8 = Element("int8", 0, 6, 0, 127 / 64, fixed_point=True)


@dataclass(frozen=True)
class Format:
    name: str
    element: Element
    block: int | None  # elements per shared scale; None: one FP32 scale per tensor / channel
    scale: str  # "fp32", "e8m0" or "e4m3" (NVFP4: E4M3 per block times one FP32 per tensor)
    label: str

    @property
    def bits(self) -> int:
        return self.element.bits

    @property
    def scale_bits(self) -> int:
        return 32 if self.scale == "fp32" else 8

    @property
    def is_block(self) -> bool:
        return self.block is not None

    def bits_per_element(self) -> float:
        """Element bits plus the block scale's share (per-tensor scales excluded)."""
        return self.bits + (self.scale_bits / self.block if self.block else 0.0)


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("fp8_e4m3", E4M3, None, "fp32", "FP8 E4M3"),
    Format("fp8_e5m2", E5M2, None, "fp32", "FP8 E5M2"),
    Format("mxfp8_e4m3", E4M3, 32, "e8m0", "MXFP8 E4M3"),
    Format("mxfp8_e5m2", E5M2, 32, "e8m0", "MXFP8 E5M2"),
    Format("mxfp6_e2m3", E2M3, 32, "e8m0", "MXFP6 E2M3"),
    Format("mxfp6_e3m2", E3M2, 32, "e8m0", "MXFP6 E3M2"),
    Format("mxfp4", E2M1, 32, "e8m0", "MXFP4"),
    Format("mxint8", INT8, 32, "e8m0", "MXINT8"),
    Format("nvfp4", E2M1, 16, "e4m3", "NVFP4"),
)}


@dataclass(frozen=True)
class GGMLFormat(Format):
    """A llama.cpp weight type (:mod:`.ggml`): integer codes under an FP16-derived scale (and
    minimum) per sub-block of ``block`` weights; ``gtype`` has the storage layout. Weights only."""

    gtype: GGMLType | None = None

    def bits_per_element(self) -> float:
        """Exact storage bits per weight, scales and minima included (Q4_K 4.5, Q6_K 6.5625)."""
        return self.gtype.bits_per_weight


def _ggml_format(t: GGMLType) -> GGMLFormat:
    el = Element(f"int{t.code_bits}", 0, t.code_bits - 1, 0, float(max(abs(t.qmin), abs(t.qmax))))
    return GGMLFormat(t.format_name, el, t.sub, "ggml", t.name, t)


FORMATS.update({t.format_name: _ggml_format(t) for t in GGML_TYPES.values()})
WEIGHT_ONLY_FORMATS = tuple(GGML_TYPES)  # formats a weight can take and an activation cannot
FORMAT_NAMES = ("int",) + tuple(FORMATS)  # "int": the integer grids of quantviz.core.numerics.qparams
FP32_MIN_NORMAL = 2.0 ** -126
E4M3_TINY = float(torch.finfo(torch.float8_e4m3fn).tiny)  # 2^-6, smallest normal E4M3


def get_format(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown format {name!r} (allowed: {', '.join(FORMAT_NAMES)})") from None


def is_ggml_format(name: str | None) -> bool:
    return name in GGML_TYPES


def is_float_format(name: str | None) -> bool:
    return name is not None and name != "int"


# ------------------------------------------------------------ element rounding
def _pow2(e: torch.Tensor) -> torch.Tensor:
    """2**e (int32 tensor, -126 <= e <= 127) as float32, exactly, from the exponent bits."""
    return torch.bitwise_left_shift(e + 127, 23).view(torch.float32)


def round_element(x: torch.Tensor, el: Element) -> torch.Tensor:
    """Round float32 ``x`` to the nearest value of ``el`` (ties to even), saturating at +-max."""
    x = x.float().contiguous()
    if el.fixed_point:
        return torch.round(x * 64.0).clamp_(-127.0, 127.0).mul_(1.0 / 64.0)
    # the step (ulp) at x: x's binade 2^floor(log2|x|) (its exponent bits alone) times 2^-mbits,
    # kept within the element's subnormal step and its top binade's step
    step = torch.bitwise_and(x.view(torch.int32), 0x7F800000).view(torch.float32)
    step = step.mul_(2.0 ** -el.mbits).clamp_(2.0 ** (el.emin - el.mbits), 2.0 ** (el.emax - el.mbits))
    q = torch.div(x, step).round_().mul_(step)  # division by a power of two is exact: only the round rounds
    return q.clamp_(-el.max, el.max)


def local_step(q: torch.Tensor, el: Element) -> torch.Tensor:
    """The spacing of ``el``'s values around each (already representable) value ``q``."""
    if el.fixed_point:
        return torch.full_like(q, 1.0 / 64.0)
    return _pow2(_floor_log2(q).clamp_(min=el.emin).sub_(el.mbits).clamp_(-126, 126))


# --------------------------------------------------------------- block scales
def _floor_log2(a: torch.Tensor) -> torch.Tensor:
    """floor(log2(a)) of non-negative float32 ``a`` from its exponent bits (-127 for 0 and subnormals)."""
    return torch.bitwise_right_shift(a.float().contiguous().view(torch.int32), 23).bitwise_and_(255).sub_(127)


def mx_scale(amax: torch.Tensor, el: Element) -> tuple[torch.Tensor, torch.Tensor]:
    """(E8M0 biased code as uint8, float32 scale) of MX blocks with absolute maxima ``amax``.

    OCP MX v1.0 section 6.3: ``X = 2^(floor(log2(amax)) - emax_elem)``, clamped to
    E8M0's exponents [-127, 127]; the float value used for division is at least
    FP32's smallest normal (as torchao's reference does; it matters only for
    all-zero or denormal blocks).
    """
    e = (_floor_log2(amax) - el.emax).clamp_(-127, 127)
    code = (e + 127).to(torch.uint8)
    scale = _pow2(e.clamp(min=-126))
    return code, scale


def e8m0_value(code: torch.Tensor) -> torch.Tensor:
    return _pow2(code.to(torch.int32) - 127)


# ---------------------------------------------------------------- quantizers
@dataclass
class FormatParams:
    """The scales of one tensor in a float / block format.

    ``scale`` holds the float32 scale of every group (per tensor, per channel or
    per block, row-major: ``rows x blocks_per_row``); ``codes`` the stored scale
    bits (E8M0 biased exponents as uint8, or the E4M3 values as float32) for
    block formats; ``tensor_scale`` NVFP4's FP32 per-tensor scale. ``lo``/``hi``
    are each group's representable range (+-scale * element max).
    """

    format: str
    scale: torch.Tensor
    rows: int
    block_size: int | None = None
    codes: torch.Tensor | None = None
    tensor_scale: float | None = None
    amax: torch.Tensor | None = None  # per group, the values' largest magnitude
    axis: int = -1  # activations: the axis whose blocks share a scale

    @property
    def fmt(self) -> Format:
        return FORMATS[self.format]

    @property
    def bits(self) -> int:
        return self.fmt.bits

    @property
    def groups(self) -> int:
        return int(self.scale.numel())

    @property
    def symmetric(self) -> bool:
        return True

    @property
    def lo(self) -> torch.Tensor:
        return -self.hi

    @property
    def hi(self) -> torch.Tensor:
        return self.scale * self.fmt.element.max

    def grid_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lo, self.hi

    def levels(self, group: int = 0) -> torch.Tensor:
        """Every representable value of group ``group`` (ascending, float64)."""
        m = self.fmt.element.magnitudes() * float(self.scale.flatten()[group])
        return torch.cat([-m.flip(0)[:-1], m])

    def to_dict(self) -> dict:
        f = self.fmt
        d = {"format": self.format, "element": f.element.name, "element_bits": f.bits, "scale_kind": f.scale}
        if f.is_block and not self.groups:  # an activation: block scales come from the data at run time
            d.update(block_size=f.block, axis=self.axis, scale="computed per block at run time from the block's maximum")
            if self.tensor_scale is not None:
                d["tensor_scale"] = self.tensor_scale / (E4M3.max * E2M1.max)
                d["tensor_amax"] = self.tensor_scale
            return d
        d["scale"] = [float(v) for v in self.scale.flatten()]
        if self.block_size:
            d["block_size"] = self.block_size
            d["blocks_per_row"] = self.groups // max(self.rows, 1)
        if self.codes is not None:
            key = "scale_e8m0" if f.scale == "e8m0" else "scale_e4m3"
            d[key] = [int(v) for v in self.codes.flatten()] if f.scale == "e8m0" else [float(v) for v in self.codes.flatten()]
        if self.tensor_scale is not None:
            d["tensor_scale"] = self.tensor_scale
        return d


@dataclass
class GGMLParams(FormatParams):
    """A weight's scales in a llama.cpp type: per sub-block (row-major, ``rows x
    sub-blocks per row``) the effective scale and offset, so that the sub-block's
    values are ``scale * q + offset`` for integer ``q`` in ``[qmin, qmax]``."""

    offset: torch.Tensor | None = None
    qmin: int = 0
    qmax: int = 0

    @property
    def symmetric(self) -> bool:
        return not self.fmt.gtype.affine

    @property
    def lo(self) -> torch.Tensor:
        a, b = self.scale * self.qmin + self.offset, self.scale * self.qmax + self.offset
        return torch.minimum(a, b)

    @property
    def hi(self) -> torch.Tensor:
        a, b = self.scale * self.qmin + self.offset, self.scale * self.qmax + self.offset
        return torch.maximum(a, b)

    def levels(self, group: int = 0) -> torch.Tensor:
        q = torch.arange(self.qmin, self.qmax + 1, dtype=torch.float64)
        lv = q * float(self.scale.flatten()[group]) + float(self.offset.flatten()[group])
        return lv.sort().values

    def to_dict(self) -> dict:
        t = self.fmt.gtype
        return {"format": self.format, "ggml_type": t.name, "element_bits": t.code_bits,
                "bits_per_weight": t.bits_per_weight, "scale_kind": "ggml", "block_size": t.block,
                "sub_block_size": t.sub, "blocks_per_row": self.groups // max(self.rows, 1),
                "codes": [self.qmin, self.qmax], "scale": [float(v) for v in self.scale.flatten()],
                "offset": [float(v) for v in self.offset.flatten()]}


def _blocks(m: torch.Tensor, block: int) -> tuple[torch.Tensor, int]:
    """``m`` (rows, n) as (rows, nblocks, block), the last partial block zero-padded."""
    n = m.shape[1]
    pad = (-n) % block
    if pad:
        m = F.pad(m, (0, pad))
    return m.reshape(m.shape[0], -1, block), n


def quantize_blocks(m: torch.Tensor, fmt: Format, tensor_amax: float | None = None
                    ) -> tuple[torch.Tensor, FormatParams]:
    """Fake-quantize the rows of ``m`` (float32, (rows, n)) in block format ``fmt``.

    ``tensor_amax`` (NVFP4 only) fixes the per-tensor FP32 scale (a calibrated
    activation); by default it is ``m``'s own absolute maximum.
    """
    m = m.float()
    rows = m.shape[0]
    b, n = _blocks(m, fmt.block)
    amax = b.abs().amax(dim=-1, keepdim=True)
    el = fmt.element
    if fmt.scale == "e8m0":
        code, scale = mx_scale(amax, el)
        q = round_element(b / scale, el).mul_(scale)
        params = FormatParams(fmt.name, scale.flatten(), rows, fmt.block, code.flatten(), None, amax.flatten())
    else:  # NVFP4: E4M3 block scale under one FP32 tensor scale
        t_amax = float(amax.max()) if tensor_amax is None else float(tensor_amax)
        ts = torch.tensor(t_amax, dtype=torch.float32) / (E4M3.max * E2M1.max)
        if float(ts) == 0.0:
            ts = torch.tensor(1.0, dtype=torch.float32)  # an all-zero tensor: any scale gives zeros
        bs = round_element(((amax / E2M1.max) / ts).clamp_(E4M3_TINY, E4M3.max), E4M3)
        recip = (1.0 / ts) / bs
        q = round_element(b * recip, E2M1).mul_(ts * bs)
        params = FormatParams(fmt.name, (ts * bs).flatten(), rows, fmt.block, bs.flatten(), float(ts), amax.flatten())
    return q.reshape(rows, -1)[:, :n], params


def fp_scale(amax: torch.Tensor, el: Element) -> torch.Tensor:
    """FP32 scale mapping ``amax`` onto the element's largest value (at least FP32's smallest normal)."""
    return (amax.float() / el.max).clamp(min=FP32_MIN_NORMAL)


def quantize_scaled(m: torch.Tensor, scale: torch.Tensor, el: Element) -> torch.Tensor:
    """``round(m / scale) * scale`` on the element grid; ``scale`` broadcasts against ``m``
    (ONNX QuantizeLinear's division, then DequantizeLinear's product)."""
    return round_element(m.float() / scale, el).mul_(scale)


def quantize_activation(x: torch.Tensor, fmt: Format, *, scale: float | None = None, axis: int = -1,
                        tensor_amax: float | None = None) -> torch.Tensor:
    """Fake-quantize an activation tensor: FP8 with its calibrated per-tensor ``scale``;
    block formats with scales computed on the fly from each block of ``axis`` (as the
    hardware does), NVFP4 under the calibrated ``tensor_amax``."""
    if not fmt.is_block:
        return round_element(x.float() / scale, fmt.element).mul_(scale).to(x.dtype)
    moved = x.movedim(axis, -1)
    shape = moved.shape
    q, _ = quantize_blocks(moved.reshape(-1, shape[-1]), fmt, tensor_amax)
    return q.reshape(shape).movedim(-1, axis).to(x.dtype)


def block_clip_envelope(params: FormatParams, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-element representable range (+-scale * max) in the (rows, n) layout."""
    per = params.groups // max(params.rows, 1)
    hi = params.hi.view(params.rows, per)
    if params.block_size:
        hi = hi.repeat_interleave(params.block_size, dim=1)[:, :n]
    else:
        hi = hi.expand(params.rows, n)
    return -hi, hi


__all__ = ["Element", "Format", "GGMLFormat", "GGMLParams", "WEIGHT_ONLY_FORMATS", "is_ggml_format", "FormatParams", "FORMATS", "FORMAT_NAMES", "E4M3", "E5M2", "E2M3", "E3M2", "E2M1",
           "INT8", "get_format", "is_float_format", "round_element", "local_step", "mx_scale", "e8m0_value",
           "quantize_blocks", "quantize_scaled", "quantize_activation", "fp_scale", "block_clip_envelope"]
