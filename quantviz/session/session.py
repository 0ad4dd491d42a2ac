"""The session: the single source of truth while a model is open (no Qt).

It owns the loaded model (:class:`ModelBundle`), the simulation
(:class:`QuantSim`), the data, the current :class:`QuantConfig` with its undo
history, cached statistics and every re-check result. Front ends call its
methods; it reports changes through :attr:`Session.events`:

* ``config_changed`` (change: :class:`ConfigChange`; also ``label`` and
  ``layers``) after every edit, undo or redo: the one description of an edit
  that the table, histogram, size and re-check all use;
* ``result`` (result) when a re-check finished;
* ``estimate`` (generation, snapshot) while a re-check streams;
* ``loaded`` (session) once a model is open and prepared;
* ``analysis_changed`` (what, ...) when a sensitivity, search or deployment
  result was stored (:mod:`.analysis`).

Long methods take ``progress`` and ``cancel`` and are safe to run on a worker
thread; they hold :attr:`lock` while they use the simulation.
"""
from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import torch

from ..core import sources
from ..core.model.data import DataSplit, Dataset, split_holdout
from ..core.errors import QuantvizError
from ..core.sim.evaluate import FloatReference, default_reference_bytes, float_reference
from ..core.sim.fakequant import QuantSim
from ..core.model.layers import LayerInfo
from ..core.progress import Progress, null_progress, scaled
from ..core.model.size import SizeModel, SizeReport
from ..core.numerics.spec import LayerSpec
from ..core.numerics.specmap import SpecMap
from ..io import atomic
from ..io.jsonsafe import sanitize
from ..io.config import ConfigError, QuantConfig, preset
from .analysis import Analysis, AnalysisMixin
from .events import Events
from .exports import ExportsMixin
from .qat import QATMixin
from .undo import Edit, UndoHistory

if TYPE_CHECKING:
    from .recheck import Rechecker

SESSION_FORMAT = "quantviz-session"
SESSION_VERSION = 2  # 2: typed "analysis" instead of free-form "extras"
DEFAULT_CALIB_SAMPLES = 512  # at most; one data set split for calibration gives at most half of it


class SessionError(QuantvizError):
    pass


class NeedsData(SessionError):
    """The model carries no data of its own: the caller must name evaluation data (``--data``; the app asks)."""


@dataclass(frozen=True)
class ConfigChange:
    """One edit, as every listener sees it: the new spec of exactly the layers whose
    resolved settings changed, and the model size under the new config."""

    label: str
    changed: dict  # {layer name: LayerSpec}
    size: SizeReport

    @property
    def layers(self) -> list[str]:
        return list(self.changed)


@dataclass(frozen=True)
class CheckRequest:
    """A re-check the session asked for: run it with :meth:`Session.check`. It carries the config's
    resolved, immutable ``specs`` (the session resolved them once), so the worker does not resolve
    again; the config is the session's own object (the session never changes an installed config)."""

    generation: int
    config: QuantConfig
    label: str
    specs: SpecMap | None = None


@dataclass
class CheckResult:
    generation: int
    label: str
    config: dict
    metrics: dict
    float_metrics: dict
    size: dict
    timestamp: float = field(default_factory=time.time)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "generation": self.generation,
            "label": self.label,
            "config": self.config,
            "metrics": self.metrics,
            "float_metrics": self.float_metrics,
            "size": self.size,
            "timestamp": self.timestamp,
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "CheckResult":
        return cls(int(d.get("generation", 0)), str(d.get("label", "")), dict(d["config"]), dict(d["metrics"]),
                   dict(d.get("float_metrics", {})), dict(d["size"]), float(d.get("timestamp", 0.0)),
                   float(d.get("seconds", 0.0)))


