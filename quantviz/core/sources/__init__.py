"""Model sources and data files.

``load_model(reference)`` accepts the same string in the CLI and the GUI:

``demo``
    the bundled DemoNet with its digits data;
``recipe.py``
    a Python recipe (contract in ``resources/recipe_template.py``);
``model.pt`` / ``.pth`` / ``.ts`` / any extension
    TorchScript (``torch.jit.save``) or a pickled ``nn.Module`` (``torch.save``,
    needs ``trust``), told apart by the file's contents;
``program.pt2``
    a ``torch.export.save`` program;
``model.onnx``
    an ONNX model, converted to torch (:mod:`.onnxfile`; a QDQ model's
    quantization comes with it as a config);
``folder/``
    a Hugging Face ``save_pretrained`` folder (has ``config.json``).

``load_data(path, bundle)`` reads ``.npz`` / ``.pt`` / image folders, and
``.txt`` through the bundle's tokenizer. ``check_fits(bundle, data)`` runs the
model on two samples and turns a mismatch into a one-line :class:`DataError`.

Every failure a user can cause raises :class:`SourceError`,
:class:`TrustRequired` or :class:`DataError` whose ``str()`` is one line that
names the file.

Imports: numerics, model.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Callable

import torch

from ..model.data import DataError, Dataset, call_model, output_tensor, to_device
from ..errors import Cancelled, ModelError, QuantvizError, SourceError, TrustRequired, one_line
from .base import ModelBundle

__all__ = [
    "ModelBundle",
    "load_model",
    "load_data",
    "check_fits",
    "prepare_for_data",
    "resources_dir",
    "SourceError",
    "TrustRequired",
    "DataError",
]

DEMO_REFERENCE = "demo"


def resources_dir() -> Path:
    """The ``resources`` folder (``$QUANTVIZ_RESOURCES`` overrides it)."""
    env = os.environ.get("QUANTVIZ_RESOURCES")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[3] / "resources"


def _check_cancel(cancel: Callable[[], bool] | None) -> None:
    if cancel is not None and cancel():
        raise Cancelled()


def load_model(reference: str, *, trust: bool = False, cancel: Callable[[], bool] | None = None) -> ModelBundle:
    """Load a model from ``reference`` (see the module docstring)."""
    ref = str(reference).strip()
    _check_cancel(cancel)
    if ref.lower() == DEMO_REFERENCE:
        from .demo import load_demo

        return load_demo(resources_dir() / "demo", reference=ref)
    if not ref:
        raise SourceError("no model given: pass 'demo', a recipe .py, a .pt/.pt2 file or a Hugging Face folder")
    path = Path(ref).expanduser()
    label = path.name or ref
    if not path.exists():
        raise SourceError(f"{label}: no such file or folder ({path})")
    try:
        if path.is_dir():
            from .hf import is_hf_folder, load_hf_folder

            if not is_hf_folder(path):
                raise SourceError(
                    f"{label}: a folder without config.json is not a Hugging Face model folder; "
                    "give a model file or a recipe .py"
                )
            bundle = load_hf_folder(path, ref, trust=trust, cancel=cancel)
        elif path.suffix.lower() == ".onnx":
            from .onnxfile import load_onnx

            bundle = load_onnx(path, ref, cancel=cancel)
        elif path.suffix.lower() == ".py":
            from .recipe import load_recipe

            bundle = load_recipe(path, ref, cancel=cancel)
        else:
            from .torchfiles import load_torch_file

            bundle = load_torch_file(path, ref, trust=trust, cancel=cancel)
    except QuantvizError:
        raise
    except Exception as exc:  # noqa: BLE001 - last line of defence: never a raw traceback
        raise SourceError(f"{label}: cannot be loaded ({one_line(exc)})") from exc
    _check_cancel(cancel)
    return bundle


def load_data(path: str, bundle: ModelBundle | None = None, *, seq_len: int | None = None) -> Dataset:
    """Read a data file or folder; ``.txt`` needs a bundle with ``load_data``
    (``seq_len``: tokens per sequence when a causal LM cuts running text)."""
    from .datafiles import load_file

    p = Path(str(path)).expanduser()
    try:
        if bundle is not None and bundle.load_data is not None:
            if p.suffix.lower() == ".txt" and not p.exists():
                raise DataError(f"{p.name}: no such file ({p})")
            if p.suffix.lower() == ".txt" and p.is_file() and p.stat().st_size == 0:
                raise DataError(f"{p.name}: the file is empty")
            return bundle.load_data(str(p), seq_len=seq_len) if seq_len else bundle.load_data(str(p))
        if p.suffix.lower() == ".txt" and bundle is not None and bundle.kind == "hf":
            raise DataError(f"{p.name}: text data needs the model folder's tokenizer, and {bundle.name} has none "
                            "(add tokenizer files to the folder or give token ids as .npz)")
        return load_file(p)
    except QuantvizError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{p.name or p}: cannot be read ({one_line(exc)})") from exc


def _describe_inputs(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"inputs of shape {tuple(x.shape)}"
    if isinstance(x, Mapping):
        parts = ", ".join(f"{k} {tuple(v.shape)}" for k, v in x.items() if isinstance(v, torch.Tensor))
        return f"inputs ({parts})"
    if isinstance(x, (tuple, list)):
        parts = ", ".join(str(tuple(v.shape)) for v in x if isinstance(v, torch.Tensor))
        return f"inputs ({parts})"
    return f"inputs of type {type(x).__name__}"


_FIT_WORDS = (
    "shape", "size", "dimension", "dim ", "channels", "mat1", "mat2", "expected", "dtype", "match",
    "must be", "out of range", "index", "argument", "guard failed", "input", "unpack", "broadcast",
    "positional", "keyword",
)


def _error_text(exc: BaseException) -> str:
    """First informative line; TorchScript errors keep the real one near the end."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    if len(lines) > 1 and ("TorchScript" in lines[0] or lines[0].startswith("The following operation failed")):
        for ln in reversed(lines):
            if "Error:" in ln:
                return ln.split("Error:", 1)[1].strip() or ln
        return lines[-1]
    return lines[0]


