"""GPU vs CPU: evaluation, sensitivity sweep, peak GPU memory, equal results.

Run on a CUDA machine: ``python benchmarks/gpu.py`` (add ``--quick`` for small
models). For each model -- a ResNet-18 layout (random weights, 64 images of
3x64x64) and a ~130M-parameter Llama layout (transformers ``LlamaConfig``:
12 layers, hidden 768, MLP 2048, vocabulary 32000; random weights, saved as a
Hugging Face folder in a temporary directory; 16 sequences of 128 tokens) --
it opens the model on the CPU and on the GPU (``Session.open(device=...)``)
and measures, on each:

* ``eval_s``: one W8A8 (ResNet) / W8 (Llama) evaluation of the quantized model;
* ``sweep_s``: an e2e sensitivity sweep at 4 bits (score cache off);
* ``local_s``: the local proxy at 3 bit-widths;

and reports ``eval_ratio`` / ``sweep_ratio`` / ``local_ratio`` (GPU time over
CPU time; below 1 means the GPU is faster), ``peak_gpu_mb``
(``torch.cuda.max_memory_allocated``) and ``equal``: every metric of the
float reference, the quantized evaluation and every sweep cell agrees within
``--rtol`` (TF32 is switched off so the GPU computes in full float32).

``--device cpu`` is a dry run for machines without a GPU: the same steps on
the CPU only (no ratios), to check the script itself. The last line is one
JSON object.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._meta import add_out_argument, finish, meta  # noqa: E402


def build_llama(folder: Path, data: Path, *, quick: bool, seqs: int, tokens: int) -> int:
    from benchmarks.models import LLAMA_134M, build_llama as build

    size = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=4, vocab_size=512) if quick else LLAMA_134M
    return build(folder, data, size=size, seqs=seqs, tokens=tokens, max_positions=max(256, tokens))


def save_resnet(folder: Path, *, quick: bool) -> tuple[str, str, int]:
    """A recipe file that builds the benchmark ResNet-18 and its random images."""
    n, size = (16, 32) if quick else (64, 64)
    recipe = folder / "resnet18_recipe.py"
    recipe.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from benchmarks.models import build_resnet18, random_dataset\n\n"
        "import torch\n\n"
        "def build_model():\n    torch.manual_seed(0)  # the classifier's default init\n    return build_resnet18()\n\n"
        "def evaluation_data():\n"
        f"    d = random_dataset({n}, (3, {size}, {size}), seed=1)\n"
        "    return d.x, d.y\n")
    return str(recipe), None, 11_689_512


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_on(model: str, data: str | None, device: str, cfg_name: str, batch: int) -> dict:
    import torch

    from quantviz.core.sim.evaluate import evaluate_quantized
    from quantviz.io.config import preset
    from quantviz.session import Session

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    s = Session.open(model, data=data, trust=False, config=preset(cfg_name), device=device, batch_size=batch)
    _sync(device)
    out = {"open_s": time.perf_counter() - t, "reference": dict(s.reference.metrics)}
    s.sim.apply(s.specs)
    evaluate_quantized(s.sim.qmodel, s.eval_data, s.reference, device=device)  # warm-up
    _sync(device)
    t = time.perf_counter()
    out["quantized"] = evaluate_quantized(s.sim.qmodel, s.eval_data, s.reference, device=device)
    _sync(device)
    out["eval_s"] = time.perf_counter() - t
    t = time.perf_counter()
    sweep = s.run_sensitivity("e2e", bits=(4,), act_bits=(), cache=False)
    _sync(device)
    out["sweep_s"] = time.perf_counter() - t
    out["cells"] = {e["name"]: e["results"]["4"]["metrics"] for e in sweep["layers"]}
    t = time.perf_counter()
    s.run_sensitivity("local", bits=(2, 4, 8), act_bits=(), cache=False)
    _sync(device)
    out["local_s"] = time.perf_counter() - t
    if device.startswith("cuda"):
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    s.sim.close()
    return out


def _compare(a: dict, b: dict, rtol: float) -> tuple[bool, float]:
    """Do all metrics agree within ``rtol`` (SQNR in dB compared with ``rtol`` x 100 dB)?"""
    worst = 0.0

    def walk(x, y):
        nonlocal worst
        if isinstance(x, dict):
            for k in x:
                if k in y:
                    walk(x[k], y[k])
        elif isinstance(x, (int, float)) and isinstance(y, (int, float)):
            if math.isfinite(x) and math.isfinite(y):
                worst = max(worst, abs(x - y) / max(abs(x), abs(y), 1.0))

    for key in ("reference", "quantized", "cells"):
        walk(a[key], b[key])
    return worst <= rtol, worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (compare with the CPU) or cpu (a dry run)")
    ap.add_argument("--quick", action="store_true", help="small models (a smoke run)")
    ap.add_argument("--rtol", type=float, default=1e-3)
    ap.add_argument("--only", choices=["resnet18", "llama"])
    add_out_argument(ap)
    args = ap.parse_args()
    started = meta()
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    gpu = args.device.startswith("cuda")
    if gpu and not torch.cuda.is_available():
        print(json.dumps({"error": "CUDA is not available; use --device cpu for a dry run"}))
        sys.exit(2)
    result = {"device": torch.cuda.get_device_name(0) if gpu else "cpu (dry run)", "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d"), "quick": args.quick, "models": {}}
    with tempfile.TemporaryDirectory(prefix="qv-gpu-") as tmp:
        tmp = Path(tmp)
        models = []
        if args.only in (None, "resnet18"):
            ref, data, params = save_resnet(tmp, quick=args.quick)
            models.append(("resnet18", ref, data, "W8A8", 32, params))
        if args.only in (None, "llama"):
            folder, data = tmp / "llama", tmp / "tokens.npz"
            params = build_llama(folder, data, quick=args.quick, seqs=4 if args.quick else 16,
                                 tokens=32 if args.quick else 128)
            models.append(("llama", str(folder), str(data), "W8", 4, params))
        for name, ref, data, cfg, batch, params in models:
            cpu = run_on(ref, data, "cpu", cfg, batch)
            entry = {"params": params, "cpu": {k: round(cpu[k], 3) for k in ("open_s", "eval_s", "sweep_s", "local_s")},
                     "cells": len(cpu["cells"])}
            if gpu:
                g = run_on(ref, data, "cuda", cfg, batch)
                entry["gpu"] = {k: round(g[k], 3) for k in ("open_s", "eval_s", "sweep_s", "local_s", "peak_gpu_mb")}
                for k in ("eval", "sweep", "local"):
                    entry[f"{k}_ratio"] = round(g[f"{k}_s"] / cpu[f"{k}_s"], 4)
                entry["equal"], entry["worst_rel_diff"] = _compare(cpu, g, args.rtol)
            else:  # dry run: the CPU against itself must agree exactly
                again = run_on(ref, data, "cpu", cfg, batch)
                entry["equal"], entry["worst_rel_diff"] = _compare(cpu, again, args.rtol)
            result["models"][name] = entry
    result["equal"] = all(m["equal"] for m in result["models"].values())
    finish(result, args.out, started)


if __name__ == "__main__":
    main()
