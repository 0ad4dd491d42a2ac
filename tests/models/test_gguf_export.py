"""GGUF export: a tiny Llama-layout model written with each layer in its llama.cpp type, read back
with the gguf package's reader (types, shapes, names, dequantized weights = the simulation's)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from quantviz.core.errors import QuantvizError
from quantviz.io.config import QuantConfig
from quantviz.session import Session

from .fixtures import add_bpe_tokenizer, plain_text, tiny_gpt2, tiny_llama

gguf = pytest.importorskip("gguf", reason="the gguf package (pip install 'quantviz[gguf]') reads the exported file")

MIX = {"model.layers.0.self_attn.q_proj": "q4_k", "model.layers.0.self_attn.k_proj": "q6_k",
       "model.layers.0.self_attn.v_proj": "q8_0", "model.layers.0.self_attn.o_proj": "q4_0",
       "model.layers.0.mlp.gate_proj": "q5_k", "model.layers.0.mlp.up_proj": "q3_k",
       "model.layers.0.mlp.down_proj": "q2_k", "model.layers.1.self_attn.q_proj": "q4_1",
       "model.layers.1.self_attn.k_proj": "q5_0", "model.layers.1.self_attn.v_proj": "q5_1",
       "model.layers.1.mlp.down_proj": "q6_k", "lm_head": "q6_k", "model.embed_tokens": "q4_k"}
GGUF_NAME = {"model.layers.0.self_attn.q_proj": "blk.0.attn_q.weight", "model.layers.0.self_attn.k_proj": "blk.0.attn_k.weight",
             "model.layers.0.self_attn.v_proj": "blk.0.attn_v.weight", "model.layers.0.self_attn.o_proj": "blk.0.attn_output.weight",
             "model.layers.0.mlp.gate_proj": "blk.0.ffn_gate.weight", "model.layers.0.mlp.up_proj": "blk.0.ffn_up.weight",
             "model.layers.0.mlp.down_proj": "blk.0.ffn_down.weight", "model.layers.1.self_attn.q_proj": "blk.1.attn_q.weight",
             "model.layers.1.self_attn.k_proj": "blk.1.attn_k.weight", "model.layers.1.self_attn.v_proj": "blk.1.attn_v.weight",
             "model.layers.1.mlp.down_proj": "blk.1.ffn_down.weight", "lm_head": "output.weight",
             "model.embed_tokens": "token_embd.weight"}


def mix_config(mix: dict) -> QuantConfig:
    return QuantConfig(default={"weight": {"bits": None}, "activation": {"bits": None}},
                       layers={n: {"weight": {"bits": 4, "format": f}} for n, f in mix.items()})


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("llama")
    folder = tiny_llama(d / "model")
    text = d / "text.txt"
    text.write_text(plain_text(600, seed=5))
    return folder, text


@pytest.fixture(scope="module")
def llama(llama_folder):
    folder, text = llama_folder
    s = Session.open(str(folder), data=str(text), batch_size=4, seq_len=32)
    return folder, s


def _permuted(rows: torch.Tensor, heads: int) -> torch.Tensor:
    r = rows.shape[0]
    return rows.reshape(heads, 2, r // heads // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def test_gguf_holds_each_layer_in_its_type_with_the_simulated_weights(llama, tmp_path):
    folder, s = llama
    s.set_config(mix_config(MIX))
    out = tmp_path / "m.gguf"
    res = s.export("gguf", out)
    reader = gguf.GGUFReader(str(out))
    tensors = {t.name: t for t in reader.tensors}
    cfg = s.sim.float_model.config if hasattr(s.sim.float_model, "config") else None
    heads = {"attn_q": 4, "attn_k": 2}
    for layer, fmt in MIX.items():
        t = tensors[GGUF_NAME[layer]]
        assert t.tensor_type.name == fmt.upper(), layer
        sim_w = s.sim.quantize_weight(layer, s.specs[layer].weight).tensor.detach().float()
        deq = torch.from_numpy(gguf.quants.dequantize(t.data, t.tensor_type).copy()).reshape(sim_w.shape)
        part = GGUF_NAME[layer].split(".")[-2]
        expect = _permuted(sim_w, heads[part]) if part in heads else sim_w
        assert torch.equal(deq.view(torch.int32), expect.contiguous().view(torch.int32)), layer  # bit for bit
        assert [int(v) for v in t.shape] == list(reversed(sim_w.shape))
    # what the config leaves float is F32 and equal to the float model; norms are there too
    up1 = tensors["blk.1.ffn_up.weight"]
    assert up1.tensor_type.name == "F32"
    w = s.sim.float_weight("model.layers.1.mlp.up_proj").float()
    assert np.array_equal(np.asarray(up1.data).reshape(w.shape), w.numpy())
    norm = tensors["blk.0.attn_norm.weight"]
    assert np.array_equal(np.asarray(norm.data), dict(s.sim.float_model.named_parameters())[
        "model.layers.0.input_layernorm.weight"].detach().numpy())
    kv = {f.name: f for f in reader.fields.values()}
    assert bytes(kv["general.architecture"].parts[-1]).decode() == "llama"
    assert int(kv["llama.block_count"].parts[-1][0]) == 2
    assert int(kv["llama.attention.head_count_kv"].parts[-1][0]) == 2
    assert len(kv["tokenizer.ggml.tokens"].data) == cfg.vocab_size
    assert set(res.details["tensor_types"].values()) >= {"Q4_K", "Q6_K", "F32"}


def test_gguf_import_gives_back_the_config(llama, tmp_path):
    from quantviz.io.gguf_export import config_from_gguf

    folder, s = llama
    s.set_config(mix_config(MIX))
    out = tmp_path / "m.gguf"
    s.export("gguf", out)
    before = dict(s.specs)
    doc = config_from_gguf(out, s.sim)
    assert doc["layers"]["model.layers.0.mlp.down_proj"]["weight"]["format"] == "q2_k"
    s.set_config(mix_config({}))
    s.set_config(s.load_config_file(out))  # File › Import config, --config: a GGUF is recognised by its magic
    for name, spec in s.specs.items():
        assert spec.weight.format == before[name].weight.format, name
        assert (spec.weight.bits is None) == (before[name].weight.bits is None), name


def test_tensor_type_file_names_every_quantized_tensor(llama, tmp_path):
    folder, s = llama
    s.set_config(mix_config(MIX))
    out = tmp_path / "types.txt"
    s.export("llama-tensor-types", out)
    lines = out.read_text().splitlines()
    pairs = dict(line.split("=") for line in lines)
    assert len(pairs) == len(s.layers)  # every layer: its type, or f32 so llama-quantize leaves it float
    for layer, fmt in MIX.items():
        assert pairs["^" + GGUF_NAME[layer].replace(".", "\\.") + "$"] == fmt
    assert pairs["^blk\\.1\\.ffn_up\\.weight$"] == "f32"


def test_gguf_refuses_a_layer_without_a_llama_cpp_type(llama, tmp_path):
    folder, s = llama
    s.set_config(QuantConfig(default={"weight": {"bits": None}, "activation": {"bits": None}},
                             layers={"model.layers.0.mlp.up_proj": {"weight": {"bits": 4}}}))
    with pytest.raises(QuantvizError, match="model.layers.0.mlp.up_proj \\(int4\\)"):
        s.export("gguf", tmp_path / "m.gguf")
    assert not (tmp_path / "m.gguf").exists()


def test_cli_exports_gguf_and_refuses_what_gguf_cannot_hold(llama_folder, tmp_path, cli):
    folder, text = llama_folder
    cfg = tmp_path / "mix.json"
    cfg.write_text(mix_config({"model.layers.0.mlp.up_proj": "q4_k"}).to_json())
    out = tmp_path / "m.gguf"
    r = cli("export", folder, "--data", text, "--seq-len", 32, "--config", cfg, "--format", "gguf", "--out", out)
    assert r.code == 0, r.err
    assert {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(out)).tensors}["blk.0.ffn_up.weight"] == "Q4_K"
    bad = tmp_path / "bad.json"
    bad.write_text(mix_config({}).to_json().replace('"layers": {}', '"layers": {"model.layers.0.mlp.up_proj": '
                                                    '{"weight": {"bits": 4, "format": "nvfp4"}}}'))
    r = cli("export", folder, "--data", text, "--seq-len", 32, "--config", bad, "--format", "gguf", "--out",
            tmp_path / "b.gguf")
    assert r.code != 0
    assert len(r.err_lines) == 1 and "model.layers.0.mlp.up_proj (nvfp4)" in r.err and "Traceback" not in r.err
    assert not (tmp_path / "b.gguf").exists()


def test_llama_cpp_presets_follow_its_mixture(llama):
    folder, s = llama
    s.apply_preset("Q4_K_M")
    f = {n: sp.weight.format for n, sp in s.specs.items()}
    assert f["lm_head"] == "q6_k" and f["model.embed_tokens"] == "q4_k"
    # two layers: llama.cpp's use_more_bits picks layer 1 (i >= 7n/8), not layer 0
    assert f["model.layers.1.self_attn.v_proj"] == f["model.layers.1.mlp.down_proj"] == "q6_k"
    assert f["model.layers.0.self_attn.v_proj"] == f["model.layers.0.mlp.down_proj"] == "q4_k"
    assert f["model.layers.0.self_attn.q_proj"] == f["model.layers.1.mlp.up_proj"] == "q4_k"
    s.apply_preset("Q8_0")
    assert {sp.weight.format for sp in s.specs.values()} == {"q8_0"}
    s.apply_preset("q6_k", ["model.layers.0.mlp.up_proj"])  # on chosen layers only, the rest kept
    assert s.specs["model.layers.0.mlp.up_proj"].weight.format == "q6_k"
    assert s.specs["model.layers.0.mlp.down_proj"].weight.format == "q8_0"


def test_gpt2_layout(tmp_path):
    folder = tmp_path / "gpt2"
    folder.mkdir()
    vocab = add_bpe_tokenizer(folder)
    tiny_gpt2(folder, vocab=vocab)
    text = tmp_path / "t.txt"
    text.write_text(plain_text(300, seed=2))
    s = Session.open(str(folder), data=str(text), batch_size=4, seq_len=16)
    s.set_config(mix_config({"transformer.h.0.attn.c_attn": "q8_0", "transformer.h.1.mlp.c_fc": "q4_0"}))
    out = tmp_path / "g.gguf"
    s.export("gguf", out)
    reader = gguf.GGUFReader(str(out))
    t = {x.name: x for x in reader.tensors}
    assert t["blk.0.attn_qkv.weight"].tensor_type.name == "Q8_0" and t["blk.1.ffn_up.weight"].tensor_type.name == "Q4_0"
    assert "output.weight" not in t  # tied to token_embd
    for layer, g in (("transformer.h.0.attn.c_attn", "blk.0.attn_qkv.weight"), ("transformer.h.1.mlp.c_fc", "blk.1.ffn_up.weight")):
        sim_w = s.sim.quantize_weight(layer, s.specs[layer].weight).tensor.detach().float()  # Conv1D: (in, out)
        deq = torch.from_numpy(gguf.quants.dequantize(t[g].data, t[g].tensor_type).copy())
        assert torch.equal(deq, sim_w.t())
    w = s.sim.float_weight("transformer.h.1.mlp.c_proj").float()  # float, stored as (out, in)
    assert np.array_equal(np.asarray(t["blk.1.ffn_down.weight"].data), w.t().numpy())
    kv = {f.name: f for f in reader.fields.values()}
    assert bytes(kv["general.architecture"].parts[-1]).decode() == "gpt2"
    assert int(kv["gpt2.block_count"].parts[-1][0]) == 2


def test_search_over_llama_cpp_types_exports_what_it_chose(llama_folder, tmp_path, cli):
    import json

    folder, text = llama_folder
    r = cli("search", folder, "--data", text, "--seq-len", 32, "--avg-bits", 5.5, "--candidates", "q4_k,q6_k,q8_0",
            "--steps", 2, "--json")
    assert r.code == 0, r.err
    res = json.loads(r.out)
    chosen = res["chosen"]
    assert set(chosen["bits"].values()) <= {"q4_k", "q6_k", "q8_0"}
    assert chosen["avg_bits"] <= 5.5 + 1e-9
    cfg = tmp_path / "chosen.json"
    cfg.write_text(json.dumps(chosen["config"]))
    out = tmp_path / "chosen.gguf"
    assert cli("export", folder, "--data", text, "--seq-len", 32, "--config", cfg, "--format", "gguf",
               "--out", out).code == 0
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(out)).tensors}
    for layer, fmt in chosen["bits"].items():
        if layer in GGUF_NAME:
            assert types[GGUF_NAME[layer]] == fmt.upper(), layer
    # the sizes search counts (bits per weight, scales included) are the bytes llama.cpp stores
    from quantviz.core.numerics.formats import FORMATS

    for t in gguf.GGUFReader(str(out)).tensors:
        if t.tensor_type.name in ("Q4_K", "Q6_K", "Q8_0"):
            assert int(t.n_bytes) * 8 == int(np.prod(t.shape)) * FORMATS[t.tensor_type.name.lower()].bits_per_element()
