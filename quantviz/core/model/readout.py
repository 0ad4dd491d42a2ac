"""Which model output the metrics read, and which tokens are real: :class:`Readout`.

By default the metrics read the model's main output (:func:`.data.output_tensor`:
a tensor, a ``logits`` entry / attribute, else the first tensor) and take the
real tokens from the inputs' ``attention_mask``. A recipe can say otherwise
(``OUTPUT`` and ``MASK``, see ``resources/recipe_template.py``):

* ``output``: a key or attribute name (``"logits"``), an index into a tuple /
  list / dict of outputs (``1``), or a function ``output -> Tensor``;
* ``mask``: the name of an input (``"pad_mask"``), or a function
  ``inputs -> Tensor (batch, tokens)`` (non-zero / True = a real token);
  ``None``: the inputs' ``attention_mask``, as without a recipe.

The same readout serves every place that reads outputs or masks tokens:
evaluation, the re-check, sensitivity and search, the trace, activation
calibration and the per-layer algorithms' input statistics. A value that does not
work (an unknown key, a function that raises, a tensor of the wrong shape) raises a
one-line :class:`~.errors.ModelError` naming the recipe attribute.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ModelError, one_line

MASK_KEY = "attention_mask"


def _shape(t: Any) -> str:
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


def _keys(out: Any) -> str:
    if isinstance(out, Mapping):
        return ", ".join(str(k) for k in out.keys()) or "none"
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of {len(out)}"
    return type(out).__name__


def model_inputs(x: Any) -> Any:
    """A batch as the model receives it: a one-element tuple is its element (``model(x)``)."""
    if isinstance(x, (tuple, list)) and len(x) == 1:
        return x[0]
    return x


def inputs_of_call(args: tuple, kwargs: dict) -> Any:
    """The batch a model was called with, rebuilt from a forward pre-hook's ``args`` / ``kwargs``."""
    if kwargs and not args:
        return dict(kwargs)
    if len(args) == 1 and not kwargs:
        return args[0]
    return tuple(args)


def _describe(sel: Any) -> str:
    if not callable(sel):
        return repr(sel)
    import hashlib

    code = getattr(sel, "__code__", None)
    blob = repr((code.co_code, code.co_consts, code.co_names)) if code is not None else repr(sel)
    return f"{getattr(sel, '__qualname__', type(sel).__name__)}#{hashlib.sha1(blob.encode()).hexdigest()[:12]}"


