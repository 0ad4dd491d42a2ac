"""Candidate weight settings for sensitivity and search: bits, granularity, range and algorithm.

A candidate is written like ``int4``, ``int4g32`` (per-group, 32 values a
group), ``int4pc`` / ``int4pt`` (per-channel / per-tensor), with ``+`` and a
range method or an algorithm: ``int3+adaround``, ``int4g32+gptq``,
``int4+mse``, ``int4g64+mse+awq``, or a number format of :mod:`.formats`:
``fp8`` (= ``fp8_e4m3``), ``fp8_e5m2``, ``mxfp8`` (= ``mxfp8_e4m3``), ``mxfp6``
(= ``mxfp6_e2m3``), ``mxfp6_e3m2``, ``mxfp4``, ``mxint8``, ``nvfp4``. A bare number (``4``) is that many bits
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

from ..numerics.qparams import MAX_BITS, MIN_BITS
from ..errors import QuantvizError
from ..numerics.formats import FORMATS
from ..numerics.spec import ALGORITHMS, RANGE_METHODS, RangeSpec, WeightSpec

_RX = re.compile(r"^(?:int|w)?(\d+)(?:(g)(\d+)|(pc)|(pt))?$", re.IGNORECASE)


FORMAT_ALIASES = {"fp8": "fp8_e4m3", "mxfp8": "mxfp8_e4m3", "mxfp6": "mxfp6_e2m3"}


class CandidateError(QuantvizError, ValueError):
    pass


@dataclass(frozen=True)
class Candidate:
    bits: int
    granularity: str | None = None
    group_size: int | None = None
    range_method: str | None = None
    algorithm: str | None = None
    format: str = "int"  # a float / block format (quantviz.core.numerics.formats) instead of an integer grid

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
        """``w`` with what this candidate sets (its number format always: ``int4`` on an NVFP4 layer is int4)."""
        kw: dict = {"bits": self.bits, "format": self.format}
        if self.granularity:
            kw["granularity"] = self.granularity
            kw["group_size"] = self.group_size if self.granularity == "per_group" else None
        if self.range_method:
            kw["range"] = RangeSpec(method=self.range_method)
        if self.algorithm:
            kw["algorithm"] = self.algorithm
            kw["algorithm_options"] = ()
        elif self.format != "int":  # no integer grid for the layer's algorithm to fit
            kw["algorithm"], kw["algorithm_options"] = "none", ()
        return replace(w, **kw)

    def patch(self) -> dict:
        """The config patch (``{"weight": {...}}``) that sets this candidate on a layer."""
        w: dict = {"bits": self.bits, "format": self.format}
        if self.granularity:
            w["granularity"] = self.granularity
            if self.granularity == "per_group":
                w["group_size"] = self.group_size
        if self.range_method:
            w["range"] = {"method": self.range_method}
        if self.algorithm:
            w["algorithm"] = self.algorithm
        elif self.format != "int":
            w["algorithm"] = "none"
        return {"weight": w}

    def sort_key(self) -> tuple:
        if self.format != "int":  # bits per weight with the block scales
            return (FORMATS[self.format].bits_per_element(), "", "", self.label)
        extra = 32.0 / self.group_size if self.granularity == "per_group" else 0.0  # fp32 scale per group
        return (self.bits + extra, self.algorithm or "", self.range_method or "", self.label)


def weight_at(w: WeightSpec, option) -> WeightSpec:
    """``w`` at a sweep / search option: a :class:`Candidate`'s settings, ``None`` (float), or a plain
    bit-width on an integer grid of that many bits, whatever number format ``w`` had (a layer on NVFP4
    swept at 2 bits is int2: its label, size and applied config all say so). The one place an option
    becomes a layer's weight setting; :func:`patch_at` is its config form."""
    if isinstance(option, Candidate):
        return option.apply(w)
    if option is None:
        return replace(w, bits=None)
    return replace(w, bits=int(option), format="int")


def patch_at(option) -> dict:
    """The config patch that gives a layer what :func:`weight_at` gives its spec."""
    if isinstance(option, Candidate):
        return option.patch()
    return {"weight": {"bits": None if option is None else int(option), "format": "int"}}


