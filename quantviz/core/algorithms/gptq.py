"""GPTQ: quantize a layer column by column, compensating each column's rounding
error in the columns not yet quantized (Frantar et al., 2022).

With ``H = E[x x^T]`` the Gram matrix of the layer's input columns
(:mod:`.stats`; damped by ``damp`` times its mean diagonal), the error of
rounding column ``i`` is spread over the later columns through the upper
Cholesky factor ``U`` of ``H^-1``::

    e = (w_i - q_i) / U[i, i];   W[:, i:] -= e U[i, i:]

in blocks of ``block_size`` columns with lazy updates of the rest. Per-group
grids take each group's scale from the weights as they are when the group's
first column is reached (GPTQ's groupwise rule); with ``act_order`` the
columns go in order of decreasing ``H[i, i]`` and group scales are taken from
the original weights first (GPTQ's static groups), so groups stay the
contiguous runs of columns that quantviz's grids (and exports) describe.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..errors import Cancelled
from ..progress import Progress, null_progress
from ..numerics.qparams import QParams
from ..numerics.spec import WeightSpec
from .grid import Grid, qparams_for, weight_grid, with_values


def gptq(w: torch.Tensor, spec: WeightSpec, gram: torch.Tensor, *, damp: float = 0.01, act_order: bool = False,
         block_size: int = 128, progress: Progress = null_progress,
         cancel: Callable[[], bool] = lambda: False) -> tuple[torch.Tensor, QParams, Grid]:
    """``(codes, qparams, grid)`` of the ``(out, in)`` weight ``w`` quantized by GPTQ."""
    W = w.clone().float()
    out, n = W.shape
    H = gram.clone().double()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    per_group = spec.granularity == "per_group"
    gs = spec.effective_group_size()
    qp, grid = weight_grid(w.float(), spec)  # per-channel / per-tensor / static groups: from the float weight
    perm = None
    if act_order:
        perm = torch.argsort(torch.diag(H), descending=True)
        W, H = W[:, perm], H[perm][:, perm]
    d = float(torch.diag(H).mean()) * damp
    H += torch.eye(n, dtype=H.dtype) * d
    try:
        L = torch.linalg.cholesky(H)
        U = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True).float()
    except RuntimeError:  # not positive definite even damped: no compensation
        U = torch.eye(n)
    S = grid.scale.clone()
    Z = grid.zero.clone()
    if perm is not None:
        S, Z = S[:, perm], Z[:, perm]
    dynamic = per_group and perm is None
    ng = -(-n // gs) if per_group else 0
    g_scale = torch.empty(out, ng) if dynamic else None
    g_zero = torch.empty(out, ng) if dynamic else None
    g_lo = torch.empty(out, ng) if dynamic else None
    g_hi = torch.empty(out, ng) if dynamic else None
    if dynamic:
        block_size = max(gs, block_size // gs * gs)
    Q = torch.empty_like(W)
    qmin, qmax = float(grid.qmin), float(grid.qmax)
    for i1 in range(0, n, block_size):
        if cancel():
            raise Cancelled("GPTQ cancelled")
        i2 = min(i1 + block_size, n)
        W1 = W[:, i1:i2].clone()
        E1 = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if dynamic and col % gs == 0:
                gqp = qparams_for(W1[:, i:i + gs], spec)
                k = col // gs
                g_scale[:, k], g_zero[:, k] = gqp.scale, gqp.zero_point.float()
                g_lo[:, k], g_hi[:, k] = gqp.lo, gqp.hi
                stop = min(col + gs, n)
                S[:, col:stop] = gqp.scale.view(-1, 1)
                Z[:, col:stop] = gqp.zero_point.float().view(-1, 1)
            s, z = S[:, col], Z[:, col]
            x = W1[:, i]
            q = torch.clamp(torch.round(x * torch.reciprocal(s)) + z, qmin, qmax)
            Q[:, col] = q
            e = (x - (q - z) * s) / U1[i, i]
            W1[:, i:] -= e.unsqueeze(1) * U1[i, i:].unsqueeze(0)
            E1[:, i] = e
        W[:, i2:] -= E1 @ U[i1:i2, i2:]
        progress(i2, n, "GPTQ")
    if perm is not None:
        inv = torch.argsort(perm)
        Q = Q[:, inv]
    if dynamic:
        qp = with_values(qp, g_scale, g_zero, g_lo, g_hi)
        grid = Grid.of(qp, out, n, "per_group", gs)
    return Q, qp, grid
