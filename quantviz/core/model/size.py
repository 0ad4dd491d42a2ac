"""Exact model size under a per-layer config.

Counting rules (documented in docs/simulation.md, "Size"):

* a quantized weight costs ``ceil(numel * bits / 8)`` bytes (bit-packed);
* each quantization group (1 per tensor, 1 per output channel, or 1 per group
  of ``group_size``) adds a float32 scale (4 bytes) and, when asymmetric, a
  zero point of ``ceil(bits / 8)`` bytes;
* everything else — float weights, biases, norms, other parameters and
  floating-point buffers — costs its dtype's size;
* a weight in a float / block format (``quantviz.core.numerics.formats``) costs its
  element bits per value plus its scales: FP8 one float32 per tensor / channel
  / group; MX one 8-bit E8M0 per block of 32; NVFP4 one 8-bit E4M3 per block
  of 16 plus one float32 per tensor. Blocks run along each output channel's
  input values; a partial last block costs a whole scale (MXFP4 on a row of
  a multiple of 32 values: exactly 4 + 8/32 = 4.25 bits per weight);
* ``avg_bits`` (bits per weight, what every view, budget and label shows) is
  the quantizable layers' weight bytes, scales and zero points included, times
  8 over their weight elements (a float layer counts as its dtype's bits): the
  size and the bits per weight always agree (MXFP4: 4.25, not 4);
* ``element_bits`` is the element bits alone, averaged the same way (no
  scales: MXFP4 4, NVFP4 4, int4 per channel 4).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from ..fmt import fmt_bytes  # noqa: F401  (re-exported: sizes are formatted in one place)
from .layers import LayerInfo, submodule
from ..numerics.spec import LayerSpec


@dataclass
class SizeReport:
    float_bytes: int
    quantized_bytes: int
    element_bits: float  # bits of the elements alone, averaged over the weights (no scales)
    per_layer: dict[str, int]  # bytes of each quantizable layer's weight (with overhead)
    float_per_layer: dict[str, int]
    weight_numel: dict[str, int] | None = None

    @property
    def avg_bits(self) -> float:
        """Bits per weight element of the quantizable layers, scales and zero points included."""
        n = sum(self.weight_numel.values()) if self.weight_numel else 0
        return 8.0 * sum(self.per_layer.values()) / n if n else 0.0

    @property
    def float_avg_bits(self) -> float:
        """Bits per weight of the float model's quantizable layers (32 for float32, 16 for a bf16 checkpoint)."""
        n = sum(self.weight_numel.values()) if self.weight_numel else 0
        return 8.0 * sum(self.float_per_layer.values()) / n if n else 32.0

    @property
    def compression(self) -> float:
        return self.float_bytes / self.quantized_bytes if self.quantized_bytes else float("inf")

    def to_dict(self) -> dict:
        return {
            "float_bytes": self.float_bytes,
            "quantized_bytes": self.quantized_bytes,
            "compression": self.compression,
            "avg_bits": self.avg_bits,
            "element_bits": self.element_bits,
            "float_avg_bits": self.float_avg_bits,
        }


def num_groups(info: LayerInfo, spec: LayerSpec) -> int:
    w = spec.weight
    if w.granularity == "per_tensor":
        return 1
    ch = info.channels
    if w.granularity == "per_channel":
        return ch
    per_ch = info.weight_numel // max(ch, 1)
    return ch * math.ceil(per_ch / w.effective_group_size())


def format_weight_bytes(info: LayerInfo, spec: LayerSpec) -> int:
    """Bytes of a weight in a float / block format: elements plus scales, exactly."""
    from ..numerics.formats import FORMATS

    fmt = FORMATS[spec.weight.format]
    if fmt.scale == "ggml":  # llama.cpp blocks: codes, scales and minima in type_size bytes per block
        rows = info.channels
        per_row = info.weight_numel // max(rows, 1)
        return rows * math.ceil(per_row / fmt.gtype.block) * fmt.gtype.type_size
    elem = math.ceil(info.weight_numel * fmt.bits / 8)
    if not fmt.is_block:
        return elem + 4 * num_groups(info, spec)
    rows = info.channels
    per_row = info.weight_numel // max(rows, 1)
    blocks = rows * math.ceil(per_row / fmt.block)
    return elem + blocks * fmt.scale_bits // 8 + (4 if fmt.scale == "e4m3" else 0)


