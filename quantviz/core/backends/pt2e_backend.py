"""Convolutions with real int8 kernels: torchao's pt2e flow, lowered for x86 CPUs.

``quantize_`` (see :mod:`torchao_backend`) has kernels for Linear layers only.
For convolutions torchao offers the pt2e flow: export the model, annotate it
with ``X86InductorQuantizer``, insert observers, calibrate, convert to Q/DQ,
and lower to oneDNN's quantized convolution (``onednn.qconv_pointwise``) and
linear kernels.

Which layers run a real kernel: ``Conv2d`` and ``Linear`` with 8-bit
symmetric per-channel weights and 8-bit per-tensor activations (the layouts
oneDNN has). The quantizer is told those layers by name; everything else
stays float in the graph and, when quantviz quantizes it, carries its
fake-quantized weight (listed as simulated).

The grids are quantviz's: before conversion every observer in front of a
kernel layer is given quantviz's range (the input activation's calibrated
range; the weight's per-channel range), so the int8 weight codes and the
activation scales are the ones the app simulated. The lowered graph is specialised to the
example batch's shape (oneDNN prepacks for it); :func:`run_batched` pads a
short last batch.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from ..errors import QuantvizError
from ..model.layers import LayerInfo
from ..numerics.spec import LayerSpec
from .torchao_backend import _quiet, grid_model, triage

KERNEL_TYPES = ("Conv2d", "Linear")


@dataclass
class Pt2ePlan:
    kernels: list[str] = field(default_factory=list)  # layers lowered to oneDNN int8 kernels
    simulated: dict[str, str] = field(default_factory=dict)  # layer -> why it is simulated
    float_layers: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"kernels": list(self.kernels), "simulated": dict(self.simulated), "float": list(self.float_layers)}


def choose(info: LayerInfo, spec: LayerSpec) -> str:
    """'' when pt2e lowers this layer to a real int8 kernel, else the reason it does not."""
    w, a = spec.weight, spec.activation
    if info.type not in KERNEL_TYPES:
        return f"{info.type}: no oneDNN int8 kernel in the pt2e x86 flow (weights fake-quantized)"
    if w.bits != 8 or not w.symmetric or w.granularity != "per_channel":
        return "pt2e kernels need 8-bit symmetric per-channel weights (weights fake-quantized)"
    if a.bits != 8:
        return "pt2e kernels need 8-bit activations (weights fake-quantized)"
    if not info.has_activation_input:
        return "input is not a float tensor (weights fake-quantized)"
    return ""


def plan(layers: list[LayerInfo], specs: dict[str, LayerSpec]) -> Pt2ePlan:
    def pick(info, spec):
        why = choose(info, spec)
        return (None if why else info.name), why

    floats, simulated, kernels = triage(layers, specs, pick)
    return Pt2ePlan(kernels=list(kernels), simulated=simulated, float_layers=floats)


def _pt2e():
    try:
        with _quiet():
            from torchao.quantization.pt2e import MinMaxObserver
            from torchao.quantization.pt2e.lowering import lower_pt2e_quantized_to_x86
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
            from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq
    except ImportError:
        raise QuantvizError("the pt2e backend needs torchao: pip install 'quantviz[torchao]'") from None
    return xiq, prepare_pt2e, convert_pt2e, lower_pt2e_quantized_to_x86, MinMaxObserver


def _quantization_config(xiq, MinMaxObserver):
    """x86 defaults (uint8 per-tensor activations, int8 per-channel symmetric weights) with
    min-max activation observers; :func:`_set_observer_ranges` then puts quantviz's ranges in."""
    base = xiq.get_default_x86_inductor_quantization_config()
    act = replace(base.input_activation, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2 ** -12))
    return replace(base, input_activation=act, output_activation=act)


def _layer_of(node, names: set[str]) -> str | None:
    """The quantviz layer a graph node was traced from (nn_module_stack), if any."""
    stack = node.meta.get("nn_module_stack") or {}
    for path, _ in reversed(list(stack.values())):
        if path in names:
            return path
    return None


_KERNEL_OPS = (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default)


