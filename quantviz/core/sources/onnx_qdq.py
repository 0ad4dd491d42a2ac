"""A QDQ ONNX model (already quantized) read as a float graph plus its quantization.

:func:`strip_qdq` rewrites the graph in place:

* ``DequantizeLinear`` of an integer initializer (a quantized weight) becomes
  a float initializer with the dequantized values, named as the DQ's output;
* ``QuantizeLinear -> DequantizeLinear`` on an activation becomes an
  ``Identity``, and its scale / zero point / type are kept;

and returns what was removed, so the source can hand it on as the session's
config (:meth:`StrippedQDQ.describe`): per layer, weight bits / symmetry /
granularity / group size from the initializer's type, zero points, ``axis``
and ``block_size``; activation bits / symmetry and the clip range
``[(qmin - zp) s, (qmax - zp) s]`` as a manual range.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

_INT_TYPES = {  # onnx TensorProto type -> (bits, signed)
    2: (8, False), 3: (8, True), 4: (16, False), 5: (16, True), 21: (4, False), 22: (4, True),
}


@dataclass
class WeightQ:
    bits: int
    symmetric: bool
    granularity: str
    group_size: int | None


@dataclass
class ActQ:
    bits: int
    symmetric: bool
    lo: float
    hi: float


@dataclass
class StrippedQDQ:
    weights: dict[str, torch.Tensor] = field(default_factory=dict)  # DQ output -> float weight
    weight_q: dict[str, WeightQ] = field(default_factory=dict)  # DQ output -> its quantization
    act_q: dict[str, ActQ] = field(default_factory=dict)  # activation tensor after Q/DQ -> its quantization
    skip: set = field(default_factory=set)

    def describe(self, layer_tensors: dict[str, str], layer_inputs: dict[str, str] | None = None) -> dict:
        """``{"layers": {layer: {"weight": {...}, "activation": {...}}}}``: config overrides."""
        out: dict[str, dict] = {}
        for layer, w in layer_tensors.items():
            q = self.weight_q.get(w)
            if q is None:
                continue
            wd: dict = {"bits": q.bits, "symmetric": q.symmetric, "granularity": q.granularity}
            if q.group_size:
                wd["group_size"] = q.group_size
            out.setdefault(layer, {})["weight"] = wd
        for layer, t in (layer_inputs or {}).items():
            a = self.act_q.get(t)
            if a is None:
                continue
            out.setdefault(layer, {})["activation"] = {"bits": a.bits, "symmetric": a.symmetric,
                                                       "range": {"method": "manual", "lo": a.lo, "hi": a.hi}}
        return out


def _arr(init) -> np.ndarray:
    from onnx import numpy_helper

    return np.array(numpy_helper.to_array(init))


def strip_qdq(model_proto) -> StrippedQDQ:
    from onnx import helper, numpy_helper

    g = model_proto.graph
    inits = {i.name: i for i in g.initializer}
    consts = {n.output[0]: n for n in g.node if n.op_type == "Constant"}

    def value(name):
        if name in inits:
            return _arr(inits[name])
        if name in consts:
            return numpy_helper.to_array(consts[name].attribute[0].t)
        return None

    res = StrippedQDQ()
    producers = {o: n for n in g.node for o in n.output}
    remove: list = []
    for node in list(g.node):
        if node.op_type != "DequantizeLinear":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        src = node.input[0]
        scale = value(node.input[1])
        zp_name = node.input[2] if len(node.input) > 2 else ""
        if scale is None:
            continue
        if src in inits:  # a quantized weight
            q = _arr(inits[src]).astype(np.float64)
            dtype = inits[src].data_type
            zp = value(zp_name).astype(np.float64) if zp_name else np.zeros_like(scale, dtype=np.float64)
            if dtype not in _INT_TYPES:
                continue  # float8 / float4 weights: left to the runtime (not imported)
            bits, signed = _INT_TYPES[dtype]
            axis = int(attrs.get("axis", 1))
            block = int(attrs.get("block_size", 0))
            s = scale.astype(np.float64)
            if s.size == 1:
                w = (q - zp.reshape(())) * s.reshape(())
                gran, gs = "per_tensor", None
            elif block:
                ax = axis % q.ndim
                s_full = np.repeat(s, block, axis=ax).take(range(q.shape[ax]), axis=ax)
                z_full = np.repeat(zp, block, axis=ax).take(range(q.shape[ax]), axis=ax) if zp.size > 1 else zp
                w = (q - z_full) * s_full
                gran, gs = "per_group", block
            else:
                ax = axis % q.ndim
                shape = [1] * q.ndim
                shape[ax] = -1
                w = (q - (zp.reshape(shape) if zp.size > 1 else zp.reshape(()))) * s.reshape(shape)
                gran, gs = "per_channel", None
            sym = bool(np.all(zp == 0)) or (not signed and bits == 8 and bool(np.all(zp == 128)))
            res.weights[node.output[0]] = torch.from_numpy(w.astype(np.float32))
            res.weight_q[node.output[0]] = WeightQ(bits, sym, gran, gs)
            remove.append(node)
            continue
        qn = producers.get(src)
        if qn is None or qn.op_type != "QuantizeLinear":
            continue
        zp = value(zp_name) if zp_name else None
        zp_init = inits.get(zp_name)
        dtype = zp_init.data_type if zp_init is not None else 2
        if dtype not in _INT_TYPES or scale.size != 1:
            continue
        bits, signed = _INT_TYPES[dtype]
        qmin, qmax = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
        z = float(zp.reshape(())) if zp is not None else 0.0
        s = float(scale.reshape(()))
        res.act_q[node.output[0]] = ActQ(bits, z == 0 and signed, (qmin - z) * s, (qmax - z) * s)
        ident = helper.make_node("Identity", [qn.input[0]], [node.output[0]], name=f"{node.name}_stripped")
        node.CopyFrom(ident)
    for node in remove:
        g.node.remove(node)
    # Q nodes whose outputs nobody reads any more
    read = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    for node in [n for n in g.node if n.op_type == "QuantizeLinear" and n.output[0] not in read]:
        g.node.remove(node)
    return res


__all__ = ["strip_qdq", "StrippedQDQ", "WeightQ", "ActQ"]
