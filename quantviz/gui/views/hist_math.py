"""Qt-free text for the histogram panel: the live statistics line and the notes."""
from __future__ import annotations

import math


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
    parts = [f"{p['levels_total']} levels"]
    if p["levels_step"] > 1:
        parts[0] += f" (every {p['levels_step']}th drawn)"
    if p["granularity"] != "per_tensor":
        parts.append(f"{p['granularity']}: the band is the range of the whole tensor, each of the "
                     f"{p['groups']} groups clips to its own range within it; levels shown for the widest group")
    if p["symmetric"]:
        parts.append(grid_note(p))
    if p.get("sample_stride", 1) > 1:
        parts.append(f"histogram from every {p['sample_stride']}th weight")
    if p.get("algorithm_note"):
        parts.append(p["algorithm_note"])
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
