"""ONNX models as a source: ``quantviz inspect model.onnx --data D``.

The ONNX graph becomes an :class:`OnnxModule`, a torch module that runs the
graph's nodes in order (:mod:`.onnx_ops`, eager torch). Every Conv, Gemm and
MatMul whose weight is an initializer becomes a real ``nn.Conv{1,2,3}d`` /
``nn.Linear`` (so it is a quantizable layer with its activation input), named
after its weight initializer (``layer1.0.conv1.weight`` -> ``layer1.0.conv1``)
or, when the exporter renamed the weight (``onnx::Conv_193``: BatchNorm folded;
``onnx::MatMul_376``: a Linear's transposed weight), after the node's scope
(``/layer1/layer1.0/conv1/Conv`` -> ``layer1.0.conv1``). The names then match
the module names of the torch model the file was exported from, and the
ONNX exports of quantviz name the same tensors.

An operator without a torch implementation here stops the load with one line
naming the operator and the node. A QDQ model (already quantized) is read with
its weights dequantized and its Q/DQ parameters as the session's config
(:mod:`.onnx_qdq`).

onnx is an optional dependency (``pip install 'quantviz[onnx]'``); this module
is only imported for ``.onnx`` files.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..errors import Cancelled, SourceError, one_line
from . import onnx_ops
from .base import ModelBundle

WEIGHTED = ("Conv", "Gemm", "MatMul")
_SAFE = re.compile(r"[^0-9A-Za-z_]")


def _onnx():
    try:
        import onnx
    except ImportError:
        raise SourceError("opening .onnx models needs the onnx package: pip install 'quantviz[onnx]'") from None
    return onnx


def _attrs(node) -> dict:
    from onnx import helper, numpy_helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if hasattr(v, "dims") and hasattr(v, "data_type"):  # a TensorProto
            v = torch.from_numpy(np.array(numpy_helper.to_array(v)))
        elif isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, list):
            v = [x.decode() if isinstance(x, bytes) else x for x in v]
        out[a.name] = v
    return out


def _constant(attrs: dict) -> torch.Tensor:
    if "value" in attrs:
        return attrs["value"]
    for k, dt in (("value_float", torch.float32), ("value_floats", torch.float32), ("value_int", torch.int64),
                  ("value_ints", torch.int64)):
        if k in attrs:
            return torch.tensor(attrs[k], dtype=dt)
    raise onnx_ops.UnsupportedOp(f"Constant with {', '.join(attrs) or 'no value'}")


def scope_name(node_name: str) -> str | None:
    """``/layer2/layer2.0/downsample/downsample.0/Conv`` -> ``layer2.0.downsample.0`` (the torch
    exporter's scopes repeat a parent's name as the prefix of its child's)."""
    parts = [p for p in node_name.split("/") if p][:-1]
    if not parts:
        return None
    name, last = "", ""
    for p in parts:
        if last and p.startswith(last + "."):
            name += p[len(last):]
        else:
            name = f"{name}.{p}" if name else p
        last = p
    return name


def _base_name(node, weight: str, index: int) -> tuple[str, bool]:
    """(name, from the weight's name?)"""
    if weight.endswith(".weight") and not weight.startswith("onnx::"):
        return weight[: -len(".weight")], True
    base = scope_name(node.name) if node.name else None
    return (base or f"{node.op_type.lower()}_{index}"), False


def _layer_name(node, weight: str, used: set[str], index: int, others: set[str] = frozenset()) -> str:
    base, from_weight = _base_name(node, weight, index)
    op_tag = _SAFE.sub("_", node.name.rsplit("/", 1)[-1].lower()) if node.name else node.op_type.lower()
    if not from_weight and any(o.startswith(base + ".") for o in others):
        base = f"{base}.{op_tag}"  # MultiheadAttention's in_proj MatMul beside self_attn.out_proj
    parts = [_SAFE.sub("_", p) or "_" for p in base.split(".")]
    base = ".".join(p if not p[0].isdigit() or k > 0 else f"_{p}" for k, p in enumerate(parts))
    name = base
    for k in range(1, 10000):
        inside = next((u for u in used if name.startswith(u + ".")), None)
        if inside is not None:  # a layer cannot hold another: self_attn + self_attn.out_proj
            name = f"{inside}_{name[len(inside) + 1:].replace('.', '_')}"
            continue
        if name in used or any(u.startswith(name + ".") for u in used):
            name = f"{base}_{op_tag}" if k == 1 else f"{base}_{op_tag}_{k}"
            continue
        break
    used.add(name)
    return name


def _set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    *parents, leaf = path.split(".")
    cur = root
    for p in parents:
        if not hasattr(cur, p) or not isinstance(getattr(cur, p), nn.Module):
            cur.add_module(p, nn.Module())
        cur = getattr(cur, p)
    cur.add_module(leaf, module)


def _get_module(root: nn.Module, path: str) -> nn.Module:
    cur = root
    for p in path.split("."):
        cur = getattr(cur, p)
    return cur


class _Constants(nn.Module):
    """The graph's initializers that no layer owns, as buffers (so .to(device) moves them)."""


class OnnxModule(nn.Module):
    """Runs an ONNX graph with torch; weighted layers are real modules (see the module docstring)."""

    def __init__(self):
        super().__init__()
        self.constants = _Constants()
        self._const_names: dict[str, str] = {}  # ONNX name -> buffer name
        self._steps: list[tuple] = []  # (kind, node op / layer path, inputs, outputs, attrs)
        self.input_names: list[str] = []
        self.output_names: list[str] = []
        self.layer_tensors: dict[str, str] = {}  # layer -> the ONNX weight tensor it came from
        self.layer_inputs: dict[str, str] = {}  # layer -> the ONNX tensor it reads

    def _const(self, name: str) -> torch.Tensor:
        return getattr(self.constants, self._const_names[name])

    def forward(self, *args, **kwargs):
        env: dict[str, torch.Tensor | None] = {"": None}
        names = list(self.input_names)
        for n, v in zip(names, args):
            env[n] = v
        for n, v in kwargs.items():
            if n not in names:
                raise TypeError(f"unexpected input {n!r} (the ONNX model takes {', '.join(names)})")
            env[n] = v
        missing = [n for n in names if n not in env]
        if missing:
            raise TypeError(f"missing input(s) {', '.join(missing)} (the ONNX model takes {', '.join(names)})")
        device = next((v.device for v in env.values() if isinstance(v, torch.Tensor)), torch.device("cpu"))
        for kind, op, ins, outs, attrs in self._steps:
            vals = [env[i] if i in env else self._const(i) for i in ins]
            if kind == "layer":
                res = _get_module(self, op)(vals[0])
            elif kind == "pre_layer":  # Gemm transA / asymmetric conv pads before the layer
                res = attrs["fn"](vals, attrs)
            elif op.startswith("ai.onnx.ml."):
                res = onnx_ops.ML_OPS[op[len("ai.onnx.ml."):]](vals, attrs)
            else:
                res = onnx_ops.OPS[op](vals, attrs)
            if isinstance(res, torch.Tensor) and res.device != device and op in ("Shape", "Range", "ConstantOfShape"):
                res = res.to(device)
            if isinstance(res, tuple):
                for o, r in zip(outs, res):
                    env[o] = r
            else:
                env[outs[0]] = res
        outs = tuple(env[o] for o in self.output_names)
        return outs[0] if len(outs) == 1 else outs


def _conv_layer(w: torch.Tensor, b: torch.Tensor | None, attrs: dict) -> tuple[nn.Module, list[int] | None]:
    nd = w.dim() - 2
    if nd not in (1, 2, 3):
        raise onnx_ops.UnsupportedOp(f"Conv with a {w.dim()}-D weight")
    p, sym = onnx_ops._pads(attrs, nd)
    cls = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[nd - 1]
    groups = attrs.get("group", 1)
    m = cls(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=tuple(attrs.get("strides", [1] * nd)),
            padding=tuple(p[:nd]) if sym else 0, dilation=tuple(attrs.get("dilations", [1] * nd)), groups=groups,
            bias=b is not None)
    with torch.no_grad():
        m.weight.copy_(w)
        if b is not None:
            m.bias.copy_(b)
    return m, (None if sym else onnx_ops.torch_pad_list(p, nd))


def _linear(w_out_in: torch.Tensor, b: torch.Tensor | None) -> nn.Linear:
    m = nn.Linear(w_out_in.shape[1], w_out_in.shape[0], bias=b is not None)
    with torch.no_grad():
        m.weight.copy_(w_out_in)
        if b is not None:
            m.bias.copy_(b.reshape(-1))
    return m


def _pad_fn(pads):
    def run(vals, attrs):
        return torch.nn.functional.pad(vals[0], pads)
    return run


def _transpose_a(vals, attrs):
    return vals[0].t()


def convert(model_proto, *, weights: dict[str, torch.Tensor] | None = None, skip: set[str] | None = None,
            cancel: Callable[[], bool] | None = None) -> OnnxModule:
    """The :class:`OnnxModule` of ``model_proto``. ``weights`` gives float values for tensors that the
    graph computes from constants (a QDQ model's dequantized weights); ``skip`` names nodes to drop
    (their output then comes from ``weights`` or is renamed by the caller)."""
    from onnx import numpy_helper

    g = model_proto.graph
    mod = OnnxModule()
    consts: dict[str, torch.Tensor] = {}
    for init in g.initializer:
        consts[init.name] = torch.from_numpy(np.array(numpy_helper.to_array(init)))
    consts.update(weights or {})
    init_names = set(consts)
    mod.input_names = [i.name for i in g.input if i.name not in init_names]
    mod.output_names = [o.name for o in g.output]
    used: set[str] = set()
    aliased = init_names | {n.output[0] for n in g.node if n.op_type in ("Constant", "Identity") and n.output
                            and (n.op_type == "Constant" or n.input[0] in init_names)}
    others = {_base_name(n, n.input[1], k)[0] for k, n in enumerate(g.node)
              if n.op_type in WEIGHTED and len(n.input) > 1 and n.input[1] in aliased}
    skip = skip or set()
    for index, node in enumerate(g.node):
        if cancel is not None and cancel():
            raise Cancelled()
        if id(node) in skip:
            continue
        attrs = _attrs(node)
        if node.domain == "ai.onnx.ml" and node.op_type in onnx_ops.ML_OPS:
            mod._steps.append(("op", f"ai.onnx.ml.{node.op_type}", list(node.input), list(node.output), attrs))
            continue
        if node.domain not in ("", "ai.onnx"):
            raise onnx_ops.UnsupportedOp(f"operator {node.domain}.{node.op_type} (node {node.name or index})")
        ins, outs = list(node.input), list(node.output)
        if node.op_type == "Constant":
            consts[outs[0]] = _constant(attrs)
            init_names.add(outs[0])
            continue
        if node.op_type == "Identity" and ins[0] in init_names:  # the exporter's shared copy of an initializer
            consts[outs[0]] = consts[ins[0]]
            init_names.add(outs[0])
            continue
        w = ins[1] if len(ins) > 1 else None
        layer = None
        if node.op_type in WEIGHTED and w in init_names and ins[0] not in init_names:
            wt = consts[w].float()
            b = consts.get(ins[2]).float() if len(ins) > 2 and ins[2] in init_names else None
            if node.op_type == "Conv" and (len(ins) < 3 or not ins[2] or b is not None):
                layer, pre = _conv_layer(wt, b, attrs)
                if pre is not None:
                    mid = f"{outs[0]}__padded"
                    mod._steps.append(("pre_layer", "Pad", [ins[0]], [mid], {"fn": _pad_fn(pre)}))
                    ins = [mid] + ins[1:]
            elif node.op_type == "Gemm" and wt.dim() == 2 and (len(ins) < 3 or not ins[2] or b is not None):
                wl = wt if attrs.get("transB", 0) else wt.t()
                alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
                if b is not None and b.numel() not in (1, wl.shape[0]):
                    layer = None
                else:
                    bias = None if b is None else (b.expand(wl.shape[0]) * beta)
                    layer = _linear(wl * alpha, bias)
                    if attrs.get("transA", 0):
                        mid = f"{outs[0]}__a_t"
                        mod._steps.append(("pre_layer", "Transpose", [ins[0]], [mid], {"fn": _transpose_a}))
                        ins = [mid] + ins[1:]
            elif node.op_type == "MatMul" and wt.dim() == 2:
                layer = _linear(wt.t(), None)
        if layer is not None:
            name = _layer_name(node, w, used, index, others)
            mod.layer_inputs[name] = node.input[0]
            _set_module(mod, name, layer)
            mod.layer_tensors[name] = w
            mod._steps.append(("layer", name, [ins[0]], outs, {}))
            continue
        if node.op_type not in onnx_ops.OPS:
            raise onnx_ops.UnsupportedOp(f"operator {node.op_type} (node {node.name or index})")
        if node.op_type == "Split":
            attrs["_n_outputs"] = len(outs)
        mod._steps.append(("op", node.op_type, ins, outs, attrs))
    # initializers / constants that the remaining steps read become buffers
    needed = {i for kind, _, ins, _, _ in mod._steps for i in ins if i in init_names}
    needed |= {o for o in mod.output_names if o in init_names}
    for k, name in enumerate(sorted(needed)):
        buf = f"c{k}"
        mod._const_names[name] = buf
        mod.constants.register_buffer(buf, consts[name].clone())
    return mod.eval()


def load_onnx(path: Path, reference: str, *, cancel: Callable[[], bool] | None = None) -> ModelBundle:
    onnx = _onnx()
    try:
        proto = onnx.load(str(path), load_external_data=True)
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file
        raise SourceError(f"{path.name}: not a readable ONNX model ({one_line(exc)})") from exc
    from . import onnx_qdq

    try:
        imported = onnx_qdq.strip_qdq(proto)
        model = convert(proto, weights=imported.weights, skip=imported.skip, cancel=cancel)
    except onnx_ops.UnsupportedOp as exc:
        raise SourceError(f"{path.name}: unsupported ONNX {exc}") from None
    except Cancelled:
        raise
    notes = [f"ONNX model: {len(model.layer_tensors)} Conv / Gemm / MatMul layers with initializer weights "
             "converted to torch layers"]
    meta = {"onnx_layer_tensors": dict(model.layer_tensors), "note": "; ".join(notes)}
    if imported.weights:
        meta["onnx_qdq"] = imported.describe(model.layer_tensors, model.layer_inputs)
    return ModelBundle(model=model, name=path.stem, kind="onnx", reference=reference, meta=meta)


__all__ = ["OnnxModule", "convert", "load_onnx", "scope_name"]
