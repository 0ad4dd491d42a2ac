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
# Symmetric grid rules (quantviz.core.qparams): "full" [-2^(b-1), 2^(b-1)-1] with both range ends
# on the grid; "torch" (torch's observers' scale); "restricted" [-(2^(b-1)-1), 2^(b-1)-1].
# Asymmetric grids ignore the setting.
SYMMETRIC_GRIDS = ("full", "torch", "restricted")
DEFAULT_GRID = "full"


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
        return d


@dataclass(frozen=True)
class ActSpec:
    bits: int | None = None
    symmetric: bool = False
    range: RangeSpec = field(default_factory=RangeSpec)
    grid: str = DEFAULT_GRID  # symmetric grid rule; ignored when asymmetric

    @property
    def enabled(self) -> bool:
        return self.bits is not None

    def to_dict(self) -> dict:
        d = {"bits": self.bits, "symmetric": self.symmetric, "range": self.range.to_dict()}
        if self.symmetric:
            d["grid"] = self.grid
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
