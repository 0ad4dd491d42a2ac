"""The layer table's columns, one entry each: header, help, how a cell reads and, for
editable columns, how an edit becomes a config patch.

Adding a column (or a bulk-edit field) is one entry here; the Qt model
(:mod:`.layer_model`) dispatches on these entries and knows no column by name,
except the two whose values live outside the spec (statistics and sensitivity,
``kind`` ``"stats"`` / ``"sensitivity"``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from ...core.fmt import fmt_bits, fmt_bytes
from ...core.numerics.formats import FORMATS
from ...core.model.size import layer_weight_bytes

GRAN_LABEL = {"per_tensor": "per-tensor", "per_channel": "per-channel", "per_group": "per-group"}


@dataclass(frozen=True)
class Field:
    """One setting a user can edit: the current value, the config patch, the words for undo."""

    key: str
    label: str  # for the undo entry: "weight bits = 4 on conv1"
    get: Callable  # spec -> the editor's value
    patch: Callable  # value -> {"weight" | "activation": {...}}
    activation: bool = False  # applies only to layers whose input is quantizable


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    tip: str
    cell: Callable | None = None  # (info, spec) -> (display text, sort key)
    field: Field | None = None  # set when the column is editable
    kind: str = "spec"  # "spec", "stats" (computed in the background) or "sensitivity"
    right: bool = False  # right-aligned (numbers)
    hide_rank: int = 0  # 0: always shown; else hidden when the window is narrow, the highest rank first

    @property
    def editable(self) -> bool:
        return self.field is not None


def _range_patch(kind: str) -> Callable:
    def patch(value) -> dict:
        r = {"method": value}
        if value == "percentile":
            r["p"] = 99.99
        return {kind: {"range": r}}
    return patch


def _bits_cell(b) -> tuple[str, int]:
    return fmt_bits(b), (99 if b is None else b)


def _act_bits(info, spec):
    return ("—", 100) if not info.has_activation_input else _bits_cell(spec.activation.bits)


def _block(spec):
    f = FORMATS.get(spec.weight.format)
    return f.block if f is not None and f.is_block and spec.weight.bits is not None else None


def _granularity(info, spec):
    if _block(spec):
        g = f"block ({_block(spec)})"
        return g, g
    g = GRAN_LABEL.get(spec.weight.granularity, spec.weight.granularity)
    if spec.weight.granularity == "per_group":
        g += f" ({spec.weight.effective_group_size()})"
    return g, g


def _grid(info, spec):
    if spec.weight.bits is None or spec.weight.format != "int":
        return "—", ""
    g = spec.weight.grid if spec.weight.symmetric else "asym"
    return g, g


def _act_range(info, spec):
    if not info.has_activation_input or spec.activation.bits is None:
        return "—", ""
    d = spec.activation.range.describe()
    return d, d


def _format_patch(kind: str) -> Callable:
    """A format change; a float format also turns the tensor on (bits = its element width)."""
    def patch(value) -> dict:
        d = {"format": value}
        if value != "int":
            d["bits"] = FORMATS[value].bits
        return {kind: d}
    return patch


def _format_cell(fmt: str, bits) -> tuple[str, str]:
    if bits is None:
        return "—", ""
    f = FORMATS.get(fmt)
    return (f.label, f.name) if f is not None else ("int", "int")


def _act_format(info, spec):
    if not info.has_activation_input:
        return "—", ""
    return _format_cell(spec.activation.format, spec.activation.bits)


def _size(info, spec):
    n = layer_weight_bytes(info, spec)
    return fmt_bytes(n, missing=""), n


FIELDS = {f.key: f for f in (
    Field("weight_bits", "weight bits", lambda s: s.weight.bits, lambda v: {"weight": {"bits": v}}),
    Field("act_bits", "activation bits", lambda s: s.activation.bits, lambda v: {"activation": {"bits": v}}, True),
    Field("format", "weight format", lambda s: s.weight.format, _format_patch("weight")),
    Field("act_format", "activation format", lambda s: s.activation.format, _format_patch("activation"), True),
    Field("granularity", "granularity", lambda s: s.weight.granularity, lambda v: {"weight": {"granularity": v}}),
    Field("grid", "weight grid", lambda s: s.weight.grid, lambda v: {"weight": {"grid": v}}),
    Field("act_grid", "activation grid", lambda s: s.activation.grid, lambda v: {"activation": {"grid": v}}, True),
    Field("range", "weight range", lambda s: s.weight.range.method, _range_patch("weight")),
    Field("act_range", "activation range", lambda s: s.activation.range.method, _range_patch("activation"), True),
    Field("algorithm", "algorithm", lambda s: s.weight.algorithm, lambda v: {"weight": {"algorithm": v}}),
)}

TABLE = [
    Column("name", "Layer", "The module's full name in the model; dots show the hierarchy (features.3 is child 3 "
           "of features).", lambda i, s: (i.name, i.index)),
    Column("type", "Type", "The module type (Conv2d, Linear, Embedding, ...).", lambda i, s: (i.type, i.type),
           hide_rank=2),
    Column("params", "Params", "Number of parameters of the layer (weight and bias).",
           lambda i, s: (f"{i.params:,}", i.params), right=True, hide_rank=1),
    Column("weight_bits", "W bits", "Bits per weight value; 'float' keeps the weight unquantized. Double-click to "
           "change.", lambda i, s: _bits_cell(s.weight.bits), FIELDS["weight_bits"], right=True),
    Column("act_bits", "A bits", "Bits of this layer's input activation; 'float' keeps it unquantized, '—' when the "
           "input is not a float tensor.", _act_bits, FIELDS["act_bits"], right=True),
    Column("format", "W format", "The weight's number format: int (the integer grid set by bits, granularity and "
           "grid) or a float / block format: FP8 E4M3 / E5M2, MXFP8 / MXFP6 / MXFP4 / MXINT8 (OCP microscaling: an "
           "E8M0 power-of-two scale per block of 32) or NVFP4 (E2M1, an E4M3 scale per block of 16). Double-click to "
           "change.", lambda i, s: _format_cell(s.weight.format, s.weight.bits), FIELDS["format"], hide_rank=4),
    Column("act_format", "A format", "The input activation's number format: FP8 with a calibrated per-tensor scale, or "
           "MX / NVFP4 with block scales computed on the fly.", _act_format, FIELDS["act_format"], hide_rank=7),
    Column("weight_sqnr_db", "W SQNR", "Signal-to-quantization-noise ratio of the weight: 10·log10(Σw² / Σ(w−q(w))²). "
           "Higher is better; each extra bit adds about 6 dB.", kind="stats", right=True),
    Column("act_sqnr_db", "A SQNR", "SQNR of quantizing this layer's input activation, estimated from the calibration "
           "histogram.", kind="stats", right=True),
    Column("granularity", "Granularity", "How many scales the weight gets: one per tensor, one per output channel "
           "(per-channel), or one per group of values within a channel (per-group).", _granularity,
           FIELDS["granularity"], hide_rank=3),
    Column("grid", "W grid", "The weight's symmetric grid: full [-2^(b-1), 2^(b-1)-1] with both range ends on it "
           "(nothing clipped), torch (torch observers' scale: max|w| on a rounding tie, the top clipped) or restricted "
           "[-(2^(b-1)-1), 2^(b-1)-1]. Asymmetric weights ignore it ('asym').", _grid, FIELDS["grid"], hide_rank=6),
    Column("range", "W range", "How the weight clip range is chosen: min-max, a percentile of |w|, the range "
           "minimising MSE, KL divergence, or a manual range dragged on the histogram.",
           lambda i, s: ("block max",) * 2 if _block(s) else (s.weight.range.describe(),) * 2, FIELDS["range"]),
    Column("act_range", "A range", "How the activation clip range is chosen from the calibration histogram.",
           _act_range, FIELDS["act_range"]),
    Column("algorithm", "Algorithm", "Post-training algorithm for this weight: round to nearest (none), AdaRound's "
           "learned rounding, GPTQ's error compensation, bias correction, SmoothQuant / AWQ scaling. It runs on the "
           "calibration data with the next re-check ('pending' until then). Algorithms fit integer grids: a layer in a "
           "float / block format shows '—'.",
           lambda i, s: ((s.weight.algorithm,) * 2 if s.weight.bits is not None and s.weight.format == "int"
                         else ("—", "")), FIELDS["algorithm"],
           hide_rank=5),
    Column("size_bytes", "Size", "Storage of this layer's weight under its settings, including scales and zero "
           "points.", _size, right=True),
    Column("sensitivity", "Sensitivity", "How much the model's metric drops when only this layer is quantized "
           "(filled in once sensitivity is computed).", kind="sensitivity", right=True),
]
COL = {c.key: i for i, c in enumerate(TABLE)}


def stats_cell(key: str, info, spec, stats: dict | None) -> tuple[str, float] | None:
    """A statistics cell: '—' where nothing is quantized, None while not computed yet."""
    if key == "weight_sqnr_db" and spec.weight.bits is None:
        return "—", math.inf
    if key == "act_sqnr_db" and (not info.has_activation_input or spec.activation.bits is None):
        return "—", math.inf
    if stats is None:
        return None
    if key == "weight_sqnr_db" and stats.get("pending"):
        return "pending", -math.inf  # a per-layer algorithm the next re-check computes
    v = stats.get(key)
    if v is None:
        return ("error" if stats.get("error") else "—"), -math.inf
    return ("∞ dB" if math.isinf(v) else f"{v:.1f} dB"), v


def edit_label(key: str, value, names: list[str]) -> str:
    v = "float" if value is None else value
    target = names[0] if len(names) == 1 else f"{len(names)} layers"
    return f"{FIELDS[key].label} = {v} on {target}"


__all__ = ["Column", "Field", "TABLE", "FIELDS", "COL", "GRAN_LABEL", "stats_cell", "edit_label"]
