"""A ~1.1B-parameter Llama-layout model through the CLI: time per step and peak memory.

Run: ``python benchmarks/big.py`` (``--layers/--hidden/--mlp/--vocab`` make it
smaller for a smoke run). It builds a Llama-layout causal LM with random
weights (default: 22 layers, hidden 2048, MLP 5632, 32 heads / 4 KV heads,
vocabulary 32000: about 1.1B parameters, the TinyLlama-1.1B layout), saves it
in bf16 as a Hugging Face folder in a temporary directory (about 2.2 GB;
deleted afterwards) with 8 random sequences of 128 tokens, and runs, each as
its own CLI process (``python -m quantviz ...``):

1. ``evaluate --preset W8``: open, calibrate, float reference, one W8 evaluation;
2. ``sensitivity --method local --bits 4,6,8 --act-bits none``: the local proxy at
   three bit-widths (written to the score cache);
3. ``search --avg-bits 5 --bits 4,6,8 --steps 2 --sensitivity local``: layers
   ranked by the local proxy (step 2's sweep, read from the score cache: the
   search runs no sweep of its own); with ``--measure less`` (default) the
   candidates within the budget are screened on a quarter of the sequences and
   only those the screen cannot rule out are measured end to end on all of them
   (``candidates``, ``screened``, ``full_evaluations`` in the JSON); with
   ``--measure all`` every candidate is measured end to end. An e2e-ranked search
   would first run one evaluation per layer and bit-width: 156 layers x 3 =
   468 evaluations of the whole model.

The model is built in a subprocess too: on Linux a child's ``ru_maxrss`` starts
from its parent's peak RSS (the high-water mark survives fork and exec), so a
parent that had held the 1.1B model would lift every step's figure to its own
peak (4.7 GB: how the first runs of this benchmark over-reported evaluate).

For each step: wall time, peak RSS of the process (``wait4`` rusage) and
``peak_rss_ratio`` = (peak RSS - the baseline of a process that only imports
torch, transformers, quantviz and transformers' Llama class) / the bf16 weight
bytes. The last line is one
JSON object, with ``per_billion_params`` (seconds per step scaled to 1B).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._meta import add_out_argument, finish, meta  # noqa: E402


def build(folder: Path, data: Path, args) -> int:
    import numpy as np
    import torch
    import transformers

    transformers.utils.logging.set_verbosity_error()
    cfg = transformers.LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.mlp,
                                   num_hidden_layers=args.layers, num_attention_heads=args.heads,
                                   num_key_value_heads=args.kv_heads, max_position_embeddings=2048,
                                   tie_word_embeddings=False, torch_dtype="bfloat16")
    torch.manual_seed(0)
    with torch.device("cpu"):
        model = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(str(folder), safe_serialization=True)
    del model
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, args.vocab, (args.seqs, args.tokens), generator=g)
    np.savez(data, input_ids=ids.numpy(), attention_mask=np.ones_like(ids.numpy()))
    return n


def run(cmd: list[str], env: dict) -> dict:
    t = time.perf_counter()
    # output goes to files: a child writing more than a pipe holds (a sensitivity JSON) would block
    # forever while this process waits for it
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:
        p = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=env, cwd=str(ROOT))
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t
        fo.seek(0)
        fe.seek(0)
        out, err = fo.read().decode(errors="replace"), fe.read().decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    return {"seconds": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "exit": code,
            "error": err.strip().splitlines()[-1] if code and err.strip() else None, "stdout": out}


SHAPE = ("layers", "hidden", "mlp", "heads", "kv_heads", "vocab", "seqs", "tokens")


def _shape_args(args) -> list[str]:
    return [a for k in SHAPE for a in (f"--{k.replace('_', '-')}", str(getattr(args, k)))]


def _json_of(text: str):
    """The JSON object a ``--json`` command printed (anything printed before it is skipped)."""
    start = text.find("\n{") + 1 if not text.lstrip().startswith("{") else text.find("{")
    try:
        return json.loads(text[start:]) if start >= 0 else None
    except ValueError:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=22)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--mlp", type=int, default=5632)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--seqs", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--bits", default="4,6,8", help="bit-widths of the local sweep and the search (default 4,6,8)")
    ap.add_argument("--avg-bits", type=float, default=5.0, help="the search's budget (default 5)")
    ap.add_argument("--measure", default="less",
                    help="the search's --measure: less screens candidates on a subset first, all measures every one "
                         "end to end; less,all runs both searches (steps search and search_all; default less)")
    ap.add_argument("--skip-search", action="store_true", help="stop after the local sensitivity")
    add_out_argument(ap)
    ap.add_argument("--steps", help="only these steps, e.g. open,local,search (default: all)")
    ap.add_argument("--build-into", nargs=2, metavar=("FOLDER", "DATA"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build_into:  # the child that builds the model (see the module doc)
        print(build(Path(args.build_into[0]), Path(args.build_into[1]), args))
        return
    started = meta()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               QUANTVIZ_CACHE_DIR=tempfile.mkdtemp(prefix="qv-big-cache-"))
    py = sys.executable
    # the baseline process also loads transformers' Llama code (~140 MB, the same for any size)
    base = run([py, "-c", "import torch, transformers, quantviz.cli.main, quantviz.session; transformers.LlamaForCausalLM"], env)
    tmp = Path(tempfile.mkdtemp(prefix="qv-big-"))
    out: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
                 "load_avg_start": [round(v, 2) for v in os.getloadavg()],
                 "cpu_upcast": os.environ.get("QUANTVIZ_CPU_UPCAST", "1"),
                 "baseline_rss_mb": base["peak_rss_mb"], "steps": {}}
    try:
        folder, data = tmp / "llama", tmp / "tokens.npz"
        t = time.perf_counter()
        b = run([py, __file__, "--build-into", str(folder), str(data), *_shape_args(args)], env)
        if b["exit"] != 0:
            raise SystemExit(f"building the model failed: {b['error']}")
        params = int(b["stdout"].strip().splitlines()[-1])
        out["build_save_s"] = round(time.perf_counter() - t, 2)
        out["parent_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        wbytes = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
        out.update(params=params, weight_bytes=wbytes, data=f"{args.seqs} x {args.tokens} tokens")
        common = [str(folder), "--data", str(data), "--batch-size", str(args.batch_size), "--json"]
        steps = [("open_calibrate_evaluate", ["evaluate", *common, "--preset", "W8"]),
                 ("local_3_bits", ["sensitivity", *common, "--method", "local", "--bits", args.bits, "--act-bits", "none"])]
        modes = args.measure.split(",")
        if not set(modes) <= {"less", "all"}:
            raise SystemExit(f"--measure: less, all or less,all, got {args.measure!r}")
        for i, mode in enumerate(modes if not args.skip_search else []):
            steps.append(("search" if i == 0 else f"search_{mode}",
                          ["search", *common, "--avg-bits", str(args.avg_bits), "--bits", args.bits,
                           "--steps", "2", "--sensitivity", "local", "--measure", mode]))
        if args.steps:
            steps = [st for st in steps if st[0].split("_")[0] in args.steps.split(",")]
        for name, cmd in steps:
            r = run([py, "-m", "quantviz", *cmd], env)
            stdout = r.pop("stdout")
            is_search = name.startswith("search")
            if is_search and r["exit"] == 0:
                res = _json_of(stdout)
            if is_search and r["exit"] == 0 and res is None:
                r["parse_error"] = "no JSON object in the output: " + stdout[:300]
                Path(tempfile.gettempdir(), "qv-big-search-stdout.txt").write_text(stdout)
            elif is_search and r["exit"] == 0:
                c = res["chosen"]
                r.update(sensitivity=res.get("sensitivity"), sensitivity_from_cache=res.get("sensitivity_from_cache"),
                         candidates=res.get("candidates"), measure=res.get("measure", "all"),
                         screened=res.get("screened"), screen_samples=res.get("screen_samples"),
                         eval_samples=res.get("eval_samples"),
                         full_evaluations=res.get("full_evaluations", res.get("candidates")), metric=res.get("metric"), chosen_avg_bits=round(c["avg_bits"], 3),
                         chosen_metric=c["metrics"].get(res.get("metric")), float_metric=res["float_metrics"].get(res.get("metric")),
                         pareto=[{"avg_bits": round(q["avg_bits"], 3), res["metric"]: q["metrics"].get(res["metric"])}
                                 for q in res["pareto"]], search_s=round(res.get("seconds", 0.0), 1),
                         chosen_bits=c["bits"])
            r["peak_rss_ratio"] = round((r["peak_rss_mb"] - base["peak_rss_mb"]) * 2**20 / wbytes, 2)
            r["load_avg_after"] = [round(v, 2) for v in os.getloadavg()]  # the machine is shared: how busy it was
            out["steps"][name] = r
            print(json.dumps({name: r}), file=sys.stderr, flush=True)
        per_b = 1e9 / params
        out["per_billion_params_s"] = {k: round(v["seconds"] * per_b, 1) for k, v in out["steps"].items()}
        out["peak_rss_ratio"] = max((v["peak_rss_ratio"] for v in out["steps"].values()), default=None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(env["QUANTVIZ_CACHE_DIR"], ignore_errors=True)
    finish(out, args.out, started)


if __name__ == "__main__":
    main()
