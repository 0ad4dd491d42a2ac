"""Exports of a config: one entry point for CLI and app.

``export(inp, fmt, path, *, force, progress, cancel)`` takes an
:class:`ExportInput` (the model parts, the resolved specs, the config and, for
the report, the facts it reports; ``Session.export_input()`` builds one) and
writes

* ``json``: the quantviz config plus every layer's computed qparams (scale,
  zero point, grid, clip range) and its ONNX tensor names;
* ``onnx``: a QDQ model (opset 21) for a target runtime: ``ort`` (ONNX
  Runtime's CPU kernels, the default) or ``tensorrt`` (signed int8 / int4,
  zero point 0, TensorRT's Q/DQ placement; :mod:`.onnx_targets`);
* ``aimet``: AIMET encodings 1.0.0 naming the ONNX export's tensors, plus the
  float ONNX model they apply to with every quantized weight on its grid
  (``<stem>_model.onnx``), so a consumer that re-quantizes the float weights
  gets the simulation's codes whatever its rounding of .5 ties;
* ``torchao``: a torchao-quantized state dict (``torch.save``) plus a Python
  file applying the same config (``<stem>_torchao.py`` next to it), and, when
  convolutions have 8-bit weights and activations, the pt2e-converted int8
  program (``<stem>_pt2e.pt2``, ``torch.export.save``);
* ``executorch``: an ExecuTorch program (``.pte``) whose 8-bit Conv2d /
  Linear layers run XNNPACK int8 kernels on quantviz's grids
  (:mod:`quantviz.core.backends.executorch_backend`);
* ``report``: a self-contained HTML report;
* ``gguf``: a GGUF file for llama.cpp, every layer in the llama.cpp type its config
  gives it (``q4_k`` ...), the rest float (:mod:`.gguf_export`; Llama and GPT-2 layouts);
* ``llama-tensor-types``: the ``--tensor-type-file`` of ``llama-quantize`` (one
  ``NAME=TYPE`` line per quantized tensor);
* ``compressed-tensors``: a Hugging Face folder in the compressed-tensors format
  (what llm-compressor writes and vLLM loads): W4A16 / W8A16 packed, W8A8 int8,
  FP8, per layer as the config chose (:mod:`.ctensors_export`).

Every file is written atomically; an existing file is kept unless
``force``; a failed or cancelled export leaves nothing behind.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..core.errors import Cancelled, QuantvizError
from ..core.progress import Progress, null_progress
from . import atomic
from .jsonsafe import sanitize

FORMATS = ("json", "onnx", "aimet", "torchao", "executorch", "report", "gguf", "llama-tensor-types",
           "compressed-tensors")
SUFFIX = {"json": ".json", "onnx": ".onnx", "aimet": ".encodings", "torchao": ".pt", "executorch": ".pte",
          "report": ".html", "gguf": ".gguf", "llama-tensor-types": ".txt",
          "compressed-tensors": ""}  # a folder
EXPORT_FORMAT = "quantviz-export"
EXPORT_VERSION = 1


@dataclass
class ExportInput:
    """Everything an exporter reads, and nothing more.

    ``sim`` is the simulation (float model, layers, quantized weights, activation
    observers), ``specs`` the resolved spec of every layer, ``config`` the config
    they come from. ``example`` is one input batch (ONNX tracing), ``calib`` the
    calibration data (pt2e), ``lock`` guards ``sim`` while it is read, and
    ``report`` carries what the HTML report states (:class:`.report.ReportFacts`).
    """

    name: str
    reference: str
    sim: Any
    specs: dict
    config: Any
    example: Any = None
    calib: Any = None
    batch_size: int = 64
    prepared: bool = True
    lock: Any = field(default_factory=contextlib.nullcontext)
    report: Any = None
    target: str = "ort"  # the ONNX export's rule set (onnx_targets.TARGETS)


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


def safe_onnx_names(inp: ExportInput, notes: list[str]) -> dict:
    """Layer -> ONNX tensor names, or {} with a note when ONNX export is unavailable."""
    from .onnx_export import onnx_names

    try:
        return onnx_names(inp.sim, inp.example)
    except QuantvizError as exc:
        notes.append(f"ONNX tensor names left out: {exc}")
        return {}


def qparams_table(inp: ExportInput, tensors: dict | None = None) -> dict:
    """Per layer: its spec, weight and activation qparams, and ONNX names."""
    out = {}
    sim, specs = inp.sim, inp.specs
    with inp.lock:
        for info in sim.layers:
            spec = specs[info.name]
            wq = sim.quantize_weight(info.name, spec.weight)
            aq = (sim.input_qparams(info.name, spec)
                  if info.has_activation_input and sim.calibrated else None)
            w = None
            if wq is not None:
                w = wq.qparams.to_dict()
                w.update(granularity=spec.weight.granularity, group_size=spec.weight.effective_group_size(),
                         axis=None if spec.weight.granularity == "per_tensor" else info.channel_axis,
                         sqnr_db=wq.sqnr_db)
                if w.get("block_size"):  # block formats: blocks along each channel's flattened input values
                    per_row = info.weight_numel // max(info.channels, 1)
                    w.update(granularity="per_block", group_size=None, axis=info.channel_axis,
                             partial_last_block=per_row % w["block_size"])
                if wq.algorithm_info:
                    w["algorithm"] = algorithm_summary(wq)
                if wq.codes is not None:  # the algorithm's integer codes, row-major in the weight's layout
                    w["codes"] = wq.codes.flatten().tolist()
                if wq.bias is not None:
                    w["bias"] = wq.bias.flatten().tolist()
                if wq.input_scale is not None:  # the layer computes Q(W diag(s)) (x / s)
                    w["input_scale"] = wq.input_scale.flatten().tolist()
            entry = {"type": info.type, "weight_shape": list(info.weight_shape), "channel_axis": info.channel_axis,
                     "spec": spec.to_dict(), "weight": w, "activation": aq.to_dict() if aq is not None else None}
            if tensors is not None:
                entry["onnx"] = tensors.get(info.name)
            out[info.name] = entry
    return out


def needs_opset(specs: dict) -> int:
    from .onnx_formats import needs_opset as _n

    return _n(specs)
def algorithm_summary(wq) -> dict:
    """The short, JSON-friendly part of a per-layer algorithm's report."""
    return {k: v for k, v in wq.algorithm_info.items() if not isinstance(v, list)}