def _set_observer_ranges(prepared: nn.Module, sim, specs: dict[str, LayerSpec], kernels: set[str]) -> int:
    """Observers in front of kernel layers get quantviz's ranges, so conversion yields its grids:
    the input activation's calibrated range, and for weights the per-channel range whose
    symmetric scale (max / 127.5 on [-128, 127], torch's convention) is quantviz's scale.
    Returns how many observers were set."""
    done = 0
    for node in prepared.graph.nodes:
        if node.op != "call_module":
            continue
        obs = getattr(prepared, node.target, None)
        if not hasattr(obs, "min_val"):
            continue
        scheme = getattr(obs, "qscheme", None)
        for user in node.users:
            name = _layer_of(user, kernels)
            if name is None or user.target not in _KERNEL_OPS:
                continue
            if scheme == torch.per_tensor_affine and user.args[0] is node:
                qp = sim.activation_qparams(name, specs[name].activation)
                if qp is None:
                    continue
                lo, hi = qp.grid_range()
                obs.min_val.copy_(torch.as_tensor(float(lo.reshape(-1)[0])))
                obs.max_val.copy_(torch.as_tensor(float(hi.reshape(-1)[0])))
            elif scheme == torch.per_channel_symmetric and user.args[1] is node:
                qp = sim.quantize_weight(name, specs[name].weight).qparams
                half = qp.scale.reshape(-1).to(obs.max_val.dtype) * (obs.quant_max - obs.quant_min) / 2
                if half.shape != obs.max_val.shape:
                    continue
                obs.min_val.copy_(-half)
                obs.max_val.copy_(half)
            else:
                continue
            done += 1
            break
    return done


def _reshape_not_view(gm: nn.Module) -> None:
    """oneDNN kernels return channels-last tensors, which ``aten.view`` (flatten) refuses."""
    changed = False
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target == torch.ops.aten.view.default:
            node.target = torch.ops.aten.reshape.default
            changed = True
    if changed:
        gm.recompile()


def _drop_unused(gm: nn.Module) -> None:
    """Remove parameters and buffers the graph no longer reads (the float weights that
    conversion replaced with int8 ones), so saved sizes are the deployed sizes."""
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for kind in ("_parameters", "_buffers"):
        for full in [k for k, _ in (gm.named_parameters() if kind == "_parameters" else gm.named_buffers())]:
            if full in used:
                continue
            owner_path, _, leaf = full.rpartition(".")
            owner = gm.get_submodule(owner_path) if owner_path else gm
            getattr(owner, kind).pop(leaf, None)


def _split_shared_calls(gm: nn.Module, keep: set[str]) -> None:
    """Give each call of a module that runs at several places (torchvision's ResNet calls one
    ``self.relu`` twice per block) its own name in the nodes' ``nn_module_stack``: the x86
    quantizer groups a non-strict export's nodes by that name, and one partition with two
    outputs makes it give up on the whole model. ``keep``: layer names left as they are
    (their per-layer qconfigs match by name)."""
    calls: dict[str, int] = {}
    prev = None
    for node in gm.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if node.op != "call_function" or not stack:
            prev = None
            continue
        key = list(stack)[-1]
        fqn, cls = stack[key]
        if fqn != prev:
            calls[fqn] = calls.get(fqn, 0) + 1
        prev = fqn
        if calls[fqn] > 1 and fqn not in keep:
            node.meta["nn_module_stack"] = {**stack, key: (f"{fqn}@call{calls[fqn]}", cls)}


