"""Suffix re-runs of a model built from a stack of blocks (a transformer's decoder layers).

A Hugging Face language model cannot be traced by ``torch.fx`` (keyword inputs,
Python control flow), so :class:`~.incremental.SuffixRunner` falls back to full
passes on it. Its decoder layers, though, run one after the other from an
``nn.ModuleList``, and a change to a layer inside block *k* cannot change what
blocks before *k* computed. :class:`BlockRunner` uses that:

* the baseline runs the model chunk by chunk and keeps the output of chosen
  blocks (*checkpoints*: every block when they fit ``budget_bytes``, else
  evenly spaced ones, always the last);
* after an edit whose first changed layer sits in block *s* (a layer outside
  every block counts at its place in the call order: an embedding before the
  first block, the output layer after the last), each chunk re-runs from the
  last checkpoint *c* < *s*: blocks 0..*c* return the kept output of block
  *c* at once (the embedding and the position tables still run, cheaply), the
  blocks after it and the model's head run as usual, through the same model
  call, so hooks, masks and position embeddings are the model's own;
* ``commit=True`` stores the recomputed checkpoints, so the cache follows the
  current config.

The block inputs a re-run sees are the bits the full pass saw, so its outputs
equal a plain forward pass exactly. The baseline checks that on its first
chunk (blocks called once each, in order; a short-cut re-run reproduces the
output), and otherwise falls back to full passes (``incremental`` False,
``reason`` says why), like the SuffixRunner.

It answers the SuffixRunner's interface (``baseline``, ``iter_run``,
``outputs``, ``affected_fraction``, ``cache_bytes``...).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from ..errors import Cancelled, ModelError, QuantvizError
from ..model.data import Dataset, call_model, to_device
from .incremental import DEFAULT_BUDGET_BYTES, _clone, _nbytes

MIN_BLOCKS = 2


def find_blocks(model: nn.Module) -> tuple[str, list[nn.Module]] | None:
    """The ``nn.ModuleList`` of blocks holding the most quantizable layers (each of at least
    ``MIN_BLOCKS`` children holding some), as (its name, its children); None when there is none."""
    from ..model.layers import is_quantizable

    best = None
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.ModuleList) or len(mod) < MIN_BLOCKS:
            continue
        counts = [sum(1 for m in child.modules() if is_quantizable(m)) for child in mod]
        if min(counts) == 0:
            continue
        if best is None or sum(counts) > best[0]:
            best = (sum(counts), name, list(mod))
    return None if best is None else (best[1], best[2])


def _model_error(exc: Exception) -> ModelError:
    first = str(exc).splitlines()[0] if str(exc) else ""
    return ModelError(f"model raised {type(exc).__name__}: {first}")


class BlockRunner:
    """Runs ``model`` on ``data`` and re-runs only the blocks from the first changed one."""

    def __init__(self, model: nn.Module, data: Dataset, *, batch_size: int = 64,
                 budget_bytes: int = DEFAULT_BUDGET_BYTES, device: str | torch.device = "cpu", readout=None):
        from ..model.layers import is_quantizable
        from ..model.readout import readout_of

        self.readout = readout_of(model, readout)
        self._ctx = getattr(model, "quantviz_context", None)
        self.model = getattr(model, "quantviz_base", model)
        self.data = data
        self.batch_size = batch_size
        self.budget_bytes = int(budget_bytes)
        self.device = torch.device(device)
        self.cache_bytes = 0
        self.peak_cache_bytes = 0
        self.last_nodes_run = 0  # blocks run by the last run, all chunks
        self.last_start = 0  # the block the last run restarted from (0: a full pass)
        self._outputs: list[torch.Tensor] = []
        self._kept: list[dict[int, object]] = []  # per chunk: block index -> its output
        self.checkpoints: list[int] = []
        self._place: dict[str, int] = {}  # quantizable layer -> the block it sits in / the blocks before its call
        found = find_blocks(self.model)
        self.blocks: list[nn.Module] = found[1] if found else []
        self.blocks_name = found[0] if found else ""
        self.incremental = bool(self.blocks)
        self.reason = "" if self.blocks else "no stack of blocks (nn.ModuleList) holds the layers"
        self._index = {id(b): i for i, b in enumerate(self.blocks)}
        self._in_block: dict[str, int] = {}
        pre = self.blocks_name + "."
        for name, mod in self.model.named_modules():
            if is_quantizable(mod) and name.startswith(pre):
                self._in_block[name] = int(name[len(pre):].split(".", 1)[0])
        self._quantizable = [n for n, m in self.model.named_modules() if n and is_quantizable(m)]

    # ------------------------------------------------------------ helpers
    def _mode(self):
        return self._ctx() if self._ctx is not None else contextlib.nullcontext()

    @property
    def nodes_total(self) -> int:
        return len(self.blocks)

    @property
    def outputs(self) -> list[torch.Tensor]:
        return list(self._outputs)

    def _call(self, x) -> torch.Tensor:
        try:
            with self._mode():
                out = self.readout.pick(call_model(self.model, to_device(x, self.device)))
        except QuantvizError:
            raise
        except Exception as exc:
            raise _model_error(exc) from exc
        return out.detach().float().cpu()

    @contextlib.contextmanager
    def _recording(self, store: set[int], into: dict, order: list | None = None):
        """Keep the outputs of blocks in ``store`` (cloned) in ``into``; log the call order in ``order``."""
        hooks = []
        for i, b in enumerate(self.blocks):
            if i in store:
                hooks.append(b.register_forward_hook(
                    lambda m, a, out, _i=i: into.__setitem__(_i, _clone(out.detach() if isinstance(out, torch.Tensor)
                                                                         else out))))
        if order is not None:
            for i, b in enumerate(self.blocks):
                hooks.append(b.register_forward_pre_hook(lambda m, a, _i=i: order.append(("block", _i))))
            mods = dict(self.model.named_modules())
            for n in self._quantizable:
                if n not in self._in_block:
                    hooks.append(mods[n].register_forward_pre_hook(lambda m, a, _n=n: order.append(("layer", _n))))
        try:
            yield
        finally:
            for h in hooks:
                h.remove()

    @contextlib.contextmanager
    def _short_cut(self, c: int, value):
        """Blocks 0..c return ``value`` (block c's kept output) without computing."""
        saved = []
        for b in self.blocks[: c + 1]:
            saved.append(vars(b).get("forward"))
            b.forward = lambda *a, **k: _clone(value)
        try:
            yield
        finally:
            for b, f in zip(self.blocks[: c + 1], saved):
                if f is None:
                    del b.forward
                else:
                    b.forward = f

    # --------------------------------------------------------- baseline
    @torch.no_grad()
    def baseline(self, *, progress=None, cancel: Callable[[], bool] = lambda: False) -> list[torch.Tensor]:
        """Run everything once, keep the checkpoints' outputs (within budget); returns the outputs."""
        self._outputs, self._kept, self.cache_bytes = [], [], 0
        total = self.data.num_batches(self.batch_size)
        n = len(self.blocks)
        for i, (x, _) in enumerate(self.data.batches(self.batch_size)):
            if cancel():
                raise Cancelled()
            kept: dict = {}
            if not self.incremental:
                out = self._call(x)
            elif i == 0:
                order: list = []
                with self._recording(set(range(n)), kept, order):
                    out = self._call(x)
                self._plan(x, kept, order)
                if self.incremental:
                    self._check(x, kept, out)
                kept = {k: v for k, v in kept.items() if k in self.checkpoints} if self.incremental else {}
            else:
                with self._recording(set(self.checkpoints), kept):
                    out = self._call(x)
            self._kept.append(kept)
            self._outputs.append(out)
            self._recount()
            if progress:
                progress(i + 1, total, "baseline")
        self.last_nodes_run, self.last_start = n * total, 0
        return list(self._outputs)

    def _plan(self, x, kept: dict, order: list) -> None:
        """From the first chunk: where each layer outside the blocks runs, and which blocks to keep."""
        n = len(self.blocks)
        blocks_seen = [i for kind, i in order if kind == "block"]
        if blocks_seen != list(range(n)):
            self._fall_back("the blocks do not run once each, in order")
            return
        seen_blocks = 0
        for kind, v in order:
            if kind == "block":
                seen_blocks += 1
            elif v not in self._place:
                self._place[v] = seen_blocks  # the blocks that ran before its first call
        per_block = max(_nbytes(v) for v in kept.values()) if kept else 0
        rows = _rows(x)
        total = per_block * max(1, len(self.data)) / rows  # the output of one block over all the data
        fit = n if total <= 0 else int(self.budget_bytes // total)
        if fit <= 0:
            self._fall_back(f"one block's output over the data ({total / 2**20:.0f} MiB) exceeds the cache budget")
            return
        if fit >= n:
            self.checkpoints = list(range(n))
        else:
            self.checkpoints = sorted({round((j + 1) * n / fit) - 1 for j in range(fit)})

    def _check(self, x, kept: dict, out: torch.Tensor) -> None:
        """A short-cut re-run of the first chunk must give the full pass's output exactly."""
        inner = [c for c in self.checkpoints if c < len(self.blocks) - 1]
        c = max(inner) if inner else max(self.checkpoints)
        with self._short_cut(c, kept[c]):
            again = self._call(x)
        if again.shape != out.shape or not torch.equal(again, out):
            self._fall_back("re-running from a kept block output does not reproduce the model's output")

    def _fall_back(self, why: str) -> None:
        self.incremental, self.reason, self.checkpoints = False, why, []

    def _recount(self) -> None:
        self.cache_bytes = sum(_nbytes(v) for kept in self._kept for v in kept.values())
        self.peak_cache_bytes = max(self.peak_cache_bytes, self.cache_bytes)

    # -------------------------------------------------------- suffixes
    def start_block(self, changed: Iterable[str]) -> int:
        """The first block an edit of ``changed`` can change (len(blocks): none of them)."""
        n = len(self.blocks)
        s = n
        for name in changed:
            if name in self._in_block:
                s = min(s, self._in_block[name])
            else:
                s = min(s, self._place.get(name, 0))
        return s

    def restart_from(self, changed: Iterable[str]) -> int | None:
        """The checkpoint a re-run after an edit of ``changed`` starts from (None: a full pass)."""
        if not self.incremental or not self._kept:
            return None
        s = self.start_block(changed)
        before = [c for c in self.checkpoints if c < s]
        return max(before) if before else None

    def affected_fraction(self, changed: Iterable[str]) -> float:
        changed = list(changed)
        if not changed:
            return 0.0
        c = self.restart_from(changed)
        n = len(self.blocks)
        return 1.0 if c is None or n == 0 else (n - 1 - c) / n

    @torch.no_grad()
    def iter_run(self, changed: Iterable[str], *, cancel: Callable[[], bool] = lambda: False,
                 commit: bool = False) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(chunk_index, output)`` of the model in its current state, re-running each chunk
        from the last checkpoint before the first changed block (``commit``: keep what it recomputed)."""
        if not self._outputs:
            raise QuantvizError("BlockRunner.run() before baseline()")
        changed = list(changed)
        n = len(self.blocks)
        self.last_nodes_run = 0
        if not changed:
            self.last_start = n
            for i, out in enumerate(self._outputs):
                if cancel():
                    raise Cancelled()
                yield i, out
            return
        c = self.restart_from(changed)
        self.last_start = 0 if c is None else c + 1
        for i, (x, _) in enumerate(self.data.batches(self.batch_size)):
            if cancel():
                raise Cancelled()
            fresh: dict = {}
            store = {k for k in self.checkpoints if c is None or k > c} if commit else set()
            with self._recording(store, fresh):
                if c is None:
                    out = self._call(x)
                else:
                    with self._short_cut(c, self._kept[i][c]):
                        out = self._call(x)
            self.last_nodes_run += n - self.last_start
            if commit:
                self._kept[i].update(fresh)
                self._outputs[i] = out
            yield i, out

    def run(self, changed: Iterable[str], *, cancel: Callable[[], bool] = lambda: False) -> list[torch.Tensor]:
        return [out for _, out in self.iter_run(changed, cancel=cancel)]


def _rows(x) -> int:
    from ..model.data import batch_len

    return max(1, int(batch_len(x)))


__all__ = ["BlockRunner", "find_blocks"]
