"""Simulated quantization of a model: :class:`QuantSim`.

``QuantSim`` keeps two copies of the (BatchNorm-folded) model: the float
reference and a twin whose quantizable layers carry fake-quantized weights.
Activation quantization is a forward pre-hook on each quantized layer of the
twin: **the activation settings of layer L apply to L's input** (per-tensor),
so every quantized layer consumes a quantized tensor, as in a QDQ graph.
Embedding inputs are indices and are never quantized.

Quantized weights and their qparams are cached per ``(layer, WeightSpec)``;
applying a new config only touches layers whose settings changed.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch import nn

from .algorithms.simulate import AlgorithmSupport
from .data import Dataset, call_model, to_device
from .errors import Cancelled, ModelError, QuantvizError
from .layers import LayerInfo, fold_batchnorm, inventory
from .observers import HistogramObserver, histogram_of
from .progress import Progress, null_progress, scaled
from .quantize import histogram_error, quantize_weight_tensor
from .qparams import QParams, compute_qparams
from .ranges import RangeError, activation_range
from .spec import ActSpec, LayerSpec, WeightSpec


@dataclass
class WeightQuant:
    tensor: torch.Tensor  # fake-quantized weight (same shape/dtype as the float one)
    qparams: QParams
    sqnr_db: float
    mse: float
    clipped_fraction: float
    # set by a per-layer algorithm (quantviz.core.algorithms); None / empty for rounding to nearest
    codes: torch.Tensor | None = None  # integer codes of ``tensor`` (int32, weight layout)
    bias: torch.Tensor | None = None  # the layer's new bias (bias correction; created when absent)
    input_scale: torch.Tensor | None = None  # SmoothQuant / AWQ: the layer sees x / s (per input channel)
    input_range: tuple | None = None  # min / max of x / s on calibration data (its input quantizer's range)
    algorithm_info: dict = field(default_factory=dict)


class QuantSim(AlgorithmSupport):
    def __init__(self, model: nn.Module, *, fold_bn: bool = True, device: str | torch.device = "cpu",
                 equalize: bool = False):
        self.device = torch.device(device)
        base = copy.deepcopy(model).eval()
        self.folded_pairs: list[tuple[str, str]] = []
        if fold_bn:
            try:
                base, self.folded_pairs = fold_batchnorm(base, inplace=True)
            except Exception:  # a model we cannot analyse stays unfolded
                self.folded_pairs = []
        self.fold_bn = fold_bn
        self.equalize = equalize
        self.cle_report: dict | None = None
        if equalize:  # cross-layer equalization of conv -> ReLU -> conv pairs (function-preserving)
            from .algorithms.cle import equalize as _cle

            self.cle_report = _cle(base)
        for p in base.parameters():
            p.requires_grad_(False)
        self.float_model = base.to(self.device).eval()
        self.qmodel = copy.deepcopy(self.float_model).eval()
        self.layers: list[LayerInfo] = inventory(self.float_model)
        self.by_name = {l.name: l for l in self.layers}
        self._fmods = {l.name: self.float_model.get_submodule(l.name) for l in self.layers}
        self._qmods = {l.name: self.qmodel.get_submodule(l.name) for l in self.layers}
        self._float_w = {n: m.weight.detach().clone() for n, m in self._fmods.items()}
        self._wcache: dict[tuple[str, WeightSpec], WeightQuant] = {}
        self._applied_w: dict[str, WeightSpec | None] = {}
        self.act_obs: dict[str, HistogramObserver] = {}
        self._act_qp: dict[str, QParams | None] = {}
        self._act_spec: dict[str, ActSpec] = {}
        self._in_scale: dict[str, torch.Tensor] = {}
        self._init_algorithms()
        self._hooks = []
        for l in self.layers:
            if l.has_activation_input:
                self._hooks.append(self._qmods[l.name].register_forward_pre_hook(self._make_act_hook(l.name)))

    # ----------------------------------------------------------- weights
    def float_weight(self, name: str) -> torch.Tensor:
        return self._float_w[name]

    def quantize_weight(self, name: str, spec: WeightSpec, *, compute: bool = True, progress: Progress = null_progress,
                        cancel: Callable[[], bool] = lambda: False) -> WeightQuant | None:
        """The fake-quantized weight of ``name`` under ``spec`` (cached).

        With a per-layer algorithm (``spec.algorithm``) the result depends on the
        layers before it as last applied (see :mod:`.algorithms.simulate`);
        ``compute=False`` returns None instead of running a pending algorithm."""
        if spec.bits is None:
            return None
        if spec.algorithm != "none":
            return self._algorithm_weight(name, spec, compute=compute, progress=progress, cancel=cancel)
        key = (name, spec)
        hit = self._wcache.get(key)
        if hit is not None:
            return hit
        info = self.by_name[name]
        t = quantize_weight_tensor(self._float_w[name].float().cpu(), spec, info.channel_axis, name)
        res = WeightQuant(t.tensor.to(self._float_w[name].dtype), t.qparams, t.sqnr_db, t.mse, t.clipped_fraction)
        self._trim_cache()
        self._wcache[key] = res
        return res

    def _trim_cache(self) -> None:
        """Bound the weight cache; plain rounding (cheap to redo) goes before algorithm results."""
        cap = 4 * max(len(self.layers), 64)
        if len(self._wcache) > cap:
            for k in [k for k in self._wcache if k[1].algorithm == "none"]:
                del self._wcache[k]
        if len(self._wcache) > 2 * cap:
            self._wcache.clear()

    # ------------------------------------------------------- activations
    def _make_act_hook(self, name: str):
        def hook(mod, args):
            qp = self._act_qp.get(name)
            s = self._in_scale.get(name)
            if s is not None and qp is not None and args and isinstance(args[0], torch.Tensor):
                # SmoothQuant / AWQ: the input quantizer sees x / s; the weight is Q(W s) / s
                x = args[0]
                sv = s.to(x.device).view(*([1] * (x.dim() - 1)), -1)
                return (fake_quantize_tensor(x / sv, qp) * sv,) + tuple(args[1:])
            if qp is None or not args or not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
                return None
            return (fake_quantize_tensor(args[0], qp),) + tuple(args[1:])

        return hook

    @property
    def calibrated(self) -> bool:
        return bool(self.act_obs)

    @torch.no_grad()
    def calibrate(self, data: Dataset, *, batch_size: int = 64, progress: Progress = null_progress,
                  cancel: Callable[[], bool] = lambda: False) -> None:
        """Stream the inputs of every quantizable layer into histograms (float model)."""
        observers = {l.name: HistogramObserver() for l in self.layers if l.has_activation_input}
        hooks = []
        for name, obs in observers.items():
            def hook(mod, args, _obs=obs):
                if args and isinstance(args[0], torch.Tensor):
                    _obs.update(args[0])
            hooks.append(self._fmods[name].register_forward_pre_hook(hook))
        try:
            forward_batches(self.float_model, data, device=self.device, batch_size=batch_size, what="calibration",
                            progress=progress, cancel=cancel)
        finally:
            for h in hooks:
                h.remove()
        bad = [n for n, o in observers.items() if o.nonfinite]
        if bad:
            raise ModelError(f"{data.name}: calibration produced NaN/Inf activations at the input of {bad[0]}"
                             + (f" (and {len(bad) - 1} more layers)" if len(bad) > 1 else ""))
        self.act_obs = {n: o for n, o in observers.items() if o.count}
        self._act_spec.clear()  # force qparams to be recomputed
        self._set_calibration(data, batch_size)

    def activation_qparams(self, name: str, spec: ActSpec) -> QParams | None:
        if spec.bits is None or name not in self.act_obs:
            return None
        h = self.act_obs[name].histogram()
        try:
            lo, hi = activation_range(h, spec.range, spec.bits, spec.symmetric, spec.grid)
        except RangeError as exc:
            raise RangeError(f"layer {name} activation: {exc}") from exc
        return compute_qparams(lo, hi, spec.bits, spec.symmetric, spec.grid)

    def activation_sqnr(self, name: str, spec: ActSpec) -> float | None:
        """SQNR of quantizing this layer's input, estimated from its histogram."""
        qp = self.activation_qparams(name, spec)
        if qp is None:
            return None
        h = self.act_obs[name].histogram()
        return histogram_error(h.centers, h.counts, qp, h.min, h.max)[0]

    # ------------------------------------------------------------- apply
    @torch.no_grad()
    def apply(self, specs: dict[str, LayerSpec], *, progress: Progress = null_progress,
              cancel: Callable[[], bool] = lambda: False) -> list[str]:
        """Make the twin model simulate ``specs``; returns the layers that changed.

        Layers are set in inventory order, each layer's input quantizer before its
        weight, so a per-layer algorithm sees its input as the new config computes it;
        pending algorithms report ``progress`` and stop on ``cancel``."""
        changed = []
        self._context = self.context_tokens(specs)
        pending = set(self.pending_algorithms(specs))
        done = 0
        for l in self.layers:
            spec = specs.get(l.name)
            aspec = spec.activation if spec is not None else ActSpec(bits=None)
            if l.has_activation_input and self._act_spec.get(l.name) != aspec:
                if aspec.bits is not None and not self.calibrated:
                    raise QuantvizError("activation quantization needs calibration data (calibrate first)")
                self._act_qp[l.name] = self.activation_qparams(l.name, aspec)
                self._act_spec[l.name] = aspec
                if self._in_scale.pop(l.name, None) is not None:
                    self._applied_w.pop(l.name, None)  # re-apply the scaled input quantizer below
                changed.append(l.name)
            wspec = spec.weight if spec is not None and spec.weight.bits is not None else None
            wkey = wspec if wspec is None or wspec.algorithm == "none" else self.algorithm_key(l.name, wspec)
            if self._applied_w.get(l.name, "unset") != wkey:
                mod = self._qmods[l.name]
                wq = None
                if wspec is not None:
                    if l.name in pending:
                        sub = scaled(progress, done / len(pending), (done + 1) / len(pending))
                        wq = self.quantize_weight(l.name, wspec, progress=lambda d, t, m="", _n=l.name: sub(d, t, f"{m} {_n}"),
                                                  cancel=cancel)
                        done += 1
                    else:
                        wq = self.quantize_weight(l.name, wspec)
                mod.weight.data.copy_(self._float_w[l.name] if wq is None else wq.tensor.to(mod.weight.device))
                self._set_bias(l.name, None if wq is None else wq.bias)
                scale = None if wq is None else wq.input_scale
                if scale is not None or l.name in self._in_scale:
                    if scale is None:
                        self._in_scale.pop(l.name, None)
                        self._act_qp[l.name] = self.activation_qparams(l.name, aspec)
                    else:
                        self._in_scale[l.name] = scale
                        self._act_qp[l.name] = (compute_qparams(wq.input_range[0], wq.input_range[1], aspec.bits,
                                                                aspec.symmetric, aspec.grid) if aspec.bits is not None else None)
                self._applied_w[l.name] = wkey
                if l.name not in changed:
                    changed.append(l.name)
        return changed

    def _set_bias(self, name: str, bias: torch.Tensor | None) -> None:
        qmod, fmod = self._qmods[name], self._fmods[name]
        fb = getattr(fmod, "bias", None)
        if bias is None:
            if fb is None:
                if getattr(qmod, "bias", None) is not None:
                    qmod.bias = None
            else:
                qmod.bias.data.copy_(fb)
        elif getattr(qmod, "bias", None) is None:
            qmod.bias = nn.Parameter(bias.to(qmod.weight), requires_grad=False)
        else:
            qmod.bias.data.copy_(bias)

    @torch.no_grad()
    def load_state(self, state: dict) -> None:
        """Hold new float weights (a state of the folded model, e.g. after training):
        both copies load it and every quantized weight is recomputed on the next apply."""
        self.float_model.load_state_dict(state)
        self.qmodel.load_state_dict(state, strict=False)  # an algorithm may have given a layer a bias
        self._float_w = {n: m.weight.detach().clone() for n, m in self._fmods.items()}
        for n in self._qmods:
            self._set_bias(n, None)  # back to the float bias
        self._wcache.clear()  # plain and algorithm results alike depend on the weights
        self._applied_w.clear()
        self._calib_gen += 1

    def weight_histogram(self, name: str, bins: int = 256):
        return histogram_of(self._float_w[name].float().cpu(), bins=bins)

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()


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


def run_model(model: nn.Module, inputs, device) -> torch.Tensor:
    from .data import output_tensor

    return output_tensor(call_model(model, to_device(inputs, device)))


def iterate_outputs(model: nn.Module, data: Dataset, *, device, batch_size: int = 64,
                    cancel: Callable[[], bool] = lambda: False) -> Iterable[tuple[int, torch.Tensor, torch.Tensor | None]]:
    """Yield ``(batch_index, output, labels)`` running ``model`` batch by batch.

    Gradients are off only around each model call, never across a ``yield``: a
    generator suspended inside ``torch.no_grad()`` would leave its caller's
    thread without autograd (for good, if the caller stops iterating early)."""
    for i, (x, y) in enumerate(data.batches(batch_size)):
        if cancel():
            raise Cancelled()
        try:
            with torch.no_grad():
                out = run_model(model, x, device)
        except QuantvizError:
            raise
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise ModelError(f"model raised {type(exc).__name__} on {data.name}: {first}") from exc
        yield i, out.detach().float().cpu(), y


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