def json_document(inp: ExportInput, notes: list[str]) -> dict:
    tensors = safe_onnx_names(inp, notes)
    return sanitize({
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "model": inp.name,
        "reference": inp.reference,
        "config": inp.config.to_dict(),
        "conventions": {
            "quantize": "q = clamp(round(x / scale) + zero_point, qmin, qmax)",
            "dequantize": "x = (q - zero_point) * scale",
            "per_channel": "one scale per index of 'axis' of the weight",
            "per_group": "weight moved so 'axis' is first, flattened to (channels, rest) row-major, "
                         "split into groups of group_size; scales are channel-major",
            "activation": "per-tensor, applied to the input of the layer",
            "min_max": "the clip range each group's qparams were computed from",
            "formats": "format != int (FP8 / MX / NVFP4): value = element * scale, elements rounded to nearest "
                       "even and saturated; 'scale' per group (FP8: per tensor / channel / group) or per block "
                       "(channel-major, blocks_per_row per channel along the flattened input values; a partial "
                       "last block is zero-padded and has its own scale); scale_e8m0 = biased exponents (scale = "
                       "2^(code-127)); NVFP4: scale = tensor_scale * scale_e4m3",
            "grid": "symmetric grids: full = [-2^(b-1), 2^(b-1)-1], scale = max(max/qmax, min/qmin); "
                    "torch = the same grid, scale = max(|min|, |max|) / ((qmax - qmin) / 2); "
                    "restricted = [-(2^(b-1)-1), 2^(b-1)-1], scale = max(|min|, |max|) / qmax",
        },
        "onnx_opset": needs_opset(inp.specs),
        "layers": qparams_table(inp, tensors),
    })


