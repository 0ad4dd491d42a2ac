"""Mixed-precision search: a bit-width per layer under a budget.

The e2e sensitivities give, for each layer (or tied group) and bit-width,
the output noise it adds and the drop of the task metric; a cheap proxy
(``local``: the layer's own output SQNR; ``hessian``: HAWQ's score) gives a
cost per cell instead, the ranking a large model can afford. Modelled as
additive, choosing one bit-width per group is a multiple-choice knapsack,
solved exactly by :func:`solve` (``scipy.optimize.milp`` when scipy is
installed, else :func:`solve_dp`, a dynamic program over Pareto states).

For a budget, a few additive objectives (output noise power, metric drop,
blends) each give an optimal config; every candidate is then *measured* end
to end and the best measured one that fits is chosen. The Pareto front
repeats this over a range of budgets; every point carries its bit-width per layer
(the session turns it into a full config).

Budgets: ``avg_bits`` (bits per weight over all quantizable layers, scales
included, as :mod:`quantviz.core.model.size` counts them everywhere), ``size_bytes`` (the model size with
scale overhead, :mod:`quantviz.core.model.size`), or ``max_drop`` (the largest
acceptable drop of the primary metric; the smallest measured config within
it is chosen).
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np

from ..errors import Cancelled, QuantvizError
from ..sim.evaluate import evaluate_quantized, higher_is_better, user_metrics
from ..sim.forward import iterate_outputs
from ..model.lmmetrics import slice_aux
from ..progress import Progress, null_progress
from .sensitivity import DEFAULT_BITS, Parts, primary_metric, tie_groups, weight_setting
from .candidates import Candidate, as_json, normalize, setting_label, weight_at
from ..model.size import layer_weight_bytes, model_size


class SearchError(QuantvizError):
    pass


# ------------------------------------------------------------ solvers
def solve_dp(costs: Sequence[Sequence[float]], sizes: Sequence[Sequence[int]], budget: float) -> list[int] | None:
    """Exact multiple-choice knapsack: one option per group, total size <= budget,
    minimum total cost. Keeps only Pareto states (no state both larger and costlier)."""
    states: list[tuple[float, float, tuple]] = [(0, 0.0, ())]
    for c_row, s_row in zip(costs, sizes):
        nxt = [(s + s_row[k], c + c_row[k], ch + (k,)) for s, c, ch in states for k in range(len(c_row))
               if s + s_row[k] <= budget + 1e-9]
        if not nxt:
            return None
        nxt.sort(key=lambda t: (t[0], t[1]))
        states = []
        best = float("inf")
        for st in nxt:
            if st[1] < best - 1e-15 * max(1.0, abs(best)) or not states:
                states.append(st)
                best = min(best, st[1])
    return list(min(states, key=lambda t: (t[1], t[0]))[2])


def solve_milp(costs, sizes, budget: float) -> list[int] | None:
    """The same problem with ``scipy.optimize.milp`` (HiGHS)."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    n = sum(len(r) for r in costs)
    c = np.concatenate([np.asarray(r, dtype=float) for r in costs])
    scale = max(float(np.abs(c).max()), 1e-300)
    svec = np.concatenate([np.asarray(r, dtype=float) for r in sizes])
    a = np.zeros((len(costs) + 1, n))
    col = 0
    for g, r in enumerate(costs):
        a[g, col:col + len(r)] = 1
        col += len(r)
    a[-1] = svec
    lb = np.concatenate([np.ones(len(costs)), [-np.inf]])
    ub = np.concatenate([np.ones(len(costs)), [budget]])
    res = milp(c / scale, constraints=LinearConstraint(a, lb, ub), integrality=np.ones(n), bounds=Bounds(0, 1),
               options={"mip_rel_gap": 0.0})
    if res.x is None:
        return None
    x = np.round(res.x).astype(int)
    out, col = [], 0
    for r in costs:
        out.append(int(np.argmax(x[col:col + len(r)])))
        col += len(r)
    return out


