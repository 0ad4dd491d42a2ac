"""Number formats side by side: accuracy and SQNR of FP8, MXFP8, MXFP6, MXFP4, NVFP4 and INT4
per-group 32 on the demo and the tiny transformer recipe, and eval_ratio for MXFP4.

For each model and weight format (activations float, as the weight-only presets
``FP8 MXFP8 MXFP6 MXFP4 NVFP4 W4G32``; plus ``W-FP8A-FP8`` and
``MXFP4A-MXFP8`` with quantized activations) it reports the model's primary
metric, the output SQNR against the float model, the element bits and the
bits per weight with scales (:mod:`quantviz.core.model.size`).

``eval_ratio`` (target <= 1.5) is the time of one evaluation pass of the
MXFP4 config's simulated model over the demo's evaluation data divided by a
plain float forward pass over the same data, each the best of ``--repeats``
interleaved runs; ``eval_ratio_act`` is the same for ``MXFP4A-MXFP8``, whose
block scales for activations are computed on every batch (reported, no target).
The last line printed is one JSON object.

    python benchmarks/formats.py [--repeats 5] [--threads N] [--out FILE]
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._meta import add_out_argument, finish, meta  # noqa: E402
from quantviz.core.sim.evaluate import evaluate_quantized  # noqa: E402
from quantviz.core.sim.fakequant import iterate_outputs  # noqa: E402
from quantviz.io.config import preset  # noqa: E402
from quantviz.session import Session  # noqa: E402

PRESETS = ["FP8", "MXFP8", "MXFP6", "MXFP4", "NVFP4", "W4G32", "W-FP8A-FP8", "MXFP4A-MXFP8"]
TARGETS = {"eval_ratio": 1.5}


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def figures(s: Session) -> dict:
    out = {}
    for name in PRESETS:
        s.set_config(preset(name))
        r = s.check(record=False)
        metric = "accuracy" if "accuracy" in r.metrics else next(iter(r.metrics))
        out[name] = {metric: round(float(r.metrics[metric]), 4), "sqnr_db": round(float(r.metrics["sqnr_db"]), 2),
                     "element_bits": round(float(r.size["element_bits"]), 3),
                     "bits_per_weight": round(float(r.size["avg_bits"]), 3),  # scales included
                     "quantized_bytes": int(r.size["quantized_bytes"])}
    flt = s.check(config=preset("float"), record=False)
    out["float"] = {k: round(float(v), 4) for k, v in flt.metrics.items() if k in ("accuracy",)}
    return out


def eval_ratio(s: Session, name: str, repeats: int) -> float:
    sim, data = s.sim, s.eval_data
    ref = s.reference if hasattr(s, "reference") else None
    sim.apply(preset(name).resolve_all(sim.layers))

    def float_pass():
        for _ in iterate_outputs(sim.float_model, data, device="cpu", batch_size=s.batch_size):
            pass

    def eval_pass():
        if ref is not None:
            evaluate_quantized(sim.qmodel, data, ref)
        else:
            for _ in iterate_outputs(sim.qmodel, data, device="cpu", batch_size=s.batch_size):
                pass

    float_pass()
    eval_pass()
    best_f = best_q = float("inf")
    for _ in range(repeats):
        best_f = min(best_f, _time(float_pass))
        best_q = min(best_q, _time(eval_pass))
    return round(best_q / best_f, 3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    add_out_argument(ap)
    args = ap.parse_args(argv)
    started = meta()
    if args.threads:
        torch.set_num_threads(args.threads)
    models = {}
    demo = Session.open("demo")
    models["demo"] = figures(demo)
    print(json.dumps({"demo": models["demo"]}), file=sys.stderr)
    ratio = eval_ratio(demo, "MXFP4", args.repeats)
    ratio_act = eval_ratio(demo, "MXFP4A-MXFP8", args.repeats)
    tt = Session.open(str(ROOT / "resources" / "recipes" / "tiny_transformer.py"), trust=True)
    models["tiny-transformer"] = figures(tt)
    out = {"benchmark": "formats", "threads": torch.get_num_threads(), "models": models,
           "eval_ratio": ratio, "eval_ratio_act": ratio_act, "targets": TARGETS,
           "meets_targets": ratio <= TARGETS["eval_ratio"]}
    finish(out, args.out, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
