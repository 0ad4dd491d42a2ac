"""ONNX Q/DQ for the float / block formats of :mod:`quantviz.core.numerics.formats`.

* FP8 weights: a ``FLOAT8E4M3FN`` / ``FLOAT8E5M2`` initializer and a
  DequantizeLinear with the FP32 scale (per tensor, or per channel with
  ``axis``); FP8 activations: QuantizeLinear (saturating) + DequantizeLinear
  with the calibrated scale and a zero point of the FP8 type. ONNX Runtime's
  CPU provider runs these, equal to the simulation with graph optimizations
  off (its optimizer changes FP8 activation Q/DQ results: :func:`ort_optimize_ok`).
* Block formats (weights): the elements in their ONNX type and a blocked
  DequantizeLinear (``axis`` = the input dimension, ``block_size`` 32 or 16;
  a partial last block has its own scale, the ONNX rule ``ceil(K / B)``
  scales per row). MXFP4 / NVFP4 elements are ``FLOAT4E2M1`` (opset 23);
  MXFP8 ``FLOAT8E4M3FN`` / ``FLOAT8E5M2``; MXFP6 has no ONNX type, so its
  E2M3 / E3M2 values are stored, exactly, as ``FLOAT8E4M3FN``; MXINT8 as
  ``INT8`` with the scale times 2^-6. E8M0 scales are stored as the FP32
  powers of two they are; NVFP4's E4M3 block scales are stored as
  ``FLOAT8E4M3FN`` and dequantized by the FP32 tensor scale first (two
  chained DequantizeLinear nodes), so the file holds the 4.5-bit format.
  ONNX Runtime has no CPU kernel for ``FLOAT4E2M1``: check such files with
  ``onnx.reference``.
* Block-format activations need per-block scales computed from the data at
  run time, which a Q/DQ pair cannot express: they are left float in the
  ONNX model, and the export says so.
"""
from __future__ import annotations

import numpy as np
import torch

from ..core.numerics.formats import FORMATS

OPSET_FP4 = 23


def _onnx_type(fmt_name: str) -> int:
    from onnx import TensorProto

    f = FORMATS[fmt_name]
    el = f.element.name
    if el == "e2m1":
        return TensorProto.FLOAT4E2M1
    if el == "e5m2":
        return TensorProto.FLOAT8E5M2
    if el == "int8":
        return TensorProto.INT8
    return TensorProto.FLOAT8E4M3FN  # e4m3, and the FP6 elements (a subset of E4M3's values)


def typed_tensor(name: str, dtype: int, values: np.ndarray):
    """An initializer of an ONNX float8 / float4 / int8 type from exactly representable float values."""
    from onnx import TensorProto, helper, numpy_helper

    v = np.asarray(values, dtype=np.float32)
    if dtype == TensorProto.INT8:
        return numpy_helper.from_array(np.rint(v).astype(np.int8), name)
    import ml_dtypes

    np_t = {TensorProto.FLOAT8E4M3FN: ml_dtypes.float8_e4m3fn, TensorProto.FLOAT8E5M2: ml_dtypes.float8_e5m2,
            TensorProto.FLOAT4E2M1: ml_dtypes.float4_e2m1fn}[dtype]
    try:
        return numpy_helper.from_array(v.astype(np_t), name)
    except Exception:  # older onnx: let make_tensor convert
        return helper.make_tensor(name, dtype, list(v.shape), v.ravel().tolist())


def needs_opset(specs: dict) -> int:
    """The opset a model with these specs needs (23 for FLOAT4E2M1 / blocked FP8, else 21)."""
    return OPSET_FP4 if any(s.weight.bits is not None and FORMATS.get(s.weight.format) is not None
                            and FORMATS[s.weight.format].is_block for s in specs.values()) else 21


def ort_optimize_ok(specs: dict) -> bool:
    """False when FP8 activation Q/DQ is present: ONNX Runtime 1.32's CPU graph optimizations change
    its results there (its QDQ fusions assume integer types), so such models run unoptimized."""
    return not any(s.activation.bits is not None and s.activation.format.startswith("fp8") for s in specs.values())


