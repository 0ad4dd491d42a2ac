"""The quantviz config file: schema, validation, migration, presets, resolution.

A config is a set of *partial* settings merged field by field, lowest first::

    built-in defaults < "default" < "rules" (in order) < "layers"[name]

``rules`` entries match by module type (``{"match": {"type": "Linear"}}``) or
by a regular expression searched in the layer name
(``{"match": {"pattern": "^features\\."}}``), like torchao's ``FqnToConfig``.
``"bits": null`` means the tensor stays float.

Version history: 1 -> 2 added ``grid`` (the symmetric grid rule: ``full``,
``torch`` or ``restricted``; default ``full``) to weight and activation
settings. A version-1 file meant torch's rule, so migration writes
``"grid": "torch"`` into its ``default`` (rules and layers of a version-1 file
cannot name a grid, so every symmetric tensor keeps its old grid).
2 -> 3 added ``format`` (``int``, the integer grids, by default; or one of the
FP8 / MX / NVFP4 formats of :mod:`quantviz.core.numerics.formats`) to weight and
activation settings. A version-2 file is a version-3 file that names no format.
"""
from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..core.errors import QuantvizError
from ..core.model.layers import LayerInfo
from ..core.numerics.qparams import MAX_BITS, MIN_BITS
from ..core.numerics.formats import FORMATS as NUMBER_FORMAT_DEFS
from ..core.numerics.spec import DEFAULT_FORMAT, NUMBER_FORMATS, WEIGHT_ONLY_FORMATS, DEFAULT_GRID, GRANULARITIES, RANGE_METHODS, SYMMETRIC_GRIDS, ActSpec, LayerSpec, RangeSpec, WeightSpec
from ..core.algorithms.options import ALGORITHMS, check_algorithm, options_tuple
from . import atomic

FORMAT = "quantviz-config"
CURRENT_VERSION = 3


WEIGHT_KEYS = {"bits", "granularity", "group_size", "symmetric", "range", "grid", "algorithm", "algorithm_options",
               "format"}
ACT_KEYS = {"bits", "symmetric", "range", "granularity", "grid", "format"}
RANGE_KEYS = {"method", "p", "lo", "hi"}
BUILTIN_WEIGHT = {"bits": 8, "granularity": "per_channel", "symmetric": True, "range": {"method": "minmax"}, "grid": DEFAULT_GRID,
                  "algorithm": "none", "format": DEFAULT_FORMAT}
BUILTIN_ACT = {"bits": None, "symmetric": False, "granularity": "per_tensor", "range": {"method": "minmax"}, "grid": DEFAULT_GRID,
               "format": DEFAULT_FORMAT}


class ConfigError(QuantvizError, ValueError):
    pass


# ------------------------------------------------------------ validation
_FORMAT_ALGORITHM = ("algorithm {algo!r} fits integer grids, and format {fmt!r} has none "
                     "(set the algorithm to none, or the format to int)")


def _fail(where: str, msg: str) -> None:
    raise ConfigError(f"{where}: {msg}")


def _check_bits(v: Any, where: str) -> None:
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        else:
            _fail(where, f"bits must be an integer {MIN_BITS}..{MAX_BITS} or null, got {json.dumps(v)}")
    if not MIN_BITS <= v <= MAX_BITS:
        _fail(where, f"bits {v} is outside {MIN_BITS}..{MAX_BITS} (use null to keep it float)")


