"""GGUF files for llama.cpp, and llama-quantize's ``--tensor-type-file``.

``write_gguf`` writes the model with every tensor in the type the config gave
its layer: a layer in a llama.cpp type (``q4_k``, ``q6_k`` ... of
:mod:`quantviz.core.numerics.ggml`) is stored in that type, with the very codes and
FP16 scales of the simulation (the bytes come from the same quantizer, so
llama.cpp dequantizes to the simulated weights bit for bit); what the config
leaves float is stored as F32 (or F16 with ``float_type``). A layer in
another quantviz format (int4, FP8, NVFP4 ...) has no GGUF type: the export
refuses it, naming the layer.

Supported layouts: Llama (``LlamaForCausalLM`` and models with its
``config.model_type`` ``llama`` / ``mistral``) and GPT-2. Tensor names are
llama.cpp's (``blk.0.attn_q.weight``), mapped with the ``gguf`` package's
name map; Llama's query and key rows are permuted as llama.cpp's converter
does (its rope pairs neighbouring channels); GPT-2's Conv1D weights are
stored transposed (output channels as rows). The metadata is what llama.cpp
reads for these architectures, plus the tokenizer from the model folder's
``tokenizer.json`` (a byte-level BPE tokenizer; others are refused).

``tensor_types_text`` writes one ``NAME=TYPE`` line per layer (``f32`` for a
float one), the file ``llama-quantize --tensor-type-file`` takes, so
llama-quantize applies the same per-tensor mix to a float GGUF. ``config_from_gguf`` reads a GGUF's per-tensor types
back as a quantviz config for the same model.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from ..core.errors import QuantvizError
from ..core.numerics.ggml import GGML_TYPES, quantize_rows

ARCHES = {"llama": "llama", "mistral": "llama", "gpt2": "gpt2"}
FLOAT_TYPES = ("f32", "f16")


class GGUFError(QuantvizError):
    pass


def _gguf():
    try:
        import gguf
    except ImportError:
        raise GGUFError("GGUF export needs the gguf package: pip install 'quantviz[gguf]'") from None
    return gguf


def _hf_model(model):
    """(prefix, module) of the transformers model inside ``model`` (the bundle may wrap it)."""
    for name, mod in model.named_modules():
        cfg = getattr(mod, "config", None)
        if cfg is not None and hasattr(cfg, "model_type"):
            return (name + "." if name else ""), mod
    raise GGUFError("GGUF export needs a Hugging Face transformers model (Llama or GPT-2 layout)")


def _arch(cfg) -> str:
    arch = ARCHES.get(getattr(cfg, "model_type", ""))
    if arch is None:
        raise GGUFError(f"GGUF export supports Llama-layout and GPT-2 models, not model_type "
                        f"{getattr(cfg, 'model_type', None)!r}")
    return arch


def _permute_rows(n_rows: int, n_head: int) -> torch.Tensor:
    """llama.cpp's converter's row order for Llama's q/k projections."""
    return torch.arange(n_rows).reshape(n_head, 2, n_rows // n_head // 2).transpose(1, 2).reshape(-1)


def _layer_rows(w: torch.Tensor, axis: int) -> torch.Tensor:
    return w.detach().float().cpu().movedim(axis, 0).reshape(w.shape[axis], -1)


class _Plan:
    """Every tensor of the GGUF: name, numpy data, raw ggml type (None: a float array)."""

    def __init__(self):
        self.tensors: list[tuple[str, np.ndarray, object]] = []
        self.types: dict[str, str] = {}  # gguf name -> type name (Q4_K, F32 ...)
        self.sources: dict[str, str] = {}  # gguf name -> quantviz layer / parameter name


def gguf_name_map(sim):
    """{parameter name in ``sim.float_model``: GGUF tensor name} plus (arch, hf module, prefix)."""
    gguf = _gguf()
    prefix, hf = _hf_model(sim.float_model)
    cfg = hf.config
    arch = _arch(cfg)
    n_blocks = int(getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer"))
    march = gguf.MODEL_ARCH.LLAMA if arch == "llama" else gguf.MODEL_ARCH.GPT2
    nmap = gguf.get_tensor_name_map(march, n_blocks)
    names = {}
    tied = bool(getattr(cfg, "tie_word_embeddings", arch == "gpt2"))
    for pname, _ in hf.named_parameters(remove_duplicate=False):
        if pname.endswith("lm_head.weight") and tied:
            continue
        if ".attn.masked_bias" in pname or pname.endswith(".attn.bias"):
            continue
        g = nmap.get_name(pname, try_suffixes=(".weight", ".bias"))
        if g is None:
            raise GGUFError(f"{pname}: no llama.cpp tensor name for it in the {arch} layout")
        names[prefix + pname] = g
    return names, arch, hf, prefix


def build_plan(sim, specs: dict, float_type: str = "f32") -> tuple[_Plan, str, object]:
    gguf = _gguf()
    if float_type not in FLOAT_TYPES:
        raise GGUFError(f"unknown float type {float_type!r} (allowed: {', '.join(FLOAT_TYPES)})")
    names, arch, hf, prefix = gguf_name_map(sim)
    cfg = hf.config
    layer_of = {l.name + ".weight": l for l in sim.layers}
    bad = []
    for l in sim.layers:
        sp = specs.get(l.name)
        if sp is None or sp.weight.bits is None:
            continue
        if sp.weight.format not in GGML_TYPES:
            bad.append(f"{l.name} ({sp.weight.format if sp.weight.format != 'int' else f'int{sp.weight.bits}'})")
        elif sp.weight.algorithm != "none":
            bad.append(f"{l.name} ({sp.weight.format} with {sp.weight.algorithm})")
    if bad:
        raise GGUFError("GGUF stores llama.cpp types only (q8_0, q4_k ...) or float; these layers have another "
                        f"setting: {', '.join(bad[:5])}" + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""))
    params = dict(sim.float_model.named_parameters(remove_duplicate=False))
    plan = _Plan()
    for pname, gname in names.items():
        p = params[pname].detach().float().cpu()
        layer = layer_of.get(pname)
        sp = specs.get(layer.name) if layer is not None else None
        perm = None
        if arch == "llama" and re.search(r"\.(q_proj|k_proj)\.weight$", pname):
            heads = cfg.num_attention_heads if ".q_proj." in pname else getattr(cfg, "num_key_value_heads", None) \
                or cfg.num_attention_heads
            perm = _permute_rows(p.shape[0], heads)
        if layer is not None:
            rows = _layer_rows(sim.float_weight(layer.name), layer.channel_axis)
        elif arch == "gpt2" and p.dim() == 2 and re.search(r"\.(c_attn|c_proj|c_fc)\.weight$", pname):
            rows = p.t().contiguous()
        else:
            rows = p
        if sp is not None and sp.weight.bits is not None:
            t = GGML_TYPES[sp.weight.format]
            if rows.dim() != 2 or rows.shape[1] % t.block:
                raise GGUFError(f"{layer.name}: rows of {rows.shape[-1]} weights are not a whole number of "
                                f"{t.name} blocks ({t.block}); llama.cpp cannot store this tensor in {t.name}")
            packed = quantize_rows(rows, t).packed
            if perm is not None:
                packed = packed[perm]
            plan.tensors.append((gname, packed.numpy().astype(np.uint8), gguf.GGMLQuantizationType[t.name]))
            plan.types[gname] = t.name
        else:
            if perm is not None:
                rows = rows[perm]
            is_norm_or_bias = rows.dim() == 1
            ftype = "F32" if float_type == "f32" or is_norm_or_bias else "F16"
            arr = rows.numpy().astype(np.float32 if ftype == "F32" else np.float16)
            plan.tensors.append((gname, arr, None))
            plan.types[gname] = ftype
        plan.sources[gname] = layer.name if layer is not None else pname
    return plan, arch, hf


def _tokenizer(writer, folder: Path, cfg) -> None:
    tj = folder / "tokenizer.json"
    if not tj.is_file():
        raise GGUFError(f"{folder}: GGUF export needs the model folder's tokenizer.json (a byte-level BPE tokenizer)")
    doc = json.loads(tj.read_text(encoding="utf-8"))
    model = doc.get("model", {})
    if model.get("type") != "BPE":
        raise GGUFError(f"{tj}: a {model.get('type')} tokenizer; GGUF export writes byte-level BPE tokenizers only")
    vocab = dict(model["vocab"])
    added = {t["content"]: t for t in doc.get("added_tokens", [])}
    for c, t in added.items():
        vocab.setdefault(c, t["id"])
    n = max(int(getattr(cfg, "vocab_size", 0) or 0), max(vocab.values()) + 1)
    tokens = [f"[PAD{i}]" for i in range(n)]
    types = [5] * n  # unused
    for tok, i in vocab.items():
        tokens[i] = tok
        types[i] = 3 if tok in added and added[tok].get("special") else 1  # control / normal
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for key, add in (("bos_token_id", writer.add_bos_token_id), ("eos_token_id", writer.add_eos_token_id)):
        v = getattr(cfg, key, None)
        if isinstance(v, int) and 0 <= v < n:
            add(v)
    writer.add_add_bos_token(False)


def _metadata(writer, arch: str, cfg, name: str, plan: _Plan) -> None:
    gguf = _gguf()
    writer.add_name(name)
    if arch == "llama":
        heads = cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        writer.add_context_length(cfg.max_position_embeddings)
        writer.add_embedding_length(cfg.hidden_size)
        writer.add_block_count(cfg.num_hidden_layers)
        writer.add_feed_forward_length(cfg.intermediate_size)
        writer.add_head_count(heads)
        writer.add_head_count_kv(getattr(cfg, "num_key_value_heads", None) or heads)
        writer.add_rope_dimension_count(head_dim)
        writer.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
        writer.add_rope_freq_base(float(getattr(cfg, "rope_theta", None) or 10000.0))
        writer.add_vocab_size(cfg.vocab_size)
    else:
        writer.add_context_length(cfg.n_positions)
        writer.add_embedding_length(cfg.n_embd)
        writer.add_block_count(cfg.n_layer)
        writer.add_feed_forward_length(getattr(cfg, "n_inner", None) or 4 * cfg.n_embd)
        writer.add_head_count(cfg.n_head)
        writer.add_layer_norm_eps(float(cfg.layer_norm_epsilon))
        writer.add_vocab_size(cfg.vocab_size)
    quant = [t for t in plan.types.values() if t not in ("F32", "F16")]
    ftype = gguf.LlamaFileType.ALL_F32
    if quant:  # the file type names the most common quantized type (llama.cpp reads it as a label)
        top = max(set(quant), key=quant.count)
        ftype = getattr(gguf.LlamaFileType, f"MOSTLY_{top}_M" if top in ("Q4_K", "Q5_K") else f"MOSTLY_{top}",
                        gguf.LlamaFileType.GUESSED)
    elif "F16" in plan.types.values():
        ftype = gguf.LlamaFileType.MOSTLY_F16
    writer.add_file_type(int(ftype))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def write_gguf_file(sim, specs: dict, path: Path, *, name: str, folder: Path, float_type: str = "f32") -> _Plan:
    gguf = _gguf()
    plan, arch, hf = build_plan(sim, specs, float_type)
    w = gguf.GGUFWriter(str(path), arch)
    try:
        _metadata(w, arch, hf.config, name, plan)
        _tokenizer(w, folder, hf.config)
        for gname, arr, raw in plan.tensors:
            if raw is None:
                w.add_tensor(gname, arr)
            else:
                w.add_tensor(gname, arr, raw_dtype=raw)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
    finally:
        w.close()
    return plan


def tensor_types_text(sim, specs: dict) -> str:
    """``llama-quantize --tensor-type-file`` lines: ``PATTERN=TYPE`` for every layer's weight, the pattern
    the anchored tensor name (llama-quantize searches it as a regular expression), the type the layer's
    llama.cpp type or ``f32`` for a float layer (so llama-quantize's own mixture leaves it float: the
    file's types apply whatever base type llama-quantize is given)."""
    names, _, _, _ = gguf_name_map(sim)
    by_param = {l.name + ".weight": l for l in sim.layers}
    bad, lines = [], []
    for pname, gname in names.items():
        layer = by_param.get(pname)
        sp = specs.get(layer.name) if layer is not None else None
        if layer is None:
            continue
        if sp is None or sp.weight.bits is None:
            lines.append(f"^{re.escape(gname)}$=f32")  # an explicit float: llama-quantize's mixture would quantize it
            continue
        if sp.weight.format not in GGML_TYPES:
            bad.append(layer.name)
            continue
        lines.append(f"^{re.escape(gname)}$={sp.weight.format}")
    if bad:
        raise GGUFError(f"llama-quantize takes llama.cpp types only; these layers have another setting: "
                        f"{', '.join(bad[:5])}" + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""))
    return "\n".join(lines) + ("\n" if lines else "")


