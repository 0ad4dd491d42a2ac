"""ONNX QDQ export: the simulated quantization as a graph ONNX Runtime runs.

The (BatchNorm-folded) float model of a :class:`QuantSim` is exported with
``torch.onnx.export`` and then rewritten with the ``onnx`` helper API:

* every quantized weight is stored as an integer initializer followed by a
  ``DequantizeLinear`` whose output keeps the float weight's tensor name
  (``<layer>.weight``), so the consuming Conv / Gemm / MatMul is untouched;
  per-channel uses the ``axis`` attribute, per-group the opset-21 blocked
  form (``block_size``) on the weight flattened to (channels, rest), followed
  by a ``Reshape`` (and ``Transpose``) back to the weight's shape;
* the input of every layer with activation quantization goes through
  ``QuantizeLinear`` -> ``DequantizeLinear`` (per-tensor), exactly where the
  simulation's forward pre-hook fake-quantizes it.

Opset 21 makes 4- and 16-bit types native. A b-bit grid without an ONNX type
(2, 3, 5, 6, 7, 9..15 bits) lives in the next larger type: weights only take
values of the b-bit grid, and activations are clipped to the grid's float
range before ``QuantizeLinear`` so its saturation is the b-bit one; so is a
restricted symmetric grid (``[-(2**(b-1) - 1), 2**(b-1) - 1]``, one code short
of its type). ONNX Runtime therefore computes what the simulation computes.
Weights are stored as integer codes, never re-quantized by the consumer, so
how it rounds .5 ties does not matter.

:func:`onnx_names` gives the layer -> ONNX tensor name mapping that the JSON
and AIMET exports record so their entries map onto the exported tensors.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..core.errors import Cancelled, QuantvizError
from ..core.sim.fakequant import QuantSim
from ..core.progress import Progress, null_progress
from ..core.numerics.qparams import QParams, quantize_int
from ..core.numerics.spec import LayerSpec

OPSET = 21
WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Gather")


class ExportError(QuantvizError):
    pass


def require(module: str, extra: str = "onnx"):
    """Import an optional dependency or raise a one-line error naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExportError(f"this export needs the {module.split('.')[0]} package: pip install 'quantviz[{extra}]'") from None


@dataclass
class LayerTensors:
    """Where a quantviz layer lives in the exported ONNX graph."""

    weight: str  # initializer name (the DequantizeLinear output in the QDQ model)
    inputs: list[str]  # activation tensors consumed by the layer's op(s)
    ops: list[str]  # the op types consuming the weight
    transposed: bool = False  # the ONNX weight is the torch weight transposed (MatMul)

    def to_dict(self) -> dict:
        return {"weight": self.weight, "input": self.inputs[0] if self.inputs else None,
                "inputs": list(self.inputs), "ops": list(self.ops), "transposed": self.transposed}


@dataclass
class OnnxExport:
    model: object  # onnx.ModelProto
    tensors: dict[str, LayerTensors]
    input_names: list[str]
    output_names: list[str]
    unmapped: list[str] = field(default_factory=list)  # quantized layers we could not place
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------ float export
def _example_inputs(example) -> tuple[tuple, dict, list[str]]:
    if isinstance(example, torch.Tensor):
        return (example,), {}, ["input"]
    if isinstance(example, dict):
        return (), dict(example), list(example)
    if isinstance(example, (tuple, list)):
        names = ["input"] if len(example) == 1 else [f"input_{i}" for i in range(len(example))]
        return tuple(example), {}, names
    raise ExportError(f"cannot export a model whose input is a {type(example).__name__}")


