"""Analysis results a session owns: sensitivity, search, deployment measurements and the error trace.

Core functions (:mod:`quantviz.core.analysis.sensitivity`, :mod:`quantviz.core.analysis.search`,
:mod:`quantviz.session.deploy`) compute and return; only the session stores
their results here, and every store emits ``analysis_changed`` (``what``:
``"sensitivity"``, ``"search"``, ``"deploy"``, ``"trace"`` or ``"qat"``), so autosave and every view
follow. :class:`AnalysisMixin` holds the session methods that run them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..core.analysis import methods
from ..core.analysis import search as search_mod
from ..core.analysis import sensitivity as sens
from ..core.analysis.candidates import default_candidates, from_key, normalize, patch_at
from ..core.progress import Progress, null_progress, scaled
from ..core.analysis.ranking import layer_scores, rank_agreement
from ..core.analysis.trace import TraceResult


SEARCH_SENSITIVITY = ("e2e", "local", "hessian")  # what a search can rank layers by (quantviz search --sensitivity)


@dataclass
class LayerScores:
    """One sensitivity number per layer for the layer table (the drop at ``bits``)."""

    method: str
    bits: int
    metric: str | None
    scores: dict[str, float]

    @property
    def unit(self) -> str:
        """What a score measures, for headers and tooltips."""
        if self.metric == "accuracy":
            return "accuracy drop (points)"
        return f"{self.metric} drop" if self.metric else "noise (dB)"

    @property
    def short_unit(self) -> str:
        """The unit of a cell: ``pt`` (percentage points), ``dB``, or the metric's own."""
        from ..core.fmt import PERCENT_METRICS

        if self.metric in PERCENT_METRICS:
            return "pt"
        return "dB" if self.metric in (None, "sqnr_db") else (self.metric or "")

    @property
    def header(self) -> str:
        """The table header: what a cell is, at which bit-width, in which unit (``Drop @2b (pt)``,
        ``ΔKL @4b`` for a metric without a unit of its own)."""
        from ..core.fmt import PERCENT_METRICS

        if self.metric in (None, "sqnr_db") or self.metric in PERCENT_METRICS:
            return f"Drop @{self.bits}b ({self.short_unit})"
        short = {"kl_div": "KL", "perplexity": "PPL", "cosine": "cos"}.get(self.metric, self.metric)
        return f"Δ{short} @{self.bits}b"

    def describe(self) -> str:
        """A sentence for tooltips: the metric, the unit, the bit-width and the method."""
        from ..core.fmt import METRIC_LABELS

        from ..core.sim.evaluate import higher_is_better

        if not self.metric:
            what = "output noise"
        else:
            label = METRIC_LABELS.get(self.metric, self.metric)
            what = f"{label} {'drop' if higher_is_better(self.metric) else 'increase'}"
        unit = f", in {self.short_unit}," if self.short_unit in ("pt", "dB") else ""
        how = {"e2e": "only this layer is quantized", "loo": "every layer but this one is quantized"}.get(
            self.method, "this layer is quantized")
        return (f"{what}{unit} when {how} to {self.bits} bits (sensitivity method "
                f"{self.method}). Larger means more sensitive.")

    def fmt(self, v: float | None) -> str:
        from ..core.fmt import PERCENT_METRICS, fmt_drop

        if v is None:
            return ""
        if self.metric in PERCENT_METRICS:
            return fmt_drop(self.metric, v).replace("+", "")
        return f"{v:.3g}"

    def to_dict(self) -> dict:
        return {"method": self.method, "bits": self.bits, "metric": self.metric, "scores": dict(self.scores)}

    @classmethod
    def from_dict(cls, d: dict) -> "LayerScores":
        return cls(str(d.get("method", "e2e")), int(d.get("bits", 0)), d.get("metric"),
                   {str(k): float(v) for k, v in (d.get("scores") or {}).items() if v is not None})