def solve(costs, sizes, budget: float, method: str = "auto") -> list[int] | None:
    """One option index per group minimising the summed cost within ``budget`` (None: infeasible)."""
    if method in ("auto", "milp"):
        try:
            import scipy.optimize  # noqa: F401
        except ImportError:
            if method == "milp":
                raise SearchError("the milp solver needs scipy (pip install 'quantviz[search]')") from None
        else:
            return solve_milp(costs, sizes, budget)
    return solve_dp(costs, sizes, budget)


# ------------------------------------------------------ problem setup
def _table(p: Parts, sens: dict, bits: Sequence[int]):
    """Groups, per-option sizes (weight bits, bytes) and the additive objectives."""
    groups = tie_groups(p.sim, p.ties)
    method = sens.get("method", "e2e")
    by_name = {e["name"]: e for e in sens["layers"]}
    metric = sens.get("metric") or primary_metric(p.reference.metrics)
    wbits, wbytes, noise, drop = [], [], [], []
    for g in groups:
        infos = [p.sim.by_name[n] for n in g]
        wbytes.append([sum(layer_weight_bytes(i, weight_setting(p.base_specs[i.name], b)) for i in infos) for b in bits])
        # bits with scales (the avg-bits rule of quantviz.core.model.size): per-channel, per-group and block
        # scales are paid for, so a budget means what the size and every label say
        wbits.append([8 * y for y in wbytes[-1]])
        cells = by_name[g[0]]["results"]
        for b in bits:
            if str(b) not in cells:
                raise SearchError(f"the sensitivity result has no {b}-bit entry for {g[0]}")
        noise.append([_cost(cells[str(b)]["metrics"], method) for b in bits])
        # only e2e / loo results measure the metric's drop; a proxy ranks by its cost alone
        drop.append([max(0.0, (cells[str(b)].get("drop") or {}).get(metric, 0.0)) for b in bits])
    return groups, np.array(wbits, float), np.array(wbytes, float), np.array(noise), np.array(drop), metric


def _cost(metrics: dict, method: str) -> float:
    """A cell's additive cost: the noise power ``10^(-SQNR/10)`` (e2e / loo: at the model's output;
    local: at the layer's own output), or the HAWQ score (hessian: trace x squared weight change)."""
    if method == "hessian":
        return max(0.0, float(metrics.get("hessian_score", 0.0)))
    if "sqnr_db" not in metrics:
        raise SearchError(f"the {method} sensitivity result has no SQNR to rank layers by")
    return 10 ** (-float(metrics["sqnr_db"]) / 10)


def _objectives(noise: np.ndarray, drop: np.ndarray) -> list[np.ndarray]:
    """Additive objectives: output noise, metric drop (noise breaks ties), blends."""
    nn_ = noise / max(noise.sum(axis=1).max(), 1e-300)
    objs = [noise]
    if drop.max() > 0:
        dn = drop / drop.max()
        objs += [dn + 1e-3 * nn_, 0.5 * dn + 0.5 * nn_]
    return objs


def uniform_path(cost: np.ndarray, size: np.ndarray, budget: float, moves: int = 4) -> list[list[int]]:
    """Configs from the largest uniform bit-width that fits towards the optimum:
    each step makes the single upgrade, or downgrade + upgrade pair, that
    lowers the additive cost most within the budget. These near-uniform
    candidates are measured alongside the solver's optima (the additive
    model is only a model)."""
    n_opt = cost.shape[1]
    start = [k for k in range(n_opt) if size[:, k].sum() <= budget]
    if not start:
        return []
    cur = [max(start)] * cost.shape[0]
    out = [list(cur)]
    for _ in range(moves):
        used = sum(size[g, k] for g, k in enumerate(cur))
        best, gain = None, 1e-15
        for gu in range(len(cur)):
            for ku in range(cur[gu] + 1, n_opt):
                du = cost[gu, ku] - cost[gu, cur[gu]]
                extra = size[gu, ku] - size[gu, cur[gu]]
                if used + extra <= budget and -du > gain:
                    best, gain = [(gu, ku)], -du
                for gd in range(len(cur)):
                    if gd == gu:
                        continue
                    for kd in range(cur[gd]):
                        dd = cost[gd, kd] - cost[gd, cur[gd]]
                        if used + extra + size[gd, kd] - size[gd, cur[gd]] <= budget and -(du + dd) > gain:
                            best, gain = [(gu, ku), (gd, kd)], -(du + dd)
        if best is None:
            break
        for g, k in best:
            cur[g] = k
        out.append(list(cur))
    return out


