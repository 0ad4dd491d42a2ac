"""Engine overhead: calibration and fake-quantized evaluation vs a float pass.

For each model (the bundled demo, and a random-weight BasicBlock ResNet-18 on
64x64 inputs) this measures, in one run and on the same data:

* ``float_s``: a plain float forward pass over the data (the BatchNorm-folded
  float model, batch by batch -- the same model the engine calibrates);
* ``calib_s``: :meth:`QuantSim.calibrate` (forward + streaming histograms of
  every quantized layer's input);
* ``eval_s``: :func:`evaluate_quantized` of the W8A8-simulated twin (weights
  fake-quantized, every quantized layer's input fake-quantized in a pre-hook,
  metrics streamed against the float reference);
* ``apply_s``: quantizing all weights once (not part of a ratio: it is paid
  once per config change and cached per layer).

Each time is the best of ``--repeats`` interleaved runs (the machines are
shared and noisy). The last line printed is one JSON object; its top-level
``eval_ratio`` / ``calib_ratio`` are the worst case over the models.
Targets: eval_ratio <= 1.5, calib_ratio <= 2.

    python benchmarks/engine.py [--samples 200] [--repeats 3] [--threads N] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import quantviz  # noqa: E402,F401  (first: it makes OpenMP wait passively before torch loads it)
import torch

from benchmarks._meta import add_out_argument, finish, meta  # noqa: E402
from benchmarks.models import build_resnet18, random_dataset  # noqa: E402
from quantviz.core import sources  # noqa: E402
from quantviz.core.model.data import Dataset  # noqa: E402
from quantviz.core.sim.evaluate import evaluate_quantized, float_reference  # noqa: E402
from quantviz.core.sim.fakequant import QuantSim, iterate_outputs  # noqa: E402
from quantviz.io.config import preset  # noqa: E402

TARGETS = {"eval_ratio": 1.5, "calib_ratio": 2.0}


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(name: str, model: torch.nn.Module, data: Dataset, *, batch_size: int, repeats: int) -> dict:
    """Times and ratios for one model (see the module docstring)."""
    sim = QuantSim(model)

    def float_pass():
        for _ in iterate_outputs(sim.float_model, data, device="cpu", batch_size=batch_size):
            pass

    def calib_pass():
        sim.calibrate(data, batch_size=batch_size)

    float_pass()  # warm-up (allocator, kernels)
    calib_pass()
    ref = float_reference(sim.float_model, data, batch_size=batch_size)
    specs = preset("W8A8").resolve_all(sim.layers)
    apply_s = _time(lambda: sim.apply(specs))
    metrics: dict = {}

    def eval_pass():
        metrics.update(evaluate_quantized(sim.qmodel, data, ref))

    eval_pass()
    best = {"float_s": float("inf"), "calib_s": float("inf"), "eval_s": float("inf")}
    for _ in range(repeats):  # interleaved, so a noisy moment hurts all three alike
        best["float_s"] = min(best["float_s"], _time(float_pass))
        best["calib_s"] = min(best["calib_s"], _time(calib_pass))
        best["eval_s"] = min(best["eval_s"], _time(eval_pass))
    sim.close()
    return {
        "model": name,
        "samples": len(data),
        "batch_size": batch_size,
        "quantized_layers": len(sim.layers),
        "params": sum(p.numel() for p in sim.float_model.parameters()),
        **{k: round(v, 4) for k, v in best.items()},
        "apply_s": round(apply_s, 4),
        "calib_ratio": round(best["calib_s"] / best["float_s"], 3),
        "eval_ratio": round(best["eval_s"] / best["float_s"], 3),
        "w8a8_sqnr_db": round(float(metrics.get("sqnr_db", float("nan"))), 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=200, help="ResNet-18 samples (default 200)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    add_out_argument(ap)
    args = ap.parse_args(argv)
    started = meta()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = []
    demo = sources.load_model("demo")
    results.append(measure("demo", demo.model, demo.eval, batch_size=64, repeats=args.repeats))
    print(json.dumps(results[-1]), file=sys.stderr)
    results.append(measure("resnet18", build_resnet18(10), random_dataset(args.samples, (3, 64, 64)),
                           batch_size=50, repeats=args.repeats))
    print(json.dumps(results[-1]), file=sys.stderr)
    out = {
        "benchmark": "engine",
        "threads": torch.get_num_threads(),
        "models": {r["model"]: r for r in results},
        "eval_ratio": max(r["eval_ratio"] for r in results),
        "calib_ratio": max(r["calib_ratio"] for r in results),
        "targets": TARGETS,
    }
    out["meets_targets"] = out["eval_ratio"] <= TARGETS["eval_ratio"] and out["calib_ratio"] <= TARGETS["calib_ratio"]
    finish(out, args.out, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