@dataclass
class Analysis:
    sensitivity: dict[str, dict] = field(default_factory=dict)  # method -> result
    scores: LayerScores | None = None  # from the newest e2e / loo sweep
    search: dict | None = None  # the newest search result (chosen point, Pareto front)
    deploy: dict | None = None  # the newest real-model measurement
    trace: TraceResult | None = None  # the newest error trace (:mod:`.trace`)
    qat: dict | None = None  # the newest quantization-aware training (settings, curves, before / after)
    metric: str | None = None  # what sensitivity and search rank by when not told (None: the primary metric)

    def to_dict(self) -> dict:
        return {"sensitivity": self.sensitivity, "scores": self.scores.to_dict() if self.scores else None,
                "search": self.search, "deploy": self.deploy,
                "trace": self.trace.to_dict() if self.trace is not None else None, "qat": self.qat,
                "metric": self.metric}

    @classmethod
    def from_dict(cls, d: dict | None) -> "Analysis":
        """Read a saved analysis; also reads version-1 session files' ``extras``."""
        d = d or {}
        scores = d.get("scores")
        if scores is None and d.get("sensitivity_score"):  # version 1 layout
            info = d.get("sensitivity_score_info") or {}
            scores = {"method": info.get("method", "e2e"), "bits": info.get("bits", 0), "metric": info.get("metric"),
                      "scores": d["sensitivity_score"]}
        trace = d.get("trace")
        return cls(dict(d.get("sensitivity") or {}), LayerScores.from_dict(scores) if scores else None,
                   d.get("search"), d.get("deploy"), TraceResult.from_dict(trace) if trace else None, d.get("qat"),
                   d.get("metric") if isinstance(d.get("metric"), str) else None)


