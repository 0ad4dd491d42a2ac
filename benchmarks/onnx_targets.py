"""ONNX models in, and the ONNX QDQ export per target, measured in one run (issue 27).

    python benchmarks/onnx_targets.py [--repeats N] [--threads N] [--out FILE]

* ``executorch``: the same two models at W8A8 through ``--format executorch``,
  run by ExecuTorch's Python runtime (XNNPACK), when ExecuTorch is installed.
* ``input``: a ResNet-18 (width 16, random weights, BatchNorm folded by the
  exporter) and a two-layer transformer encoder, exported with
  ``torch.onnx.export`` and opened as ONNX files: layers found, load time, and
  the largest difference between ONNX Runtime's float outputs and the
  converted torch model's on held-out inputs.
* ``targets``: the demo and that ResNet-18 (opened from its ONNX file) at
  W8A8 (``ort``: uint8 asymmetric activations; ``ort`` and ``tensorrt`` with
  the symmetric variant) and W4G32 weight-only: the simulation's accuracy,
  ONNX Runtime's accuracy on the exported file, the output SQNR of ONNX
  Runtime against the simulation, the file size and ONNX Runtime's median
  latency for one batch on this CPU, next to the float model's.

The ResNet's labels are the float model's predictions on held-out random
inputs (calibration uses other inputs), so its "accuracy" is top-1 agreement
with float. TensorRT itself is not run (no GPU, no trtexec here).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._meta import add_out_argument, finish, meta  # noqa: E402


def _export(model, x, path):
    import torch

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, opset_version=17)


def _encoder():
    import torch
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(16, 64)
            self.enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, batch_first=True), 2,
                                             enable_nested_tensor=False)
            with torch.no_grad():
                for p in self.enc.layers[1].parameters():
                    p.add_(0.05 * torch.randn_like(p))
            self.head = nn.Linear(64, 10)

        def forward(self, x):
            return self.head(self.enc(self.embed(x)).mean(dim=1))

    torch.manual_seed(0)
    return Encoder().eval()


def _input_check(name, model, shape, d: Path) -> dict:
    import numpy as np
    import onnxruntime as ort
    import torch

    from quantviz.core.sources import load_model

    g = torch.Generator().manual_seed(11)
    path = d / f"{name}.onnx"
    _export(model, torch.randn(2, *shape, generator=g), path)
    t0 = time.perf_counter()
    bundle = load_model(str(path))
    load_s = time.perf_counter() - t0
    x = torch.randn(64, *shape, generator=g)
    with torch.no_grad():
        got = bundle.model(x).numpy()
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    return {"layers": len(bundle.meta["onnx_layer_tensors"]), "load_s": load_s,
            "max_abs_diff_vs_ort": float(np.abs(got - want).max()), "max_abs_output": float(np.abs(want).max()),
            "samples": int(x.shape[0])}


def _resnet_files(d: Path, n_eval: int, n_calib: int):
    import numpy as np
    import torch

    from benchmarks.models import ResNet18

    torch.manual_seed(0)
    m = ResNet18(num_classes=10, width=16).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.1, 0.1)
    g = torch.Generator().manual_seed(1)
    xe, xc = torch.randn(n_eval, 3, 32, 32, generator=g), torch.randn(n_calib, 3, 32, 32, generator=g)
    with torch.no_grad():
        ye = m(xe).argmax(1)
    np.savez(d / "eval.npz", x=xe.numpy(), y=ye.numpy())
    np.savez(d / "calib.npz", x=xc.numpy())
    _export(m, xe[:2], d / "resnet18.onnx")
    return d / "resnet18.onnx", d / "eval.npz", d / "calib.npz"


CONFIGS = {  # label -> (preset, symmetric activations, target)
    "W8A8 ort (uint8 activations)": ("W8A8", False, "ort"),
    "W8A8 symmetric, ort": ("W8A8", True, "ort"),
    "W8A8 symmetric, tensorrt": ("W8A8", True, "tensorrt"),
    "W4G32 weight-only, tensorrt": ("W4G32", False, "tensorrt"),
}


def _targets(s, d: Path, args) -> dict:
    import torch

    from quantviz.core.backends import onnxrt
    from quantviz.core.sim.fakequant import iterate_outputs
    from quantviz.core.numerics.sqnr import tensor_sqnr_db
    from quantviz.io.onnx_export import export_float, save_model

    x0 = next(iter(s.eval_data.batches(args.batch)))[0]
    fm, _, _ = export_float(s.sim.float_model, s.eval_data.first_input())
    fpath = d / "float.onnx"
    save_model(fm, fpath)
    fsess = onnxrt.make_session(fpath.read_bytes(), threads=args.threads)
    fout, labels = onnxrt.run_dataset(fsess, s.eval_data)
    out = {"float": {"accuracy": onnxrt.accuracy(fout, labels), "bytes": fpath.stat().st_size,
                     "latency_ms": onnxrt.ort_latency_ms(fsess, x0, repeats=args.repeats)}, "configs": {}}
    for label, (p, sym, target) in CONFIGS.items():
        s.apply_preset(p)
        if sym:
            s.edit_layers(s.layer_names, {"activation": {"symmetric": True}})
        sim_acc = s.check(record=False).metrics.get("accuracy")
        path = d / f"{target}.onnx"
        res = s.export("onnx", path, force=True, target=target)
        sess = onnxrt.make_session(path.read_bytes(), threads=args.threads)
        o, labels = onnxrt.run_dataset(sess, s.eval_data)
        with s.lock:
            s.sim.apply(s.specs)
            so = torch.cat([t for _, t, _ in iterate_outputs(s.sim.qmodel, s.eval_data, device="cpu")])
        out["configs"][label] = {
            "target": target, "simulated_accuracy": sim_acc, "ort_accuracy": onnxrt.accuracy(o, labels),
            "sqnr_db_vs_simulation": tensor_sqnr_db(so, o), "bytes": path.stat().st_size,
            "latency_ms": onnxrt.ort_latency_ms(sess, x0, repeats=args.repeats),
            "notes": [n for n in res.notes if n.startswith("tensorrt")]}
        print(f"{s.name} {label}: done", file=sys.stderr)
    out["executorch"] = _executorch(s, d, args, x0)
    return out


def _executorch(s, d: Path, args, x0) -> dict:
    """W8A8 through ``--format executorch``, run by ExecuTorch's Python runtime (when installed)."""
    import statistics

    import torch

    try:
        import executorch  # noqa: F401
    except ImportError:
        return {"error": "ExecuTorch is not installed"}
    from quantviz.core.backends import executorch_backend as eb
    from quantviz.core.sim.fakequant import iterate_outputs
    from quantviz.core.numerics.sqnr import tensor_sqnr_db

    s.apply_preset("W8A8")
    sim_acc = s.check(record=False).metrics.get("accuracy")
    path = d / "model.pte"
    t0 = time.perf_counter()
    res = s.export("executorch", path, force=True)
    export_s = time.perf_counter() - t0
    fn = eb.load(path)
    fixed = not res.details["dynamic_batch"]
    bs = res.details["batch"] or args.batch
    x, y = s.eval_data.x, s.eval_data.y
    o = eb.run(fn, x, bs, fixed)
    with s.lock:
        s.sim.apply(s.specs)
        so = torch.cat([t for _, t, _ in iterate_outputs(s.sim.qmodel, s.eval_data, device="cpu")])
    xb = x0[:bs].contiguous()
    for _ in range(3):
        fn(xb)
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        fn(xb)
        times.append((time.perf_counter() - t) * 1000)
    return {"config": "W8A8", "simulated_accuracy": sim_acc, "accuracy": float((o.argmax(-1) == y).float().mean()),
            "sqnr_db_vs_simulation": tensor_sqnr_db(so, o), "bytes": path.stat().st_size,
            "latency_ms": float(statistics.median(times)), "xnnpack_layers": len(res.details["kernels"]),
            "layers": len(s.layer_names), "dynamic_batch": res.details["dynamic_batch"], "export_s": export_s}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval", type=int, default=512, help="held-out ResNet inputs")
    add_out_argument(ap)
    args = ap.parse_args()
    started = meta()
    import torch

    from benchmarks.models import ResNet18
    from quantviz.session import Session

    torch.set_num_threads(args.threads)
    result = {"threads": args.threads, "batch": args.batch, "repeats": args.repeats, "input": {}, "targets": {}}
    with tempfile.TemporaryDirectory(prefix="qv-onnx-bench-") as tmp:
        d = Path(tmp)
        torch.manual_seed(0)
        result["input"]["ResNet-18 (width 16)"] = _input_check("resnet", ResNet18(num_classes=10, width=16).eval(),
                                                               (3, 32, 32), d)
        result["input"]["transformer encoder (2 layers, d 64)"] = _input_check("encoder", _encoder(), (8, 16), d)
        s = Session.open("demo", batch_size=args.batch)
        os.makedirs(d / "demo", exist_ok=True)
        result["targets"]["demo"] = _targets(s, d / "demo", args)
        onnx_path, ev, cal = _resnet_files(d, args.eval, 256)
        s = Session.open(str(onnx_path), data=str(ev), calib=str(cal), batch_size=args.batch)
        os.makedirs(d / "resnet", exist_ok=True)
        result["targets"]["ResNet-18 (width 16, from ONNX)"] = _targets(s, d / "resnet", args)
    finish(result, args.out, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
