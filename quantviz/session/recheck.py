"""Incremental re-checks: after an edit, recompute only what depends on it.

:class:`Rechecker` belongs to a :class:`~quantviz.session.session.Session`. It
owns a :class:`~quantviz.core.sim.incremental.SuffixRunner` over the session's
simulated model (``session.sim.qmodel``) and evaluation data. The runner keeps
the values that feed each quantizable layer, for the config of the last
re-check (the *base*), within a memory budget. A re-check then:

1. applies the config to the simulation (only layers whose settings changed
   get new quantized weights: :meth:`QuantSim.apply` caches them);
2. compares the config with the base (:meth:`SpecMap.changed_from`, which the
   session's edit already computed) and asks the runner for the model
   outputs, recomputing only the graph nodes that depend on the layers that
   differ (nothing at all when no layer differs), and committing the new
   values, so the cache follows the current config;
3. streams the metrics chunk by chunk through a :class:`MetricStream`, so the
   first estimate arrives after the first, small chunk.

The base is tracked per chunk: a re-check cancelled half way leaves the first
chunks at the new config and the rest at the old one, and the next re-check
recomputes, for every chunk, the union of the layers that differ. The first
re-check, and the first after calibration or a change of data, is a full pass
that fills the cache. A model that cannot be traced but runs a stack of blocks
(a transformer's decoder layers) gets a
:class:`~quantviz.core.sim.blocks.BlockRunner` instead, which re-runs from the
first changed block; other untraceable models run full forward passes (the
runner's fallback), with the same numbers.

Exactness: the incremental and the full path (``incremental=False``) evaluate
the same chunks of the data in the same order and feed the same metric
stream, and the runner's outputs equal a plain forward pass of the model
bit for bit, so both paths return identical metrics.

The cache budget is ``Session(cache_bytes=...)``, else ``$QUANTVIZ_CACHE_BYTES``
(bytes, or with a K/M/G suffix), else ``min(25 % of available RAM, 2 GiB)``,
and at most ``max(256 MiB, a quarter of the model's weight bytes)``.
"""
from __future__ import annotations

import os
import re
import time
from typing import Callable

import torch

from ..core.errors import QuantvizError
from ..core.sim.evaluate import user_metrics
from ..core.model.allocator import available_memory
from ..core.model.data import ChunkedData, chunk_bounds
from ..core.sim.fakequant import iterate_outputs
from ..core.model.lmmetrics import slice_aux
from ..core.sim.blocks import BlockRunner, find_blocks
from ..core.sim.incremental import SuffixRunner
from ..core.numerics.specmap import SpecMap
from ..core.progress import Progress, null_progress