def uniform_neighbours(cost: np.ndarray, size: np.ndarray, budget: float, limit: int = 8) -> list[list[int]]:
    """The best single moves away from the largest uniform config that fits
    (one upgrade, or a downgrade paying for an upgrade), by additive gain."""
    n_opt = cost.shape[1]
    start = [k for k in range(n_opt) if size[:, k].sum() <= budget]
    if not start:
        return []
    cur = [max(start)] * cost.shape[0]
    used = sum(size[g, k] for g, k in enumerate(cur))
    moves = []
    for gu in range(len(cur)):
        for ku in range(cur[gu] + 1, n_opt):
            du = cost[gu, ku] - cost[gu, cur[gu]]
            extra = size[gu, ku] - size[gu, cur[gu]]
            if used + extra <= budget and du < 0:
                moves.append((du, [(gu, ku)]))
            for gd in range(len(cur)):
                for kd in range(cur[gd]):
                    dd = cost[gd, kd] - cost[gd, cur[gd]]
                    if gd != gu and used + extra + size[gd, kd] - size[gd, cur[gd]] <= budget and du + dd < 0:
                        moves.append((du + dd, [(gu, ku), (gd, kd)]))
    moves.sort(key=lambda m: m[0])
    out = []
    for _, mv in moves[:limit]:
        ch = list(cur)
        for g, k in mv:
            ch[g] = k
        out.append(ch)
    return out


def specs_for(base_specs: dict, bits_by_layer: dict) -> dict:
    """``base_specs`` with the weight bits of the layers in ``bits_by_layer`` replaced."""
    specs = dict(base_specs)
    for n, b in bits_by_layer.items():
        specs[n] = replace(specs[n], weight=weight_at(specs[n].weight, b))
    return specs


def _better(a: dict, b: dict | None, metric: str) -> bool:
    """Is measured point ``a`` better than ``b`` (primary metric, then SQNR)?"""
    if b is None:
        return True
    ma, mb = a["metrics"].get(metric), b["metrics"].get(metric)
    if ma is not None and mb is not None and ma != mb:
        return (ma > mb) if higher_is_better(metric) else (ma < mb)
    return a["metrics"].get("sqnr_db", 0) > b["metrics"].get("sqnr_db", 0)


MEASURE_MODES = ("less", "all")
SCREEN_FRACTION = 0.25  # of the evaluation samples a candidate is screened on (measure="less")
FULL_LIMIT = 3  # candidates measured end to end at most per decision (measure="less"), the best screened first


