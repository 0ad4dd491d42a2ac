"""bf16 / fp16 layers computed in float32 on the CPU.

Most CPUs have no bf16 / fp16 matrix units: PyTorch multiplies bf16 there
several times slower than float32 (about 4x measured on this project's 2-core
machine; ``benchmarks/cpu_upcast.py``). :func:`install` makes each given
``nn.Linear``, ``nn.Conv1d/2d/3d`` and transformers ``Conv1D`` whose weight is
bf16 / fp16 and whose input is on the CPU compute its product in float32: the
input, the weight it runs with (the float weight, or the fake-quantized one
:class:`.fakequant.QuantSim` swaps in) and the bias are upcast for the call
only, and the output is cast back to the layer's dtype, so the model's dtype
and memory stay as they are (one layer's float32 weight lives during its
call; a Linear weight over 16M elements, a language model's output layer, is
upcast a block of output rows at a time). The float reference and the quantized runs go through the same layers,
so they stay comparable.

``QUANTVIZ_CPU_UPCAST=0`` turns this off (compute in the model's dtype).
Tracing and exporting (``torch.jit`` tracing, ``torch.compile`` / ``torch.export``)
always see the layer's own forward.
"""
from __future__ import annotations

import os
import types
import weakref

import torch
import torch.nn.functional as F
from torch import nn

ENV = "QUANTVIZ_CPU_UPCAST"
HALF_TYPES = (torch.bfloat16, torch.float16)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_ACTIVE: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()
BLOCK_ELEMS = 1 << 24  # Linear weights larger than this are upcast a block of output rows at a time (64 MB)


def enabled() -> bool:
    """Upcasting is on unless ``$QUANTVIZ_CPU_UPCAST`` is 0 / false / off / no."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "off", "no")


def _is_conv1d_hf(mod: nn.Module) -> bool:
    cls = type(mod)
    return cls.__name__ == "Conv1D" and cls.__module__.startswith("transformers")


def supported(mod: nn.Module) -> bool:
    """A layer type this module computes (Linear, Conv1d/2d/3d, transformers Conv1D)."""
    return isinstance(mod, (nn.Linear, *_CONVS)) or _is_conv1d_hf(mod)


def wants(mod: nn.Module, device) -> bool:
    """Would ``mod`` on ``device`` be upcast (supported type, half weight, CPU, switched on)?"""
    w = getattr(mod, "weight", None)
    return (enabled() and torch.device(device).type == "cpu" and supported(mod)
            and isinstance(w, torch.Tensor) and w.dtype in HALF_TYPES)


def _tracing() -> bool:
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    comp = getattr(torch, "compiler", None)
    return bool(comp is not None and hasattr(comp, "is_compiling") and comp.is_compiling())


def compute(mod: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``mod``'s product of ``x`` with ``weight`` (+ ``bias``) in float32, cast back to ``weight``'s dtype."""
    dtype = weight.dtype
    xf = x.float()
    if isinstance(mod, nn.Linear) and weight.numel() > BLOCK_ELEMS:
        return _blocked_linear(xf, weight, bias, dtype)
    wf = weight.float()
    bf = bias.float() if bias is not None else None
    if isinstance(mod, nn.Linear):
        out = F.linear(xf, wf, bf)
    elif isinstance(mod, _CONVS):
        out = mod._conv_forward(xf, wf, bf)
    else:  # transformers Conv1D: x @ W + b with W stored (in, out)
        flat = xf.reshape(-1, xf.shape[-1])
        out = (torch.addmm(bf, flat, wf) if bf is not None else flat @ wf).view(*xf.shape[:-1], wf.shape[-1])
    return out.to(dtype)


def _blocked_linear(xf: torch.Tensor, weight: torch.Tensor, bias, dtype) -> torch.Tensor:
    """``F.linear`` a block of output rows at a time: the float32 copy of a large weight (a language
    model's output layer) never exists whole."""
    rows = max(1, BLOCK_ELEMS // max(1, weight.shape[1]))
    out = torch.empty(*xf.shape[:-1], weight.shape[0], dtype=dtype, device=xf.device)
    for a in range(0, weight.shape[0], rows):
        b = min(weight.shape[0], a + rows)
        out[..., a:b] = F.linear(xf, weight[a:b].float(), bias[a:b].float() if bias is not None else None)
    return out


def _upcast_ok(x, w) -> bool:
    return (isinstance(x, torch.Tensor) and isinstance(w, torch.Tensor) and x.dtype == w.dtype
            and w.dtype in HALF_TYPES and x.device.type == "cpu" and w.device.type == "cpu" and enabled()
            and not _tracing())


def _forward(self, *args, **kwargs):
    """The forward installed on a layer (bound to it): float32 compute when it applies, else the layer's own."""
    w = self._parameters.get("weight")
    if self in _ACTIVE and len(args) == 1 and not kwargs and _upcast_ok(args[0], w):
        return compute(self, args[0], w, self._parameters.get("bias"))
    return type(self).forward(self, *args, **kwargs)


def install(modules) -> list[nn.Module]:
    """Make each supported module of ``modules`` compute in float32 when it runs in bf16 / fp16 on the
    CPU (decided per call); returns the modules changed, for :func:`uninstall`. A copy or an
    unpickled copy of a changed module runs its own forward."""
    done = []
    for mod in modules:
        own = vars(mod).get("forward")
        if not supported(mod) or mod in _ACTIVE or (own is not None and getattr(own, "__func__", None) is not _forward):
            continue
        mod.forward = types.MethodType(_forward, mod)
        _ACTIVE.add(mod)
        done.append(mod)
    return done


def uninstall(modules) -> None:
    for mod in modules:
        if mod in _ACTIVE:
            _ACTIVE.discard(mod)
            if getattr(vars(mod).get("forward"), "__func__", None) is _forward:
                del mod.forward


def half_call(fn, x: torch.Tensor, w: torch.Tensor):
    """``fn(x, w)`` (a layer's product without bias) in float32 when both are CPU bf16 / fp16,
    cast back to ``w``'s dtype; else as is."""
    if _upcast_ok(x, w):
        return fn(x.float(), w.float()).to(w.dtype)
    return fn(x, w)


__all__ = ["ENV", "enabled", "supported", "wants", "compute", "install", "uninstall", "half_call"]
