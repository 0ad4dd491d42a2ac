"""``quantviz benchmark MODEL --config CFG``: real size and CPU latency.

Builds the really quantized models (torchao ``quantize_`` for the Linear
layers it has kernels for; torchao's pt2e flow lowered to oneDNN int8
kernels for convolutions and Linear layers with 8-bit weights and
activations; the ONNX QDQ export in ONNX Runtime) and reports, next to the float
model's, the serialized size on disk and the median latency of one batch
after warm-up, the accuracy each reaches, and which layers ran real kernels.
"""
from __future__ import annotations

from ..core.backends.names import BACKENDS
from .common import CLIError, ProgressBar, add_common_args, add_model_args, fmt_bytes, open_session, print_json, table


def register(sub) -> None:
    p = sub.add_parser("benchmark", help="real quantized size and CPU latency (torchao, pt2e, ONNX Runtime) vs float")
    add_model_args(p)
    p.add_argument("--batch", type=int, default=32, metavar="N", help="samples per timed call (default 32)")
    p.add_argument("--repeats", type=int, default=20, metavar="N", help="timed calls after warm-up (default 20)")
    p.add_argument("--backends", default=",".join(BACKENDS), metavar="LIST",
                   help=f"comma-separated, from {', '.join(BACKENDS)} (default all)")
    add_common_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    bad = [b for b in backends if b not in BACKENDS]
    if bad:
        raise CLIError(f"--backends: unknown backend {bad[0]!r} ({', '.join(BACKENDS)})")
    if args.batch < 1 or args.repeats < 1:
        raise CLIError("--batch and --repeats must be at least 1")
    session = open_session(args)
    bar = ProgressBar(True if args.progress else None)
    try:
        rep = session.run_benchmark(batch=args.batch, repeats=args.repeats, backends=backends, progress=bar)
    finally:
        bar.close()
    if args.json:
        print_json(rep)
        return 0
    rows = []
    for k in ("float", "torchao", "pt2e", "onnxruntime_float", "onnxruntime"):
        if k in rep and "error" not in rep[k]:
            r = rep[k]
            acc = r.get("accuracy")
            rows.append([k, fmt_bytes(r["size_bytes"]), f"{r['latency_ms']:.2f} ms", "-" if acc is None else f"{acc * 100:.2f}%"])
    print(f"{session.name}: batch {args.batch}, median of {args.repeats} runs, {rep['threads']} thread(s)")
    print(table(rows, ["backend", "size", "latency", "accuracy"], "lrrr"))
    if "torchao" in rep:
        print(f"torchao real kernels: {', '.join(rep['torchao']['real_kernels']) or 'none'}")
        if rep["torchao"]["simulated"]:
            print(f"torchao simulated: {', '.join(rep['torchao']['simulated'])}")
    if "pt2e" in rep:
        if "error" in rep["pt2e"]:
            print(f"pt2e skipped: {rep['pt2e']['error']}")
        else:
            print(f"pt2e (oneDNN int8) real kernels: {', '.join(rep['pt2e']['real_kernels']) or 'none'}")
    return 0