class _Measurer:
    """Measures a choice (one option index per group) end to end, once; in ``less`` mode it also
    screens choices on the first evaluation samples (:meth:`screen`)."""

    def __init__(self, p: Parts, groups, bits, cancel, executor=None, mode: str = "all"):
        self.p, self.groups, self.bits, self.cancel = p, groups, bits, cancel
        self.executor = executor
        self.mode = mode
        self.seen: dict[tuple, dict] = {}  # measured end to end
        self.screened: dict[tuple, dict] = {}  # measured on the screening subset
        self.proposed: dict[tuple, None] = {}  # every choice the solver and the uniform paths proposed
        n = len(p.data)
        self.screen_samples = max(1, min(n, int(np.ceil(n * SCREEN_FRACTION))))

    def _specs(self, choice):
        by_layer = {n: self.bits[k] for g, k in zip(self.groups, choice) for n in g}
        return by_layer, specs_for(self.p.base_specs, by_layer)

    def propose(self, choices) -> None:
        for c in choices:
            if c is not None:
                self.proposed.setdefault(tuple(c), None)

    def many(self, choices) -> None:
        """Propose ``choices``; with ``mode="all"`` measure every new one at once (on the
        executor's workers when there is one)."""
        self.propose(choices)
        if self.mode == "all":
            self.full(choices)

    def full(self, choices) -> None:
        """Measure every new choice in ``choices`` end to end (on the executor's workers when there is one)."""
        new = list(dict.fromkeys(tuple(c) for c in choices if c is not None and tuple(c) not in self.seen))
        self.propose(new)
        if self.executor is None or len(new) < 2:
            for c in new:
                self(c)
            return
        calls = [("evaluate", (self._specs(c)[1],)) for c in new]
        for i, metrics in self.executor.run(calls, cancel=self.cancel):
            self._point(new[i], metrics)

    def __call__(self, choice) -> dict:
        key = tuple(choice)
        if key in self.seen:
            return self.seen[key]
        if self.cancel():
            raise Cancelled("search cancelled")
        self.propose([key])
        if self.executor is not None:
            (_, metrics), = list(self.executor.run([("evaluate", (self._specs(key)[1],))], cancel=self.cancel))
            return self._point(key, metrics)
        _, specs = self._specs(key)
        self.p.sim.apply(specs, cancel=self.cancel)
        metrics = evaluate_quantized(self.p.sim.qmodel, self.p.data, self.p.reference, device=self.p.device,
                                     evaluate_fn=self.p.evaluate_fn, cancel=self.cancel)
        return self._point(key, metrics)

    def screen(self, choice) -> dict:
        """``choice`` measured on the first :attr:`screen_samples` evaluation samples, with the
        metrics' 95 % bands (a finite population correction: the subset is drawn from the full set)."""
        key = tuple(choice)
        if key in self.seen:  # measured end to end already: exact
            return self.seen[key]
        if key in self.screened:
            return self.screened[key]
        if self.cancel():
            raise Cancelled("search cancelled")
        self.propose([key])
        _, specs = self._specs(key)
        self.p.sim.apply(specs, cancel=self.cancel)
        ref, k = self.p.reference, self.screen_samples
        if k >= len(self.p.data):  # the subset is the whole set: a screen is the full measurement
            return self(key)
        sub = self.p.data.subset(k)
        stream = ref.stream()
        bs = ref.batch_size
        for i, out, y in iterate_outputs(self.p.sim.qmodel, sub, device=self.p.device, batch_size=bs,
                                         cancel=self.cancel, readout=ref.readout):
            a = i * bs
            b = a + (out.shape[0] if out.dim() else 1)
            aux = ref.aux_of(i)
            stream.update(ref.rows(a, b), out, y, slice_aux(aux, 0, b - a) if aux else None)
            del out
        snap = stream.snapshot()
        metrics = snap["metrics"]
        if self.p.evaluate_fn is not None:
            metrics.update(user_metrics(self.p.evaluate_fn, self.p.sim.qmodel, sub))
        pt = self._point(key, metrics, store=False)
        pt["samples"], pt["bands"] = k, snap["bands"]
        self.screened[key] = pt
        return pt

    def size_of(self, choice) -> dict:
        """Size and bits of ``choice`` (no measurement)."""
        _, specs = self._specs(choice)
        size = model_size(self.p.sim.float_model, self.p.sim.layers, specs)
        return {"size_bytes": size.quantized_bytes, "avg_bits": size.avg_bits}

    def _point(self, key, metrics, store: bool = True) -> dict:
        by_layer, specs = self._specs(key)
        size = model_size(self.p.sim.float_model, self.p.sim.layers, specs)
        pt = {"size_bytes": size.quantized_bytes, "avg_bits": size.avg_bits, "element_bits": size.element_bits,
              "metrics": metrics, "bits": {n: (b if isinstance(b, int) else str(b)) for n, b in by_layer.items()},
              "name": f"mixed {size.avg_bits:.2f} bits"}
        if any(isinstance(b, Candidate) for b in self.bits):  # label by setting
            counts: dict = {}
            for b in by_layer.values():
                counts[str(b)] = counts.get(str(b), 0) + 1
            pt["formats"] = counts
            pt["name"] = f"{size.avg_bits:.2f} bits: {setting_label(counts)}"
        if store:
            self.seen[tuple(key)] = pt
        return pt


