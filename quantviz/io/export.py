"""Exports of a session's current config: one entry point for CLI and app.

``export(session, fmt, path, *, force, progress, cancel)`` writes

* ``json``: the quantviz config plus every layer's computed qparams (scale,
  zero point, grid, clip range) and its ONNX tensor names;
* ``onnx``: a QDQ model (opset 21) that ONNX Runtime runs;
* ``aimet``: AIMET encodings 1.0.0 naming the ONNX export's tensors;
* ``torchao``: a torchao-quantized state dict (``torch.save``) plus a Python
  file applying the same config (``<stem>_torchao.py`` next to it), and, when
  convolutions have 8-bit weights and activations, the pt2e-converted int8
  program (``<stem>_pt2e.pt2``, ``torch.export.save``);
* ``report``: a self-contained HTML report.

Every file is written atomically; an existing file is kept unless
``force``; a failed or cancelled export leaves nothing behind.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..core.errors import Cancelled, QuantvizError
from ..core.progress import Progress, null_progress
from . import atomic

FORMATS = ("json", "onnx", "aimet", "torchao", "report")
SUFFIX = {"json": ".json", "onnx": ".onnx", "aimet": ".encodings", "torchao": ".pt", "report": ".html"}
EXPORT_FORMAT = "quantviz-export"
EXPORT_VERSION = 1


@dataclass
class ExportResult:
    format: str
    paths: list[Path]
    notes: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"format": self.format, "paths": [str(p) for p in self.paths], "notes": list(self.notes),
                "details": self.details}


def _check_cancel(cancel) -> None:
    if cancel():
        raise Cancelled("export cancelled")


def example_input(session):
    return session.eval_data.first_input()


def safe_onnx_names(session, notes: list[str]) -> dict:
    """Layer -> ONNX tensor names, or {} with a note when ONNX export is unavailable."""
    from .onnx_export import onnx_names

    try:
        return onnx_names(session.sim, example_input(session))
    except QuantvizError as exc:
        notes.append(f"ONNX tensor names left out: {exc}")
        return {}


def qparams_table(session, tensors: dict | None = None) -> dict:
    """Per layer: its spec, weight and activation qparams, and ONNX names."""
    out = {}
    specs = session.specs
    with session.lock:
        for info in session.layers:
            spec = specs[info.name]
            wq = session.sim.quantize_weight(info.name, spec.weight)
            aq = (session.sim.activation_qparams(info.name, spec.activation)
                  if info.has_activation_input and session.sim.calibrated else None)
            w = None
            if wq is not None:
                w = wq.qparams.to_dict()
                w.update(granularity=spec.weight.granularity, group_size=spec.weight.effective_group_size(),
                         axis=None if spec.weight.granularity == "per_tensor" else info.channel_axis,
                         sqnr_db=wq.sqnr_db)
            entry = {"type": info.type, "weight_shape": list(info.weight_shape), "channel_axis": info.channel_axis,
                     "spec": spec.to_dict(), "weight": w, "activation": aq.to_dict() if aq is not None else None}
            if tensors is not None:
                entry["onnx"] = tensors.get(info.name)
            out[info.name] = entry
    return out


def json_document(session, notes: list[str]) -> dict:
    from ..session.session import sanitize

    tensors = safe_onnx_names(session, notes)
    return sanitize({
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "model": session.name,
        "reference": session.bundle.reference,
        "config": session.config.to_dict(),
        "conventions": {
            "quantize": "q = clamp(round(x / scale) + zero_point, qmin, qmax)",
            "dequantize": "x = (q - zero_point) * scale",
            "per_channel": "one scale per index of 'axis' of the weight",
            "per_group": "weight moved so 'axis' is first, flattened to (channels, rest) row-major, "
                         "split into groups of group_size; scales are channel-major",
            "activation": "per-tensor, applied to the input of the layer",
            "min_max": "the clip range each group's qparams were computed from",
        },
        "onnx_opset": 21,
        "layers": qparams_table(session, tensors),
    })


# ------------------------------------------------------------------ writers
def _write_json(session, path, force, progress, cancel) -> ExportResult:
    notes: list[str] = []
    progress(0, 2, "computing qparams")
    doc = json_document(session, notes)
    _check_cancel(cancel)
    atomic.write_text(path, json.dumps(doc, indent=1, allow_nan=False) + "\n", force=force)
    progress(2, 2, "done")
    return ExportResult("json", [Path(path)], notes)


def _write_onnx(session, path, force, progress, cancel) -> ExportResult:
    from .onnx_export import build_qdq, save_model

    atomic.check_writable(path, force)
    with session.lock:
        ex = build_qdq(session.sim, session.specs, example_input(session), progress=progress, cancel=cancel)
    _check_cancel(cancel)
    atomic.write_with(path, lambda tmp: save_model(ex.model, tmp), force=force)
    return ExportResult("onnx", [Path(path)], list(ex.notes),
                        {"tensors": {k: v.to_dict() for k, v in ex.tensors.items()}, "inputs": ex.input_names,
                         "outputs": ex.output_names})


def _write_aimet(session, path, force, progress, cancel) -> ExportResult:
    from .aimet import encodings

    atomic.check_writable(path, force)
    notes: list[str] = []
    progress(0, 2, "finding ONNX tensor names")
    with session.lock:
        tensors = safe_onnx_names(session, notes)
        _check_cancel(cancel)
        doc = encodings(session, tensors, notes)
    atomic.write_text(path, json.dumps(doc, indent=1) + "\n", force=force)
    progress(2, 2, "done")
    return ExportResult("aimet", [Path(path)], notes)


def torchao_script_path(path: str | Path) -> Path:
    p = Path(path)
    return p.with_name(f"{p.stem}_torchao.py")


def pt2e_program_path(path: str | Path) -> Path:
    p = Path(path)
    return p.with_name(f"{p.stem}_pt2e.pt2")


def _pt2e_program(session, notes: list[str], cancel):
    """The pt2e-converted program for convolutions with 8-bit weights and activations, or None."""
    import torch

    from ..core.backends import pt2e_backend as pb

    p = pb.plan(session.sim.layers, session.specs)
    convs = [n for n in p.kernels if session.sim.by_name[n].type != "Linear"]
    if not convs:
        return None
    if session.calib_data is None or not isinstance(session.calib_data.first_input(), torch.Tensor):
        notes.append("pt2e: convolutions stay simulated (needs calibration data and a model taking one tensor)")
        return None
    example = next(iter(session.calib_data.batches(session.batch_size)))[0]
    calib = [x for x, _ in session.calib_data.batches(session.batch_size)]
    _check_cancel(cancel)
    try:
        with session.lock:
            converted, plan = pb.convert(session.sim, session.specs, calib, example)
    except QuantvizError as exc:
        notes.append(f"{exc}; convolutions stay simulated")
        return None
    notes.append(f"pt2e int8 program for {', '.join(plan.kernels)} (torch.export.load, then torchao's "
                 "lower_pt2e_quantized_to_x86 or torch.compile); apply_pt2e() in the script does the same "
                 "to your own model")
    return converted, example, pb.script_section(plan, pb.input_ranges(session.sim, session.specs, plan.kernels))


def _write_torchao(session, path, force, progress, cancel) -> ExportResult:
    from ..core.backends import pt2e_backend as pb
    from ..core.backends import torchao_backend as tb

    script = torchao_script_path(path)
    atomic.check_writable(path, force)
    atomic.check_writable(script, force)
    progress(0, 3, "quantizing with torchao")
    with session.lock:
        model, plan = tb.build(session.sim, session.specs)
    _check_cancel(cancel)
    notes: list[str] = []
    progress(1, 3, "convolutions through pt2e")
    program = _pt2e_program(session, notes, cancel) if session.prepared else None
    program_path = pt2e_program_path(path)
    if program is not None:
        atomic.check_writable(program_path, force)
    _check_cancel(cancel)
    with contextlib.ExitStack() as stack:
        tmp_model = stack.enter_context(atomic.atomic_path(path, force=force))
        tmp_script = stack.enter_context(atomic.atomic_path(script, force=force))
        tmp_program = stack.enter_context(atomic.atomic_path(program_path, force=force)) if program else None
        tb.save(model, plan, tmp_model, session.name)
        tmp_script.write_text(tb.script_source(plan, session.name) + (program[2] if program else ""), encoding="utf-8")
        if program is not None:
            pb.save_program(program[0], program[1], tmp_program)
    progress(3, 3, "done")
    notes += [f"{n}: simulated ({why})" for n, why in plan.simulated.items()]
    files = [Path(path), script] + ([program_path] if program is not None else [])
    return ExportResult("torchao", files, notes, plan.to_dict())


def _write_report(session, path, force, progress, cancel) -> ExportResult:
    from .report import render_report

    atomic.check_writable(path, force)
    html = render_report(session, progress=progress, cancel=cancel)
    atomic.write_text(path, html, force=force)
    return ExportResult("report", [Path(path)])


WRITERS = {"json": _write_json, "onnx": _write_onnx, "aimet": _write_aimet, "torchao": _write_torchao,
           "report": _write_report}


def export(session, fmt: str, path: str | Path, *, force: bool = False, progress: Progress = null_progress,
           cancel: Callable[[], bool] = lambda: False) -> ExportResult:
    """Write the session's current config in format ``fmt`` to ``path``."""
    fmt = str(fmt).lower()
    if fmt not in WRITERS:
        raise QuantvizError(f"unknown export format {fmt!r} (choose from {', '.join(FORMATS)})")
    if not session.prepared and fmt != "torchao":
        raise QuantvizError("the session is not calibrated yet; open the model with its data first")
    return WRITERS[fmt](session, Path(path), force, progress, cancel)


__all__ = ["export", "ExportResult", "FORMATS", "SUFFIX", "qparams_table", "json_document", "torchao_script_path", "pt2e_program_path"]
