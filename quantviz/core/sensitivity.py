"""Per-layer sensitivity: which layers lose the most when quantized.

Methods (each ``fn(parts, ..., progress, cancel)``, results JSON-able):

* ``e2e``: only this layer quantized, everything else float; model metrics.
* ``loo``: every layer quantized at the tested setting except this one.
* ``local``: SQNR of the layer's own output on calibration data when only it
  is quantized (float input). The weight noise ``f(x, Q(W) - W)`` is exact
  for small layers; for wide layers it is measured through a fixed random
  sign projection of the output channels (``sketch``), an unbiased estimate
  of the noise energy at a fraction of the cost.
* ``hessian``: HAWQ's proxy, mean Hessian trace (Hutchinson) times
  ``||Q(W) - W||^2``; the loss is cross-entropy with labels, else the MSE to
  the float outputs.

Weight settings keep the config's granularity / range and vary the bits, with
activations float; activation settings (``act_bits``) keep weights float. The
e2e and loo sweeps reuse cached activations (:class:`SuffixRunner`), so a
(layer, bits) cell costs only the layers from that one onward.

Layers that share a weight tensor (or are tied by the caller) are measured as
one unit and report the same numbers.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import Dataset, call_model, output_tensor, to_device
from .errors import Cancelled, ModelError, QuantvizError
from .evaluate import SQNR_CAP_DB, FloatReference, MetricStream, _user_metrics, evaluate_quantized, higher_is_better
from .fakequant import QuantSim, forward_batches
from .incremental import DEFAULT_BUDGET_BYTES, SuffixRunner
from .progress import Progress, null_progress
from .spec import FLOAT_SPEC, ActSpec, LayerSpec

DEFAULT_BITS = (2, 3, 4, 6, 8)
DEFAULT_ACT_BITS = (4, 8)
METHODS = ("e2e", "loo", "local", "hessian")


class SensitivityError(QuantvizError):
    pass


@dataclass
class Parts:
    """What the sensitivity and search functions need (a session provides it)."""

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


def parts_of(session_or_parts, ties=()) -> Parts:
    if isinstance(session_or_parts, Parts):
        return session_or_parts
    s = session_or_parts
    if not s.prepared:
        raise SensitivityError("the session is not prepared (calibration and float reference missing)")
    return Parts(s.sim, s.eval_data, s.calib_data, s.reference, s.specs, s.batch_size, s.device,
                 s.bundle.evaluate_fn, ties=tuple(tuple(t) for t in ties))


# ------------------------------------------------------------ helpers
def primary_metric(metrics: dict) -> str:
    """The metric a drop is measured in: accuracy, else a recipe metric, else fidelity."""
    if "accuracy" in metrics:
        return "accuracy"
    for k in metrics:
        if k not in ("sqnr_db", "cosine", "top1_agreement"):
            return k
    return "top1_agreement" if "top1_agreement" in metrics else "cosine"


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
        w = sim.float_model.get_submodule(l.name).weight
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


def weight_setting(base: LayerSpec, bits: int | None) -> LayerSpec:
    return LayerSpec(weight=replace(base.weight, bits=bits), activation=ActSpec(bits=None))


def act_setting(base: LayerSpec, bits: int | None) -> LayerSpec:
    a = base.activation
    return LayerSpec(weight=replace(base.weight, bits=None), activation=replace(a, bits=bits))


def _fingerprint(p: Parts) -> str:
    blob = {n: {"w": weight_setting(s, 0).weight.to_dict(), "a": act_setting(s, 0).activation.to_dict()}
            for n, s in sorted(p.base_specs.items())}
    blob["_data"] = [len(p.data), len(p.calib), p.batch_size, [list(t) for t in p.ties]]
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
        cat = (len(ref.outputs), torch.cat(ref.outputs), labels)
        ref._qv_cat = cat
    stream = MetricStream(ref.num_samples)
    stream.update(cat[1], torch.cat(outs), cat[2])
    m = stream.snapshot()["metrics"]
    if p.evaluate_fn is not None:
        m.update(_user_metrics(p.evaluate_fn, p.sim.qmodel, p.data))
    return m


def spearman(a, b) -> float | None:
    """Spearman rank correlation (average ranks for ties); None when undefined."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if a.size < 2:
        return None

    def ranks(x):
        order = np.argsort(x, kind="mergesort")
        r = np.empty(x.size)
        r[order] = np.arange(x.size, dtype=float)
        for v in np.unique(x):  # average ranks over ties
            m = x == v
            if m.sum() > 1:
                r[m] = r[m].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    sa, sb = ra.std(), rb.std()
    if sa == 0 or sb == 0:
        return None
    return float(((ra - ra.mean()) * (rb - rb.mean())).mean() / (sa * sb))


