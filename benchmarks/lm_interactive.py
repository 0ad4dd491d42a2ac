"""Interactive on a language model: open, histogram, calibration, first check, edit -> re-check.

The 134M Llama-layout model of ``benchmarks/memory.py`` (12 layers, hidden
768, MLP 2048, vocabulary 32000, random weights, float32) is built in a
temporary folder with 32 random sequences of 64 tokens (held out: 16
calibrate, 16 are evaluated) and measured in a fresh subprocess through the
session API, the way the app drives it (open without calibrating, table,
histogram, then calibration on a worker, then re-checks):

* ``library_import_s``: importing transformers' Llama code (once per process,
  the same for any model size; not part of the next figure);
* ``open_table_s``: ``Session.open(..., prepare=False)`` plus every row of the
  layer table (name, type, shape, settings; the SQNR columns are lazy);
  ``open_table_cold_s`` adds the import;
* ``first_histogram_s``: the weight histogram of the largest layer (``lm_head``);
* ``calibration_s``: ``Session.prepare`` (activation statistics and the float
  reference);
* ``first_check_s``: the first re-check (quantizes every weight, fills the caches);
* for one edit (weight bits 8 -> 4 of ``mlp.down_proj``) in block 0, the
  middle block and the last block: ``first_estimate_s`` (start of the re-check
  to its first estimate with a band), ``restart_block`` (the first block the
  re-check computed), ``recheck_s``, ``full_s`` (the same
  config evaluated fully, ``incremental=False``), ``ratio`` = recheck / full,
  ``requantized`` (the weights quantized during the re-check, counted by the
  weight cache: must be exactly the edited layer) and ``exact`` (re-check
  metrics == full metrics).

The machine is shared: each edit's re-check and full pass are interleaved,
best of ``--repeats``. Targets are in the JSON beside the figures.

    python benchmarks/lm_interactive.py [--layers 12] [--repeats 2] [--out FILE]
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

TARGETS = {"open_table_s": 3.0, "first_histogram_s": 3.0, "first_estimate_s": 2.0, "last_block_ratio": 0.15}


def build(folder: Path, data: Path, layers: int) -> None:
    from benchmarks.models import LLAMA_134M, build_llama

    build_llama(folder, data, size=dict(LLAMA_134M, num_hidden_layers=layers), seqs=32, tokens=64,
                max_positions=512)


def _timed(s, incremental: bool):
    first: list[float] = []
    t0 = time.perf_counter()
    res = s.check(incremental=incremental, record=False,
                  on_estimate=lambda snap: first or first.append(time.perf_counter() - t0))
    return time.perf_counter() - t0, (first[0] if first else None), res.metrics


def measure(model: str, data: str, batch_size: int, repeats: int) -> dict:
    import torch

    from quantviz.io.config import preset
    from quantviz.session import Session

    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    out: dict = {}
    t0 = time.perf_counter()
    import transformers

    transformers.LlamaForCausalLM  # noqa: B018 - the library's model code, once per process
    out["library_import_s"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    s = Session.open(model, data=data, config=preset("W8A8"), batch_size=batch_size, prepare=False)
    rows = [(l.name, l.type, tuple(l.weight_shape), s.spec(l.name).weight.bits) for l in s.layers]
    out["open_table_s"] = round(time.perf_counter() - t0, 3)
    out["open_table_cold_s"] = round(out["open_table_s"] + out["library_import_s"], 3)
    out["weights"] = s.bundle.meta.get("weights")
    big = max(s.layers, key=lambda l: l.params).name
    t0 = time.perf_counter()
    s.sim.weight_histogram(big)
    s.weight_stats(big)
    out["first_histogram_s"] = round(time.perf_counter() - t0, 3)
    out["histogram_layer"] = big
    t0 = time.perf_counter()
    s.prepare()
    out["calibration_s"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    s.check(record=False)
    out["first_check_s"] = round(time.perf_counter() - t0, 3)
    out.update(layers=len(rows), samples=len(s.eval_data), batch_size=batch_size,
               first_chunk=s.recheck.bounds()[0][1] - s.recheck.bounds()[0][0])
    blocks = sorted({int(n.split(".")[2]) for n, *_ in rows if n.startswith("model.layers.")})
    picks = sorted({blocks[0], blocks[len(blocks) // 2], blocks[-1]})
    edits = []
    for b in picks:
        layer = f"model.layers.{b}.mlp.down_proj"
        best = {"recheck_s": float("inf"), "full_s": float("inf"), "first_estimate_s": float("inf")}
        exact, requant = True, None
        for k in range(repeats):
            s.edit_layers([layer], {"weight": {"bits": 4}})
            before = dict(s.sim.cache.computed)
            t_inc, t_first, m_inc = _timed(s, True)
            if k == 0:
                requant = sorted(n for n, c in s.sim.cache.computed.items() if c != before.get(n, 0))
            mode = s.recheck.last.get("mode")
            restart = getattr(s.recheck.runner, "last_start", 0)
            t_full, _, m_full = _timed(s, False)
            exact = exact and m_inc == m_full
            best["recheck_s"] = min(best["recheck_s"], t_inc)
            best["full_s"] = min(best["full_s"], t_full)
            best["first_estimate_s"] = min(best["first_estimate_s"], t_first if t_first is not None else t_inc)
            s.undo()
            s.check(record=False)  # back to the base (not timed)
        edits.append({"block": b, "layer": layer, "mode": mode, "restart_block": restart, **{k: round(v, 3) for k, v in best.items()},
                      "ratio": round(best["recheck_s"] / best["full_s"], 3), "requantized": requant,
                      "requantized_ok": requant == [layer], "exact": exact})
        print(json.dumps(edits[-1]), file=sys.stderr, flush=True)
    out["edits"] = edits
    out["recheck_stats"] = {k: v for k, v in s.recheck.stats.items() if k not in ("changed",)}
    out["weight_cache"] = s.sim.cache_stats
    return out


def _child(args: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env, timeout=3600)
    sys.stderr.write(r.stderr[-4000:] if r.returncode else "".join(
        ln + "\n" for ln in r.stderr.splitlines() if ln.startswith("{")))
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--build", nargs=2, help=argparse.SUPPRESS)
    add_out_argument(p)
    a = p.parse_args()
    if a.build:
        build(Path(a.build[0]), Path(a.build[1]), a.layers)
        print("{}")
        return
    if a.measure:
        print(json.dumps(measure(a.measure[0], a.measure[1], a.batch_size, a.repeats)))
        return
    started = meta()
    with tempfile.TemporaryDirectory(prefix="quantviz-lmi-") as tmp:
        folder, data = Path(tmp) / "llama-134m", Path(tmp) / "tokens.npz"
        built = _child(["--build", str(folder), str(data), "--layers", str(a.layers)])
        res = built if "error" in built else _child(
            ["--measure", str(folder), str(data), "--batch-size", str(a.batch_size), "--repeats", str(a.repeats)])
    out = {"model": f"llama-134m layout, {a.layers} layers", "data": "32 x 64 random tokens (16 calibrate, 16 evaluated)",
           "llama_134m": res, "targets": TARGETS}
    if "edits" in res:
        last = res["edits"][-1]
        out["summary"] = {"open_table_s": res["open_table_s"], "open_table_cold_s": res["open_table_cold_s"],
                          "calibration_s": res["calibration_s"], "first_check_s": res["first_check_s"],
                          "ratio_by_block": {str(e["block"]): e["ratio"] for e in res["edits"]}, "first_histogram_s": res["first_histogram_s"],
                          "first_estimate_s_max": max(e["first_estimate_s"] for e in res["edits"]),
                          "last_block_ratio": last["ratio"],
                          "requantized_only_edited": all(e["requantized_ok"] for e in res["edits"]),
                          "exact": all(e["exact"] for e in res["edits"])}
    finish(out, a.out, started)


if __name__ == "__main__":
    main()