def pareto_filter(points: list[dict], metric: str) -> list[dict]:
    """Points not beaten by a smaller-or-equal one, sorted by size."""
    pts = sorted(points, key=lambda q: (q["size_bytes"], 0))
    out: list[dict] = []
    for q in pts:
        if out and not _better(q, out[-1], metric):
            continue
        if out and out[-1]["size_bytes"] == q["size_bytes"]:
            out[-1] = q
        else:
            out.append(q)
    return out


# ---------------------------------------------------------- the search
def search(parts: Parts, sens: dict, *, avg_bits: float | None = None, size_bytes: int | None = None,
           max_drop: float | None = None, bits: Sequence[int] = DEFAULT_BITS, pareto_steps: int = 9,
           solver: str = "auto", progress: Progress = null_progress,
           cancel: Callable[[], bool] = lambda: False, executor=None, measure: str = "less") -> dict:
    """Choose a bit-width per layer for one budget and trace the Pareto front.

    ``sens`` is a sensitivity result of ``parts`` at ``bits`` (``e2e`` or ``loo``:
    output noise and metric drop per cell; the proxies ``local`` / ``hessian``:
    their cost per cell only, so the solver's optimum minimises that cost and
    the candidates' measured metric picks among them). Returns
    ``{"chosen": point, "pareto": [point...], "budget": {...}, "metric": name,
    "sensitivity": method, "candidates": n}`` where a point is ``{"size_bytes", "avg_bits",
    "metrics", "bits": {layer: b}, "name"}``. The simulation is left at
    ``parts.base_specs``. With ``executor`` (:class:`.raysweep.RayExecutor`) the
    candidates of each round are measured in parallel on its workers.

    ``measure``: ``"all"`` measures every candidate end to end (the exhaustive
    search); ``"less"`` (default) screens the candidates that can be the answer
    (those within the budget; every one under ``max_drop``) on a subset of the
    evaluation samples and measures end to end only those whose screened band
    can still beat the best screened one (:data:`FULL_LIMIT` at most, the best
    screened first). The result counts them: ``candidates`` (configs the
    solver proposed), ``screened``, ``full_evaluations``; a point measured on
    the subset only carries ``samples`` (how many it was measured on).
    """
    if measure not in MEASURE_MODES:
        raise SearchError(f"search: unknown measure mode {measure!r} (choose from {', '.join(MEASURE_MODES)})")
    given = [v is not None for v in (avg_bits, size_bytes, max_drop)]
    if sum(given) != 1:
        raise SearchError("search: give exactly one budget (avg_bits, size_bytes or max_drop)")
    bits = normalize(bits)
    t0 = time.perf_counter()
    p = parts
    try:
        chosen, points, front, metric, counts = _run(p, sens, bits, avg_bits, size_bytes, max_drop, pareto_steps,
                                                     solver, progress, cancel, executor, measure)
    finally:
        p.sim.apply(p.base_specs)
    progress(1, 1, "done")
    if chosen is None:
        raise SearchError(f"no config within {', '.join(map(str, bits))} bits keeps the {metric} drop within {max_drop:g}")
    return {"chosen": chosen, "pareto": front, "metric": metric, "float_metrics": dict(p.reference.metrics),
            "sensitivity": sens.get("method", "e2e"), "sensitivity_from_cache": bool(sens.get("from_cache")),
            "budget": {"avg_bits": avg_bits, "size_bytes": size_bytes, "max_drop": max_drop}, "bits": as_json(bits),
            "candidates": counts["candidates"], "measure": measure, "screened": counts["screened"],
            "full_evaluations": counts["full"], "screen_samples": counts["screen_samples"],
            "eval_samples": counts["eval_samples"], "seconds": time.perf_counter() - t0}


