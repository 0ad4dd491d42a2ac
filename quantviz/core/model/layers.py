"""Layer inventory and BatchNorm folding."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

QUANTIZABLE_TYPES: tuple[type, ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Embedding,
)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class LayerInfo:
    """A quantizable layer: its full name (``features.3``), type and weight."""

    name: str
    type: str
    weight_shape: tuple[int, ...]
    params: int  # weight + bias elements
    channel_axis: int  # the output-channel axis of the weight
    has_activation_input: bool  # False for Embedding (its input is indices)
    index: int  # position in the inventory (module registration order)

    @property
    def weight_numel(self) -> int:
        n = 1
        for s in self.weight_shape:
            n *= s
        return n

    @property
    def channels(self) -> int:
        return self.weight_shape[self.channel_axis]

    def to_dict(self) -> dict:
        return {"name": self.name, "type": self.type, "params": self.params, "weight_shape": list(self.weight_shape)}


def is_hf_conv1d(module: nn.Module) -> bool:
    """transformers' ``Conv1D`` (GPT-2 and kin): a linear layer whose weight is stored
    ``in_features x out_features``. Recognised without importing transformers."""
    cls = type(module)
    return cls.__name__ == "Conv1D" and cls.__module__.startswith("transformers")


def channel_axis_of(module: nn.Module) -> int:
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)) or (
            scripted_type(module) or "").startswith("ConvTranspose"):
        return 1
    if is_hf_conv1d(module):
        return 1  # weight (in, out): output channels along axis 1
    return 0


_SCRIPTED = {t.__name__ for t in QUANTIZABLE_TYPES}


def scripted_type(module: nn.Module) -> str | None:
    """The original class name of a TorchScript sub-module that wraps a quantizable layer."""
    if isinstance(module, torch.jit.ScriptModule):
        name = getattr(module, "original_name", None)
        return name if name in _SCRIPTED else None
    return None


def layer_type(module: nn.Module) -> str:
    return scripted_type(module) or type(module).__name__


def is_quantizable(module: nn.Module) -> bool:
    return (isinstance(module, QUANTIZABLE_TYPES) or is_hf_conv1d(module) or scripted_type(module) is not None) \
        and isinstance(getattr(module, "weight", None), torch.Tensor)


def submodule(model: nn.Module, name: str) -> nn.Module:
    """``model.get_submodule(name)``, also for TorchScript modules (which lack it)."""
    if not isinstance(model, torch.jit.ScriptModule):
        return model.get_submodule(name)
    mod = model
    for part in name.split(".") if name else []:
        mod = getattr(mod, part)
    return mod


def inventory(model: nn.Module) -> list[LayerInfo]:
    """Every quantizable layer of ``model`` in registration order.

    A module registered under several names (shared weights) is listed once,
    under its first name.
    """
    out: list[LayerInfo] = []
    seen: set[int] = set()
    for name, mod in model.named_modules():
        if not name or not is_quantizable(mod) or id(mod) in seen:
            continue
        seen.add(id(mod))
        w = mod.weight
        params = w.numel() + (mod.bias.numel() if getattr(mod, "bias", None) is not None else 0)
        out.append(
            LayerInfo(
                name=name,
                type=layer_type(mod),
                weight_shape=tuple(w.shape),
                params=int(params),
                channel_axis=channel_axis_of(mod),
                has_activation_input=not isinstance(mod, nn.Embedding) and scripted_type(mod) != "Embedding",
                index=len(out),
            )
        )
    return out


def _conv_bn_pairs_fx(model: nn.Module) -> list[tuple[str, str]] | None:
    try:
        import torch.fx as fx

        # an FX graph (torch.export program, converted TorchScript) is its own trace
        gm = model if isinstance(model, fx.GraphModule) else fx.symbolic_trace(model)
    except Exception:
        return None
    mods = dict(model.named_modules())
    # a module called more than once (shared conv or BN) cannot be folded:
    # its one set of weights serves every call
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
    pairs = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(mods.get(node.target), _BN):
            continue
        src = node.args[0] if node.args else None
        if getattr(src, "op", None) != "call_module" or not isinstance(mods.get(src.target), _CONV):
            continue
        if len(src.users) != 1 or calls[str(src.target)] != 1 or calls[str(node.target)] != 1:
            continue
        pairs.append((str(src.target), str(node.target)))
    return pairs


def _conv_bn_pairs_sequential(model: nn.Module) -> list[tuple[str, str]]:
    pairs = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Sequential):
            continue
        children = list(mod.named_children())
        for (n1, m1), (n2, m2) in zip(children, children[1:]):
            if isinstance(m1, _CONV) and isinstance(m2, _BN):
                prefix = f"{name}." if name else ""
                pairs.append((prefix + n1, prefix + n2))
    return pairs


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv, bn) module names where the BatchNorm directly consumes the conv."""
    if not any(isinstance(m, _BN) for m in model.modules()):
        return []  # nothing to fold: skip tracing (seconds for models with thousands of layers)
    pairs = _conv_bn_pairs_fx(model)
    if pairs is None:
        pairs = _conv_bn_pairs_sequential(model)
    return pairs


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


@torch.no_grad()
def fold_batchnorm(model: nn.Module, inplace: bool = False) -> tuple[nn.Module, list[tuple[str, str]]]:
    """Fold every BatchNorm that directly follows a conv into that conv.

    Returns the folded model (a deep copy unless ``inplace``) and the folded
    (conv, bn) pairs. The BatchNorm is replaced by ``nn.Identity``; in eval
    mode the folded model computes the same function.
    """
    if not inplace:
        model = copy.deepcopy(model)
    pairs = conv_bn_pairs(model)
    done = []
    for conv_name, bn_name in pairs:
        conv = model.get_submodule(conv_name)
        bn = model.get_submodule(bn_name)
        if bn.running_mean is None or bn.running_var is None:
            continue
        std = torch.sqrt(bn.running_var + bn.eps)
        gamma = bn.weight if bn.weight is not None else torch.ones_like(std)
        beta = bn.bias if bn.bias is not None else torch.zeros_like(std)
        factor = gamma / std
        shape = [-1] + [1] * (conv.weight.dim() - 1)
        conv.weight.copy_(conv.weight * factor.reshape(shape))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        new_bias = (bias - bn.running_mean) * factor + beta
        if conv.bias is None:
            conv.bias = nn.Parameter(new_bias.detach().clone())
        else:
            conv.bias.copy_(new_bias)
        _set_submodule(model, bn_name, nn.Identity())
        done.append((conv_name, bn_name))
    return model, done
