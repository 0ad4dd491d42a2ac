"""Suffix recomputation: re-run only what a changed layer can influence.

A change to layer *k* cannot change anything computed before *k*. The
:class:`SuffixRunner` traces the model once with ``torch.fx``, runs the graph
node by node on every batch of a data set, and keeps node outputs in a cache
bounded by ``budget_bytes``. Afterwards, when some quantizable layers changed
(new fake-quantized weights or activation settings in the simulated model),
:meth:`SuffixRunner.run` recomputes only the nodes that depend on those
layers and reuses the cached values for everything else.

API (also meant for incremental re-checks in the session)::

    runner = SuffixRunner(sim.qmodel, data, batch_size=64, budget_bytes=512 << 20)
    runner.baseline()                  # full pass; caches node outputs
    changed = sim.apply(new_specs)     # the caller changes the model ...
    outs = runner.run(changed)         # ... list of output batches (float, cpu)
    for i, out in runner.iter_run(changed): ...   # streaming, per batch
    sim.apply(baseline_specs)          # restore before the next run()

Contract: between ``baseline()`` and ``run(changed)`` only the layers named
in ``changed`` may differ from the state the baseline was computed in (the
caller restores them afterwards, or calls ``baseline()`` again). Modules are
called through the given model, so forward pre-hooks (activation fake
quantization) apply, and the results equal a plain forward pass of the same
model on the same batches exactly.

When the model cannot be traced (Python control flow on tensors, keyword-only
inputs such as Hugging Face models), or the traced graph does not reproduce
the model's output on the first batch, the runner falls back to full forward
passes: ``runner.incremental`` is then ``False`` and ``runner.reason`` says why.

Stats: ``cache_bytes`` (held now), ``peak_cache_bytes``, ``nodes_total``,
``last_nodes_run`` (nodes evaluated by the last ``run``, all batches).
"""
from __future__ import annotations

import contextlib
import operator
import time
from typing import Callable, Iterable, Iterator, Mapping

import torch
from torch import nn

from ..model.data import Dataset, call_model, to_device
from ..errors import Cancelled, ModelError, QuantvizError

DEFAULT_BUDGET_BYTES = 512 << 20

_INPLACE_FUNCS = {operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv,
                  operator.imod, operator.ipow, operator.iand, operator.ior, operator.ixor,
                  operator.ilshift, operator.irshift, operator.imatmul, operator.setitem}


def _nbytes(v) -> int:
    if isinstance(v, torch.Tensor):
        return v.numel() * v.element_size()
    if isinstance(v, (tuple, list)):
        return sum(_nbytes(x) for x in v)
    if isinstance(v, Mapping):
        return sum(_nbytes(x) for x in v.values())
    return 0


def _clone(v):
    if isinstance(v, torch.Tensor):
        return v.clone()
    if isinstance(v, tuple):
        return tuple(_clone(x) for x in v)
    if isinstance(v, list):
        return [_clone(x) for x in v]
    if isinstance(v, dict):
        return {k: _clone(x) for k, x in v.items()}
    return v


def _model_error(exc: Exception) -> ModelError:
    first = str(exc).splitlines()[0] if str(exc) else ""
    return ModelError(f"model raised {type(exc).__name__}: {first}")


