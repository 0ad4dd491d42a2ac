"""One short description of a layer's resolved settings, shared by every view that names them.

The config diff, the error trace's hover text and the HTML report all describe
a :class:`~.spec.LayerSpec` with these functions, so a layer reads the same
everywhere and two specs that quantize differently never read the same: each
description names the number format, the granularity (or the format's block),
the range method where it applies, and the PTQ algorithm with its options.
Settings a format ignores (the range method and granularity of a block format,
the bits of a float format) are left out.
"""
from __future__ import annotations

from .formats import FORMATS
from .spec import ActSpec, LayerSpec, WeightSpec

GRAN_SHORT = {"per_channel": "per-ch", "per_tensor": "per-tensor"}


def _granularity(w: WeightSpec) -> str:
    return GRAN_SHORT.get(w.granularity) or f"g{w.effective_group_size()}"


def _grid(symmetric: bool, grid: str) -> str:
    if not symmetric:
        return " asym"
    return f" {grid} grid" if grid != "full" else ""


def _algorithm(w: WeightSpec) -> str:
    if w.algorithm == "none":
        return ""
    opts = ", ".join(f"{k}={v}" for k, v in w.algorithm_options)
    return f" {w.algorithm}" + (f"({opts})" if opts else "")


def weight_text(w: WeightSpec) -> str:
    """E.g. ``INT4 per-ch minmax``, ``FP8 E4M3 per-ch minmax gptq``, ``NVFP4 block 16``, ``float``."""
    if w.bits is None:
        return "float"
    f = FORMATS.get(w.format)
    if f is None:
        body = f"INT{w.bits} {_granularity(w)}{_grid(w.symmetric, w.grid)} {w.range.describe()}"
    elif f.scale == "ggml":  # llama.cpp's reference quantizer chooses its own scales
        body = f"{f.label} ({f.bits_per_element():g} bits/weight)"
    elif f.is_block:  # the block scales follow each block's maximum: no range method, no granularity
        body = f"{f.label} block {f.block}"
    else:
        body = f"{f.label} {_granularity(w)} {w.range.describe()}"
    return body + _algorithm(w)


def activation_text(a: ActSpec) -> str:
    """E.g. ``float``, ``INT8 asym minmax``, ``FP8 E4M3 minmax``, ``MXFP8 E4M3 block 32``,
    ``NVFP4 block 16 minmax`` (its per-tensor scale comes from the calibrated range)."""
    if a.bits is None:
        return "float"
    f = FORMATS.get(a.format)
    if f is None:
        return f"INT{a.bits}{_grid(a.symmetric, a.grid) or ' sym'} {a.range.describe()}"
    if f.is_block:
        return f"{f.label} block {f.block}" + (f" {a.range.describe()}" if f.scale == "e4m3" else "")
    return f"{f.label} {a.range.describe()}"


def describe_weight(w: WeightSpec) -> str:
    return f"W {weight_text(w)}"


def describe_activation(a: ActSpec) -> str:
    return f"A {activation_text(a)}"


def describe_layer(spec: LayerSpec, sep: str = "\n") -> str:
    """The weight's description, ``sep``, the activation's."""
    return f"{describe_weight(spec.weight)}{sep}{describe_activation(spec.activation)}"


def same_setting(a: LayerSpec, b: LayerSpec) -> bool:
    """Do two specs quantize a layer alike? (Equal descriptions: fields a format ignores do not count.)"""
    return a == b or describe_layer(a) == describe_layer(b)


__all__ = ["same_setting", "weight_text", "activation_text", "describe_weight", "describe_activation", "describe_layer"]
