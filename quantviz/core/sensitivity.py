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
runs by name through :func:`quantviz.core.methods.run`.
"""
from __future__ import annotations


import hashlib
import json
import time
from dataclasses import dataclass, replace
from typing import Callable

import torch

from .candidates import Candidate, as_json
from .data import Dataset
from .errors import Cancelled, QuantvizError
from .evaluate import (SQNR_CAP_DB, FloatReference, MetricStream, evaluate_quantized, higher_is_better,
                       primary_metric, user_metrics)
from .fakequant import QuantSim
from .incremental import DEFAULT_BUDGET_BYTES, SuffixRunner
from .lmmetrics import cat_aux
from .progress import Progress, null_progress
from .spec import FLOAT_SPEC, ActSpec, LayerSpec

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
    if isinstance(bits, Candidate):
        return LayerSpec(weight=bits.apply(base.weight), activation=ActSpec(bits=None))
    return LayerSpec(weight=replace(base.weight, bits=bits), activation=ActSpec(bits=None))


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
def sweep(parts: Parts, method: str = "e2e", *, bits=DEFAULT_BITS, act_bits=(), naive: bool = False,
          progress: Progress = null_progress, cancel: Callable[[], bool] = lambda: False) -> dict:
    """The ``e2e`` or ``loo`` sweep; ``naive`` runs full forward passes (for checks)."""
    p = parts
    if method not in ("e2e", "loo"):
        raise SensitivityError(f"sweep: unknown method {method!r} (e2e or loo)")
    sim = p.sim
    groups = tie_groups(sim, p.ties)
    infos = sim.by_name
    act_ok = [g for g in groups if any(infos[n].has_activation_input for n in g)]
    kinds = [("w", b, groups) for b in bits] + [("a", b, act_ok) for b in act_bits]
    total = sum((len(gs) + (1 if method == "loo" else 0)) for _, _, gs in kinds) + (1 if method == "e2e" else 0)
    done = 0
    t0 = time.perf_counter()
    runner = SuffixRunner(sim.qmodel, p.data, batch_size=p.batch_size, budget_bytes=p.budget_bytes, device=p.device)
    if naive:
        runner.incremental = False

    def setting(kind, b, name):
        fn = weight_setting if kind == "w" else act_setting
        return fn(p.base_specs[name], b)

    def measure(changed):
        if naive:
            return evaluate_quantized(sim.qmodel, p.data, p.reference, device=p.device, evaluate_fn=p.evaluate_fn,
                                      cancel=cancel)
        return _stream_metrics(runner.iter_run(changed, cancel=cancel), p, cancel)

    cells: dict[str, dict] = {n: {"w": {}, "a": {}} for n in infos}
    base_by: dict = {}
    with torch.no_grad():
        if method == "e2e":
            sim.apply({})
            if not naive:
                runner.baseline(cancel=cancel)
            done += 1
            progress(done, total, "float baseline")
        for kind, b, gs in kinds:
            if method == "loo":
                base = {n: setting(kind, b, n) for n in infos}
                sim.apply(base)
                if naive:
                    bm = evaluate_quantized(sim.qmodel, p.data, p.reference, device=p.device,
                                            evaluate_fn=p.evaluate_fn, cancel=cancel)
                else:
                    runner.baseline(cancel=cancel)
                    bm = _stream_metrics(enumerate(runner.outputs), p, cancel)
                base_by[f"{kind}{b}"] = bm
                done += 1
                progress(done, total, f"all layers at {'W' if kind == 'w' else 'A'}{b}")
            else:
                base = {}
            for g in gs:
                if cancel():
                    raise Cancelled("sensitivity cancelled")
                specs = dict(base)
                for n in g:
                    specs[n] = setting(kind, b, n) if method == "e2e" else FLOAT_SPEC
                changed = sim.apply(specs, cancel=cancel)  # a candidate's algorithm runs here
                m = measure(changed)
                ref = p.reference.metrics if method == "e2e" else base_by[f"{kind}{b}"]
                d = drops(ref, m) if method == "e2e" else drops(m, ref)  # loo: what quantizing it costs
                for n in g:
                    cells[n][kind][str(b)] = {"metrics": m, "drop": d}
                sim.apply(base)
                done += 1
                progress(done, total, f"{g[0]} at {'W' if kind == 'w' else 'A'}{b}")
    res = result_of(p, method, bits, act_bits, groups, cells, time.perf_counter() - t0)
    res["incremental"] = bool(runner.incremental and not naive)
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
           "tie_groups", "primary_metric", "drops", "weight_setting", "act_setting", "fingerprint", "SensitivityError"]
