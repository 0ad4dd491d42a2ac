"""Names and options of the per-layer PTQ algorithms (no torch: the config layer uses it).

Each algorithm has a small set of options with defaults; a config names an
algorithm as ``"algorithm": "gptq"`` and may set options as
``"algorithm_options": {"act_order": true}``. Specs store the options that
differ from the defaults as sorted ``(key, value)`` pairs, so two spellings of
the same settings key the same cache entry.
"""
from __future__ import annotations

import json

from ..numerics.spec import ALGORITHMS

# option -> (type, default, check, description)
OPTIONS: dict[str, dict[str, tuple]] = {
    "none": {},
    "adaround": {
        "iterations": (int, 2000, lambda v: 10 <= v <= 100000, "optimisation steps (10..100000)"),
        "reg": (float, 0.001, lambda v: 0 < v <= 10, "weight of the rounding regulariser (relative to the rounding-to-nearest loss), (0, 10]"),
        "lr": (float, 0.01, lambda v: 0 < v <= 1, "Adam learning rate, (0, 1]"),
    },
    "gptq": {
        "damp": (float, 0.01, lambda v: 0 < v <= 1, "damping as a fraction of the mean Hessian diagonal, (0, 1]"),
        "act_order": (bool, False, lambda v: True, "quantize columns in order of decreasing Hessian diagonal"),
        "block_size": (int, 128, lambda v: 1 <= v <= 4096, "columns per lazy-update block (1..4096)"),
    },
    "bias_correction": {},
    "smoothquant": {
        "alpha": (float, 0.5, lambda v: 0 <= v <= 1, "migration strength, [0, 1]"),
    },
    "awq": {
        "grid": (int, 20, lambda v: 2 <= v <= 200, "exponents tried in [0, 1) (2..200)"),
    },
}
DESCRIPTIONS = {
    "none": "round to nearest",
    "adaround": "learned rounding (AdaRound), layer-wise reconstruction on calibration data",
    "gptq": "GPTQ: second-order error compensation column by column",
    "bias_correction": "empirical bias correction of the output mean",
    "smoothquant": "SmoothQuant: migrate activation outliers into the weights (Linear)",
    "awq": "AWQ: activation-aware per-input-channel weight scaling (Linear)",
}
assert set(OPTIONS) == set(ALGORITHMS)


def check_algorithm(name, options) -> tuple[str, str] | None:
    """``None`` when valid, else ``(field, message)`` for a one-line config error."""
    if name is not None and name not in ALGORITHMS:
        return "algorithm", f"unknown algorithm {json.dumps(name)} (allowed: {', '.join(ALGORITHMS)})"
    if options is None:
        return None
    if not isinstance(options, dict):
        return "algorithm_options", f"must be an object, got {json.dumps(options)}"
    if name is None:
        known: dict = {}
        for d in OPTIONS.values():
            known.update(d)
    else:
        known = OPTIONS[name]
    for k, v in options.items():
        if k not in known:
            allowed = ", ".join(sorted(known)) or "none"
            return f"algorithm_options.{k}", f"unknown option for {name or 'any algorithm'} (allowed: {allowed})"
        typ, _, ok, desc = known[k]
        good_type = (isinstance(v, bool) if typ is bool else
                     (isinstance(v, int) and not isinstance(v, bool)) if typ is int else
                     (isinstance(v, (int, float)) and not isinstance(v, bool)))
        if not good_type or not ok(typ(v)):
            return f"algorithm_options.{k}", f"must be {desc}, got {json.dumps(v)}"
    return None


def options_tuple(name: str, options: dict | None) -> tuple:
    """The options that differ from the defaults, as sorted pairs (unknown keys dropped)."""
    known = OPTIONS.get(name, {})
    out = []
    for k, v in (options or {}).items():
        if k in known:
            typ, default = known[k][0], known[k][1]
            v = typ(v)
            if v != default:
                out.append((k, v))
    return tuple(sorted(out))


def option(spec, key: str):
    """An option of ``spec``'s algorithm (its default when unset)."""
    return dict(spec.algorithm_options).get(key, OPTIONS[spec.algorithm][key][1])
