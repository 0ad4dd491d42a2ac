"""Resolved per-layer quantization settings (immutable, hashable).

The config file (``quantviz.io.config``) is a set of partial overrides; once
resolved for a layer it becomes a :class:`LayerSpec`. Specs are frozen so they
can key caches of quantized weights and per-layer statistics.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

RANGE_METHODS = ("minmax", "percentile", "mse", "kl", "manual")
GRANULARITIES = ("per_tensor", "per_channel", "per_group")
DEFAULT_PERCENTILE = 99.99
DEFAULT_GROUP_SIZE = 32
# per-layer PTQ algorithms (quantviz.core.algorithms); "none" is plain rounding to nearest
ALGORITHMS = ("none", "adaround", "gptq", "bias_correction", "smoothquant", "awq")
# Symmetric grid rules (quantviz.core.numerics.qparams): "full" [-2^(b-1), 2^(b-1)-1] with both range ends
# on the grid; "torch" (torch's observers' scale); "restricted" [-(2^(b-1)-1), 2^(b-1)-1].
# Asymmetric grids ignore the setting.
SYMMETRIC_GRIDS = ("full", "torch", "restricted")
DEFAULT_GRID = "full"
# Number formats (quantviz.core.numerics.formats): "int" is the integer grid above; the others are
# FP8 (per-tensor / per-channel FP32 scale), MX (E8M0 scale per block of 32) and NVFP4.
# With a float format, bits only says quantized (the format's element width) or float (None).
# llama.cpp's weight types (quantviz.core.numerics.ggml, weights only) follow.
NUMBER_FORMATS = ("int", "fp8_e4m3", "fp8_e5m2", "mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e2m3", "mxfp6_e3m2",
                  "mxfp4", "mxint8", "nvfp4",
                  "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k")
WEIGHT_ONLY_FORMATS = ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k")
DEFAULT_FORMAT = "int"


@dataclass(frozen=True)
class RangeSpec:
    method: str = "minmax"
    p: float | None = None  # percentile, (0, 100]
    lo: float | None = None  # manual clip range
    hi: float | None = None

    def describe(self) -> str:
        if self.method == "percentile":
            return f"percentile({self.p if self.p is not None else DEFAULT_PERCENTILE:g})"
        if self.method == "manual":
            return f"manual[{self.lo:.4g}, {self.hi:.4g}]"
        return self.method

    def to_dict(self) -> dict:
        d: dict = {"method": self.method}
        if self.method == "percentile":
            d["p"] = self.p if self.p is not None else DEFAULT_PERCENTILE
        if self.method == "manual":
            d["lo"], d["hi"] = self.lo, self.hi
        return d


@dataclass(frozen=True)
class WeightSpec:
    bits: int | None = 8
    granularity: str = "per_channel"
    group_size: int | None = None
    symmetric: bool = True
    range: RangeSpec = field(default_factory=RangeSpec)
    grid: str = DEFAULT_GRID  # symmetric grid rule; ignored when asymmetric
    algorithm: str = "none"  # per-layer PTQ algorithm (quantviz.core.algorithms)
    # the algorithm's options as sorted (key, value) pairs (hashable: the spec keys caches)
    algorithm_options: tuple = ()
    format: str = DEFAULT_FORMAT  # number format (NUMBER_FORMATS); "int": bits / granularity / grid above

    @property
    def enabled(self) -> bool:
        return self.bits is not None

    def options_dict(self) -> dict:
        return dict(self.algorithm_options)

    def without_algorithm(self) -> "WeightSpec":
        return replace(self, algorithm="none", algorithm_options=())

    def effective_group_size(self) -> int | None:
        if self.granularity != "per_group":
            return None
        return self.group_size or DEFAULT_GROUP_SIZE

    def to_dict(self) -> dict:
        d: dict = {"bits": self.bits, "granularity": self.granularity, "symmetric": self.symmetric, "range": self.range.to_dict()}
        if self.symmetric:
            d["grid"] = self.grid
        if self.granularity == "per_group":
            d["group_size"] = self.effective_group_size()
        d["algorithm"] = self.algorithm
        if self.algorithm_options:
            d["algorithm_options"] = dict(self.algorithm_options)
        if self.format != DEFAULT_FORMAT:
            d["format"] = self.format
        return d


@dataclass(frozen=True)
class ActSpec:
    bits: int | None = None
    symmetric: bool = False
    range: RangeSpec = field(default_factory=RangeSpec)
    grid: str = DEFAULT_GRID  # symmetric grid rule; ignored when asymmetric
    format: str = DEFAULT_FORMAT  # FP8: calibrated per-tensor scale; MX / NVFP4: block scales on the fly

    @property
    def enabled(self) -> bool:
        return self.bits is not None

    def to_dict(self) -> dict:
        d = {"bits": self.bits, "symmetric": self.symmetric, "range": self.range.to_dict()}
        if self.symmetric:
            d["grid"] = self.grid
        if self.format != DEFAULT_FORMAT:
            d["format"] = self.format
        return d


@dataclass(frozen=True)
class LayerSpec:
    weight: WeightSpec = field(default_factory=WeightSpec)
    activation: ActSpec = field(default_factory=ActSpec)

    def with_weight(self, **kw) -> "LayerSpec":
        return replace(self, weight=replace(self.weight, **kw))

    def with_activation(self, **kw) -> "LayerSpec":
        return replace(self, activation=replace(self.activation, **kw))

    def to_dict(self) -> dict:
        return {"weight": self.weight.to_dict(), "activation": self.activation.to_dict()}


FLOAT_SPEC = LayerSpec(weight=WeightSpec(bits=None), activation=ActSpec(bits=None))
