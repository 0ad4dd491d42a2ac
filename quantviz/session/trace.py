"""The session's error trace: run :func:`quantviz.core.analysis.trace.trace` for the current config and keep it.

The result is stored as ``session.analysis.trace`` and announced with
``analysis_changed`` (``what="trace"``), like the other analyses. A trace of
the same data and calibration is reused: only the layers whose settings
changed since are recomputed (see the core module).
"""
from __future__ import annotations

from typing import Callable

from ..core.errors import QuantvizError
from ..core.progress import Progress, null_progress
from ..core.analysis.trace import DEFAULT_BUDGET_BYTES, TraceResult, trace



def trace_data(session, samples: int | None = None):
    """The evaluation data (its first ``samples`` samples when given)."""
    data = session.eval_data
    if samples is not None:
        if samples < 1:
            raise QuantvizError(f"trace: samples must be at least 1, got {samples}")
        if samples < len(data):
            data = data.subset(samples, name=f"{data.name} (first {samples})")
    return data


def run_trace(session, *, samples: int | None = None, incremental: bool = True,
              budget_bytes: int = DEFAULT_BUDGET_BYTES, on_partial: Callable[[TraceResult], None] | None = None,
              progress: Progress = null_progress, cancel: Callable[[], bool] = lambda: False) -> TraceResult:
    """Trace the current config on the evaluation data, store the result, emit ``analysis_changed``."""
    if not session.prepared:
        raise QuantvizError("the session is not prepared (calibration and float reference missing)")
    with session.lock:
        cfg = session.config.copy()
        specs = session.specs  # immutable (a SpecMap): kept as the basis without a copy
        data = trace_data(session, samples)
        # the weights the simulation holds (trained ones after QAT: session.qat) count like the data
        basis = (session.sim, session.sim.act_obs, session.eval_data, (len(data), session.config.options.get("weights")))
        prev = session.analysis.trace
        changed = None
        # (its kept trace, what it was computed against (compared by identity), the resolved specs traced):
        # a new calibration or data set starts over
        old = session._trace_basis
        if incremental and prev is not None and old is not None and old[0] is prev \
                and all(a is b for a, b in zip(old[1][:3], basis[:3])) and old[1][3] == basis[3]:
            changed = list(specs.changed_from(old[2]))
            if not changed:
                return prev  # this very config was traced last: nothing to do, nothing new to announce
        res = trace(session.sim, specs, data, batch_size=session.batch_size, budget_bytes=budget_bytes,
                    previous=prev if changed is not None else None, changed=changed,
                    label=session.history.undo_label or cfg.name or "current config", on_partial=on_partial,
                    progress=progress, cancel=cancel,
                    float_model=session.untrained_float_model())  # after QAT: errors against the untrained float
        res.config = cfg.to_dict()
        session.analysis.trace = res
        session._trace_basis = (res, basis, specs)
    session.events.emit("analysis_changed", what="trace")
    return res


__all__ = ["run_trace", "trace_data"]
