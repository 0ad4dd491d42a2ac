"""The simulation's quantized weights: :class:`WeightCache`.

One entry per quantized weight, under a typed key: :class:`RoundKey` (a layer
rounded to nearest under one :class:`WeightSpec`: cheap to redo) or
:class:`AlgorithmKey` (a per-layer algorithm's result, which also depends on
the layers before it: ``context``). An entry keeps its qparams and error
statistics always; its tensor is held whole, as integer codes
(:mod:`.wcodes`) or not at all, within a byte budget:

* the tensors of the *pinned* weights (the applied config's) are kept first;
  others are dropped oldest first when room is needed;
* algorithm results stay whole and outside the byte count (they are few and
  costly to recompute);
* the number of entries is bounded: past ``4 * cap`` rounding results that are
  not pinned go, past ``8 * cap`` everything (:attr:`generation` counts these
  full clears, so a holder of a tensor taken from the cache knows it is stale).

The cache never calls back into the simulation: whatever it cannot hold is
recomputed by the function its caller passes (:meth:`WeightCache.whole`).
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Callable, Union

import torch

from ..numerics.qparams import QParams
from ..numerics.spec import WeightSpec
from .wcodes import encode

CACHE_ENV = "QUANTVIZ_WEIGHT_CACHE"
DEFAULT_CACHE_FRACTION = 0.25
RESERVE_BYTES = 4 << 30  # left for activations, the float reference and the rest of the machine


@dataclass
class WeightQuant:
    """A layer's quantized weight under one spec: the fake-quantized tensor (same shape/dtype/device
    as the float one), qparams and error statistics. In the cache an entry may hold its tensor only
    as integer codes (``packed``) or not at all (over the budget); :meth:`QuantSim.quantize_weight`
    always returns one with ``tensor`` set."""

    tensor: torch.Tensor | None
    qparams: QParams
    sqnr_db: float
    mse: float
    clipped_fraction: float
    # set by a per-layer algorithm (quantviz.core.algorithms); None / empty for rounding to nearest
    codes: torch.Tensor | None = None  # integer codes of ``tensor`` (int32, weight layout)
    bias: torch.Tensor | None = None  # the layer's new bias (bias correction; created when absent)
    input_scale: torch.Tensor | None = None  # SmoothQuant / AWQ: the layer sees x / s (per input channel)
    input_range: tuple | None = None  # min / max of x / s on calibration data (its input quantizer's range)
    algorithm_info: dict = field(default_factory=dict)
    packed: object = field(default=None, repr=False)  # core.wcodes.Codes when the cache keeps codes only

    @property
    def held_bytes(self) -> int:
        return nbytes(self.tensor) + (self.packed.nbytes if self.packed is not None else 0)


@dataclass(frozen=True)
class RoundKey:
    """Layer ``name`` rounded to nearest under ``spec``."""

    name: str
    spec: WeightSpec


@dataclass(frozen=True)
class AlgorithmKey:
    """Layer ``name`` under ``spec``'s per-layer algorithm, after layers whose settings hash to ``context``."""

    name: str
    spec: WeightSpec
    context: int | None


Key = Union[RoundKey, AlgorithmKey]


