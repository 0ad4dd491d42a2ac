"""Hugging Face folders in the compressed-tensors format (what llm-compressor writes, what vLLM loads).

``write_ctensors_folder`` writes the model folder's config (with its
``quantization_config``), tokenizer and generation files, plus one
``model.safetensors`` holding every tensor of the model: a quantized Linear
layer in the compressed-tensors layout of its scheme, everything else as the
float model has it. The schemes, per layer as the config chose:

============================ ====================== ==========================================
quantviz spec                compressed-tensors     tensors
============================ ====================== ==========================================
int 4 / 8 bits, symmetric,   ``pack-quantized``     ``weight_packed`` (int32, 32 / bits codes
per tensor / channel / group (W4A16, W8A16)         per word), ``weight_scale``, ``weight_shape``
int 8 weight + int 8         ``int-quantized``      ``weight`` (int8), ``weight_scale``,
symmetric activation (W8A8)  (static per-tensor)    ``input_scale``
fp8_e4m3 weight (per tensor  ``float-quantized``    ``weight`` (float8_e4m3fn), ``weight_scale``
/ channel / group), with or                         (+ ``input_scale`` with an fp8_e4m3
without an fp8_e4m3 input                           activation)
nvfp4 weight, float input    ``nvfp4-pack-quantized`` ``weight_packed`` (E2M1 codes, two per
(NVFP4A16)                   (tensor_group 16)      byte), ``weight_scale`` (E4M3 per 16),
                                                    ``weight_global_scale`` (1 / tensor scale)
============================ ====================== ==========================================

Every quantized layer is a target of the config group of its scheme, named
explicitly (``model.layers.0.self_attn.q_proj``); layers the config leaves
float are not targeted and stay float tensors. The codes and scales are the
simulation's own: the writer checks that ``code * scale`` (in float32, the
library's dequantization) gives the simulated weight bit for bit and refuses
the layer otherwise. NVFP4 is the exception the format imposes: the library
computes a block's scale as ``block scale / global scale`` and decompresses to
bfloat16, so its weight is the simulated one rounded to bfloat16, but for
blocks whose scale no float32 global scale reproduces exactly (one float32
rounding off; the writer picks the global scale that matches the most blocks and
notes the rest). Asymmetric int weights of weight-only layers (per channel or per
group) are written with their zero points packed along the output channels. A
setting the format cannot express (other asymmetric grids, bit
widths other than 4 and 8, MX / llama.cpp formats, NVFP4 with quantized inputs, per-layer
algorithms that change the bias or scale the input, convolutions and
embeddings, a group size that does not divide the row, activation settings
other than the two above) is refused in one line naming the layers.

A bfloat16 / float16 model keeps float32 scales: the check above compares
``code * scale`` rounded to the model's dtype, as the simulation rounds its
float32 result (a loader that rounds the scales to the model's dtype first,
as transformers does, is off by a bfloat16 step in places).

The writer knows the format from its published description; it does not
need the ``compressed-tensors`` package (the tests load the folder with it).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.errors import QuantvizError

QUANT_METHOD = "compressed-tensors"
FORMAT_VERSION = "0.20.1"  # the compressed-tensors release whose layout this writer follows
# files copied from the model folder (everything but its weights and config, which are rewritten)
_SKIP = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".index.json")


class CTensorsError(QuantvizError):
    pass


@dataclass(frozen=True)
class Scheme:
    """One config group: its on-disk format and its weight / input-activation arguments."""

    format: str
    weights: tuple  # sorted (key, value) pairs of the weight's QuantizationArgs
    inputs: tuple | None = None

    def to_dict(self, targets: list[str]) -> dict:
        d = {"targets": targets, "weights": dict(self.weights), "input_activations":
             dict(self.inputs) if self.inputs is not None else None, "output_activations": None,
             "format": self.format}
        return d


@dataclass
class Plan:
    tensors: dict = field(default_factory=dict)  # safetensors name -> tensor
    schemes: dict = field(default_factory=dict)  # Scheme -> [target layer names]
    notes: list = field(default_factory=list)


def _args(num_bits: int, type_: str, strategy: str, group_size: int | None = None, dynamic: bool = False,
          symmetric: bool = True) -> tuple:
    d = {"num_bits": num_bits, "type": type_, "symmetric": symmetric, "strategy": strategy,
         "group_size": group_size, "dynamic": dynamic, "observer": None if dynamic else "minmax"}
    return tuple(sorted(d.items()))


def _strategy(w, in_features: int) -> tuple[str, int | None, str | None]:
    """(strategy, group size, why not) of a weight spec's granularity."""
    if w.granularity == "per_tensor":
        return "tensor", None, None
    if w.granularity == "per_channel":
        return "channel", None, None
    gs = w.effective_group_size()
    if in_features % gs:
        return "group", gs, f"group size {gs} does not divide the row of {in_features}"
    return "group", gs, None