class AnalysisMixin:
    """Session methods that run analyses and keep their results (see module doc).

    The settings it reads (``use_score_cache``, ``ray_address``, ``ray_workers``, ``trust``)
    are declared in ``Session.__init__``: the on-disk score cache
    (:mod:`quantviz.io.score_cache`), and Ray workers for sweeps and searches (:mod:`.scale`)."""

    def parts(self, ties=(), metric: str | None = None) -> sens.Parts:
        """What core analyses need from this session (the current config as the base)."""
        if not self.prepared:
            raise sens.SensitivityError("the session is not prepared (calibration and float reference missing)")
        return sens.Parts(self.sim, self.eval_data, self.calib_data, self.reference, dict(self.specs), self.batch_size,
                          self.device, self.bundle.evaluate_fn, ties=tuple(tuple(t) for t in ties), metric=metric)

    def run_sensitivity(self, method: str = "e2e", *, bits=sens.DEFAULT_BITS, act_bits=None, force: bool = False,
                        ties=(), progress: Progress = null_progress, cancel: Callable[[], bool] = lambda: False,
                        cache: bool | None = None, ray: str | None = None, metric: str | None = None,
                        **options) -> dict:
        """Run sensitivity ``method`` for the current config and keep the result.

        A result computed earlier for the same settings is returned as is (unless
        ``force``). ``act_bits=None`` sweeps 4 and 8 bit activations when the
        config quantizes activations. Proxies get a ``spearman`` entry when an
        e2e result for the same settings exists. ``cache`` (default
        ``use_score_cache``) reads and writes the on-disk score cache, cell by cell;
        ``ray`` (default ``ray_address``) runs the work on Ray workers."""
        metric = self.analysis.metric if metric is None else metric
        if act_bits is None:
            act_bits = sens.DEFAULT_ACT_BITS if any(s.activation.bits for s in self.specs.values()) else ()
        with self.lock:
            p = self.parts(ties, metric)
            old = self.analysis.sensitivity.get(method)
            if not force and methods.matches(old, p, method, bits, act_bits, options):
                return old
            store = executor = None
            if self.use_score_cache if cache is None else cache:
                from .scale import score_store

                store = score_store(self, p, method, options)
                store.read = not force  # force measures again (and refreshes the cache)
            address = self.ray_address if ray is None else ray
            try:
                if address and not (store is not None and store.get_result(methods.result_tag(method, bits, act_bits))):
                    from .scale import ray_executor

                    executor = ray_executor(self, address, ties, workers=self.ray_workers, trust=self.trust,
                                            metric=metric)
                res = methods.run(p, method, bits=bits, act_bits=act_bits, progress=progress, cancel=cancel, store=store,
                                  executor=executor, **options)
            finally:
                if executor is not None:
                    executor.close()
            self._store_sensitivity(method, res)
        self.events.emit("analysis_changed", what="sensitivity", method=method)
        return res

    def _store_sensitivity(self, method: str, res: dict) -> None:
        store = self.analysis.sensitivity
        key = res.get("key")
        e2e = res if method == "e2e" else store.get("e2e")
        if method != "e2e" and e2e and e2e.get("key") == key:
            res["spearman"] = rank_agreement(e2e, res)
        if method == "e2e":
            for m, other in store.items():
                if m != "e2e" and other.get("key") == key:
                    other["spearman"] = rank_agreement(res, other)
        store[method] = res
        if method in ("e2e", "loo") and res["bits"]:
            first = res["bits"][0]
            self.analysis.scores = LayerScores(method, first if isinstance(first, int) else int(from_key(first)),
                                               res.get("metric"), layer_scores(res))

    def run_search(self, *, avg_bits: float | None = None, size_bytes: int | None = None,
                   max_drop: float | None = None, bits=None, pareto_steps: int = 9,
                   solver: str = "auto", ties=(), progress: Progress = null_progress,
                   cancel: Callable[[], bool] = lambda: False, cache: bool | None = None,
                   ray: str | None = None, metric: str | None = None, sensitivity: str = "e2e",
                   measure: str = "less") -> dict:
        """Search a bit-width per layer for one budget (see :func:`quantviz.core.analysis.search.search`)
        and keep the result; every point carries the full config it stands for.

        ``sensitivity`` ranks the layers: ``e2e`` (one evaluation per layer and bit-width)
        or a cheap proxy, ``local`` or ``hessian`` (one calibration pass: what a large model
        can afford). A result of that method for the same settings, kept by the session or
        in the score cache (as ``quantviz sensitivity --method local`` leaves it), is reused.
        ``measure``: ``"less"`` screens the candidates on a subset of the evaluation samples and measures
        end to end only those that can still be the answer; ``"all"`` measures every candidate end to end
        (the result's ``full_evaluations`` counts them). ``bits`` None: :meth:`default_search_candidates`.

        The result's ``data`` says which samples its metrics are on (:attr:`split`): held out from
        calibration when the session holds out."""
        if sensitivity not in SEARCH_SENSITIVITY:
            raise search_mod.SearchError(f"unknown search sensitivity {sensitivity!r} "
                                         f"(choose from {', '.join(SEARCH_SENSITIVITY)})")
        bits = self.default_search_candidates() if bits is None else normalize(bits)
        metric = self.analysis.metric if metric is None else metric
        act_bits: tuple = ()
        if sensitivity == "local" and any(s.activation.bits for s in self.specs.values()):
            # a local sweep run with the sensitivity command's default activation bits serves as well
            if self._has_sensitivity("local", bits, sens.DEFAULT_ACT_BITS, ties, metric, cache):
                act_bits = sens.DEFAULT_ACT_BITS
        sens_res = self.run_sensitivity(sensitivity, bits=bits, act_bits=act_bits, ties=ties,
                                        progress=scaled(progress, 0.0, 0.5), cancel=cancel, cache=cache, ray=ray,
                                        metric=metric)
        address = self.ray_address if ray is None else ray
        with self.lock:
            executor = None
            try:
                if address:
                    from .scale import ray_executor

                    executor = ray_executor(self, address, ties, workers=self.ray_workers, trust=self.trust,
                                            metric=metric)
                res = search_mod.search(self.parts(ties, metric), sens_res, avg_bits=avg_bits, size_bytes=size_bytes,
                                        max_drop=max_drop, bits=bits, pareto_steps=pareto_steps, solver=solver,
                                        progress=scaled(progress, 0.5, 1.0), cancel=cancel, executor=executor,
                                        measure=measure)
            finally:
                if executor is not None:
                    executor.close()
            for pt in [res["chosen"], *res["pareto"]]:
                pt.setdefault("config", self._config_with_bits(pt["bits"], pt.get("name")))
            split = getattr(self, "split", None)
            if split is not None:
                res["data"] = split.to_dict()  # the pick's metric: on held-out samples, or said to be on calibration data
            self.analysis.search = res
        self.events.emit("analysis_changed", what="search")
        return res

    def default_search_candidates(self, bits=search_mod.DEFAULT_BITS) -> tuple:
        """What a search chooses among when not told: ``bits`` plus the per-group and GPTQ
        candidates that apply to this model (:func:`quantviz.core.analysis.candidates.default_candidates`)."""
        return default_candidates(self.layers, self.specs, self.sim.algorithm_applies, bits)

    def _has_sensitivity(self, method: str, bits, act_bits, ties, metric, cache) -> bool:
        """Is a ``method`` result for these settings kept by the session or in the score cache?"""
        with self.lock:
            p = self.parts(ties, metric)
            if methods.matches(self.analysis.sensitivity.get(method), p, method, bits, act_bits, {}):
                return True
            if not (self.use_score_cache if cache is None else cache):
                return False
            from .scale import score_store

            return score_store(self, p, method, {}).get_result(methods.result_tag(method, bits, act_bits)) is not None

    def _config_with_bits(self, bits_by_layer: dict, name: str | None) -> dict:
        cfg = self.config.copy()
        for n, b in bits_by_layer.items():
            c = from_key(b)
            cfg.set_layer(n, patch_at(c))
        if name:
            cfg.name = name
        return cfg.to_dict()

    def run_benchmark(self, *, batch: int = 32, repeats: int = 20, backends=None, progress: Progress = null_progress,
                      cancel: Callable[[], bool] = lambda: False) -> dict:
        """Build and time the real quantized models of the current config (:mod:`.deploy`) and keep the report."""
        from .deploy import BACKENDS, benchmark

        rep = benchmark(self, batch=batch, repeats=repeats, backends=BACKENDS if backends is None else backends,
                        progress=progress, cancel=cancel)
        self.set_deploy(rep)
        return rep

    def run_trace(self, **kw) -> TraceResult:
        """Trace the current config's error layer by layer and keep it (:func:`.trace.run_trace`)."""
        from .trace import run_trace

        return run_trace(self, **kw)

    def set_deploy(self, report: dict) -> None:
        """Keep a real-model measurement (:func:`quantviz.session.deploy.benchmark`)."""
        self.analysis.deploy = report
        self.events.emit("analysis_changed", what="deploy")

    @property
    def analysis_metric(self) -> str | None:
        """The metric sensitivity and search rank by: the chosen one, else the primary (None before prepare)."""
        from ..core.sim.evaluate import primary_metric

        ref = getattr(self, "reference", None)
        if self.analysis.metric:
            return self.analysis.metric
        return primary_metric(ref.metrics) if ref is not None and ref.metrics else None

    def set_analysis_metric(self, metric: str | None) -> None:
        """Rank sensitivity and search by ``metric`` (a key of the float reference's metrics; None or the
        primary metric: the default). Kept with the session's analysis (session files, autosave)."""
        from ..core.sim.evaluate import primary_metric

        ref = getattr(self, "reference", None)
        known = list(ref.metrics) if ref is not None else []
        if metric is not None and metric not in known:
            raise sens.SensitivityError(f"unknown metric {metric!r}; this model has: {', '.join(known) or 'none yet'}")
        if metric is not None and metric == primary_metric(ref.metrics):
            metric = None  # the default: results stay comparable with runs that named no metric
        if metric != self.analysis.metric:
            self.analysis.metric = metric
            self.events.emit("analysis_changed", what="metric")

    def clear_analysis(self) -> None:
        self.analysis = Analysis(metric=self.analysis.metric)
        self.events.emit("analysis_changed", what="all")


__all__ = ["Analysis", "AnalysisMixin", "LayerScores", "SEARCH_SENSITIVITY"]
