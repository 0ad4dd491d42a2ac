"""Cross-layer equalization (Nagel et al., 2019) for conv -> ReLU -> conv pairs.

For two layers ``y = W2 relu(W1 x + b1)`` and any ``s > 0`` per channel
between them, ``relu(z / s) = relu(z) / s``, so dividing row ``i`` of ``W1``
(and ``b1[i]``) by ``s_i`` and multiplying column ``i`` of ``W2`` by ``s_i``
computes the same function. Choosing ``s_i = sqrt(r1_i / r2_i)`` with
``r1_i = max |W1[i, :]|`` and ``r2_i = max |W2[:, i]|`` makes both ranges
``sqrt(r1_i r2_i)``: channels whose weights span very different ranges then
share a per-tensor grid better. With per-channel weight grids (quantviz's
default) the first layer's rows are rescaled anyway, so CLE mostly moves
range between the second layer's input channels; it is a model-level
rewrite (``options.cle`` in a config, applied when the model is opened).

Pairs are found in the module's ``torch.fx`` graph: a Linear / Conv (groups
1) whose only consumer chain is ReLU / MaxPool / Identity / Dropout nodes
ending in a Linear / Conv of matching channels.
"""
from __future__ import annotations

import torch
from torch import nn

_LAYER = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_PASS_MODULES = (nn.ReLU, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.Identity, nn.Dropout)
_PASS_FUNCS = {torch.relu, torch.nn.functional.relu, torch.nn.functional.max_pool2d, torch.nn.functional.max_pool1d}


def _ok(m: nn.Module) -> bool:
    return isinstance(m, _LAYER) and getattr(m, "groups", 1) == 1


def find_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(first, second) layer names where CLE preserves the model's function."""
    try:
        import torch.fx as fx

        gm = fx.symbolic_trace(model)
    except Exception:
        return []
    mods = dict(model.named_modules())
    calls: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            calls[str(n.target)] = calls.get(str(n.target), 0) + 1
    pairs = []
    for n in gm.graph.nodes:
        if n.op != "call_module" or not _ok(mods.get(str(n.target))) or calls[str(n.target)] != 1:
            continue
        cur = n
        while len(cur.users) == 1:
            nxt = next(iter(cur.users))
            if nxt.op == "call_module" and isinstance(mods.get(str(nxt.target)), _PASS_MODULES):
                cur = nxt
                continue
            if nxt.op == "call_function" and nxt.target in _PASS_FUNCS:
                cur = nxt
                continue
            if nxt.op == "call_module" and _ok(mods.get(str(nxt.target))) and calls[str(nxt.target)] == 1 \
                    and cur is not n:  # at least one ReLU-like node between (else nothing to equalize through)
                a, b = mods[str(n.target)], mods[str(nxt.target)]
                out_a = a.weight.shape[0]
                in_b = b.weight.shape[1]
                if out_a == in_b and any(isinstance(mods.get(str(x.target)), nn.ReLU) or x.target in (torch.relu, torch.nn.functional.relu)
                                         for x in _chain(n, nxt)):
                    pairs.append((str(n.target), str(nxt.target)))
            break
    return pairs


def _chain(a, b):
    cur, out = a, []
    while cur is not b:
        cur = next(iter(cur.users))
        out.append(cur)
    return out[:-1]


@torch.no_grad()
def equalize(model: nn.Module, pairs: list[tuple[str, str]] | None = None, iterations: int = 1) -> dict:
    """Equalize ``pairs`` (default: :func:`find_pairs`) in place; returns a report."""
    pairs = find_pairs(model) if pairs is None else pairs
    report = {"pairs": [], "skipped": []}
    for _ in range(max(1, iterations)):
        for first, second in pairs:
            a, b = model.get_submodule(first), model.get_submodule(second)
            wa = a.weight.reshape(a.weight.shape[0], -1)
            wb = b.weight.transpose(0, 1).reshape(b.weight.shape[1], -1)
            r1, r2 = wa.abs().amax(1), wb.abs().amax(1)
            ok = (r1 > 0) & (r2 > 0)
            s = torch.where(ok, torch.sqrt(r1 / r2.clamp_min(1e-30)), torch.ones_like(r1))
            shape_a = [-1] + [1] * (a.weight.dim() - 1)
            a.weight.div_(s.view(shape_a))
            if a.bias is not None:
                a.bias.div_(s)
            shape_b = [1, -1] + [1] * (b.weight.dim() - 2)
            b.weight.mul_(s.view(shape_b))
            report["pairs"].append({"first": first, "second": second, "scale_min": float(s.min()),
                                    "scale_max": float(s.max())})
    return report
