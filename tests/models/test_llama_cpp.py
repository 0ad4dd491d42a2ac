"""quantviz against llama.cpp itself (slow: builds llama-quantize and llama-perplexity from source
once, see tests/models/llama_cpp.py).

* every type's codes: llama-quantize --pure writes, for each tensor of a float GGUF, the bytes
  quantviz's quantizer writes (K-quants included, which the gguf package cannot quantize);
* a per-layer mix: quantviz's GGUF and llama-quantize's output with the same per-tensor types
  (``--tensor-type-file`` from ``--format llama-tensor-types``) hold the same tensors and give the
  same perplexity in llama-perplexity; quantviz's simulated KL divergence from the float model
  matches llama.cpp's ``--kl-divergence`` within 10 %.
"""
from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest

from quantviz.core.numerics.ggml import GGML_TYPES, quantize_rows
from quantviz.io.config import QuantConfig
from quantviz.session import Session

from . import llama_cpp
from .fixtures import plain_text, tiny_llama

pytestmark = pytest.mark.slow
gguf = pytest.importorskip("gguf", reason="the gguf package (pip install 'quantviz[gguf]') reads the GGUF files")
CTX = 64
FLOAT = QuantConfig(default={"weight": {"bits": None}, "activation": {"bits": None}})


@pytest.fixture(scope="module")
def bins():
    try:
        return llama_cpp.tools()
    except llama_cpp.Unavailable as exc:
        pytest.skip(f"llama.cpp tree not available: {exc}")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("llama_cpp")
    folder = tiny_llama(d / "model", context=2 * CTX)
    text = d / "text.txt"
    text.write_text(plain_text(1500, seed=11))
    # weights only, nothing to calibrate: every sequence is measured (no held-out split), as llama-perplexity
    # reads the same text from its start
    s = Session.open(str(folder), data=str(text), calib=str(text), batch_size=8, seq_len=CTX)
    s.set_config(FLOAT)
    f32 = d / "f32.gguf"
    s.export("gguf", f32)
    return s, f32, text, d


def _run(*argv, timeout=900) -> str:
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, (argv[0], r.stdout[-2000:], r.stderr[-2000:])
    return r.stdout + r.stderr


def _tensors(path):
    return {t.name: t for t in gguf.GGUFReader(str(path)).tensors}


@pytest.mark.parametrize("name", list(GGML_TYPES))
def test_llama_quantize_writes_quantviz_codes(bins, model, name, tmp_path):
    s, f32, _, _ = model
    out = tmp_path / f"{name}.gguf"
    _run(bins / "llama-quantize", "--pure", f32, out, name.upper(), "1")
    floats = _tensors(f32)
    checked = 0
    for tname, t in _tensors(out).items():
        if t.tensor_type.name != name.upper():
            continue
        rows = np.asarray(floats[tname].data).reshape(-1, int(floats[tname].shape[0]))
        import torch

        mine = quantize_rows(torch.from_numpy(rows.copy()), name).packed.numpy()
        assert np.array_equal(np.asarray(t.data).reshape(mine.shape), mine), tname
        checked += 1
    assert checked == len(s.layers)  # every projection, the embedding and the output


def _ppl_kld(out: str) -> tuple[str, float]:
    ppl = re.search(r"Mean PPL\(Q\)\s*:\s*([0-9.]+)", out)
    kld = re.search(r"Mean\s+KLD:\s+([0-9.eE+-]+)", out)
    assert ppl and kld, out[-3000:]
    return ppl.group(1), float(kld.group(1))


def test_mix_perplexity_and_kl_match_llama_cpp(bins, model, tmp_path):
    s, f32, text, d = model
    mix = {"model.layers.0.self_attn.q_proj": "q4_k", "model.layers.0.self_attn.k_proj": "q4_k",
           "model.layers.0.self_attn.v_proj": "q6_k", "model.layers.0.self_attn.o_proj": "q4_k",
           "model.layers.0.mlp.gate_proj": "q3_k", "model.layers.0.mlp.up_proj": "q3_k",
           "model.layers.0.mlp.down_proj": "q5_k", "model.layers.1.self_attn.q_proj": "q2_k",
           "model.layers.1.self_attn.k_proj": "q4_0", "model.layers.1.self_attn.v_proj": "q8_0",
           "model.layers.1.mlp.gate_proj": "q4_1", "model.layers.1.mlp.up_proj": "q5_0",
           "model.layers.1.mlp.down_proj": "q5_1", "lm_head": "q6_k"}
    s.set_config(QuantConfig(default=FLOAT.default,
                             layers={n: {"weight": {"bits": 4, "format": f}} for n, f in mix.items()}))
    ours, types = tmp_path / "quantviz.gguf", tmp_path / "types.txt"
    s.export("gguf", ours)
    s.export("llama-tensor-types", types)
    theirs = tmp_path / "llama-quantize.gguf"
    _run(bins / "llama-quantize", "--tensor-type-file", types, f32, theirs, "Q8_0", "1")
    a, b = _tensors(ours), _tensors(theirs)
    assert set(a) == set(b)
    for name in a:
        assert a[name].tensor_type == b[name].tensor_type, name
        assert np.array_equal(np.asarray(a[name].data), np.asarray(b[name].data)), name
    base = tmp_path / "float.kld"
    common = ["-f", text, "-c", CTX, "-b", CTX, "-t", "2", "--chunks", "8"]
    _run(bins / "llama-perplexity", "-m", f32, *common, "--kl-divergence-base", base)
    ppl_ours, kld_ours = _ppl_kld(_run(bins / "llama-perplexity", "-m", ours, *common, "--kl-divergence-base", base,
                                       "--kl-divergence"))
    ppl_theirs, kld_theirs = _ppl_kld(_run(bins / "llama-perplexity", "-m", theirs, *common,
                                           "--kl-divergence-base", base, "--kl-divergence"))
    assert ppl_ours == ppl_theirs and kld_ours == kld_theirs  # the same file content: the same numbers
    sim_kl = s.check(label="mix").metrics["kl_div"]
    assert kld_ours > 0
    assert abs(sim_kl - kld_ours) <= 0.10 * kld_ours, (sim_kl, kld_ours)


@pytest.mark.parametrize("preset", ["Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0"])
def test_presets_give_llama_quantize_types(bins, model, preset, tmp_path):
    s, f32, _, _ = model
    out = tmp_path / "p.gguf"
    _run(bins / "llama-quantize", f32, out, preset, "1")
    theirs = {n: t.tensor_type.name for n, t in _tensors(out).items()}
    s.apply_preset(preset)
    s.export("gguf", tmp_path / "ours.gguf")
    ours = {n: t.tensor_type.name for n, t in _tensors(tmp_path / "ours.gguf").items()}
    assert ours == theirs
