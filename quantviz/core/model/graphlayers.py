"""Layers of FX graphs: torch.export programs and converted TorchScript.

``ExportedProgram.module()`` is a ``GraphModule`` whose convolutions, linear
layers, embeddings and BatchNorms are ``aten`` calls on ``get_attr`` weights,
not ``nn.Conv2d`` / ``nn.Linear`` modules. :func:`lift_layers` turns each such
call whose weight is a parameter or constant of the program back into a
``call_module`` of a real ``nn.Conv2d`` / ``nn.Linear`` / ``nn.Embedding`` /
``nn.BatchNorm*d`` holding the *same* tensors, installed at the module path
the weight had in the user's source model (``layer1.0.conv1``; the
``nn_module_stack`` metadata when the weight path says nothing). After that the
graph is an ordinary module tree: the inventory, activation hooks, BatchNorm
folding, the incremental re-check and every sensitivity method treat it like
the ``nn.Module`` it was exported from, and a config written for one applies
unchanged to the other.
"""
from __future__ import annotations

import torch
from torch import nn

aten = torch.ops.aten

_CONV = {aten.conv1d.default: nn.Conv1d, aten.conv2d.default: nn.Conv2d, aten.conv3d.default: nn.Conv3d}
_CONV_PAD = {getattr(aten.conv1d, "padding", None): nn.Conv1d, getattr(aten.conv2d, "padding", None): nn.Conv2d,
             getattr(aten.conv3d, "padding", None): nn.Conv3d}
_CONV_PAD.pop(None, None)
_BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}
_OWN_ATTRS = {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}


