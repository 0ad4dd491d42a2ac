"""Really quantized torch models with torchao (``quantize_`` + ``FqnToConfig``).

Which layers get a real kernel (torchao 0.18, CPU):

* ``nn.Linear`` with 8-bit symmetric weights (per-channel or per-tensor) and
  float activations -> ``Int8WeightOnlyConfig``;
* ``nn.Linear`` with 8-bit symmetric per-channel weights and 8-bit
  activations -> ``Int8DynamicActivationInt8WeightConfig`` (torchao
  quantizes activations dynamically per token, symmetric: close to, but not
  the same as, quantviz's static per-tensor activations);
* ``nn.Linear`` with 2..8-bit weights, per-channel or per-group
  -> ``IntxWeightOnlyConfig`` (activations float) or
  ``Int8DynamicActivationIntxWeightConfig`` (8-bit activations).
* transformers' ``Conv1D`` (GPT-2's projections: ``x @ W + b`` with ``W``
  stored ``in x out``) takes the same kernels: the export replaces it by the
  ``nn.Linear`` holding ``W.T`` (same outputs; quantviz's per-channel and
  per-group grids of a Conv1D already run along its output columns), and the
  generated script does the same to your model before ``quantize_``.

Symmetric weights use torchao's ``SYMMETRIC_NO_CLIPPING_ERR`` mapping
(``max(max / qmax, min / qmin)``, the ``full`` grid's rule) through the Intx
configs, 8-bit too: on the weights of a ``full`` or a ``torch`` grid one end
of every group lies on ``qmin`` or ``qmax`` and the other inside, so the rule
recomputes quantviz's scale. (torchao's ``SYMMETRIC`` mapping, which the Int8
configs use, would not: it reads ``max |w|`` as ``qmax + 0.5`` steps.) The
``restricted`` grid has no torchao mapping.

Everything else (convolutions, embeddings, >8-bit grids, per-tensor sub-8-bit
weights, restricted grids) stays *simulated*: its weight is replaced by the
fake-quantized one in float storage, and it is listed as such. The model is
built from the simulation's weights, so torchao quantizes values already on
quantviz's grid: with the matching mapping it recomputes the same scales, and
``w / scale`` is an integer up to float rounding, so its rounding of .5 ties
cannot change a code. :func:`build` checks every real kernel's dequantized
weight against the simulation's; a layer whose codes torchao does not
reproduce (its scale rule differs from the grid's, as torchao's ``SYMMETRIC``
does from a channel of torch's grid whose positive extreme was clipped)
stays simulated, with the reason.

torchao is imported lazily; without it a one-line error names the extra.
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import QuantvizError
from ..model.layers import LayerInfo
from ..numerics.spec import LayerSpec


@contextlib.contextmanager
def _quiet():
    """torchao prints library-loading noise on import; keep the terminal clean."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        prev = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(prev)


def _torchao():
    try:
        with _quiet():
            import torchao.quantization as tq
            from torchao.quantization import granularity as gr
    except ImportError:
        raise QuantvizError("the torchao backend needs torchao: pip install 'quantviz[torchao]'") from None
    return tq, gr


