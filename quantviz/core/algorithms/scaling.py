"""Per-input-channel scale migration for Linear layers: SmoothQuant and AWQ.

Both rewrite ``y = W x`` as ``y = (W diag(s)) (x / s)`` with one ``s > 0``
per input channel, quantize ``W diag(s)`` on the layer's grid and (when the
layer's input is quantized) quantize ``x / s``. The simulated layer is exactly
``Q_a(x / s) Q_w(W diag(s))``; quantviz simulates it as
``Q_a(x / s) * s`` fed to the weight ``Q_w(W diag(s)) diag(s)^-1``, the same
product.

* SmoothQuant (Xiao et al., 2023) for W8A8: ``s_j = max|x_j|^alpha /
  max|W_:j|^(1 - alpha)`` moves activation outliers into the weights.
* AWQ (Lin et al., 2024) for weight-only low-bit: ``s_j = mean|x_j|^a``
  (normalised), with ``a`` searched on a grid in ``[0, 1)`` to minimise the
  layer's output error ``tr(dW G dW^T)`` on calibration data (``a = 0`` is
  plain rounding, so AWQ never does worse than it on that data).
"""
from __future__ import annotations

from typing import Callable

import torch

from ..errors import Cancelled
from ..progress import Progress, null_progress
from ..numerics.spec import WeightSpec
from .grid import weight_grid

MIN_SCALE = 1e-5


def _quantize_scaled(w: torch.Tensor, s: torch.Tensor, spec: WeightSpec):
    ws = w * s.view(1, -1)
    qp, grid = weight_grid(ws, spec)
    codes = grid.nearest(ws)
    return codes, qp, grid, grid.dequant(codes) / s.view(1, -1)


def smoothquant_scales(w: torch.Tensor, act_absmax: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    wmax = w.abs().amax(dim=0).clamp_min(MIN_SCALE)
    amax = act_absmax.float().clamp_min(MIN_SCALE)
    s = amax.pow(alpha) / wmax.pow(1 - alpha)
    s = torch.where((act_absmax > 0) & (w.abs().amax(dim=0) > 0), s, torch.ones_like(s))
    return s.clamp_min(MIN_SCALE)


def smoothquant(w: torch.Tensor, spec: WeightSpec, act_absmax: torch.Tensor, *, alpha: float = 0.5):
    """``(codes, qparams, grid, s, effective_weight)`` of SmoothQuant on ``w`` (``(out, in)``)."""
    s = smoothquant_scales(w.float(), act_absmax, alpha)
    codes, qp, grid, eff = _quantize_scaled(w.float(), s, spec)
    return codes, qp, grid, s, eff


def awq(w: torch.Tensor, spec: WeightSpec, act_absmean: torch.Tensor, gram: torch.Tensor, *, grid_points: int = 20,
        progress: Progress = null_progress, cancel: Callable[[], bool] = lambda: False):
    """``(codes, qparams, grid, s, effective_weight, best_exponent)`` of AWQ's scale search."""
    w = w.float()
    g = gram.float()
    x = act_absmean.float().clamp_min(MIN_SCALE)
    best = None
    for k in range(grid_points):
        if cancel():
            raise Cancelled("AWQ cancelled")
        a = k / grid_points
        s = x.pow(a)
        s = (s / (s.max() * s.min()).sqrt()).clamp_min(MIN_SCALE)
        codes, qp, grid, eff = _quantize_scaled(w, s, spec)
        d = eff - w
        err = float(((d @ g) * d).sum())
        if best is None or err < best[0]:
            best = (err, codes, qp, grid, s, eff, a)
        progress(k + 1, grid_points, "AWQ")
    _, codes, qp, grid, s, eff, a = best
    return codes, qp, grid, s, eff, a
