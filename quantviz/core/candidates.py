"""Candidate weight settings for sensitivity and search: bits, granularity, range and algorithm.

A candidate is written like ``int4``, ``int4g32`` (per-group, 32 values a
group), ``int4pc`` / ``int4pt`` (per-channel / per-tensor), with ``+`` and a
range method or an algorithm: ``int3+adaround``, ``int4g32+gptq``,
``int4+mse``, ``int4g64+mse+awq``. A bare number (``4``) is that many bits
with the config's own granularity, range and algorithm. What a candidate does
not say is kept from the layer's configured setting.

:func:`normalize` turns a list of bit-widths and / or candidates into what
the sensitivity sweep and the search iterate over: plain bit-widths stay
integers (results keyed ``"4"`` exactly as before), anything richer becomes
:class:`Candidate` objects keyed by their label.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from .qparams import MAX_BITS, MIN_BITS
from .errors import QuantvizError
from .spec import ALGORITHMS, RANGE_METHODS, RangeSpec, WeightSpec

_RX = re.compile(r"^(?:int|w)?(\d+)(?:(g)(\d+)|(pc)|(pt))?$", re.IGNORECASE)


class CandidateError(QuantvizError, ValueError):
    pass


@dataclass(frozen=True)
class Candidate:
    bits: int
    granularity: str | None = None
    group_size: int | None = None
    range_method: str | None = None
    algorithm: str | None = None

    @property
    def label(self) -> str:
        s = f"int{self.bits}"
        if self.granularity == "per_group":
            s += f"g{self.group_size}"
        elif self.granularity == "per_channel":
            s += "pc"
        elif self.granularity == "per_tensor":
            s += "pt"
        if self.range_method:
            s += f"+{self.range_method}"
        if self.algorithm:
            s += f"+{self.algorithm}"
        return s

    def __str__(self) -> str:
        return self.label

    def __int__(self) -> int:
        return self.bits

    def apply(self, w: WeightSpec) -> WeightSpec:
        """``w`` with what this candidate sets."""
        kw: dict = {"bits": self.bits}
        if self.granularity:
            kw["granularity"] = self.granularity
            kw["group_size"] = self.group_size if self.granularity == "per_group" else None
        if self.range_method:
            kw["range"] = RangeSpec(method=self.range_method)
        if self.algorithm:
            kw["algorithm"] = self.algorithm
            kw["algorithm_options"] = ()
        return replace(w, **kw)

    def patch(self) -> dict:
        """The config patch (``{"weight": {...}}``) that sets this candidate on a layer."""
        w: dict = {"bits": self.bits}
        if self.granularity:
            w["granularity"] = self.granularity
            if self.granularity == "per_group":
                w["group_size"] = self.group_size
        if self.range_method:
            w["range"] = {"method": self.range_method}
        if self.algorithm:
            w["algorithm"] = self.algorithm
        return {"weight": w}

    def sort_key(self) -> tuple:
        extra = 32.0 / self.group_size if self.granularity == "per_group" else 0.0  # fp32 scale per group
        return (self.bits + extra, self.algorithm or "", self.range_method or "", self.label)


def parse_candidate(text: str, flag: str = "--candidates") -> Candidate:
    t = str(text).strip()
    head, *mods = [p.strip().lower() for p in t.split("+")]
    m = _RX.match(head)
    if not m:
        raise CandidateError(f"{flag}: cannot read {t!r} (write e.g. int4, int4g32, int3+adaround, int4g32+gptq)")
    bits = int(m.group(1))
    if not MIN_BITS <= bits <= MAX_BITS:
        raise CandidateError(f"{flag}: {t!r}: bit-width {bits} is outside {MIN_BITS}..{MAX_BITS}")
    gran = gs = None
    if m.group(2):
        gs = int(m.group(3))
        if gs < 1:
            raise CandidateError(f"{flag}: {t!r}: group size must be positive")
        gran = "per_group"
    elif m.group(4):
        gran = "per_channel"
    elif m.group(5):
        gran = "per_tensor"
    rng = algo = None
    for mod in mods:
        if mod in ALGORITHMS:
            if algo is not None:
                raise CandidateError(f"{flag}: {t!r}: one algorithm per candidate")
            algo = mod
        elif mod in RANGE_METHODS and mod != "manual":
            rng = mod
        else:
            allowed = ", ".join([a for a in ALGORITHMS] + [r for r in RANGE_METHODS if r != "manual"])
            raise CandidateError(f"{flag}: {t!r}: unknown {mod!r} (after + comes one of: {allowed})")
    return Candidate(bits, gran, gs, rng, algo)


def parse_candidates(text: str, flag: str = "--candidates") -> tuple:
    parts = [p for p in str(text).split(",") if p.strip()]
    if not parts:
        raise CandidateError(f"{flag}: give at least one candidate")
    return normalize([parse_candidate(p, flag) for p in parts])


def is_plain(c) -> bool:
    return not isinstance(c, Candidate) or (c.granularity is None and c.range_method is None and c.algorithm is None)


def normalize(items) -> tuple:
    """Bit-widths stay sorted unique ints when every item is a plain bit-width;
    otherwise all become Candidates, unique by label, sorted by effective bits."""
    items = list(items)
    if all(is_plain(c) for c in items):
        return tuple(sorted({int(c) for c in items}))
    out: dict[str, Candidate] = {}
    for c in items:
        c = c if isinstance(c, Candidate) else Candidate(int(c))
        out.setdefault(c.label, c)
    return tuple(sorted(out.values(), key=Candidate.sort_key))


def key_of(c) -> str:
    return str(c)


def from_key(k) -> "Candidate | int":
    """A result's key (``"4"`` or ``"int4g32+gptq"``) back to a bit-width or Candidate."""
    if isinstance(k, int) or str(k).isdigit():
        return int(k)
    return parse_candidate(str(k), "candidate")


def as_json(items) -> list:
    return [int(c) if isinstance(c, int) else str(c) for c in items]


__all__ = ["Candidate", "CandidateError", "parse_candidate", "parse_candidates", "normalize", "from_key", "as_json",
           "is_plain"]
