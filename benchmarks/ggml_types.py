"""llama.cpp types: quantviz's simulated KL divergence and perplexity against llama.cpp's own
(``llama-perplexity --kl-divergence`` on the GGUF quantviz exports), per preset and for a mix of
all ten types, on a small random Llama-layout model; and the quantizer's speed per type.

    python benchmarks/ggml_types.py [--out FILE]

Needs the gguf package and llama.cpp's tools (built once by tests/models/llama_cpp.py). The model
is random (tests/models/fixtures.py: tiny_llama, 2 layers, width 256, a byte-level BPE vocabulary of
320 tokens), so its perplexity is near the vocabulary size and KL divergences are small; the figures
compare the simulation with the runtime, they say nothing about a real model's accuracy. quantviz
scores every position of its 64-token sequences, llama-perplexity the second half of each 64-token
chunk (8 chunks); llama.cpp also rounds activations to 8 bits inside its matrix products.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import quantviz  # noqa: E402,F401  (first: it makes OpenMP wait passively before torch loads it)
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._meta import add_out_argument, finish, meta  # noqa: E402
from quantviz.core.numerics.ggml import GGML_TYPES, quantize_rows  # noqa: E402
from quantviz.io.config import QuantConfig  # noqa: E402
from quantviz.session import Session  # noqa: E402
from tests.models import llama_cpp  # noqa: E402
from tests.models.fixtures import plain_text, tiny_llama  # noqa: E402

CTX = 64
MIX = {"model.layers.0.self_attn.q_proj": "q4_k", "model.layers.0.self_attn.k_proj": "q4_k",
       "model.layers.0.self_attn.v_proj": "q6_k", "model.layers.0.self_attn.o_proj": "q4_k",
       "model.layers.0.mlp.gate_proj": "q3_k", "model.layers.0.mlp.up_proj": "q3_k",
       "model.layers.0.mlp.down_proj": "q5_k", "model.layers.1.self_attn.q_proj": "q2_k",
       "model.layers.1.self_attn.k_proj": "q4_0", "model.layers.1.self_attn.v_proj": "q8_0",
       "model.layers.1.mlp.gate_proj": "q4_1", "model.layers.1.mlp.up_proj": "q5_0",
       "model.layers.1.mlp.down_proj": "q5_1", "lm_head": "q6_k"}
FLOAT = {"weight": {"bits": None}, "activation": {"bits": None}}


def _llama(bins: Path, model: Path, text: Path, base: Path, *extra) -> str:
    r = subprocess.run([str(bins / "llama-perplexity"), "-m", str(model), "-f", str(text), "-c", str(CTX), "-b",
                        str(CTX), "-t", "2", "--chunks", "8", "--kl-divergence-base", str(base), *extra],
                       capture_output=True, text=True, timeout=900, check=True)
    return r.stdout + r.stderr


def speed(rows: int = 512, n: int = 4096) -> dict:
    m = torch.randn(rows, n, generator=torch.Generator().manual_seed(0)) * 0.02
    out = {}
    for name in GGML_TYPES:
        t0 = time.perf_counter()
        quantize_rows(m, name)
        out[name] = round(rows * n / (time.perf_counter() - t0) / 1e6, 2)  # million weights per second
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_out_argument(ap)
    args = ap.parse_args(argv)
    started = meta()
    bins = llama_cpp.tools()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        folder = tiny_llama(d / "model", context=2 * CTX)
        text = d / "text.txt"
        text.write_text(plain_text(1500, seed=11))
        s = Session.open(str(folder), data=str(text), calib=str(text), batch_size=8, seq_len=CTX)  # all sequences, as llama-perplexity
        s.set_config(QuantConfig(default=FLOAT))
        s.export("gguf", d / "f32.gguf")
        base = d / "base.kld"
        _llama(bins, d / "f32.gguf", text, base)
        configs = {p: None for p in ("Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")}
        configs["mix of all ten types"] = QuantConfig(default=FLOAT, layers={n: {"weight": {"bits": 4, "format": f}}
                                                                           for n, f in MIX.items()})
        for label, cfg in configs.items():
            if cfg is None:
                s.apply_preset(label)
            else:
                s.set_config(cfg)
            res = s.check(label=label, record=False)
            path = d / "q.gguf"
            s.export("gguf", path, force=True)
            out = _llama(bins, path, text, base, "--kl-divergence")
            kld = float(re.search(r"Mean\s+KLD:\s+([0-9.eE+-]+)", out).group(1))
            ppl = float(re.search(r"Mean PPL\(Q\)\s*:\s*([0-9.]+)", out).group(1))
            rows.append({"config": label, "avg_bits": round(res.size["avg_bits"], 4),
                         "sim_kl": res.metrics["kl_div"], "llama_cpp_kl": kld,
                         "kl_rel_diff": round(abs(res.metrics["kl_div"] - kld) / kld, 4),
                         "sim_ppl": res.metrics["perplexity"], "llama_cpp_ppl": ppl})
            print(rows[-1], file=sys.stderr)
    result = {"benchmark": "ggml_types", "model": "tiny_llama (random, 2 layers, width 256, vocab 320)",
              "context": CTX, "llama_cpp": str(bins.parent.parent.parent.name), "rows": rows,
              "quantize_mweights_per_s": speed(), "quantize_matrix": [512, 4096]}
    finish(result, args.out, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
