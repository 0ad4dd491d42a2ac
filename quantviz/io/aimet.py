"""AIMET encodings: export (format 1.0.0) and import (0.6.1 and 1.0.0).

Names map onto the tensors of quantviz's ONNX export: a weight is
``<layer>.weight`` (the DequantizeLinear output / float initializer name), an
activation is the name of the tensor the layer consumes.

AIMET's integer convention is unsigned, ``x = (q + offset) * scale`` with
``q`` in ``[0, 2**bw - 1]``; a quantviz grid ``[qmin, qmax]`` with zero point
``z`` therefore has ``offset = qmin - z`` (``-2**(bw-1)`` when symmetric).
The layout has no field for quantviz's symmetric grid rule: ``full`` and
``torch`` grids are the same integer grid (only the scale rule differs, and
the scale is written); a ``restricted`` grid ``[-(2**(bw-1) - 1), ...]`` is
written as the symmetric grid it is a subset of (offset ``-2**(bw-1)``), and a
note says so (weights written on the grid never use the lowest code; a
consumer quantizing activations may).

Which loader reads this file: the 1.0.0 layout is the one aimet-onnx and
Qualcomm's toolchain read, with the tensor names of an ONNX graph;
aimet-torch's ``load_encodings`` reads its own per-module layout, which is
not written. Such consumers quantize the float weights of the model with
these encodings, so the export also writes that model with every quantized
weight replaced by its dequantized, on-grid value (``<stem>_model.onnx``):
``w / scale`` is then an integer up to float rounding, and any rounding of
.5 ties gives the simulation's codes.

Import turns encodings back into a :class:`QuantConfig`: per layer the bit
width, symmetry and granularity come from the encoding; the range method is
the first of (the session's current method, min-max, MSE, percentile) whose
qparams reproduce the encoding, else a manual range (per-tensor) that does;
for a symmetric encoding the grid rules are tried too (the current one first).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import QuantvizError
from ..core.numerics.qparams import GRIDS, QParams
from ..core.numerics.spec import ActSpec, RangeSpec, WeightSpec
from .config import QuantConfig

AIMET_VERSION = "1.0.0"
ENC_TYPES = {"per_tensor": "PER_TENSOR", "per_channel": "PER_CHANNEL", "per_group": "PER_BLOCK"}


class AimetError(QuantvizError, ValueError):
    pass


def _type_qmin(qp: QParams) -> int:
    """The lowest code of the integer type the grid lives in (a restricted grid's is one lower)."""
    return -(2 ** (qp.bits - 1)) if qp.symmetric else qp.qmin


def _entry(name: str, qp: QParams, granularity: str, group_size: int | None) -> dict:
    scale = [float(v) for v in qp.scale.flatten()]
    offset = [int(_type_qmin(qp) - int(z)) for z in qp.zero_point.flatten()]
    d = {"name": name, "enc_type": ENC_TYPES[granularity], "dtype": "INT", "bw": int(qp.bits),
         "is_sym": bool(qp.symmetric), "scale": scale, "offset": offset}
    if granularity == "per_group":
        d["block_size"] = int(group_size)
    return d


def _check_expressible(name: str, spec) -> None:
    """AIMET's encodings describe integer grids (scale, offset, bitwidth): a float / block format is refused."""
    for kind, t in (("weight", spec.weight), ("activation", spec.activation)):
        if t.bits is not None and t.format != "int":
            from ..core.numerics.formats import FORMATS

            f = FORMATS[t.format]
            what = (f"per-block {f.scale.upper()} scales of {f.block} {f.element.name.upper()} elements" if f.is_block
                    else f"{f.element.name.upper()} float elements")
            raise AimetError(f"layers.{name}.{kind}.format: AIMET encodings cannot express {f.label} ({what}); "
                             f"export quantviz JSON or ONNX instead")


def encodings(sim, specs: dict, tensors: dict[str, dict], notes: list[str] | None = None) -> dict:
    """AIMET 1.0.0 encodings of ``specs`` on the simulation ``sim``.

    ``tensors`` is the layer -> ONNX tensor mapping of ``onnx_export.onnx_names``.
    """
    notes = notes if notes is not None else []
    params, acts, seen_act, restricted = [], [], {}, []
    for info in sim.layers:
        spec = specs[info.name]
        _check_expressible(info.name, spec)
        names = tensors.get(info.name, {})
        wname = names.get("weight") or f"{info.name}.weight"
        wq = sim.quantize_weight(info.name, spec.weight)
        if wq is not None:
            params.append(_entry(wname, wq.qparams, spec.weight.granularity, spec.weight.effective_group_size()))
            if wq.bias is not None or wq.input_scale is not None:
                notes.append(f"{info.name}: {spec.weight.algorithm} changed the "
                             f"{'bias' if wq.bias is not None else 'input scale'}, which encodings cannot carry; "
                             "the ONNX / quantviz JSON exports hold it")
            if wq.qparams.symmetric and wq.qparams.grid == "restricted":
                restricted.append(wname)
        if not info.has_activation_input:
            continue
        aq = sim.activation_qparams(info.name, spec.activation)
        if aq is None:
            continue
        for t in names.get("inputs") or [names.get("input") or f"{info.name}.input"]:
            e = _entry(t, aq, "per_tensor", None)
            if t in seen_act:
                if seen_act[t] != e:
                    notes.append(f"{t}: feeds several layers with different activation settings; "
                                 f"the encoding of the first ({seen_act[t]['_layer']}) is kept")
                continue
            acts.append(e)
            seen_act[t] = dict(e, _layer=info.name)
            if aq.symmetric and aq.grid == "restricted":
                restricted.append(t)
    for t, e in seen_act.items():
        e.pop("_layer", None)
    if restricted:
        notes.append(f"{len(restricted)} tensor(s) use the restricted grid (e.g. {restricted[0]}): AIMET's layout "
                     "cannot say so; written as symmetric with offset -2^(b-1) (weights on the grid never use "
                     "that code; a consumer quantizing activations may)")
    wbits = sorted({p["bw"] for p in params})
    abits = sorted({a["bw"] for a in acts})
    return {
        "version": AIMET_VERSION,
        "activation_encodings": acts,
        "param_encodings": params,
        "excluded_layers": [],
        "quantizer_args": {
            "activation_bitwidth": abits[0] if len(abits) == 1 else (abits or None),
            "param_bitwidth": wbits[0] if len(wbits) == 1 else (wbits or None),
            "dtype": "int",
            "per_channel_quantization": any(p["enc_type"] != "PER_TENSOR" for p in params),
            "quant_scheme": "post_training_tf",
        },
    }


# ------------------------------------------------------------------ import
def _truthy(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() == "true"
    return bool(v)


def _normalise(obj: Any, where: str) -> tuple[dict, dict]:
    """(params, activations): name -> {bw, is_sym, scale, offset, enc_type, block_size, dtype}."""
    if not isinstance(obj, dict):
        raise AimetError(f"{where}: not an AIMET encodings object")
    version = str(obj.get("version", "0.6.1"))
    out = []
    for key in ("param_encodings", "activation_encodings"):
        raw = obj.get(key, [] if version.startswith("1") else {})
        table: dict = {}
        if version.startswith("1"):
            if not isinstance(raw, list):
                raise AimetError(f"{where}.{key}: version {version} expects a list")
            for i, e in enumerate(raw):
                if not isinstance(e, dict) or "name" not in e:
                    raise AimetError(f"{where}.{key}[{i}]: missing \"name\"")
                dtype = str(e.get("dtype", "INT")).upper()
                if dtype == "INT" and ("scale" not in e or "offset" not in e or "bw" not in e):
                    raise AimetError(f"{where}.{key}[{i}] ({e['name']}): needs bw, scale and offset")
                table[e["name"]] = {"bw": int(e.get("bw", 16)), "is_sym": _truthy(e.get("is_sym", False)),
                                    "scale": np.asarray(e.get("scale", []), dtype=np.float64).ravel(),
                                    "offset": np.asarray(e.get("offset", []), dtype=np.float64).ravel(),
                                    "enc_type": str(e.get("enc_type", "PER_TENSOR")).upper(),
                                    "block_size": e.get("block_size"), "dtype": dtype}
        elif version.startswith("0.6"):
            if not isinstance(raw, dict):
                raise AimetError(f"{where}.{key}: version {version} expects an object keyed by tensor name")
            for name, lst in raw.items():
                if isinstance(lst, dict):  # {"0": [...]} / {"input": {...}} forms: take the first
                    lst = next(iter(lst.values()), [])
                    if isinstance(lst, dict):
                        lst = next(iter(lst.values()), [])
                lst = lst if isinstance(lst, list) else [lst]
                if not lst or not all(isinstance(e, dict) for e in lst):
                    raise AimetError(f"{where}.{key}.{name}: expected a list of encodings")
                dtype = str(lst[0].get("dtype", "int")).upper()
                try:
                    table[name] = {"bw": int(lst[0].get("bitwidth", 8)), "is_sym": _truthy(lst[0].get("is_symmetric", False)),
                                   "scale": np.array([float(e["scale"]) for e in lst]) if dtype == "INT" else np.zeros(0),
                                   "offset": np.array([float(e["offset"]) for e in lst]) if dtype == "INT" else np.zeros(0),
                                   "enc_type": "PER_TENSOR" if len(lst) == 1 else "PER_CHANNEL",
                                   "block_size": None, "dtype": dtype}
                except (KeyError, TypeError, ValueError) as exc:
                    raise AimetError(f"{where}.{key}.{name}: bad encoding ({type(exc).__name__}: {exc})") from None
        else:
            raise AimetError(f"{where}.version: unsupported AIMET encodings version {version!r} (expected 0.6.1 or 1.0.0)")
        out.append(table)
    return out[0], out[1]


def _matches(qp: QParams | None, enc: dict) -> bool:
    if qp is None or qp.bits != enc["bw"] or qp.scale.numel() != enc["scale"].size:
        return False
    scale = qp.scale.double().numpy()
    offset = (_type_qmin(qp) - qp.zero_point.double()).numpy()
    return bool(np.allclose(scale, enc["scale"], rtol=1e-6, atol=0) and np.array_equal(offset, np.round(enc["offset"])))


def _candidates(current: RangeSpec) -> list[RangeSpec]:
    out = [current]
    for r in (RangeSpec("minmax"), RangeSpec("mse"), RangeSpec("percentile")):
        if r not in out:
            out.append(r)
    return out


def _grids(enc: dict, current: str) -> list[str]:
    """Symmetric grid rules to try (the file does not say which one made the scale)."""
    if not enc["is_sym"]:
        return [current]
    return [current] + [g for g in GRIDS if g != current]


def _manual_range(enc: dict) -> RangeSpec:
    """A per-tensor range whose qparams are the encoding's (symmetric: with torch's grid rule)."""
    s, o, bw = float(enc["scale"][0]), float(enc["offset"][0]), enc["bw"]
    if enc["is_sym"]:
        half = s * (2**bw - 1) / 2
        return RangeSpec("manual", lo=-half, hi=half)
    return RangeSpec("manual", lo=o * s, hi=(o + 2**bw - 1) * s)


def _granularity(info, enc: dict) -> tuple[str, int | None]:
    n = enc["scale"].size
    if enc["enc_type"] == "PER_TENSOR" or n == 1:
        return "per_tensor", None
    if enc["enc_type"] == "PER_BLOCK" and enc.get("block_size"):
        return "per_group", int(enc["block_size"])
    ch = info.channels
    if n == ch:
        return "per_channel", None
    per_ch = info.weight_numel // max(ch, 1)
    if n % ch == 0:
        blocks = n // ch
        gs = -(-per_ch // blocks)
        return "per_group", gs
    raise AimetError(f"{info.name}: {n} scales fit neither per-tensor, per-channel ({ch}) nor per-group")


def load_encodings(source: str | Path | dict) -> tuple[dict, str]:
    if isinstance(source, dict):
        return source, "encodings"
    p = Path(source)
    try:
        return json.loads(p.read_text(encoding="utf-8")), p.name
    except FileNotFoundError:
        raise AimetError(f"{p}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AimetError(f"{p}: not a JSON encodings file ({type(exc).__name__})") from None


def import_aimet(source: str | Path | dict, sim, config: QuantConfig, *, example=None,
                 tensors: dict[str, dict] | None = None, notes: list[str] | None = None) -> QuantConfig:
    """A :class:`QuantConfig` reproducing AIMET encodings on the model of ``sim``.

    ``config`` is the current config (its range methods are tried first, its
    options are kept). ``tensors`` (layer -> ONNX names) defaults to the
    mapping of quantviz's own ONNX export traced on ``example``; names of the
    form ``<layer>.weight`` always match. Layers without an encoding stay
    float. Problems that do not stop the import (an unknown tensor name,
    scales no range method reproduces) are appended to ``notes``.
    """
    notes = notes if notes is not None else []
    obj, where = load_encodings(source)
    params, acts = _normalise(obj, where)
    if tensors is None:
        tensors = _onnx_tensors(sim, example, notes)
    wname_to_layer, input_to_layers = _name_maps(sim, tensors)
    cur = config.resolve_all(sim.layers)
    layer_w, layer_a = {}, {}
    for name, enc in params.items():
        layer = wname_to_layer.get(name)
        if layer is None:
            notes.append(f"{where}: param {name}: no layer of this model has that weight; ignored")
        elif enc["dtype"] == "INT":
            layer_w[layer] = _weight_spec(sim, layer, enc, cur[layer].weight, notes)
    for name, enc in acts.items():
        layers = input_to_layers.get(name) or ([name] if name in sim.by_name else [])
        if not layers:
            notes.append(f"{where}: activation {name}: not the input of any layer of this model; ignored")
        elif enc["dtype"] == "INT":
            for layer in layers:
                if sim.by_name[layer].has_activation_input:
                    layer_a[layer] = _act_spec(sim, layer, enc, cur[layer].activation)
    cfg = QuantConfig(default={"weight": {"bits": None}, "activation": {"bits": None}}, name="AIMET import")
    for info in sim.layers:
        entry = {}
        if info.name in layer_w:
            entry["weight"] = layer_w[info.name].to_dict()
        if info.name in layer_a:
            entry["activation"] = layer_a[info.name].to_dict()
        if entry:
            cfg.layers[info.name] = entry
    cfg.options = dict(config.options)
    return QuantConfig.from_dict(cfg.to_dict())


def _onnx_tensors(sim, example, notes: list[str]) -> dict:
    if example is None:
        notes.append("ONNX names unavailable (no example input); matching <layer>.weight names only")
        return {}
    try:
        from .onnx_export import onnx_names

        return onnx_names(sim, example)
    except QuantvizError as exc:
        notes.append(f"ONNX names unavailable ({exc}); matching <layer>.weight names only")
        return {}


def _name_maps(sim, tensors: dict) -> tuple[dict, dict]:
    """(weight tensor name -> layer, input tensor name -> layers)."""
    wname_to_layer, input_to_layers = {}, {}
    for info in sim.layers:
        wname_to_layer[f"{info.name}.weight"] = info.name
        t = tensors.get(info.name, {})
        if t.get("weight"):
            wname_to_layer[t["weight"]] = info.name
        for i in t.get("inputs") or ([t["input"]] if t.get("input") else []):
            input_to_layers.setdefault(i, []).append(info.name)
    return wname_to_layer, input_to_layers


def _weight_spec(sim, layer: str, enc: dict, current: WeightSpec, notes: list[str]) -> WeightSpec:
    """The weight setting whose qparams reproduce ``enc`` (a range method and grid rule if one does)."""
    gran, gs = _granularity(sim.by_name[layer], enc)
    for grid in _grids(enc, current.grid):
        for r in _candidates(current.range):
            if r.method == "manual" and gran != "per_tensor":
                continue
            cand = WeightSpec(enc["bw"], gran, gs, enc["is_sym"], r, grid)
            try:
                wq = sim.quantize_weight(layer, cand)
            except QuantvizError:
                continue
            if _matches(wq.qparams, enc):
                return cand
    if gran == "per_tensor":
        return WeightSpec(enc["bw"], gran, gs, enc["is_sym"], _manual_range(enc), "torch")
    notes.append(f"{layer}: the imported {gran.replace('_', '-')} scales match no range method; using min-max")
    return WeightSpec(enc["bw"], gran, gs, enc["is_sym"], RangeSpec("minmax"))


def _act_spec(sim, layer: str, enc: dict, current: ActSpec) -> ActSpec:
    """The activation setting whose qparams reproduce ``enc`` (a range method and grid rule if one does)."""
    for grid in _grids(enc, current.grid):
        for r in _candidates(current.range):
            cand = ActSpec(bits=enc["bw"], symmetric=enc["is_sym"], range=r, grid=grid)
            try:
                qp = sim.activation_qparams(layer, cand)
            except QuantvizError:
                continue
            if _matches(qp, enc):
                return cand
    return ActSpec(bits=enc["bw"], symmetric=enc["is_sym"], range=_manual_range(enc), grid="torch")


__all__ = ["encodings", "import_aimet", "load_encodings", "AimetError", "AIMET_VERSION"]
