"""Cost of the error trace relative to one full evaluation, on the demo.

The demo is opened at ``--preset`` (W3 by default). Then, ``--repeats`` times
in alternating order:

* ``full_eval``: one full (non-incremental) re-check of the config, as the app
  runs it (``Session.check(incremental=False)``, the session's batch size);
* ``trace``: a full trace of the same config on the same data
  (``Session.run_trace(incremental=False)``);
* ``trace_after_edit``: one layer's weight bits change (the last layer, 3 -> 8)
  and the trace is updated incrementally from the previous one
  (``Session.run_trace()``), then the edit is undone.

* ``trace_same_batches``: the core trace with chunks no larger than the
  session's batch size (the trace normally grows its chunks up to 4x the
  batch size within its memory budget, which is much of its speed on CPU).

``trace_ratio`` = median trace / median full evaluation (target <= 3);
``trace_ratio_same_batches`` the same with ``trace_same_batches``;
``incremental_ratio`` = median incremental trace after the edit / median full
trace. Medians of interleaved runs, because the machines are shared. The last
line printed is one JSON object.

    python benchmarks/trace.py [--preset W3] [--repeats 7] [--threads N] [--out FILE]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import quantviz  # noqa: E402,F401  (first: it makes OpenMP wait passively before torch loads it)
import torch

from benchmarks._meta import add_out_argument, finish, meta  # noqa: E402
from quantviz.core.analysis.trace import trace  # noqa: E402
from quantviz.io.config import preset  # noqa: E402
from quantviz.session import Session  # noqa: E402

TARGET = 3.0


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="W3")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int)
    add_out_argument(ap)
    args = ap.parse_args(argv)
    started = meta()
    if args.threads:
        torch.set_num_threads(args.threads)
    s = Session.open("demo", config=preset(args.preset))
    s.check(incremental=False, record=False)  # warm up: quantized weights, qparams
    s.run_trace(incremental=False)
    last = s.layers[-1].name
    times = {"full_eval": [], "trace": [], "trace_same_batches": [], "trace_after_edit": []}
    for k in range(args.repeats):
        steps = [("full_eval", lambda: s.check(incremental=False, record=False)),
                 ("trace", lambda: s.run_trace(incremental=False)),
                 ("trace_same_batches", lambda: trace(s.sim, s.specs, s.eval_data, batch_size=s.batch_size,
                                                      max_chunk=s.batch_size))]
        for name, fn in (steps if k % 2 == 0 else steps[::-1]):
            times[name].append(_timed(fn))
        s.edit_layers([last], {"weight": {"bits": 8}})
        times["trace_after_edit"].append(_timed(lambda: s.run_trace()))
        assert s.analysis.trace.recomputed["local"] == 1
        s.undo()
        s.run_trace()
    med = {k: statistics.median(v) for k, v in times.items()}
    res = s.analysis.trace
    drop = res.biggest_drop()
    out = {
        "model": s.name, "preset": args.preset, "samples": len(s.eval_data), "layers": len(s.layers),
        "threads": torch.get_num_threads(), "repeats": args.repeats,
        "full_eval_ms": round(med["full_eval"] * 1000, 2), "trace_ms": round(med["trace"] * 1000, 2),
        "trace_after_edit_ms": round(med["trace_after_edit"] * 1000, 2),
        "trace_same_batches_ms": round(med["trace_same_batches"] * 1000, 2),
        "trace_ratio": round(med["trace"] / med["full_eval"], 3),
        "trace_ratio_same_batches": round(med["trace_same_batches"] / med["full_eval"], 3),
        "incremental_ratio": round(med["trace_after_edit"] / med["trace"], 3),
        "target_trace_ratio": TARGET,
        "meets_target": med["trace"] / med["full_eval"] <= TARGET,
        "entry": res.layers[res.entry].name if res.entry is not None else None,
        "biggest_drop": {"layer": res.layers[drop[0]].name, "drop_db": round(drop[1], 2)} if drop else None,
    }
    finish(out, args.out, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
