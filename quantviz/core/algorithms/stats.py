"""Input statistics of a layer on calibration data, for the PTQ algorithms.

Every algorithm here needs only second-order statistics of the layer's input
columns: for a Linear layer a column is one input vector (all leading axes
are samples), for a convolution one receptive field as ``F.unfold`` lays it
out (``C_in x kh x kw``, the order of the weight's flattened rows). With
``X`` the ``(in, N)`` matrix of columns:

* ``gram = X X^T / N`` gives the output error of any weight change
  ``dW`` exactly: ``mean ||dW x||^2 = tr(dW gram dW^T)`` (AdaRound's
  reconstruction loss, GPTQ's Hessian, AWQ's search objective);
* ``mean = X 1 / N`` gives the output-mean shift ``dW mean`` (bias correction);
* per-input-channel ``absmax`` / ``absmean`` / ``min`` / ``max`` drive
  SmoothQuant / AWQ scales and the input range after scaling.

The statistics come from the float model (each layer sees float inputs), so
they depend only on the layer and the calibration data: a layer's algorithm
result can be cached per (layer, settings) until the calibration changes.

Padding never enters them: for a Linear layer whose input is ``(batch, tokens,
features)``, only the rows of real tokens count (the inputs' ``attention_mask``,
or a recipe's ``MASK``: :mod:`quantviz.core.model.readout`), so a padded batch gives
the statistics of the same tokens without padding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import Cancelled
from ..progress import Progress, null_progress

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class InputStats:
    """Statistics of a layer's input columns ``x`` (as the simulated model feeds it)
    and ``f`` (as the float model feeds it), over ``columns`` columns."""

    gram: torch.Tensor  # (in, in) E[x x^T]
    cross: torch.Tensor  # (in, in) E[f x^T]
    float_gram: torch.Tensor  # (in, in) E[f f^T]
    mean: torch.Tensor  # (in,) E[x]
    float_mean: torch.Tensor  # (in,) E[f]
    absmax: torch.Tensor  # (channels,) per input channel of x (Linear: features; conv: C_in)
    absmean: torch.Tensor
    cmin: torch.Tensor
    cmax: torch.Tensor
    columns: int

    @property
    def same_input(self) -> bool:
        return bool(torch.equal(self.gram, self.cross))


def applies(module: nn.Module) -> str | None:
    """Why no algorithm applies to ``module`` (None when one does)."""
    if isinstance(module, nn.Linear):
        return None
    if isinstance(module, _CONV):
        if module.groups != 1:
            return f"grouped convolution (groups={module.groups})"
        if module.padding_mode != "zeros":
            return f"padding mode {module.padding_mode!r}"
        return None
    return f"{type(module).__name__} layers"


def columns(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as ``(N, in)`` rows, in the order of the flattened weight."""
    x = x.detach().float()
    if isinstance(module, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    if isinstance(module, nn.Conv2d):
        cols = F.unfold(x, module.kernel_size, dilation=module.dilation, padding=module.padding, stride=module.stride)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    if isinstance(module, nn.Conv1d):
        cols = F.unfold(x.unsqueeze(-1), (module.kernel_size[0], 1), dilation=(module.dilation[0], 1),
                        padding=(module.padding[0], 0), stride=(module.stride[0], 1))
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    if isinstance(module, nn.Conv3d):
        kd, kh, kw = module.kernel_size
        pd, ph, pw = module.padding
        xp = F.pad(x, (pw, pw, ph, ph, pd, pd))
        sd, sh, sw = module.stride
        dd, dh, dw = module.dilation
        p = xp.unfold(2, dd * (kd - 1) + 1, sd).unfold(3, dh * (kh - 1) + 1, sh).unfold(4, dw * (kw - 1) + 1, sw)
        p = p[..., ::dd, ::dh, ::dw]  # (B, C, D', H', W', kd, kh, kw)
        b, c = p.shape[:2]
        return p.permute(0, 2, 3, 4, 1, 5, 6, 7).reshape(-1, c * kd * kh * kw)
    raise TypeError(f"no input columns for {type(module).__name__}")


class _Stop(Exception):
    pass


class _Acc:
    def __init__(self, module: nn.Module):
        self.module = module
        self.gram = self.cross = self.fgram = self.sum = self.fsum = None
        self.n = 0
        self.absmax = self.abssum = self.cmin = self.cmax = None
        self.cn = 0

    def update(self, xq: torch.Tensor, xf: torch.Tensor) -> None:
        q = columns(self.module, xq).double()
        f = q if xf is xq else columns(self.module, xf).double()
        g = q.T @ q
        c = g if f is q else f.T @ q
        fg = g if f is q else f.T @ f
        self.fgram = fg if self.fgram is None else self.fgram + fg
        self.gram = g if self.gram is None else self.gram + g
        self.cross = c if self.cross is None else self.cross + c
        s, fs = q.sum(0), f.sum(0)
        self.sum = s if self.sum is None else self.sum + s
        self.fsum = fs if self.fsum is None else self.fsum + fs
        self.n += q.shape[0]
        # per input channel: the channel axis is last for Linear, 1 for convs
        xc = xq.detach().float()
        xc = xc.reshape(-1, xc.shape[-1]) if isinstance(self.module, nn.Linear) else xc.movedim(1, -1).reshape(-1, xc.shape[1])
        amax, asum = xc.abs().amax(0), xc.abs().double().sum(0)
        cmin, cmax = xc.amin(0), xc.amax(0)
        if self.absmax is None:
            self.absmax, self.abssum, self.cmin, self.cmax = amax, asum, cmin, cmax
        else:
            self.absmax = torch.maximum(self.absmax, amax)
            self.abssum += asum
            self.cmin = torch.minimum(self.cmin, cmin)
            self.cmax = torch.maximum(self.cmax, cmax)
        self.cn += xc.shape[0]

    def result(self) -> InputStats:
        n = max(self.n, 1)
        return InputStats(self.gram / n, self.cross / n, self.fgram / n, self.sum / n, self.fsum / n, self.absmax,
                          (self.abssum / max(self.cn, 1)).float(), self.cmin, self.cmax, self.n)


def _grab(model: nn.Module, module: nn.Module, inputs) -> torch.Tensor | None:
    """The input of ``module`` when ``model`` runs on ``inputs`` (the pass stops there)."""
    from ..model.data import call_model

    got: list = []

    def hook(mod, args):
        if args and isinstance(args[0], torch.Tensor) and args[0].is_floating_point():
            got.append(args[0].detach())
            raise _Stop()

    h = module.register_forward_pre_hook(hook)
    try:
        call_model(model, inputs)
    except _Stop:
        pass
    finally:
        h.remove()
    return got[0] if got else None


@torch.no_grad()
def capture_input_stats(float_model: nn.Module, fmod: nn.Module, qmodel: nn.Module | None, qmod: nn.Module | None,
                        data, *, device="cpu", batch_size: int = 64, progress: Progress = null_progress,
                        cancel: Callable[[], bool] = lambda: False, readout=None) -> InputStats | None:
    """Input statistics of one layer: ``x`` from the simulated model ``qmodel`` (the
    layers before it quantized, its own input quantizer applied) and ``f`` from the
    float model. Each pass stops at the layer. ``qmodel=None``: float inputs only.
    ``readout`` says which tokens are real (default: the inputs' attention mask)."""
    from ..model.data import to_device
    from ..errors import ModelError, QuantvizError
    from ..model.readout import DEFAULT, real_rows

    readout = readout or DEFAULT
    tokens = isinstance(fmod, nn.Linear)  # (batch, tokens, features) inputs: padded rows are dropped

    acc = _Acc(fmod)
    total = data.num_batches(batch_size)
    for i, (x, _) in enumerate(data.batches(batch_size)):
        if cancel():
            raise Cancelled("algorithm statistics cancelled")
        x = to_device(x, device)
        try:
            f = _grab(float_model, fmod, x)
            q = f if qmodel is None else _grab(qmodel, qmod, x)
        except QuantvizError:
            raise
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise ModelError(f"model raised {type(exc).__name__} while collecting layer inputs on {data.name}: {first}") from exc
        if f is None or q is None:
            return None  # the layer does not run on this data
        if tokens:
            mask = readout.mask_of(x)
            if mask is not None:
                same = q is f
                f = real_rows(f, mask)
                q = f if same else real_rows(q, mask)
        if f.shape[0]:  # a batch of padding only adds nothing
            acc.update(q, f)
        progress(i + 1, total, "layer inputs")
    return acc.result() if acc.n else None