def scheme_of(info, spec) -> tuple[Scheme | None, str | None]:
    """The compressed-tensors scheme of a layer's spec, or (None, why it has none)."""
    w, a = spec.weight, spec.activation
    if info.type != "Linear":
        return None, f"a {info.type} layer (compressed-tensors quantizes Linear layers here)"
    if w.format not in ("int", "fp8_e4m3", "nvfp4"):
        return None, f"weight format {w.format}"
    if w.format == "int" and w.bits not in (4, 8):
        return None, f"int{w.bits} weights (vLLM's compressed-tensors kernels take 4 or 8 bits)"
    if not w.symmetric and (w.format != "int" or a.bits is not None or w.granularity == "per_tensor"):
        return None, ("an asymmetric weight grid (compressed-tensors packs zero points of weight-only int layers "
                      "per channel or per group)")
    if w.algorithm in ("smoothquant", "awq", "bias_correction"):
        return None, f"{w.algorithm} (it changes the bias or scales the input)"
    in_features = int(info.weight_shape[1]) if len(info.weight_shape) == 2 else 0
    if w.format == "nvfp4":
        if in_features % 16:
            return None, f"NVFP4 rows of {in_features} weights are not whole blocks of 16"
        if a.bits is not None:
            return None, "an NVFP4 weight with a quantized activation (NVFP4A16 only)"
        return Scheme("nvfp4-pack-quantized", _args(4, "float", "tensor_group", 16)), None
    strategy, gs, why = _strategy(w, in_features)
    if why:
        return None, why
    if w.format == "fp8_e4m3":
        wargs = _args(8, "float", strategy, gs)
        if a.bits is None:
            return Scheme("float-quantized", wargs), None
        if a.format == "fp8_e4m3":
            return Scheme("float-quantized", wargs, _args(8, "float", "tensor")), None
        return None, f"an fp8 weight with a {a.format}{'' if a.format != 'int' else a.bits} activation"
    wargs = _args(w.bits, "int", strategy, gs, symmetric=w.symmetric)
    if a.bits is None:
        return Scheme("pack-quantized", wargs), None
    if w.bits == 8 and a.format == "int" and a.bits == 8 and a.symmetric and a.grid in ("full", "torch"):
        return Scheme("int-quantized", wargs, _args(8, "int", "tensor")), None
    act = f"int{a.bits}" if a.format == "int" else a.format
    return None, (f"int{w.bits} weights with {act} {'symmetric' if a.symmetric else 'asymmetric'} activations "
                  "(W8A8 takes int8 weights with symmetric int8 activations)")


