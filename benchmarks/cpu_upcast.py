"""bf16 layers on the CPU: computed in bf16 vs. upcast to float32 (:mod:`quantviz.core.model.cpucompute`).

Builds a Llama-layout causal LM with random bf16 weights (default: 2 layers,
hidden 2048, MLP 5632, 32 heads / 4 KV heads, vocabulary 32000), wraps it in a
:class:`QuantSim` with W8 weights, and times, over 8 random sequences of 128
tokens in batches of 4, a float pass and a quantized (W8) pass, each with
``QUANTVIZ_CPU_UPCAST`` on (float32 compute) and off (bf16 compute), the
best of ``--repeats`` interleaved runs. It also checks that the two ways
agree (max relative difference of the logits, the output dtype) and reports
the process's peak RSS.

    python benchmarks/cpu_upcast.py [--layers 2] [--hidden 2048] [--out FILE]

The last line printed is one JSON object: ``speedup_float`` and
``speedup_quantized`` are the bf16 time over the float32-compute time.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._meta import add_out_argument, finish, meta  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--mlp", type=int, default=5632)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--seqs", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    add_out_argument(ap)
    args = ap.parse_args()
    started = meta()

    import torch
    import transformers

    from quantviz.core.model import cpucompute
    from quantviz.core.sim.fakequant import QuantSim
    from quantviz.core.numerics.spec import ActSpec, LayerSpec, WeightSpec

    transformers.utils.logging.set_verbosity_error()
    cfg = transformers.LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.mlp,
                                   num_hidden_layers=args.layers, num_attention_heads=32, num_key_value_heads=4,
                                   max_position_embeddings=2048, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    params = sum(p.numel() for p in model.parameters())
    ids = torch.randint(0, args.vocab, (args.seqs, args.tokens), generator=torch.Generator().manual_seed(0))
    batches = list(ids.split(args.batch_size))
    os.environ[cpucompute.ENV] = "1"
    sim = QuantSim(model)
    sim.apply({l.name: LayerSpec(WeightSpec(bits=8), ActSpec(bits=None)) for l in sim.layers})

    def run(quantized: bool):
        outs = []
        t = time.perf_counter()
        with torch.no_grad():
            for b in batches:
                m = sim.qmodel if quantized else sim.float_model
                outs.append(m(input_ids=b).logits)
        return time.perf_counter() - t, torch.cat(outs)

    times = {(q, up): [] for q in (False, True) for up in ("1", "0")}
    logits = {}
    for _ in range(args.repeats):
        for q in (False, True):
            for up in ("1", "0"):
                os.environ[cpucompute.ENV] = up
                dt, out = run(q)
                times[(q, up)].append(dt)
                logits[(q, up)] = out
    os.environ.pop(cpucompute.ENV, None)

    def rel(a, b):
        return float((a.float() - b.float()).norm() / b.float().norm())

    best = {k: min(v) for k, v in times.items()}
    res = {"model": f"Llama-layout {args.layers} layers, hidden {args.hidden}, MLP {args.mlp}, vocab {args.vocab}, bf16",
           "params": params, "data": f"{args.seqs} x {args.tokens} tokens, batch {args.batch_size}",
           "threads": torch.get_num_threads(),
           "float_s": {"bf16": round(best[(False, "0")], 3), "float32_compute": round(best[(False, "1")], 3)},
           "quantized_w8_s": {"bf16": round(best[(True, "0")], 3), "float32_compute": round(best[(True, "1")], 3)},
           "speedup_float": round(best[(False, "0")] / best[(False, "1")], 2),
           "speedup_quantized": round(best[(True, "0")] / best[(True, "1")], 2),
           "logits_rel_diff_float": round(rel(logits[(False, "1")], logits[(False, "0")]), 5),
           "logits_rel_diff_quantized": round(rel(logits[(True, "1")], logits[(True, "0")]), 5),
           "output_dtype": str(logits[(True, "1")].dtype),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    finish(res, args.out, started)


if __name__ == "__main__":
    main()