def config_from_gguf(path: str | Path, sim) -> dict:
    """A quantviz config (version 3 dict) giving every layer of ``sim`` the type its tensor has in the GGUF
    at ``path`` (float types leave the layer float)."""
    gguf = _gguf()
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:  # not a GGUF, truncated ...
        raise GGUFError(f"{path}: not a readable GGUF file ({exc})") from None
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    names, _, _, _ = gguf_name_map(sim)
    layers = {}
    by_param = {l.name + ".weight": l for l in sim.layers}
    missing = []
    for pname, gname in names.items():
        layer = by_param.get(pname)
        if layer is None:
            continue
        tname = types.get(gname)
        if tname is None:
            missing.append(gname)
            continue
        fmt = tname.lower()
        if fmt in GGML_TYPES:
            layers[layer.name] = {"weight": {"bits": GGML_TYPES[fmt].code_bits, "format": fmt}}
        elif tname in ("F32", "F16", "BF16"):
            layers[layer.name] = {"weight": {"bits": None}}
        else:
            raise GGUFError(f"{path}: tensor {gname} is {tname}, a type quantviz does not simulate "
                            f"(it simulates {', '.join(t.name for t in GGML_TYPES.values())})")
    if missing:
        raise GGUFError(f"{path}: no tensor {missing[0]} (is it a GGUF of this model?)")
    return {"format": "quantviz-config", "version": 3, "default": {"weight": {"bits": None}, "activation": {"bits": None}}, "layers": layers}


