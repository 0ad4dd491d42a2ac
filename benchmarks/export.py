"""Real quantized size and CPU latency vs float, measured in one run.

    python benchmarks/export.py [--repeats N] [--threads N] [--out FILE]

Runs ``quantviz benchmark``'s measurement on the demo (conv-heavy) and on
``resources/recipes/tiny_transformer.py`` (Linear-heavy) for W8 and W8A8 and
prints one JSON object (last line) with, per model and config, the size and
latency ratios of the torchao, pt2e (oneDNN int8) and ONNX Runtime models
against their float counterparts (torch float for torchao and pt2e, ONNX
Runtime float for ONNX Runtime).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._meta import add_out_argument, finish, meta  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    add_out_argument(ap)
    args = ap.parse_args()
    started = meta()
    import torch

    from quantviz.session.deploy import benchmark
    from quantviz.io.config import preset
    from quantviz.session import Session

    torch.set_num_threads(args.threads)
    out = {"threads": args.threads, "batch": args.batch, "repeats": args.repeats, "models": {}}
    for ref in ("demo", str(ROOT / "resources" / "recipes" / "tiny_transformer.py")):
        s = Session.open(ref)
        for cfg in ("W8", "W8A8"):
            s.set_config(preset(cfg))
            r = benchmark(s, batch=args.batch, repeats=args.repeats)
            out["models"].setdefault(s.name, {})[cfg] = {
                "torchao_size_ratio": r["torchao"]["size_ratio"], "torchao_speedup": r["torchao"]["speedup"],
                "ort_size_ratio": r["onnxruntime"]["size_ratio"], "ort_speedup": r["onnxruntime"]["speedup"],
                "ort_float_vs_torch_float_speedup": r["float"]["latency_ms"] / r["onnxruntime_float"]["latency_ms"],
                "accuracy": {"float": r["float"]["accuracy"], "simulated": r["simulated"]["accuracy"],
                             "torchao": r["torchao"]["accuracy"], "onnxruntime": r["onnxruntime"]["accuracy"]},
                "torchao_real_kernels": len(r["torchao"]["real_kernels"]),
                "torchao_simulated": len(r["torchao"]["simulated"]),
            }
            pt = r["pt2e"]
            entry = out["models"][s.name][cfg]
            if "error" in pt:
                entry["pt2e_error"] = pt["error"]
            else:
                entry.update({"pt2e_size_ratio": pt["size_ratio"], "pt2e_speedup": pt["speedup"],
                              "pt2e_real_kernels": len(pt["real_kernels"]),
                              "pt2e_sqnr_db_vs_simulated": pt["sqnr_db_vs_simulated"]})
                entry["accuracy"]["pt2e"] = pt["accuracy"]
            print(f"{s.name} {cfg}: done", file=sys.stderr)
    finish(out, args.out, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
