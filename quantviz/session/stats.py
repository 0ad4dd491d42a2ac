"""Per-layer statistics for the layer table, computed off the GUI thread."""
from __future__ import annotations

from typing import Callable

from ..core.numerics.spec import LayerSpec


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
            # a per-layer algorithm's result comes from the re-check job: never run it here ("pending")
            wq = sim.quantize_weight(name, spec.weight, compute=False)
            if wq is None and spec.weight.bits is not None:
                stats["pending"] = True
            if wq is not None:
                stats["weight_sqnr_db"] = wq.sqnr_db
                stats["clipped"] = wq.clipped_fraction
                if wq.algorithm_info:
                    from ..core.numerics.preview import algorithm_text

                    stats["algorithm"] = algorithm_text(wq.algorithm_info)
            if info.has_activation_input and spec.activation.bits is not None and sim.calibrated:
                stats["act_sqnr_db"] = sim.activation_sqnr(name, spec.activation)
        except Exception as exc:  # noqa: BLE001 - shown in the cell's tooltip
            stats["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        out[(name, spec)] = stats
    return out


__all__ = ["layer_stats"]
