"""Data sets, batching and calling a model on a batch.

A :class:`Dataset` holds inputs ``x`` (a tensor with the sample axis first, or
a dict of such tensors for keyword inputs such as a tokenizer's output) and
optional labels ``y``. It is small enough to live in memory: quantviz works on
calibration / evaluation samples, not on training sets.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import torch

from ..errors import QuantvizError

Inputs = Any  # torch.Tensor | dict[str, torch.Tensor] | tuple[torch.Tensor, ...]


class DataError(QuantvizError, ValueError):
    """Data that cannot be used (wrong format, empty, does not fit the model)."""


@dataclass
class Dataset:
    x: Inputs
    y: torch.Tensor | None = None
    name: str = "data"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self._n()
        if n == 0:
            raise DataError(f"{self.name}: no samples")
        if self.y is not None:
            self.y = torch.as_tensor(self.y)
            if self.y.shape[0] != n:
                raise DataError(f"{self.name}: {n} inputs but {self.y.shape[0]} labels")

    def _n(self) -> int:
        x = self.x
        if isinstance(x, torch.Tensor):
            return int(x.shape[0]) if x.dim() else 0
        if isinstance(x, Mapping):
            vals = list(x.values())
            return int(vals[0].shape[0]) if vals else 0
        if isinstance(x, (tuple, list)):
            return int(x[0].shape[0]) if x else 0
        raise DataError(f"{self.name}: unsupported input type {type(x).__name__}")

    def __len__(self) -> int:
        return self._n()

    @property
    def has_labels(self) -> bool:
        return self.y is not None

    def _take(self, sl) -> Inputs:
        x = self.x
        if isinstance(x, torch.Tensor):
            return x[sl]
        if isinstance(x, Mapping):
            return {k: v[sl] for k, v in x.items()}
        return tuple(v[sl] for v in x)

    def batches(self, batch_size: int = 64) -> Iterator[tuple[Inputs, torch.Tensor | None]]:
        n = len(self)
        for start in range(0, n, batch_size):
            sl = slice(start, min(start + batch_size, n))
            yield self._take(sl), (self.y[sl] if self.y is not None else None)

    def num_batches(self, batch_size: int = 64) -> int:
        return (len(self) + batch_size - 1) // batch_size

    def subset(self, n: int, name: str | None = None) -> "Dataset":
        n = min(int(n), len(self))
        sl = slice(0, n)
        return Dataset(self._take(sl), self.y[sl] if self.y is not None else None, name or self.name, dict(self.meta))

    def rows(self, start: int, stop: int | None = None, name: str | None = None) -> "Dataset":
        """Samples ``start`` to ``stop`` (exclusive; None: to the end) as a new Dataset."""
        sl = slice(int(start), None if stop is None else int(stop))
        return Dataset(self._take(sl), self.y[sl] if self.y is not None else None, name or self.name, dict(self.meta))

    def first_input(self) -> Inputs:
        return self._take(slice(0, 1))


# ------------------------------------------------ calibration / evaluation split
MIN_HELD_OUT = 8  # samples each part keeps at least when one data set is split


@dataclass(frozen=True)
class DataSplit:
    """Which samples a session calibrates on and which it evaluates on.

    ``same_source``: both come from one data set (``--data`` alone);
    ``held_out``: then the evaluation samples are the ones calibration did not
    see. When one source is not held out (too few samples, or asked), every
    figure is on calibration data and :meth:`describe` says so."""

    calib_samples: int
    eval_samples: int
    same_source: bool = False
    held_out: bool = False
    reason: str = ""  # why a same-source split is not held out

    @property
    def on_calibration_data(self) -> bool:
        return self.same_source and not self.held_out

    def describe(self) -> str:
        """One line for the CLI, the app's summary and the report."""
        if self.held_out:
            return (f"evaluated on {self.eval_samples} held-out samples; calibrated on {self.calib_samples} "
                    "others of the same data")
        if self.on_calibration_data:
            return (f"evaluated on {self.eval_samples} samples, calibrated on {self.calib_samples} of the same "
                    f"samples: figures are on calibration data{f' ({self.reason})' if self.reason else ''}")
        return f"evaluated on {self.eval_samples} samples; calibrated on {self.calib_samples} separate samples"

    def short(self) -> str:
        """A few words for a status line (the app's summary)."""
        if self.held_out:
            return f"Held-out figures: {self.eval_samples} samples (calibrated on {self.calib_samples} others)"
        if self.on_calibration_data:
            return f"Figures on calibration data ({self.eval_samples} samples)"
        return f"Figures on {self.eval_samples} samples (calibrated on {self.calib_samples} others)"

    def to_dict(self) -> dict:
        return {"calibration_samples": self.calib_samples, "evaluation_samples": self.eval_samples,
                "same_source": self.same_source, "held_out": self.held_out,
                "on_calibration_data": self.on_calibration_data, "note": self.describe()}


