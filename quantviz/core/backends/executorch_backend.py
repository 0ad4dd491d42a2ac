"""An ExecuTorch program (``.pte``) with XNNPACK int8 kernels, on quantviz's grids.

The pt2e flow of :mod:`pt2e_backend` with ExecuTorch's ``XNNPACKQuantizer``:
export the (BatchNorm-folded, on-grid) float model, annotate the layers that
XNNPACK runs in int8 (``Conv2d`` / ``Linear`` with 8-bit symmetric per-channel
weights and 8-bit activations: :func:`pt2e_backend.choose`), calibrate, give
every observer in front of those layers quantviz's range (so the activation
scales / zero points and the weight scales are the simulated ones), convert,
then ``to_edge_transform_and_lower`` with the ``XnnpackPartitioner`` and
``to_executorch``. Other quantized layers keep their fake-quantized weights
in float and run on ExecuTorch's portable kernels.

XNNPACK's int8 weights are symmetric on [-127, 127]: a weight code of -128
(quantviz's ``full`` grid) is saturated to -127 (the ``restricted`` grid is
exact). The program is exported with the example batch's size where a dynamic
batch fails (:func:`run` pads a short last batch).

ExecuTorch is optional (``pip install 'quantviz[executorch]'``).
"""
from __future__ import annotations

from dataclasses import replace

import torch

from ..errors import QuantvizError
from . import pt2e_backend as pb
from .torchao_backend import _quiet, grid_model


def _need():
    try:
        with _quiet():
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
                XNNPACKQuantizer, get_symmetric_quantization_config)
            from executorch.exir import to_edge_transform_and_lower
            from torchao.quantization.pt2e import MinMaxObserver
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError:
        raise QuantvizError("the executorch export needs ExecuTorch: pip install 'quantviz[executorch]'") from None
    return (XnnpackPartitioner, XNNPACKQuantizer, get_symmetric_quantization_config, to_edge_transform_and_lower,
            MinMaxObserver, convert_pt2e, prepare_pt2e)


def build(sim, specs: dict, calib_batches, example: torch.Tensor):
    """``(pte bytes, plan, dynamic_batch)`` of the current config."""
    (Partitioner, Quantizer, sym_config, lower, MinMaxObserver, convert_pt2e, prepare_pt2e) = _need()
    if not isinstance(example, torch.Tensor):
        raise QuantvizError("the executorch export takes models with one tensor input")
    p = pb.plan(sim.layers, specs)
    model = grid_model(sim, specs)
    try:
        with _quiet():
            exported = pb._export(model, example)
            if p.kernels:
                pb._split_shared_calls(exported, set(p.kernels))
                _file_under_layers(exported, set(p.kernels))
                base = sym_config(is_per_channel=True)
                act = replace(base.input_activation, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2 ** -12))
                cfg = replace(base, input_activation=act, output_activation=act)
                quantizer = Quantizer()
                for name in p.kernels:
                    quantizer.set_module_name(name, cfg)
                prepared = prepare_pt2e(exported, quantizer)
                with torch.no_grad():
                    for x in calib_batches:
                        prepared(x)
                pb._set_observer_ranges(prepared, sim, specs, set(p.kernels))
                exported = convert_pt2e(prepared)
                pb._drop_unused(exported)
                _keep_only_int8_layers(exported, p)
            dynamic = True
            try:
                batch = torch.export.Dim("batch", min=1, max=1024)
                ep = torch.export.export(exported, (example,), dynamic_shapes=({0: batch},), strict=False)
                prog = lower(ep, partitioner=[Partitioner()]).to_executorch()
            except Exception:  # noqa: BLE001 - a graph specialised on its batch size
                dynamic = False
                ep = torch.export.export(exported, (example,), strict=False)
                prog = lower(ep, partitioner=[Partitioner()]).to_executorch()
            return bytes(prog.buffer), p, dynamic
    except QuantvizError:
        raise
    except Exception as exc:  # noqa: BLE001 - export / lowering limits of this model
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise QuantvizError(f"executorch: this model could not be exported and lowered "
                            f"({type(exc).__name__}: {first[:200]})") from exc


_RELU_OPS = (torch.ops.aten.relu.default, torch.ops.aten.relu_.default)


def _file_under_layers(gm, kernels: set[str]) -> int:
    """XNNPACK's quantizer annotates a convolution together with its weight and bias and, where
    a ReLU alone reads it, with that ReLU (it never annotates such a convolution on its own),
    and a per-layer name filter must accept every node of the pattern. The weight and bias are
    ``get_attr`` nodes, which carry no module stack, and the ReLU was traced from its own module
    (``features.2`` after ``features.0``): filed as they are, a kernel layer's convolution would
    stay a float convolution in the program (float weights, float activations). So they are
    filed under their layer's name. Returns how many nodes were filed."""
    filed = 0
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in pb._KERNEL_OPS or "nn_module_stack" not in node.meta:
            continue
        if pb._layer_of(node, kernels) is None:
            continue
        joined = [a for a in node.args[1:3] if getattr(a, "op", None) == "get_attr"]
        if len(node.users) == 1:
            (user,) = node.users
            if user.op == "call_function" and user.target in _RELU_OPS:
                joined.append(user)
        for other in joined:
            other.meta["nn_module_stack"] = dict(node.meta["nn_module_stack"])
            filed += 1
    return filed


_DEQUANT_PER_CHANNEL = "dequantize_per_channel"


def _keep_only_int8_layers(gm, p) -> None:
    """A layer counts as on XNNPACK's int8 kernels only where the converted graph feeds its
    Conv2d / Linear an int8 weight (a per-channel dequantize); any other stays in ``p.simulated``
    with the reason, so the export's notes never claim a kernel the program does not run."""
    quantized = set()
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in pb._KERNEL_OPS and len(node.args) > 1:
            w = node.args[1]
            if getattr(w, "op", None) == "call_function" and _DEQUANT_PER_CHANNEL in str(w.target):
                name = pb._layer_of(node, set(p.kernels))
                if name:
                    quantized.add(name)
    for name in [n for n in p.kernels if n not in quantized]:
        p.kernels.remove(name)
        p.simulated[name] = "XNNPACK's quantizer did not take this layer (float weights in the program)"


def load(path):
    """A callable running the ``forward`` method of a ``.pte`` with ExecuTorch's Python runtime."""
    try:
        with _quiet():
            from executorch.runtime import Runtime
    except ImportError:
        raise QuantvizError("running .pte files needs ExecuTorch: pip install 'quantviz[executorch]'") from None
    method = Runtime.get().load_program(str(path)).load_method("forward")
    return lambda x: method.execute([x])[0]


def run(fn, x: torch.Tensor, batch: int, fixed: bool) -> torch.Tensor:
    """``fn`` over ``x`` in batches of ``batch`` (padding the last one when the program is fixed-size)."""
    outs = []
    for i in range(0, x.shape[0], batch):
        chunk = x[i:i + batch]
        n = chunk.shape[0]
        if fixed and n < batch:
            chunk = torch.cat([chunk, chunk[-1:].expand(batch - n, *chunk.shape[1:])])
        outs.append(fn(chunk.contiguous())[:n])
    return torch.cat(outs)


__all__ = ["build", "load", "run"]
