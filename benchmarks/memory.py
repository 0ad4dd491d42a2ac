"""Memory: peak resident memory of load + calibrate + evaluate, over the weight bytes.

Two models, each measured in its own fresh subprocess:

* ``llama-134m``: a Llama-layout causal LM with random weights (transformers
  ``LlamaConfig``: 12 layers, hidden 768, MLP 2048, vocabulary 32000 -- about
  134M parameters, 536 MB of float32 weights), built on the fly and saved as a
  Hugging Face folder in a temporary directory, given 32 random sequences
  of 64 tokens as ``--data`` (held out: 16 calibrate, 16 are evaluated);
* ``demo``: the bundled digits CNN with its own data.

In the subprocess the interpreter first imports torch, transformers, quantviz
and the model's transformers class (the *baseline* RSS: library code, about
140 MB for Llama's modeling module, the same for any size); then ``Session.open`` loads the model and its
data, calibrates and computes the float reference, and one W8A8 check
evaluates the quantized model. ``peak_rss_ratio`` is (peak RSS - baseline RSS)
/ weight bytes (``ru_maxrss``; targets: <= 2.0, moonshot 1.3).
``eval_ratio`` is the W8A8 evaluation's time (a full re-check with the weights
already quantized) over a plain float forward pass over the same batches,
each the best of ``--repeats`` interleaved runs after the peak was read;
``first_check_s`` is the first check, which also quantizes every weight.

The last line printed is one JSON object; its top-level ``peak_rss_ratio`` is
the worst case over the models.

    python benchmarks/memory.py [--batch-size 8] [--only llama|demo] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._meta import add_out_argument, finish, meta  # noqa: E402

TARGETS = {"peak_rss_ratio": 2.0, "moonshot_peak_rss_ratio": 1.3}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def build_llama(folder: Path, data: Path, *, seqs: int = 32, tokens: int = 64) -> None:
    from benchmarks.models import LLAMA_134M, build_llama as build  # in the build child only

    build(folder, data, size=LLAMA_134M, seqs=seqs, tokens=tokens, max_positions=512)


def _import_model_class(model: str) -> None:
    """Part of the baseline: the library code of the model's class (transformers' modeling module
    and what it pulls in, about 140 MB for Llama), loaded whatever the model's size."""
    cfg = Path(model) / "config.json"
    if not cfg.is_file():
        return
    import transformers

    for arch in json.loads(cfg.read_text()).get("architectures") or []:
        getattr(transformers, arch, None)


def measure(model: str, data: str | None, batch_size: int, repeats: int = 3) -> dict:
    import gc

    import torch  # noqa: F401 - part of the baseline
    import transformers  # noqa: F401

    from quantviz.core.model.data import call_model, to_device
    from quantviz.io.config import preset
    from quantviz.session import Session

    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    _import_model_class(model)
    gc.collect()
    base = _rss_bytes()
    t0 = time.perf_counter()
    s = Session.open(model, data=data, config=preset("W8A8"), batch_size=batch_size)
    t_open = time.perf_counter() - t0
    weight_bytes = sum(p.numel() * p.element_size() for p in s.sim.float_model.parameters())
    t0 = time.perf_counter()
    res = s.check(label="W8A8", incremental=False)
    t_first = time.perf_counter() - t0  # includes quantizing every weight once
    peak = _peak_bytes()

    def float_pass():
        with torch.no_grad():
            for x, _ in s.eval_data.batches(batch_size):
                call_model(s.sim.float_model, to_device(x, "cpu"))

    t_eval = t_float = float("inf")
    for _ in range(repeats):  # interleaved, best of: the machine is shared
        t0 = time.perf_counter()
        s.check(label="W8A8", incremental=False, record=False)
        t_eval = min(t_eval, time.perf_counter() - t0)
        t0 = time.perf_counter()
        float_pass()
        t_float = min(t_float, time.perf_counter() - t0)
    return {"model": s.name, "params": sum(p.numel() for p in s.sim.float_model.parameters()),
            "weight_bytes": weight_bytes, "dtype": str(next(s.sim.float_model.parameters()).dtype),
            "baseline_rss_bytes": base, "peak_rss_bytes": peak,
            "peak_rss_ratio": round((peak - base) / weight_bytes, 3),
            "open_s": round(t_open, 2), "first_check_s": round(t_first, 3), "eval_s": round(t_eval, 3),
            "float_s": round(t_float, 3),
            "eval_ratio": round(t_eval / t_float, 3), "samples": len(s.eval_data), "batch_size": batch_size,
            "sqnr_db": round(res.metrics.get("sqnr_db", float("nan")), 2),
            "weight_cache": s.sim.cache_stats}


def _child(args: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env, timeout=3600)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--only", choices=["llama", "demo"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--measure", nargs=2, metavar=("MODEL", "DATA"), help=argparse.SUPPRESS)
    p.add_argument("--build", nargs=2, metavar=("FOLDER", "DATA"), help=argparse.SUPPRESS)
    add_out_argument(p)
    a = p.parse_args()
    if a.build:
        build_llama(Path(a.build[0]), Path(a.build[1]))
        print("{}")
        return
    if a.measure:
        print(json.dumps(measure(a.measure[0], None if a.measure[1] == "-" else a.measure[1], a.batch_size, a.repeats)))
        return
    started = meta()
    out: dict = {"models": {}}
    with tempfile.TemporaryDirectory(prefix="quantviz-mem-") as tmp:
        if a.only in (None, "llama"):
            folder, data = Path(tmp) / "llama-134m", Path(tmp) / "tokens.npz"
            built = _child(["--build", str(folder), str(data)])
            out["models"]["llama-134m"] = built if "error" in built else _child(
                ["--measure", str(folder), str(data), "--batch-size", str(a.batch_size), "--repeats", str(a.repeats)])
        if a.only in (None, "demo"):
            out["models"]["demo"] = _child(["--measure", "demo", "-", "--batch-size", "64", "--repeats", str(max(a.repeats, 7))])
    ratios = [m["peak_rss_ratio"] for m in out["models"].values() if "peak_rss_ratio" in m]
    out["peak_rss_ratio"] = max(ratios) if ratios else None
    out["eval_ratio"] = max((m["eval_ratio"] for m in out["models"].values() if "eval_ratio" in m), default=None)
    out["targets"] = TARGETS
    for name, m in out["models"].items():
        print(f"{name}: {json.dumps(m)}", file=sys.stderr)
    finish(out, a.out, started)


if __name__ == "__main__":
    main()
