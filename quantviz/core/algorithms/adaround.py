"""AdaRound: learned rounding by layer-wise reconstruction (Nagel et al., 2020).

Each weight may round down or up from ``floor(w / s)``; a continuous variable
``V`` per weight, mapped through the rectified sigmoid
``h(V) = clamp(sigmoid(V) (zeta - gamma) + gamma, 0, 1)``, chooses between the
two. ``V`` minimises the layer's output reconstruction error on calibration
data plus a regulariser that pushes every ``h`` to 0 or 1, with an exponent
``beta`` annealed from 20 to 2 after a warm-up without the regulariser::

    loss(V) = tr(dW G dW^T) + reg * sum(1 - |2 h(V) - 1| ** beta)

where ``dW`` is the soft-quantized weight minus the float one and ``G`` the
Gram matrix of the layer's input columns (:mod:`.stats`), so one step costs a
``(out, in) x (in, in)`` product whatever the number of calibration samples.
At the end every weight rounds up where ``h >= 0.5``.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ..errors import Cancelled
from ..progress import Progress, null_progress
from .grid import Grid

ZETA, GAMMA = 1.1, -0.1
BETA_START, BETA_END = 20.0, 2.0
WARMUP = 0.2


def _h(v: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def adaround(w: torch.Tensor, grid: Grid, gram: torch.Tensor, *, cross: torch.Tensor | None = None, iterations: int = 1000, reg: float = 0.01,
             lr: float = 0.01, progress: Progress = null_progress,
             cancel: Callable[[], bool] = lambda: False) -> torch.Tensor:
    """Integer codes (float tensor, ``(out, in)``) of ``w`` after learned rounding."""
    w = w.float()
    g = gram.float()
    # cross = E[x_float x_in^T] when the layer's input differs from the float one
    # (asymmetric reconstruction): loss = E||W x_float - Wq x_in||^2 + const
    #                                   = tr(dW G dW^T) - 2 tr(dW (W C - W G)^T) + const
    lin = None if cross is None else (w @ cross.float() - w @ g)
    # normalise the reconstruction term so that reg means the same for every layer:
    # the loss of rounding to nearest is 1 (AIMET's loss has the layer's own scale;
    # this keeps the regulariser's weight comparable across layers and models)
    near = grid.nearest(w)
    d0 = grid.dequant(near) - w
    norm = float(((d0 @ g) * d0).sum())
    if not math.isfinite(norm) or norm <= 0:
        return near  # nothing to improve (exact already)
    g = g / norm
    if lin is not None:
        lin = lin / norm
    ws = w * grid.inv
    base = torch.floor(ws)
    rest = (ws - base).clamp(0.0, 1.0)
    p = ((rest - GAMMA) / (ZETA - GAMMA)).clamp(1e-4, 1 - 1e-4)
    v = torch.log(p / (1 - p))
    warm = int(WARMUP * iterations)
    lo_code, hi_code = float(grid.qmin), float(grid.qmax)
    every = max(1, iterations // 50)
    # Adam on V with the gradient written out (no autograd graph per step: ~3x faster on small layers)
    m1 = torch.zeros_like(v)
    m2 = torch.zeros_like(v)
    b1, b2, eps = 0.9, 0.999, 1e-8
    zs = grid.zero
    span = ZETA - GAMMA
    two_s = 2 * grid.scale
    for t in range(iterations):
        if t % every == 0:
            if cancel():
                raise Cancelled("AdaRound cancelled")
            progress(t, iterations, "AdaRound")
        sig = torch.sigmoid(v)
        hr = sig * span + GAMMA
        h = hr.clamp(0.0, 1.0)
        c = base + h + zs  # soft integer code
        d = (c.clamp(lo_code, hi_code) - zs) * grid.scale - w
        gd = d @ g
        if lin is not None:
            gd = gd - lin
        # d loss / d h = 2 (dW G - lin) s, where neither the sigmoid's nor the grid's clamp is active
        active = (hr > 0) & (hr < 1) & (c >= lo_code) & (c <= hi_code)
        grad_h = gd * two_s
        if t >= warm:
            rel = (t - warm) / max(iterations - warm, 1)
            beta = BETA_END + 0.5 * (BETA_START - BETA_END) * (1 + math.cos(rel * math.pi))
            u = 2 * h - 1
            au = u.abs().clamp_min(1e-12)
            # d/dh [reg (1 - |2h - 1|^beta)] = -2 reg beta |u|^(beta - 1) sign(u)
            grad_h = grad_h - (2 * reg * beta) * au.pow(beta - 1) * torch.sign(u)
        grad = grad_h * active * (sig * (1 - sig) * span)
        k = t + 1
        m1.mul_(b1).add_(grad, alpha=1 - b1)
        m2.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denom = (m2 / (1 - b2 ** k)).sqrt_().add_(eps)
        v.addcdiv_(m1, denom, value=-lr / (1 - b1 ** k))
    progress(iterations, iterations, "AdaRound")
    up = (_h(v) >= 0.5).float()
    return torch.clamp(base + up + grid.zero, lo_code, hi_code)
