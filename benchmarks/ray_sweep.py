"""Sensitivity sweep on Ray workers vs the local run (ResNet-18 layout, random weights).

Run: ``python benchmarks/ray_sweep.py [--quick] [--out FILE]``. In one run, on one machine:

* ``local_s``: the e2e sweep in this process (torch threads as the CLI sets them; the faster of two runs);
* ``ray_1_s`` / ``ray_2_s``: the same sweep on a local Ray cluster with 1 and 2
  workers (one CPU and one torch thread each), including starting the workers
  (each rebuilds the session from the object store: calibration and float
  reference) — reported apart as ``startup_s``;
* ``ratio_1`` / ``ratio_2``: Ray wall time / local wall time (below 1 is faster);
* ``overhead_per_task_ms``: a round trip of an empty call to a warm worker,
  and ``cells``: the number of (layer, bit-width) tasks;
* ``equal``: the Ray results equal the local run's.

On a machine with only 2 cores, 2 workers compete with the driver and with each
other for the same cores: the honest ratio there is near 1 or above; the point
of Ray is a cluster with more cores or GPUs than one machine.
The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import quantviz  # noqa: E402,F401  (first: it makes OpenMP wait passively before torch loads it)
import torch  # noqa: E402

from benchmarks._meta import add_out_argument, finish, meta  # noqa: E402
from benchmarks.models import build_resnet18, random_dataset  # noqa: E402
from quantviz.core.sources.base import ModelBundle  # noqa: E402
from quantviz.io.config import preset  # noqa: E402
from quantviz.session import Session  # noqa: E402


def _session(n: int, size: int) -> Session:
    data = random_dataset(n, (3, size, size), seed=1, name="random images")
    bundle = ModelBundle(model=build_resnet18(), name="resnet18-random", kind="recipe", reference="resnet18",
                         calib=data, eval=data)
    s = Session(bundle, eval_data=data, calib_data=data, config=preset("W8"), batch_size=32)
    s.prepare()
    return s


def _cells(res):
    return {(e["name"], k): c["metrics"]["sqnr_db"] for e in res["layers"] for k, c in e["results"].items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    add_out_argument(ap)
    args = ap.parse_args()
    started = meta()
    import ray

    from quantviz.core.analysis.raysweep import RayExecutor
    from quantviz.session.scale import parts_factory

    n, size = (32, 32) if args.quick else (128, 32)
    bits = (4,) if args.quick else (3, 4)
    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    s = _session(n, size)
    local_s = float("inf")
    for _ in range(2):  # the first run also fills the quantized-weight cache: keep the faster
        t = time.perf_counter()
        local = s.run_sensitivity("e2e", bits=bits, act_bits=(), cache=False, force=True)
        local_s = min(local_s, time.perf_counter() - t)
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    os.environ.setdefault("RAY_worker_niceness", "0")  # as quantviz does: niced workers starve on a busy machine
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": env})
    out = {"model": "resnet18 layout, random weights", "samples": n, "input": [3, size, size], "bits": list(bits),
           "cells": len(local["layers"]) * len(bits), "cores": os.cpu_count(), "local_s": round(local_s, 3),
           "local_threads": torch.get_num_threads()}
    equal = True
    for w in (1, 2):
        t = time.perf_counter()
        ex = RayExecutor(parts_factory(s), workers=w)
        ex.pids()  # the workers are built (session rebuilt on each)
        startup = time.perf_counter() - t
        t = time.perf_counter()
        calls = [("ping", ()) for _ in range(50)]
        list(ex.run(calls))
        overhead = (time.perf_counter() - t) / len(calls)
        from quantviz.core.analysis import methods

        t = time.perf_counter()
        res = methods.run(s.parts(), "e2e", bits=bits, act_bits=(), executor=ex)
        sweep = time.perf_counter() - t
        ex.close()
        a, b = _cells(local), _cells(res)
        equal = equal and a.keys() == b.keys() and all(math.isclose(a[k], b[k], rel_tol=1e-9) for k in a)
        out[f"ray_{w}_s"] = round(sweep, 3)
        out[f"startup_{w}_s"] = round(startup, 3)
        out[f"ratio_{w}"] = round(sweep / local_s, 3)
        out[f"overhead_per_task_ms_{w}"] = round(overhead * 1000, 2)
    ray.shutdown()
    out["equal"] = equal
    finish(out, args.out, started)


if __name__ == "__main__":
    main()
