"""A 7B-class Llama-layout checkpoint on this machine: open to the table and a histogram, then a W4 evaluation.

Run: ``flock /tmp/quantviz-bigmem.lock python benchmarks/llm7b.py`` (``--layers 2`` for a small
run of the same shapes). The model (default: 32 layers, hidden 4096, MLP 11008, 32 heads,
vocabulary 32000: about 6.7B parameters, 13.5 GB in bf16) is written as bf16 safetensors
shards straight from random tensors, one shard at a time (no model object, never the whole
model in memory), with ``config.json`` and ``model.safetensors.index.json``, and 4 random
sequences of 128 tokens. Then, each in a fresh subprocess (its own ``ru_maxrss``, read with
``wait4``):

a. ``open``: ``Session.open(..., prepare=False)``, every table row, the weight histogram of
   one layer (``model.layers.0.mlp.down_proj``): wall time of each and the process's peak RSS;
b. ``evaluate``: ``python -m quantviz evaluate FOLDER --data D --preset W4 --json``: wall time
   and peak RSS (target <= 20 GB).

Before each step the benchmark checks the memory the machine has available; a step it cannot
run (too little memory or disk) is recorded with the reason instead of run. The folder is
deleted afterwards, also on failure.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._meta import add_out_argument, finish, meta  # noqa: E402

TARGETS = {"open_table_histogram_s": 10.0, "evaluate_peak_rss_gb": 20.0}
SHARD_BYTES = 1 << 30


def _tensors(args):
    """(name, shape) of every tensor of a LlamaForCausalLM of this shape, in order."""
    h, m, v = args.hidden, args.mlp, args.vocab
    kv = h * args.kv_heads // args.heads
    yield "model.embed_tokens.weight", (v, h)
    for i in range(args.layers):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", (h,)
        yield p + "self_attn.q_proj.weight", (h, h)
        yield p + "self_attn.k_proj.weight", (kv, h)
        yield p + "self_attn.v_proj.weight", (kv, h)
        yield p + "self_attn.o_proj.weight", (h, h)
        yield p + "post_attention_layernorm.weight", (h,)
        yield p + "mlp.gate_proj.weight", (m, h)
        yield p + "mlp.up_proj.weight", (m, h)
        yield p + "mlp.down_proj.weight", (h, m)
    yield "model.norm.weight", (h,)
    yield "lm_head.weight", (v, h)


def build(folder: Path, data: Path, args) -> dict:
    """Write the shards one at a time; returns parameters and bytes."""
    import numpy as np
    import quantviz  # noqa: F401
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    shards, cur, cur_bytes, params = [], {}, 0, 0

    def flush():
        nonlocal cur, cur_bytes
        if cur:
            shards.append(len(cur))  # a count, not the tensors: one shard is held at a time
            save_file(cur, str(folder / f"shard-{len(shards):05d}.safetensors"), metadata={"format": "pt"})
        cur, cur_bytes = {}, 0

    names = []
    for name, shape in _tensors(args):
        t = torch.empty(shape, dtype=torch.float32)
        if len(shape) == 1:
            t.uniform_(0.5, 1.5, generator=g)
        else:
            t.normal_(0.0, 0.02, generator=g)
        t = t.to(torch.bfloat16)
        params += t.numel()
        if cur_bytes + t.numel() * 2 > SHARD_BYTES:
            flush()
        cur[name] = t
        cur_bytes += t.numel() * 2
        names.append((name, len(shards) + 1))
    flush()
    n = len(shards)
    files = {i + 1: f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)}
    for i in range(n):
        (folder / f"shard-{i + 1:05d}.safetensors").rename(folder / files[i + 1])
    wmap = {name: files[k] for name, k in names}
    total = sum((folder / f).stat().st_size for f in files.values())
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                      "weight_map": wmap}))
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": args.hidden,
           "intermediate_size": args.mlp, "num_hidden_layers": args.layers, "num_attention_heads": args.heads,
           "num_key_value_heads": args.kv_heads, "vocab_size": args.vocab, "max_position_embeddings": 2048,
           "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "dtype": "bfloat16",
           "hidden_act": "silu", "rope_theta": 10000.0, "bos_token_id": 1, "eos_token_id": 2}
    (folder / "config.json").write_text(json.dumps(cfg, indent=1))
    ids = torch.randint(0, args.vocab, (args.seqs, args.tokens), generator=g)
    np.savez(data, input_ids=ids.numpy(), attention_mask=np.ones_like(ids.numpy()))
    return {"params": params, "weight_bytes": total, "shards": n}


def open_step(folder: str, data: str) -> dict:
    """Child (a): open, table, one histogram."""
    import resource

    import quantviz  # noqa: F401
    from quantviz.session import Session

    out = {}
    t0 = time.perf_counter()
    import transformers  # noqa: F401

    transformers.LlamaForCausalLM  # noqa: B018 - the library code, once per process
    out["import_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    s = Session.open(folder, data=data, prepare=False)
    rows = [(l.name, l.type, tuple(l.weight_shape), s.spec(l.name).weight.bits) for l in s.layers]
    out["open_table_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    name = "model.layers.0.mlp.down_proj"
    s.sim.weight_histogram(name)
    s.weight_stats(name)
    out["histogram_s"] = round(time.perf_counter() - t0, 2)
    out["open_table_histogram_s"] = round(out["open_table_s"] + out["histogram_s"], 2)
    out["layers"] = len(rows)
    out["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    return out


def run(cmd: list[str], env: dict, timeout: float) -> dict:
    t = time.perf_counter()
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:
        p = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=env, cwd=str(ROOT))
        deadline, timed_out = time.monotonic() + timeout, False
        try:
            while True:  # polls the child (its rusage comes with wait4), kills it past the deadline
                pid, status, usage = os.wait4(p.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline and not timed_out:
                    timed_out = True
                    p.kill()
                time.sleep(0.5)
        except KeyboardInterrupt:
            p.kill()
            raise
        wall = time.perf_counter() - t
        fo.seek(0)
        fe.seek(0)
        out, err = fo.read().decode(errors="replace"), fe.read().decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    error = err.strip().splitlines()[-1] if code and err.strip() else None
    if timed_out:
        error = f"stopped after the {timeout:.0f} s limit (--timeout); peak RSS up to then"
    elif code < 0:
        error = f"ended by signal {-code}"
    return {"seconds": round(wall, 2), "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2), "exit": code,
            "error": error, "stdout": out}


def _available_gb() -> float:
    from quantviz.core.model.allocator import available_memory

    a = available_memory()
    return round(a / 2**30, 1) if a else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--mlp", type=int, default=11008)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--seqs", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--open-step", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--build-into", nargs=2, help=argparse.SUPPRESS)
    add_out_argument(ap)
    args = ap.parse_args()
    if args.build_into:
        print(json.dumps(build(Path(args.build_into[0]), Path(args.build_into[1]), args)))
        return
    if args.open_step:
        print(json.dumps(open_step(*args.open_step)))
        return
    started = meta()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               QUANTVIZ_CACHE_DIR=tempfile.mkdtemp(prefix="qv-7b-cache-"))
    py = sys.executable
    out: dict = {"shape": {k: getattr(args, k) for k in ("layers", "hidden", "mlp", "heads", "kv_heads", "vocab")},
                 "data": f"{args.seqs} x {args.tokens} tokens", "steps": {}, "targets": TARGETS}
    tmp = Path(tempfile.mkdtemp(prefix="qv-7b-"))
    try:
        folder, data = tmp / "llama-7b", tmp / "tokens.npz"
        need = 2 * sum(int(__import__("math").prod(s)) for _, s in _tensors(args))
        free_disk = shutil.disk_usage(tmp).free
        if free_disk < need * 1.1:
            out["skipped"] = f"needs {need / 1e9:.1f} GB of disk, {free_disk / 1e9:.1f} GB free"
            return
        shape = [a for k in ("layers", "hidden", "mlp", "heads", "kv_heads", "vocab", "seqs", "tokens")
                 for a in (f"--{k.replace('_', '-')}", str(getattr(args, k)))]
        b = run([py, __file__, "--build-into", str(folder), str(data), *shape], env, args.timeout)
        if b["exit"] != 0:
            out["build"] = {"error": b["error"]}
            return
        out.update(json.loads(b["stdout"].strip().splitlines()[-1]))
        out["build"] = {"seconds": b["seconds"], "peak_rss_gb": b["peak_rss_gb"]}
        steps = [("open", [py, __file__, "--open-step", str(folder), str(data)], 0.0),
                 ("evaluate_W4", [py, "-m", "quantviz", "evaluate", str(folder), "--data", str(data), "--preset", "W4",
                                  "--batch-size", str(args.batch_size), "--json"], 1.3 * out["weight_bytes"] / 2**30)]
        for name, cmd, need_gb in steps:
            avail = _available_gb()
            if need_gb and avail < need_gb:
                out["steps"][name] = {"skipped": f"needs about {need_gb:.1f} GB of memory, {avail} GB available"}
                continue
            r = run(cmd, env, args.timeout)
            stdout = r.pop("stdout")
            r["available_gb_before"] = avail
            if name == "open" and r["exit"] == 0:
                r.update(json.loads(stdout.strip().splitlines()[-1]))
            elif r["exit"] == 0:
                try:
                    res = json.loads(stdout[stdout.find("{"):])
                    q = res.get("quantized", {}).get("metrics", {})
                    r["metrics"] = {k: q.get(k) for k in ("sqnr_db", "kl_div", "perplexity")}
                except ValueError:
                    pass
            r["load_avg_after"] = [round(v, 2) for v in os.getloadavg()]
            out["steps"][name] = r
            print(json.dumps({name: r}), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(env["QUANTVIZ_CACHE_DIR"], ignore_errors=True)
        finish(out, args.out, started)


if __name__ == "__main__":
    main()