def export_float(model: torch.nn.Module, example, *, opset: int = OPSET):
    """Export ``model`` to an in-memory ``onnx.ModelProto`` (batch axis dynamic)."""
    onnx = require("onnx")
    args, kwargs, in_names = _example_inputs(example)
    with torch.no_grad():
        out = model(*args, **kwargs)
    n_out = len(out) if isinstance(out, (tuple, list)) else 1
    out_names = ["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
    # a model opened from an ONNX file keeps its own input and output names (a runtime's caller
    # feeds and reads them by name)
    src_in, src_out = list(getattr(model, "input_names", []) or []), list(getattr(model, "output_names", []) or [])
    if len(src_in) == len(in_names) and not kwargs:
        in_names = src_in
    if len(src_out) == n_out:
        out_names = src_out
    axes = {n: {0: "batch"} for n in in_names + out_names}
    _token_axes(axes, kwargs, out, out_names)
    with tempfile.TemporaryDirectory(prefix="quantviz-onnx-") as tmp:
        path = os.path.join(tmp, "model.onnx")
        errors = []
        # The TorchScript exporter is fast and keeps parameter names; the
        # dynamo exporter is the fallback for models it cannot trace.
        for dynamo in (False, True):
            try:
                with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                    warnings.simplefilter("ignore")
                    kw = dict(input_names=in_names, output_names=out_names, opset_version=opset, dynamo=dynamo,
                              dynamic_axes=axes)
                    if not dynamo:
                        kw["do_constant_folding"] = True
                    if kwargs and not dynamo:
                        with _positional(model, list(kwargs)):  # the data's inputs only, see _positional
                            torch.onnx.export(model, tuple(kwargs.values()), path, **kw)
                    elif not dynamo:
                        with _positional(model, None):  # a plain tensor input (data saved as x): the same
                            torch.onnx.export(model, args, path, **kw)
                    else:
                        torch.onnx.export(model, args, path, kwargs=kwargs or None, **kw)
                m = onnx.load(path, load_external_data=True)
                break
            except Exception as exc:  # try the next exporter
                errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        else:
            # both exporters' reasons: the fallback's alone ("No module named 'onnxscript'") hid the first one's
            raise ExportError(f"torch.onnx.export failed: TorchScript exporter: {errors[0]}; dynamo exporter: {errors[-1]}")
    return m, in_names, out_names


@contextlib.contextmanager
def _positional(model: torch.nn.Module, names: list[str] | None):
    """Let ``model`` take exactly the data's keyword inputs, positionally, while it is traced.

    Given keyword inputs, the TorchScript exporter makes every other argument of
    ``forward`` a graph input too, traced as a tensor: transformers' ``logits_to_keep=0``
    then became an input that *indexes* the token axis, and the exported GPT-2 returned
    the logits of one token. An instance ``forward`` that forwards the named inputs keeps
    every other argument at its Python default and the parameters' names unchanged."""
    had = "forward" in vars(model)
    orig = model.forward

    def forward(*args):  # names None: the inputs are positional already (only they become graph inputs)
        return orig(*args) if names is None else orig(**dict(zip(names, args)))

    model.forward = forward
    try:
        yield
    finally:
        if had:
            model.forward = orig
        else:
            del model.forward


def _token_axes(axes: dict, kwargs: dict, out, out_names: list[str]) -> None:
    """Text models (keyword inputs such as ``input_ids`` / ``attention_mask``, 2-D integer
    tensors of one length): the token axis is dynamic too, in the inputs and the output."""
    ints = {k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor) and v.dim() == 2
            and not v.is_floating_point()}
    lengths = {int(v.shape[1]) for v in ints.values()}
    if len(lengths) != 1:
        return
    n = lengths.pop()
    for k in ints:
        axes[k][1] = "tokens"
    if len(out_names) == 1:
        from ..core.model.data import output_tensor

        try:
            t = output_tensor(out)
        except TypeError:
            return
        if t.dim() >= 2 and t.shape[1] == n:
            axes[out_names[0]][1] = "tokens"



def _arr(init) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(init)


def _consumers(graph) -> dict[str, list]:
    cons: dict[str, list] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            cons.setdefault(name, []).append((node, i))
    return cons