def _scale_matrix(qp, strategy: str, shape, gs: int | None) -> torch.Tensor:
    """The float32 scale in the library's shape: (1,), (out, 1) or (out, in / group)."""
    s = qp.scale.detach().float().cpu().flatten()
    if strategy == "tensor":
        return s.reshape(1)
    if strategy == "channel":
        return s.reshape(shape[0], 1)
    return s.reshape(shape[0], shape[1] // gs)


def _expand(scale: torch.Tensor, shape, strategy: str, gs: int | None) -> torch.Tensor:
    if strategy == "group":
        return scale.repeat_interleave(gs, dim=1)
    return scale.expand(shape) if strategy == "channel" else scale.reshape(1, 1).expand(shape)


def pack_int32(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Signed ``bits``-bit codes (rows, n) packed along the row: code + 2^(bits-1) as an unsigned
    field, element j of a row at bit j * bits of the row's little-endian bit stream, in int32 words
    (ceil(n * bits / 32) per row; a field may straddle two words)."""
    rows, n = codes.shape
    u = (codes.to(torch.int64) + (1 << (bits - 1))).clamp_(0, (1 << bits) - 1)
    words = -(-n * bits // 32)
    out = torch.zeros(rows, words + 1, dtype=torch.int64)
    start = torch.arange(n, dtype=torch.int64) * bits
    w, off = start // 32, start % 32
    shifted = u << off  # up to 39 bits: the part above bit 31 belongs to the next word
    out.scatter_add_(1, w.expand(rows, n), shifted & 0xFFFFFFFF)
    out.scatter_add_(1, (w + 1).expand(rows, n), shifted >> 32)
    out = out[:, :words] & 0xFFFFFFFF  # fields never overlap: the sums are bitwise ors
    return torch.where(out >= 1 << 31, out - (1 << 32), out).to(torch.int32)


E2M1_CODES = {0.0: 0, 0.5: 1, 1.0: 2, 1.5: 3, 2.0: 4, 3.0: 5, 4.0: 6, 6.0: 7}


def global_scale_for(ts: float, block_scales: torch.Tensor) -> tuple[torch.Tensor, int]:
    """compressed-tensors stores NVFP4's tensor scale as its reciprocal g and computes a block's scale as
    ``s_block / g`` in float32; quantviz computes ``ts * s_block``. Of the float32 values next to ``1 / ts``
    the one for which the two agree for the most block scales of the tensor, and for how many they differ
    (by one float32 rounding: no float32 g need give every product exactly)."""
    t = torch.tensor(ts, dtype=torch.float32)
    want = t * block_scales
    bits = (torch.tensor(1.0, dtype=torch.float32) / t).view(torch.int32)
    best = None
    for k in range(-8, 9):
        g = (bits + k).view(torch.float32)
        miss = int((block_scales / g != want).sum())
        if best is None or miss < best[1]:
            best = (g.reshape(1), miss)
    return best


def _nvfp4_tensors(info, wq, sim_w: torch.Tensor, notes: list) -> dict:
    qp = wq.qparams
    rows, n = sim_w.shape
    bs = qp.codes.detach().float().cpu().reshape(rows, n // 16)
    g, miss = global_scale_for(float(qp.tensor_scale), bs)
    ours = (torch.tensor(float(qp.tensor_scale), dtype=torch.float32) * bs).repeat_interleave(16, dim=1)
    from ..core.numerics.formats import E2M1, round_element

    el = round_element(sim_w / ours, E2M1)  # the E2M1 element (the simulation computed element x this scale)
    el = torch.where(torch.signbit(sim_w), -el.abs(), el.abs())  # the sign of a -0.0 too
    mag = el.abs()
    idx = torch.full(mag.shape, -1, dtype=torch.int64)
    for v, c in E2M1_CODES.items():
        idx[mag == v] = c
    if bool((idx < 0).any()) or not _same(el * ours, sim_w, wq.tensor.dtype):
        raise CTensorsError(f"{info.name}: its NVFP4 weight is not E2M1 element x block scale x tensor scale")
    if miss:
        notes.append(f"{info.name}: {miss} of {bs.numel()} NVFP4 block scales are one float32 rounding off the "
                     "simulated ones in compressed-tensors' arithmetic (block scale / global scale)")
    nib = idx | torch.where(torch.signbit(el), 8, 0)  # -0.0 too: the library decodes it as -0.0
    nib = nib.reshape(rows, n // 2, 2)
    packed = (nib[..., 0] | (nib[..., 1] << 4)).to(torch.uint8)
    return {"weight_packed": packed.contiguous(), "weight_scale": bs.to(torch.float8_e4m3fn).contiguous(),
            "weight_global_scale": g.contiguous()}


def _same(deq: torch.Tensor, sim_w: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether float32 ``deq`` is the simulated weight bit for bit once in the model's dtype (the simulation
    computes a bfloat16 / float16 model's weight in float32, then rounds it to the model's dtype)."""
    return torch.equal(deq.to(dtype).float().view(torch.int32), sim_w.contiguous().view(torch.int32))


def _layer_tensors(sim, info, spec, scheme: Scheme, notes: list) -> dict:
    """The layer's compressed tensors (local names), checked to dequantize to the simulated weight."""
    w = dict(scheme.weights)
    wq = sim.quantize_weight(info.name, spec.weight)
    sim_w = wq.tensor.detach().float().cpu()
    if scheme.format == "nvfp4-pack-quantized":
        return _nvfp4_tensors(info, wq, sim_w.contiguous(), notes)
    shape = tuple(sim_w.shape)
    scale = _scale_matrix(wq.qparams, w["strategy"], shape, w["group_size"])
    full = _expand(scale, shape, w["strategy"], w["group_size"])
    out = {}
    if w["type"] == "int":
        half = 1 << (w["num_bits"] - 1)
        zp = None
        if not w["symmetric"]:  # quantviz's unsigned codes and zero points, shifted onto the signed range
            zp = wq.qparams.zero_point.detach().cpu().to(torch.float32).reshape(scale.shape) - half
            zfull = _expand(zp, shape, w["strategy"], w["group_size"])
            codes = torch.round(sim_w / full) + zfull
            deq = (codes.to(torch.int32).float() - zfull) * full  # as the library computes it (no -0.0 codes)
        else:
            codes = torch.round(sim_w / full)
            deq = codes.to(torch.int32).float() * full
        ok = bool(((codes >= -half) & (codes < half)).all()) and (zp is None or bool(((zp >= -half) & (zp < half)).all()))
        if zp is not None:  # packed along the output channels (one column per group)
            out["weight_zero_point"] = pack_int32(zp.to(torch.int32).t(), w["num_bits"]).t().contiguous()
        if scheme.format == "pack-quantized":
            out["weight_packed"] = pack_int32(codes.to(torch.int32), w["num_bits"])
            out["weight_shape"] = torch.tensor(shape, dtype=torch.int64)
        else:
            out["weight"] = codes.to(torch.int8)
    else:
        el = (sim_w / full).to(torch.float8_e4m3fn)
        deq = el.float() * full
        ok = True
        out["weight"] = el
    if not (ok and _same(deq, sim_w, wq.tensor.dtype)):
        raise CTensorsError(f"{info.name}: its simulated weight is not code x scale in float32 "
                            "(compressed-tensors could not reproduce it)")
    out["weight_scale"] = scale.contiguous()
    if scheme.inputs is not None:
        aq = sim.input_qparams(info.name, spec)
        if aq is None:
            raise CTensorsError(f"{info.name}: its activation has no calibrated scale (calibrate first)")
        out["input_scale"] = aq.scale.detach().float().cpu().flatten()[:1].reshape(1).contiguous()
    if wq.bias is not None:
        raise CTensorsError(f"{info.name}: its algorithm changed the bias; compressed-tensors keeps the float one")
    return out


def hf_model(model):
    """(prefix, module) of the transformers model inside ``model`` (the bundle may wrap it)."""
    for name, mod in model.named_modules():
        cfg = getattr(mod, "config", None)
        if cfg is not None and hasattr(cfg, "model_type") and hasattr(mod, "save_pretrained"):
            return (name + "." if name else ""), mod
    raise CTensorsError("compressed-tensors needs a Hugging Face model folder (a transformers model)")


def build_plan(sim, specs: dict) -> tuple[Plan, object]:
    prefix, hf = hf_model(sim.float_model)
    plan = Plan()
    bad, chosen = [], {}
    for info in sim.layers:
        sp = specs.get(info.name)
        if sp is None or sp.weight.bits is None:
            if sp is not None and sp.activation.bits is not None:
                plan.notes.append(f"{info.name}: float weight, so its activation quantization is not written "
                                  "(compressed-tensors quantizes activations of quantized layers only)")
            continue
        scheme, why = scheme_of(info, sp)
        if scheme is None:
            bad.append(f"{info.name} ({why})")
        else:
            chosen[info.name] = scheme
    if bad:
        raise CTensorsError("compressed-tensors cannot express these layers' settings: " + "; ".join(bad[:4])
                            + (f" and {len(bad) - 4} more" if len(bad) > 4 else ""))
    if not chosen:
        raise CTensorsError("compressed-tensors: the config quantizes no layer (nothing to compress)")
    # every tensor the float model saves (tied ones once), float unless its layer is quantized
    seen, state = set(), {}
    for k, v in hf.state_dict().items():
        key = (v.data_ptr(), tuple(v.shape)) if v.numel() else None
        if key is not None and key in seen:
            continue
        seen.add(key)
        state[k] = v
    tied = set(hf.state_dict()) - set(state)
    for name, scheme in chosen.items():
        info = sim.by_name[name]
        local = name[len(prefix):] if name.startswith(prefix) else name
        if local + ".weight" in tied or local + ".weight" not in state:
            raise CTensorsError(f"{name}: its weight is tied to another tensor (or not saved); quantize it "
                                "and its twin alike or leave it float")
        del state[local + ".weight"]
        for k, t in _layer_tensors(sim, info, specs[name], scheme, plan.notes).items():
            plan.tensors[f"{local}.{k}"] = t
        plan.schemes.setdefault(scheme, []).append(local)
    for k, v in state.items():
        plan.tensors[k] = v.detach().cpu().contiguous()
    return plan, hf


def quantization_config(plan: Plan) -> dict:
    formats = {s.format for s in plan.schemes}
    groups = {f"group_{i}": s.to_dict(sorted(t)) for i, (s, t) in enumerate(plan.schemes.items())}
    return {"quant_method": QUANT_METHOD, "format": formats.pop() if len(formats) == 1 else "mixed-precision",
            "quantization_status": "compressed", "config_groups": groups, "ignore": [],
            "kv_cache_scheme": None, "global_compression_ratio": None, "sparsity_config": {},
            "transform_config": {}, "version": FORMAT_VERSION}


def write_ctensors_folder(sim, specs: dict, out: Path, *, folder: Path) -> Plan:
    """Write the compressed-tensors folder into ``out`` (an empty folder)."""
    from safetensors.torch import save_file

    plan, hf = build_plan(sim, specs)
    cfg = hf.config.to_dict()
    cfg["quantization_config"] = quantization_config(plan)
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.name != "config.json" and not p.name.endswith(_SKIP):
            shutil.copy2(p, out / p.name)
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    save_file({k: v.contiguous() for k, v in plan.tensors.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    return plan


__all__ = ["write_ctensors_folder", "build_plan", "scheme_of", "pack_int32", "quantization_config", "CTensorsError",
           "Scheme"]
