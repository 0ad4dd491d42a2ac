"""Weight candidates for sensitivity and search that name a number format.

A candidate is written ``int8``, ``int4g32`` (per-group of 32), ``int4pc`` /
``int4pt`` (per-channel / per-tensor) or a format of :mod:`.formats`:
``fp8`` (= ``fp8_e4m3``), ``fp8_e5m2``, ``mxfp8`` (= ``mxfp8_e4m3``),
``mxfp6`` (= ``mxfp6_e2m3``), ``mxfp4``, ``mxint8``, ``nvfp4``. What a
candidate does not say is kept from the layer's configured setting. A bare
number (``4``) is that many integer bits.

:func:`normalize` keeps a list of plain bit-widths as integers (results keyed
``"4"`` exactly as before); anything richer becomes :class:`FormatCandidate`
objects keyed by their label, sorted by bits per weight with scales.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from .errors import QuantvizError
from .formats import FORMATS
from .qparams import MAX_BITS, MIN_BITS
from .spec import WeightSpec

ALIASES = {"fp8": "fp8_e4m3", "mxfp8": "mxfp8_e4m3", "mxfp6": "mxfp6_e2m3"}
_RX = re.compile(r"^(?:int|w)?(\d+)(?:(g)(\d+)|(pc)|(pt))?$", re.IGNORECASE)


class CandidateError(QuantvizError, ValueError):
    pass


@dataclass(frozen=True)
class FormatCandidate:
    bits: int
    format: str = "int"
    granularity: str | None = None
    group_size: int | None = None

    @property
    def label(self) -> str:
        if self.format != "int":
            return self.format
        s = f"int{self.bits}"
        if self.granularity == "per_group":
            s += f"g{self.group_size}"
        elif self.granularity == "per_channel":
            s += "pc"
        elif self.granularity == "per_tensor":
            s += "pt"
        return s

    def __str__(self) -> str:
        return self.label

    def __int__(self) -> int:
        return self.bits

    def apply(self, w: WeightSpec) -> WeightSpec:
        kw: dict = {"bits": self.bits, "format": self.format}
        if self.granularity:
            kw["granularity"] = self.granularity
            kw["group_size"] = self.group_size if self.granularity == "per_group" else None
        return replace(w, **kw)

    def patch(self) -> dict:
        w: dict = {"bits": self.bits, "format": self.format}
        if self.granularity:
            w["granularity"] = self.granularity
            if self.granularity == "per_group":
                w["group_size"] = self.group_size
        return {"weight": w}

    def sort_key(self) -> tuple:
        if self.format != "int":
            per = FORMATS[self.format].bits_per_element()
        else:
            per = self.bits + (32.0 / self.group_size if self.granularity == "per_group" else 0.0)
        return (per, self.label)


def parse_candidate(text: str, flag: str = "--candidates") -> FormatCandidate:
    t = str(text).strip().lower()
    name = ALIASES.get(t, t)
    if name in FORMATS:
        return FormatCandidate(FORMATS[name].bits, name)
    m = _RX.match(t)
    if not m:
        raise CandidateError(f"{flag}: cannot read {text.strip()!r} (write e.g. int8, int4g32, fp8, mxfp4, nvfp4; "
                             f"formats: {', '.join(list(ALIASES) + list(FORMATS))})")
    bits = int(m.group(1))
    if not MIN_BITS <= bits <= MAX_BITS:
        raise CandidateError(f"{flag}: {text.strip()!r}: bit-width {bits} is outside {MIN_BITS}..{MAX_BITS}")
    if m.group(2):
        gs = int(m.group(3))
        if gs < 1:
            raise CandidateError(f"{flag}: {text.strip()!r}: group size must be positive")
        return FormatCandidate(bits, "int", "per_group", gs)
    return FormatCandidate(bits, "int", "per_channel" if m.group(4) else "per_tensor" if m.group(5) else None)


def is_plain(c) -> bool:
    return not isinstance(c, FormatCandidate) or (c.format == "int" and c.granularity is None)


def normalize(items) -> tuple:
    items = list(items)
    if all(is_plain(c) for c in items):
        return tuple(sorted({int(c) for c in items}))
    out: dict[str, FormatCandidate] = {}
    for c in items:
        c = c if isinstance(c, FormatCandidate) else FormatCandidate(int(c))
        out.setdefault(c.label, c)
    return tuple(sorted(out.values(), key=FormatCandidate.sort_key))


def parse_candidates(text: str, flag: str = "--candidates") -> tuple:
    parts = [p for p in str(text).split(",") if p.strip()]
    if not parts:
        raise CandidateError(f"{flag}: give at least one candidate")
    return normalize([parse_candidate(p, flag) for p in parts])


def as_json(items) -> list:
    return [int(c) if isinstance(c, int) else str(c) for c in items]


def from_key(k):
    """A result's key (``"4"`` or ``"mxfp4"``) back to a bit-width or candidate."""
    if isinstance(k, int) or str(k).isdigit():
        return int(k)
    return parse_candidate(str(k), "candidate")


def setting_label(counts: dict) -> str:
    """'mxfp4×5 int8×2' from {label: count}, most used first."""
    return " ".join(f"{k}×{v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


__all__ = ["FormatCandidate", "CandidateError", "parse_candidate", "parse_candidates", "normalize", "as_json",
           "from_key", "is_plain", "setting_label"]