def locate_layers(model_proto, sim: QuantSim) -> tuple[dict[str, LayerTensors], list[str]]:
    """Find each layer's weight initializer and input tensors; rename weights to ``<layer>.weight``."""
    graph = model_proto.graph
    inits = {i.name: i for i in graph.initializer}
    by_shape: dict[tuple, list[str]] = {}
    for name, init in inits.items():
        by_shape.setdefault(tuple(init.dims), []).append(name)
    cons = _consumers(graph)
    found: dict[str, LayerTensors] = {}
    missing: list[str] = []
    claimed: set[str] = set()
    for info in sim.layers:
        w = sim.float_weight(info.name).detach().float().cpu().numpy()
        cand, transposed = None, False
        pref = f"{info.name}.weight"
        order = [(pref, False)] if pref in inits else []
        order += [(n, False) for n in by_shape.get(tuple(w.shape), []) if n != pref]
        if w.ndim == 2:
            order += [(n, True) for n in by_shape.get(tuple(w.shape[::-1]), [])]
        for name, tr in order:
            if name in claimed:
                continue
            a = _arr(inits[name])
            if a.dtype != np.float32:
                a = a.astype(np.float32)
            if np.array_equal(a, w.T if tr else w):
                cand, transposed = name, tr
                break
        uses = [(n, i) for n, i in cons.get(cand, [])] if cand else []
        if cand is None or not uses or any(n.op_type not in WEIGHT_OPS for n, _ in uses):
            missing.append(info.name)
            continue
        claimed.add(cand)
        if cand != pref and pref not in inits:
            _rename(graph, cand, pref, cons)
            inits[pref] = inits.pop(cand)
            cons[pref] = cons.pop(cand)
            cand = pref
        inputs = []
        for node, idx in uses:
            if node.op_type == "Gather":
                continue
            act_idx = 0 if idx != 0 else 1  # MatMul(x, W) or MatMul(W, x)
            inputs.append(node.input[act_idx])
        found[info.name] = LayerTensors(cand, inputs, [n.op_type for n, _ in uses], transposed)
    return found, missing


def _rename(graph, old: str, new: str, cons) -> None:
    for init in graph.initializer:
        if init.name == old:
            init.name = new
    for node, idx in cons.get(old, []):
        node.input[idx] = new


def ongrid_float_model(sim: QuantSim, specs: dict[str, LayerSpec], example):
    """The float ONNX graph with every quantized weight replaced by its dequantized (on-grid) value.

    For consumers that quantize float weights themselves with a file of
    encodings (aimet-onnx, Qualcomm's toolchain): ``w / scale`` is an integer
    up to float rounding, so round-half-even, round-half-away or any other
    rule of .5 ties yields the simulation's codes. Returns
    ``(model, {layer: LayerTensors}, [layers not found in the graph])``.
    """
    from onnx import numpy_helper

    m, _, _ = export_float(sim.float_model, example)
    found, missing = locate_layers(m, sim)
    inits = {i.name: i for i in m.graph.initializer}
    for info in sim.layers:
        spec = specs.get(info.name)
        lt = found.get(info.name)
        if spec is None or spec.weight.bits is None or lt is None:
            continue
        wq = sim.quantize_weight(info.name, spec.weight).tensor.detach().float().cpu().numpy()
        init = inits[lt.weight]
        init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(wq.T if lt.transposed else wq), lt.weight))
    return m, found, [n for n in missing if specs.get(n) is not None and specs[n].weight.bits is not None]


def onnx_names(sim: QuantSim, example) -> dict[str, dict]:
    """layer -> {"weight", "input", ...}: the tensor names of the exported graph."""
    m, _, _ = export_float(sim.float_model, example)
    found, _ = locate_layers(m, sim)
    return {k: v.to_dict() for k, v in found.items()}


# -------------------------------------------------------------------- types
def onnx_int_type(bits: int, signed: bool) -> int:
    """The smallest ONNX integer type holding a ``bits``-bit grid."""
    from onnx import TensorProto as T

    if bits <= 4:
        return T.INT4 if signed else T.UINT4
    if bits <= 8:
        return T.INT8 if signed else T.UINT8
    if bits <= 16:
        return T.INT16 if signed else T.UINT16
    raise ExportError(f"{bits}-bit grids have no ONNX integer type")


