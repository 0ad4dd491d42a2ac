"""Searches that measure less (#25 §4): ``measure="less"`` vs the exhaustive ``measure="all"``.

Run: ``python benchmarks/search_less.py --out benchmarks/results/search_less.json``.

On the bundled demo (calibrated on 256 samples, evaluated on 597 others) and on
the tests' tiny transformer (``tests/core/sens_models.py``: calibrated on 24
sequences, evaluated on 48 held-out ones), both ranked by one e2e sensitivity
sweep at 2, 4 and 8 bits, for a few budgets: the search's wall time (median of
``--repeats`` runs, the two modes alternating, so both see the same machine
load), how many candidates the solver proposed, how many were screened and
how many measured end to end, whether the two picks are the same config, and
each pick's metric on the held-out samples. ``ratio`` is exhaustive time /
screened time, measured in one run. The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "core"))

import quantviz  # noqa: E402,F401  (first: it makes OpenMP wait passively before torch loads it)
import torch  # noqa: E402

from benchmarks._meta import add_out_argument, finish, meta  # noqa: E402
from quantviz.core.sources.base import ModelBundle  # noqa: E402
from quantviz.io.config import preset  # noqa: E402
from quantviz.session import Session  # noqa: E402

BITS = (2, 4, 8)


def demo() -> Session:
    s = Session.open("demo")
    s.prepare()
    return s


def tiny() -> Session:
    from sens_models import transformer_data, transformer_model

    m = transformer_model()
    data = transformer_data(m, n=72)
    calib, evald = data.rows(0, 24, name="calib"), data.rows(24, None, name="held-out")
    bundle = ModelBundle(model=m, name="tiny transformer", kind="recipe", reference="test", calib=calib, eval=evald)
    s = Session(bundle, eval_data=evald, calib_data=calib, config=preset("W8"), batch_size=16)
    s.prepare()
    return s


MODELS = {"demo": (demo, [{"avg_bits": 3.0}, {"avg_bits": 4.5}, {"avg_bits": 6.0}, {"max_drop": 0.02}]),
          "tiny_transformer": (tiny, [{"avg_bits": 3.0}, {"avg_bits": 4.5}, {"avg_bits": 6.0}, {"max_drop": 0.05}])}


def one(s: Session, budget: dict, repeats: int, steps: int) -> dict:
    runs: dict = {"all": [], "less": []}
    for _ in range(repeats):
        for mode in ("all", "less"):
            runs[mode].append(s.run_search(bits=BITS, pareto_steps=steps, measure=mode, **budget))
    out: dict = {"budget": budget}
    for mode, rs in runs.items():
        r = rs[-1]
        c = r["chosen"]
        out[mode] = {"seconds": round(statistics.median(q["seconds"] for q in rs), 4),
                     "candidates": r["candidates"], "screened": r["screened"],
                     "full_evaluations": r["full_evaluations"], "screen_samples": r["screen_samples"],
                     "eval_samples": r["eval_samples"], "chosen": c["name"], "chosen_avg_bits": round(c["avg_bits"], 4),
                     "chosen_metric": c["metrics"].get(r["metric"]), "chosen_sqnr_db": c["metrics"].get("sqnr_db")}
    out["metric"] = runs["all"][-1]["metric"]
    out["same_pick"] = runs["all"][-1]["chosen"]["bits"] == runs["less"][-1]["chosen"]["bits"]
    out["ratio"] = round(out["all"]["seconds"] / max(out["less"]["seconds"], 1e-9), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5, help="budgets along the Pareto front (default 5)")
    add_out_argument(ap)
    args = ap.parse_args()
    started = meta()
    torch.manual_seed(0)
    out: dict = {"bits": list(BITS), "sensitivity": "e2e", "repeats": args.repeats, "pareto_steps": args.steps,
                 "models": {}}
    for name, (make, budgets) in MODELS.items():
        s = make()
        s.run_sensitivity("e2e", bits=BITS)
        rows = [one(s, b, args.repeats, args.steps) for b in budgets]
        out["models"][name] = {"split": s.split.to_dict()["note"], "float_metrics": dict(s.reference.metrics),
                               "budgets": rows}
        print({name: [(r["budget"], r["same_pick"], r["ratio"]) for r in rows]}, file=sys.stderr, flush=True)
    allrows = [r for m in out["models"].values() for r in m["budgets"]]
    out["summary"] = {"searches": len(allrows), "same_pick": sum(r["same_pick"] for r in allrows),
                      "full_evaluations_less": sum(r["less"]["full_evaluations"] for r in allrows),
                      "full_evaluations_all": sum(r["all"]["full_evaluations"] for r in allrows),
                      "median_ratio": statistics.median(r["ratio"] for r in allrows)}
    finish(out, args.out, started)


if __name__ == "__main__":
    main()
