"""torch.export programs and TorchScript as FX graphs with real layers.

* A ``.pt2`` program: ``ExportedProgram.module()``, then
  :func:`quantviz.core.model.graphlayers.lift_layers`. A program exported with a
  fixed batch size is marked (``quantviz_fixed_batch``) so that
  :func:`quantviz.core.model.data.call_model` runs it at that batch size.
* A TorchScript module: converted with torch's TorchScript-to-export converter
  (``torch._export.converter.TS2EPConverter``) on a sample of the data (the
  converter propagates shapes, so it needs one), then the same path. When the
  conversion fails, the script module stays as it is: its weights are
  quantized in place and activations are not simulated (the bundle's note says
  why, in one line).
"""
from __future__ import annotations

import contextlib
import logging
import warnings

import torch

from ..model.data import Dataset
from ..errors import one_line
from ..model.graphlayers import fixed_batch_size, lift_layers, reorder_modules
from .base import ModelBundle


@contextlib.contextmanager
def quiet_torch():
    """torch.export and the converter log tracebacks and warn on harmless things."""
    loggers = [logging.getLogger(n) for n in ("torch.export", "torch._export", "torch._export.converter",
                                              "torch.fx.experimental.symbolic_shapes")]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, old):
            lg.setLevel(lv)


def graph_of_program(program) -> tuple[torch.nn.Module, int | None]:
    """(GraphModule with real layers, fixed batch size or None) of an ExportedProgram."""
    gm = program.module()
    for k in ("train", "eval"):  # .module() makes both raise; the graph is fixed anyway, so they only set flags
        vars(gm).pop(k, None)
    lift_layers(gm)
    fixed = fixed_batch_size(program)
    if fixed is not None:
        gm.meta["quantviz_fixed_batch"] = fixed  # read by core.data.call_model
    with contextlib.suppress(Exception):  # exported modules refuse .eval() in some torch versions
        gm.eval()
    return gm, fixed


def fixed_batch_note(fixed: int | None) -> str | None:
    if fixed is None:
        return None
    how = "sample by sample" if fixed == 1 else f"in batches of {fixed}"
    return f"exported with a fixed batch size of {fixed}: runs {how} (export with a dynamic batch dimension to batch freely)"


def needs_conversion(bundle: ModelBundle) -> bool:
    return bundle.kind == "torchscript" and bundle.meta.get("converted") is None


def convert_torchscript(bundle: ModelBundle, data: Dataset) -> None:
    """Turn a TorchScript bundle into an exported-program graph, in place (once)."""
    if not needs_conversion(bundle):
        return
    x = data.subset(2).x
    if isinstance(x, dict):
        args, kwargs = (), dict(x)
    elif isinstance(x, (tuple, list)):
        args, kwargs = tuple(x), None
    else:
        args, kwargs = (x,), None
    try:
        from torch._export.converter import TS2EPConverter

        with quiet_torch():
            program = TS2EPConverter(bundle.model, args, kwargs).convert()
            gm, fixed = graph_of_program(program)
            reorder_modules(gm, [n for n, _ in bundle.model.named_modules()])
            with torch.no_grad():  # the converted graph must compute what the script computes
                ref = bundle.model(*args, **(kwargs or {}))
                got = gm(*args, **(kwargs or {}))
            from ..model.data import output_tensor

            r, g = output_tensor(ref), output_tensor(got)
            if r.shape != g.shape or not torch.allclose(r.float(), g.float(), rtol=1e-4, atol=1e-5):
                raise RuntimeError("the converted graph does not reproduce the TorchScript outputs")
    except Exception as exc:  # noqa: BLE001 - any converter failure: weights-only simulation
        bundle.meta["converted"] = False
        bundle.meta["weights_only"] = True
        bundle.meta["note"] = (f"TorchScript could not be converted to an exported program ({one_line(exc)[:160]}): "
                               "weights are quantized in place; activations cannot be simulated")
        return
    bundle.model = gm
    bundle.meta["converted"] = True
    notes = ["TorchScript converted to a torch.export graph: weights and activations simulated"]
    if fixed_batch_note(fixed):
        notes.append(fixed_batch_note(fixed))
    bundle.meta["note"] = "; ".join(notes)


__all__ = ["graph_of_program", "convert_torchscript", "needs_conversion", "fixed_batch_note", "quiet_torch"]
