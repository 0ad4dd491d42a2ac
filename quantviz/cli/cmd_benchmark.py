"""``quantviz benchmark MODEL --config CFG``: real size and CPU latency.

Builds the really quantized models (torchao for the layers it has kernels
for; the ONNX QDQ export in ONNX Runtime) and reports, next to the float
model's, the serialized size on disk and the median latency of one batch
after warm-up, the accuracy each reaches, and which layers ran real kernels.
"""
from __future__ import annotations

import copy
import io
import os
import tempfile

from .common import CLIError, add_common_args, add_model_args, fmt_bytes, open_session, print_json, table


def register(sub) -> None:
    p = sub.add_parser("benchmark", help="real quantized size and CPU latency (torchao, ONNX Runtime) vs float")
    add_model_args(p)
    p.add_argument("--batch", type=int, default=32, metavar="N", help="samples per timed call (default 32)")
    p.add_argument("--repeats", type=int, default=20, metavar="N", help="timed calls after warm-up (default 20)")
    p.add_argument("--backends", default="torchao,onnxruntime", metavar="LIST",
                   help="comma-separated: torchao, onnxruntime (default both)")
    add_common_args(p)
    p.set_defaults(func=run)


def _acc(outputs, labels):
    from ..core.backends.onnxrt import accuracy

    return accuracy(outputs, labels)


def benchmark(session, *, batch: int = 32, repeats: int = 20, backends=("torchao", "onnxruntime")) -> dict:
    """The benchmark report as a dict (float, torchao, onnxruntime entries)."""
    import torch

    from ..core.backends.onnxrt import median_latency_ms
    from ..core.data import call_model, output_tensor
    from ..core.fakequant import iterate_outputs
    from ..core.backends.torchao_backend import state_bytes

    specs = session.specs
    x = session.eval_data.subset(batch).x
    fmodel = session.sim.float_model

    def torch_outputs(model):
        outs, labels = [], []
        for _, o, y in iterate_outputs(model, session.eval_data, device="cpu"):
            outs.append(o)
            if y is not None:
                labels.append(y)
        return torch.cat(outs), (torch.cat(labels) if labels else None)

    with torch.no_grad():
        fo, labels = torch_outputs(fmodel)
        rep = {"model": session.name, "config": session.config.to_dict(), "batch": batch, "repeats": repeats,
               "threads": torch.get_num_threads(),
               "float": {"size_bytes": state_bytes(fmodel.state_dict()),
                         "latency_ms": median_latency_ms(lambda: call_model(fmodel, x), repeats=repeats),
                         "accuracy": _acc(fo, labels)}}
        session.sim.apply(specs)
        so, _ = torch_outputs(session.sim.qmodel)
        rep["simulated"] = {"accuracy": _acc(so, labels)}
    if "torchao" in backends:
        from ..core.backends import torchao_backend as tb
        from ..core.qparams import sqnr_db

        model, plan = tb.build(session.sim, specs)
        with torch.no_grad():
            to, _ = torch_outputs(model)
            rep["torchao"] = {"size_bytes": state_bytes(model.state_dict()),
                              "latency_ms": median_latency_ms(lambda: call_model(model, x), repeats=repeats),
                              "accuracy": _acc(to, labels), "sqnr_db_vs_simulated": sqnr_db(so, to),
                              "real_kernels": plan.to_dict()["kernels"], "simulated": plan.simulated}
    if "onnxruntime" in backends:
        from ..core.backends import onnxrt
        from ..io.onnx_export import build_qdq, export_float
        from ..core.qparams import sqnr_db

        ex = build_qdq(session.sim, specs, session.eval_data.first_input())
        qbytes = ex.model.SerializeToString()
        fproto, _, _ = export_float(fmodel, session.eval_data.first_input())
        fbytes = fproto.SerializeToString()
        threads = torch.get_num_threads()
        qs = onnxrt.make_session(qbytes, threads=threads)
        fs = onnxrt.make_session(fbytes, threads=threads)
        qo, _ = onnxrt.run_dataset(qs, session.eval_data)
        quantized = [n for n, s in specs.items() if s.weight.bits is not None or s.activation.bits is not None]
        rep["onnxruntime"] = {"size_bytes": len(qbytes), "latency_ms": onnxrt.ort_latency_ms(qs, x, repeats=repeats),
                              "accuracy": _acc(qo, labels), "sqnr_db_vs_simulated": sqnr_db(so, qo),
                              "qdq_layers": [n for n in quantized if n not in ex.unmapped], "unmapped": ex.unmapped}
        rep["onnxruntime_float"] = {"size_bytes": len(fbytes), "latency_ms": onnxrt.ort_latency_ms(fs, x, repeats=repeats)}
    for k in ("torchao", "onnxruntime"):
        if k in rep:
            base = rep["onnxruntime_float"] if k == "onnxruntime" else rep["float"]
            rep[k]["size_ratio"] = rep[k]["size_bytes"] / base["size_bytes"]
            rep[k]["speedup"] = base["latency_ms"] / rep[k]["latency_ms"] if rep[k]["latency_ms"] else None
    return rep


def run(args) -> int:
    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    bad = [b for b in backends if b not in ("torchao", "onnxruntime")]
    if bad:
        raise CLIError(f"--backends: unknown backend {bad[0]!r} (torchao, onnxruntime)")
    if args.batch < 1 or args.repeats < 1:
        raise CLIError("--batch and --repeats must be at least 1")
    session = open_session(args)
    rep = benchmark(session, batch=args.batch, repeats=args.repeats, backends=backends)
    if args.json:
        print_json(rep)
        return 0
    rows = []
    for k in ("float", "torchao", "onnxruntime_float", "onnxruntime"):
        if k in rep:
            r = rep[k]
            acc = r.get("accuracy")
            rows.append([k, fmt_bytes(r["size_bytes"]), f"{r['latency_ms']:.2f} ms", "-" if acc is None else f"{acc * 100:.2f}%"])
    print(f"{session.name}: batch {args.batch}, median of {args.repeats} runs, {rep['threads']} thread(s)")
    print(table(rows, ["backend", "size", "latency", "accuracy"], "lrrr"))
    if "torchao" in rep:
        print(f"torchao real kernels: {', '.join(rep['torchao']['real_kernels']) or 'none'}")
        if rep["torchao"]["simulated"]:
            print(f"torchao simulated: {', '.join(rep['torchao']['simulated'])}")
    return 0