# ------------------------------------------------------------------ writers
def _write_json(inp: ExportInput, path, force, progress, cancel) -> ExportResult:
    notes: list[str] = []
    progress(0, 2, "computing qparams")
    doc = json_document(inp, notes)
    _check_cancel(cancel)
    atomic.write_text(path, json.dumps(doc, indent=1, allow_nan=False) + "\n", force=force)
    progress(2, 2, "done")
    return ExportResult("json", [Path(path)], notes)


def _write_onnx(inp: ExportInput, path, force, progress, cancel) -> ExportResult:
    from .onnx_export import build_qdq, save_model

    atomic.check_writable(path, force)
    with inp.lock:
        ex = build_qdq(inp.sim, inp.specs, inp.example, progress=progress, cancel=cancel, target=inp.target,
                       calib=inp.calib)
    _check_cancel(cancel)
    atomic.write_with(path, lambda tmp: save_model(ex.model, tmp), force=force)
    return ExportResult("onnx", [Path(path)], list(ex.notes),
                        {"tensors": {k: v.to_dict() for k, v in ex.tensors.items()}, "inputs": ex.input_names,
                         "outputs": ex.output_names, "target": inp.target})


def aimet_model_path(path: str | Path) -> Path:
    """The float ONNX model with on-grid weights written next to AIMET encodings."""
    p = Path(path)
    return p.with_name(f"{p.stem}_model.onnx")


def _write_aimet(inp: ExportInput, path, force, progress, cancel) -> ExportResult:
    """Encodings plus the model they apply to, its quantized weights on the grid (tie-free)."""
    from .aimet import encodings
    from .onnx_export import ongrid_float_model, save_model

    model_path = aimet_model_path(path)
    atomic.check_writable(path, force)
    atomic.check_writable(model_path, force)
    notes: list[str] = []
    progress(0, 3, "exporting the model with on-grid weights")
    model = None
    with inp.lock:
        try:
            if inp.example is None:
                raise QuantvizError("no example input to trace")
            model, found, missing = ongrid_float_model(inp.sim, inp.specs, inp.example)
            tensors = {k: v.to_dict() for k, v in found.items()}
            notes += [f"{n}: not found in the exported ONNX graph; its encoding names <layer>.weight" for n in missing]
        except QuantvizError as exc:
            notes.append(f"ONNX model with on-grid weights not written, tensor names left out: {exc}")
            tensors = {}
        _check_cancel(cancel)
        progress(1, 3, "computing encodings")
        doc = encodings(inp.sim, inp.specs, tensors, notes)
    _check_cancel(cancel)
    with contextlib.ExitStack() as stack:
        tmp_enc = stack.enter_context(atomic.atomic_path(path, force=force))
        tmp_model = stack.enter_context(atomic.atomic_path(model_path, force=force)) if model is not None else None
        Path(tmp_enc).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        if model is not None:
            save_model(model, tmp_model)
    progress(3, 3, "done")
    return ExportResult("aimet", [Path(path)] + ([model_path] if model is not None else []), notes)


def torchao_script_path(path: str | Path) -> Path:
    p = Path(path)
    return p.with_name(f"{p.stem}_torchao.py")


def pt2e_program_path(path: str | Path) -> Path:
    p = Path(path)
    return p.with_name(f"{p.stem}_pt2e.pt2")