CACHE_ENV = "QUANTVIZ_CACHE_BYTES"
CACHE_CAP_BYTES = 2 << 30
CACHE_RAM_SHARE = 0.25
CACHE_MODEL_FLOOR = 256 << 20
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_bytes(text: str, what: str = CACHE_ENV) -> int:
    """``"1500000"``, ``"512M"``, ``"2GiB"``, ``"1.5g"`` -> bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", str(text), re.IGNORECASE)
    if not m:
        raise QuantvizError(f"{what}: expected a size in bytes such as 536870912, 512M or 2G, got {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def default_budget(weight_bytes: int | None = None) -> int:
    """The cache budget when the session sets none (see the module docstring); with the model's
    ``weight_bytes``, also at most ``max(CACHE_MODEL_FLOOR, weight_bytes / 4)``, so that a big
    model's peak memory stays within twice its weights."""
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return parse_bytes(env)
    avail = available_memory()
    budget = CACHE_CAP_BYTES // 4 if avail is None else int(min(CACHE_RAM_SHARE * avail, CACHE_CAP_BYTES))
    if weight_bytes is not None:
        budget = min(budget, max(CACHE_MODEL_FLOOR, int(weight_bytes) // 4))
    return budget


class Rechecker:
    """Incremental re-checks of a session's configs (use under ``session.lock``)."""

    def __init__(self, session, *, budget_bytes: int | None = None, first_chunk: int | None = None,
                 trace: bool = True):
        self.session = session
        self.budget_bytes = (int(budget_bytes) if budget_bytes is not None
                             else default_budget(getattr(getattr(session, "sim", None), "float_weight_bytes", None)))
        self.first_chunk = first_chunk
        self.trace = trace
        self.runner: SuffixRunner | None = None
        self._base: list[SpecMap] | None = None  # per chunk: the specs its cached values reflect
        self._tokens: tuple = ()
        self.last: dict = {}  # how the last re-check ran (mode, changed layers, fraction, seconds)

    # ------------------------------------------------------------ state
    def invalidate(self) -> None:
        """Forget the cached values (calibration, data or model changed)."""
        self.runner = None
        self._base = None
        self._tokens = ()

    def _current_tokens(self) -> tuple:
        """What the cache depends on besides the config (compared by identity / value)."""
        s = self.session
        return (s.sim, s.sim.qmodel, s.sim.act_obs, s.eval_data, s.reference, s.batch_size, str(s.device),
                tuple(self.bounds()))

    def _tokens_valid(self) -> bool:
        cur, old = self._current_tokens(), self._tokens
        if len(cur) != len(old):
            return False
        return all(a is b for a, b in zip(cur[:5], old[:5])) and cur[5:] == old[5:]

    def first_chunk_size(self) -> int:
        """Samples in the first chunk (the early estimate)."""
        bs = self.session.batch_size
        return self.first_chunk if self.first_chunk is not None else max(1, bs // 8)

    def bounds(self) -> list[tuple[int, int]]:
        s = self.session
        return chunk_bounds(len(s.eval_data), s.batch_size, self.first_chunk_size())

    def changed_layers(self, specs: SpecMap) -> list[str] | None:
        """Layers whose settings differ from the cached base (None: no usable cache), read from
        :meth:`SpecMap.changed_from` (the base is usually the config the session diffed against)."""
        if self._base is None or self.runner is None or not self._tokens_valid():
            return None
        specs = SpecMap.of(specs)
        differ = {n for b in {id(b): b for b in self._base}.values() for n in specs.changed_from(b)}
        return [n for n in self.session.layer_names if n in differ]

    @property
    def stats(self) -> dict:
        r = self.runner
        return {"budget_bytes": self.budget_bytes,
                "cache_bytes": r.cache_bytes if r is not None else 0,
                "peak_cache_bytes": r.peak_cache_bytes if r is not None else 0,
                "incremental": bool(r is not None and r.incremental),
                "reason": r.reason if r is not None else "",
                **self.last}

    # --------------------------------------------------------- re-check
    def evaluate(self, specs: dict, *, incremental: bool = True, progress: Progress = null_progress,
                 cancel: Callable[[], bool] = lambda: False,
                 on_estimate: Callable[[dict], None] | None = None) -> dict:
        """Apply ``specs`` to the simulation and return its metrics (streams estimates)."""
        s = self.session
        t0 = time.perf_counter()
        specs = SpecMap.of(specs)  # immutable: kept as the base below without a copy
        if s.sim.pending_algorithms(specs):
            # per-layer algorithms run first (cancellable, with progress), then the evaluation
            from ..core.progress import scaled

            s.sim.apply(specs, progress=scaled(progress, 0.0, 0.5), cancel=cancel)
            progress = scaled(progress, 0.5, 1.0)
        else:
            s.sim.apply(specs, cancel=cancel)
        bounds = self.bounds()
        data = ChunkedData(s.eval_data, bounds)
        stream = s.reference.stream()
        fed = [0]

        def feed(i: int, out: torch.Tensor) -> None:
            if i != fed[0]:  # every chunk exactly once, in order
                raise QuantvizError(f"internal error: re-check chunk {i} arrived out of order")
            a, b = bounds[i]
            bs = s.reference.batch_size
            k = a // bs
            fout = s.reference.rows(a, b)
            y = s.eval_data.y[a:b] if s.eval_data.y is not None else None
            stream.update(fout, out, y, slice_aux(s.reference.aux_of(k), a - k * bs, b - k * bs))
            fed[0] += 1
            progress(i + 1, len(bounds), "evaluating")
            if on_estimate is not None and i + 1 < len(bounds):
                snap = stream.snapshot()
                snap["final"] = False
                snap["batches"] = (i + 1, len(bounds))
                on_estimate(snap)

        if not incremental:
            mode, changed = "full", None
            for i, out, _ in iterate_outputs(s.sim.qmodel, data, device=s.device, cancel=cancel):
                feed(i, out)
                del out  # not held while the next chunk runs
        else:
            changed = self.changed_layers(specs)
            if changed is None:
                mode = "baseline"
                self._rebase(specs, data, feed, cancel)
            else:
                mode = "suffix" if changed else "cached"
                for i, out in self.runner.iter_run(changed, cancel=cancel, commit=True):
                    self._base[i] = specs  # committed: this chunk's cache now reflects specs
                    feed(i, out)
        if fed[0] != len(bounds):
            raise QuantvizError(f"internal error: re-check saw {fed[0]} of {len(bounds)} chunks")
        metrics = stream.snapshot()["metrics"]
        if s.bundle.evaluate_fn is not None:
            metrics.update(user_metrics(s.bundle.evaluate_fn, s.sim.qmodel, s.eval_data))
        self.last = {"mode": mode, "changed": changed, "seconds": time.perf_counter() - t0,
                     "affected_fraction": (self.runner.affected_fraction(changed)
                                           if changed is not None and self.runner is not None else 1.0)}
        return metrics

    def _rebase(self, specs: dict, data: ChunkedData, feed, cancel) -> None:
        """A full pass that refills the cache for ``specs`` (the new base)."""
        s = self.session
        if self.runner is None or not self._tokens_valid():
            self.runner = SuffixRunner(s.sim.qmodel, data, batch_size=s.batch_size,
                                       budget_bytes=self.budget_bytes, device=s.device, trace=self.trace)
            if self.trace and not self.runner.incremental and find_blocks(s.sim.float_model) is not None:
                # not traceable (a Hugging Face transformer): re-run from the first changed block
                self.runner = BlockRunner(s.sim.qmodel, data, batch_size=s.batch_size,
                                          budget_bytes=self.budget_bytes, device=s.device)
            self._tokens = self._current_tokens()
        runner = self.runner
        runner.data = data
        self._base = None  # a cancelled or failed baseline leaves no usable cache

        def on_batch(done: int, total: int, message: str = "") -> None:
            feed(done - 1, runner.outputs[done - 1])

        runner.baseline(progress=on_batch, cancel=cancel)  # raises on cancel: _base stays None
        self._base = [specs] * len(data.bounds)


__all__ = ["Rechecker", "ChunkedData", "chunk_bounds", "default_budget", "parse_bytes", "available_memory",
           "CACHE_ENV"]