def _is_fit_error(exc: BaseException) -> bool:
    if isinstance(exc, (TypeError, IndexError)):
        return True
    if isinstance(exc, (RuntimeError, ValueError, AssertionError, KeyError)):
        text = str(exc).lower()
        return any(w in text for w in _FIT_WORDS)
    return False


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError, RuntimeError):
        return torch.device("cpu")


_GUARD = re.compile(r"(\w+)\.size\(\)\[(\d+)\]\s*==\s*(\d+)")


def _guard_hint(text: str) -> str:
    """What a failed shape guard of a torch.export program means (a fixed batch size is
    handled by running chunk by chunk, so a guard is about another dimension)."""
    m = _GUARD.search(text)
    if m is None:
        return " (the program was exported for other input shapes)"
    name, axis, size = m.group(1), int(m.group(2)), int(m.group(3))
    return (f" (the program was exported with {name}'s dimension {axis} fixed at {size}; "
            "re-export it with torch.export.Dim for that dimension, or give inputs of that size)")


def prepare_for_data(bundle: ModelBundle, dataset: Dataset) -> None:
    """Whatever a model needs a data sample for: a TorchScript module is converted to an
    exported-program graph (see :mod:`.graphs`). Never raises for a failed conversion:
    the bundle's note says what is simulated."""
    from .graphs import convert_torchscript, needs_conversion

    if needs_conversion(bundle):
        try:
            check_fits(bundle, dataset)  # data that does not fit is the user's problem, said as such
        except QuantvizError:
            raise
        convert_torchscript(bundle, dataset)


def check_fits(bundle: ModelBundle, dataset: Dataset) -> None:
    """Run the model on the first two samples; raise DataError / ModelError if it does not fit.
    A Hugging Face causal language model given token ids is checked without running it (ids within
    the vocabulary, sequences within the context): a run would read every weight of a big
    checkpoint that opens memory-mapped."""
    if bundle.kind == "hf" and bundle.meta.get("task") == "causal_lm":
        from .hf import check_token_ids

        if check_token_ids(bundle, dataset):
            return
    sample = dataset.subset(2)
    x = sample.x
    shape = _describe_inputs(x)
    data_name = dataset.name
    try:
        with torch.no_grad():
            out = call_model(bundle.model, to_device(x, _model_device(bundle.model)))
    except QuantvizError:
        raise
    except Exception as exc:  # noqa: BLE001 - anything the model raises
        text = _error_text(exc)
        if _is_fit_error(exc):
            hint = ""
            if bundle.kind == "export" and "guard" in text.lower():
                hint = _guard_hint(text)
            raise DataError(f"{data_name}: {shape} do not fit model {bundle.name}: {text}{hint}") from exc
        raise ModelError(f"model {bundle.name} raised {type(exc).__name__} on {data_name}: {text}") from exc
    readout = bundle.meta.get("readout")
    if readout is not None:  # a recipe's OUTPUT / MASK: said at once when they do not fit the data
        from ..model.data import batch_len

        t = readout.pick(out, batch_len(x))
        readout.check_lines_up(readout.mask_of(x), t)
    else:
        try:
            t = output_tensor(out)
        except TypeError as exc:
            raise ModelError(f"model {bundle.name} returns no tensor on {data_name} ({one_line(exc)})") from exc
    if t.is_floating_point() or t.is_complex():
        if bool(torch.isnan(t).any()):
            raise ModelError(f"model {bundle.name} produces NaN outputs on {data_name}")
