"""compressed-tensors export: a tiny Llama folder written with a scheme per layer, read back by the
compressed-tensors package (each layer decompressed by the library's own compressor for the scheme
its config group names = the simulation's weight, bit for bit) and by transformers (its model from
the folder computes the simulation's logits)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from quantviz.core.errors import QuantvizError
from quantviz.io.config import QuantConfig
from quantviz.session import Session

from models.fixtures import plain_text, tiny_llama

ct = pytest.importorskip("compressed_tensors", reason="the compressed-tensors package (pip install "
                         "'quantviz[ctensors]') reads the exported folder")
transformers = pytest.importorskip("transformers")

L0, L1 = "model.layers.0.", "model.layers.1."
INT4_G32 = {"bits": 4, "granularity": "per_group", "group_size": 32}
INT4_CH = {"bits": 4, "granularity": "per_channel"}
INT8_CH = {"bits": 8, "granularity": "per_channel"}
INT8_G32 = {"bits": 8, "granularity": "per_group", "group_size": 32}
FP8_CH = {"bits": 8, "format": "fp8_e4m3", "granularity": "per_channel"}
FP8_T = {"bits": 8, "format": "fp8_e4m3", "granularity": "per_tensor"}
INT4_G32_ASYM = {"bits": 4, "granularity": "per_group", "group_size": 32, "symmetric": False}
INT8_CH_ASYM = {"bits": 8, "granularity": "per_channel", "symmetric": False}
WEIGHT_ONLY = {L0 + "self_attn.q_proj": INT4_G32, L0 + "self_attn.k_proj": INT8_CH, L0 + "self_attn.v_proj": FP8_CH,
               L0 + "self_attn.o_proj": INT4_CH, L0 + "mlp.gate_proj": INT8_G32, L0 + "mlp.down_proj": FP8_T,
               L1 + "self_attn.q_proj": INT4_G32, L1 + "mlp.up_proj": INT4_G32, "lm_head": INT8_CH}
A8 = {"bits": 8, "symmetric": True}
AFP8 = {"bits": 8, "format": "fp8_e4m3"}


def config(layers: dict, acts: dict | None = None) -> QuantConfig:
    acts = acts or {}
    return QuantConfig(default={"weight": {"bits": None}, "activation": {"bits": None}},
                       layers={n: {"weight": w, **({"activation": acts[n]} if n in acts else {})}
                               for n, w in layers.items()})


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    d = tmp_path_factory.mktemp("llama")
    folder = tiny_llama(d / "model", hidden=64, intermediate=128, layers=2)
    text = d / "text.txt"
    text.write_text(plain_text(400, seed=5))
    s = Session.open(str(folder), data=str(text), batch_size=4, seq_len=32)
    return folder, s


def decompressed(out: Path) -> dict:
    """{layer: float weight} as the compressed-tensors package decompresses the folder: the config's
    groups parsed by its QuantizationConfig, each target's tensors given to the compressor its format names."""
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationConfig
    from safetensors.torch import load_file

    cfg = json.loads((out / "config.json").read_text())
    qc = QuantizationConfig.model_validate(cfg["quantization_config"])
    tensors = load_file(str(out / "model.safetensors"))
    got = {}
    for scheme in qc.config_groups.values():
        comp = BaseCompressor.get_value_from_registry(scheme.format or qc.format)
        for target in scheme.targets:
            sd = {k[len(target) + 1:]: v for k, v in tensors.items() if k.startswith(target + ".")}
            got[target] = comp.decompress(sd, scheme)["weight"]
    return got, qc, tensors