def weight_dq(graph, lt, sim, name: str, spec, new_nodes: list, make_float_tensor) -> None:
    """Replace the float weight initializer of ``name`` by its format's elements + DequantizeLinear."""
    from onnx import TensorProto, helper

    info = sim.by_name[name]
    fmt = FORMATS[spec.weight.format]
    wq = sim.quantize_weight(name, spec.weight)
    p = wq.qparams
    w = wq.tensor.detach().float().cpu()
    moved = w.movedim(info.channel_axis, 0)
    rows = moved.reshape(moved.shape[0], -1)
    C, n = rows.shape
    dtype = _onnx_type(fmt.name)
    base = lt.weight
    qname, sname = f"{base}_quantized", f"{base}_scale"
    attrs: dict = {}
    out_name, post = base, []
    inputs = [qname, sname]
    if not fmt.is_block:
        if p.groups == 1:
            scale = p.scale.reshape(())
            el = (w / scale)
            qarr = el.numpy().T if lt.transposed else el.numpy()
        elif spec.weight.granularity == "per_channel":
            scale = p.scale.view(C)
            el = (rows / scale.view(-1, 1)).reshape(moved.shape).movedim(0, info.channel_axis)
            qarr = el.numpy().T if lt.transposed else el.numpy()
            attrs["axis"] = (1 - info.channel_axis) if lt.transposed else info.channel_axis
        else:
            gs = spec.weight.effective_group_size()
            scale = p.scale.view(C, -1)
            qarr, scale_np, out_name, post = _blocked(graph, rows, scale, gs, info, lt, base, moved.shape, w.dim(), attrs)
            scale = torch.as_tensor(scale_np)
        graph.initializer.append(make_float_tensor(sname, TensorProto.FLOAT, scale.numpy()))
    else:
        per = p.groups // C
        scale = p.scale.view(C, per)
        unit = 2.0 ** -6 if fmt.element.fixed_point else 1.0  # MXINT8: int8 codes k, value k * 2^-6
        qarr, scale_np, out_name, post = _blocked(graph, rows / unit, scale, fmt.block, info, lt, base, moved.shape,
                                                  w.dim(), attrs)
        if fmt.scale == "e4m3":  # NVFP4: E4M3 block scales, dequantized by the FP32 tensor scale
            bs = p.codes.view(C, per).numpy()
            bs = bs.T if lt.transposed else bs
            bname, tname = f"{base}_block_scale", f"{base}_tensor_scale"
            graph.initializer.append(typed_tensor(bname, TensorProto.FLOAT8E4M3FN, bs))
            graph.initializer.append(make_float_tensor(tname, TensorProto.FLOAT, np.array(p.tensor_scale, dtype=np.float32)))
            new_nodes.append(helper.make_node("DequantizeLinear", [bname, tname], [sname], name=f"{base}_scale_dequantize"))
        else:
            graph.initializer.append(make_float_tensor(sname, TensorProto.FLOAT, scale_np * np.float32(unit)))
    for init in list(graph.initializer):
        if init.name == base:
            graph.initializer.remove(init)
            break
    graph.initializer.append(typed_tensor(qname, dtype, qarr))
    new_nodes.append(helper.make_node("DequantizeLinear", inputs, [out_name], name=f"{base}_dequantize", **attrs))
    new_nodes.extend(post)


def _blocked(graph, rows: torch.Tensor, scale: torch.Tensor, block: int, info, lt, base: str, moved_shape, rank: int,
             attrs: dict):
    """Elements (rows / per-element scale) and scales laid out for a blocked DequantizeLinear."""
    from onnx import TensorProto, helper

    C, n = rows.shape
    el_scale = scale.repeat_interleave(block, dim=1)[:, :n]
    el = (rows / el_scale).numpy()
    sc = scale.numpy()
    attrs.update(axis=1, block_size=int(block))
    post: list = []
    out_name = base
    if lt.transposed:  # a MatMul weight (in, out): blocks along axis 0
        attrs["axis"] = 0
        return el.T, sc.T, base, post
    if tuple(el.shape) == tuple(moved_shape) and info.channel_axis == 0:
        return el, sc, out_name, post
    out_name = f"{base}_blocked"
    shape_name = f"{base}_shape"
    graph.initializer.append(helper.make_tensor(shape_name, TensorProto.INT64, [len(moved_shape)], list(moved_shape)))
    cur = f"{base}_moved" if info.channel_axis != 0 else base
    post.append(helper.make_node("Reshape", [out_name, shape_name], [cur], name=f"{base}_reshape"))
    if info.channel_axis != 0:
        perm = list(range(1, rank))
        perm.insert(info.channel_axis, 0)
        post.append(helper.make_node("Transpose", [cur], [base], perm=perm, name=f"{base}_transpose"))
    return el, sc, out_name, post


def act_qdq(graph, tensor: str, params, tag: str, new_nodes: list, make_float_tensor) -> str | None:
    """FP8 activations: QuantizeLinear + DequantizeLinear; block formats: None (left float)."""
    from onnx import TensorProto, helper

    fmt = params.fmt
    if fmt.is_block:
        return None
    dtype = _onnx_type(fmt.name)
    base = f"{tensor}_{tag}"
    sname, zname = f"{base}_scale", f"{base}_zero_point"
    graph.initializer.extend([make_float_tensor(sname, TensorProto.FLOAT, np.array(float(params.scale[0]), dtype=np.float32)),
                              typed_tensor(zname, dtype, np.array(0.0, dtype=np.float32))])
    qname, dq = f"{base}_quantized", f"{base}_dequantized"
    new_nodes.append(helper.make_node("QuantizeLinear", [tensor, sname, zname], [qname], name=f"{base}_quantize"))
    new_nodes.append(helper.make_node("DequantizeLinear", [qname, sname, zname], [dq], name=f"{base}_dequantize"))
    return dq


__all__ = ["ort_optimize_ok", "weight_dq", "act_qdq", "needs_opset", "typed_tensor", "OPSET_FP4"]
