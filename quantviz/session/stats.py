"""Per-layer statistics for the layer table, computed off the GUI thread."""
from __future__ import annotations

from typing import Callable

from ..core.spec import LayerSpec


def layer_stats(session, items: list[tuple[str, LayerSpec]], cancel: Callable[[], bool] = lambda: False) -> dict:
    """Weight / activation SQNR for ``(name, spec)`` pairs (worker thread, lock-free).

    Reads only the float weights and the calibration histograms, which a
    re-check never changes, and the simulation's per-spec weight cache.
    Returns ``{(name, spec): {"weight_sqnr_db", "act_sqnr_db", "clipped", "error"}}``.
    """
    sim = session.sim
    out = {}
    for name, spec in items:
        if cancel():
            break
        info = sim.by_name[name]
        stats = {"weight_sqnr_db": None, "act_sqnr_db": None, "clipped": None, "error": None}
        try:
            wq = sim.quantize_weight(name, spec.weight)
            if wq is not None:
                stats["weight_sqnr_db"] = wq.sqnr_db
                stats["clipped"] = wq.clipped_fraction
            if info.has_activation_input and spec.activation.bits is not None and sim.calibrated:
                stats["act_sqnr_db"] = sim.activation_sqnr(name, spec.activation)
        except Exception as exc:  # noqa: BLE001 - shown in the cell's tooltip
            stats["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        out[(name, spec)] = stats
    return out


__all__ = ["layer_stats"]
