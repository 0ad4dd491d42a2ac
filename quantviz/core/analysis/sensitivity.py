"""Per-layer sensitivity: which layers lose the most when quantized.

Methods (each ``fn(parts, ..., progress, cancel)``, results JSON-able):

* ``e2e``: only this layer quantized, everything else float; model metrics.
* ``loo``: every layer quantized at the tested setting except this one.
* ``local`` and ``hessian``: proxies without end-to-end evaluations per cell
  (:mod:`.proxies`).

Weight settings keep the config's granularity / range and vary the bits, with
activations float; activation settings (``act_bits``) keep weights float. The
e2e and loo sweeps reuse cached activations (:class:`SuffixRunner`), so a
(layer, bits) cell costs only the layers from that one onward.

Layers that share a weight tensor (or are tied by the caller) are measured as
one unit and report the same numbers.

These functions take :class:`Parts` (the simulation, data, reference and base
specs) and return results; they never store anything. The session keeps the
results and tells its listeners (``Session.run_sensitivity``); every method
runs by name through :func:`quantviz.core.analysis.methods.run`.
"""
from __future__ import annotations


import hashlib
import json
import time
from dataclasses import dataclass, replace
from typing import Callable

import torch

from .candidates import as_json, weight_at
from ..model.data import Dataset
from ..errors import Cancelled, QuantvizError
from ..numerics.sqnr import SQNR_CAP_DB
from ..sim.evaluate import (FloatReference, evaluate_quantized, higher_is_better,
                       primary_metric, user_metrics)
from ..sim.fakequant import QuantSim
from ..sim.blocks import BlockRunner, find_blocks
from ..sim.incremental import DEFAULT_BUDGET_BYTES, SuffixRunner
from ..model.lmmetrics import cat_aux
from ..progress import Progress, null_progress
from ..numerics.spec import FLOAT_SPEC, ActSpec, LayerSpec

DEFAULT_BITS = (2, 3, 4, 6, 8)
DEFAULT_ACT_BITS = (4, 8)
METHODS = ("e2e", "loo", "local", "hessian")


class SensitivityError(QuantvizError):
    pass


@dataclass
class Parts:
    """What the sensitivity and search functions need (``Session.parts()`` builds it)."""

    sim: QuantSim
    data: Dataset  # evaluation data (e2e / loo / search)
    calib: Dataset  # calibration data (local / hessian)
    reference: FloatReference
    base_specs: dict[str, LayerSpec]  # the config the settings are derived from
    batch_size: int = 64
    device: str = "cpu"
    evaluate_fn: Callable | None = None
    budget_bytes: int = DEFAULT_BUDGET_BYTES
    ties: tuple = ()
    metric: str | None = None  # the metric drops are measured in (default: primary_metric)

    def __post_init__(self) -> None:
        if self.metric is not None and self.reference is not None and self.metric not in self.reference.metrics:
            have = ", ".join(sorted(self.reference.metrics))
            raise SensitivityError(f"metric {self.metric!r} is not measured for this model (choose from {have})")


# ------------------------------------------------------------ helpers
def drops(base: dict, metrics: dict) -> dict:
    """How much worse each metric is than ``base`` (positive = worse)."""
    out = {}
    for k, v in metrics.items():
        b = base.get(k)
        if b is None or v is None or (k == "sqnr_db" and b >= SQNR_CAP_DB):
            continue
        out[k] = (b - v) if higher_is_better(k) else (v - b)
    return out


def tie_groups(sim: QuantSim, ties=()) -> list[list[str]]:
    """Groups of layers that must get one bit-width: shared weights and ``ties``."""
    parent = {l.name: l.name for l in sim.layers}

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(a, b):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[rb] = ra

    by_weight: dict = {}
    for l in sim.layers:
        w = sim.float_weight(l.name)
        key = (w.untyped_storage().data_ptr(), w.storage_offset(), tuple(w.shape))
        if key in by_weight:
            union(by_weight[key], l.name)
        else:
            by_weight[key] = l.name
    for t in ties:
        t = list(t)
        for n in t:
            if n not in parent:
                raise SensitivityError(f"tie: no quantizable layer named {n!r}")
        for n in t[1:]:
            union(t[0], n)
    groups: dict[str, list[str]] = {}
    for l in sim.layers:
        groups.setdefault(find(l.name), []).append(l.name)
    return list(groups.values())


def weight_setting(base: LayerSpec, bits) -> LayerSpec:
    """The layer's weight at ``bits`` (an int, None, or a :class:`~.candidates.Candidate`), activations float."""
    return LayerSpec(weight=weight_at(base.weight, bits), activation=ActSpec(bits=None))


def act_setting(base: LayerSpec, bits: int | None) -> LayerSpec:
    a = base.activation
    return LayerSpec(weight=replace(base.weight, bits=None), activation=replace(a, bits=bits))