def _fetch(gm: nn.Module, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _tensor_attr(gm, node) -> torch.Tensor | None:
    if getattr(node, "op", None) != "get_attr":
        return None
    try:
        t = _fetch(gm, str(node.target))
    except AttributeError:
        return None
    return t if isinstance(t, torch.Tensor) else None


def _param(t: torch.Tensor) -> nn.Parameter:
    return t if isinstance(t, nn.Parameter) else nn.Parameter(t, requires_grad=False)


def _tup(v, n: int) -> tuple:
    if isinstance(v, (list, tuple)):
        return tuple(int(x) for x in v) if len(v) == n else tuple(int(x) for x in v) * (n // max(len(v), 1))
    return (int(v),) * n


def _source_path(node) -> str | None:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return None
    path = list(stack.values())[-1]
    path = path[0] if isinstance(path, tuple) else path
    return str(path) if path else None


def _layer_name(node, weight_node) -> str:
    target = str(weight_node.target)
    if len(weight_node.users) > 1 and _source_path(node):  # a tied weight (GPT-2's wte / lm_head): each call's own module
        return _source_path(node)
    if target.endswith(".weight"):
        return target[: -len(".weight")]
    return _source_path(node) or target.replace(".", "_")


def _normalized(node) -> dict | None:
    from torch.fx.operator_schemas import normalize_function

    try:
        res = normalize_function(node.target, tuple(node.args), dict(node.kwargs), normalize_to_only_use_kwargs=True)
    except Exception:  # noqa: BLE001 - an op we cannot read is left alone
        return None
    return dict(res.kwargs) if res is not None else None


def _build(gm, node) -> tuple[nn.Module, str, object, list] | None:
    """(module, name, input node, consumed get_attr nodes) for a liftable call, else None."""
    kw = _normalized(node)
    if kw is None:
        return None
    t = node.target
    if t == aten.convolution.default and not kw.get("transposed"):  # converted TorchScript
        w = _tensor_attr(gm, kw.get("weight"))
        if w is None or not 3 <= w.dim() <= 5 or any(int(p) for p in kw.get("output_padding") or ()):
            return None
        cls = {3: nn.Conv1d, 4: nn.Conv2d, 5: nn.Conv3d}[w.dim()]
        t = None
    else:
        cls = _CONV.get(t) or _CONV_PAD.get(t)
    if cls is not None:
        w_node, b_node = kw.get("weight"), kw.get("bias")
        w = _tensor_attr(gm, w_node)
        b = _tensor_attr(gm, b_node) if b_node is not None else None
        if w is None or (b_node is not None and b is None):
            return None
        nd = w.dim() - 2
        groups = int(kw.get("groups", 1))
        padding = kw.get("padding", 0)
        padding = padding if isinstance(padding, str) else _tup(padding, nd)
        mod = cls(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=_tup(kw.get("stride", 1), nd),
                  padding=padding, dilation=_tup(kw.get("dilation", 1), nd), groups=groups, bias=b is not None,
                  device="meta")
        inp, attrs = kw.get("input"), [w_node] + ([b_node] if b_node is not None else [])
    elif t == aten.linear.default:
        w_node, b_node = kw.get("weight"), kw.get("bias")
        w = _tensor_attr(gm, w_node)
        b = _tensor_attr(gm, b_node) if b_node is not None else None
        if w is None or w.dim() != 2 or (b_node is not None and b is None):
            return None
        mod = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device="meta")
        inp, attrs = kw.get("input"), [w_node] + ([b_node] if b_node is not None else [])
    elif t == aten.addmm.default:  # transformers' Conv1D: addmm(bias, x, W) with W stored in x out
        b_node, inp, w_node = kw.get("input"), kw.get("mat1"), kw.get("mat2")
        w, b = _tensor_attr(gm, w_node), _tensor_attr(gm, b_node)
        if (w is None or b is None or w.dim() != 2 or b.dim() != 1 or b.shape[0] != w.shape[1]
                or kw.get("beta", 1) != 1 or kw.get("alpha", 1) != 1):
            return None
        mod = _conv1d(w.shape[1], w.shape[0])
        if mod is None:
            return None
        return _fill(mod, {"weight": w, "bias": b}, {}), _layer_name(node, w_node), inp, [w_node, b_node]
    elif t == aten.embedding.default:
        w_node = kw.get("weight")
        w = _tensor_attr(gm, w_node)
        if w is None or w.dim() != 2 or kw.get("sparse") or kw.get("scale_grad_by_freq"):
            return None
        pad = kw.get("padding_idx", -1)
        mod = nn.Embedding(w.shape[0], w.shape[1], padding_idx=None if pad is None or pad < 0 else int(pad),
                           device="meta")
        b = None
        inp, attrs = kw.get("indices"), [w_node]
    elif t == aten.batch_norm.default:
        if kw.get("training"):
            return None
        nodes = [kw.get(k) for k in ("weight", "bias", "running_mean", "running_var")]
        ts = [_tensor_attr(gm, n) if n is not None else None for n in nodes]
        if ts[2] is None or ts[3] is None or any(n is not None and v is None for n, v in zip(nodes, ts)):
            return None
        val = kw["input"].meta.get("val") if hasattr(kw.get("input"), "meta") else None
        rank = val.dim() if isinstance(val, torch.Tensor) else 4
        mod = _BN.get(rank, nn.BatchNorm2d)(ts[2].shape[0], eps=float(kw.get("eps", 1e-5)),
                                            momentum=kw.get("momentum", 0.1), affine=ts[0] is not None,
                                            device="meta")
        mod.eval()
        w_node = nodes[2]
        name = _layer_name(node, nodes[0]) if nodes[0] is not None else str(nodes[2].target).rsplit(".", 1)[0]
        return _fill(mod, {"weight": ts[0], "bias": ts[1]}, {"running_mean": ts[2], "running_var": ts[3]}), \
            name, kw.get("input"), [n for n in nodes if n is not None]
    else:
        return None
    return _fill(mod, {"weight": w, "bias": b}, {}), _layer_name(node, w_node), inp, attrs


def _conv1d(nf: int, nx: int) -> nn.Module | None:
    """transformers' ``Conv1D(nf, nx)`` without allocating its weights (None without transformers)."""
    try:
        from transformers.pytorch_utils import Conv1D
    except Exception:  # noqa: BLE001 - transformers missing or broken: the call stays as it is
        return None
    with torch.device("meta"):
        return Conv1D(nf, nx)


def _fill(mod: nn.Module, params: dict, buffers: dict) -> nn.Module:
    for k, v in params.items():
        if v is not None:
            mod._parameters[k] = _param(v)
        elif k in mod._parameters:
            mod._parameters[k] = None
    for k, v in buffers.items():
        mod._buffers[k] = v
    if "num_batches_tracked" in mod._buffers:
        mod._buffers["num_batches_tracked"] = None
    return mod


def _same_config(a: nn.Module, b: nn.Module) -> bool:
    return type(a) is type(b) and a.extra_repr() == b.extra_repr() and all(
        a._parameters.get(k) is b._parameters.get(k) for k in ("weight", "bias"))


def _storage_key(t) -> tuple | None:
    if not isinstance(t, torch.Tensor) or t.device.type == "meta":
        return None
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)