def weight_element_bits(spec: LayerSpec) -> int:
    """Bits of one stored element of a quantized weight (a float format's element width, not ``bits``)."""
    if spec.weight.format != "int":
        from ..numerics.formats import FORMATS

        return FORMATS[spec.weight.format].bits
    return spec.weight.bits


def layer_weight_bytes(info: LayerInfo, spec: LayerSpec | None, float_itemsize: int = 4) -> int:
    if spec is None or spec.weight.bits is None:
        return info.weight_numel * float_itemsize
    if spec.weight.format != "int":
        return format_weight_bytes(info, spec)
    bits = spec.weight.bits
    groups = num_groups(info, spec)
    zp = 0 if spec.weight.symmetric else math.ceil(bits / 8)
    return math.ceil(info.weight_numel * bits / 8) + groups * (4 + zp)


class SizeModel:
    """The parts of a model's size that no config changes (computed once), and
    :meth:`report` for a config: arithmetic over the layers, no pass over the
    model's tensors, so it is cheap enough for every edit."""

    def __init__(self, model: nn.Module, layers: list[LayerInfo]):
        self.layers = list(layers)
        weight_ids = set()
        self.itemsize: dict[str, int] = {}
        self._shares: dict[str, str] = {}  # a layer whose weight is another layer's (tied) -> that layer
        first_of: dict[int, str] = {}
        for l in self.layers:
            w = submodule(model, l.name).weight
            weight_ids.add(id(w))
            self.itemsize[l.name] = w.element_size()
            if id(w) in first_of:
                self._shares[l.name] = first_of[id(w)]
            else:
                first_of[id(w)] = l.name
        other = 0
        seen = set()
        for p in list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]:
            if id(p) in seen or id(p) in weight_ids:
                continue
            seen.add(id(p))
            other += p.numel() * p.element_size()
        self.other_bytes = other
        self.float_per_layer = {l.name: l.weight_numel * self.itemsize[l.name] for l in self.layers}
        self.total_weights = sum(l.weight_numel for l in self.layers)

    def report(self, specs: dict[str, LayerSpec]) -> SizeReport:
        per_layer = {l.name: layer_weight_bytes(l, specs.get(l.name), self.itemsize[l.name]) for l in self.layers}
        bit_sum = 0.0
        for l in self.layers:
            s = specs.get(l.name)
            b = weight_element_bits(s) if s is not None and s.weight.bits is not None else self.itemsize[l.name] * 8
            bit_sum += b * l.weight_numel
        # a tied weight is stored once in float, and once per distinct setting when quantized
        float_total = sum(v for n, v in self.float_per_layer.items() if n not in self._shares)
        q_total = sum(v for n, v in per_layer.items()
                      if n not in self._shares or specs.get(n) != specs.get(self._shares[n]))
        return SizeReport(
            float_bytes=int(self.other_bytes + float_total),
            quantized_bytes=int(self.other_bytes + q_total),
            element_bits=bit_sum / self.total_weights if self.total_weights else 0.0,
            per_layer=per_layer,
            float_per_layer=dict(self.float_per_layer),
            weight_numel={l.name: l.weight_numel for l in self.layers},
        )


def model_size(model: nn.Module, layers: list[LayerInfo], specs: dict[str, LayerSpec]) -> SizeReport:
    return SizeModel(model, layers).report(specs)


def float_model_bytes(model: nn.Module) -> int:
    seen, total = set(), 0
    for t in list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]:
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


__all__ = ["SizeReport", "SizeModel", "model_size", "layer_weight_bytes", "num_groups", "weight_element_bits", "float_model_bytes", "format_weight_bytes"]