# ------------------------------------------------------ e2e and loo
def sweep(parts, method: str = "e2e", *, bits=DEFAULT_BITS, act_bits=(), naive: bool = False,
          progress: Progress = null_progress, cancel: Callable[[], bool] = lambda: False) -> dict:
    """The ``e2e`` or ``loo`` sweep; ``naive`` runs full forward passes (for checks)."""
    p = parts_of(parts)
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
                changed = sim.apply(specs)
                m = measure(changed)
                ref = p.reference.metrics if method == "e2e" else base_by[f"{kind}{b}"]
                d = drops(ref, m) if method == "e2e" else drops(m, ref)  # loo: what quantizing it costs
                for n in g:
                    cells[n][kind][str(b)] = {"metrics": m, "drop": d}
                sim.apply(base)
                done += 1
                progress(done, total, f"{g[0]} at {'W' if kind == 'w' else 'A'}{b}")
    res = _result(p, method, bits, act_bits, groups, cells, time.perf_counter() - t0)
    res["incremental"] = bool(runner.incremental and not naive)
    if method == "loo":
        res["baseline"]["by_bits"] = {k[1:]: v for k, v in base_by.items() if k[0] == "w"}
        res["baseline"]["by_act_bits"] = {k[1:]: v for k, v in base_by.items() if k[0] == "a"}
    return res


def _result(p: Parts, method, bits, act_bits, groups, cells, seconds) -> dict:
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
    return {"method": method, "bits": [int(b) for b in bits], "act_bits": [int(b) for b in act_bits],
            "metric": primary_metric(p.reference.metrics), "baseline": {"metrics": dict(p.reference.metrics)},
            "layers": layers, "seconds": seconds, "key": _fingerprint(p)}


# ------------------------------------------------------------ local
def _noise_call(mod: nn.Module):
    """``f(x, w)`` without bias for layers whose output is linear in the weight."""
    if isinstance(mod, nn.Linear):
        return lambda x, w: F.linear(x, w)
    if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return lambda x, w: mod._conv_forward(x, w, None)
    if isinstance(mod, nn.Embedding):
        return lambda x, w: F.embedding(x, w, mod.padding_idx, mod.max_norm, mod.norm_type, mod.scale_grad_by_freq, mod.sparse)

    def generic(x, w):
        from torch.func import functional_call

        params = {"weight": w}
        if getattr(mod, "bias", None) is not None:
            params["bias"] = torch.zeros_like(mod.bias)
        return functional_call(mod, params, (x,))

    return generic


def _norm2(t: torch.Tensor) -> torch.Tensor:
    """The 2-norm of ``t`` (0-d) in one fused float32 reduction: no squared copy, no sync."""
    return torch.linalg.vector_norm(t)


def _row_norm2(t: torch.Tensor, axis: int) -> torch.Tensor:
    """The 2-norm of every slice of ``t`` along ``axis`` (a vector), one fused reduction."""
    return torch.linalg.vector_norm(t, dim=[d for d in range(t.dim()) if d != axis % t.dim()])


def _sum_sq(norms: list[torch.Tensor]) -> torch.Tensor:
    """Sum of squares over batches of per-batch norms, accumulated in float64 (0-d or a vector)."""
    if not norms:
        return torch.zeros((), dtype=torch.float64)
    return torch.stack(norms).double().square().sum(0)


def _stackable(mod: nn.Module) -> bool:
    """Outputs along dim 1 (or last for Linear) map one-to-one to weight rows."""
    if isinstance(mod, nn.Linear):
        return True
    return isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and mod.groups == 1