def _pt2e_program(inp: ExportInput, notes: list[str], cancel):
    """The pt2e-converted program for convolutions with 8-bit weights and activations, or None."""
    import torch

    from ..core.backends import pt2e_backend as pb

    p = pb.plan(inp.sim.layers, inp.specs)
    convs = [n for n in p.kernels if inp.sim.by_name[n].type != "Linear"]
    if not convs:
        return None
    if inp.calib is None or not isinstance(inp.calib.first_input(), torch.Tensor):
        notes.append("pt2e: convolutions stay simulated (needs calibration data and a model taking one tensor)")
        return None
    from ..core.model.data import fixed_batch_of

    fixed = fixed_batch_of(inp.sim.float_model)  # a program exported with a fixed batch size runs at that size
    bs = fixed or inp.batch_size
    calib = [x for x, _ in inp.calib.batches(bs) if not fixed or x.shape[0] == fixed]
    if not calib:
        notes.append(f"pt2e: convolutions stay simulated (the program takes batches of {fixed}; "
                     "the calibration data has fewer samples)")
        return None
    example = calib[0]
    _check_cancel(cancel)
    try:
        with inp.lock:
            converted, plan = pb.convert(inp.sim, inp.specs, calib, example)
    except QuantvizError as exc:
        notes.append(f"{exc}; convolutions stay simulated")
        return None
    notes.append(f"pt2e int8 program for {', '.join(plan.kernels)} (torch.export.load, then torchao's "
                 "lower_pt2e_quantized_to_x86 or torch.compile); apply_pt2e() in the script does the same "
                 "to your own model")
    return (converted, example, pb.script_section(plan, pb.input_ranges(inp.sim, inp.specs, plan.kernels)),
            list(plan.kernels))


def torchao_notes(layers, plan, pt2e_kernels: list[str], model_file: str, program_file: str | None) -> list[str]:
    """What runs on int8 kernels and what is simulated, per layer type, then per simulated layer.

    A layer torchao leaves simulated in ``model_file`` (a convolution: torchao has no kernel
    for it) but that the pt2e program lowers runs on an int8 kernel there, and is said so."""
    types = {l.name: l.type for l in layers}
    pt2e = set(pt2e_kernels) if program_file else set()
    by_type: dict[str, list[int]] = {}  # type -> [torchao kernels, pt2e int8 kernels, of those simulated in
    for n in list(plan.kernels) + list(plan.simulated):  # model_file, simulated everywhere]
        c = by_type.setdefault(types[n], [0, 0, 0, 0])
        c[0] += n in plan.kernels
        c[1] += n in pt2e
        c[2] += n in pt2e and n in plan.simulated
        c[3] += n in plan.simulated and n not in pt2e
    notes = []
    for t, (ao, pe, pe_only, sim) in by_type.items():
        parts = []
        if ao:
            parts.append(f"{ao} on torchao kernels in {model_file}")
        if pe:
            parts.append(f"{pe} on int8 kernels in the pt2e program {program_file}"
                         + (f" ({pe_only} of them fake-quantized in {model_file}: torchao has no {t} kernel)"
                            if pe_only else ""))
        if sim:
            parts.append(f"{sim} simulated (fake-quantized weights)")
        notes.append(f"{t}: " + "; ".join(parts))
    for n, why in plan.simulated.items():
        if n in pt2e:
            notes.append(f"{n}: int8 kernel in the pt2e program {program_file}; simulated in {model_file} ({why})")
        else:
            notes.append(f"{n}: simulated ({why})")
    return notes


def _write_torchao(inp: ExportInput, path, force, progress, cancel) -> ExportResult:
    from ..core.backends import pt2e_backend as pb
    from ..core.backends import torchao_backend as tb

    script = torchao_script_path(path)
    atomic.check_writable(path, force)
    atomic.check_writable(script, force)
    progress(0, 3, "quantizing with torchao")
    with inp.lock:
        model, plan = tb.build(inp.sim, inp.specs)
    _check_cancel(cancel)
    notes: list[str] = []
    progress(1, 3, "convolutions through pt2e")
    program = _pt2e_program(inp, notes, cancel) if inp.prepared else None
    program_path = pt2e_program_path(path)
    if program is not None:
        atomic.check_writable(program_path, force)
    _check_cancel(cancel)
    with contextlib.ExitStack() as stack:
        tmp_model = stack.enter_context(atomic.atomic_path(path, force=force))
        tmp_script = stack.enter_context(atomic.atomic_path(script, force=force))
        tmp_program = stack.enter_context(atomic.atomic_path(program_path, force=force)) if program else None
        tb.save(model, plan, tmp_model, inp.name)
        tmp_script.write_text(tb.script_source(plan, inp.name) + (program[2] if program else ""), encoding="utf-8")
        if program is not None:
            pb.save_program(program[0], program[1], tmp_program)
    progress(3, 3, "done")
    pt2e_kernels = program[3] if program is not None else []
    notes += torchao_notes(inp.sim.layers, plan, pt2e_kernels, Path(path).name,
                           program_path.name if program is not None else None)
    files = [Path(path), script] + ([program_path] if program is not None else [])
    return ExportResult("torchao", files, notes, dict(plan.to_dict(), pt2e_kernels=pt2e_kernels))


