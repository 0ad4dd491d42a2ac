"""Recipes: a Python file that builds the model (and optionally its data).

The contract is documented in ``resources/recipe_template.py``:

* ``build_model() -> nn.Module`` (required)
* ``calibration_data()`` / ``evaluation_data()`` (optional): a Dataset, a tuple
  ``(x, y)`` / ``(x,)`` or a dict ``{"x": ..., "y": ...}``; if only
  ``evaluation_data`` exists, the session holds out: calibration uses its first
  samples (at most half), evaluation the rest (:func:`quantviz.core.model.data.split_holdout`)
* ``evaluate(model, dataset) -> dict[str, float]`` (optional)
* ``NAME`` (optional str): the model's display name
* ``TASK`` (optional str): ``causal_lm`` (next-token logits: perplexity and KL
  divergence, over the tokens the inputs' ``attention_mask`` marks as real),
  ``logits`` (class logits) or ``hidden`` (hidden states: no agreement / KL)
* ``OUTPUT`` (optional): the output the metrics read: a key / attribute name, an
  index into a tuple / dict of outputs, or a function ``output -> Tensor``
* ``MASK`` (optional): the real tokens: an input's name, or a function
  ``inputs -> Tensor (batch, tokens)``; absent: the inputs' ``attention_mask``
  (both: :mod:`quantviz.core.model.readout`)

The file runs as a module named ``quantviz_recipe_<stem>`` with its folder on
``sys.path``. While the recipe's own code runs, a trace hook checks ``cancel()``
on every line executed in the recipe file, so even ``while True: pass`` can be
cancelled from another thread.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

from torch import nn

from ..model.data import DataError, Dataset
from ..errors import Cancelled, ModelError, QuantvizError, SourceError, one_line
from .base import ModelBundle
from .datafiles import coerce_dataset



@contextlib.contextmanager
def cancellable(filename: str, cancel: Callable[[], bool] | None):
    """Raise :class:`Cancelled` inside code from ``filename`` once ``cancel()`` is true.

    Installs a ``sys.settrace`` hook for the current thread and restores the
    previous one afterwards. Only frames whose code lives in ``filename`` get
    a local tracer, so library code runs at full speed.
    """
    if cancel is None:
        yield
        return
    target = str(Path(filename).resolve())

    def local(frame, event, arg):
        if cancel():
            raise Cancelled()
        return local

    def global_tracer(frame, event, arg):
        if frame.f_code.co_filename == target:
            if cancel():
                raise Cancelled()
            return local
        return None

    previous = sys.gettrace()
    sys.settrace(global_tracer)
    try:
        yield
    finally:
        sys.settrace(previous)


def _location(exc: BaseException, filename: str) -> str:
    """``recipe.py:12`` for the innermost frame of ``exc`` inside the recipe file."""
    line = None
    for fs in traceback.extract_tb(exc.__traceback__):
        if fs.filename == filename:
            line = fs.lineno
    return f"{Path(filename).name}:{line}" if line else Path(filename).name


@contextlib.contextmanager
def _on_path(folder: str):
    """Make ``folder`` importable, without leaving ``__pycache__`` folders in the user's files."""
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    no_bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        yield
    finally:
        sys.dont_write_bytecode = no_bytecode
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(folder)


def _call(module: Any, fn_name: str, filename: str, cancel, *args) -> Any:
    name = Path(filename).name
    fn = getattr(module, fn_name)
    if not callable(fn):
        raise SourceError(f"{name}: {fn_name} is a {type(fn).__name__}, not a function")
    try:
        with cancellable(filename, cancel):
            return fn(*args)
    except Cancelled:
        raise
    except QuantvizError as exc:
        raise SourceError(f"{name}: {fn_name}() failed: {one_line(exc)}") from exc
    except Exception as exc:  # noqa: BLE001 - the recipe's own errors
        where = _location(exc, filename)
        at = f" (at {where})" if ":" in where else ""
        raise SourceError(f"{name}: {fn_name}() raised {one_line(exc)}{at}") from exc


