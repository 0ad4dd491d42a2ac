"""Quantization-aware training figures (prints JSON).

For each case: the float metric, the post-training metric of the config, the
metric after QAT (the session's re-check of the trained state: what exports
get), training time, and the settings to reproduce it with ``quantviz qat``.
Then the cost of one QAT step against one float training step of the same
model, batch and optimizer (median of interleaved rounds).

    PYTHONPATH=. python benchmarks/qat.py [--threads 1] [--quick] [--out FILE]
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import quantviz  # noqa: E402,F401  (first: it makes OpenMP wait passively before torch loads it)
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._meta import add_out_argument, finish, meta  # noqa: E402
from quantviz.core.training.qat import QATOptions, train_qat  # noqa: E402
from quantviz.io.config import preset, with_grid  # noqa: E402
from quantviz.session.session import Session  # noqa: E402

TT = str(ROOT / "resources" / "recipes" / "tiny_transformer.py")
CASES = [
    ("demo", "W2", "full", dict(steps=300, lr=1e-3, lsq=False)),
    ("demo", "W2", "full", dict(steps=300, lr=1e-3, lsq=True)),
    ("demo", "W2", "torch", dict(steps=300, lr=1e-3, lsq=False)),
    ("demo", "W2A8", "full", dict(steps=300, lr=1e-3, lsq=False)),
    (TT, "W3", "full", dict(steps=150, lr=3e-4, lsq=False, loss="kl")),  # labels are the float model's own
]


def config(pre: str):
    """A preset, or ``W2A8``: the W2 weights with W4A8's 8-bit activations."""
    if pre == "W2A8":
        cfg = preset("W4A8")
        cfg.default["weight"]["bits"] = 2
        cfg.name = "W2A8"
        return cfg
    return preset(pre)


def case(model: str, pre: str, grid: str, kw: dict) -> dict:
    cfg = config(pre) if grid == "full" else with_grid(config(pre), grid)
    s = Session.open(model, config=cfg)
    rec = s.run_qat(QATOptions(**kw))
    m = rec["curves"]["metric_name"]
    how = "--config w2a8.json (W4A8 with weight bits 2)" if pre == "W2A8" else f"--preset {pre}"
    cmd = (f"quantviz qat {'demo' if model == 'demo' else 'resources/recipes/tiny_transformer.py'} {how}"
           f"{'' if grid == 'full' else ' --grid ' + grid} --steps {kw['steps']} --lr {kw['lr']:g}"
           f"{' --lsq' if kw['lsq'] else ''}{' --loss ' + kw['loss'] if 'loss' in kw else ''}"
           f" --threads {torch.get_num_threads()}")
    return {"model": s.name, "preset": pre, "grid": grid, "metric": m, "float": rec["float"].get(m),
            "post_training": rec["before"]["metrics"].get(m), "after_qat": rec["after"]["metrics"].get(m),
            "points_below_float": (rec["float"][m] - rec["after"]["metrics"][m]) * (100 if m == "accuracy" else 1),
            "training_seconds": round(rec["seconds"], 2), "settings": {k: rec["settings"][k] for k in
                                                                      ("steps", "lr", "lsq", "loss", "batch_size", "seed")},
            "loss": rec["loss"], "train_samples": rec["train_samples"], "command": cmd}


def step_cost(pre: str, rounds: int = 5, steps: int = 20) -> dict:
    """Seconds per step: QAT (fake quant in the loop, evaluation and logging off) vs float training."""
    s = Session.open("demo", config=config(pre))
    inp = s.qat_inputs()
    inp.eval = None
    opt = QATOptions(steps=steps, log_every=10**9, eval_every=10**9, checkpoint_every=0)
    train_qat(inp, QATOptions(steps=2))  # warm-up (optimizer imports)
    x, y = s.bundle.train.x, s.bundle.train.y
    qat, flt = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        train_qat(inp, opt)
        qat.append((time.perf_counter() - t) / steps)
        m = copy.deepcopy(s.sim.float_model)
        for p in m.parameters():
            p.requires_grad_(True)
        o = torch.optim.Adam(m.parameters(), 1e-3)
        t = time.perf_counter()
        for i in range(steps):
            idx = torch.randperm(len(x))[:32]
            loss = torch.nn.functional.cross_entropy(m(x[idx]), y[idx])
            o.zero_grad()
            loss.backward()
            o.step()
        flt.append((time.perf_counter() - t) / steps)
    q, f = statistics.median(qat), statistics.median(flt)
    return {"config": pre, "qat_step_ms": q * 1e3, "float_step_ms": f * 1e3, "ratio": q / f, "batch": 32}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="only the first case and the step cost")
    ap.add_argument("--skip", type=int, default=0, help="skip the first N cases")
    add_out_argument(ap)
    args = ap.parse_args()
    started = meta()
    torch.set_num_threads(args.threads)
    out = {"threads": args.threads, "cases": [], "step_cost": []}
    for c in (CASES[:1] if args.quick else CASES)[args.skip:]:
        out["cases"].append(case(*c))
        print(json.dumps(out["cases"][-1]), file=sys.stderr)
    for pre in ("W2", "W2A8"):
        out["step_cost"].append(step_cost(pre))
    finish(out, args.out, started, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