def _write_report(inp: ExportInput, path, force, progress, cancel) -> ExportResult:
    from .report import render_report

    atomic.check_writable(path, force)
    if inp.report is None:
        raise QuantvizError("report: the export input carries no report facts (build it with Session.export_input(\"report\"))")
    html = render_report(inp.report, inp.sim, inp.specs, progress=progress, cancel=cancel)
    atomic.write_text(path, html, force=force)
    return ExportResult("report", [Path(path)])


def _write_executorch(inp: ExportInput, path, force, progress, cancel) -> ExportResult:
    from ..core.backends import executorch_backend as eb

    atomic.check_writable(path, force)
    if inp.calib is None:
        raise QuantvizError("executorch: needs calibration data")
    calib = [x for x, _ in inp.calib.batches(inp.batch_size)]
    example = calib[0]  # a full batch: torch.export specialises a batch of 1
    progress(0, 2, "exporting and lowering to XNNPACK")
    with inp.lock:
        data, plan, dynamic = eb.build(inp.sim, inp.specs, calib, example)
    _check_cancel(cancel)
    atomic.write_with(path, lambda tmp: Path(tmp).write_bytes(data), force=force)
    progress(2, 2, "done")
    notes = [f"{len(plan.kernels)} layer(s) on XNNPACK int8 kernels"]
    notes += [f"{n}: float on portable kernels ({why})" for n, why in plan.simulated.items()]
    if not dynamic:
        notes.append(f"the program takes batches of {example.shape[0]} (a dynamic batch could not be exported)")
    return ExportResult("executorch", [Path(path)], notes, dict(plan.to_dict(), dynamic_batch=dynamic,
                                                                  batch=None if dynamic else int(example.shape[0])))


def _model_folder(inp: ExportInput) -> Path:
    folder = Path(inp.reference)
    if not folder.is_dir():
        raise QuantvizError(f"gguf: the model {inp.reference!r} is not a Hugging Face folder (GGUF export reads its "
                            "config and tokenizer.json)")
    return folder


def _write_gguf(inp: ExportInput, path, force, progress, cancel) -> ExportResult:
    from ..core.numerics.ggml import GGML_TYPES
    from .gguf_export import write_gguf_file

    atomic.check_writable(path, force)
    folder = _model_folder(inp)
    progress(0, 2, "quantizing the tensors in their llama.cpp types")
    _check_cancel(cancel)
    box = {}
    with inp.lock:
        atomic.write_with(path, lambda tmp: box.update(plan=write_gguf_file(
            inp.sim, inp.specs, tmp, name=inp.name, folder=folder)), force=force)
    progress(2, 2, "done")
    types = box["plan"].types
    counts: dict = {}
    for t in types.values():
        counts[t] = counts.get(t, 0) + 1
    quant = sum(v for k, v in counts.items() if k.lower() in GGML_TYPES)
    notes = [f"{len(types)} tensors, {quant} in llama.cpp types: "
             + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))]
    return ExportResult("gguf", [Path(path)], notes, {"tensor_types": dict(types)})


def _write_tensor_types(inp: ExportInput, path, force, progress, cancel) -> ExportResult:
    from .gguf_export import tensor_types_text

    atomic.check_writable(path, force)
    text = tensor_types_text(inp.sim, inp.specs)
    atomic.write_text(path, text, force=force)
    n = text.count("\n")
    return ExportResult("llama-tensor-types", [Path(path)],
                        [f"{n} tensor types; use: llama-quantize --tensor-type-file {Path(path).name} IN.gguf OUT.gguf TYPE"])


