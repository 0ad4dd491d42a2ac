"""Session methods that hand narrow inputs to the exporters and importers of :mod:`quantviz.io`.

io never sees a session: :meth:`ExportsMixin.export_input` gathers the model
parts, specs, config and (for the report) the facts to state, computing a
re-check first when the current config has none.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..core.progress import Progress, null_progress, scaled
from ..io import export as export_mod
from ..io.report import ReportFacts


class ExportsMixin:
    def report_facts(self, *, progress: Progress = null_progress,
                     cancel: Callable[[], bool] = lambda: False) -> ReportFacts:
        """What the HTML report states; re-checks (and traces) the current config when no result is known."""
        res = self.result_for()
        if res is None:
            res = self.check(progress=progress, cancel=cancel, record=False)
        trace = self.run_trace(progress=progress, cancel=cancel)  # the kept one when it is of this config
        trace_dict = trace.to_dict()
        trace_dict["label"] = res.label
        rows = [self.layer_row(n) for n in self.layer_names]
        a = self.analysis
        return ReportFacts(self.name, str(self.bundle.reference), self.bundle.kind, self.num_params, len(self.eval_data),
                           len(self.calib_data), {"label": res.label, "metrics": dict(res.metrics),
                                                  "float_metrics": dict(res.float_metrics), "size": dict(res.size)},
                           rows, dict(a.sensitivity), a.scores.to_dict() if a.scores else None, a.search, trace_dict,
                           self.split.describe())

    def export_input(self, fmt: str | None = None, *, progress: Progress = null_progress,
                     cancel: Callable[[], bool] = lambda: False, target: str = "ort") -> export_mod.ExportInput:
        """The :class:`~quantviz.io.export.ExportInput` of the current config."""
        facts = self.report_facts(progress=progress, cancel=cancel) if fmt == "report" else None
        return export_mod.ExportInput(self.name, str(self.bundle.reference), self.sim, dict(self.specs), self.config,
                                      example=self.eval_data.first_input(), calib=self.calib_data,
                                      batch_size=self.batch_size, prepared=self.prepared, lock=self.lock, report=facts,
                                      target=target)

    def export(self, fmt: str, path: str | Path, *, force: bool = False, progress: Progress = null_progress,
               cancel: Callable[[], bool] = lambda: False, target: str = "ort") -> export_mod.ExportResult:
        """Write the current config in format ``fmt`` (see :mod:`quantviz.io.export`); ``target``
        is the ONNX export's runtime (``ort`` or ``tensorrt``, :mod:`quantviz.io.onnx_targets`)."""
        fmt = export_mod.check_format(fmt)
        if fmt == "report":
            inp = self.export_input(fmt, progress=scaled(progress, 0.0, 0.5), cancel=cancel)
            progress = scaled(progress, 0.5, 1.0)
        else:
            inp = self.export_input(fmt, target=target)
        return export_mod.export(inp, fmt, path, force=force, progress=progress, cancel=cancel)

    def import_aimet(self, source, *, tensors: dict | None = None, notes: list[str] | None = None):
        """A config reproducing AIMET encodings on this model (:func:`quantviz.io.aimet.import_aimet`)."""
        from ..io.aimet import import_aimet

        with self.lock:
            return import_aimet(source, self.sim, self.config, example=self.eval_data.first_input(),
                                tensors=tensors, notes=notes)

    def load_config_file(self, path, *, notes: list[str] | None = None):
        """The config of any config-bearing file quantviz writes or reads.

        quantviz configs, JSON exports and session files carry it as JSON;
        AIMET encodings are matched against this model (:meth:`import_aimet`).
        """
        from ..io.config import NeedsModel, QuantConfig, load_config

        if _is_gguf(path):  # a llama.cpp model file: its per-tensor types on this model
            from ..io.gguf_export import config_from_gguf

            with self.lock:
                cfg = QuantConfig.from_dict(config_from_gguf(path, self.sim), where=str(path))
            cfg.source = Path(path).name
            return cfg
        try:
            return load_config(path)
        except NeedsModel:
            cfg = self.import_aimet(path, notes=notes)
            cfg.source = Path(path).name
            return cfg


__all__ = ["ExportsMixin"]


def _is_gguf(path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False