# ----------------------------------------------------------- llama.cpp presets
LLAMA_PRESETS = ("Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")
LLAMA_PRESET_HELP = {
    "Q4_K_M": "llama.cpp's Q4_K_M mix: Q4_K; the output and, in the layers llama.cpp picks (the first and last "
              "eighth and every third between), attn_v and ffn_down in Q6_K; a fused QKV in Q5_K",
    "Q5_K_M": "llama.cpp's Q5_K_M mix: Q5_K; the output, and attn_v / ffn_down in the layers llama.cpp picks, in Q6_K",
    "Q6_K": "llama.cpp's Q6_K file type: every weight Q6_K",
    "Q8_0": "llama.cpp's Q8_0 file type: every weight Q8_0",
}
_FALLBACK = {"q2_k": "q4_0", "q3_k": "q4_0", "q4_k": "q5_0", "q5_k": "q5_1", "q6_k": "q8_0"}


def _more_bits(i: int, n: int) -> bool:
    """llama.cpp's use_more_bits: the first and last eighth of the layers and every third in between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def llama_preset_layers(sim, name: str) -> dict:
    """{layer: format} of llama.cpp's default mix for file type ``name`` on this model, as
    ``llama-quantize`` chooses it without an importance matrix for a dense model (the tensor's
    role from its llama.cpp name; a row that is not whole blocks gets llama.cpp's fallback type)."""
    key = {p.lower(): p for p in LLAMA_PRESETS}.get(str(name).lower())
    if key is None:
        raise GGUFError(f"unknown llama.cpp preset {name!r} (allowed: {', '.join(LLAMA_PRESETS)})")
    try:
        _arch(_hf_model(sim.float_model)[1].config)
    except GGUFError as exc:
        raise GGUFError(f"preset {key}: llama.cpp's mixes are for Llama-layout and GPT-2 models ({exc})") from None
    names, arch, hf, _ = gguf_name_map(sim)
    cfg = hf.config
    n_layer = int(getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer"))
    tied = "output.weight" not in names.values()
    base = {"Q4_K_M": "q4_k", "Q5_K_M": "q5_k", "Q6_K": "q6_k", "Q8_0": "q8_0"}[key]
    out = {}
    for l in sim.layers:
        g = names.get(l.name + ".weight")
        if g is None:
            continue
        t = base
        m = re.match(r"blk\.(\d+)\.(\w+)\.weight$", g)
        role = m.group(2) if m else g.split(".")[0]
        if role == "output" or (tied and role == "token_embd"):
            t = "q8_0" if base == "q8_0" else "q6_k"
        elif key in ("Q4_K_M", "Q5_K_M") and role in ("attn_v", "ffn_down") and _more_bits(int(m.group(1)), n_layer):
            t = "q6_k"
        elif role == "attn_qkv" and key in ("Q4_K_M", "Q5_K_M"):
            t = "q5_k" if key == "Q4_K_M" else "q6_k"
        per_row = l.weight_numel // max(l.channels, 1)
        if per_row % GGML_TYPES[t].block:
            t = _FALLBACK.get(t, t)
            if per_row % GGML_TYPES[t].block:
                t = None  # llama.cpp stores it F16: float here
        out[l.name] = t
    return out


def llama_preset_config(sim, name: str) -> dict:
    """The preset as a quantviz config dict (every layer named, editable per layer)."""
    layers = {n: ({"weight": {"bits": GGML_TYPES[t].code_bits, "format": t}} if t else {"weight": {"bits": None}})
              for n, t in llama_preset_layers(sim, name).items()}
    return {"format": "quantviz-config", "version": 3, "name": str(name).upper(),
            "default": {"weight": {"bits": None}, "activation": {"bits": None}}, "layers": layers}


__all__ = ["LLAMA_PRESETS", "LLAMA_PRESET_HELP", "llama_preset_layers", "llama_preset_config", "write_gguf_file", "tensor_types_text", "config_from_gguf", "build_plan", "gguf_name_map", "GGUFError",
           "FLOAT_TYPES"]