def _can_install(gm: nn.Module, name: str, consumed: set[str]) -> bool:
    """Is ``name`` free, or a plain container holding only tensors this layer consumes?"""
    parent_name, _, leaf = name.rpartition(".")
    try:
        parent = gm.get_submodule(parent_name) if parent_name else gm
    except AttributeError:
        return True  # missing containers are created
    if not isinstance(parent, nn.Module) or not leaf.isidentifier() and not leaf.isdigit():
        return False
    cur = getattr(parent, leaf, None)
    if cur is None:
        return True
    if not isinstance(cur, nn.Module) or len(cur._modules):
        return False
    own = {f"{name}.{k}" for k in list(cur._parameters) + list(cur._buffers)}
    ids = set()
    for t in consumed:  # the same storage under another name (a tied weight) is consumed too
        try:
            ids.add(_storage_key(_fetch(gm, t)))
        except AttributeError:
            pass
    same = {f"{name}.{k}" for k, v in list(cur._parameters.items()) + list(cur._buffers.items())
            if v is not None and _storage_key(v) in ids}
    return all(k.rpartition(".")[2] in _OWN_ATTRS for k in own) and own <= consumed | same | {
        f"{name}.num_batches_tracked"}


def _install(gm: nn.Module, name: str, mod: nn.Module) -> None:
    parts = name.split(".")
    parent = gm
    for p in parts[:-1]:
        nxt = getattr(parent, p, None)
        if not isinstance(nxt, nn.Module):
            nxt = nn.Module()
            parent.add_module(p, nxt)
        parent = nxt
    if parts[-1] in parent._modules:
        parent._modules[parts[-1]] = mod  # keeps the source's registration order
    else:
        parent.add_module(parts[-1], mod)


def lift_layers(gm: torch.fx.GraphModule) -> tuple[torch.fx.GraphModule, int]:
    """Replace liftable aten calls of ``gm`` by ``call_module`` nodes (in place); returns (gm, count)."""
    graph = gm.graph
    installed: dict[str, nn.Module] = {}
    lifted = 0
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        built = _build(gm, node)
        if built is None:
            continue
        mod, name, inp, attr_nodes = built
        if inp is None:
            continue
        consumed = {str(n.target) for n in attr_nodes}
        have = installed.get(name)
        if have is not None:
            if not _same_config(have, mod):
                continue  # the same weights with other settings: leave that call as it is
            mod = have
        elif not _can_install(gm, name, consumed):
            continue
        else:
            _install(gm, name, mod)
            installed[name] = mod
        with graph.inserting_before(node):
            new = graph.call_module(name, (inp,))
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        lifted += 1
    for node in list(graph.nodes):
        if node.op == "get_attr" and not node.users:
            graph.erase_node(node)
    if lifted:
        graph.lint()
        gm.recompile()
    return gm, lifted


def reorder_modules(root: nn.Module, names: list[str]) -> None:
    """Order every container's children as ``names`` (a source model's ``named_modules``) lists them,
    so the inventory of a converted graph follows the source's registration order."""
    rank = {n: i for i, n in enumerate(names)}

    def visit(mod: nn.Module, prefix: str) -> None:
        items = list(mod._modules.items())
        if len(items) > 1:
            big = len(rank)
            items.sort(key=lambda kv: rank.get(prefix + kv[0], big))
            mod._modules.clear()
            mod._modules.update(items)
        for k, child in items:
            if child is not None:
                visit(child, f"{prefix}{k}.")

    visit(root, "")


def fixed_batch_size(program) -> int | None:
    """The batch size an ExportedProgram was specialised to (None if dynamic or unknown)."""
    try:
        names = set(program.graph_signature.user_inputs)
    except Exception:  # noqa: BLE001
        return None
    sizes = set()
    for n in program.graph.nodes:
        if n.op == "placeholder" and n.name in names:
            v = n.meta.get("val")
            if isinstance(v, torch.Tensor) and v.dim() >= 1:
                s = v.shape[0]
                if not isinstance(s, int):
                    return None
                sizes.add(int(s))
    return sizes.pop() if len(sizes) == 1 else None


__all__ = ["lift_layers", "fixed_batch_size", "reorder_modules"]
