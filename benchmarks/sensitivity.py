"""Sensitivity speed: suffix-recompute sweep vs naive sweep, local proxy vs one forward pass.

Run: ``python benchmarks/sensitivity.py [--quick] [--out FILE]``. Measures, in one run, on
the demo and on a ResNet-18-sized model (random weights, plain torch, 64x64
inputs, a few hundred samples):

* ``sweep_ratio``: e2e sweep time (cached activations, suffixes only) / the
  naive sweep's time (one full evaluation per layer x bit-width);
  target <= 0.6;
* ``local_ratio``: the local proxy for all layers at 4 bit-widths / one float
  forward pass over the calibration data; target <= 2.

The last line is one JSON object: per-model figures plus the worst case of
each ratio over the models.
"""
from __future__ import annotations

import argparse
import json
import sys
import statistics
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import quantviz  # noqa: E402,F401  (first: it makes OpenMP wait passively before torch loads it)
import torch  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks._meta import add_out_argument, finish, meta  # noqa: E402
from benchmarks.models import ResNet18  # noqa: E402
from quantviz.core.analysis import proxies as P  # noqa: E402
from quantviz.core.analysis import sensitivity as S  # noqa: E402
from quantviz.core.model.data import Dataset, call_model  # noqa: E402
from quantviz.core.sources.base import ModelBundle  # noqa: E402
from quantviz.io.config import preset  # noqa: E402
from quantviz.session import Session  # noqa: E402


def resnet_session(samples: int) -> Session:
    torch.manual_seed(0)
    model = ResNet18().eval()
    with torch.no_grad():  # realistic BN statistics so folding does something
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
                m.running_mean.normal_(0, 0.1)
    g = torch.Generator().manual_seed(1)
    data = Dataset(torch.randn(samples, 3, 64, 64, generator=g), torch.randint(0, 10, (samples,), generator=g),
                   name="random 64x64")
    bundle = ModelBundle(model=model, name="resnet18-64px", kind="recipe", reference="resnet18", calib=data, eval=data)
    s = Session(bundle, eval_data=data, calib_data=data, config=preset("W8"), batch_size=64)
    s.prepare()
    return s


def float_pass(session) -> float:
    t = time.perf_counter()
    with torch.no_grad():
        for x, _ in session.calib_data.batches(session.batch_size):
            call_model(session.sim.float_model, x)
    return time.perf_counter() - t


def measure(session, bits, local_bits, sweep_repeats: int = 1) -> dict:
    p = session.parts()
    S.sweep(p, "e2e", bits=bits[:1])  # warm up (weight quantization cache, allocator)
    fast_t, slow_t = [], []
    for _ in range(sweep_repeats):  # interleaved: both sweeps see the same machine load
        t = time.perf_counter()
        fast = S.sweep(p, "e2e", bits=bits)
        fast_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        slow = S.sweep(p, "e2e", bits=bits, naive=True)
        slow_t.append(time.perf_counter() - t)
    t_fast, t_slow = statistics.median(fast_t), statistics.median(slow_t)
    worst = 0.0
    for ea, eb in zip(fast["layers"], slow["layers"]):
        for k in ea["results"]:
            a, b = ea["results"][k]["metrics"]["sqnr_db"], eb["results"][k]["metrics"]["sqnr_db"]
            worst = max(worst, abs(a - b))
    float_pass(session)  # warm up
    floats, locals_ = [], []
    for _ in range(3):  # interleaved repeats, medians: both sides see the same machine load
        floats.append(float_pass(session))
        t = time.perf_counter()
        P.local(p, bits=local_bits)
        locals_.append(time.perf_counter() - t)
    t_float, t_local = statistics.median(floats), statistics.median(locals_)
    return {"layers": len(session.layers), "samples": len(session.eval_data), "bits": list(bits),
            "incremental": fast["incremental"], "sweep_s": t_fast, "naive_sweep_s": t_slow,
            "sweep_ratio": t_fast / t_slow, "max_sqnr_diff_db": worst,
            "float_pass_s": t_float, "local_s": t_local, "local_ratio": t_local / t_float}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=256, help="ResNet samples (default 256)")
    ap.add_argument("--quick", action="store_true", help="fewer bit-widths on the ResNet")
    add_out_argument(ap)
    a = ap.parse_args()
    started = meta()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    local_bits = (2, 3, 4, 8)
    out = {}
    demo = Session.open("demo")
    out["demo"] = measure(demo, (2, 3, 4, 6, 8), local_bits, sweep_repeats=5)  # a sweep takes ~1 s here
    print("demo", json.dumps(out["demo"]), file=sys.stderr)
    rn = resnet_session(a.samples)
    out["resnet18"] = measure(rn, (4,) if a.quick else (2, 4), local_bits)
    print("resnet18", json.dumps(out["resnet18"]), file=sys.stderr)
    out["sweep_ratio"] = max(v["sweep_ratio"] for v in out.values() if isinstance(v, dict))
    out["local_ratio"] = max(v["local_ratio"] for v in out.values() if isinstance(v, dict) and "local_ratio" in v)
    finish(out, a.out, started)


if __name__ == "__main__":
    main()