def fingerprint(p: Parts) -> str:
    blob = {n: {"w": weight_setting(s, 0).weight.to_dict(), "a": act_setting(s, 0).activation.to_dict()}
            for n, s in sorted(p.base_specs.items())}
    blob["_data"] = [len(p.data), len(p.calib), p.batch_size, [list(t) for t in p.ties]]
    if p.metric:
        blob["_metric"] = p.metric
    return hashlib.sha1(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _stream_metrics(outputs, p: Parts, cancel) -> dict:
    """Metrics of the quantized outputs; one metric update over all batches
    (the same sums as batch by batch, in a different order)."""
    outs = []
    for _, out in outputs:
        if cancel():
            raise Cancelled("sensitivity cancelled")
        outs.append(out)
    ref = p.reference
    cat = getattr(ref, "_qv_cat", None)
    if cat is None or cat[0] != len(ref.outputs):
        labels = None
        if all(y is not None for y in ref.labels):
            labels = torch.cat([torch.as_tensor(y) for y in ref.labels])
        cat = (len(ref.outputs), torch.cat([ref.output(i) for i in range(len(ref.outputs))]), labels,
               cat_aux(list(ref.aux)))
        if all(o is not None for o in ref.outputs):  # a reference over its memory budget is not kept whole
            ref._qv_cat = cat
    stream = ref.stream()
    stream.update(cat[1], torch.cat(outs), cat[2], cat[3])
    m = stream.snapshot()["metrics"]
    if p.evaluate_fn is not None:
        m.update(user_metrics(p.evaluate_fn, p.sim.qmodel, p.data))
    return m


# ------------------------------------------------------ e2e and loo
class CellRunner:
    """Measures single cells of an ``e2e`` / ``loo`` sweep on one simulation.

    A cell is ``(kind, bits, group)``: the metrics with ``group`` changed on top of
    the sweep's base (all float for e2e; everything at ``kind``/``bits`` for loo).
    The base's activations are cached (:class:`SuffixRunner`) and rebuilt only when
    the base changes, so cells of one setting cost suffixes. The local sweep and a
    Ray worker (:mod:`.raysweep`) run the same code, so their numbers agree.
    """

    def __init__(self, parts: Parts, method: str, *, naive: bool = False):
        self.p, self.method, self.naive = parts, method, naive
        self.runner = SuffixRunner(parts.sim.qmodel, parts.data, batch_size=parts.batch_size,
                                   budget_bytes=parts.budget_bytes, device=parts.device)
        if not naive and not self.runner.incremental and find_blocks(parts.sim.float_model) is not None:
            # a transformer that cannot be traced: cells re-run from their layer's decoder block
            self.runner = BlockRunner(parts.sim.qmodel, parts.data, batch_size=parts.batch_size,
                                      budget_bytes=parts.budget_bytes, device=parts.device)
        if naive:
            self.runner.incremental = False
        self.state = None
        self.base: dict = {}

    def setting(self, kind, b, name):
        fn = weight_setting if kind == "w" else act_setting
        return fn(self.p.base_specs[name], b)

    def _evaluate(self, cancel):
        p = self.p
        return evaluate_quantized(p.sim.qmodel, p.data, p.reference, device=p.device, evaluate_fn=p.evaluate_fn,
                                  cancel=cancel)

    def set_base(self, kind, b, cancel=lambda: False) -> None:
        key = "float" if self.method == "e2e" else (kind, int(b))
        if self.state == key:
            return
        self.state = None
        sim = self.p.sim
        self.base = {} if self.method == "e2e" else {n: self.setting(kind, b, n) for n in sim.by_name}
        sim.apply(self.base)
        if not self.naive:
            self.runner.baseline(cancel=cancel)
        self.state = key

    def base_metrics(self, kind, b, cancel=lambda: False) -> dict:
        """loo: the metrics with every layer at ``kind``/``b``."""
        with torch.no_grad():
            self.set_base(kind, b, cancel)
            if self.naive:
                return self._evaluate(cancel)
            return _stream_metrics(enumerate(self.runner.outputs), self.p, cancel)

    def cell(self, kind, b, group, cancel=lambda: False) -> dict:
        """The metrics of one cell (``group`` quantized for e2e, kept float for loo)."""
        if cancel():
            raise Cancelled("sensitivity cancelled")
        sim = self.p.sim
        with torch.no_grad():
            self.set_base(kind, b, cancel)
            specs = dict(self.base)
            for n in group:
                specs[n] = self.setting(kind, b, n) if self.method == "e2e" else FLOAT_SPEC
            changed = sim.apply(specs, cancel=cancel)  # a candidate's algorithm runs here
            try:
                if self.naive:
                    return self._evaluate(cancel)
                return _stream_metrics(self.runner.iter_run(changed, cancel=cancel), self.p, cancel)
            finally:
                sim.apply(self.base)


def cell_key(method: str, kind: str, b, group) -> str:
    """The cache key of one sweep cell (``group`` None: loo's all-quantized base)."""
    return f"{method}/{kind}{b}/" + ("__base__" if group is None else group[0])


def sweep(parts: Parts, method: str = "e2e", *, bits=DEFAULT_BITS, act_bits=(), naive: bool = False,
          store=None, executor=None, progress: Progress = null_progress,
          cancel: Callable[[], bool] = lambda: False) -> dict:
    """The ``e2e`` or ``loo`` sweep; ``naive`` runs full forward passes (for checks).

    ``store`` (``get(key) -> dict | None``, ``put(key, dict)``) keeps every cell as it
    is measured, so an interrupted sweep resumes where it stopped; ``executor``
    (``run(calls, cancel) -> iterator of (index, result)``, see :mod:`.raysweep`)
    measures the missing cells elsewhere, in any order."""
    p = parts
    if method not in ("e2e", "loo"):
        raise SensitivityError(f"sweep: unknown method {method!r} (e2e or loo)")
    sim = p.sim
    groups = tie_groups(sim, p.ties)
    infos = sim.by_name
    act_ok = [g for g in groups if any(infos[n].has_activation_input for n in g)]
    kinds = [("w", b, groups) for b in bits] + [("a", b, act_ok) for b in act_bits]
    t0 = time.perf_counter()
    # every measurement in order: (key, kind, bits, group or None for loo's base)
    todo = []
    for kind, b, gs in kinds:
        if method == "loo":
            todo.append((cell_key(method, kind, b, None), kind, b, None))
        todo += [(cell_key(method, kind, b, g), kind, b, g) for g in gs]
    total = len(todo) + (1 if method == "e2e" else 0)
    found = {}
    if store is not None:
        for key, *_ in todo:
            hit = store.get(key)
            if hit is not None:
                found[key] = hit
    done = len(found)
    missing = [t for t in todo if t[0] not in found]
    cr = None
    if method == "e2e":
        if missing and executor is None:
            cr = CellRunner(p, method, naive=naive)
            cr.set_base("w", 0, cancel)
        done += 1
        progress(done, total, "float baseline")

    def label(kind, b, g):
        return f"{'W' if kind == 'w' else 'A'}{b}" if g is None else f"{g[0]} at {'W' if kind == 'w' else 'A'}{b}"

    def record(t, metrics):
        nonlocal done
        found[t[0]] = metrics
        if store is not None:
            store.put(t[0], metrics)
        done += 1
        progress(done, total, ("all layers at " if t[3] is None else "") + label(*t[1:]))

    try:
        if executor is not None and missing:
            calls = [("base_metrics" if g is None else "cell", (method, kind, b, g)) for _, kind, b, g in missing]
            for i, metrics in executor.run(calls, cancel=cancel):
                record(missing[i], metrics)
        else:
            for t in missing:
                _, kind, b, g = t
                if cancel():
                    raise Cancelled("sensitivity cancelled")
                if cr is None:
                    cr = CellRunner(p, method, naive=naive)
                m = cr.base_metrics(kind, b, cancel) if g is None else cr.cell(kind, b, g, cancel)
                record(t, m)
    finally:
        sim.apply({} if method == "e2e" else p.base_specs)
    cells: dict[str, dict] = {n: {"w": {}, "a": {}} for n in infos}
    base_by: dict = {}
    for key, kind, b, g in todo:
        m = found[key]
        if g is None:
            base_by[f"{kind}{b}"] = m
            continue
        ref = p.reference.metrics if method == "e2e" else base_by[f"{kind}{b}"]
        d = drops(ref, m) if method == "e2e" else drops(m, ref)  # loo: what quantizing it costs
        for n in g:
            cells[n][kind][str(b)] = {"metrics": m, "drop": d}
    res = result_of(p, method, bits, act_bits, groups, cells, time.perf_counter() - t0)
    res["incremental"] = bool(not naive and (cr is None or cr.runner.incremental))
    res["cached_cells"] = len(todo) - len(missing)
    if method == "loo":
        res["baseline"]["by_bits"] = {k[1:]: v for k, v in base_by.items() if k[0] == "w"}
        res["baseline"]["by_act_bits"] = {k[1:]: v for k, v in base_by.items() if k[0] == "a"}
    return res


def result_of(p: Parts, method, bits, act_bits, groups, cells, seconds) -> dict:
    group_of = {n: g for g in groups for n in g}
    layers = []
    for l in p.sim.layers:
        entry = {"name": l.name, "type": l.type, "params": l.params, "weight_numel": l.weight_numel,
                 "results": cells[l.name]["w"]}
        if len(group_of[l.name]) > 1:
            entry["group"] = group_of[l.name]
        if cells[l.name]["a"]:
            entry["act_results"] = cells[l.name]["a"]
        layers.append(entry)
    return {"method": method, "bits": as_json(bits), "act_bits": [int(b) for b in act_bits],
            "metric": p.metric or primary_metric(p.reference.metrics), "baseline": {"metrics": dict(p.reference.metrics)},
            "layers": layers, "seconds": seconds, "key": fingerprint(p)}


__all__ = ["DEFAULT_BITS", "DEFAULT_ACT_BITS", "METHODS", "Parts", "sweep", "result_of",
           "tie_groups", "primary_metric", "CellRunner", "cell_key", "drops", "weight_setting", "act_setting", "fingerprint", "SensitivityError"]