@dataclass(frozen=True, eq=False)
class Readout:
    """The output and the token mask the metrics use (see the module docstring)."""

    output: Any = None
    mask: Any = None
    owner: str = "recipe"  # named in error messages (a recipe's file name)

    @property
    def custom_output(self) -> bool:
        return self.output is not None

    @property
    def custom_mask(self) -> bool:
        return self.mask is not None

    def key(self) -> str | None:
        """What the readout is, as a string for cache keys (None for the default): a key or an
        index as written, a function by its name and a hash of its code."""
        if not (self.custom_output or self.custom_mask):
            return None
        return f"output={_describe(self.output)};mask={_describe(self.mask)}"

    # ---------------------------------------------------------- output
    def pick(self, out: Any, batch: int | None = None) -> torch.Tensor:
        """The output tensor the metrics read from the model's raw output ``out``."""
        from .data import output_tensor

        sel = self.output
        if sel is None:
            return output_tensor(out)
        what = f"{self.owner}: OUTPUT"
        if callable(sel):
            try:
                t = sel(out)
            except Exception as exc:  # noqa: BLE001 - the recipe's own function
                raise ModelError(f"{what}(output) raised {one_line(exc)}") from exc
        elif isinstance(sel, bool) or not isinstance(sel, (str, int)):
            raise ModelError(f"{what} must be a key, an index or a function, not a {type(sel).__name__}")
        elif isinstance(sel, str):
            if isinstance(out, Mapping) and sel in out:
                t = out[sel]
            elif not isinstance(out, (torch.Tensor, Mapping, tuple, list)) and hasattr(out, sel):
                t = getattr(out, sel)
            else:
                raise ModelError(f"{what} {sel!r} is not in the model's output (it has: {_keys(out)})")
        else:
            if isinstance(out, torch.Tensor):
                raise ModelError(f"{what} = {sel} indexes the model's outputs, but the model returns one tensor")
            seq = list(out.values()) if isinstance(out, Mapping) else out
            try:
                t = seq[sel]
            except (IndexError, TypeError, KeyError):
                raise ModelError(f"{what} = {sel} is out of range (the model's output is {_keys(out)})") from None
        if not isinstance(t, torch.Tensor):
            raise ModelError(f"{what} picked a {type(t).__name__}, not a tensor")
        if batch is not None and (t.dim() == 0 or t.shape[0] != batch):
            raise ModelError(f"{what} gives shape {_shape(t)}: expected the batch axis ({batch} samples) first")
        return t

    # ------------------------------------------------------------ mask
    def mask_of(self, inputs: Any) -> torch.Tensor | None:
        """The bool ``(batch, tokens)`` mask of real tokens of one batch, or None (all real)."""
        from .data import batch_len

        sel = self.mask
        x = model_inputs(inputs)
        if sel is None:
            m = x.get(MASK_KEY) if isinstance(x, Mapping) else None
            return (m != 0) if isinstance(m, torch.Tensor) and m.dim() == 2 else None
        what = f"{self.owner}: MASK"
        if callable(sel):
            try:
                m = sel(x)
            except Exception as exc:  # noqa: BLE001
                raise ModelError(f"{what}(inputs) raised {one_line(exc)}") from exc
            if m is None:
                return None
        elif isinstance(sel, str):
            if not isinstance(x, Mapping):
                raise ModelError(f"{what} {sel!r} names an input, but the inputs are a {type(x).__name__}, "
                                 "not a dict of named inputs")
            if sel not in x:
                raise ModelError(f"{what} {sel!r} is not among the inputs (they are: {', '.join(map(str, x))})")
            m = x[sel]
        else:
            raise ModelError(f"{what} must be an input name or a function, not a {type(sel).__name__}")
        n = batch_len(x)
        if not isinstance(m, torch.Tensor) or m.dim() != 2 or (n is not None and m.shape[0] != n):
            raise ModelError(f"{what} gives {_shape(m)}: expected a (batch, tokens) tensor"
                             + (f" with {n} rows" if n is not None else ""))
        return m != 0

    def check_lines_up(self, mask: torch.Tensor | None, out: torch.Tensor) -> None:
        """A recipe's mask must fit the (batch, tokens) axes of the output the metrics read."""
        if self.custom_mask and mask is not None and (out.dim() < 2 or tuple(out.shape[:2]) != tuple(mask.shape)):
            raise ModelError(f"{self.owner}: MASK gives {tuple(mask.shape)} but the output the metrics read "
                             f"is {tuple(out.shape)}: the mask must match its (batch, tokens) axes")


DEFAULT = Readout()


def readout_of(model: Any, readout: Readout | None = None) -> Readout:
    """``readout``, else the one a model carries (``sim.qmodel``), else the default."""
    if readout is not None:
        return readout
    r = getattr(model, "quantviz_readout", None)
    return r if isinstance(r, Readout) else DEFAULT


def real_rows(t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``t`` (batch, tokens, ...) reduced to the rows of real tokens (``(n_real, ...)``); ``t``
    itself when ``mask`` is None, hides nothing or does not line up with ``t``'s first two axes."""
    if mask is None or t.dim() < 3 or tuple(t.shape[:2]) != tuple(mask.shape) or bool(mask.all()):
        return t
    return t[mask.to(t.device)]


__all__ = ["Readout", "DEFAULT", "MASK_KEY", "readout_of", "real_rows", "model_inputs", "inputs_of_call"]
