"""Running an exported ONNX model with ONNX Runtime (CPU).

Used to prove an export is faithful (its outputs and accuracy against the
simulation) and to measure real latency. ``onnxruntime`` is imported lazily;
without it a one-line error names the extra to install.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch

from ..model.data import Dataset
from ..errors import Cancelled, QuantvizError


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise QuantvizError("running ONNX models needs onnxruntime: pip install 'quantviz[onnx]'") from None
    return onnxruntime


def make_session(model: bytes | str | Path, *, threads: int | None = None, optimize: bool = True):
    """An ``onnxruntime.InferenceSession`` on the CPU provider."""
    ort = _ort()
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    src = str(model) if isinstance(model, Path) else model
    try:
        return ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QuantvizError(f"ONNX Runtime cannot load the model: {first}") from exc


def feeds(sess, inputs) -> dict[str, np.ndarray]:
    """Map a batch (tensor, tuple or dict of tensors) onto the session's inputs."""
    names = [i.name for i in sess.get_inputs()]
    if isinstance(inputs, torch.Tensor):
        vals = [inputs]
    elif isinstance(inputs, Mapping):
        return {k: v.detach().cpu().numpy() for k, v in inputs.items() if k in names}
    else:
        vals = list(inputs)
    return {n: v.detach().cpu().numpy() for n, v in zip(names, vals)}


def run_dataset(sess, data: Dataset, *, batch_size: int = 64,
                cancel: Callable[[], bool] = lambda: False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """All outputs (first output) of ``sess`` over ``data``, and the labels."""
    outs, labels = [], []
    for x, y in data.batches(batch_size):
        if cancel():
            raise Cancelled()
        outs.append(torch.from_numpy(np.asarray(sess.run(None, feeds(sess, x))[0])))
        if y is not None:
            labels.append(y)
    return torch.cat(outs), (torch.cat(labels) if labels else None)


def accuracy(outputs: torch.Tensor, labels: torch.Tensor | None) -> float | None:
    if labels is None or outputs.dim() < 2 or labels.shape != outputs.shape[:-1]:
        return None
    return float((outputs.argmax(dim=-1) == labels).float().mean())


def median_latency_ms(fn: Callable[[], object], *, warmup: int = 3, repeats: int = 20) -> float:
    """Median wall time of ``fn()`` in milliseconds after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return float(statistics.median(times))


def ort_latency_ms(sess, inputs, *, warmup: int = 3, repeats: int = 20) -> float:
    f = feeds(sess, inputs)
    return median_latency_ms(lambda: sess.run(None, f), warmup=warmup, repeats=repeats)


__all__ = ["make_session", "run_dataset", "accuracy", "median_latency_ms", "ort_latency_ms", "feeds"]