def split_holdout(data: Dataset, calib_samples: int, *, hold_out: bool = True) -> tuple[Dataset, Dataset, DataSplit]:
    """Calibration and evaluation data from one data set: ``(calib, eval, split)``.

    The rule (deterministic, in sample order): calibration takes the first
    ``min(calib_samples, n // 2)`` samples, evaluation the rest, so at least half
    of the data is held out. A data set under ``2 * MIN_HELD_OUT`` samples is
    not split: calibration takes its first ``calib_samples`` and evaluation all
    of it, and the split says the figures are on calibration data. So does
    ``hold_out=False`` (the behaviour before held-out evaluation)."""
    n = len(data)
    if calib_samples < 1:
        raise DataError(f"calibration samples must be at least 1, got {calib_samples}")
    if hold_out and n >= 2 * MIN_HELD_OUT:
        c = max(1, min(int(calib_samples), n // 2))
        calib = data.rows(0, c, name=f"{data.name} [:{c}]")
        evald = data.rows(c, None, name=f"{data.name} [{c}:]")
        return calib, evald, DataSplit(c, n - c, same_source=True, held_out=True)
    c = min(int(calib_samples), n)
    reason = (f"{n} samples are too few to hold out; {2 * MIN_HELD_OUT} are needed" if hold_out
              else "hold-out turned off")
    calib = data.subset(c, name=f"{data.name} (first {c})")
    return calib, data, DataSplit(c, n, same_source=True, held_out=False, reason=reason)


def to_device(inputs: Inputs, device: torch.device | str) -> Inputs:
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device)
    if isinstance(inputs, Mapping):
        return {k: to_device(v, device) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(to_device(v, device) for v in inputs)
    return inputs


def batch_len(inputs: Inputs) -> int | None:
    if isinstance(inputs, torch.Tensor):
        return int(inputs.shape[0]) if inputs.dim() else None
    vals = list(inputs.values()) if isinstance(inputs, Mapping) else list(inputs) if isinstance(inputs, (tuple, list)) else []
    vals = [v for v in vals if isinstance(v, torch.Tensor) and v.dim()]
    return int(vals[0].shape[0]) if vals else None


def _take_rows(inputs: Inputs, a: int, b: int, pad_to: int | None = None) -> Inputs:
    def cut(v):
        if not isinstance(v, torch.Tensor) or not v.dim():
            return v
        part = v[a:b]
        if pad_to is not None and part.shape[0] < pad_to:  # repeat the last sample to fill the fixed batch
            part = torch.cat([part, part[-1:].expand((pad_to - part.shape[0],) + tuple(part.shape[1:]))])
        return part

    if isinstance(inputs, Mapping):
        return {k: cut(v) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(cut(v) for v in inputs)
    return cut(inputs)


def fixed_batch_of(model) -> int | None:
    """The batch size a model only accepts (a torch.export program exported with a fixed batch)."""
    fb = getattr(model, "quantviz_fixed_batch", None)  # a wrapper may say so
    meta = getattr(model, "meta", None)  # a GraphModule: its meta survives deepcopy
    if fb is None and isinstance(meta, dict):
        fb = meta.get("quantviz_fixed_batch")
    return int(fb) if isinstance(fb, int) and fb > 0 else None


def call_model(model: Callable, inputs: Inputs) -> Any:
    fb = fixed_batch_of(model)
    if fb is not None:
        n = batch_len(inputs)
        if n is not None and n != fb:  # run at the batch size the program accepts, chunk by chunk
            outs = []
            for a in range(0, n, fb):
                b = min(a + fb, n)
                out = output_tensor(_call(model, _take_rows(inputs, a, b, pad_to=fb)))
                outs.append(out[: b - a])
            return torch.cat(outs)
    return _call(model, inputs)


def _call(model: Callable, inputs: Inputs) -> Any:
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def output_tensor(out: Any) -> torch.Tensor:
    """The main output tensor of a model call: the tensor itself, a ``logits`` entry / attribute
    (HF models), else the first floating-point tensor of a tuple, list or dict (an integer output,
    such as the label an ONNX classifier returns beside its probabilities, carries no error to
    measure), else its first tensor."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, Mapping):
        if isinstance(out.get("logits"), torch.Tensor):
            return out["logits"]
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        found = []
        for v in out:
            if not isinstance(v, torch.Tensor):
                try:
                    v = output_tensor(v)
                except TypeError:
                    continue
            if v.is_floating_point() or v.is_complex():
                return v
            found.append(v)
        if found:
            return found[0]
    raise TypeError(f"model output of type {type(out).__name__} holds no tensor")


def chunk_bounds(n: int, batch_size: int, first: int) -> list[tuple[int, int]]:
    """Sample ranges of the re-check: a small first chunk, then the session's batches.

    No chunk straddles a batch of ``batch_size``, so results kept per batch
    (the float reference) hold each chunk as a slice. The float reference is
    computed over the same chunks, so a chunk's float outputs come from the
    same kernels as the re-check's (bit-identical when nothing is quantized).
    """
    bounds, start = [], 0
    first = max(1, min(int(first), batch_size))
    while start < n:
        stop = min(start + (first if start == 0 else batch_size), n)
        stop = min(stop, (start // batch_size + 1) * batch_size)  # stay inside one reference batch
        bounds.append((start, stop))
        start = stop
    return bounds


def _take(x, a: int, b: int):
    if isinstance(x, torch.Tensor):
        return x[a:b]
    if isinstance(x, dict):
        return {k: v[a:b] for k, v in x.items()}
    return tuple(v[a:b] for v in x)


class ChunkedData:
    """A read-only view of a :class:`Dataset` that batches along fixed bounds.

    It answers ``batches()`` / ``num_batches()`` like a Dataset (the batch
    size argument is ignored), so the SuffixRunner and ``iterate_outputs``
    run over the re-check's chunks.
    """

    def __init__(self, data, bounds: list[tuple[int, int]]):
        self.data = data
        self.bounds = bounds
        self.name = data.name

    def __len__(self) -> int:
        return len(self.data)

    def batches(self, batch_size: int | None = None):
        y = self.data.y
        for a, b in self.bounds:
            yield _take(self.data.x, a, b), (y[a:b] if y is not None else None)

    def num_batches(self, batch_size: int | None = None) -> int:
        return len(self.bounds)