def _check_number(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        _fail(where, f"must be a finite number, got {json.dumps(v)}")
    return float(v)


def _check_range(r: Any, where: str) -> None:
    if not isinstance(r, dict):
        _fail(where, f"must be an object like {{\"method\": \"minmax\"}}, got {json.dumps(r)}")
    unknown = set(r) - RANGE_KEYS
    if unknown:
        _fail(where, f"unknown key {sorted(unknown)[0]!r} (allowed: {', '.join(sorted(RANGE_KEYS))})")
    m = r.get("method")
    if m is not None and m not in RANGE_METHODS:
        _fail(f"{where}.method", f"unknown method {json.dumps(m)} (allowed: {', '.join(RANGE_METHODS)})")
    if "p" in r and r["p"] is not None:
        p = _check_number(r["p"], f"{where}.p")
        if not 0 < p <= 100:
            _fail(f"{where}.p", f"percentile {r['p']} is outside (0, 100]")
    for k in ("lo", "hi"):
        if k in r and r[k] is not None:
            _check_number(r[k], f"{where}.{k}")
    if m == "manual":
        if r.get("lo") is None or r.get("hi") is None:
            _fail(where, "a manual range needs both lo and hi")
        if float(r["lo"]) >= float(r["hi"]):
            _fail(where, f"lo ({r['lo']}) must be smaller than hi ({r['hi']})")


def _check_tensor(d: Any, where: str, kind: str) -> None:
    if not isinstance(d, dict):
        _fail(where, f"must be an object, got {json.dumps(d)}")
    allowed = WEIGHT_KEYS if kind == "weight" else ACT_KEYS
    unknown = set(d) - allowed
    if unknown:
        _fail(where, f"unknown key {sorted(unknown)[0]!r} (allowed: {', '.join(sorted(allowed))})")
    if "bits" in d:
        _check_bits(d["bits"], f"{where}.bits")
    if "symmetric" in d and not isinstance(d["symmetric"], bool):
        _fail(f"{where}.symmetric", f"must be true or false, got {json.dumps(d['symmetric'])}")
    if "grid" in d and (not isinstance(d["grid"], str) or d["grid"] not in SYMMETRIC_GRIDS):
        _fail(f"{where}.grid", f"unknown grid {json.dumps(d['grid'])} (allowed: {', '.join(SYMMETRIC_GRIDS)})")
    if "format" in d and (not isinstance(d["format"], str) or d["format"] not in NUMBER_FORMATS):
        _fail(f"{where}.format", f"unknown format {json.dumps(d['format'])} (allowed: {', '.join(NUMBER_FORMATS)})")
    if kind != "weight" and d.get("format") in WEIGHT_ONLY_FORMATS:
        _fail(f"{where}.format", f"{json.dumps(d['format'])} is a llama.cpp weight type: activations cannot take it "
              f"(allowed for activations: {', '.join(f for f in NUMBER_FORMATS if f not in WEIGHT_ONLY_FORMATS)})")
    if "granularity" in d:
        g = d["granularity"]
        allowed_g = GRANULARITIES if kind == "weight" else ("per_tensor",)
        if g not in allowed_g:
            _fail(f"{where}.granularity", f"unknown granularity {json.dumps(g)} (allowed: {', '.join(allowed_g)})")
    if "group_size" in d and d["group_size"] is not None:
        gs = d["group_size"]
        if isinstance(gs, bool) or not isinstance(gs, int) or gs < 1:
            _fail(f"{where}.group_size", f"must be a positive integer, got {json.dumps(gs)}")
    if "range" in d:
        _check_range(d["range"], f"{where}.range")
    if "algorithm" in d and not isinstance(d["algorithm"], str):
        _fail(f"{where}.algorithm", f"must be a name, got {json.dumps(d['algorithm'])} (allowed: {', '.join(ALGORITHMS)})")
    if d.get("format", DEFAULT_FORMAT) != "int" and d.get("algorithm", "none") != "none":
        _fail(where, _FORMAT_ALGORITHM.format(algo=d["algorithm"], fmt=d["format"]))
    if "algorithm" in d or "algorithm_options" in d:
        msg = check_algorithm(d.get("algorithm"), d.get("algorithm_options"))
        if msg:
            _fail(f"{where}.{msg[0]}", msg[1])


def _check_partial(d: Any, where: str) -> None:
    if not isinstance(d, dict):
        _fail(where, f"must be an object with \"weight\" and/or \"activation\", got {json.dumps(d)}")
    unknown = set(d) - {"weight", "activation"}
    if unknown:
        _fail(where, f"unknown key {sorted(unknown)[0]!r} (allowed: weight, activation)")
    for k in ("weight", "activation"):
        if k in d:
            _check_tensor(d[k], f"{where}.{k}", k)


def _jcopy(v: Any) -> Any:
    """A deep copy of JSON-like data (dicts, lists, scalars): ~10x faster than copy.deepcopy,
    which dominated bulk edits of thousands of layers."""
    if isinstance(v, dict):
        return {k: _jcopy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_jcopy(x) for x in v]
    return v


# ------------------------------------------------------------- migration
# version -> function(dict) -> dict of version + 1. Add an entry whenever the
# format changes, and keep a file of the old version under tests/data/.
def _v1_to_v2(obj: dict) -> dict:
    """Version 1 knew one symmetric grid, torch's: keep it (via the default, which every
    layer inherits, since a version-1 file has no other place that names a grid)."""
    default = obj.get("default", {})
    if isinstance(default, dict):  # anything else is reported by validation
        for kind in ("weight", "activation"):
            part = default.get(kind, {})
            if isinstance(part, dict):
                part.setdefault("grid", "torch")
                default[kind] = part
        obj["default"] = default
    obj["version"] = 2
    return obj


def _v2_to_v3(obj: dict) -> dict:
    """Version 3 added ``format``; a version-2 file names none, so every tensor stays ``int``."""
    obj["version"] = 3
    return obj


MIGRATIONS: dict[int, Any] = {1: _v1_to_v2, 2: _v2_to_v3}


def migrate(obj: dict, where: str = "config") -> dict:
    v = obj.get("version")
    if v is None:
        _fail(where, "missing \"version\" (this does not look like a quantviz config)")
    if isinstance(v, bool) or not isinstance(v, int):
        _fail(f"{where}.version", f"must be an integer, got {json.dumps(v)}")
    if v > CURRENT_VERSION:
        _fail(f"{where}.version", f"version {v} is newer than this quantviz understands ({CURRENT_VERSION}); upgrade quantviz")
    if v < 1:
        _fail(f"{where}.version", f"unknown version {v}")
    obj = _jcopy(obj)
    while obj["version"] < CURRENT_VERSION:
        obj = MIGRATIONS[obj["version"]](obj)
    return obj


# ---------------------------------------------------------------- config
def _merge(base: dict, over: dict) -> dict:
    out = _jcopy(base)
    if over.get("format", "int") != "int" and "algorithm" not in over and "algorithm" in out:
        out["algorithm"] = "none"  # a float / block format has no integer grid for an algorithm to fit
        out.pop("algorithm_options", None)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "range":
            out[k] = _merge(out[k], v)
        elif k == "algorithm" and v != out.get(k) and "algorithm_options" not in over:
            out[k] = v  # another algorithm: the old one's options do not carry over
            out.pop("algorithm_options", None)
        elif k == "algorithm_options" and isinstance(v, dict):
            out[k] = _jcopy(v)  # options come whole with their algorithm
        elif k == "range" and isinstance(v, dict) and isinstance(out.get(k), dict):
            # a new method replaces the old range's parameters
            out[k] = _jcopy(v) if "method" in v and v.get("method") != out[k].get("method") else _merge(out[k], v)
        else:
            out[k] = _jcopy(v)
    return out


def _range_spec(r: dict) -> RangeSpec:
    return RangeSpec(method=r.get("method", "minmax"), p=r.get("p"), lo=r.get("lo"), hi=r.get("hi"))


def _format_bits(bits, fmt: str):
    """A float format fixes the element width: ``bits`` then only says quantized or float (None)."""
    if bits is None or fmt == DEFAULT_FORMAT:
        return int(bits) if bits is not None else None
    return NUMBER_FORMAT_DEFS[fmt].bits


def spec_from_dicts(w: dict, a: dict) -> LayerSpec:
    wf, af = w.get("format", DEFAULT_FORMAT), a.get("format", DEFAULT_FORMAT)
    bits = _format_bits(w.get("bits"), wf)
    abits = _format_bits(a.get("bits"), af)
    return LayerSpec(
        weight=WeightSpec(
            bits=int(bits) if bits is not None else None,
            granularity=w.get("granularity", "per_channel"),
            group_size=w.get("group_size"),
            symmetric=bool(w.get("symmetric", True)),
            range=_range_spec(w.get("range", {})),
            algorithm=w.get("algorithm", "none"),
            algorithm_options=options_tuple(w.get("algorithm", "none"), w.get("algorithm_options")),
            grid=w.get("grid", DEFAULT_GRID),
            format=wf,
        ),
        activation=ActSpec(
            bits=int(abits) if abits is not None else None,
            symmetric=bool(a.get("symmetric", False)),
            range=_range_spec(a.get("range", {})),
            grid=a.get("grid", DEFAULT_GRID),
            format=af,
        ),
    )


@dataclass
class QuantConfig:
    default: dict = field(default_factory=dict)
    rules: list = field(default_factory=list)
    layers: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    name: str | None = None
    extra: dict = field(default_factory=dict)  # unknown top-level keys, kept for round trips
    source: str | None = field(default=None, compare=False)  # the file it was read from (named in errors)

    # -------------------------------------------------------- parsing
    @classmethod
    def from_dict(cls, obj: Any, where: str = "config") -> "QuantConfig":
        if not isinstance(obj, dict):
            _fail(where, f"must be a JSON object, got {type(obj).__name__}")
        fmt = obj.get("format")
        if fmt is not None and fmt != FORMAT:
            _fail(f"{where}.format", f"expected \"{FORMAT}\", got {json.dumps(fmt)}")
        obj = migrate(obj, where)
        default = obj.get("default", {})
        _check_partial(default, f"{where}.default")
        rules = obj.get("rules", [])
        if not isinstance(rules, list):
            _fail(f"{where}.rules", "must be a list")
        for i, r in enumerate(rules):
            w = f"{where}.rules[{i}]"
            if not isinstance(r, dict) or not isinstance(r.get("match"), dict):
                _fail(w, "must be an object with a \"match\" object")
            m = r["match"]
            if set(m) - {"type", "pattern"} or not m:
                _fail(f"{w}.match", "must have \"type\" and/or \"pattern\"")
            if "pattern" in m:
                try:
                    re.compile(m["pattern"])
                except (re.error, TypeError) as exc:
                    _fail(f"{w}.match.pattern", f"invalid regular expression: {exc}")
            _check_partial({k: v for k, v in r.items() if k != "match"}, w)
        layers = obj.get("layers", {})
        if not isinstance(layers, dict):
            _fail(f"{where}.layers", "must be an object keyed by layer name")
        for name, d in layers.items():
            _check_partial(d, f"{where}.layers.{name}")
        options = obj.get("options", {})
        if not isinstance(options, dict):
            _fail(f"{where}.options", "must be an object")
        if "fold_bn" in options and not isinstance(options["fold_bn"], bool):
            _fail(f"{where}.options.fold_bn", "must be true or false")
        if "cle" in options and not isinstance(options["cle"], bool):
            _fail(f"{where}.options.cle", "must be true or false (cross-layer equalization of conv -> ReLU -> conv pairs)")
        known = {"format", "version", "default", "rules", "layers", "options", "name"}
        extra = {k: v for k, v in obj.items() if k not in known}
        return cls(_jcopy(default), _jcopy(rules), _jcopy(layers), _jcopy(options),
                   obj.get("name"), _jcopy(extra))

    def to_dict(self) -> dict:
        d: dict = {"format": FORMAT, "version": CURRENT_VERSION}
        if self.name:
            d["name"] = self.name
        d["default"] = _jcopy(self.default)
        if self.rules:
            d["rules"] = _jcopy(self.rules)
        d["layers"] = _jcopy(self.layers)
        if self.options:
            d["options"] = _jcopy(self.options)
        d.update(_jcopy(self.extra))
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def copy(self) -> "QuantConfig":
        """A deep copy (already valid: no parsing or validation again)."""
        c = QuantConfig(_jcopy(self.default), _jcopy(self.rules), _jcopy(self.layers), _jcopy(self.options),
                        self.name, _jcopy(self.extra))
        c.source = self.source
        return c

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QuantConfig) and self.to_dict() == other.to_dict()

    @property
    def fold_bn(self) -> bool:
        return bool(self.options.get("fold_bn", True))

    # ----------------------------------------------------- validation
    def check_layers(self, names: Iterable[str], where: str | None = None) -> None:
        where = where or self.source or "config"
        names = list(names)
        known = set(names)
        for name in self.layers:
            if name not in known:
                close = difflib.get_close_matches(name, names, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                _fail(f"{where}.layers.{name}", f"no quantizable layer of that name in the model{hint}")

    # ----------------------------------------------------- resolution
    def resolve(self, info: LayerInfo) -> LayerSpec:
        w = _merge(BUILTIN_WEIGHT, self.default.get("weight", {}))
        a = _merge(BUILTIN_ACT, self.default.get("activation", {}))
        for r in self.rules:
            m = r["match"]
            if "type" in m and m["type"] != info.type:
                continue
            if "pattern" in m and not re.search(m["pattern"], info.name):
                continue
            w = _merge(w, r.get("weight", {}))
            a = _merge(a, r.get("activation", {}))
        o = self.layers.get(info.name, {})
        w = _merge(w, o.get("weight", {}))
        a = _merge(a, o.get("activation", {}))
        if not info.has_activation_input:
            a = dict(a, bits=None)
        if w.get("format", DEFAULT_FORMAT) != "int" and w.get("algorithm", "none") != "none" and w.get("bits", 1) is not None:
            raise ConfigError(f"layers.{info.name}: " + _FORMAT_ALGORITHM.format(algo=w["algorithm"], fmt=w["format"]))
        return spec_from_dicts(w, a)

    def resolve_all(self, layers: Iterable[LayerInfo]) -> dict[str, LayerSpec]:
        return {l.name: self.resolve(l) for l in layers}

    # -------------------------------------------------------- editing
    def set_layer(self, name: str, patch: dict) -> None:
        """Merge a partial ``{"weight": {...}, "activation": {...}}`` into a layer."""
        _check_partial(patch, f"layers.{name}")
        self.layers[name] = _merge(self.layers.get(name, {}), patch)

    def clear_layer(self, name: str) -> None:
        self.layers.pop(name, None)


def layer_patch_from_spec(spec: LayerSpec) -> dict:
    """A full per-layer entry that reproduces ``spec`` exactly."""
    return spec.to_dict()


def config_from_specs(specs: dict[str, LayerSpec], default: dict | None = None, name: str | None = None) -> QuantConfig:
    cfg = QuantConfig(default=_jcopy(default) if default else {}, name=name)
    for n, s in specs.items():
        cfg.layers[n] = s.to_dict()
    return cfg


def with_grid(cfg: QuantConfig, grid: str) -> QuantConfig:
    """A copy of ``cfg`` in which every symmetric tensor uses the symmetric grid ``grid``
    (set in the default, removed from rules and layers)."""
    if grid not in SYMMETRIC_GRIDS:
        raise ConfigError(f"grid: unknown grid {json.dumps(grid)} (allowed: {', '.join(SYMMETRIC_GRIDS)})")
    out = cfg.copy()
    for kind in ("weight", "activation"):
        out.default[kind] = dict(out.default.get(kind, {}), grid=grid)
    for part in list(out.rules) + list(out.layers.values()):
        for kind in ("weight", "activation"):
            if isinstance(part.get(kind), dict):
                part[kind].pop("grid", None)
    return out


# --------------------------------------------------------------- presets
def _w(bits, granularity="per_channel", group_size=None):
    d = {"bits": bits, "granularity": granularity, "symmetric": True, "range": {"method": "minmax"}, "grid": "full"}
    if group_size:
        d["group_size"] = group_size
    return d


def _f(fmt: str) -> dict:
    return {"bits": NUMBER_FORMAT_DEFS[fmt].bits, "format": fmt, "granularity": "per_channel", "symmetric": True,
            "range": {"method": "minmax"}}


def _fa(fmt: str) -> dict:
    return {"bits": NUMBER_FORMAT_DEFS[fmt].bits, "format": fmt, "symmetric": True, "range": {"method": "minmax"}}


_A8 = {"bits": 8, "symmetric": False, "range": {"method": "minmax"}}
_AF = {"bits": None}

PRESETS: dict[str, dict] = {
    "float": {"weight": {"bits": None}, "activation": _AF},
    "W8A8": {"weight": _w(8), "activation": _A8},
    "W8": {"weight": _w(8), "activation": _AF},
    "W6": {"weight": _w(6), "activation": _AF},
    "W4A8": {"weight": _w(4), "activation": _A8},
    "W4": {"weight": _w(4), "activation": _AF},
    "W4G32": {"weight": _w(4, "per_group", 32), "activation": _AF},
    "W3": {"weight": _w(3), "activation": _AF},
    "W2": {"weight": _w(2), "activation": _AF},
    "FP8": {"weight": _f("fp8_e4m3"), "activation": _AF},
    "W-FP8A-FP8": {"weight": _f("fp8_e4m3"), "activation": _fa("fp8_e4m3")},
    "MXFP8": {"weight": _f("mxfp8_e4m3"), "activation": _AF},
    "MXFP6": {"weight": _f("mxfp6_e2m3"), "activation": _AF},
    "MXFP4": {"weight": _f("mxfp4"), "activation": _AF},
    "NVFP4": {"weight": _f("nvfp4"), "activation": _AF},
    "MXFP4A-MXFP8": {"weight": _f("mxfp4"), "activation": _fa("mxfp8_e4m3")},
}
PRESET_HELP = {
    "float": "nothing quantized (the float model)",
    "W8A8": "weights int8 symmetric per-channel min-max; activations uint8 asymmetric per-tensor min-max",
    "W8": "weights int8 symmetric per-channel min-max; activations float",
    "W6": "weights 6-bit symmetric per-channel min-max; activations float",
    "W4A8": "weights int4 symmetric per-channel min-max; activations uint8 asymmetric per-tensor min-max",
    "W4": "weights int4 symmetric per-channel min-max; activations float",
    "W4G32": "weights int4 symmetric per-group (32) min-max; activations float",
    "W3": "weights 3-bit symmetric per-channel min-max; activations float",
    "W2": "weights 2-bit symmetric per-channel min-max; activations float",
    "FP8": "weights FP8 E4M3 with a per-channel FP32 scale (amax / 448); activations float",
    "W-FP8A-FP8": "weights FP8 E4M3 per-channel; activations FP8 E4M3 with a calibrated per-tensor scale",
    "MXFP8": "weights MXFP8 (E4M3 elements, E8M0 scale per block of 32); activations float",
    "MXFP6": "weights MXFP6 (E2M3 elements, E8M0 scale per block of 32); activations float",
    "MXFP4": "weights MXFP4 (E2M1 elements, E8M0 scale per block of 32: 4.25 bits); activations float",
    "NVFP4": "weights NVFP4 (E2M1 elements, E4M3 scale per block of 16, FP32 per tensor: 4.5 bits); activations float",
    "MXFP4A-MXFP8": "weights MXFP4; activations MXFP8 E4M3 (block scales computed on the fly)",
}


# llama.cpp's file-type mixes (quantviz.io.gguf_export.llama_preset_config): which layer gets which type
# depends on the model's layers, so they resolve once a model is open (NeedsModel, kind "llama-preset")
LLAMA_PRESETS = ("Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")


def preset(name: str) -> QuantConfig:
    key = {k.lower(): k for k in PRESETS}.get(str(name).lower())
    llama = {k.lower(): k for k in LLAMA_PRESETS}.get(str(name).lower())
    if key is None and llama is not None:
        exc = NeedsModel(f"preset {llama} is llama.cpp's mix for this model's layers (needs the model)", None,
                         "llama-preset")
        exc.preset = llama
        raise exc
    if key is None:
        raise ConfigError(f"unknown preset {name!r} (choose from {', '.join(list(PRESETS) + list(LLAMA_PRESETS))})")
    return QuantConfig(default=_jcopy(PRESETS[key]), name=key)


# ------------------------------------------------------------------ files
# Files quantviz writes that carry a config: the config itself, a JSON export
# and a session file (both embed it under "config"). AIMET encodings carry
# one too, but reading them needs the model (see Session.load_config_file).
EMBEDDING_FORMATS = ("quantviz-export", "quantviz-session")


class NeedsModel(ConfigError):
    """The file holds a config only a model can read (AIMET encodings, a GGUF's tensor types)."""

    def __init__(self, message: str, path: Path | None = None, kind: str = "aimet"):
        super().__init__(message)
        self.path = path
        self.kind = kind


def is_aimet_encodings(obj: Any) -> bool:
    return isinstance(obj, dict) and "format" not in obj and (
        "param_encodings" in obj or "activation_encodings" in obj)


def config_kind(obj: Any) -> str:
    """"config", "export", "session", "aimet" or "unknown" for a parsed JSON file."""
    if is_aimet_encodings(obj):
        return "aimet"
    fmt = obj.get("format") if isinstance(obj, dict) else None
    return {FORMAT: "config", "quantviz-export": "export", "quantviz-session": "session"}.get(fmt, "unknown")


def config_from_document(obj: Any, where: str = "config") -> QuantConfig:
    """The config of any config-bearing document quantviz writes."""
    kind = config_kind(obj)
    if kind in ("export", "session"):
        inner = obj.get("config")
        if not isinstance(inner, dict):
            _fail(f"{where}", f"a {obj['format']} file without an embedded \"config\"")
        return QuantConfig.from_dict(inner, f"{where}: config")
    if kind == "aimet":
        raise NeedsModel(f"{where}: AIMET encodings are read against a model (open one first)")
    if isinstance(obj, dict) and obj.get("format") not in (None, FORMAT):
        _fail(f"{where}.format", f"expected one of \"{FORMAT}\", "
              + ", ".join(f'"{f}"' for f in EMBEDDING_FORMATS) + f" or AIMET encodings, got {json.dumps(obj.get('format'))}")
    return QuantConfig.from_dict(obj, where)


def parse_config_text(text: str, where: str = "config") -> QuantConfig:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    return config_from_document(obj, where)


def load_config(path: str | Path) -> QuantConfig:
    p = Path(path)
    try:
        with open(p, "rb") as f:
            if f.read(4) == b"GGUF":  # a llama.cpp model: its tensor types become a config on the open model
                raise NeedsModel(f"{p}: a GGUF file (its per-tensor types are read against the open model)", p, "gguf")
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a folder, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read ({exc.strerror})") from None
    if not raw.strip():
        raise ConfigError(f"{p}: empty file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a text file (a quantviz config is JSON)") from None
    try:
        cfg = parse_config_text(text, p.name)
    except NeedsModel as exc:
        exc.path = p
        raise
    cfg.source = p.name
    return cfg


def save_config(cfg: QuantConfig, path: str | Path, *, force: bool = True) -> Path:
    return atomic.write_text(path, cfg.to_json(), force=force)