def local(parts, *, bits=DEFAULT_BITS, act_bits=(), sketch: bool = True, sketch_ratio: int = 16, seed: int = 0,
          progress: Progress = null_progress, cancel: Callable[[], bool] = lambda: False) -> dict:
    """Each layer's own output SQNR on calibration data, only that layer quantized.

    With ``sketch`` (the default) the output noise of a layer with C output channels is
    measured through a fixed random ±1 projection onto max(4, C / ``sketch_ratio``) rows,
    every bit-width's rows in one call: an unbiased estimate of the noise energy at a
    fraction of a second forward pass. On a random-weight ResNet-18 it is within 1.2 dB
    of the exact figure on average (4.7 dB at worst); ``sketch=False`` is exact.
    """
    p = parts_of(parts)
    sim = p.sim
    t0 = time.perf_counter()
    groups = tie_groups(sim, p.ties)
    gen = torch.Generator().manual_seed(seed)
    plans = {}
    for l in sim.layers:
        mod = sim.float_model.get_submodule(l.name)
        w = sim.float_weight(l.name)
        deltas = []
        for b in bits:
            wq = sim.quantize_weight(l.name, weight_setting(p.base_specs[l.name], b).weight)
            deltas.append((wq.tensor - w).to(w.device))
        stack = _stackable(mod)
        cout = w.shape[0]
        m = max(4, cout // sketch_ratio) if sketch else cout
        if stack and m < cout:
            r = (torch.randint(0, 2, (cout, m), generator=gen).float() * 2 - 1) / math.sqrt(m)
            r = r.to(w.device, w.dtype)
            sk = torch.matmul(r.t(), torch.stack(deltas).flatten(2))  # (bits, m, rest): one product for all bits
            deltas = list(sk.view((len(deltas), m) + tuple(w.shape[1:])).unbind(0))
        aqs = []
        for a in act_bits:
            qp = sim.activation_qparams(l.name, act_setting(p.base_specs[l.name], a).activation) \
                if l.has_activation_input else None
            aqs.append(qp)
        plans[l.name] = {"mod": mod, "call": _noise_call(mod), "stack": stack,
                         "stacked": torch.cat(deltas, 0) if stack else None, "deltas": deltas,
                         "rows": deltas[0].shape[0], "axis": -1 if isinstance(mod, nn.Linear) else 1,
                         "aqs": aqs, "signal": [], "noise": [], "anoise": [[] for _ in act_bits]}

    def hook_for(plan):
        # per batch only norms are kept (float32, one reduction each); squares and sums come at the end
        def hook(mod, args, out):
            x = args[0]
            y = output_tensor(out)
            plan["signal"].append(_norm2(y))
            if plan["stack"]:  # every bit-width's noise in one call and one reduction
                plan["noise"].append(_row_norm2(plan["call"](x, plan["stacked"]), plan["axis"]))
            else:
                plan["noise"].append(torch.stack([_norm2(plan["call"](x, d)) for d in plan["deltas"]]))
            for k, qp in enumerate(plan["aqs"]):
                if qp is None:
                    continue
                xq = torch.fake_quantize_per_tensor_affine(x, float(qp.scale[0]), int(qp.zero_point[0]), qp.qmin, qp.qmax)
                plan["anoise"][k].append(_norm2(mod(xq) - y))
        return hook

    hooks = [plans[l.name]["mod"].register_forward_hook(hook_for(plans[l.name])) for l in sim.layers]
    try:
        forward_batches(sim.float_model, p.calib, device=p.device, batch_size=p.batch_size, what="local SQNR",
                        progress=progress, cancel=cancel)
    finally:
        for h in hooks:
            h.remove()

    def db(sig, noise):
        if noise <= 0:
            return SQNR_CAP_DB
        return float(min(SQNR_CAP_DB, 10 * math.log10(max(sig, 1e-300) / noise)))

    for plan in plans.values():
        plan["signal"] = float(_sum_sq(plan["signal"]))
        noise = _sum_sq(plan["noise"])
        if plan["stack"]:  # rows of every bit-width's sketch, in order
            noise = noise.view(len(plan["deltas"]), plan["rows"]).sum(1) if plan["noise"] else noise.new_zeros(len(bits))
        plan["noise"] = noise.tolist() if plan["noise"] else [0.0] * len(bits)
        plan["anoise"] = [float(_sum_sq(v)) for v in plan["anoise"]]
    cells = {}
    for g in groups:  # tied layers share one number: the noise over the group's outputs
        sig = sum(plans[n]["signal"] for n in g)
        w = {str(b): {"metrics": {"sqnr_db": db(sig, sum(plans[n]["noise"][k] for n in g))}} for k, b in enumerate(bits)}
        a = {}
        for k, b in enumerate(act_bits):
            if any(plans[n]["aqs"][k] is not None for n in g):
                a[str(b)] = {"metrics": {"sqnr_db": db(sig, sum(plans[n]["anoise"][k] for n in g))}}
        for n in g:
            cells[n] = {"w": w, "a": a}
    res = _result(p, "local", bits, act_bits, groups, cells, time.perf_counter() - t0)
    res["sketch"] = bool(sketch)
    res["sketch_ratio"] = int(sketch_ratio) if sketch else None
    return res


# ---------------------------------------------------------- hessian
def hessian(parts, *, bits=DEFAULT_BITS, iters: int = 2, max_samples: int = 128, seed: int = 0,
            progress: Progress = null_progress, cancel: Callable[[], bool] = lambda: False) -> dict:
    """HAWQ proxy: mean Hessian trace (Hutchinson) x squared weight perturbation."""
    p = parts_of(parts)
    sim = p.sim
    t0 = time.perf_counter()
    groups = tie_groups(sim, p.ties)
    data = p.calib.subset(max_samples)
    model = sim.float_model
    mods = [model.get_submodule(l.name) for l in sim.layers]
    ws, seen = [], {}
    for m in mods:  # shared weights appear once
        if id(m.weight) not in seen:
            seen[id(m.weight)] = len(ws)
            ws.append(m.weight)
    index = [seen[id(m.weight)] for m in mods]
    gen = torch.Generator().manual_seed(seed)
    traces = [0.0] * len(ws)
    total = data.num_batches(p.batch_size) * iters
    done = 0
    use_ce = None
    for w in ws:
        w.requires_grad_(True)
    try:
        for x, y in data.batches(p.batch_size):
            x = to_device(x, p.device)
            with torch.no_grad():
                fout = output_tensor(call_model(model, x)).detach()
            if use_ce is None:
                use_ce = (y is not None and not y.is_floating_point() and fout.dim() >= 2 and fout.shape[-1] > 1
                          and tuple(y.shape) == tuple(fout.shape[:-1]))
            for _ in range(iters):
                if cancel():
                    raise Cancelled("sensitivity cancelled")
                with torch.enable_grad():
                    out = output_tensor(call_model(model, x))
                    if use_ce:
                        loss = F.cross_entropy(out.reshape(-1, out.shape[-1]).float(), y.to(out.device).reshape(-1))
                    else:
                        loss = F.mse_loss(out.float(), fout.float())
                    grads = torch.autograd.grad(loss, ws, create_graph=True)
                    vs = [(torch.randint(0, 2, w.shape, generator=gen).to(w) * 2 - 1) for w in ws]
                    gv = sum((g * v).sum() for g, v in zip(grads, vs))
                    hvs = torch.autograd.grad(gv, ws, allow_unused=True)
                for k, (hv, v) in enumerate(zip(hvs, vs)):
                    if hv is not None:
                        traces[k] += float((hv * v).sum())
                done += 1
                progress(done, total, "Hessian trace")
    except RuntimeError as exc:
        raise ModelError(f"hessian: the model does not support second derivatives ({str(exc).splitlines()[0]})") from exc
    finally:
        for w in ws:
            w.requires_grad_(False)
            w.grad = None
    nb = max(data.num_batches(p.batch_size) * iters, 1)
    cells = {}
    for g in groups:
        w_res = {}
        tr_mean = 0.0
        for b in bits:
            score = 0.0
            for n in g:
                k = index[sim.layers.index(sim.by_name[n])]
                t = traces[k] / nb / ws[k].numel()
                tr_mean = t
                wq = sim.quantize_weight(n, weight_setting(p.base_specs[n], b).weight)
                score += t * float(((wq.tensor.to(ws[k]) - sim.float_weight(n).to(ws[k])) ** 2).sum())
            w_res[str(b)] = {"metrics": {"hessian_score": score}}
        for n in g:
            cells[n] = {"w": w_res, "a": {}, "trace": tr_mean}
    res = _result(p, "hessian", bits, (), groups, cells, time.perf_counter() - t0)
    for entry in res["layers"]:
        entry["trace_mean"] = cells[entry["name"]]["trace"]
    res["loss"] = "cross_entropy" if use_ce else "mse_to_float"
    return res


# ------------------------------------------------ proxy vs measured
def predicted(result: dict, name: str, b: str, kind: str = "results") -> float | None:
    """A method's sensitivity for one cell, higher = more sensitive."""
    entry = next((e for e in result["layers"] if e["name"] == name), None)
    cell = (entry or {}).get(kind, {}).get(b)
    if cell is None:
        return None
    m = cell["metrics"]
    if result["method"] == "hessian":
        return m.get("hessian_score")
    if result["method"] == "local" or "drop" not in cell:
        return -m["sqnr_db"] if m.get("sqnr_db") is not None else None
    metric = result.get("metric")
    if result["method"] == "loo":
        return cell["drop"].get("sqnr_db", cell["drop"].get(metric))
    return -m["sqnr_db"] if m.get("sqnr_db") is not None else cell["drop"].get(metric)


def rank_agreement(e2e: dict, proxy: dict) -> dict:
    """Spearman correlation of a proxy's ranking of layers with the measured e2e drop."""
    out: dict = {"vs": "e2e", "per_bits": {}}
    metric = e2e.get("metric")
    names = [e["name"] for e in e2e["layers"]]
    for b in proxy["bits"]:
        key = str(b)
        if str(b) not in e2e["layers"][0]["results"]:
            continue
        pred = [predicted(proxy, n, key) for n in names]
        fid = [predicted(e2e, n, key) for n in names]
        row = {"sqnr_db": spearman([np.nan if v is None else v for v in pred], [np.nan if v is None else v for v in fid])}
        if metric:
            dm = [next(e for e in e2e["layers"] if e["name"] == n)["results"][key]["drop"].get(metric, np.nan) for n in names]
            row[metric] = spearman([np.nan if v is None else v for v in pred], dm)
        out["per_bits"][key] = row
    mean = {}
    for k in ("sqnr_db", metric):
        vals = [r.get(k) for r in out["per_bits"].values() if r.get(k) is not None]
        if k and vals:
            mean[k] = float(np.mean(vals))
    out["mean"] = mean
    return out


def layer_scores(result: dict) -> dict[str, float]:
    """One number per layer for the layer table: the drop at the lowest tested bits."""
    b = str(min(result["bits"])) if result["bits"] else None
    metric = result.get("metric")
    scores = {}
    for e in result["layers"]:
        cell = e["results"].get(b) if b else None
        if cell is None:
            continue
        d = cell.get("drop", {})
        if metric in d:
            scores[e["name"]] = float(d[metric])
        elif "sqnr_db" in d:
            scores[e["name"]] = float(d["sqnr_db"])
        elif cell["metrics"].get("sqnr_db") is not None:
            scores[e["name"]] = -float(cell["metrics"]["sqnr_db"])  # noise-to-signal ratio in dB
    return scores


# ------------------------------------------------------- entry point
def run_sensitivity(session, method: str = "e2e", *, bits=DEFAULT_BITS, act_bits=None, force: bool = False,
                    ties=(), progress: Progress = null_progress, cancel: Callable[[], bool] = lambda: False,
                    **kw) -> dict:
    """Run ``method`` on a session, keep the result in ``session.extras``.

    A result computed earlier for the same settings is returned as is (unless
    ``force``). ``act_bits=None`` sweeps 4 and 8 bit activations when the
    config quantizes activations. Proxies get a ``spearman`` entry when an
    e2e result for the same settings exists.
    """
    if method not in METHODS:
        raise SensitivityError(f"unknown sensitivity method {method!r} (choose from {', '.join(METHODS)})")
    bits = tuple(sorted({int(b) for b in bits}))
    if act_bits is None:
        act_bits = DEFAULT_ACT_BITS if any(s.activation.bits for s in session.specs.values()) else ()
    act_bits = tuple(sorted({int(b) for b in act_bits})) if method != "hessian" else ()
    with session.lock:
        p = parts_of(session, ties)
        key = _fingerprint(p)
        store = session.extras.setdefault("sensitivity", {})
        old = store.get(method)
        if (not force and old and old.get("key") == key and old.get("bits") == list(bits)
                and old.get("act_bits") == list(act_bits) and old.get("options", {}) == kw):
            return old
        if method in ("e2e", "loo"):
            res = sweep(p, method, bits=bits, act_bits=act_bits, progress=progress, cancel=cancel)
        elif method == "local":
            res = local(p, bits=bits, act_bits=act_bits, progress=progress, cancel=cancel, **kw)
        else:
            res = hessian(p, bits=bits, progress=progress, cancel=cancel, **kw)
        session.sim.apply(session.specs)
    res["options"] = dict(kw)  # method options (e.g. local's sketch): a cached result must match them
    e2e = res if method == "e2e" else store.get("e2e")
    if method != "e2e" and e2e and e2e.get("key") == key:
        res["spearman"] = rank_agreement(e2e, res)
    if method == "e2e":
        for m, other in store.items():
            if m != "e2e" and other.get("key") == key:
                other["spearman"] = rank_agreement(res, other)
    store[method] = res
    if method in ("e2e", "loo"):
        session.extras["sensitivity_score"] = layer_scores(res)
        session.extras["sensitivity_score_info"] = {"method": method, "bits": min(bits), "metric": res["metric"]}
    return res


__all__ = ["DEFAULT_BITS", "DEFAULT_ACT_BITS", "METHODS", "Parts", "parts_of", "sweep", "local", "hessian",
           "spearman", "rank_agreement", "run_sensitivity", "tie_groups", "primary_metric", "drops",
           "layer_scores", "weight_setting", "act_setting", "SensitivityError"]
