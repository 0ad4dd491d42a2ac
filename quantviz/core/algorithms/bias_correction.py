"""Empirical bias correction (Nagel et al., 2019; AIMET's empirical variant).

Rounding shifts the mean of a layer's output. With ``f`` the layer's input in
the float model and ``x`` its input in the simulated model (the layers
before it quantized), the shift is ``E[W f] - E[Q(W) x] = W E[f] - Q(W) E[x]``
per output channel; adding it to the bias makes the quantized layer's output
mean equal the float layer's on the calibration data. For a convolution the
expectations run over every receptive field (``F.unfold`` columns, padding
included), so the correction is exact for the pre-activation mean.
"""
from __future__ import annotations

import torch


def bias_correction(w: torch.Tensor, wq: torch.Tensor, mean_in: torch.Tensor, float_mean_in: torch.Tensor) -> torch.Tensor:
    """The per-output-channel correction to add to the bias (``(out,)`` float32)."""
    return (w.double() @ float_mean_in.double() - wq.double() @ mean_in.double()).float()
