"""The ONNX operators the ONNX source runs, as torch functions (eager, CPU or GPU).

Each entry of :data:`OPS` is ``fn(inputs, attrs) -> tensor | tuple`` with the
ONNX semantics of the operator at opsets 13..21 (inputs that an older opset
gave as attributes, such as ``axes``, are read from either). Shape tensors are
int64 tensors, as in ONNX. Conv / Gemm / MatMul with an initializer weight are
not here: they become real layers (:mod:`.onnxfile`); the functions below are
their fallbacks when the weight is computed.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

INT64_MAX = 2 ** 63 - 1


class UnsupportedOp(Exception):
    """An attribute value or input this converter does not implement (the message says which)."""


def dtype_of(onnx_type: int) -> torch.dtype:
    from onnx import TensorProto as T

    table = {T.FLOAT: torch.float32, T.DOUBLE: torch.float64, T.FLOAT16: torch.float16, T.BFLOAT16: torch.bfloat16,
             T.INT64: torch.int64, T.INT32: torch.int32, T.INT16: torch.int16, T.INT8: torch.int8,
             T.UINT8: torch.uint8, T.BOOL: torch.bool}
    if onnx_type not in table:
        raise UnsupportedOp(f"tensor type {onnx_type}")
    return table[onnx_type]


def _ints(t) -> list[int]:
    return [int(v) for v in (t.tolist() if isinstance(t, torch.Tensor) else t)]


def _axes(inputs, attrs, k: int = 1):
    """``axes`` from input ``k`` (opset 13+ / 18+) or the attribute (older opsets)."""
    if len(inputs) > k and inputs[k] is not None:
        return _ints(inputs[k].flatten())
    a = attrs.get("axes")
    return None if a is None else [int(v) for v in a]


def _norm(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


# ---------------------------------------------------------------- elementwise
def _div(i, a):
    x, y = i
    if not x.is_floating_point() and not y.is_floating_point():
        return torch.div(x, y, rounding_mode="trunc")
    return x / y


def _mod(i, a):
    x, y = i
    return torch.fmod(x, y) if a.get("fmod", 0) else torch.remainder(x, y)


def _clip(i, a):
    x = i[0]
    lo = i[1] if len(i) > 1 and i[1] is not None else a.get("min")
    hi = i[2] if len(i) > 2 and i[2] is not None else a.get("max")
    if lo is not None:
        x = torch.maximum(x, torch.as_tensor(lo, dtype=x.dtype, device=x.device))
    if hi is not None:
        x = torch.minimum(x, torch.as_tensor(hi, dtype=x.dtype, device=x.device))
    return x


def _variadic(fn):
    def run(i, a):
        out = i[0]
        for t in i[1:]:
            out = fn(out, t)
        return out
    return run


# ---------------------------------------------------------------- shape ops
def _shape(i, a):
    s = list(i[0].shape)
    start, end = a.get("start", 0), a.get("end", len(s))
    if torch.jit.is_tracing():  # keep the shape symbolic so a re-export to ONNX keeps dynamic axes
        from torch.onnx import operators

        return operators.shape_as_tensor(i[0])[start:end]
    return torch.tensor(s[start:end], dtype=torch.int64)


def _reshape(i, a):
    if torch.jit.is_tracing() and isinstance(i[1], torch.Tensor):
        from torch.onnx import operators

        x, shape = i[0], i[1].long()
        if not a.get("allowzero", 0):
            n = min(int(shape.shape[0]), x.dim())
            src = operators.shape_as_tensor(x)
            head = torch.where(shape[:n] == 0, src[:n], shape[:n])
            shape = torch.cat([head, shape[n:]])
        return operators.reshape_from_tensor_shape(x, shape)
    x, shape = i[0], _ints(i[1])
    if not a.get("allowzero", 0):
        shape = [x.shape[k] if v == 0 else v for k, v in enumerate(shape)]
    return x.reshape(shape)


def _flatten(i, a):
    x = i[0]
    ax = _norm(a.get("axis", 1), x.dim())
    if ax == 0:
        return x.reshape(1, -1)
    out = x.flatten(ax) if ax < x.dim() else x.unsqueeze(-1)
    return out.flatten(0, ax - 1)


def _squeeze(i, a):
    x, axes = i[0], _axes(i, a)
    if axes is None:
        return x.squeeze()
    for ax in sorted((_norm(v, x.dim()) for v in axes), reverse=True):
        x = x.squeeze(ax)
    return x


def _unsqueeze(i, a):
    x, axes = i[0], _axes(i, a)
    rank = x.dim() + len(axes)
    for ax in sorted(_norm(v, rank) for v in axes):
        x = x.unsqueeze(ax)
    return x


def _slice(i, a):
    x = i[0]
    starts, ends = _ints(i[1]), _ints(i[2])
    axes = _ints(i[3]) if len(i) > 3 and i[3] is not None else list(range(len(starts)))
    steps = _ints(i[4]) if len(i) > 4 and i[4] is not None else [1] * len(starts)
    idx = [slice(None)] * x.dim()
    for s, e, ax, st in zip(starts, ends, axes, steps):
        if st <= 0:
            raise UnsupportedOp("Slice with a step below 1")
        n = x.shape[_norm(ax, x.dim())]
        s = max(0, min(n, s + n if s < 0 else s))
        e = max(0, min(n, e + n if e < 0 else e))
        idx[_norm(ax, x.dim())] = slice(s, e, st)
    return x[tuple(idx)]


def _gather(i, a):
    x, ind = i
    ax = _norm(a.get("axis", 0), x.dim())
    ind = ind.long()
    ind = torch.where(ind < 0, ind + x.shape[ax], ind)
    out = x.index_select(ax, ind.flatten().to(x.device))
    return out.reshape(tuple(x.shape[:ax]) + tuple(ind.shape) + tuple(x.shape[ax + 1:]))


def _concat(i, a):
    ts = [t for t in i if t is not None and t.numel() > 0] or [i[0]]
    return torch.cat(ts, dim=a["axis"])


def _split(i, a):
    x = i[0]
    ax = a.get("axis", 0)
    sizes = _ints(i[1]) if len(i) > 1 and i[1] is not None else a.get("split")
    if sizes is None:
        n = a.get("num_outputs") or a["_n_outputs"]
        size = -(-x.shape[ax] // n)
        return tuple(torch.split(x, size, dim=ax))
    return tuple(torch.split(x, list(sizes), dim=ax))


def _transpose(i, a):
    x = i[0]
    perm = a.get("perm") or list(range(x.dim()))[::-1]
    return x.permute(*perm)


def _expand(i, a):
    x, shape = i[0], _ints(i[1])
    return x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(shape))) if shape else x


def _tile(i, a):
    return i[0].repeat(*_ints(i[1]))


def _const_of_shape(i, a):
    v = a.get("value")
    val = v if isinstance(v, torch.Tensor) else torch.zeros(1)
    return torch.full(_ints(i[0]), val.item(), dtype=val.dtype)


def _range(i, a):
    s, lim, d = (t.item() for t in i)
    dtype = i[0].dtype
    return torch.arange(s, lim, d, dtype=dtype)


def _pad(i, a):
    x = i[0]
    mode = a.get("mode", "constant")
    pads = _ints(i[1]) if len(i) > 1 else list(a["pads"])
    value = i[2].item() if len(i) > 2 and i[2] is not None and i[2].numel() else a.get("value", 0.0)
    axes = _ints(i[3]) if len(i) > 3 and i[3] is not None else list(range(x.dim()))
    n = len(axes)
    full = [0] * (2 * x.dim())
    for k, ax in enumerate(axes):
        ax = _norm(ax, x.dim())
        full[ax], full[x.dim() + ax] = pads[k], pads[n + k]
    tp = []
    for ax in reversed(range(x.dim())):
        tp += [full[ax], full[x.dim() + ax]]
    if mode != "constant":
        raise UnsupportedOp(f"Pad mode {mode}")
    return F.pad(x, tp, value=value)


# ---------------------------------------------------------------- reductions
def _reduce(fn):
    def run(i, a):
        x = i[0]
        axes = _axes(i, a)
        keep = bool(a.get("keepdims", 1))
        if axes is None or not axes:
            if a.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.dim()))
        return fn(x, dim=tuple(_norm(v, x.dim()) for v in axes), keepdim=keep)
    return run


def _amax(x, dim, keepdim):
    return torch.amax(x, dim=dim, keepdim=keepdim)


def _amin(x, dim, keepdim):
    return torch.amin(x, dim=dim, keepdim=keepdim)


def _argmax(i, a):
    x = i[0]
    out = torch.argmax(x, dim=a.get("axis", 0), keepdim=bool(a.get("keepdims", 1)))
    return out


# ---------------------------------------------------------------- NN
def _pads(a, nd: int) -> tuple[list[int], bool]:
    """(begin pads, symmetric?) and the torch F.pad list when asymmetric."""
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise UnsupportedOp(f"auto_pad {a['auto_pad']}")
    p = list(a.get("pads", [0] * (2 * nd)))
    return p, p[:nd] == p[nd:]


def torch_pad_list(p: list[int], nd: int) -> list[int]:
    out = []
    for k in reversed(range(nd)):
        out += [p[k], p[nd + k]]
    return out


def _pool(kind):
    def run(i, a):
        x = i[0]
        nd = x.dim() - 2
        k = list(a["kernel_shape"])
        s = list(a.get("strides", [1] * nd))
        p, sym = _pads(a, nd)
        ceil = bool(a.get("ceil_mode", 0))
        if not sym:
            x = F.pad(x, torch_pad_list(p, nd), value=-math.inf if kind == "max" else 0.0)
            p = [0] * (2 * nd)
        fn = getattr(F, f"{kind}_pool{nd}d")
        if kind == "max":
            return fn(x, k, s, p[:nd], dilation=list(a.get("dilations", [1] * nd)), ceil_mode=ceil)
        return fn(x, k, s, p[:nd], ceil_mode=ceil, count_include_pad=bool(a.get("count_include_pad", 0)))
    return run


def conv_fn(i, a):
    x, w = i[0], i[1]
    b = i[2] if len(i) > 2 else None
    nd = x.dim() - 2
    p, sym = _pads(a, nd)
    if not sym:
        x = F.pad(x, torch_pad_list(p, nd))
        p = [0] * (2 * nd)
    fn = getattr(F, f"conv{nd}d")
    return fn(x, w, b, list(a.get("strides", [1] * nd)), p[:nd], list(a.get("dilations", [1] * nd)), a.get("group", 1))


def gemm_fn(i, a):
    x, w = i[0], i[1]
    if a.get("transA", 0):
        x = x.t()
    if a.get("transB", 0):
        w = w.t()
    out = a.get("alpha", 1.0) * (x @ w)
    if len(i) > 2 and i[2] is not None:
        out = out + a.get("beta", 1.0) * i[2]
    return out


def _layer_norm(i, a):
    x, scale = i[0], i[1]
    b = i[2] if len(i) > 2 else None
    ax = _norm(a.get("axis", -1), x.dim())
    return F.layer_norm(x, tuple(int(d) for d in x.shape[ax:]), scale, b, a.get("epsilon", 1e-5))


def _batch_norm(i, a):
    x, sc, b, mean, var = i[:5]
    return F.batch_norm(x, mean, var, sc, b, False, 0.0, a.get("epsilon", 1e-5))


def _softmax(fn):
    def run(i, a):
        return fn(i[0], dim=a.get("axis", -1))
    return run


def _gelu(i, a):
    return F.gelu(i[0], approximate="tanh" if a.get("approximate", "none") == "tanh" else "none")


def _cast(i, a):
    return i[0].to(dtype_of(a["to"]))


def _where(i, a):
    c, x, y = i
    return torch.where(c.bool(), x, y)


def _hard_sigmoid(i, a):
    return torch.clamp(a.get("alpha", 0.2) * i[0] + a.get("beta", 0.5), 0.0, 1.0)


def _identity(i, a):
    return i[0]


def _ml_scaler(i, a):
    """ai.onnx.ml Scaler (scikit-learn's StandardScaler through skl2onnx): (x - offset) * scale."""
    x = i[0].float()
    offset = torch.tensor(a.get("offset", [0.0]), dtype=x.dtype, device=x.device)
    scale = torch.tensor(a.get("scale", [1.0]), dtype=x.dtype, device=x.device)
    return (x - offset) * scale


def _ml_array_feature_extractor(i, a):
    """ai.onnx.ml ArrayFeatureExtractor: the elements of the last axis at ``indices`` (a classifier's
    class labels picked by its arg-max)."""
    x, idx = i[0], i[1].long()
    if x.dim() == 1:
        return x[idx]
    return x[..., idx.reshape(-1)]


# operators of the ``ai.onnx.ml`` domain that classic-ML exporters (skl2onnx) put around a network
ML_OPS = {"Scaler": _ml_scaler, "ArrayFeatureExtractor": _ml_array_feature_extractor}

OPS = {
    "Add": lambda i, a: i[0] + i[1], "Sub": lambda i, a: i[0] - i[1], "Mul": lambda i, a: i[0] * i[1],
    "Div": _div, "Mod": _mod, "Pow": lambda i, a: torch.pow(i[0], i[1]),
    "Neg": lambda i, a: -i[0], "Abs": lambda i, a: i[0].abs(), "Sqrt": lambda i, a: torch.sqrt(i[0]),
    "Reciprocal": lambda i, a: 1.0 / i[0], "Exp": lambda i, a: torch.exp(i[0]), "Log": lambda i, a: torch.log(i[0]),
    "Erf": lambda i, a: torch.erf(i[0]), "Sin": lambda i, a: torch.sin(i[0]), "Cos": lambda i, a: torch.cos(i[0]),
    "Floor": lambda i, a: torch.floor(i[0]), "Ceil": lambda i, a: torch.ceil(i[0]),
    "Relu": lambda i, a: F.relu(i[0]), "Sigmoid": lambda i, a: torch.sigmoid(i[0]), "Tanh": lambda i, a: torch.tanh(i[0]),
    "LeakyRelu": lambda i, a: F.leaky_relu(i[0], a.get("alpha", 0.01)), "Gelu": _gelu,
    "HardSigmoid": _hard_sigmoid, "HardSwish": lambda i, a: F.hardswish(i[0]), "Softplus": lambda i, a: F.softplus(i[0]),
    "Clip": _clip, "Max": _variadic(torch.maximum), "Min": _variadic(torch.minimum), "Sum": _variadic(torch.add),
    "Equal": lambda i, a: i[0] == i[1], "Less": lambda i, a: i[0] < i[1], "Greater": lambda i, a: i[0] > i[1],
    "LessOrEqual": lambda i, a: i[0] <= i[1], "GreaterOrEqual": lambda i, a: i[0] >= i[1],
    "Not": lambda i, a: ~i[0], "And": lambda i, a: i[0] & i[1], "Or": lambda i, a: i[0] | i[1],
    "Where": _where, "Cast": _cast, "Identity": _identity, "Dropout": _identity,
    "Shape": _shape, "Reshape": _reshape, "Flatten": _flatten, "Squeeze": _squeeze, "Unsqueeze": _unsqueeze,
    "Slice": _slice, "Gather": _gather, "Concat": _concat, "Split": _split, "Transpose": _transpose,
    "Expand": _expand, "Tile": _tile, "ConstantOfShape": _const_of_shape, "Range": _range, "Pad": _pad,
    "ReduceMean": _reduce(torch.mean), "ReduceSum": _reduce(torch.sum), "ReduceMax": _reduce(_amax),
    "ReduceMin": _reduce(_amin), "ArgMax": _argmax,
    "MaxPool": _pool("max"), "AveragePool": _pool("avg"),
    "GlobalAveragePool": lambda i, a: i[0].mean(dim=tuple(range(2, i[0].dim())), keepdim=True),
    "GlobalMaxPool": lambda i, a: torch.amax(i[0], dim=tuple(range(2, i[0].dim())), keepdim=True),
    "Conv": conv_fn, "Gemm": gemm_fn, "MatMul": lambda i, a: torch.matmul(i[0], i[1]),
    "LayerNormalization": _layer_norm, "BatchNormalization": _batch_norm,
    "Softmax": _softmax(torch.softmax), "LogSoftmax": _softmax(torch.log_softmax),
}

__all__ = ["OPS", "ML_OPS", "UnsupportedOp", "dtype_of", "conv_fn", "gemm_fn", "torch_pad_list", "INT64_MAX"]