class SuffixRunner:
    """Runs ``model`` on ``data`` and re-runs only the suffix a change affects."""

    def __init__(self, model: nn.Module, data: Dataset, *, batch_size: int = 64,
                 budget_bytes: int = DEFAULT_BUDGET_BYTES, device: str | torch.device = "cpu",
                 trace: bool = True, readout=None):
        from ..model.readout import readout_of

        # a QuantSim's ``qmodel`` is a view: trace and run its base model in quantized mode
        self.readout = readout_of(model, readout)  # the output the metrics read
        self._ctx = getattr(model, "quantviz_context", None)
        self.model = getattr(model, "quantviz_base", model)
        self.data = data
        self.batch_size = batch_size
        self.budget_bytes = int(budget_bytes)
        self.device = torch.device(device)
        self.incremental = False
        self.reason = "tracing disabled"
        self.cache_bytes = 0
        self.peak_cache_bytes = 0
        self.last_nodes_run = 0
        self._cache: list[dict] = []  # per batch: node name -> value
        self._outputs: list[torch.Tensor] = []
        self._affected_memo: dict[frozenset, set] = {}
        self._evicted: set[str] = set()
        self.graph = None
        if trace:
            self._trace()

    # ------------------------------------------------------------ tracing
    def _trace(self) -> None:
        import torch.fx as fx

        from ..model.data import fixed_batch_of

        if fixed_batch_of(self.model) is not None:  # node by node it would see whole batches
            self.reason = "the program takes a fixed batch size (runs chunk by chunk)"
            return
        try:
            # an FX graph (torch.export program, converted TorchScript) is its own trace
            gm = self.model if isinstance(self.model, fx.GraphModule) else fx.symbolic_trace(self.model)
        except Exception as exc:  # untraceable: fall back to full passes
            self.reason = f"not traceable ({type(exc).__name__})"
            return
        self.graph = gm.graph
        self.nodes = list(gm.graph.nodes)
        self.order = {n: i for i, n in enumerate(self.nodes)}
        self.placeholders = [n for n in self.nodes if n.op == "placeholder"]
        self.output_node = next(n for n in self.nodes if n.op == "output")
        self._mods = dict(self.model.named_modules())
        self._attr_owner = gm  # get_attr targets resolve against the traced copy (shares parameters)
        self.has_mutation = any(self._mutates(n) for n in self.nodes)
        self.incremental = True
        self.reason = ""

    def _mode(self):
        return self._ctx() if self._ctx is not None else contextlib.nullcontext()

    def _mutates(self, n) -> bool:
        if n.op == "call_module":
            return bool(getattr(self._mods.get(n.target), "inplace", False))
        if n.op == "call_function":
            schema = getattr(n.target, "_schema", None)  # aten ops (export graphs): in-place ops write an argument
            if schema is not None and any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments):
                return True
            name = getattr(n.target, "__name__", "")
            return n.target in _INPLACE_FUNCS or name.endswith("_") or bool(n.kwargs.get("inplace", False))
        if n.op == "call_method":
            return str(n.target).endswith("_") or bool(n.kwargs.get("inplace", False))
        return False

    @property
    def nodes_total(self) -> int:
        return len(self.nodes) if self.graph is not None else 0

    # ------------------------------------------------------- evaluation
    def _bind_inputs(self, x) -> dict:
        env: dict = {}
        if isinstance(x, Mapping):
            for p in self.placeholders:
                if p.target in x:
                    env[p.name] = x[p.target]
                elif p.args:
                    env[p.name] = p.args[0]
                else:
                    raise ModelError(f"input {p.target!r} missing from the data")
        else:
            vals = list(x) if isinstance(x, (tuple, list)) else [x]
            for i, p in enumerate(self.placeholders):
                if i < len(vals):
                    env[p.name] = vals[i]
                elif p.args:
                    env[p.name] = p.args[0]
                else:
                    raise ModelError(f"input {p.target!r} missing from the data")
        return env

    def _exec(self, n, args, kwargs):
        if n.op == "call_module":
            return self._mods[n.target](*args, **kwargs)
        if n.op == "call_function":
            return n.target(*args, **kwargs)
        if n.op == "call_method":
            return getattr(args[0], n.target)(*args[1:], **kwargs)
        if n.op == "get_attr":
            obj = self._attr_owner
            for part in str(n.target).split("."):
                obj = getattr(obj, part)
            return obj
        raise AssertionError(n.op)

    def _eval_node(self, n, fetch: Callable):
        import torch.fx as fx

        args = fx.node.map_arg(n.args, fetch)
        kwargs = fx.node.map_arg(n.kwargs, fetch)
        if n.op == "output":
            return args[0]
        return self._exec(n, args, kwargs)

    # --------------------------------------------------------- baseline
    @torch.no_grad()
    def baseline(self, *, progress=None, cancel: Callable[[], bool] = lambda: False) -> list[torch.Tensor]:
        """Run everything once, cache node outputs (within budget); returns the outputs."""
        self._cache, self._outputs = [], []
        self._affected_memo.clear()
        self.cache_bytes = 0
        total = self.data.num_batches(self.batch_size)
        if self.incremental:
            try:
                with self._mode():
                    self._baseline_graph(total, progress, cancel)
            except Cancelled:
                raise
            except _GraphMismatch as exc:
                self.incremental = False
                self.reason = str(exc)
                self._cache, self._outputs, self.cache_bytes = [], [], 0
                self._evicted = set()
        if not self.incremental:
            for i, (x, _) in enumerate(self.data.batches(self.batch_size)):
                if cancel():
                    raise Cancelled()
                self._outputs.append(self._full_pass(x))
                if progress:
                    progress(i + 1, total, "baseline")
        self.last_nodes_run = self.nodes_total * total
        return list(self._outputs)

    def _full_pass(self, x) -> torch.Tensor:
        try:
            with self._mode():
                out = self.readout.pick(call_model(self.model, to_device(x, self.device)))
        except QuantvizError:
            raise
        except Exception as exc:
            raise _model_error(exc) from exc
        return out.detach().float().cpu()

    def _candidates(self) -> set:
        """Nodes worth caching: the union over layers of the values a change to
        that layer reads from outside its suffix (a change to several layers
        only ever reads from this union)."""
        from ..model.layers import is_quantizable

        want = set()
        for name, mod in self.model.named_modules():
            if not name or not is_quantizable(mod):
                continue
            aff = self.affected([name])
            for d in aff:
                for a in d.all_input_nodes:
                    if a not in aff and a.op != "get_attr":
                        want.add(a)
        return want

    def _baseline_graph(self, total, progress, cancel) -> None:
        cand = self._candidates()
        cost = {n: 0.0 for n in self.nodes}
        sizes = {n: 0 for n in self.nodes}
        self._evicted = set()
        self._cache = []
        for i, (x, _) in enumerate(self.data.batches(self.batch_size)):
            if cancel():
                raise Cancelled()
            env = self._bind_inputs(to_device(x, self.device))
            kept: dict = {}
            self._cache.append(kept)
            for p in self.placeholders:
                if p in cand and p.name not in self._evicted:
                    self._store(kept, p, env[p.name], cand, cost, sizes)
            for n in self.nodes:
                if n.op == "placeholder":
                    continue
                t0 = time.perf_counter()
                try:
                    v = self._eval_node(n, lambda a: env[a.name])
                except QuantvizError:
                    raise
                except Exception as exc:
                    raise _model_error(exc) from exc
                cost[n] += time.perf_counter() - t0
                env[n.name] = v
                if n in cand and n.name not in self._evicted:
                    self._store(kept, n, v, cand, cost, sizes)
            out = self.readout.pick(env[self.output_node.name]).detach().float().cpu()
            if i == 0:
                ref = self._full_pass(x)
                if ref.shape != out.shape or not torch.equal(ref, out):
                    raise _GraphMismatch("traced graph does not reproduce the model's output")
            self._outputs.append(out)
            del env
            self._keep_within_budget(cand, cost, sizes)
            if progress:
                progress(i + 1, total, "baseline")

    def _clone_if_mutating(self, v):
        return _clone(v) if self.has_mutation else v

    def _store(self, kept: dict, n, v, cand, cost, sizes) -> None:
        """Cache ``v`` for node ``n`` only if it fits the budget (after evicting less
        useful nodes); a node that does not fit is evicted, so the cache never
        holds more than ``budget_bytes``."""
        size = _nbytes(v)
        if self.cache_bytes + size > self.budget_bytes:
            self._keep_within_budget(cand, cost, sizes, reserve=size)
        if n.name in self._evicted or self.cache_bytes + size > self.budget_bytes:
            self._evicted.add(n.name)
            for k in self._cache:
                self.cache_bytes -= _nbytes(k.pop(n.name, None))
            return
        # copy now when the graph mutates in place: a later op must not change the cached value
        kept[n.name] = self._clone_if_mutating(v)
        sizes[n] += size
        self.cache_bytes += size
        self.peak_cache_bytes = max(self.peak_cache_bytes, self.cache_bytes)

    def _keep_within_budget(self, cand, cost, sizes, reserve: int = 0) -> None:
        """Evict the least useful cached nodes (lowest recompute time saved per byte)
        until ``reserve`` more bytes fit."""
        self._recount()
        if self.cache_bytes + reserve <= self.budget_bytes:
            return
        prefix = self._prefix_cost(cost)
        order = sorted((n for n in cand if n.name not in self._evicted),
                       key=lambda n: prefix[n] / max(sizes[n], 1))
        for n in order:
            if self.cache_bytes + reserve <= self.budget_bytes:
                break
            self._evicted.add(n.name)
            for kept in self._cache:
                self.cache_bytes -= _nbytes(kept.pop(n.name, None))

    def _prefix_cost(self, cost) -> dict:
        """Time to recompute each node from the inputs (sum over its ancestors)."""
        anc: dict = {}
        out = {}
        for n in self.nodes:
            s = {n}
            for a in n.all_input_nodes:
                s |= anc[a]
            anc[n] = s
            out[n] = sum(cost[m] for m in s)
        return out

    def _recount(self) -> None:
        self.cache_bytes = sum(_nbytes(v) for kept in self._cache for v in kept.values())
        self.peak_cache_bytes = max(self.peak_cache_bytes, self.cache_bytes)

    # -------------------------------------------------------- suffixes
    def _descendants(self, starts: Iterable) -> set:
        seen = set()
        stack = list(starts)
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            stack.extend(n.users)
        return seen

    def layer_nodes(self, name: str) -> list:
        """Graph nodes that use layer ``name`` (its call, an enclosing module's call, its parameters)."""
        pre = name + "."
        return [n for n in self.nodes if n.op in ("call_module", "get_attr")
                and (n.target == name or str(n.target).startswith(pre) or name.startswith(str(n.target) + "."))]

    def _sharing(self, name: str) -> set[str]:
        """``name`` and every module holding one of its parameters (tied weights)."""
        if not hasattr(self, "_param_users"):
            users: dict[int, set[str]] = {}
            for mname, mod in self.model.named_modules():
                for p in mod.parameters(recurse=False):
                    users.setdefault(id(p), set()).add(mname)
            self._param_users = users
        try:
            mod = self.model.get_submodule(name)
        except AttributeError:
            return {name}
        out = {name}
        for p in mod.parameters(recurse=False):
            out |= self._param_users.get(id(p), set())
        return out

    def affected(self, changed: Iterable[str]) -> set:
        key = frozenset(changed)
        hit = self._affected_memo.get(key)
        if hit is None:
            names = set().union(*(self._sharing(n) for n in key)) if key else set()
            starts = [n for name in names for n in self.layer_nodes(name)]
            hit = self._descendants(starts)
            self._affected_memo[key] = hit
        return hit

    def affected_fraction(self, changed: Iterable[str]) -> float:
        if not self.incremental:
            return 1.0
        return len(self.affected(changed)) / max(len(self.nodes), 1)

    @torch.no_grad()
    def iter_run(self, changed: Iterable[str], *, cancel: Callable[[], bool] = lambda: False,
                 commit: bool = False) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(batch_index, output)`` of the model in its current state.

        ``commit=True`` also stores each batch's recomputed values (and output)
        in the cache before yielding it, so afterwards that batch's cache
        reflects the current state (a batch is committed whole or not at all;
        values that cannot reach the output may stay stale, harmlessly)."""
        if not self._outputs:
            raise QuantvizError("SuffixRunner.run() before baseline()")
        changed = list(changed)
        self.last_nodes_run = 0
        if not self.incremental:
            for i, (x, _) in enumerate(self.data.batches(self.batch_size)):
                if cancel():
                    raise Cancelled()
                yield i, self._full_pass(x)
            return
        aff = self.affected(changed)
        if self.output_node not in aff:
            for i, out in enumerate(self._outputs):
                if cancel():
                    raise Cancelled()
                yield i, out
            return
        todo = [n for n in self.nodes if n in aff]
        batches = self.data.batches(self.batch_size) if self._evicted_any() else None
        for i in range(len(self._outputs)):
            if cancel():
                raise Cancelled()
            x = next(batches)[0] if batches is not None else None
            with self._mode():
                out = self._run_batch(i, todo, aff, x, commit=commit)
            yield i, out

    def run(self, changed: Iterable[str], *, cancel: Callable[[], bool] = lambda: False) -> list[torch.Tensor]:
        return [out for _, out in self.iter_run(changed, cancel=cancel)]

    def _evicted_any(self) -> bool:
        return bool(self._evicted)

    def _run_batch(self, i: int, todo: list, aff: set, x, commit: bool = False) -> torch.Tensor:
        cached = self._cache[i]
        env: dict = {}
        fresh: dict | None = {} if commit else None  # new values of cached nodes, stored at the end
        inputs = self._bind_inputs(to_device(x, self.device)) if x is not None else {}
        remaining = {n: sum(1 for u in n.users if u in aff) for n in todo}

        def value_of(a):
            if a.name in env:
                return env[a.name]
            if a.name in cached:
                v = cached[a.name]
                return _clone(v) if self.has_mutation else v
            if a.op == "placeholder":
                return inputs[a.name]
            # evicted and unaffected: recompute from its own inputs (memoised per batch)
            v = self._eval_node(a, value_of)
            self.last_nodes_run += 1
            env[a.name] = v
            return v

        try:
            for n in todo:
                v = self._eval_node(n, value_of)
                self.last_nodes_run += 1
                env[n.name] = v
                if fresh is not None and n.name in cached:
                    fresh[n.name] = self._clone_if_mutating(v)
                for a in n.all_input_nodes:  # free affected values nobody needs any more
                    if a in remaining:
                        remaining[a] -= 1
                        if remaining[a] == 0 and a is not self.output_node:
                            env.pop(a.name, None)
        except QuantvizError:
            raise
        except Exception as exc:
            raise _model_error(exc) from exc
        out = self.readout.pick(env[self.output_node.name]).detach().float().cpu()
        if fresh is not None:
            cached.update(fresh)
            self._outputs[i] = out
        return out

    @property
    def outputs(self) -> list[torch.Tensor]:
        """The baseline outputs (float, cpu), one per batch."""
        return list(self._outputs)


class _GraphMismatch(Exception):
    pass


__all__ = ["SuffixRunner", "DEFAULT_BUDGET_BYTES"]
