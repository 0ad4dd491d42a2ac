"""Quantization-aware training as a session state (:class:`QATMixin`).

:meth:`QATMixin.run_qat` trains with :func:`quantviz.core.training.qat.train_qat` on a
copy of the simulation's float model (the session is untouched while it runs,
so a cancelled run changes nothing), then makes the result the current state
in one undoable edit: the config names the trained weights
(``options.weights``: a tag such as ``"qat-1"``) and carries the learned
ranges (LSQ) as manual ranges. Whenever the config's weight tag changes (that
edit, its undo and redo), the session loads the named weights into the
simulation, so the re-check, sensitivity, the histogram and every export read
the trained weights. The curves are kept in ``analysis.qat``
(``analysis_changed`` with ``what="qat"``). A saved session keeps the trained
weights in a ``.pt`` file next to the session file.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Callable

import torch

from ..core.model.data import Dataset
from ..core.errors import QuantvizError
from ..core.model.layers import fold_batchnorm
from ..core.progress import Progress, null_progress, scaled
from ..core.training.qat import QATInputs, QATOptions, train_qat
from ..io import atomic

WEIGHTS_OPTION = "weights"


class QATMixin:
    """Session methods for quantization-aware training (see module doc)."""

    # ------------------------------------------------------------ weights
    @property
    def trained(self) -> dict:
        """Trained weight states held by this session, by tag."""
        return self._trained_states

    @property
    def weights_tag(self) -> str | None:
        """The tag of the weights the simulation holds (None: the model's own)."""
        return self.config.options.get(WEIGHTS_OPTION)

    def check_weights(self, cfg) -> None:
        tag = cfg.options.get(WEIGHTS_OPTION)
        if tag is not None and tag not in self.trained:
            raise QuantvizError(f"config: options.weights names trained weights {tag!r} that this session does not hold")

    def _original_model(self):
        """A fresh float model as the simulation built it (folded, equalized), before any training."""
        base = copy.deepcopy(self.bundle.model).eval()
        if self.sim.fold_bn and self.sim.folded_pairs:
            base, _ = fold_batchnorm(base, inplace=True)
        if getattr(self.sim, "equalize", False):  # as QuantSim built its float model
            from ..core.algorithms.cle import equalize

            equalize(base)
        return base

    def _original_state(self) -> dict:
        kept = self._kept_original
        if kept is not None:  # the simulation may hold the caller's model itself: trained loads overwrite it
            return kept
        return self._original_model().state_dict()

    def untrained_float_model(self):
        """The float model the metrics compare with when the simulation holds trained weights (None when
        it holds the original ones: then ``sim.float_model`` is that model)."""
        if self.config.options.get(WEIGHTS_OPTION) is None:
            return None
        base = self._original_model()
        base.load_state_dict(self._original_state())
        return base.to(self.sim.device)

    def _sync_weights(self, cfg) -> bool:
        """Load the weights ``cfg`` names if they are not the ones held; True when loaded."""
        want, have = cfg.options.get(WEIGHTS_OPTION), self.config.options.get(WEIGHTS_OPTION)
        if want == have:
            return False
        self.check_weights(cfg)
        with self.lock:
            if want is not None and self._kept_original is None:
                self._kept_original = {k: v.detach().clone() for k, v in self.sim.float_model.state_dict().items()}
            self.sim.load_state(self._original_state() if want is None else self.trained[want])
            if self._recheck is not None:
                self._recheck.invalidate()
        return True

    # ------------------------------------------------------------ training
    @property
    def train_data(self) -> Dataset:
        """The model's own training data, else its calibration data."""
        return self.bundle.train if self.bundle.train is not None else self.calib_data

    def qat_inputs(self, train: Dataset | None = None) -> QATInputs:
        with self.lock:
            specs = dict(self.specs)
            actqp = {}
            for l in self.layers:
                a = specs[l.name].activation
                if l.has_activation_input and a.bits is not None:
                    qp = self.sim.activation_qparams(l.name, a)
                    if qp is not None:
                        actqp[l.name] = qp
            model = copy.deepcopy(self.sim.float_model)
        return QATInputs(model, list(self.layers), specs, actqp, train or self.train_data, self.eval_data,
                         self.reference, self.bundle.evaluate_fn, self.bundle.loss_fn, str(self.device))

    def run_qat(self, options: QATOptions | None = None, *, train: Dataset | None = None,
                checkpoint: str | Path | None = None, on_step: Callable[[dict], None] | None = None,
                watch: Callable[[], set] | None = None, progress: Progress = null_progress,
                cancel: Callable[[], bool] = lambda: False, pause: Callable[[], bool] = lambda: False) -> dict:
        """Train the current config with fake quantization and make the result the
        current state (one undo entry). Returns the stored record (settings, curves,
        the metric before and after, time)."""
        from ..io.config import ConfigError

        opt = options or QATOptions()
        if not self.prepared:
            raise QuantvizError("the session is not prepared (calibration and float reference missing)")
        if not any(s.weight.bits or s.activation.bits for s in self.specs.values()):
            raise ConfigError("QAT: the config quantizes nothing (choose bit-widths first)")
        cfg = self.config.copy()
        before = self.result_for(cfg) or self.check(config=cfg, label=cfg.name or "before QAT",
                                                    progress=scaled(progress, 0.0, 0.05), cancel=cancel)
        inp = self.qat_inputs(train)
        t0 = time.perf_counter()
        res = train_qat(inp, opt, checkpoint=checkpoint, on_step=on_step, watch=watch,
                        progress=scaled(progress, 0.05, 0.95), cancel=cancel, pause=pause)
        seconds = time.perf_counter() - t0
        tag = f"qat-{len(self.trained) + 1}"
        while tag in self.trained:
            tag += "+"
        self.trained[tag] = res.state
        new = cfg.copy()
        new.options[WEIGHTS_OPTION] = tag
        for name, (lo, hi) in res.act_ranges.items():
            new.set_layer(name, {"activation": {"range": {"method": "manual", "lo": float(lo), "hi": float(hi)}}})
        for name, (lo, hi) in res.weight_ranges.items():
            new.set_layer(name, {"weight": {"range": {"method": "manual", "lo": float(lo), "hi": float(hi)}}})
        new.name = f"{cfg.name or 'config'} + QAT"
        label = f"QAT ({opt.steps} steps{', LSQ' if opt.lsq else ''})"
        self.set_config(new, label)
        after = self.check(label=label, progress=scaled(progress, 0.95, 1.0), cancel=lambda: False)
        record = {"tag": tag, "label": label, "settings": res.options, "loss": res.loss,
                  "train": getattr(inp.train, "name", "training data"), "train_samples": len(inp.train),
                  "seconds": seconds, "steps": res.steps, "curves": res.curves,
                  "before": {"metrics": dict(before.metrics), "config": before.config},
                  "after": {"metrics": dict(after.metrics), "config": after.config},
                  "float": dict(self.reference.metrics)}
        self.analysis.qat = record
        self.events.emit("analysis_changed", what="qat")
        return record

    # --------------------------------------------------------- persistence
    def _save_weights(self, path: str | Path, d: dict) -> None:
        """Write the held trained weights next to the session file and name them in ``d``."""
        tag = self.weights_tag
        if tag is None:
            return
        p = Path(path)
        wfile = p.with_name(f"{p.stem}.{tag}.pt")
        written = self._weights_written
        key = (str(wfile.resolve()), id(self.trained[tag]))
        if key not in written or not wfile.is_file():  # a tag's weights never change: write once per file
            atomic.write_with(wfile, lambda tmp: torch.save(self.trained[tag], tmp))
            written.add(key)
        d["weights"] = {"tag": tag, "file": wfile.name}

    @staticmethod
    def _strip_weights(cfg):
        tag = cfg.options.pop(WEIGHTS_OPTION, None)
        return cfg, tag

    def _restore_weights(self, obj: dict, path: str | Path, cfg) -> None:
        """After opening a saved session: load its trained weights and install ``cfg`` (no undo entry)."""
        w = obj.get("weights")
        tag = cfg.options.get(WEIGHTS_OPTION)
        if tag is None:
            return
        if not isinstance(w, dict) or w.get("tag") != tag:
            raise QuantvizError(f"{Path(path).name}: the config names trained weights {tag!r} but the file does not say where they are")
        wfile = Path(path).with_name(str(w.get("file")))
        try:
            state = torch.load(wfile, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise QuantvizError(f"{wfile.name}: the trained weights of this session are missing (expected next to {Path(path).name})") from None
        except Exception as exc:  # noqa: BLE001
            raise QuantvizError(f"{wfile.name}: cannot read the trained weights ({type(exc).__name__})") from None
        self.trained[tag] = state
        self.set_config(cfg, "open trained weights", record=False)


__all__ = ["QATMixin", "WEIGHTS_OPTION"]