def _check_budget(p: Parts, bits, wbytes, avg_bits, size_bytes) -> float:
    """The bytes outside quantizable weights; raises when a budget is below the smallest config."""
    base_size = model_size(p.sim.float_model, p.sim.layers, {})
    other = base_size.float_bytes - sum(base_size.float_per_layer.values())
    total_w = sum(l.weight_numel for l in p.sim.layers)
    least = 8 * wbytes.min(axis=1).sum() / max(total_w, 1)
    if avg_bits is not None and avg_bits < least - 1e-9:
        raise SearchError(f"--avg-bits {avg_bits:g} is below the smallest possible config ({least:.2f} bits/weight "
                          f"with scales, at {min(int(b) for b in bits)} bits)")
    if size_bytes is not None and size_bytes < other + wbytes.min(axis=1).sum():
        raise SearchError(f"--size-bytes {size_bytes} is below the smallest possible size "
                          f"({int(other + wbytes.min(axis=1).sum())} bytes at {min(int(b) for b in bits)} bits)")
    return other


def _run(p: Parts, sens, bits, avg_bits, size_bytes, max_drop, pareto_steps, solver, progress, cancel, executor=None,
         mode: str = "all"):
    groups, wbits, wbytes, noise, drop, metric = _table(p, sens, bits)
    total_w = float(sum(l.weight_numel for l in p.sim.layers))
    other = _check_budget(p, bits, wbytes, avg_bits, size_bytes)
    measure = _Measurer(p, groups, bits, cancel, executor, mode)
    objs = _objectives(noise, drop)
    sweep_bits = list(np.linspace(wbits.min(axis=1).sum() / total_w, wbits.max(axis=1).sum() / total_w, pareto_steps))
    if avg_bits is not None:
        sweep_bits.append(float(avg_bits))
    jobs = [("bits", b) for b in sweep_bits]
    if size_bytes is not None:
        jobs.append(("bytes", float(size_bytes)))
    for i, (kind, budget) in enumerate(jobs):
        chs = []
        for obj in objs:
            if kind == "bits":
                chs.append(solve(obj, wbits, budget * total_w + 1e-6, solver))
            else:
                chs.append(solve(obj, wbytes, budget - other, solver))
        measure.many(chs)
        if mode == "all":
            progress(i + 1, len(jobs) + 2, "measuring configs")
    if avg_bits is not None or size_bytes is not None:
        sz, cap = (wbits, avg_bits * total_w + 1e-6) if avg_bits is not None else (wbytes, size_bytes - other)
        measure.many(uniform_path(objs[0], sz, cap) + uniform_neighbours(objs[0], sz, cap))
    if mode == "less":
        chosen = _less(measure, metric, p.reference.metrics, avg_bits, size_bytes, max_drop, progress)
        if chosen is not None and max_drop is not None:
            chosen = _refine_drop_less(chosen, measure, objs, wbits, total_w, metric, p.reference.metrics, max_drop,
                                       solver)
        points = list(measure.seen.values())
        # the front: the points measured end to end, and beside them (never compared with them: other
        # samples) the front of the points only screened
        only = [q for k, q in measure.screened.items() if k not in measure.seen]
        front = sorted(pareto_filter(points, metric) + pareto_filter(only, metric), key=lambda q: q["size_bytes"])
        return chosen, points, front, metric, _counts(measure, mode, p)
    else:
        points = list(measure.seen.values())
        chosen = _choose(points, metric, p.reference.metrics, avg_bits, size_bytes, max_drop)
        if chosen is not None and max_drop is not None:
            chosen = _refine_drop(chosen, points, measure, objs, wbits, total_w, metric, p.reference.metrics,
                                  max_drop, solver)
            points = list(measure.seen.values())
        front_pts = points
    return chosen, points, pareto_filter(front_pts, metric), metric, _counts(measure, mode, p)


