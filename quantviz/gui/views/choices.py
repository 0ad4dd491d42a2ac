"""What each editable field of the layer table can be set to, with a line of help per choice
(the cell editors and the bulk-edit menus read these)."""
from __future__ import annotations

from ...core.algorithms.options import DESCRIPTIONS as ALGORITHM_HELP
from ...core.numerics.formats import FORMATS
from ...core.numerics.qparams import MAX_BITS, MIN_BITS
from ...core.numerics.spec import ALGORITHMS, GRANULARITIES, NUMBER_FORMATS, RANGE_METHODS, SYMMETRIC_GRIDS, WEIGHT_ONLY_FORMATS


def _format_help(f: str) -> str:
    if f == "int":
        return "integer grid (bits, granularity, grid)"
    fmt = FORMATS[f]
    if fmt.scale == "ggml":
        t = fmt.gtype
        return (f"llama.cpp {t.name}: {t.code_bits}-bit codes, a scale{' and minimum' if t.affine else ''} per "
                f"{t.sub} weights, {t.bits_per_weight:g} bits per weight (weights only)")
    return (f"{fmt.element.name.upper()} elements, {fmt.bits_per_element():g} bits per value"
            + (f" with a scale per block of {fmt.block}" if fmt.block else " with an FP32 scale"))
from .columns import GRAN_LABEL

BIT_CHOICES = [None] + ([16] if MAX_BITS >= 16 else []) + list(range(min(MAX_BITS, 8), MIN_BITS - 1, -1))
RANGE_HELP = {
    "minmax": "the full range of the values",
    "percentile": "clip at the 99.99th percentile of |x|",
    "mse": "the clip range that minimises the mean squared error",
    "kl": "the clip range that minimises the KL divergence of the histogram",
    "manual": "a range set by dragging on the histogram",
}
GRID_HELP = {
    "full": "[-2^(b-1), 2^(b-1)-1], scale = max(max / qmax, min / qmin): both ends of the range on the grid, "
            "nothing clipped (AIMET's rule; the default)",
    "torch": "[-2^(b-1), 2^(b-1)-1], scale = max|x| / ((qmax - qmin) / 2) as torch's observers: max|x| falls on a "
             "rounding tie and a positive maximum is clipped to qmax",
    "restricted": "[-(2^(b-1)-1), 2^(b-1)-1], scale = max|x| / qmax: one level fewer, symmetric around 0 "
                  "(many inference backends)",
}
GRAN_HELP = {
    "per_tensor": "one scale for the whole weight tensor",
    "per_channel": "one scale per output channel: each filter gets its own range",
    "per_group": "one scale per group of 32 values within a channel (finer, more overhead)",
}


def choices(field: str) -> list[tuple[str, object, str]]:
    """(label, value, tooltip) of what a field can be set to."""
    if field in ("weight_bits", "act_bits"):
        return [("float" if b is None else f"{b} bits", b,
                 "keep it unquantized" if b is None else f"{2 ** b} levels") for b in BIT_CHOICES]
    if field == "granularity":
        return [(GRAN_LABEL[g], g, GRAN_HELP[g]) for g in GRANULARITIES]
    if field in ("format", "act_format"):
        return [("int" if f == "int" else FORMATS[f].label, f, _format_help(f))
                for f in NUMBER_FORMATS if field == "format" or f not in WEIGHT_ONLY_FORMATS]
    if field == "algorithm":
        return [(a, a, ALGORITHM_HELP[a]) for a in ALGORITHMS]
    if field in ("grid", "act_grid"):
        return [(g, g, GRID_HELP[g] + " (symmetric grids only)") for g in SYMMETRIC_GRIDS]
    methods = [m for m in RANGE_METHODS if m != "manual"]
    return [(m, m, RANGE_HELP[m]) for m in methods]


FIELD_LABELS = {"weight_bits": "Weight bits", "act_bits": "Activation bits", "granularity": "Granularity",
                "format": "Weight format", "act_format": "Activation format",
                "grid": "Weight grid", "act_grid": "Activation grid",
                "range": "Weight range", "act_range": "Activation range", "algorithm": "Algorithm"}
