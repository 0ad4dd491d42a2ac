"""Running a model over data, and a layer's input quantizer.

:func:`iterate_outputs` / :func:`forward_batches` run a model batch by batch
(one-line :class:`ModelError` on failure, cancellable); :func:`quantize_input`
is the fake quantizer :class:`~.fakequant.QuantSim` applies to a layer's input;
:class:`QuantView` is ``sim.qmodel``, the one model called with quantization on.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
from torch import nn

from ..errors import Cancelled, ModelError, QuantvizError
from ..model.data import Dataset, call_model, to_device
from ..numerics.format_quant import fake_quantize_activation
from ..numerics.qparams import QParams
from ..progress import Progress, null_progress


class QuantView(nn.Module):
    """``sim.qmodel``: calls the one model with quantization switched on."""

    def __init__(self, sim):
        super().__init__()
        object.__setattr__(self, "_sim", sim)  # not a registered child: no second module tree

    @property
    def quantviz_base(self) -> nn.Module:
        return self._sim.float_model

    def quantviz_context(self):
        return self._sim.quantized()

    @property
    def quantviz_readout(self):
        return self._sim.readout

    @property
    def quantviz_fixed_batch(self):
        from ..model.data import fixed_batch_of

        return fixed_batch_of(self._sim.float_model)

    def forward(self, *args, **kwargs):
        with self._sim.quantized():
            return self._sim.float_model(*args, **kwargs)

    # the view has the base model's parameters and layers (for callers that look)
    def parameters(self, recurse: bool = True):
        return self._sim.float_model.parameters(recurse)

    def named_parameters(self, *args, **kwargs):
        return self._sim.float_model.named_parameters(*args, **kwargs)

    def named_modules(self, *args, **kwargs):
        return self._sim.float_model.named_modules(*args, **kwargs)

    def get_submodule(self, target: str) -> nn.Module:
        return self._sim.float_model.get_submodule(target)


def quantize_input(x: torch.Tensor, qp) -> torch.Tensor:
    """A layer's input under its activation quantizer: an integer grid (:class:`QParams`) or a
    float / block format (:class:`~.formats.FormatParams`)."""
    if not isinstance(qp, QParams):
        return fake_quantize_activation(x, qp)
    return fake_quantize_tensor(x, qp)


def input_clip_range(qp) -> tuple[float, float]:
    """The input values an activation quantizer keeps unclipped: its grid's ends; a block format's
    calibrated NVFP4 tensor maximum, or none (MX: every block's scale follows its own maximum)."""
    if isinstance(qp, QParams):
        glo, ghi = qp.grid_range()
        return float(glo[0]), float(ghi[0])
    if qp.groups:
        return -float(qp.hi[0]), float(qp.hi[0])
    amax = qp.tensor_scale if qp.tensor_scale is not None else math.inf
    return -amax, amax


def fake_quantize_tensor(x: torch.Tensor, qp: QParams) -> torch.Tensor:
    """Per-tensor fake quantization, bit for bit as ``torch.fake_quantize_per_tensor_affine``.

    Same float32 arithmetic as torch's CPU kernel (``inv = 1.0f / scale``,
    ``(clamp(nearbyint(x * inv) + z) - z) * scale``) but as four in-place
    vectorised passes without the autograd mask that kernel also writes: about
    2x cheaper on CPU, which matters because it runs on every quantized
    layer's input in every evaluation.
    """
    inv, z, s = _per_tensor_constants(qp)
    q = torch.mul(x, inv).round_()
    if z == 0.0:  # symmetric grids: the zero point adds and subtracts nothing
        return q.clamp_(qp.qmin, qp.qmax).mul_(s)
    return q.add_(z).clamp_(qp.qmin, qp.qmax).sub_(z).mul_(s)


def _per_tensor_constants(qp: QParams) -> tuple[float, float, float]:
    """(float32 1/scale, zero point, scale) as Python floats, computed once per QParams:
    the layer-input hook runs on every batch and these are three tensor ops and syncs."""
    c = qp.__dict__.get("_fq_constants")
    if c is None or c[0] is not qp.scale:
        s = qp.scale[:1].float()
        inv = float(torch.reciprocal(s))  # float32 1/scale, exactly representable as a Python float
        c = (qp.scale, (inv, float(qp.zero_point[0]), float(s)))
        qp.__dict__["_fq_constants"] = c
    return c[1]


def run_model(model: nn.Module, inputs, device, readout=None) -> torch.Tensor:
    """The output the metrics read (``readout``, default the model's own: :mod:`.readout`)."""
    from ..model.data import batch_len
    from ..model.readout import readout_of

    return readout_of(model, readout).pick(call_model(model, to_device(inputs, device)), batch_len(inputs))


def iterate_outputs(model: nn.Module, data: Dataset, *, device, batch_size: int = 64,
                    cancel: Callable[[], bool] = lambda: False,
                    readout=None) -> Iterable[tuple[int, torch.Tensor, torch.Tensor | None]]:
    """Yield ``(batch_index, output, labels)`` running ``model`` batch by batch (the output
    ``readout`` picks; default the one ``model`` carries, else its main output).

    Gradients are off only around each model call, never across a ``yield``: a
    generator suspended inside ``torch.no_grad()`` would leave its caller's
    thread without autograd (for good, if the caller stops iterating early)."""
    for i, (x, y) in enumerate(data.batches(batch_size)):
        if cancel():
            raise Cancelled()
        try:
            with torch.no_grad():
                out = run_model(model, x, device, readout)
        except QuantvizError:
            raise
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise ModelError(f"model raised {type(exc).__name__} on {data.name}: {first}") from exc
        out = out.detach().float().cpu()
        yield i, out, y
        del out, x  # not held while the next batch runs (a language model's logits are large)


@torch.no_grad()
def forward_batches(model: nn.Module, data: Dataset, *, device, batch_size: int = 64, what: str = "a pass",
                    progress: Progress = null_progress, cancel: Callable[[], bool] = lambda: False) -> None:
    """Run ``model`` over ``data`` for its hooks' sake, batch by batch.

    Cancellation is checked before every batch; an exception raised by the
    model becomes a one-line :class:`ModelError` naming the data set.
    """
    total = data.num_batches(batch_size)
    for i, (x, _) in enumerate(data.batches(batch_size)):
        if cancel():
            raise Cancelled(f"{what} cancelled")
        try:
            call_model(model, to_device(x, device))
        except QuantvizError:
            raise
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise ModelError(f"model raised {type(exc).__name__} during {what} on {data.name}: {first}") from exc
        progress(i + 1, total, what)


__all__ = ["QuantView", "quantize_input", "input_clip_range", "fake_quantize_tensor", "run_model", "iterate_outputs",
           "forward_batches"]