def _counts(measure: _Measurer, mode: str, p: Parts) -> dict:
    return {"candidates": len(measure.proposed), "screened": len(measure.screened) if mode == "less" else 0,
            "full": len(measure.seen), "screen_samples": measure.screen_samples if mode == "less" else None,
            "eval_samples": len(p.data)}


def _band(q: dict, metric: str) -> tuple[float, float] | None:
    """The 95 % band of a point's metric (None: measured end to end, or no band for this metric)."""
    b = (q.get("bands") or {}).get(metric)
    v = q["metrics"].get(metric)
    if v is None:
        return None
    return (float(b[0]), float(b[1])) if b else (float(v), float(v))


def _rank_key(q: dict, metric: str):
    """Sort key: best point first (primary metric, then SQNR)."""
    v = q["metrics"].get(metric)
    s = q["metrics"].get("sqnr_db", 0.0)
    if v is None:
        return (1, 0.0, -s)
    return (0, -v if higher_is_better(metric) else v, -s)


def _fits(q: dict, avg_bits, size_bytes) -> bool:
    if avg_bits is not None:
        return _bits(q) <= avg_bits + 1e-9
    if size_bytes is not None:
        return q["size_bytes"] <= size_bytes
    return True


def _less(measure: _Measurer, metric, ref, avg_bits, size_bytes, max_drop, progress):
    """Screen the candidates that can be the answer, measure end to end those the screen cannot rule out."""
    eligible = [c for c in measure.proposed if _fits(measure.size_of(c), avg_bits, size_bytes)]
    screened = []
    for i, c in enumerate(eligible):
        screened.append((c, measure.screen(c)))
        progress(i + 1, len(eligible) + FULL_LIMIT + 1, "screening configs")
    if not screened:
        return None
    if max_drop is None:
        best = min((q for _, q in screened), key=lambda q: _rank_key(q, metric))
        hb = higher_is_better(metric)
        bb = _band(best, metric)
        alive = []
        for c, q in screened:
            qb = _band(q, metric)
            if bb is None or qb is None or (qb[1] >= bb[0] if hb else qb[0] <= bb[1]):
                alive.append((c, q))
        for j, c in enumerate(_finalists(alive, metric)):
            measure(c)
            progress(len(eligible) + j + 1, len(eligible) + FULL_LIMIT + 1, "measuring configs")
        return _choose(list(measure.seen.values()), metric, ref, avg_bits, size_bytes, None)
    # the largest drop: the smallest config that meets it; the screen rules out what cannot meet it
    by_size = sorted(screened, key=lambda cq: (cq[1]["size_bytes"], _rank_key(cq[1], metric)))
    for c, q in by_size:
        if not _may_meet(q, metric, ref, max_drop):
            continue
        full = measure(c)
        if (_drop(metric, ref, full["metrics"]) or 0.0) <= max_drop + 1e-12:
            break
    return _choose(list(measure.seen.values()), metric, ref, None, None, max_drop)


def _finalists(alive: list, metric: str) -> list:
    """Up to :data:`FULL_LIMIT` screened choices to measure end to end: the best by the screened
    metric and the best by the screened fidelity (KL divergence where the outputs are logits, else
    SQNR), taken in turn. On a few samples a task metric such as accuracy moves in coarse steps;
    the fidelity to the float outputs is a finer, steadier ranking of the same configs."""
    by_metric = [c for c, _ in sorted(alive, key=lambda cq: _rank_key(cq[1], metric))]
    fid = "kl_div" if all("kl_div" in q["metrics"] for _, q in alive) else "sqnr_db"
    by_fid = [c for c, _ in sorted(alive, key=lambda cq: _rank_key(cq[1], fid))]
    out: list = []
    for pair in zip(by_metric, by_fid):
        for c in pair:
            if c not in out and len(out) < FULL_LIMIT:
                out.append(c)
    return out


