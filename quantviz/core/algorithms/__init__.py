"""Per-layer post-training quantization algorithms.

Pure functions on tensors (a layer's float weight as an ``(out, in)`` matrix,
statistics of its calibration inputs, its grid settings) in one module each:
:mod:`.adaround`, :mod:`.gptq`, :mod:`.bias_correction`, :mod:`.scaling`
(SmoothQuant, AWQ), :mod:`.cle` (cross-layer equalization, model level).
:func:`run_algorithm` dispatches on ``spec.algorithm`` and returns an
:class:`AlgorithmResult`; :class:`~quantviz.core.sim.fakequant.QuantSim` runs it
when a config asks for it and caches the result per layer.

Imports: numerics, model.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..errors import QuantvizError
from ..progress import Progress, null_progress
from ..numerics.qparams import QParams
from ..numerics.spec import ALGORITHMS, WeightSpec
from .grid import Grid, output_sqnr_db, weight_grid
from .options import DESCRIPTIONS, OPTIONS, option
from .stats import InputStats, applies, capture_input_stats

__all__ = ["ALGORITHMS", "DESCRIPTIONS", "OPTIONS", "AlgorithmResult", "run_algorithm", "applies",
           "capture_input_stats", "InputStats"]


@dataclass
class AlgorithmResult:
    codes: torch.Tensor  # (out, in) integer codes (float dtype)
    qparams: QParams
    weight: torch.Tensor  # (out, in) effective float weight the layer computes with
    bias_delta: torch.Tensor | None = None  # added to the layer's bias (created when absent)
    input_scale: torch.Tensor | None = None  # per input channel: the layer sees x / s, weight Q(W s)
    input_range: tuple[float, float] | None = None  # min / max of x / s on calibration data
    info: dict = field(default_factory=dict)
    grid: Grid | None = None


def run_algorithm(w: torch.Tensor, spec: WeightSpec, stats: InputStats, *, progress: Progress = null_progress,
                  cancel: Callable[[], bool] = lambda: False) -> AlgorithmResult:
    """Run ``spec.algorithm`` on the ``(out, in)`` float weight ``w``."""
    algo = spec.algorithm
    if spec.format != "int":  # the last guard: never fit an integer grid and call it a float format
        raise QuantvizError(f"algorithm {algo!r} fits integer grids, and format {spec.format!r} has none")
    t0 = time.process_time()
    w = w.float()
    qp, grid = weight_grid(w, spec)
    near = grid.nearest(w)
    bias_delta = input_scale = input_range = None
    info: dict = {"algorithm": algo}
    if algo == "adaround":
        from .adaround import adaround

        codes = adaround(w, grid, stats.gram, cross=None if stats.same_input else stats.cross,
                         iterations=option(spec, "iterations"), reg=option(spec, "reg"), lr=option(spec, "lr"),
                         progress=progress, cancel=cancel)
        eff = grid.dequant(codes)
    elif algo == "gptq":
        from .gptq import gptq

        codes, qp, grid = gptq(w, spec, stats.gram, damp=option(spec, "damp"), act_order=option(spec, "act_order"),
                               block_size=option(spec, "block_size"), progress=progress, cancel=cancel)
        near = grid.nearest(w)
        eff = grid.dequant(codes)
    elif algo == "bias_correction":
        from .bias_correction import bias_correction

        codes = near
        eff = grid.dequant(codes)
        bias_delta = bias_correction(w, eff, stats.mean, stats.float_mean)
        info["bias_shift_max"] = float(bias_delta.abs().max()) if bias_delta.numel() else 0.0
    elif algo in ("smoothquant", "awq"):
        from . import scaling

        if algo == "smoothquant":
            codes, qp, grid, s, eff = scaling.smoothquant(w, spec, stats.absmax, alpha=option(spec, "alpha"))
        else:
            codes, qp, grid, s, eff, a = scaling.awq(w, spec, stats.absmean, stats.gram, grid_points=option(spec, "grid"),
                                                     progress=progress, cancel=cancel)
            info["exponent"] = a
        input_scale = s
        input_range = (float((stats.cmin / s).min()), float((stats.cmax / s).max()))
        info["scale_min"], info["scale_max"] = float(s.min()), float(s.max())
        near = codes  # codes of the scaled weight: compare rounding against itself
    else:
        raise ValueError(f"unknown algorithm {algo!r}")
    flips = codes != near
    info["changed"] = int(flips.sum())
    info["changed_fraction"] = float(flips.float().mean()) if flips.numel() else 0.0
    if info["changed"]:
        info["changed_per_channel"] = flips.sum(dim=1).tolist()
        up = (codes > near) & flips
        info["changed_up"] = int(up.sum())
        if algo in ("adaround", "gptq"):
            ws = w * grid.inv
            rest = (ws - torch.floor(ws))[flips]
            info["changed_near_tie"] = float(((rest - 0.5).abs() < 0.25).float().mean())
    plain = weight_grid(w, spec.without_algorithm())[1]
    info["output_sqnr_db"] = output_sqnr_db(w, eff, stats)
    info["output_sqnr_db_nearest"] = output_sqnr_db(w, plain.dequant(plain.nearest(w)), stats)
    info["cpu_seconds"] = time.process_time() - t0
    info["calib_columns"] = stats.columns
    return AlgorithmResult(codes, qp, eff, bias_delta, input_scale, input_range, info, grid)