def nbytes(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.numel() * t.element_size()


def default_cache_bytes(float_bytes: int, numel: int, available: int | None = None) -> int:
    """``$QUANTVIZ_WEIGHT_CACHE``, else room for every weight as int8 codes (a quarter of float32
    weights, half of bf16 / fp16 ones: one 8-bit copy of the model), at least 64 MiB; given the
    machine's ``available`` memory, at most what is left of it once the float weights are resident
    and ``RESERVE_BYTES`` more (a 7B bf16 checkpoint on a 24 GB machine: its int8 codes would not
    fit beside its 13.5 GB of weights; the layers that do not fit are quantized when they run)."""
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        try:
            return max(0, int(float(env)))
        except ValueError:
            pass
    want = max(64 << 20, int(numel), int(DEFAULT_CACHE_FRACTION * float_bytes))
    if available is not None:
        want = min(want, max(64 << 20, int(available) - int(float_bytes) - RESERVE_BYTES))
    return want


class WeightCache:
    """Quantized weights by :class:`RoundKey` / :class:`AlgorithmKey` within ``budget`` bytes.

    ``float_bytes`` (the model's float weight bytes) decides whether tensors are held whole (they
    all fit: :attr:`keeps_whole`) or preferably as codes; ``cap`` bounds the number of entries."""

    def __init__(self, budget: int, float_bytes: int, cap: int = 64):
        self.budget = int(budget)
        self.float_bytes = int(float_bytes)
        self.cap = max(int(cap), 1)
        self.bytes = 0  # held by rounding entries (tensors and codes)
        self.generation = 0  # bumped by every full clear
        self._entries: dict[Key, WeightQuant] = {}
        self._pinned: dict[str, WeightSpec] = {}  # layer -> the weight spec it runs with (kept first)
        self.computed: Counter[str] = Counter()  # layer -> weights quantized for it (rounding or algorithm)

    # ------------------------------------------------------------ look-ups
    @staticmethod
    def round_key(name: str, spec: WeightSpec) -> RoundKey:
        return RoundKey(name, spec)

    @staticmethod
    def algorithm_key(name: str, spec: WeightSpec, context: int | None) -> AlgorithmKey:
        return AlgorithmKey(name, spec, context)

    def __contains__(self, key: Key) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key) -> WeightQuant | None:
        """The stored entry (its tensor may be held as codes only, or not at all)."""
        return self._entries.get(key)

    def whole(self, key: RoundKey, recompute: Callable[[], WeightQuant]) -> WeightQuant | None:
        """The entry of ``key`` with its tensor: as held, decoded from codes, or ``recompute()``
        (not stored) when the budget dropped it; None when there is no entry."""
        hit = self._entries.get(key)
        if hit is None or hit.tensor is not None:
            return hit
        if hit.packed is not None:
            return replace(hit, tensor=hit.packed.decode(), packed=None)
        return recompute()

    @property
    def keeps_whole(self) -> bool:
        """Whether every quantized weight is held whole (a small model); else as codes, in the budget."""
        return self.float_bytes <= self.budget

    @property
    def stats(self) -> dict:
        v = self._entries.values()
        return {"entries": len(self._entries), "tensors": sum(e.tensor is not None for e in v),
                "codes": sum(e.packed is not None for e in v), "bytes": self.bytes, "budget": self.budget}

    # --------------------------------------------------------------- pins
    def pin(self, name: str, spec: WeightSpec | None) -> None:
        """Layer ``name`` runs with ``spec`` (None: float): its rounding entry is kept first."""
        if spec is None:
            self._pinned.pop(name, None)
        else:
            self._pinned[name] = spec

    def pinned(self, key: Key) -> bool:
        return isinstance(key, RoundKey) and self._pinned.get(key.name) == key.spec

    # ------------------------------------------------------------- storing
    def store(self, key: RoundKey, res: WeightQuant, channel_axis: int) -> WeightQuant:
        """Store rounding result ``res`` (its tensor whole, as codes, or not at all); returns ``res``."""
        self.trim()
        stored = replace(res, tensor=None, packed=None)
        self.hold(key, stored, res.tensor, channel_axis)
        self._entries[key] = res if stored.tensor is not None else stored  # kept whole: the same object
        return res

    def store_codes(self, key: RoundKey, entry: WeightQuant, codes) -> None:
        """Store ``entry`` (no tensor), holding its ``codes`` when they fit."""
        self.trim()
        if self.make_room(codes.nbytes):
            entry.packed = codes
            self.bytes += codes.nbytes
        self._entries[key] = entry

    def count(self, name: str) -> None:
        """A weight of layer ``name`` was quantized (stored or not): :attr:`computed` counts them, so a
        caller can tell which weights an edit re-quantized."""
        self.computed[name] += 1

    def store_algorithm(self, key: AlgorithmKey, res: WeightQuant) -> WeightQuant:
        """Store an algorithm's result (held whole, outside the byte count)."""
        self.count(key.name)
        self.trim()
        self._entries[key] = res
        return res

    def hold(self, key: RoundKey, entry: WeightQuant, t: torch.Tensor, channel_axis: int) -> bool:
        """Hold ``t`` for ``entry``: whole when all the model's weights fit the budget whole (small
        models: no decoding on every call), else as integer codes (a quarter of float32), else whole
        if it fits, else not at all (recomputed when needed)."""
        whole_ok = self.keeps_whole
        if whole_ok and self.make_room(nbytes(t)):
            entry.tensor = t
            self.bytes += nbytes(t)
            return True
        spec = key.spec
        axis = None if spec.granularity == "per_tensor" else channel_axis
        codes = encode(t, entry.qparams, axis, spec.effective_group_size())
        if codes is not None and self.make_room(codes.nbytes):
            entry.packed = codes
            self.bytes += codes.nbytes
            return True
        if codes is None and not whole_ok and self.make_room(nbytes(t)):
            entry.tensor = t
            self.bytes += nbytes(t)
            return True
        return False

    # ------------------------------------------------------------ eviction
    def make_room(self, n: int) -> bool:
        """Drop held tensors, oldest first and never the pinned ones, until ``n`` more bytes fit."""
        if self.bytes + n <= self.budget:
            return True
        for key, v in list(self._entries.items()):
            if self.bytes + n <= self.budget:
                break
            if isinstance(key, RoundKey) and v.held_bytes and not self.pinned(key):
                self.bytes -= v.held_bytes
                v.tensor = v.packed = None
        return self.bytes + n <= self.budget

    def trim(self) -> None:
        """Bound the number of entries; plain rounding (cheap to redo) goes before algorithm results."""
        cap = 4 * self.cap
        if len(self._entries) > cap:
            for k in [k for k in self._entries if isinstance(k, RoundKey) and not self.pinned(k)]:
                self.bytes -= self._entries.pop(k).held_bytes
        if len(self._entries) > 2 * cap:
            self.clear()

    def drop_algorithms(self) -> None:
        """Forget every algorithm result (new calibration data)."""
        for k in [k for k in self._entries if isinstance(k, AlgorithmKey)]:
            del self._entries[k]

    def clear(self) -> None:
        """Forget everything (new float weights); pins stay."""
        self._entries.clear()
        self.bytes = 0
        self.generation += 1


__all__ = ["WeightCache", "WeightQuant", "RoundKey", "AlgorithmKey", "default_cache_bytes", "nbytes", "CACHE_ENV"]