def _finite(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def imported_config(bundle: sources.ModelBundle) -> QuantConfig | None:
    """The quantization a QDQ ONNX file carries (its Q/DQ parameters), as a config; None otherwise.
    Layers without Q/DQ stay float."""
    layers = bundle.meta.get("onnx_qdq")
    if not layers:
        return None
    from ..io.config import CURRENT_VERSION, FORMAT

    cfg = QuantConfig.from_dict({"format": FORMAT, "version": CURRENT_VERSION,
                                 "default": {"weight": {"bits": None}, "activation": {"bits": None}},
                                 "layers": layers, "name": f"Q/DQ of {bundle.name}"})
    cfg.source = bundle.name
    return cfg


class Session(AnalysisMixin, ExportsMixin, QATMixin):
    def __init__(self, bundle: sources.ModelBundle, *, eval_data: Dataset, calib_data: Dataset,
                 config: QuantConfig | None = None, device: str = "cpu", batch_size: int = 64,
                 data_ref: str | None = None, calib_ref: str | None = None, cache_bytes: int | None = None,
                 split: DataSplit | None = None):
        # ---- what is open
        self.bundle: sources.ModelBundle = bundle
        self.eval_data: Dataset = eval_data
        self.calib_data: Dataset = calib_data
        self.device: str = device
        self.batch_size: int = batch_size
        self.data_ref: str | None = data_ref
        self.calib_ref: str | None = calib_ref
        # which samples calibrate and which evaluate (default: separate data, as a caller building one gives it)
        self.split: DataSplit = split or DataSplit(len(calib_data), len(eval_data), same_source=calib_data is eval_data)
        self.calib_samples: int = DEFAULT_CALIB_SAMPLES  # how open() split one data set (kept in session files)
        self.holdout: bool = True
        self.seq_len: int | None = None  # how text data was cut (Ray workers open the same data the same way)
        # ---- settings (the CLI and the app set them after opening)
        self.use_score_cache: bool = True  # keep sensitivity results in the on-disk score cache
        self.ray_address: str | None = None  # None: sweeps and searches run here (see session.scale)
        self.ray_workers: int | None = None
        self.trust: bool = False  # the user trusts pickled modules (Ray workers reopen the model)
        self.cache_bytes: int | None = cache_bytes  # re-check cache budget (None: session.recheck.default_budget)
        # ---- state
        self.events: Events = Events()
        self.lock: threading.RLock = threading.RLock()
        self.history: UndoHistory = UndoHistory()
        self.results: list[CheckResult] = []
        self.analysis: Analysis = Analysis()  # sensitivity / search / deploy results, saved with the session
        self._generation: int = 0  # newest generation handed out
        self._wanted: int = 0  # generation of the re-check whose result is the one to show
        self._config: QuantConfig = (config or imported_config(bundle) or preset("W8")).copy()
        self.sim: QuantSim = QuantSim(bundle.model, fold_bn=self._config.fold_bn, device=device,
                                      equalize=bool(self._config.options.get("cle", False)),
                                      readout=bundle.meta.get("readout"))
        self._config.check_layers(self.layer_names)
        self._specs: SpecMap = self._resolve(self._config)  # resolved once per config
        self._config_dict: dict = self._config.to_dict()
        self._sizer: SizeModel = SizeModel(self.sim.float_model, self.layers)
        self.reference: FloatReference | None = None
        self._prepared: bool = False
        self._recheck: Rechecker | None = None  # built on first use (session.recheck)
        # ---- trained weights (session.qat) and the caches of other session modules
        self._trained_states: dict[str, dict] = {}  # QAT-trained float states by tag
        self._kept_original: dict | None = None  # the untrained state, kept while trained weights are loaded
        self._weights_written: set[tuple[str, int]] = set()  # (weights file, state id) already on disk
        self._scale_fps: tuple | None = None  # (eval data, calib data, fingerprints) for the score cache
        self._trace_basis: tuple | None = None  # (kept trace, what it was computed against, specs traced)

    # --------------------------------------------------------- opening
    @classmethod
    def open(cls, reference: str, *, data: str | None = None, calib: str | None = None, trust: bool = False,
             config: QuantConfig | None = None, device: str = "cpu", batch_size: int = 64,
             calib_samples: int = DEFAULT_CALIB_SAMPLES, prepare: bool = True,
             progress: Progress = null_progress, cancel: Callable[[], bool] = lambda: False,
             cache_bytes: int | None = None, seq_len: int | None = None, holdout: bool = True) -> "Session":
        """Open a model with its data.

        Calibration and evaluation data: ``calib`` and ``data`` when both are
        given (as given); ``data`` alone, or a source carrying only evaluation
        data, is split by :func:`quantviz.core.model.data.split_holdout` (calibration
        on the first ``calib_samples`` samples, at most half, evaluation on the
        rest; ``holdout=False``: on all of them, figures then on calibration
        data); without ``data``, the source's own. :attr:`split` says which."""
        progress(0, 1000, f"loading {reference}")
        bundle = sources.load_model(reference, trust=trust, cancel=cancel)
        source_data = sources.load_data(data, bundle, seq_len=seq_len) if data else bundle.eval
        if source_data is None:
            raise NeedsData(f"{reference}: this model carries no data; pass --data (an .npz with x[, y], an image folder, or a text file)")
        if calib:
            eval_data = source_data
            calib_data = sources.load_data(calib, bundle, seq_len=seq_len)
            same = bool(data) and _same_file(data, calib)
            split = DataSplit(len(calib_data), len(eval_data), same_source=same,
                              reason="--calib names the same data as --data" if same else "")
        elif data or bundle.calib is None:
            calib_data, eval_data, split = split_holdout(source_data, calib_samples, hold_out=holdout)
        else:
            eval_data, calib_data = source_data, bundle.calib
            split = DataSplit(len(calib_data), len(eval_data))
        sources.prepare_for_data(bundle, eval_data)
        sources.check_fits(bundle, eval_data)
        if calib:
            sources.check_fits(bundle, calib_data)
        s = cls(bundle, eval_data=eval_data, calib_data=calib_data, config=config, device=device,
                batch_size=batch_size, data_ref=data, calib_ref=calib, cache_bytes=cache_bytes, split=split)
        s.seq_len = seq_len  # how text data was cut (Ray workers open the same data the same way)
        s.calib_samples, s.holdout = int(calib_samples), bool(holdout)  # kept in session files
        if prepare:
            s.prepare(progress=scaled(progress, 0.1, 1.0), cancel=cancel)
        return s

    def prepare(self, *, progress: Progress = null_progress, cancel: Callable[[], bool] = lambda: False) -> None:
        """Calibrate activation statistics and compute the float reference."""
        with self.lock:
            if self._recheck is not None:
                self._recheck.invalidate()  # cached activations belong to the old calibration
            self.sim.calibrate(self.calib_data, batch_size=self.batch_size, progress=scaled(progress, 0.0, 0.5), cancel=cancel)
            self.reference = float_reference(self.sim.float_model, self.eval_data, device=self.device,
                                             batch_size=self.batch_size, evaluate_fn=self.bundle.evaluate_fn,
                                             progress=scaled(progress, 0.5, 1.0), cancel=cancel,
                                             first_chunk=self.recheck.first_chunk_size(),
                                             task=self.bundle.meta.get("task"), readout=self.sim.readout,
                                             keep_bytes=default_reference_bytes(self.sim.float_weight_bytes))
            self._prepared = True
        self.events.emit("loaded", session=self)

    def prepare_like(self, other: "Session") -> None:
        """Prepare from ``other`` instead of computing: a copy of its activation statistics and float
        reference, no forward pass. ``other`` must be a prepared session of the same model (equal float
        state), the same evaluation and calibration data and the same batch size and device; a
        SessionError says what differs. The two sessions share nothing afterwards. (The test suite
        prepares each window's demo this way from one calibrated demo.)"""
        if other is self:
            return
        if not other.prepared:
            raise SessionError(f"{other.name}: not prepared, nothing to take")
        why = _preparation_differs(self, other)
        if why:
            raise SessionError(f"cannot take the preparation of {other.name}: {why} differ")
        import copy
        import dataclasses

        with self.lock:
            if self._recheck is not None:
                self._recheck.invalidate()  # cached activations belong to the old calibration
            self.sim.use_calibration(other.sim, self.calib_data, self.batch_size)
            ref = copy.deepcopy(dataclasses.replace(other.reference, recompute=None))
            if other.reference.recompute is not None:  # outputs over the memory budget: from this model
                from ..core.sim.evaluate import _rows_recomputer

                ref.recompute = _rows_recomputer(self.sim.float_model, self.eval_data, self.device, self.sim.readout)
            self.reference = ref
            self._prepared = True
        self.events.emit("loaded", session=self)

    @property
    def prepared(self) -> bool:
        return self._prepared

    # ----------------------------------------------------------- layers
    @property
    def layers(self) -> list[LayerInfo]:
        return self.sim.layers

    @property
    def layer_names(self) -> list[str]:
        return [l.name for l in self.sim.layers]

    def layer(self, name: str) -> LayerInfo:
        try:
            return self.sim.by_name[name]
        except KeyError:
            raise SessionError(f"no quantizable layer named {name!r}") from None

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.sim.float_model.parameters())

    # ----------------------------------------------------------- config
    @property
    def config(self) -> QuantConfig:
        return self._config

    @property
    def specs(self) -> dict[str, LayerSpec]:
        """The resolved spec of every layer under the current config (cached; do not mutate)."""
        return self._specs

    def spec(self, name: str) -> LayerSpec:
        self.layer(name)
        return self._specs[name]

    def _resolve(self, cfg: QuantConfig) -> SpecMap:
        """``cfg``'s resolved specs: the one resolution of a config (validates: bad manual ranges etc.)."""
        return SpecMap(cfg.resolve_all(self.layers))

    def set_config(self, cfg: QuantConfig, label: str = "set config", *, record: bool = True) -> None:
        self._commit(cfg.copy(), label, record=record)  # the caller keeps its config

    def _commit(self, new: QuantConfig, label: str, *, record: bool = True) -> None:
        """Make ``new`` (the session's from now on: never changed after) current as one edit."""
        cfg = new
        cfg.check_layers(self.layer_names)
        if bool(cfg.options.get("cle", False)) != self.sim.equalize:
            raise ConfigError("config: options.cle differs from the open session; reopen the model to change "
                              "cross-layer equalization")
        if cfg.fold_bn != self.sim.fold_bn:
            raise ConfigError("config: options.fold_bn differs from the open session; reopen the model to change BatchNorm folding")
        self.check_weights(cfg)
        specs = self._resolve(new)
        after = new.to_dict()
        if record:  # recorded before the change is announced, so listeners see the new undo state
            self.history.push(Edit(label, self._config_dict, after))
        self._install(new, specs, label, after)

    def _install(self, cfg: QuantConfig, specs: SpecMap, label: str, as_dict: dict | None = None) -> None:
        """Make ``cfg`` current and announce the one :class:`ConfigChange` it makes: what changed is
        computed here, once (:meth:`SpecMap.changed_from`, remembered for the simulation and the re-check)."""
        reloaded = self._sync_weights(cfg)  # trained weights named by the config (session.qat)
        changed = {n: specs[n] for n in (specs if reloaded else specs.changed_from(self._specs))}
        self._config, self._specs = cfg, specs
        self._config_dict = as_dict if as_dict is not None else cfg.to_dict()
        change = ConfigChange(label, changed, self._sizer.report(specs))
        self.events.emit("config_changed", change=change, label=label, layers=change.layers)

    def edit_layers(self, names: Iterable[str], patch: dict, label: str | None = None) -> None:
        """Merge ``patch`` (``{"weight": {...}, "activation": {...}}``) into each layer."""
        names = list(names)
        for n in names:
            self.layer(n)
        cfg = self._config.copy()
        for n in names:
            cfg.set_layer(n, patch)
        self._commit(cfg, label or f"edit {len(names)} layer(s)")

    def layers_of_type(self, type_name: str) -> list[str]:
        return [l.name for l in self.layers if l.type == type_name]

    def layers_matching(self, pattern: str) -> list[str]:
        import re

        try:
            rx = re.compile(pattern)
        except re.error as exc:
            raise SessionError(f"invalid pattern {pattern!r}: {exc}") from None
        return [l.name for l in self.layers if rx.search(l.name)]

    def apply_preset(self, name: str, layers: Iterable[str] | None = None) -> None:
        from ..io.config import LLAMA_PRESETS

        if str(name).upper() in LLAMA_PRESETS:  # llama.cpp's mix: a type per layer, from this model's layers
            from ..io.gguf_export import llama_preset_config

            p = QuantConfig.from_dict(llama_preset_config(self.sim, name))
            setting = lambda n: p.layers[n]  # noqa: E731
        else:
            p = preset(name)
            setting = lambda n: p.resolve(self.layer(n)).to_dict()  # noqa: E731
        if layers is None:
            cfg = p.copy()
            cfg.options = dict(self._config.options)
            self._commit(cfg, f"preset {p.name}")
            return
        layers = list(layers)
        cfg = self._config.copy()
        for n in layers:
            cfg.layers[n] = setting(n)
        self._commit(cfg, f"preset {p.name} on {len(layers)} layer(s)")

    def set_range(self, name: str, kind: str, lo: float, hi: float) -> None:
        """Make ``kind`` ("weight" / "activation") of layer ``name`` use manual [lo, hi]."""
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
            raise ConfigError(f"layers.{name}.{kind}.range: lo ({lo:g}) must be smaller than hi ({hi:g})")
        self.edit_layers([name], {kind: {"range": {"method": "manual", "lo": float(lo), "hi": float(hi)}}},
                         f"{kind} range of {name} = [{lo:.4g}, {hi:.4g}]")

    def undo(self) -> bool:
        e = self.history.undo()
        if e is None:
            return False
        cfg = QuantConfig.from_dict(e.before)
        self._install(cfg, self._resolve(cfg), f"undo {e.label}", e.before)
        return True

    def redo(self) -> bool:
        e = self.history.redo()
        if e is None:
            return False
        cfg = QuantConfig.from_dict(e.after)
        self._install(cfg, self._resolve(cfg), f"redo {e.label}", e.after)
        return True

    # ------------------------------------------------------ statistics
    def layer_row(self, name: str, spec: LayerSpec | None = None) -> dict:
        """Everything the layer table shows for one layer (cheap after first call)."""
        info = self.layer(name)
        spec = spec or self.spec(name)
        row = {
            "name": name,
            "type": info.type,
            "params": info.params,
            "weight_shape": list(info.weight_shape),
            "weight_bits": spec.weight.bits,
            "act_bits": spec.activation.bits if info.has_activation_input else None,
            "granularity": spec.weight.granularity,
            "group_size": spec.weight.effective_group_size(),
            "symmetric": spec.weight.symmetric,
            "grid": spec.weight.grid,
            "range": spec.weight.range.describe(),
            "algorithm": spec.weight.algorithm,
            "act_range": spec.activation.range.describe(),
            "weight_sqnr_db": None,
            "act_sqnr_db": None,
            "clipped": None,
        }
        with self.lock:
            wq = self.sim.quantize_weight(name, spec.weight)
            if wq is not None:
                row["weight_sqnr_db"] = wq.sqnr_db
                row["clipped"] = wq.clipped_fraction
                if wq.algorithm_info:
                    from ..core.numerics.preview import algorithm_text

                    row["algorithm_note"] = algorithm_text(wq.algorithm_info)
            if info.has_activation_input and spec.activation.bits is not None and self.sim.calibrated:
                row["act_sqnr_db"] = self.sim.activation_sqnr(name, spec.activation)
        from ..core.model.size import layer_weight_bytes

        row["size_bytes"] = layer_weight_bytes(info, spec)
        scores = self.analysis.scores
        row["sensitivity"] = scores.scores.get(name) if scores else None
        return row

    def weight_stats(self, name: str) -> dict:
        w = self.sim.float_weight(name).float()
        std = float(w.std()) if w.numel() > 1 else 0.0
        amax = float(w.abs().max())
        return {"min": float(w.min()), "max": float(w.max()), "mean": float(w.mean()), "std": std,
                "absmax": amax, "absmax_over_std": amax / std if std > 0 else None,
                "zero": amax == 0.0}

    def size(self, specs: dict[str, LayerSpec] | None = None) -> SizeReport:
        return self._sizer.report(specs if specs is not None else self._specs)

    # --------------------------------------------------------- re-check
    @property
    def recheck(self):
        """The incremental re-check engine (:class:`~quantviz.session.recheck.Rechecker`)."""
        if self._recheck is None:
            from .recheck import Rechecker

            self._recheck = Rechecker(self, budget_bytes=self.cache_bytes)
        return self._recheck

    def next_generation(self) -> int:
        self._generation += 1
        return self._generation

    def result_for(self, config: QuantConfig | None = None) -> CheckResult | None:
        """The newest recorded result of ``config`` (default: the current one), if any."""
        d = self._config_dict if config is None else config.to_dict()
        for r in reversed(self.results):
            if r.config == d:
                return r
        return None

    def request_check(self, label: str | None = None) -> CheckRequest | None:
        """Ask for the current config's metrics.

        The session remembers which generation is wanted, so only its result
        and estimates are the ones to show (:meth:`is_wanted`). When a result
        for this config is already known, it becomes the wanted one, is
        announced again as a ``result`` event and None is returned; otherwise
        run the returned request with ``check(request=...)`` (on a worker)."""
        known = self.result_for()
        if known is not None and not self.sim.pending_algorithms(self._specs):
            # (a result kept from before, e.g. in a reopened session file, whose per-layer algorithms this
            # simulation has not computed yet is checked again: the re-check computes them, and the table's
            # "pending" cells and the histogram follow it; #22 item 8)
            self._wanted = known.generation
            self.events.emit("result", result=known)
            return None
        cfg = self._config
        req = CheckRequest(self.next_generation(), cfg, label or self.history.undo_label or cfg.name or "current config",
                           self._specs)
        self._wanted = req.generation
        return req

    @property
    def wanted_generation(self) -> int:
        """The generation of the re-check whose result is the one to show."""
        return self._wanted

    def is_wanted(self, generation: int) -> bool:
        """Is ``generation`` the re-check whose result and estimates should be shown?"""
        return generation == self._wanted

    def check(self, *, config: QuantConfig | None = None, label: str | None = None, generation: int | None = None,
              request: CheckRequest | None = None, progress: Progress = null_progress,
              cancel: Callable[[], bool] = lambda: False,
              on_estimate: Callable[[dict], None] | None = None, record: bool = True,
              incremental: bool = True) -> CheckResult:
        """Evaluate ``config`` (default: the current one) against the float model.

        ``incremental`` recomputes only what depends on the layers that differ
        from the cached state (:mod:`.recheck`); the metrics equal those of a
        full pass (``incremental=False``) exactly."""
        if not self._prepared:
            raise SessionError("the session is not prepared (calibration and float reference missing)")
        specs = None
        if request is not None:
            config, label, generation, specs = request.config, request.label, request.generation, request.specs
        if config is None:
            cfg, specs = self._config, self._specs
        elif specs is None:  # a config that did not come from the session: resolved here
            cfg = config.copy()
            specs = self._resolve(cfg)
        else:
            cfg = config
        gen = generation if generation is not None else self.next_generation()
        t0 = time.perf_counter()

        def estimate(snap):
            snap["generation"] = gen
            if on_estimate:
                on_estimate(snap)
            self.events.emit("estimate", generation=gen, snapshot=snap)

        with self.lock:
            metrics = self.recheck.evaluate(specs, incremental=incremental, progress=progress, cancel=cancel,
                                            on_estimate=estimate)
        size = self.size(specs)
        res = CheckResult(gen, label or cfg.name or "custom", cfg.to_dict(), metrics, dict(self.reference.metrics),
                          size.to_dict(), seconds=time.perf_counter() - t0)
        if record:
            self.results.append(res)
            self.events.emit("result", result=res)
        return res

    # ------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        return {
            "format": SESSION_FORMAT,
            "version": SESSION_VERSION,
            "model": self.bundle.reference,
            "data": self.data_ref,
            "calib": self.calib_ref,
            "calib_samples": self.calib_samples,
            "holdout": self.holdout,
            "seq_len": self.seq_len,
            "batch_size": self.batch_size,
            "config": self._config.to_dict(),
            "results": [r.to_dict() for r in self.results],
            "analysis": self.analysis.to_dict(),
        }

    def save(self, path: str | Path, *, force: bool = True) -> Path:
        d = self.to_dict()
        self._save_weights(path, d)
        text = json.dumps(sanitize(d), indent=1, default=_json_default, allow_nan=False)
        return atomic.write_text(path, text + "\n", force=force)

    @staticmethod
    def read_file(path: str | Path) -> dict:
        p = Path(path)
        try:
            obj = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SessionError(f"{p}: no such file") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SessionError(f"{p}: not a quantviz session file ({type(exc).__name__})") from None
        if not isinstance(obj, dict) or obj.get("format") != SESSION_FORMAT:
            raise SessionError(f"{p}: not a quantviz session file (missing \"format\": \"{SESSION_FORMAT}\")")
        if obj.get("version") not in (1, SESSION_VERSION):
            raise SessionError(f"{p}: unsupported session version {obj.get('version')!r}")
        QuantConfig.from_dict(obj.get("config"), f"{p.name}: config")
        return obj

    @classmethod
    def load(cls, path: str | Path, *, trust: bool = False, device: str = "cpu",
             progress: Progress = null_progress, cancel: Callable[[], bool] = lambda: False) -> "Session":
        obj = cls.read_file(path)
        cfg = QuantConfig.from_dict(obj["config"])
        # a file saved before held-out evaluation has no "holdout": it opens on the data it was measured on
        # (its results stay true; the summary says when they are on calibration data)
        s = cls.open(obj["model"], data=obj.get("data"), calib=obj.get("calib"), trust=trust,
                     config=cls._strip_weights(cfg.copy())[0], device=device, progress=progress, cancel=cancel,
                     calib_samples=_int_or(obj.get("calib_samples"), DEFAULT_CALIB_SAMPLES),
                     holdout=bool(obj.get("holdout", False)), seq_len=_int_or(obj.get("seq_len"), None),
                     batch_size=_int_or(obj.get("batch_size"), 64))
        s._restore_weights(obj, path, cfg)
        s.results = [CheckResult.from_dict(r) for r in obj.get("results", [])]
        s.analysis = Analysis.from_dict(obj.get("analysis", obj.get("extras")))
        if s.results:
            s._generation = max(r.generation for r in s.results)
        return s


