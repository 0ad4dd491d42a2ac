"""Model files written by torch: TorchScript, torch.export programs, pickled modules.

The file's layout decides how it is read, not its extension:

* a zip with ``<dir>/code/`` or ``<dir>/constants.pkl``: TorchScript (``torch.jit.load``);
* a zip with ``<dir>/archive_format`` or ``<dir>/models/*.json``: a ``torch.export``
  program (``torch.export.load(...).module()``);
* a zip with ``<dir>/data.pkl`` (``torch.save``) or the legacy torch.save pickle:
  read with ``torch.load(weights_only=True)``. A pickled ``nn.Module`` needs
  unpickling arbitrary classes, which can run code from the file: that is only
  done with ``trust=True`` (otherwise :class:`TrustRequired`).

``torch.load(weights_only=False)`` is never called without ``trust``.
"""
from __future__ import annotations

import contextlib
import pickle
import sys
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import Cancelled, SourceError, TrustRequired, one_line
from .base import ModelBundle

RECIPE_HINT = "write a recipe (see resources/recipe_template.py) that builds the model and loads it"

# Legacy (non-zip) torch.save files start with a pickled magic number.
_LEGACY_MAGIC = (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def _check_cancel(cancel: Callable[[], bool] | None) -> None:
    if cancel is not None and cancel():
        raise Cancelled()


def _check_crc(path: Path) -> None:
    """torch's archive reader does not check the records' CRC32: a file damaged in its
    middle would load with wrong weights. Read every record once (about 1 s per GB)."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
        raise SourceError(f"{path.name}: a damaged PyTorch archive ({one_line(exc)})") from exc
    if bad is not None:
        raise SourceError(f"{path.name}: a damaged PyTorch archive (record {bad} fails its CRC check); "
                          "copy or save the file again")


def sniff(path: Path) -> str:
    """Classify a model file: torchscript, export, torchsave, legacy, or raise SourceError."""
    name = path.name
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(64)
    except OSError as exc:
        raise SourceError(f"{name}: cannot be read ({one_line(exc)})") from exc
    if size == 0:
        raise SourceError(f"{name}: the file is empty")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise SourceError(f"{name}: a damaged zip archive ({one_line(exc)})") from exc
        parts = [n.split("/") for n in names]
        # torch archives keep every record under one top-level folder
        kind = None
        if any(len(p) >= 3 and p[1] == "code" for p in parts) or any(p[1:] == ["constants.pkl"] for p in parts):
            kind = "torchscript"
        elif any(p[1:] == ["archive_format"] for p in parts) or any(
            len(p) == 3 and p[1] == "models" and p[2].endswith(".json") for p in parts
        ):
            kind = "export"
        elif any(p[1:] == ["data.pkl"] for p in parts):
            kind = "torchsave"
        if kind is not None:
            _check_crc(path)
            return kind
        raise SourceError(
            f"{name}: a zip archive that is not a PyTorch file (no TorchScript code, export program or torch.save data)"
        )
    if head.startswith(b"PK"):
        raise SourceError(f"{name}: a truncated or damaged zip / PyTorch archive (the end of the file is missing)")
    if head[:1] == b"\x80" and _LEGACY_MAGIC in head[:32]:
        return "legacy"
    if head[:1] == b"\x80":
        raise SourceError(f"{name}: a plain Python pickle, not a torch.save file; save the model with torch.save or torch.jit.save")
    raise SourceError(f"{name}: not a PyTorch model file (neither torch.save, torch.jit.save nor torch.export.save)")


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def _importable(folder: Path):
    """Let a pickle find classes defined in modules next to the file."""
    entry = str(folder)
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(entry)


def _corrupt(name: str, exc: BaseException) -> SourceError:
    text = one_line(exc)
    low = text.lower()
    if "central directory" in low or "failed reading zip" in low or "failed locating file" in low:
        return SourceError(f"{name}: a truncated or damaged PyTorch file ({text.split('. ')[0]})")
    return SourceError(f"{name}: cannot be loaded ({text})")


def load_torchscript(path: Path, reference: str, cancel=None) -> ModelBundle:
    name = path.name
    _check_cancel(cancel)
    try:
        with _quiet():
            model = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - jit raises RuntimeError subclasses with long texts
        raise _corrupt(name, exc) from exc
    model.eval()
    note = ("TorchScript module: converted to a torch.export graph when data arrives "
            "(give --data to simulate activations and fold BatchNorm)")
    meta = {"note": note, "format": "torch.jit.save", "path": str(path), "converted": None}
    return ModelBundle(model=model, name=name, kind="torchscript", reference=reference, meta=meta)


def load_export(path: Path, reference: str, cancel=None) -> ModelBundle:
    name = path.name
    _check_cancel(cancel)
    import logging

    log = logging.getLogger("torch.export")
    old_level = log.level
    log.setLevel(logging.ERROR)  # torch.export logs a traceback before raising
    from .graphs import fixed_batch_note, graph_of_program

    try:
        with _quiet(), _pytree_errors() as errs:
            try:
                program = torch.export.load(str(path))
            except RuntimeError:
                if not _import_output_types(errs):
                    raise
                program = torch.export.load(str(path))  # the program's output types are known now
            model, fixed = graph_of_program(program)
    except Exception as exc:  # noqa: BLE001
        text = one_line(exc)
        if errs and "warnings above" in text:  # torch logs the real reason and raises a generic one
            text = errs[-1]
        if "version" in text.lower():
            raise SourceError(
                f"{name}: a torch.export program from another PyTorch version ({text}); re-export it with torch {torch.__version__.split('+')[0]}"
            ) from exc
        raise SourceError(f"{name}: not a loadable torch.export program ({text})") from exc
    finally:
        log.setLevel(old_level)
    meta = {"format": "torch.export.save", "path": str(path), "fixed_batch": fixed}
    out_type = getattr(getattr(getattr(program, "call_spec", None), "out_spec", None), "type", None)
    if isinstance(out_type, type) and out_type.__name__.startswith("CausalLMOutput"):
        meta["task"] = "causal_lm"  # a program of a transformers causal LM: perplexity applies
    if fixed is not None:
        meta["note"] = fixed_batch_note(fixed)
    return ModelBundle(model=model, name=name, kind="export", reference=reference, meta=meta)


@contextlib.contextmanager
def _pytree_errors():
    """Collect the reasons torch.export.load logs (it raises "check the warnings above")."""
    import logging

    found: list[str] = []

    class _Keep(logging.Handler):
        def emit(self, record):
            exc = record.exc_info[1] if record.exc_info else None
            seen = 0
            while exc is not None and seen < 8:  # the chain down to the root cause
                found.append(one_line(exc)[:240])
                exc, seen = exc.__cause__ or exc.__context__, seen + 1

    log = logging.getLogger("torch.export")
    h = _Keep(level=logging.WARNING)
    handlers = list(log.handlers)
    log.handlers = [h]  # torch may attach its own stderr handler to this logger
    old, old_level = log.propagate, log.level
    log.propagate = False  # the reasons go into the one-line message, not onto stderr
    log.setLevel(logging.WARNING)
    try:
        yield found
    finally:
        log.handlers = handlers
        log.propagate = old
        log.setLevel(old_level)


def _import_output_types(errors: list[str]) -> bool:
    """A program returning transformers' ``ModelOutput`` loads once the module defining that
    class is imported (transformers registers its pytree name then). Only modules of
    transformers are imported, and only when it is installed."""
    import importlib
    import re

    done = False
    for text in errors:
        m = re.search(r"Deserializing (transformers(?:\.\w+)+)\.\w+ in pytree", text)
        if m is None:
            continue
        try:
            importlib.import_module(m.group(1))
            done = True
        except ImportError:
            return False
    return done


def _unsafe_globals(path: Path, kind: str, exc: BaseException | None = None) -> list[str]:
    if kind == "torchsave":
        try:
            return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        except Exception:  # noqa: BLE001 - fall back to the load error's text
            pass
    text = str(exc) if exc is not None else ""
    if "Unsupported global" in text or "GLOBAL " in text:
        marker = "GLOBAL "
        idx = text.find(marker)
        found = text[idx + len(marker):].split()[0] if idx >= 0 else "?"
        return [found]
    return []


def _describe(obj: object) -> str:
    if isinstance(obj, torch.Tensor):
        return f"a tensor of shape {tuple(obj.shape)}"
    if isinstance(obj, (list, tuple)):
        return f"a {type(obj).__name__} of {len(obj)} items"
    if isinstance(obj, Mapping):
        keys = [str(k) for k in list(obj)[:5]]
        more = ", ..." if len(obj) > 5 else ""
        return f"a dict with keys {', '.join(keys)}{more}"
    return f"a {type(obj).__module__}.{type(obj).__qualname__}"


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _not_a_module(name: str, obj: object) -> SourceError:
    if _is_state_dict(obj):
        return SourceError(f"{name} holds only a state_dict (no model code): {RECIPE_HINT}")
    if isinstance(obj, Mapping):
        nested = [k for k, v in obj.items() if _is_state_dict(v)]
        if nested:
            return SourceError(
                f"{name} is a checkpoint dict whose '{nested[0]}' entry is a state_dict (no model code): {RECIPE_HINT}"
            )
    return SourceError(f"{name} holds {_describe(obj)}, not a model: save the nn.Module (torch.save(model), torch.jit.save or torch.export.save) or {RECIPE_HINT}")


def load_torch_pickle(path: Path, kind: str, reference: str, *, trust: bool, cancel=None) -> ModelBundle:
    name = path.name
    _check_cancel(cancel)
    unsafe = _unsafe_globals(path, kind) if kind == "torchsave" else []
    obj = None
    loaded = False
    if not unsafe:
        try:
            with _quiet():
                obj = torch.load(str(path), map_location="cpu", weights_only=True)
            loaded = True
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError, TypeError) as exc:
            unsafe = _unsafe_globals(path, "legacy", exc)
            if not unsafe:
                raise _corrupt(name, exc) from exc
    if not loaded:
        if not trust:
            raise TrustRequired(
                f"{name} is a pickled module: loading it runs code from the file. "
                "Pass --trust (CLI) or confirm in the app only if you trust its origin."
            )
        _check_cancel(cancel)
        try:
            with _quiet(), _importable(path.parent):
                obj = torch.load(str(path), map_location="cpu", weights_only=False)
        except (ModuleNotFoundError, AttributeError, ImportError) as exc:
            raise SourceError(
                f"{name}: the pickled module needs code that cannot be imported ({one_line(exc)}); "
                f"put its module next to the file or {RECIPE_HINT}"
            ) from exc
        except Exception as exc:  # noqa: BLE001 - unpickling can raise anything
            raise _corrupt(name, exc) from exc
    if isinstance(obj, Mapping) and not isinstance(obj, nn.Module):
        modules = [k for k, v in obj.items() if isinstance(v, nn.Module)]
        if modules:
            obj = obj[modules[0]]
    if not isinstance(obj, nn.Module):
        raise _not_a_module(name, obj)
    obj.eval()
    meta = {"format": "torch.save", "path": str(path), "class": f"{type(obj).__module__}.{type(obj).__qualname__}"}
    return ModelBundle(model=obj, name=name, kind="pickle", reference=reference, meta=meta)


def load_torch_file(path: Path, reference: str, *, trust: bool = False, cancel=None) -> ModelBundle:
    kind = sniff(path)
    if path.suffix.lower() == ".pt2" and kind != "export":
        raise SourceError(f"{path.name}: not a torch.export program (a .pt2 file must come from torch.export.save)")
    if kind == "torchscript":
        return load_torchscript(path, reference, cancel)
    if kind == "export":
        return load_export(path, reference, cancel)
    return load_torch_pickle(path, kind, reference, trust=trust, cancel=cancel)