def _may_meet(q: dict, metric, ref, max_drop) -> bool:
    """Can point ``q`` (screened, with a band) meet the largest drop?"""
    b = _band(q, metric)
    if b is None:
        return True
    best_case = b[1] if higher_is_better(metric) else b[0]
    return (_drop(metric, ref, {metric: best_case}) or 0.0) <= max_drop + 1e-12


def _refine_drop_less(chosen, measure, objs, wbits, total_w, metric, ref, max_drop, solver, steps=3):
    """:func:`_refine_drop` with screening: a config is measured end to end only when its
    screen can meet the drop and it is smaller than the chosen one."""
    def misses_drop(q):
        if "bands" in q:
            return not _may_meet(q, metric, ref, max_drop)
        return (_drop(metric, ref, q["metrics"]) or 0.0) > max_drop

    known = list(measure.seen.values()) + list(measure.screened.values())
    misses = [_bits(q) for q in known if _bits(q) < _bits(chosen) and misses_drop(q)]
    lo, hi = (max(misses) if misses else _bits(chosen)), _bits(chosen)
    for _ in range(steps):
        if hi - lo < 1e-3:
            break
        mid = (lo + hi) / 2
        ok = False
        for ch in [solve(obj, wbits, mid * total_w + 1e-6, solver) for obj in objs]:
            if ch is None:
                continue
            q = measure.screen(ch)
            if "bands" in q and (not _may_meet(q, metric, ref, max_drop) or q["size_bytes"] >= chosen["size_bytes"]):
                continue
            full = measure(ch)
            if (_drop(metric, ref, full["metrics"]) or 0.0) <= max_drop + 1e-12:
                ok = True
                chosen = _choose(list(measure.seen.values()), metric, ref, None, None, max_drop)
        lo, hi = (lo, mid) if ok else (mid, hi)
    return _choose(list(measure.seen.values()), metric, ref, None, None, max_drop)


def _bits(q: dict) -> float:
    """The bits a point spends against an avg-bits budget (scales included)."""
    return q["avg_bits"]


def _drop(metric, ref, m):
    v, b = m.get(metric), ref.get(metric)
    if v is None or b is None:
        return None
    return (b - v) if higher_is_better(metric) else (v - b)


def _choose(points, metric, ref, avg_bits, size_bytes, max_drop):
    best = None
    if max_drop is not None:
        ok = [q for q in points if (_drop(metric, ref, q["metrics"]) or 0.0) <= max_drop + 1e-12]
        if not ok:
            return None
        smallest = min(q["size_bytes"] for q in ok)
        for q in ok:
            if q["size_bytes"] == smallest and _better(q, best, metric):
                best = q
        return best
    for q in points:
        fits = _bits(q) <= avg_bits + 1e-9 if avg_bits is not None else q["size_bytes"] <= size_bytes
        if fits and _better(q, best, metric):
            best = q
    return best


def _refine_drop(chosen, points, measure, objs, wbits, total_w, metric, ref, max_drop, solver, steps=3):
    """Bisect the weight-bit budget between the largest measured config that
    misses the drop and the chosen one, measuring as it goes."""
    misses = [_bits(q) for q in points
              if _bits(q) < _bits(chosen) and (_drop(metric, ref, q["metrics"]) or 0.0) > max_drop]
    lo, hi = (max(misses) if misses else _bits(chosen)), _bits(chosen)
    for _ in range(steps):
        if hi - lo < 1e-3:
            break
        mid = (lo + hi) / 2
        ok = False
        chs = [solve(obj, wbits, mid * total_w + 1e-6, solver) for obj in objs]
        measure.many(chs)
        for ch in chs:
            if ch is not None and (_drop(metric, ref, measure(ch)["metrics"]) or 0.0) <= max_drop:
                ok = True
        lo, hi = (lo, mid) if ok else (mid, hi)
    return _choose(list(measure.seen.values()), metric, ref, None, None, max_drop)


__all__ = ["MEASURE_MODES", "solve", "solve_dp", "solve_milp", "search", "specs_for", "pareto_filter", "SearchError"]
