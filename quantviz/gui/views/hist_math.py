"""Qt-free text for the histogram panel: the live statistics line and the notes."""
from __future__ import annotations

import math

from ...core.fmt import every_nth


def _db(v: float) -> str:
    return ("∞" if v > 0 else "-∞") if math.isinf(v) else f"{v:.1f}"


def fmt_stats(p: dict, baseline: dict | None = None) -> str:
    """'SQNR 34.2 dB · MSE 1.2e-05 · clipped 0.31%', with the config's SQNR while dragging."""
    sq = f"SQNR {_db(p['sqnr_db'])} dB"
    if baseline is not None and "sqnr_db" in baseline:
        sq += f" (config {baseline['range']}: {_db(baseline['sqnr_db'])} dB)"
    return f"{sq} · MSE {p['mse']:.2g} · clipped {100 * p['clipped']:.2f}%"


def weight_note(p: dict) -> str:
    """The explanatory line under the weight statistics (levels, granularity, symmetry)."""
    if p.get("float"):
        return "This layer's weights stay float (bits = null): the clip range cannot be edited."
    if p.get("format"):
        return format_note(p)
    parts = [f"{p['levels_total']} levels"]
    if p["levels_step"] > 1:
        parts[0] += f" ({every_nth(p['levels_step'], 'drawn')})"
    if p["granularity"] != "per_tensor":
        parts.append(f"{p['granularity']}: the band is the range of the whole tensor, each of the "
                     f"{p['groups']} groups clips to its own range within it; levels shown for the widest group")
    if p["symmetric"]:
        parts.append(grid_note(p))
    if p.get("sample_stride", 1) > 1:
        parts.append(f"histogram from {every_nth(p['sample_stride'], 'weight')}")
    if p.get("algorithm_note"):
        parts.append(p["algorithm_note"])
    return " · ".join(parts)


def format_note(p: dict) -> str:
    """The note for a float / block format: its scale rule and what the band shows."""
    parts = [p["format_note"], f"{p['levels_total']} values (denser near zero)"]
    if p.get("block") and p.get("activation"):
        parts.append("block scales are computed on the fly from each block's maximum; SQNR estimated from "
                     "calibration values drawn into blocks; levels shown for the block holding the observed maximum")
    elif p.get("block"):
        parts.append(f"{p['groups']} block scales follow each block's maximum; the band is the widest block's "
                     f"clip (±scale × element max), levels shown for it")
    elif p.get("groups", 1) > 1:
        parts.append(f"{p['groups']} scales; levels shown for the widest")
    if p.get("sample_stride", 1) > 1:
        parts.append(f"histogram from {every_nth(p['sample_stride'], 'weight')}")
    return " · ".join(parts)


def grid_note(p: dict) -> str:
    """What the symmetric grid rule does with the clip range [lo, hi] (``p`` from a preview)."""
    half = 2 ** (int(p["bits"]) - 1)
    grid = p.get("grid") or "full"
    if grid == "torch":
        return (f"symmetric, torch's grid: step = max(|lo|, |hi|) / {half - 0.5:g}; a positive top is clipped "
                f"(half a step above the last level)")
    if grid == "restricted":
        return f"symmetric, restricted grid: ±max(|lo|, |hi|) on ±{half - 1} steps ({2 * half - 1} levels)"
    return f"symmetric, full grid: lo on −{half} steps or hi on +{half - 1} (larger step wins); nothing inside [lo, hi] is clipped"


def format_label(name: str) -> str:
    """'MXFP4 (4.25 bits/value)' for a format name of quantviz.core.numerics.formats."""
    from ...core.numerics.formats import FORMATS

    f = FORMATS.get(name)
    if f is None:
        return name
    return f"{f.label} ({f.bits_per_element():g} bits/value)" if f.is_block else f.label
