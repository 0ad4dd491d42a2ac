"""Sensitivity methods by name: :func:`run` dispatches to the sweeps
(:func:`.sensitivity.sweep`: ``e2e``, ``loo``) or the proxies
(:mod:`.proxies`: ``local``, ``hessian``); :func:`matches` tells whether a
stored result was computed for the same inputs and settings."""
from __future__ import annotations

from typing import Callable

from . import proxies
from .candidates import Candidate, as_json, normalize
from ..progress import Progress, null_progress
from .sensitivity import DEFAULT_BITS, METHODS, Parts, SensitivityError, fingerprint, sweep


def run(parts: Parts, method: str = "e2e", *, bits=DEFAULT_BITS, act_bits=(), progress: Progress = null_progress,
        cancel: Callable[[], bool] = lambda: False, store=None, executor=None, **options) -> dict:
    """Run sensitivity ``method`` and return its result (``options`` go to the method:
    ``sketch``/``sketch_ratio`` for local, ``iters``/``max_samples`` for hessian).

    ``store`` (a per-sweep cache, ``get``/``put`` per cell and ``get_result``/``put_result``
    per finished result) makes a repeated run instant and an interrupted sweep resume;
    ``executor`` (:class:`.raysweep.RayExecutor`) runs the cells or parts elsewhere.
    The simulation is left as it was (``parts.base_specs`` applied)."""
    if method not in METHODS:
        raise SensitivityError(f"unknown sensitivity method {method!r} (choose from {', '.join(METHODS)})")
    bits = normalize(bits)
    act_bits = tuple(sorted({int(b) for b in act_bits})) if method != "hessian" else ()
    if any(isinstance(b, Candidate) for b in bits) and method not in ("e2e", "loo"):
        raise SensitivityError(f"{method}: candidates beyond plain bit-widths need method e2e or loo")
    tag = result_tag(method, bits, act_bits)
    if store is not None:
        hit = store.get_result(tag)
        if hit is not None:
            progress(1, 1, "from the score cache")
            hit["from_cache"] = True
            return hit
    try:
        if method in ("e2e", "loo"):
            res = sweep(parts, method, bits=bits, act_bits=act_bits, store=store, executor=executor,
                        progress=progress, cancel=cancel)
        elif method == "local":
            res = proxies.local(parts, bits=bits, act_bits=act_bits, progress=progress, cancel=cancel,
                                executor=executor, **options)
        else:
            res = proxies.hessian(parts, bits=bits, progress=progress, cancel=cancel, executor=executor, **options)
    finally:
        parts.sim.apply(parts.base_specs)
    res["options"] = dict(options)  # a cached result must match the method's options
    if store is not None:
        store.put_result(tag, res)
    return res


def result_tag(method: str, bits, act_bits) -> str:
    """The name of a finished result in a sweep's store."""
    act = sorted({int(b) for b in act_bits}) if method != "hessian" else []
    return f"{method}:bits={as_json(normalize(bits))}:act={act}"


def matches(result: dict | None, parts: Parts, method: str, bits, act_bits, options: dict) -> bool:
    """Was ``result`` computed for these parts and settings (so it can be reused)?"""
    if not result:
        return False
    act = sorted({int(b) for b in act_bits}) if method != "hessian" else []
    return (result.get("key") == fingerprint(parts) and result.get("bits") == as_json(normalize(bits))
            and result.get("act_bits") == act and result.get("options", {}) == dict(options))


__all__ = ["run", "matches", "result_tag"]