def format_note(specs: dict, options) -> str | None:
    """What a plain bit-width sweep / search does to layers in a float / block format (None: no such layer)."""
    if not all(is_plain(o) for o in options):
        return None
    on = [f"{n} ({FORMATS[s.weight.format].label})" for n, s in specs.items()
          if s.weight.bits is not None and s.weight.format != "int"]
    if not on:
        return None
    return (f"bit-widths are integer grids: {', '.join(on)} {'is' if len(on) == 1 else 'are'} swept on int grids "
            "of those widths, not in their format (to keep a format, list it in --candidates, e.g. int4,int8,nvfp4)")


DEFAULT_GROUP = 32  # group size of the default search's per-group candidates
DEFAULT_SEARCH_BITS = (2, 3, 4, 6, 8)


def default_candidates(layers, specs: dict, algorithm_applies=None, bits=DEFAULT_SEARCH_BITS) -> tuple:
    """What the search chooses among when not told: the plain bit-widths ``bits`` and the
    cheap granularity and algorithm candidates that apply to the model.

    * per-group grids ``int4g32``, ``int3g32`` when a quantized layer's rows hold at
      least two groups of 32 (shorter rows: a group is the whole row, per-channel
      already) and the layer is not per-group already;
    * GPTQ ``int4+gptq`` (and ``int4g32+gptq``, ``int3g32+gptq`` with per-group) when
      GPTQ applies to a quantized layer (``algorithm_applies(name)`` is None: a
      Linear or ungrouped convolution running on the calibration data) and the
      layer uses no algorithm of its own.

    AdaRound and AWQ optimise per layer and stay opt-in (``--candidates``). A model
    where neither applies gets the plain bit-widths, exactly as before."""
    bits = tuple(sorted({int(b) for b in bits}))
    grouped = gptq = False
    for l in layers:
        sp = specs.get(l.name)
        if sp is None or sp.weight.bits is None:
            continue
        row = l.weight_numel // max(1, l.channels)
        if row >= 2 * DEFAULT_GROUP and sp.weight.granularity != "per_group":
            grouped = True
        if algorithm_applies is not None and sp.weight.algorithm == "none" and algorithm_applies(l.name) is None:
            gptq = True
    if not (grouped or gptq):
        return bits
    extra = []
    if grouped:
        extra += [Candidate(4, "per_group", DEFAULT_GROUP), Candidate(3, "per_group", DEFAULT_GROUP)]
    if gptq:
        extra.append(Candidate(4, algorithm="gptq"))
        if grouped:
            extra += [Candidate(4, "per_group", DEFAULT_GROUP, algorithm="gptq"),
                      Candidate(3, "per_group", DEFAULT_GROUP, algorithm="gptq")]
    return normalize([Candidate(b) for b in bits] + extra)


def parse_candidate(text: str, flag: str = "--candidates") -> Candidate:
    t = str(text).strip()
    fmt = FORMAT_ALIASES.get(t.lower(), t.lower())
    if fmt in FORMATS:
        return Candidate(FORMATS[fmt].bits, format=fmt)
    head, *mods = [p.strip().lower() for p in t.split("+")]
    m = _RX.match(head)
    if not m:
        raise CandidateError(f"{flag}: cannot read {t!r} (write e.g. int4, int4g32, int3+adaround, int4g32+gptq, "
                             f"or a format: {', '.join(list(FORMAT_ALIASES) + list(FORMATS))})")
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
    return not isinstance(c, Candidate) or (c.granularity is None and c.range_method is None and c.algorithm is None
                                            and c.format == "int")


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


def setting_label(counts: dict) -> str:
    """'mxfp4×5 int8×2' from {label: count}, most used first (Pareto point names)."""
    return " ".join(f"{k}×{v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


__all__ = ["default_candidates", "DEFAULT_SEARCH_BITS", "DEFAULT_GROUP", "setting_label", "weight_at", "patch_at", "format_note", "Candidate", "CandidateError", "parse_candidate", "parse_candidates", "normalize", "from_key", "as_json",
           "is_plain"]