def native_bits(bits: int) -> bool:
    return bits in (4, 8, 16)


def _tensor(name: str, dtype: int, values: np.ndarray):
    from onnx import TensorProto, helper, numpy_helper

    if dtype == TensorProto.FLOAT:
        return numpy_helper.from_array(np.asarray(values, dtype=np.float32), name)
    vals = np.asarray(values).astype(np.int64)
    np_types = {TensorProto.INT8: np.int8, TensorProto.UINT8: np.uint8, TensorProto.INT16: np.int16,
                TensorProto.UINT16: np.uint16, TensorProto.INT64: np.int64}
    if dtype in np_types:  # raw little-endian bytes: one byte per int8 value on disk
        return numpy_helper.from_array(vals.astype(np_types[dtype]), name)
    try:  # 4-bit types, packed two per byte (ml_dtypes ships with onnx)
        import ml_dtypes

        np4 = ml_dtypes.int4 if dtype == TensorProto.INT4 else ml_dtypes.uint4
        return numpy_helper.from_array(vals.astype(np4), name)
    except (ImportError, AttributeError):
        return helper.make_tensor(name, dtype, list(vals.shape), vals.ravel().tolist())


# ------------------------------------------------------------------ rewrite
def _weight_qdq(graph, lt: LayerTensors, sim: QuantSim, name: str, spec, new_nodes: list, *,
                shift_ok: bool = True) -> None:
    """Replace the float weight initializer of ``name`` by int + DequantizeLinear.

    A signed 8-bit weight feeding a layer whose input is unsigned 8-bit is
    stored as uint8 with zero point 128 (the same values): ONNX Runtime then
    fuses the pair into u8u8 integer kernels, whose accumulation cannot
    saturate the way u8s8 does on x86 CPUs without VNNI.
    """
    from onnx import TensorProto, helper

    info = sim.by_name[name]
    wq = sim.quantize_weight(name, spec.weight)
    qp: QParams = wq.qparams
    w = sim.float_weight(name).detach().float().cpu()
    gs = spec.weight.effective_group_size()
    gran = spec.weight.granularity
    axis = None if gran == "per_tensor" else info.channel_axis
    if wq.codes is not None:  # a per-layer algorithm chose the codes (AdaRound, GPTQ, SmoothQuant / AWQ's W s)
        q = wq.codes.long()
    else:
        q = quantize_int(w, qp, axis=axis, group_size=gs)  # torch layout, int64
    signed = qp.qmin < 0
    scale = qp.scale.detach().float().cpu().numpy()
    zp = qp.zero_point.detach().cpu().numpy().astype(np.int64)
    act = spec.activation
    if shift_ok and signed and qp.bits == 8 and act.bits == 8 and not act.symmetric and info.has_activation_input:
        q, zp, signed = q + 128, zp + 128, False
    dtype = onnx_int_type(qp.bits, signed)
    base = lt.weight
    qname, sname, zname = f"{base}_quantized", f"{base}_scale", f"{base}_zero_point"
    attrs: dict = {}
    out_name = base
    post: list = []
    if gran == "per_tensor":
        qarr, scale, zp = q.numpy(), scale.reshape(()), zp.reshape(())
        if lt.transposed:
            qarr = qarr.T
    elif gran == "per_channel":
        qarr = q.numpy()
        if lt.transposed:
            qarr = qarr.T
        attrs["axis"] = (1 - info.channel_axis) if lt.transposed else info.channel_axis
    else:  # per_group: blocked quantization on (channels, rest)
        moved = q.movedim(info.channel_axis, 0)
        ch = moved.shape[0]
        flat = moved.reshape(ch, -1).numpy()
        nblk = -(-flat.shape[1] // gs)
        scale, zp = scale.reshape(ch, nblk), zp.reshape(ch, nblk)
        attrs.update(axis=1, block_size=int(gs))
        if lt.transposed:  # a MatMul weight (in, out): block along axis 0
            qarr, scale, zp = flat.T, scale.T, zp.T
            attrs["axis"] = 0
        elif flat.shape == tuple(w.shape):
            qarr = flat
        else:
            qarr = flat
            out_name = f"{base}_blocked"
            shape_name = f"{base}_shape"
            graph.initializer.append(_tensor(shape_name, TensorProto.INT64, np.array(moved.shape, dtype=np.int64)))
            cur = f"{base}_moved" if info.channel_axis != 0 else base
            post.append(helper.make_node("Reshape", [out_name, shape_name], [cur], name=f"{base}_reshape"))
            if info.channel_axis != 0:
                perm = list(range(1, w.dim()))
                perm.insert(info.channel_axis, 0)
                post.append(helper.make_node("Transpose", [cur], [base], perm=perm, name=f"{base}_transpose"))
    for i, init in enumerate(list(graph.initializer)):
        if init.name == base:
            graph.initializer.remove(init)
            break
    graph.initializer.extend([_tensor(qname, dtype, qarr), _tensor(sname, TensorProto.FLOAT, scale),
                              _tensor(zname, dtype, zp)])
    new_nodes.append(helper.make_node("DequantizeLinear", [qname, sname, zname], [out_name], name=f"{base}_dequantize", **attrs))
    new_nodes.extend(post)


def _set_bias(graph, lt: LayerTensors, bias: torch.Tensor, cons, new_nodes: list) -> str:
    """Give the layer's op(s) the bias of a per-layer algorithm (bias correction); returns what was done."""
    from onnx import TensorProto, helper, numpy_helper

    inits = {i.name: i for i in graph.initializer}
    vals = bias.detach().float().cpu().numpy()
    notes = []
    for k, (node, idx) in enumerate(cons.get(lt.weight, [])):
        if node.op_type in ("Conv", "Gemm", "ConvTranspose"):
            if len(node.input) > 2 and node.input[2] in inits:
                inits[node.input[2]].CopyFrom(numpy_helper.from_array(vals.reshape(_arr(inits[node.input[2]]).shape), node.input[2]))
                notes.append("replaced")
            else:
                name = f"{lt.weight.rsplit('.', 1)[0]}.bias_corrected{k or ''}"
                graph.initializer.append(_tensor(name, TensorProto.FLOAT, vals))
                if len(node.input) == 2:
                    node.input.append(name)
                else:
                    node.input[2] = name
                notes.append("created")
        elif node.op_type == "MatMul":
            out = node.output[0]
            adds = [(n, i) for n, i in _consumers(graph).get(out, []) if n.op_type == "Add"]
            init_in = [(n, i) for n, i in adds if n.input[1 - i] in inits]
            if len(init_in) == 1:
                n, i = init_in[0]
                arr = _arr(inits[n.input[1 - i]])
                inits[n.input[1 - i]].CopyFrom(numpy_helper.from_array(vals.reshape(arr.shape).astype(np.float32), n.input[1 - i]))
                notes.append("replaced")
            else:
                name = f"{lt.weight.rsplit('.', 1)[0]}.bias_corrected{k or ''}"
                graph.initializer.append(_tensor(name, TensorProto.FLOAT, vals))
                new_out = f"{out}_biased"
                for c, ci in _consumers(graph).get(out, []):
                    c.input[ci] = new_out
                for go in graph.output:
                    if go.name == out:
                        go.name = new_out
                new_nodes.append(helper.make_node("Add", [out, name], [new_out], name=f"{name}_add"))
                notes.append("created")
    return "created" if "created" in notes else "replaced"


def _fold_into_norm(graph, tensor: str, scale: torch.Tensor, layer_nodes: set, cons) -> bool:
    """Divide a LayerNormalization's gamma and beta by ``scale`` when its output ``tensor``
    feeds only ``layer_nodes`` (the layer's own ops); True when folded."""
    from onnx import TensorProto

    if any(o.name == tensor for o in graph.output) or any(id(n) not in layer_nodes for n, _ in cons.get(tensor, [])):
        return False
    prod = next((n for n in graph.node if tensor in n.output), None)
    inits = {i.name: i for i in graph.initializer}
    if prod is None or prod.op_type != "LayerNormalization" or len(prod.input) < 2 or prod.input[1] not in inits:
        return False
    inv = (1.0 / scale.detach().double()).cpu().numpy()
    ks = range(1, min(len(prod.input), 3))
    if any(prod.input[k] not in inits or _arr(inits[prod.input[k]]).shape != inv.shape for k in ks):
        return False
    for k in ks:
        arr = _arr(inits[prod.input[k]]).astype(np.float64)
        name = f"{prod.input[k]}_smoothed_{tensor}"
        graph.initializer.append(_tensor(name, TensorProto.FLOAT, (arr * inv).astype(np.float32)))
        prod.input[k] = name
    return True


def _scale_input(graph, tensor: str, scale: torch.Tensor, tag: str, new_nodes: list) -> str:
    """Insert ``Mul(tensor, 1 / s)`` (SmoothQuant / AWQ's per-input-channel scale); returns its output."""
    from onnx import TensorProto, helper

    name = f"{tensor}_{tag}_inv_scale"
    inv = (1.0 / scale.detach().double()).float().cpu().numpy()
    graph.initializer.append(_tensor(name, TensorProto.FLOAT, inv))
    out = f"{tensor}_{tag}_scaled"
    new_nodes.append(helper.make_node("Mul", [tensor, name], [out], name=f"{tensor}_{tag}_scale"))
    return out


def _act_qdq(graph, tensor: str, qp: QParams, tag: str, new_nodes: list) -> str:
    """Insert [Clip] -> QuantizeLinear -> DequantizeLinear on ``tensor``; return the DQ output."""
    from onnx import TensorProto, helper

    signed = qp.qmin < 0
    dtype = onnx_int_type(qp.bits, signed)
    s = float(qp.scale[0])
    z = int(qp.zero_point[0])
    base = f"{tensor}_{tag}"
    sname, zname = f"{base}_scale", f"{base}_zero_point"
    graph.initializer.extend([_tensor(sname, TensorProto.FLOAT, np.array(s, dtype=np.float32)),
                              _tensor(zname, dtype, np.array(z))])
    src = tensor
    if not native_bits(qp.bits) or qp.qmin != (-(2 ** (qp.bits - 1)) if signed else 0):
        # the b-bit grid (or a restricted one) is narrower than the ONNX type: saturate to it first
        lo = np.float32((qp.qmin - z) * np.float32(s))
        hi = np.float32((qp.qmax - z) * np.float32(s))
        lname, hname = f"{base}_clip_min", f"{base}_clip_max"
        graph.initializer.extend([_tensor(lname, TensorProto.FLOAT, np.array(lo)), _tensor(hname, TensorProto.FLOAT, np.array(hi))])
        src = f"{base}_clipped"
        new_nodes.append(helper.make_node("Clip", [tensor, lname, hname], [src], name=f"{base}_clip"))
    qname, dq = f"{base}_quantized", f"{base}_dequantized"
    new_nodes.append(helper.make_node("QuantizeLinear", [src, sname, zname], [qname], name=f"{base}_quantize"))
    new_nodes.append(helper.make_node("DequantizeLinear", [qname, sname, zname], [dq], name=f"{base}_dequantize"))
    return dq


def _toposort(graph) -> None:
    """Order nodes so every input is produced before use (new nodes were appended)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        rest = []
        for node in pending:
            if all(i in available for i in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ExportError("internal error: the QDQ graph has a cycle or a dangling input")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


from . import onnx_formats  # noqa: E402  (the float / block formats' Q/DQ)
from . import onnx_targets  # noqa: E402  (the runtimes' rule sets)


def build_qdq(sim: QuantSim, specs: dict[str, LayerSpec], example, *, progress: Progress = null_progress,
              cancel: Callable[[], bool] = lambda: False, target: str = "ort", calib=None) -> OnnxExport:
    """The QDQ ``onnx.ModelProto`` of ``sim`` under ``specs`` (validated by onnx.checker).

    ``target`` picks the rule set (:mod:`.onnx_targets`): ``ort`` (ONNX Runtime's CPU
    conventions) or ``tensorrt`` (signed, zero point 0, Q/DQ on residual adds too, whose
    ranges come from ``calib``, else ``example``)."""
    onnx = require("onnx")
    target = onnx_targets.check_target(target)
    onnx_targets.check(target, sim, specs)

    progress(0, 3, "exporting the float graph")
    m, in_names, out_names = export_float(sim.float_model, example)
    if cancel():
        raise Cancelled("export cancelled")
    tensors, missing = locate_layers(m, sim)
    float_copy = None
    if target == "tensorrt":
        float_copy = onnx.ModelProto()
        float_copy.CopyFrom(m)
    graph = m.graph
    new_nodes: list = []
    int8_dq: dict[str, str] = {}  # activation tensor -> the output of its signed int8 zero-point-0 Q/DQ
    int8_layers: set[str] = set()  # layers with int weights and a signed int8 input quantizer
    done_act: dict[tuple, str] = {}
    unmapped = []
    block_acts: list[str] = []
    algo_notes: list[str] = []
    progress(1, 3, "inserting Q/DQ nodes")
    cons = _consumers(graph)
    for info in sim.layers:
        spec = specs.get(info.name)
        if spec is None:
            continue
        quantized = spec.weight.bits is not None or (spec.activation.bits is not None and info.has_activation_input)
        lt = tensors.get(info.name)
        if lt is None:
            if quantized:
                unmapped.append(info.name)
            continue
        wq = sim.quantize_weight(info.name, spec.weight) if spec.weight.bits is not None else None
        if wq is not None and spec.weight.format != "int":  # FP8 / MX / NVFP4
            onnx_formats.weight_dq(graph, lt, sim, info.name, spec, new_nodes, _tensor)
        elif wq is not None:
            _weight_qdq(graph, lt, sim, info.name, spec, new_nodes, shift_ok=target == "ort")
            if wq.bias is not None:
                algo_notes.append(f"{info.name}: bias {_set_bias(graph, lt, wq.bias, cons, new_nodes)} by {spec.weight.algorithm}")
        aq = sim.input_qparams(info.name, spec) if info.has_activation_input else None
        if wq is not None and wq.input_scale is not None:
            # x / s before the input quantizer (and the weight's W s): folded into a LayerNorm that feeds
            # only this layer, else an explicit Mul
            how = set()
            uses = [(n, i) for n, i in cons.get(lt.weight, []) if n.op_type != "Gather"]
            for node, idx in uses:
                act_idx = 0 if idx != 0 else 1
                t = node.input[act_idx]
                if _fold_into_norm(graph, t, wq.input_scale, {id(n) for n, _ in uses}, cons):
                    how.add("folded into the LayerNorm before it")
                else:
                    t = _scale_input(graph, t, wq.input_scale, f"s{len(algo_notes)}", new_nodes)
                    how.add("an explicit Mul")
                node.input[act_idx] = _act_qdq(graph, t, aq, "q", new_nodes) if aq is not None else t
            algo_notes.append(f"{info.name}: {spec.weight.algorithm} input scale as {' and '.join(sorted(how))}")
            continue
        if aq is None:
            continue
        if not isinstance(aq, QParams):
            if aq.fmt.is_block:
                block_acts.append(info.name)
                continue
            key_params = (aq.format, float(aq.scale[0]))
        else:
            key_params = (float(aq.scale[0]), int(aq.zero_point[0]), aq.qmin, aq.qmax)
        weight_out = lt.weight
        for node, idx in cons.get(weight_out, []):
            if node.op_type == "Gather":
                continue
            act_idx = 0 if idx != 0 else 1
            t = node.input[act_idx]
            key = (t,) + key_params
            if key not in done_act:
                tag = f"q{len([k for k in done_act if k[0] == t])}" if any(k[0] == t for k in done_act) else "q"
                done_act[key] = (_act_qdq(graph, t, aq, tag, new_nodes) if isinstance(aq, QParams)
                                 else onnx_formats.act_qdq(graph, t, aq, tag, new_nodes, _tensor))
            node.input[act_idx] = done_act[key]
            if isinstance(aq, QParams) and aq.bits == 8 and aq.qmin == -128 and int(aq.zero_point[0]) == 0:
                int8_dq.setdefault(t, done_act[key])
                if wq is not None:
                    int8_layers.add(info.name)
    if target == "tensorrt":
        algo_notes += _residual_qdq(graph, float_copy, sim, specs, tensors, int8_dq, int8_layers, calib, example,
                                    new_nodes)
    graph.node.extend(new_nodes)
    _toposort(graph)
    opset = max(OPSET, onnx_formats.needs_opset(specs))
    for op in m.opset_import:
        if op.domain in ("", "ai.onnx") and op.version < opset:
            op.version = opset
    m.producer_name = "quantviz"
    progress(2, 3, "checking the graph")
    try:
        onnx.checker.check_model(m)
    except Exception as exc:
        raise ExportError(f"the QDQ model failed onnx.checker: {str(exc).splitlines()[0]}") from exc
    progress(3, 3, "done")
    notes = [f"{n}: not found in the exported ONNX graph, left float" for n in unmapped] + algo_notes
    if block_acts:
        notes.append(f"{len(block_acts)} layer input(s) in MX / NVFP4 formats ({', '.join(block_acts[:3])}"
                     f"{', ...' if len(block_acts) > 3 else ''}) left float: their block scales come from the data at "
                     f"run time, which ONNX Q/DQ cannot express")
    return OnnxExport(m, tensors, in_names, out_names, unmapped, notes)


def _residual_qdq(graph, float_model, sim, specs, tensors, int8_dq: dict, int8_layers: set, calib, example,
                  new_nodes: list) -> list[str]:
    """TensorRT: Q/DQ on the residual input of each Add fused into an int8 layer; returns notes."""
    from ..core.numerics.qparams import compute_qparams

    res = onnx_targets.residual_adds(graph, {lt.weight: n for n, lt in tensors.items()}, int8_layers)
    if not res:
        return []
    todo = sorted({r.tensor for r in res if r.tensor not in int8_dq})
    ranges = onnx_targets.calibrate_tensors(float_model, todo, calib, example)
    shared = calibrated = 0
    for r in res:
        if r.tensor in int8_dq:
            dq = int8_dq[r.tensor]
            shared += 1
        else:
            a = specs[r.layer].activation
            lo, hi = ranges[r.tensor]
            qp = compute_qparams(lo, hi, 8, True, a.grid)
            dq = _act_qdq(graph, r.tensor, qp, "residual_q", new_nodes)
            int8_dq[r.tensor] = dq
            calibrated += 1
        r.add.input[r.index] = dq
    return [f"tensorrt: Q/DQ on the residual input of {len(res)} Add(s) fused into int8 layers ({shared} sharing a "
            f"layer's input quantizer, {calibrated} min-max calibrated on the calibration data); the simulation "
            f"leaves these float"]


def save_model(model_proto, path: str | Path) -> None:
    """Serialize to ``path`` (a single file; models over 2 GB are not supported)."""
    data = model_proto.SerializeToString()
    Path(path).write_bytes(data)


__all__ = ["build_qdq", "export_float", "onnx_names", "ongrid_float_model", "locate_layers", "OnnxExport", "LayerTensors",
           "ExportError", "require", "onnx_int_type", "save_model", "OPSET"]