def _int_or(v, default):
    return int(v) if isinstance(v, int) and not isinstance(v, bool) and v > 0 else default


def _same_file(a: str, b: str) -> bool:
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except OSError:
        return False


def _preparation_differs(a: Session, b: Session) -> str:
    """What keeps ``a`` from using ``b``'s calibration and float reference ('' when nothing)."""
    if (a.bundle.reference, a.data_ref, a.calib_ref) != (b.bundle.reference, b.data_ref, b.calib_ref):
        return "model or data references"
    if (a.batch_size, str(a.device), a.sim.readout) != (b.batch_size, str(b.device), b.sim.readout):
        return "batch size, device or readout"
    sa, sb = a.sim.float_model.state_dict(), b.sim.float_model.state_dict()
    if list(sa) != list(sb) or not all(_same(sa[k], sb[k]) for k in sa):
        return "float models"
    for x, y in ((a.eval_data, b.eval_data), (a.calib_data, b.calib_data)):
        if len(x) != len(y) or not (_same(x.x, y.x) and _same(x.y, y.y)):
            return "evaluation or calibration data"
    return ""


def _same(x, y) -> bool:
    """Equal tensors, or dicts / lists / tuples of them (None equals None)."""
    if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
        return x.shape == y.shape and x.dtype == y.dtype and torch.equal(x, y)
    if isinstance(x, dict) and isinstance(y, dict):
        return list(x) == list(y) and all(_same(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
        return len(x) == len(y) and all(_same(u, v) for u, v in zip(x, y))
    return x is None and y is None


def _json_default(o):
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, float):
        return _finite(o)
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


__all__ = ["Session", "SessionError", "NeedsData", "CheckResult", "CheckRequest", "ConfigChange", "sanitize"]
