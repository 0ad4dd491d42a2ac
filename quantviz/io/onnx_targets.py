"""Rule sets of the ONNX QDQ export: which runtime the Q/DQ graph is written for (numpy-free at import:
the CLI parser reads :data:`TARGETS`).

* ``ort`` (the default): ONNX Runtime's CPU kernels, exactly the simulation
  (:mod:`.onnx_export`): activations in whatever grid the config asks
  (8-bit asymmetric is uint8 with a zero point), signed 8-bit weights stored
  as uint8 with zero point 128 beside uint8 activations.
* ``tensorrt``: TensorRT's explicit quantization. Every Q/DQ is signed with
  zero point 0: int8 activations (per tensor) and int8 weights (per tensor or
  per channel on the output axis), or int4 weights weight-only (per tensor,
  channel or block). Q/DQ sit on the inputs of Conv / Gemm / MatMul (as for
  ``ort``) and on the residual input of an ``Add`` that TensorRT fuses into
  the weighted layer before it (:func:`residual_adds`). A config outside
  these rules is refused in one line (:func:`check`).
* ``qnn`` is not implemented: it is refused with a message naming the
  targets that are.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import QuantvizError

TARGETS = ("ort", "tensorrt", "qnn")
DEFAULT_TARGET = "ort"
WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


class TargetError(QuantvizError):
    pass


def check_target(target: str | None) -> str:
    t = DEFAULT_TARGET if target is None else str(target).lower()
    if t not in TARGETS:
        raise TargetError(f"unknown ONNX target {target!r} (choose from {', '.join(TARGETS)})")
    if t == "qnn":
        raise TargetError("--target qnn is not implemented: use --target tensorrt (signed int8, zero point 0) "
                          "or --target ort (ONNX Runtime's CPU conventions)")
    return t


def check(target: str, sim, specs: dict) -> None:
    """Refuse, in one line naming the first layer, a config the target cannot express."""
    if target != "tensorrt":
        return
    for info in sim.layers:
        spec = specs.get(info.name)
        if spec is None:
            continue
        w, a = spec.weight, spec.activation
        act_on = a.bits is not None and info.has_activation_input
        pre = f"--target tensorrt cannot express {info.name}"
        if w.bits is not None:
            if w.format != "int":
                raise TargetError(f"{pre}: its weights are {w.format} (TensorRT's Q/DQ here: int8 / int4 weights)")
            if not w.symmetric:
                raise TargetError(f"{pre}: asymmetric weights (TensorRT takes zero point 0 only)")
            if w.bits not in (8, 4):
                raise TargetError(f"{pre}: {w.bits}-bit weights (TensorRT takes 8- and 4-bit weights)")
            if w.bits == 8 and w.granularity == "per_group":
                raise TargetError(f"{pre}: per-group 8-bit weights (TensorRT blocks only int4 weights)")
            if w.bits == 4 and act_on:
                raise TargetError(f"{pre}: 4-bit weights with a quantized input (TensorRT runs int4 weight-only; "
                                  "leave its activation float)")
        if act_on:
            if a.format != "int":
                raise TargetError(f"{pre}: {a.format} activations (this target writes int8 activations)")
            if not a.symmetric:
                raise TargetError(f"{pre}: asymmetric activations (TensorRT takes zero point 0; set activation "
                                  "symmetric)")
            if a.bits != 8:
                raise TargetError(f"{pre}: {a.bits}-bit activations (TensorRT takes 8-bit activations)")


# ------------------------------------------------------------ residual adds
@dataclass
class Residual:
    add: object  # the Add node (onnx.NodeProto)
    index: int  # which of its inputs is the residual
    tensor: str  # the residual tensor
    layer: str  # the quantized layer whose output the Add fuses with


def _producers(graph) -> dict:
    return {o: n for n in graph.node for o in n.output}


def _weighted_layer(tensor: str, prod: dict, inits: set, weight_layer: dict) -> str | None:
    """The quantized layer producing ``tensor`` directly or through its bias Add, else None."""
    node = prod.get(tensor)
    if node is not None and node.op_type == "Add" and len(node.input) == 2:
        other = [i for i in node.input if i not in inits]
        if len(other) == 1:  # MatMul + Add(bias): a Linear on a 3-D input
            node = prod.get(other[0])
    if node is None or node.op_type not in WEIGHTED:
        return None
    for i in node.input:
        if i in weight_layer:
            return weight_layer[i]
    return None


def residual_adds(graph, layer_of_weight: dict[str, str], int8_layers: set[str]) -> list[Residual]:
    """Adds of two activations where one comes from an int8 layer (TensorRT fuses the Add into that
    layer): the other input is the residual and gets Q/DQ. When both come from int8 layers
    (a ResNet block with a downsampling branch) the second input is the residual."""
    inits = {i.name for i in graph.initializer}
    consts = {n.output[0] for n in graph.node if n.op_type == "Constant"}
    prod = _producers(graph)
    out = []
    for node in graph.node:
        if node.op_type != "Add" or len(node.input) != 2:
            continue
        if any(i in inits or i in consts for i in node.input):
            continue
        layers = [_weighted_layer(i, prod, inits | consts, layer_of_weight) for i in node.input]
        layers = [l if l in int8_layers else None for l in layers]
        if layers[0] is None and layers[1] is None:
            continue
        idx = 1 if layers[0] is not None else 0
        out.append(Residual(node, idx, node.input[idx], layers[1 - idx]))
    return out


def calibrate_tensors(model_proto, tensors: list[str], data, example, *, batch_size: int = 64) -> dict[str, tuple]:
    """(min, max) of each named tensor of the float model over ``data`` (ONNX Runtime, CPU)."""
    import numpy as np
    import onnx

    from ..core.backends import onnxrt

    if not tensors:
        return {}
    m = onnx.ModelProto()
    m.CopyFrom(model_proto)
    have = {o.name for o in m.graph.output}
    for t in tensors:
        if t not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
    sess = onnxrt.make_session(m.SerializeToString(), optimize=False)
    names = [o.name for o in sess.get_outputs()]
    lo = {t: np.inf for t in tensors}
    hi = {t: -np.inf for t in tensors}
    batches = [x for x, _ in data.batches(batch_size)] if data is not None else [example]
    for x in batches:
        outs = dict(zip(names, sess.run(None, onnxrt.feeds(sess, x))))
        for t in tensors:
            v = np.asarray(outs[t])
            lo[t] = min(lo[t], float(v.min()))
            hi[t] = max(hi[t], float(v.max()))
    return {t: (lo[t], hi[t]) for t in tensors}


__all__ = ["TARGETS", "DEFAULT_TARGET", "TargetError", "check_target", "check", "residual_adds", "Residual",
           "calibrate_tensors"]
