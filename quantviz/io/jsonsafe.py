"""Strict JSON for files quantviz writes: no NaN or Infinity."""
from __future__ import annotations

import math


def sanitize(obj):
    """Replace non-finite floats by None, recursively (for strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [sanitize(v) for v in obj]
    return obj


__all__ = ["sanitize"]