def test_each_layer_decompresses_to_the_simulated_weight_and_transformers_computes_its_logits(llama, tmp_path):
    folder, s = llama
    s.set_config(config(WEIGHT_ONLY))
    out = tmp_path / "ct"
    res = s.export("compressed-tensors", out)
    assert all(p.is_file() for p in res.paths) and (out / "tokenizer.json").is_file()
    got, qc, tensors = decompressed(out)
    assert qc.format == "mixed-precision" and qc.quant_method == "compressed-tensors"
    assert set(got) == set(WEIGHT_ONLY)
    formats = {t: g.format for g in qc.config_groups.values() for t in g.targets}
    assert formats[L0 + "self_attn.q_proj"] == "pack-quantized" and formats[L0 + "self_attn.v_proj"] == "float-quantized"
    assert tensors[L0 + "self_attn.q_proj.weight_packed"].dtype == torch.int32
    assert tensors[L0 + "self_attn.q_proj.weight_packed"].shape == (64, 64 * 4 // 32)
    assert tensors[L0 + "self_attn.q_proj.weight_scale"].shape == (64, 2)
    assert tensors[L0 + "self_attn.v_proj.weight"].dtype == torch.float8_e4m3fn
    assert L0 + "self_attn.q_proj.weight_zero_point" not in tensors  # symmetric: no zero point
    for layer in WEIGHT_ONLY:
        sim_w = s.sim.quantize_weight(layer, s.specs[layer].weight).tensor.detach().float()
        lib_w = got[layer].float()
        assert torch.equal(lib_w.view(torch.int32), sim_w.contiguous().view(torch.int32)), layer  # bit for bit
    # a layer the config leaves float is its float tensor
    up0 = tensors[L0 + "mlp.up_proj.weight"]
    assert torch.equal(up0, s.sim.float_weight(L0 + "mlp.up_proj").float())

    # transformers (with compressed-tensors installed) loads the folder and computes the simulated model's logits
    lib, ref, flt, model = logits(out, s)
    assert (lib - ref).abs().max() <= 1e-5 * ref.abs().max()
    assert (flt - ref).abs().max() > 100 * (lib - ref).abs().max()  # the comparison sees quantization
    for layer in WEIGHT_ONLY:  # the weights transformers' model decompressed on its first forward
        sim_w = s.sim.quantize_weight(layer, s.specs[layer].weight).tensor.detach().float()
        assert torch.equal(model.get_submodule(layer).weight.detach().float(), sim_w), layer


def logits(out: Path, s, dtype=None):
    """(transformers' model from ``out``, the simulation, the float model) logits on random tokens, and the model."""
    transformers.utils.logging.set_verbosity_error()
    model = transformers.AutoModelForCausalLM.from_pretrained(str(out), **({"dtype": dtype} if dtype else {})).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lib = model(input_ids=ids).logits
        s.sim.apply(s.specs)
        ref = s.sim.qmodel(input_ids=ids).logits
        flt = s.sim.float_model(input_ids=ids).logits
    return lib, ref, flt, model


def test_asymmetric_weight_only_layers_carry_packed_zero_points(llama, tmp_path):
    """Zero points packed along the output channels, as the library's compressor writes them (and vLLM reads
    them). transformers 5.25's load path lays the module out with unpacked zero points, so it does not load
    such a folder; the library's decompression is the check here."""
    folder, s = llama
    layers = {L1 + "self_attn.k_proj": INT4_G32_ASYM, L1 + "mlp.down_proj": INT8_CH_ASYM, L0 + "mlp.up_proj": INT4_G32}
    s.set_config(config(layers))
    out = tmp_path / "asym"
    s.export("compressed-tensors", out)
    got, qc, tensors = decompressed(out)
    assert tensors[L1 + "self_attn.k_proj.weight_zero_point"].shape == (32 * 4 // 32, 2)  # 32 rows packed, 2 groups
    assert tensors[L1 + "mlp.down_proj.weight_zero_point"].shape == (64 * 8 // 32, 1)
    assert not {g.weights.symmetric for g in qc.config_groups.values() if L1 + "mlp.down_proj" in g.targets}.pop()
    for layer in layers:
        sim_w = s.sim.quantize_weight(layer, s.specs[layer].weight).tensor.detach().float()
        assert torch.equal(got[layer].float().view(torch.int32), sim_w.contiguous().view(torch.int32)), layer
    zp = s.sim.quantize_weight(L1 + "self_attn.k_proj", s.specs[L1 + "self_attn.k_proj"].weight).qparams.zero_point
    assert (zp != 8).any()  # zero points off the middle: a wrong shift of them would show


def test_nvfp4_layers_decompress_to_the_simulated_weight_in_bfloat16(llama, tmp_path):
    """NVFP4A16: E2M1 codes two to a byte, E4M3 block scales of 16, the tensor scale as its reciprocal
    (weight_global_scale, the float32 next to 1 / tensor scale for which the library's block scale / global
    scale equals quantviz's tensor scale x block scale for the most blocks). The library decompresses NVFP4
    into bfloat16: the simulated weight rounded to it, but for the weights of a block whose scale is one
    float32 rounding off where that tips the bfloat16 rounding (one bfloat16 step)."""
    folder, s = llama
    nv = {"bits": 4, "format": "nvfp4"}
    layers = {L0 + "self_attn.q_proj": nv, L0 + "mlp.down_proj": nv, L1 + "mlp.up_proj": nv, L1 + "self_attn.k_proj": INT4_G32}
    s.set_config(config(layers))
    out = tmp_path / "nv"
    s.export("compressed-tensors", out)
    got, qc, tensors = decompressed(out)
    assert {g.format for g in qc.config_groups.values()} == {"nvfp4-pack-quantized", "pack-quantized"}
    assert tensors[L0 + "mlp.down_proj.weight_packed"].shape == (64, 64) and \
        tensors[L0 + "mlp.down_proj.weight_packed"].dtype == torch.uint8  # 128 inputs, two per byte
    assert tensors[L0 + "mlp.down_proj.weight_scale"].dtype == torch.float8_e4m3fn
    for layer in layers:
        sim_w = s.sim.quantize_weight(layer, s.specs[layer].weight).tensor.detach().float()
        if layer == L1 + "self_attn.k_proj":
            assert torch.equal(got[layer].float(), sim_w)
            continue
        assert got[layer].dtype == torch.bfloat16
        want = sim_w.to(torch.bfloat16)
        off = got[layer] != want
        assert off.float().mean() < 0.01, layer  # nearly all bit for bit
        step = (want.float().abs() * 2.0 ** -7).clamp(min=1e-30)  # one bfloat16 step (8 significant bits)
        assert ((got[layer].float() - want.float()).abs() <= step * 1.001).all(), layer
    # transformers loads it in bfloat16 (the library's NVFP4 weights are bfloat16: a float32 model's forward
    # would mix dtypes) and its layers hold the library's weights, bit for bit; the same model in float32 (every
    # weight of it, float ones too, went through bfloat16) is closer to the simulation than the float model is
    lib, ref, flt, model = logits(out, s, dtype=torch.bfloat16)
    for layer in layers:
        if layer != L1 + "self_attn.k_proj":
            assert torch.equal(model.get_submodule(layer).weight.detach(), got[layer]), layer
    ids = torch.randint(0, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):  # transformers refuses .float() on it
            if t.is_floating_point():
                t.data = t.data.float()
        lib32 = model(input_ids=ids).logits
    assert (lib32 - ref).abs().max() < 0.5 * (flt - ref).abs().max()


def test_w8a8_writes_static_input_scales_that_transformers_applies(llama, tmp_path):
    folder, s = llama
    layers = {L0 + "self_attn.q_proj": INT8_CH, L0 + "mlp.down_proj": INT8_CH, L1 + "self_attn.o_proj": FP8_T,
              L1 + "mlp.gate_proj": INT4_G32}
    acts = {L0 + "self_attn.q_proj": A8, L0 + "mlp.down_proj": A8, L1 + "self_attn.o_proj": AFP8}
    s.set_config(config(layers, acts))
    out = tmp_path / "w8a8"
    s.export("compressed-tensors", out)
    got, qc, tensors = decompressed(out)
    by = {t: g for g in qc.config_groups.values() for t in g.targets}
    assert by[L0 + "mlp.down_proj"].format == "int-quantized"
    assert by[L0 + "mlp.down_proj"].input_activations.strategy == "tensor"
    assert by[L1 + "self_attn.o_proj"].input_activations.type == "float"
    assert by[L1 + "mlp.gate_proj"].input_activations is None
    for layer, spec in layers.items():
        sim_w = s.sim.quantize_weight(layer, s.specs[layer].weight).tensor.detach().float()
        assert torch.equal(got[layer].float(), sim_w), layer
    for layer in acts:
        aq = s.sim.input_qparams(layer, s.specs[layer])
        assert float(tensors[layer + ".input_scale"]) == float(aq.scale.flatten()[0]), layer
    assert tensors[L0 + "mlp.down_proj.weight"].dtype == torch.int8
    # the loaded model quantizes those layers' inputs with the written scales, as the simulation does
    lib, ref, flt, _ = logits(out, s)
    assert (lib - ref).abs().max() <= 1e-5 * ref.abs().max()
    s.set_config(config(layers))  # the same weights without activation quantization compute something else
    s.sim.apply(s.specs)
    assert (lib - logits(out, s)[1]).abs().max() > 100 * (lib - ref).abs().max()


def test_pack_int32_matches_the_librarys_unpacking():
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32

    from quantviz.io.ctensors_export import pack_int32

    g = torch.Generator().manual_seed(1)
    for bits, n in ((4, 64), (8, 40), (4, 37)):
        codes = torch.randint(-(1 << (bits - 1)), 1 << (bits - 1), (3, n), generator=g)
        packed = pack_int32(codes, bits)
        assert packed.dtype == torch.int32 and packed.shape == (3, -(-n * bits // 32))
        assert torch.equal(unpack_from_int32(packed, bits, torch.Size((3, n))).long(), codes)


@pytest.mark.parametrize("layers, acts, says", [
    ({L0 + "self_attn.q_proj": {"bits": 3, "granularity": "per_channel"}}, {}, "int3"),
    ({L0 + "self_attn.q_proj": {"bits": 4, "symmetric": False, "granularity": "per_tensor"}}, {}, "asymmetric"),
    ({L0 + "self_attn.q_proj": {"bits": 4, "format": "mxfp4"}}, {}, "mxfp4"),
    ({L0 + "self_attn.q_proj": INT4_CH}, {L0 + "self_attn.q_proj": A8}, "W8A8"),
    ({"model.embed_tokens": INT8_CH}, {}, "Embedding"),
])
def test_inexpressible_settings_are_refused_in_one_line(llama, tmp_path, layers, acts, says):
    folder, s = llama
    s.set_config(config(layers, acts))
    out = tmp_path / "no"
    with pytest.raises(QuantvizError) as exc:
        s.export("compressed-tensors", out)
    msg = str(exc.value)
    assert "\n" not in msg and says in msg and next(iter(layers)) in msg
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".no.")]  # nothing left


def test_a_model_that_is_not_a_hugging_face_folder_is_refused(demo, tmp_path):
    demo.set_config(config({demo.layers[0].name: INT8_CH}))
    with pytest.raises(QuantvizError, match="Hugging Face model folder"):
        demo.export("compressed-tensors", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_an_existing_folder_is_replaced_only_with_force(llama, tmp_path):
    folder, s = llama
    s.set_config(config({L0 + "self_attn.q_proj": INT4_G32}))
    out = tmp_path / "ct"
    out.mkdir()
    (out / "old.txt").write_text("x")
    with pytest.raises(QuantvizError, match="already exists"):
        s.export("compressed-tensors", out)
    s.export("compressed-tensors", out, force=True)
    assert not (out / "old.txt").exists() and (out / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["ct"]


def test_cli_writes_the_folder_and_refuses_in_one_line(llama, tmp_path, cli):
    folder, _ = llama
    text = folder.parent / "text.txt"
    cfg = tmp_path / "cfg.json"
    cfg.write_text(config({L0 + "mlp.up_proj": INT4_G32}).to_json())
    out = tmp_path / "ct"
    r = cli("export", folder, "--data", text, "--seq-len", 32, "--config", cfg, "--format", "compressed-tensors",
            "--out", out)
    assert r.code == 0, r.err
    got, _, _ = decompressed(out)
    assert list(got) == [L0 + "mlp.up_proj"]
    assert "pack-quantized (int4 group 32): 1 layer(s)" in r.err
    r = cli("export", folder, "--data", text, "--seq-len", 32, "--config", cfg, "--format", "compressed-tensors",
            "--out", out)
    assert r.code != 0 and "already exists" in r.err and len(r.err_lines) == 1
    bad = tmp_path / "bad.json"
    bad.write_text(config({L0 + "mlp.up_proj": {"bits": 3}}).to_json())
    r = cli("export", folder, "--data", text, "--seq-len", 32, "--config", bad, "--format", "compressed-tensors",
            "--out", tmp_path / "b")
    assert r.code != 0 and len(r.err_lines) == 1 and "Traceback" not in r.err and L0 + "mlp.up_proj" in r.err
    assert not (tmp_path / "b").exists()


def test_gptq_codes_are_written_as_computed(llama, tmp_path):
    """A per-layer algorithm that only picks other codes on the same grid (GPTQ) exports like rounding does."""
    folder, s = llama
    layer = L0 + "mlp.gate_proj"
    s.set_config(config({layer: dict(INT4_G32, algorithm="gptq")}))
    out = tmp_path / "gptq"
    s.export("compressed-tensors", out)
    got, _, _ = decompressed(out)
    wq = s.sim.quantize_weight(layer, s.specs[layer].weight)
    assert wq.algorithm_info  # GPTQ ran
    assert torch.equal(got[layer].float(), wq.tensor.detach().float())
    rtn = s.sim.quantize_weight(layer, s.specs[layer].weight.without_algorithm()).tensor
    assert not torch.equal(got[layer].float(), rtn.detach().float())  # not the rounding-to-nearest weight


def test_a_bfloat16_model_keeps_float32_scales(tmp_path):
    """A bfloat16 model's simulated weight is code x scale in float32, rounded to bfloat16: the folder keeps
    the float32 scales, and the library's decompression, rounded to bfloat16, is that weight bit for bit."""
    folder = tiny_llama(tmp_path / "model", hidden=64, intermediate=128, layers=1)
    transformers.AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.bfloat16).save_pretrained(str(folder))
    (tmp_path / "t.txt").write_text(plain_text(200, seed=5))
    s = Session.open(str(folder), data=str(tmp_path / "t.txt"), batch_size=4, seq_len=32)
    layers = {L0 + "self_attn.q_proj": INT4_G32, L0 + "self_attn.v_proj": FP8_CH, L0 + "mlp.up_proj": INT8_CH}
    s.set_config(config(layers))
    out = tmp_path / "ct"
    s.export("compressed-tensors", out)
    got, _, tensors = decompressed(out)
    assert tensors[L0 + "self_attn.q_proj.weight_scale"].dtype == torch.float32
    for layer in layers:
        sim_w = s.sim.quantize_weight(layer, s.specs[layer].weight).tensor.detach()
        assert sim_w.dtype == torch.bfloat16
        assert torch.equal(got[layer].to(torch.bfloat16), sim_w), layer