def _export(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """``torch.export`` with a dynamic batch dimension where the model allows it."""
    try:
        batch = torch.export.Dim("batch", min=1, max=1 << 16)
        return torch.export.export(model, (example,), dynamic_shapes=({0: batch},), strict=False).module()
    except Exception:  # noqa: BLE001 - a model that specialises on its batch size
        return torch.export.export(model, (example,), strict=False).module()


def _fail(exc: Exception) -> QuantvizError:
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return QuantvizError(f"pt2e: this model could not be exported and lowered ({type(exc).__name__}: {first[:200]})")


def convert(sim, specs: dict[str, LayerSpec], calib_batches, example: torch.Tensor, *,
            grid_specs: dict[str, LayerSpec] | None = None) -> tuple[nn.Module, Pt2ePlan]:
    """The converted Q/DQ model (int8 weights; portable, not yet lowered) and the plan.

    ``specs`` decide which layers get kernels; ``grid_specs`` (default ``specs``) put
    every quantized layer's weights on its grid."""
    p = plan(sim.layers, specs)
    model = grid_model(sim, grid_specs or specs)
    if not p.kernels:
        return model, p
    xiq, prepare_pt2e, convert_pt2e, _lower, MinMaxObserver = _pt2e()
    cfg = _quantization_config(xiq, MinMaxObserver)
    try:
        with _quiet():
            exported = _export(model, example)
            _split_shared_calls(exported, set(p.kernels))
            quantizer = xiq.X86InductorQuantizer()
            for name in p.kernels:
                quantizer.set_module_name_qconfig(name, cfg)
            prepared = prepare_pt2e(exported, quantizer)
            with torch.no_grad():
                for x in calib_batches:
                    prepared(x)
            _set_observer_ranges(prepared, sim, specs, set(p.kernels))
            converted = convert_pt2e(prepared)
            _drop_unused(converted)
            return converted, p
    except QuantvizError:
        raise
    except Exception as exc:  # noqa: BLE001 - export limits of this model
        raise _fail(exc) from exc


LOWERING_MIN_DB = 30.0  # the lowered model must agree with the Q/DQ program at least this well


def lower(converted: nn.Module, example: torch.Tensor, *, min_db: float = LOWERING_MIN_DB) -> nn.Module:
    """oneDNN int8 kernels for the converted model, specialised to ``example``'s shape.

    The result is checked against the converted Q/DQ program on ``example``; a lowering
    that changes the outputs (SQNR below ``min_db``) is refused with a one-line error.
    """
    from ..numerics.sqnr import tensor_sqnr_db

    lower_fn = _pt2e()[3]
    try:
        with _quiet():
            lowered = lower_fn(converted, (example,))
            _reshape_not_view(lowered)
            with torch.no_grad():
                got, want = lowered(example), converted(example)
    except Exception as exc:  # noqa: BLE001 - lowering limits of this model
        raise _fail(exc) from exc
    agree = tensor_sqnr_db(want, got)
    if agree < min_db:
        raise QuantvizError(f"pt2e: the oneDNN lowering disagrees with the Q/DQ program on this model "
                            f"({agree:.1f} dB < {min_db:.0f} dB)")
    return lowered


def build(sim, specs: dict[str, LayerSpec], calib_batches, example: torch.Tensor
          ) -> tuple[nn.Module, nn.Module, Pt2ePlan]:
    """(lowered model for ``example``'s batch shape, converted Q/DQ program, plan).

    When lowering with Linear kernels fails its fidelity check, the convolutions are tried
    alone (Linear layers are torchao ``quantize_``'s domain anyway) and the Linear layers
    are listed as simulated with the reason.
    """
    converted, p = convert(sim, specs, calib_batches, example)
    if not p.kernels:
        return converted, converted, p
    try:
        return lower(converted, example), converted, p
    except QuantvizError as exc:
        linear = [n for n in p.kernels if sim.by_name[n].type == "Linear"]
        if not linear or len(linear) == len(p.kernels):
            raise
        why = f"{exc}; Linear layers left to the torchao backend"
    convs_only = {n: (_float_activation(s) if n in linear else s) for n, s in specs.items()}
    converted, p2 = convert(sim, convs_only, calib_batches, example, grid_specs=specs)
    for n in linear:
        p2.simulated[n] = why
    p2.float_layers = [n for n in p2.float_layers if n not in linear]
    return lower(converted, example), converted, p2


def _float_activation(spec: LayerSpec) -> LayerSpec:
    """The spec with float activations: pt2e then has no int8 kernel for the layer."""
    return replace(spec, activation=replace(spec.activation, bits=None))


def save_program(converted: nn.Module, example: torch.Tensor, path) -> None:
    """``torch.export.save`` of the converted Q/DQ program (load with ``torch.export.load``)."""
    try:
        batch = torch.export.Dim("batch", min=1, max=1 << 16)
        ep = torch.export.export(converted, (example,), dynamic_shapes=({0: batch},), strict=False)
    except Exception:  # noqa: BLE001 - specialised on the batch size
        ep = torch.export.export(converted, (example,), strict=False)
    buf = io.BytesIO()  # a buffer: torch.export.save wants a ".pt2" name or a buffer, and ``path`` is a temporary
    torch.export.save(ep, buf)
    with open(path, "wb") as fh:
        fh.write(buf.getvalue())


def input_ranges(sim, specs: dict[str, LayerSpec], layers) -> dict[str, tuple[float, float]]:
    """quantviz's calibrated input range (grid edges) of each layer in ``layers``."""
    out = {}
    for name in layers:
        qp = sim.activation_qparams(name, specs[name].activation)
        if qp is not None:
            lo, hi = qp.grid_range()
            out[name] = (float(lo.reshape(-1)[0]), float(hi.reshape(-1)[0]))
    return out


_APPLY_PT2E = '''


def apply_pt2e(model: torch.nn.Module, example_inputs: tuple, calibration_batches=(),
               ranges: dict | None = None) -> torch.nn.Module:
    """Quantize the layers in PT2E_INPUT_RANGES with torchao's pt2e flow; returns the
    converted Q/DQ program. Weights get per-channel min-max int8 grids; each layer's input
    gets quantviz's range (``ranges=None``) or, with ``ranges={}``, the min-max of your
    calibration batches. Lower the result with
    ``torchao.quantization.pt2e.lowering.lower_pt2e_quantized_to_x86(program, example_inputs)``
    for oneDNN int8 kernels, or compile it with ``torch.compile``.
    """
    from dataclasses import replace

    from torchao.quantization.pt2e import MinMaxObserver
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    ranges = PT2E_INPUT_RANGES if ranges is None else ranges
    base = xiq.get_default_x86_inductor_quantization_config()
    act = replace(base.input_activation, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2 ** -12))
    config = replace(base, input_activation=act, output_activation=act)
    quantizer = xiq.X86InductorQuantizer()
    for name in PT2E_INPUT_RANGES:
        quantizer.set_module_name_qconfig(name, config)
    exported = torch.export.export(model.eval(), tuple(example_inputs), strict=False).module()
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        prepared(*example_inputs)
        for batch in calibration_batches:
            prepared(batch)
    kernels = (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default)
    for node in prepared.graph.nodes:  # the observer in front of each layer's input gets its range
        obs = getattr(prepared, node.target, None) if node.op == "call_module" else None
        if getattr(obs, "qscheme", None) != torch.per_tensor_affine:
            continue
        for user in node.users:
            stack = [path for path, _ in (user.meta.get("nn_module_stack") or {}).values()]
            name = next((n for n in reversed(stack) if n in ranges), None)
            if name is not None and user.target in kernels and user.args[0] is node:
                obs.min_val.copy_(torch.tensor(ranges[name][0]))
                obs.max_val.copy_(torch.tensor(ranges[name][1]))
                break
    return convert_pt2e(prepared)
'''


def script_section(p: Pt2ePlan, ranges: dict[str, tuple[float, float]]) -> str:
    """Python source, appended to the torchao apply-script, that runs the same pt2e flow on
    the user's own model: the same layers, x86 int8 layouts, min-max weights, quantviz's
    input ranges."""
    lines = ["", "", "# ---- convolutions: torchao's pt2e flow (x86 oneDNN int8) ----",
             "# layer -> quantviz's calibrated input range (the activation grid's edges)",
             "PT2E_INPUT_RANGES = {"]
    for name in p.kernels:
        if name in ranges:
            lo, hi = ranges[name]
            lines.append(f"    {name!r}: ({lo!r}, {hi!r}),")
    lines.append("}")
    return "\n".join(lines) + _APPLY_PT2E


def run_batched(model: nn.Module, x: torch.Tensor, batch: int) -> torch.Tensor:
    """Outputs of a shape-specialised model over ``x``, ``batch`` rows at a time (last batch zero-padded)."""
    outs = []
    for i in range(0, x.shape[0], batch):
        xb = x[i:i + batch]
        n = xb.shape[0]
        if n < batch:
            xb = torch.cat([xb, xb.new_zeros((batch - n,) + tuple(xb.shape[1:]))])
        outs.append(model(xb)[:n])
    return torch.cat(outs)


__all__ = ["Pt2ePlan", "choose", "plan", "convert", "lower", "build", "save_program", "input_ranges", "script_section", "grid_model", "run_batched", "KERNEL_TYPES"]