def _exec_module(path: Path, cancel) -> Any:
    name = path.name
    filename = str(path)
    digest = hashlib.sha1(filename.encode()).hexdigest()[:8]
    modname = f"quantviz_recipe_{''.join(c if c.isalnum() else '_' for c in path.stem)}_{digest}"
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"{name}: cannot be read ({one_line(exc)})") from exc
    try:
        compile(source, filename, "exec")
    except SyntaxError as exc:
        raise SourceError(f"{name}:{exc.lineno}: syntax error: {exc.msg}") from exc
    except ValueError as exc:  # null bytes
        raise SourceError(f"{name}: not a Python source file ({one_line(exc)})") from exc
    spec = importlib.util.spec_from_file_location(modname, filename)
    if spec is None or spec.loader is None:  # pragma: no cover - .py files always get a loader
        raise SourceError(f"{name}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module  # so pickling / dataclasses inside the recipe work
    try:
        with cancellable(filename, cancel):
            spec.loader.exec_module(module)
    except Cancelled:
        sys.modules.pop(modname, None)
        raise
    except Exception as exc:  # noqa: BLE001 - anything the module body raises
        sys.modules.pop(modname, None)
        where = _location(exc, filename)
        raise SourceError(f"{where}: running the recipe raised {one_line(exc)}") from exc
    return module


def _wrap_evaluate(fn: Callable, filename: str) -> Callable[[nn.Module, Dataset], dict]:
    """The recipe's ``evaluate`` named after its file; its results are checked by
    :func:`quantviz.core.sim.evaluate.user_metrics` like any caller-supplied metric."""
    name = Path(filename).name

    def evaluate_fn(model: nn.Module, dataset: Dataset) -> dict:
        try:
            return fn(model, dataset)
        except QuantvizError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"{name}: evaluate() raised {one_line(exc)}") from exc

    evaluate_fn.__name__ = f"evaluate[{name}]"
    evaluate_fn.owner = f"{name}: evaluate()"
    return evaluate_fn


def _readout(module: Any, name: str):
    """The recipe's ``OUTPUT`` / ``MASK`` as a :class:`~quantviz.core.model.readout.Readout` (None: neither)."""
    from ..model.readout import Readout

    output, mask = getattr(module, "OUTPUT", None), getattr(module, "MASK", None)
    if output is not None and (isinstance(output, bool) or not (isinstance(output, (str, int)) or callable(output))):
        raise SourceError(f"{name}: OUTPUT must be an output's key or attribute name, an index, or a function "
                          f"output -> tensor; got a {type(output).__name__}")
    if mask is not None and not (isinstance(mask, str) or callable(mask)):
        raise SourceError(f"{name}: MASK must be an input's name or a function inputs -> (batch, tokens) tensor; "
                          f"got a {type(mask).__name__}")
    if output is None and mask is None:
        return None
    return Readout(output, mask, owner=name)


def load_recipe(path: Path, reference: str, *, cancel: Callable[[], bool] | None = None) -> ModelBundle:
    path = path.resolve()
    name = path.name
    filename = str(path)
    with _on_path(str(path.parent)):
        module = _exec_module(path, cancel)
        if not hasattr(module, "build_model"):
            raise SourceError(
                f"{name}: a recipe must define build_model() returning an nn.Module (see resources/recipe_template.py)"
            )
        model = _call(module, "build_model", filename, cancel)
        if not isinstance(model, nn.Module):
            raise SourceError(f"{name}: build_model() returned a {type(model).__name__}, not a torch.nn.Module")
        model.eval()
        datasets: dict[str, Dataset | None] = {}
        for fn_name, label in (("calibration_data", "calibration"), ("evaluation_data", "evaluation"),
                               ("training_data", "training")):
            if not hasattr(module, fn_name):
                datasets[label] = None
                continue
            value = _call(module, fn_name, filename, cancel)
            try:
                datasets[label] = coerce_dataset(value, f"{name} {fn_name}()")
            except DataError as exc:
                raise SourceError(one_line(exc)) from exc
    calib, evald = datasets["calibration"], datasets["evaluation"]
    # calib None with evald: the session splits evald (calibration samples are not evaluated)
    evaluate = getattr(module, "evaluate", None)
    evaluate_fn = _wrap_evaluate(evaluate, filename) if callable(evaluate) else None
    loss = getattr(module, "loss", None)
    display = getattr(module, "NAME", None)
    display = display if isinstance(display, str) and display.strip() else path.stem
    meta = {"path": filename, "module": module.__name__}
    task = getattr(module, "TASK", None)
    if task is not None:
        from ..model.lmmetrics import TASKS

        if task not in TASKS:
            raise SourceError(f"{name}: TASK must be one of {', '.join(TASKS)}, got {task!r}")
        meta["task"] = task
    readout = _readout(module, name)
    if readout is not None:
        meta["readout"] = readout
    return ModelBundle(
        model=model,
        name=display,
        kind="recipe",
        reference=reference,
        calib=calib,
        eval=evald,
        evaluate_fn=evaluate_fn,
        train=datasets["training"],
        loss_fn=loss if callable(loss) else None,
        meta=meta,
    )


__all__ = ["load_recipe", "cancellable"]
