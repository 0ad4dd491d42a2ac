"""One record per quantizable layer of a simulation: :class:`LayerState`.

:class:`~.fakequant.QuantSim` keeps everything it knows about a layer here,
in three parts that change at different times:

* fixed at construction: the layer's inventory entry, its module (and its
  twin in a TorchScript ``qmodel``), views of its float weight and bias;
* the applied config (set by ``apply``, reset by ``load_state``): the weight
  spec the layer runs with and the cache key it was applied under, the bias
  its algorithm computed, its input quantizer (spec and qparams) and the
  SmoothQuant / AWQ input scale, and a fast path to its whole quantized
  tensor;
* one quantized call: the module whose weight was swapped in, the codes an
  embedding looks its rows up in.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..model.layers import LayerInfo
from ..numerics.spec import ActSpec, WeightSpec

UNSET = object()  # ``applied_key`` before the layer's weight was ever applied


@dataclass(eq=False)
class LayerState:
    info: LayerInfo
    fmod: nn.Module  # the layer in the one (float) model
    qmod: nn.Module  # the layer that runs quantized (``fmod`` unless TorchScript)
    float_w: torch.Tensor  # a view of the float weight, never a copy
    float_param: nn.Parameter | None = None  # the float weight parameter (restored after a quantized call)
    float_bias: nn.Parameter | None = None
    # the applied config
    wspec: WeightSpec | None = None  # the weight spec it runs with (None: float)
    applied_key: object = UNSET  # WeightSpec (rounding) / AlgorithmKey / None it was applied under
    bias: torch.Tensor | None = None  # bias correction: the bias the layer runs with
    act_spec: ActSpec | None = None  # its input quantizer's spec (None: not set yet)
    act_qp: object = None  # its input quantizer's qparams (QParams / FormatParams / None)
    in_scale: torch.Tensor | None = None  # SmoothQuant / AWQ: the input is quantized as x / s
    run: tuple | None = None  # (wspec, its whole quantized tensor, cache generation): the call's fast path
    # one quantized call
    swapped: nn.Module | None = None  # the module whose weight is swapped in now
    gather: object = None  # core.wcodes.Codes an embedding looks its rows up in

    @property
    def name(self) -> str:
        return self.info.name

    def set_weight(self, wspec: WeightSpec | None, key, bias: torch.Tensor | None) -> None:
        """The layer now runs with ``wspec`` (applied under ``key``) and ``bias``."""
        self.wspec, self.applied_key, self.bias, self.run = wspec, key, bias, None

    def forget_weight(self) -> None:
        """The layer runs float until its weight is applied again (new float weights)."""
        self.set_weight(None, UNSET, None)

    def restore(self, mod: nn.Module) -> None:
        """Put the float weight (and bias) back on ``mod`` after a quantized call."""
        mod._parameters["weight"] = self.float_param
        if self.bias is not None:
            mod._parameters["bias"] = self.float_bias


__all__ = ["LayerState", "UNSET"]