def _write_ctensors(inp: ExportInput, path, force, progress, cancel) -> ExportResult:
    from .ctensors_export import write_ctensors_folder

    atomic.check_writable_dir(path, force)
    folder = Path(inp.reference)
    if not folder.is_dir():
        raise QuantvizError(f"compressed-tensors needs a Hugging Face model folder; {inp.reference!r} is not one")
    progress(0, 2, "writing the compressed tensors")
    _check_cancel(cancel)
    box = {}
    with inp.lock, atomic.atomic_dir(path, force=force) as tmp:
        box["plan"] = write_ctensors_folder(inp.sim, inp.specs, tmp, folder=folder)
        names = sorted(p.name for p in tmp.iterdir())
        _check_cancel(cancel)
    progress(2, 2, "done")
    plan = box["plan"]
    notes = [f"{s.format} ({dict(s.weights)['type']}{dict(s.weights)['num_bits']} {dict(s.weights)['strategy']}"
             + (f" {dict(s.weights)['group_size']}" if dict(s.weights)["group_size"] else "")
             + (", static per-tensor input" if s.inputs else "") + f"): {len(t)} layer(s)"
             for s, t in plan.schemes.items()] + list(plan.notes)
    groups = [{"format": s.format, "weights": dict(s.weights), "input_activations": dict(s.inputs) if s.inputs else None,
               "layers": sorted(t)} for s, t in plan.schemes.items()]
    return ExportResult("compressed-tensors", [Path(path) / n for n in names], notes, {"groups": groups})


WRITERS = {"json": _write_json, "onnx": _write_onnx, "aimet": _write_aimet, "torchao": _write_torchao,
           "executorch": _write_executorch, "report": _write_report, "gguf": _write_gguf,
           "llama-tensor-types": _write_tensor_types, "compressed-tensors": _write_ctensors}


def check_format(fmt: str) -> str:
    fmt = str(fmt).lower()
    if fmt not in WRITERS:
        raise QuantvizError(f"unknown export format {fmt!r} (choose from {', '.join(FORMATS)})")
    return fmt


def export(inp: ExportInput, fmt: str, path: str | Path, *, force: bool = False, progress: Progress = null_progress,
           cancel: Callable[[], bool] = lambda: False) -> ExportResult:
    """Write ``inp``'s config in format ``fmt`` to ``path``."""
    fmt = check_format(fmt)
    from .onnx_targets import check_target

    inp.target = check_target(inp.target)
    if inp.target != "ort" and fmt != "onnx":
        raise QuantvizError(f"--target {inp.target} is for --format onnx (the {fmt} export has no target)")
    if fmt in ("onnx", "aimet", "torchao", "executorch"):  # compressed-tensors refuses them itself
        from ..core.numerics.ggml import GGML_TYPES

        ggml = [n for n, sp in inp.specs.items() if sp.weight.bits is not None and sp.weight.format in GGML_TYPES]
        if ggml:
            raise QuantvizError(f"{fmt}: llama.cpp types have no {fmt} form (export them with --format gguf); "
                                f"layers: {', '.join(ggml[:5])}" + (f" and {len(ggml) - 5} more" if len(ggml) > 5 else ""))
    if not inp.prepared and fmt != "torchao":
        raise QuantvizError("the session is not calibrated yet; open the model with its data first")
    if any(sp.weight.algorithm != "none" and sp.weight.bits is not None for sp in inp.specs.values()):
        from ..core.progress import scaled

        with inp.lock:  # results of per-layer algorithms for the current config (cached after a re-check)
            inp.sim.apply(inp.specs, progress=scaled(progress, 0.0, 0.5), cancel=cancel)
        progress = scaled(progress, 0.5, 1.0)
    return WRITERS[fmt](inp, Path(path), force, progress, cancel)


__all__ = ["export", "ExportInput", "ExportResult", "check_format", "FORMATS", "SUFFIX", "qparams_table", "json_document",
           "torchao_script_path", "pt2e_program_path", "aimet_model_path"]