@dataclass
class KernelChoice:
    config: str  # torchao config class name
    kwargs: dict  # its arguments, as Python source snippets

    def source(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"{self.config}({args})"


@dataclass
class TorchaoPlan:
    kernels: dict[str, KernelChoice] = field(default_factory=dict)  # layer -> real kernel
    simulated: dict[str, str] = field(default_factory=dict)  # layer -> why it is simulated
    float_layers: list[str] = field(default_factory=list)
    as_linear: list[str] = field(default_factory=list)  # Conv1D layers replaced by nn.Linear (weight transposed)

    def to_dict(self) -> dict:
        return {"kernels": {k: v.source() for k, v in self.kernels.items()}, "simulated": dict(self.simulated),
                "float": list(self.float_layers)}


LINEAR_TYPES = ("Linear", "Conv1D")


def choose_kernel(info: LayerInfo, spec: LayerSpec) -> tuple[KernelChoice | None, str]:
    """The torchao config that runs this layer for real, or (None, reason)."""
    w, a = spec.weight, spec.activation
    if info.type not in LINEAR_TYPES:
        return None, f"{info.type}: no torchao CPU kernel used (weights fake-quantized)"
    if w.bits is None:
        return None, "float weights"
    if w.bits > 8:
        return None, f"{w.bits}-bit weights: torchao kernels are 8-bit at most"
    act8 = a.bits == 8
    if a.bits is not None and not act8:
        return None, f"{a.bits}-bit activations: torchao has no kernel (weights fake-quantized)"
    grid = w.grid if w.symmetric else None
    if grid == "restricted":
        return None, "restricted grid: torchao has no mapping for it (weights fake-quantized)"
    mapping = "MappingType.ASYMMETRIC" if grid is None else "MappingType.SYMMETRIC_NO_CLIPPING_ERR"
    if w.granularity == "per_tensor":
        return None, "per-tensor weights: no torchao Intx layout (weights fake-quantized)"
    gran = "PerAxis(0)" if w.granularity == "per_channel" else f"PerGroup({w.effective_group_size()})"
    in_features = info.weight_shape[0] if info.type == "Conv1D" else info.weight_shape[1]
    if in_features % (w.effective_group_size() or 1):
        return None, "group size does not divide the input features"
    if act8:
        return KernelChoice("Int8DynamicActivationIntxWeightConfig",
                            {"weight_dtype": f"torch.int{w.bits}", "weight_granularity": gran,
                             "weight_mapping_type": mapping}), ""
    return KernelChoice("IntxWeightOnlyConfig", {"weight_dtype": f"torch.int{w.bits}", "granularity": gran,
                                                 "mapping_type": mapping}), ""


def triage(layers: list[LayerInfo], specs: dict[str, LayerSpec], choose) -> tuple[list[str], dict[str, str], dict]:
    """Sort layers into (float, simulated {name: why}, kernels {name: choice}) with
    ``choose(info, spec) -> (choice | None, why)``; a backend's plan is built on this."""
    floats, simulated, kernels = [], {}, {}
    for info in layers:
        spec = specs.get(info.name)
        if spec is None or (spec.weight.bits is None and spec.activation.bits is None):
            floats.append(info.name)
            continue
        fmt = next((f for f in (spec.weight.format if spec.weight.bits is not None else "int",
                                spec.activation.format if spec.activation.bits is not None else "int") if f != "int"), None)
        if fmt is not None:  # FP8 / MX / NVFP4: torchao's kernels for them need CUDA
            simulated[info.name] = (f"{fmt}: torchao's float8 / MX / NVFP4 kernels need a CUDA GPU (no CPU kernel), "
                                    f"the layer stays simulated")
            continue
        if spec.weight.bits is not None and spec.weight.algorithm in ("smoothquant", "awq"):
            # Q(W s) / s is not on W's grid and the input needs x / s: no kernel reproduces it here
            simulated[info.name] = f"{spec.weight.algorithm}: the migrated input scale stays simulated"
            continue
        k, why = choose(info, spec)
        if k is None:
            simulated[info.name] = why
        else:
            kernels[info.name] = k
    return floats, simulated, kernels


def plan(layers: list[LayerInfo], specs: dict[str, LayerSpec]) -> TorchaoPlan:
    floats, simulated, kernels = triage(layers, specs, choose_kernel)
    conv1d = [l.name for l in layers if l.type == "Conv1D" and l.name in kernels]
    return TorchaoPlan(kernels=kernels, simulated=simulated, float_layers=floats, as_linear=conv1d)


def conv1d_as_linear(model: nn.Module, names: list[str]) -> None:
    """Replace each named transformers ``Conv1D`` (``x @ W + b``, ``W`` in x out) by the
    ``nn.Linear`` computing the same (weight ``W.T``), in place."""
    for name in names:
        parent, _, leaf = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        conv = getattr(owner, leaf)
        w = conv.weight.detach()
        lin = nn.Linear(w.shape[0], w.shape[1], bias=conv.bias is not None, device="meta")
        lin.weight = nn.Parameter(w.t().contiguous(), requires_grad=False)
        if conv.bias is not None:
            lin.bias = nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
        setattr(owner, leaf, lin)


def grid_model(sim, specs: dict[str, LayerSpec]) -> nn.Module:
    """A copy of the folded float model whose quantized layers carry their fake-quantized weights."""
    model = copy.deepcopy(sim.float_model).eval()
    with torch.no_grad():
        for info in sim.layers:
            spec = specs.get(info.name)
            if spec is None or spec.weight.bits is None:
                continue
            wq = sim.quantize_weight(info.name, spec.weight)
            mod = model.get_submodule(info.name)
            mod.weight.data.copy_(wq.tensor)  # a per-layer algorithm's weights are on the grid too
            if wq.bias is not None:  # bias correction (creates a bias when the layer had none)
                if mod.bias is None:
                    mod.bias = nn.Parameter(wq.bias.clone().to(mod.weight), requires_grad=False)
                else:
                    mod.bias.data.copy_(wq.bias)
    return model


def _instantiate(choice: KernelChoice):
    tq, gr = _torchao()
    from torchao.quantization.quant_primitives import MappingType

    env = {"torch": torch, "PerRow": gr.PerRow, "PerTensor": gr.PerTensor, "PerAxis": gr.PerAxis,
           "PerGroup": gr.PerGroup, "MappingType": MappingType}
    kwargs = {k: eval(v, env) for k, v in choice.kwargs.items()}  # our own fixed snippets
    return getattr(tq, choice.config)(**kwargs)


def _dequantized(weight) -> torch.Tensor | None:
    deq = getattr(weight, "dequantize", None)
    try:
        return deq().float() if callable(deq) else None
    except Exception:  # a layout without a dequantize path cannot be checked
        return None


def build(sim, specs: dict[str, LayerSpec]) -> tuple[nn.Module, TorchaoPlan]:
    """A copy of the folded float model, weights on quantviz's grids, Linear layers torchao-quantized.

    Each real kernel's weight is dequantized and compared with the simulation's:
    codes that differ (any value off by more than 1/1000 of its step) send the
    layer back to simulated, with the reason.
    """
    tq, _ = _torchao()
    p = plan(sim.layers, specs)
    model = grid_model(sim, specs)
    conv1d_as_linear(model, p.as_linear)
    if p.kernels:
        fqn_cls = getattr(tq, "FqnToConfig", None) or tq.ModuleFqnToConfig  # renamed in torchao 0.14
        cfg = fqn_cls({name: _instantiate(k) for name, k in p.kernels.items()})
        with _quiet():
            tq.quantize_(model, cfg, filter_fn=None)
        for name in list(p.kernels):
            mod = model.get_submodule(name)
            wq = sim.quantize_weight(name, specs[name].weight)
            ref = wq.tensor.detach().float().cpu()
            if name in p.as_linear:
                ref = ref.t()
            got = _dequantized(mod.weight)
            tol = float(wq.qparams.scale.min()) * 1e-3
            if got is None or got.shape != ref.shape or float((got.cpu() - ref).abs().max()) > tol:
                mod.weight = nn.Parameter(ref.to(sim.float_weight(name).dtype), requires_grad=False)
                del p.kernels[name]
                if name in p.as_linear:
                    p.as_linear.remove(name)  # stays an nn.Linear holding W.T: the same outputs
                p.simulated[name] = ("torchao recomputes another scale from the on-grid weights (a range end is not "
                                     "on qmin or qmax), so its codes would differ "
                                     "(weights fake-quantized)")
    return model, p


def script_source(p: TorchaoPlan, model_name: str) -> str:
    """A short Python file that applies the same torchao config to the user's model."""
    configs = sorted({k.config for k in p.kernels.values()})
    lines = [
        f'"""Apply the quantviz config for {model_name} with torchao (generated by quantviz).',
        "",
        "    from apply_torchao import apply",
        "    model = apply(build_my_model())          # same Linear kernels as the export",
        "    model.load_state_dict(torch.load('model.pt')['state_dict'], assign=True)  # optional: exact weights",
        "",
        "The saved state dict belongs to the BatchNorm-folded model; layers listed in",
        "SIMULATED have no torchao kernel and carry fake-quantized float weights.",
        '"""',
        "import torch",
        "from torchao.quantization import FqnToConfig, quantize_" + "".join(f", {c}" for c in configs),
        "from torchao.quantization.granularity import PerAxis, PerGroup, PerRow, PerTensor",
        "from torchao.quantization.quant_primitives import MappingType",
        "",
        "CONFIG = FqnToConfig({",
    ]
    for name, k in p.kernels.items():
        lines.append(f"    {name!r}: {k.source()},")
    lines += ["})", "", "SIMULATED = {"]
    for name, why in p.simulated.items():
        lines.append(f"    {name!r}: {why!r},")
    lines += ["}", "", f"CONV1D_AS_LINEAR = {list(p.as_linear)!r}  # transformers Conv1D: x @ W + b, W in x out", "",
              "", "def _conv1d_as_linear(model: torch.nn.Module) -> None:",
              "    for name in CONV1D_AS_LINEAR:",
              "        parent, _, leaf = name.rpartition('.')",
              "        owner = model.get_submodule(parent) if parent else model",
              "        conv = getattr(owner, leaf)",
              "        w = conv.weight.detach()",
              "        lin = torch.nn.Linear(w.shape[0], w.shape[1], bias=conv.bias is not None)",
              "        with torch.no_grad():",
              "            lin.weight.copy_(w.t())",
              "            if conv.bias is not None:",
              "                lin.bias.copy_(conv.bias)",
              "        setattr(owner, leaf, lin)",
              "", "", "def apply(model: torch.nn.Module) -> torch.nn.Module:",
              '    """Quantize ``model`` in place with the per-layer torchao configs above."""',
              "    _conv1d_as_linear(model)",
              "    if CONFIG.fqn_to_config:",
              "        quantize_(model, CONFIG, filter_fn=None)",
              "    return model", ""]
    return "\n".join(lines)


def state_bytes(obj) -> int:
    """Size of ``torch.save(obj)`` in bytes."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return len(buf.getvalue())


def save(model: nn.Module, p: TorchaoPlan, path: str | os.PathLike, model_name: str) -> None:
    torch.save({"format": "quantviz-torchao", "model": model_name, "state_dict": model.state_dict(),
                "kernels": p.to_dict()["kernels"], "simulated": p.simulated}, path)


__all__ = ["plan", "triage", "conv1d_as_linear", "grid_model", "build", "save", "script_source", "choose_kernel", "TorchaoPlan", "state_bytes"]
