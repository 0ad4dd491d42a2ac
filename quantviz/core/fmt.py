"""How quantviz writes numbers for people: metrics, bytes and bits.

One module for the CLI, the app and the HTML report, so a value reads the
same everywhere. Plain Python (no Qt, no torch).
"""
from __future__ import annotations

import math

PERCENT_METRICS = ("accuracy", "top1_agreement")
IDENTICAL_DB = 199.9  # SQNR at or above this is shown as "identical" (the cap is 200 dB)

METRIC_LABELS = {
    "accuracy": "accuracy",
    "top1_agreement": "top-1 agreement",
    "sqnr_db": "output SQNR",
    "cosine": "cosine",
    "perplexity": "perplexity",
    "kl_div": "KL divergence",
}
METRIC_UNITS = {"accuracy": "%", "top1_agreement": "%", "sqnr_db": "dB"}


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and not math.isfinite(v) and not (v == math.inf))


def fmt_metric(name: str, v: float | None, band=None, missing: str = "–") -> str:
    """``accuracy 0.9899`` -> ``"98.99%"``; SQNR in dB (``"identical"`` at the cap); with a
    ``band`` (lo, hi), the half-width as ``± ...`` (a streamed estimate)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return missing
    half = None
    if band and all(b is not None and math.isfinite(b) for b in band):
        half = max(v - band[0], band[1] - v)
    if name in PERCENT_METRICS:
        return f"{v * 100:.2f}%" if half is None else f"{v * 100:.1f}% ± {half * 100:.1f}"
    if name == "sqnr_db":
        if v >= IDENTICAL_DB:
            return "identical"
        if v == -math.inf:
            return "-∞ dB"
        return f"{v:.1f} dB" if half is None else f"{v:.1f} ± {half:.1f} dB"
    if name == "cosine":
        return f"{v:.5f}" if half is None else f"{v:.4f} ± {half:.4f}"
    return f"{v:.4g}" if half is None else f"{v:.4g} ± {half:.2g}"


def fmt_drop(name: str, d: float | None, missing: str = "–") -> str:
    """A change against float, signed: ``+1.25 pt`` for percentages, else the metric's own unit."""
    if d is None or (isinstance(d, float) and math.isnan(d)):
        return missing
    if name in PERCENT_METRICS:
        return f"{d * 100:+.2f} pt"
    if name == "sqnr_db":
        return f"{d:+.1f} dB"
    return f"{d:+.3g}"


def metric_label(name: str) -> str:
    """A metric's name for axis labels and headers, with its unit: ``"accuracy (%)"``."""
    label = METRIC_LABELS.get(name, name.replace("_", " "))
    unit = METRIC_UNITS.get(name)
    return f"{label} ({unit})" if unit else label


def fmt_bytes(n: float | None, missing: str = "–") -> str:
    """``1536`` -> ``"1.5 KB"`` (binary units, as every size in quantviz)."""
    if n is None:
        return missing
    n = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def size_unit(max_bytes: float) -> tuple[str, float]:
    """The unit an axis of sizes up to ``max_bytes`` reads best in: ``("MB", 1048576.0)``."""
    for unit, div in (("GB", 1024.0 ** 3), ("MB", 1024.0 ** 2), ("KB", 1024.0)):
        if max_bytes >= div * 2:
            return unit, div
    return ("KB", 1024.0) if max_bytes >= 1024 else ("B", 1.0)  # a toy model: not "0.3 KB" (or "x0.001")


def fmt_bits(b: int | float | None) -> str:
    """Bits of a tensor: ``"float"`` when unquantized."""
    if b is None:
        return "float"
    return str(int(b)) if float(b).is_integer() else f"{b:.2f}"


def ordinal(n: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``4th``, ``11th``, ``12th``, ``13th``, ``21st`` ..."""
    n = int(n)
    suffix = "th" if n % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def every_nth(n: int, what: str) -> str:
    """``every 2nd weight`` (``every weight`` for 1)."""
    return f"every {what}" if int(n) == 1 else f"every {ordinal(n)} {what}"


__all__ = ["ordinal", "every_nth", "fmt_metric", "fmt_drop", "fmt_bytes", "fmt_bits", "metric_label", "size_unit", "METRIC_LABELS"]
