"""Simulated quantization of a model: :class:`QuantSim`.

``QuantSim`` keeps **one** (BatchNorm-folded) model. ``sim.float_model`` is
that model; ``sim.qmodel`` is a thin view of it that runs it *quantized*:
while it runs, a forward pre-hook on each quantizable layer swaps in the
layer's fake-quantized weight (restored when the call returns) and
fake-quantizes the layer's input. **The activation settings of layer L apply
to L's input** (per-tensor), so every quantized layer consumes a quantized
tensor, as in a QDQ graph. Embedding inputs are indices and are never
quantized. Outside a quantized call the hooks do nothing.

The caller's model is not copied unless BatchNorm folding must change its
weights (then one copy is folded). Quantized weights and their qparams are
cached per ``(layer, WeightSpec)``; the quantized tensors live in a byte
budget (``weight_cache_bytes``, default room for every weight as int8 codes:
a quarter of float32 weight bytes, half of bf16, at least 64 MiB; or
``$QUANTVIZ_WEIGHT_CACHE``): the tensors of the applied config are kept first,
others are dropped oldest first, and a layer whose tensor does not fit is
re-quantized when it runs. Large layers of a model kept as codes are quantized
straight to codes a block of channels at a time (:mod:`.wcodes`), and an
``nn.Embedding`` held as codes decodes only the rows it looks up. Quantized weights keep the model's dtype (bf16 /
fp16 checkpoints stay so); ranges, qparams and rounding are computed in
float32.

A TorchScript module (no Python hooks) is simulated weights-only: its weights
are quantized in place on the module ``qmodel`` and ``float_model`` is a copy.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import threading
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

import torch
from torch import nn

from . import cpucompute as _upcast
from .algorithms.simulate import AlgorithmSupport
from .allocator import MIN_MODEL_BYTES, limit_heap_fragmentation
from .data import Dataset, call_model, to_device
from .errors import Cancelled, ModelError, QuantvizError
from .format_quant import activation_axis, activation_error, activation_params, fake_quantize_activation
from .layers import _BN, LayerInfo, fold_batchnorm, inventory
from .observers import HistogramObserver, histogram_of
from .progress import Progress, null_progress, scaled
from .quantize import histogram_error, quantize_weight_tensor
from .qparams import QParams, compute_qparams
from .ranges import RangeError, activation_range
from .spec import ActSpec, LayerSpec, WeightSpec
from .wcodes import blockable, quantize_codes


CACHE_ENV = "QUANTVIZ_WEIGHT_CACHE"
DEFAULT_CACHE_FRACTION = 0.25


@dataclass
class WeightQuant:
    """A layer's quantized weight under one spec: the fake-quantized tensor (same shape/dtype/device
    as the float one), qparams and error statistics. In the cache an entry may hold its tensor only
    as integer codes (``packed``) or not at all (over the budget); :meth:`QuantSim.quantize_weight`
    always returns one with ``tensor`` set."""

    tensor: torch.Tensor | None
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
    packed: object = field(default=None, repr=False)  # core.wcodes.Codes when the cache keeps codes only

    @property
    def held_bytes(self) -> int:
        return _nbytes(self.tensor) + (self.packed.nbytes if self.packed is not None else 0)


def _nbytes(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.numel() * t.element_size()


def _default_cache_bytes(float_bytes: int, numel: int) -> int:
    """``$QUANTVIZ_WEIGHT_CACHE``, else room for every weight as int8 codes (a quarter of float32
    weights, half of bf16 / fp16 ones: one 8-bit copy of the model), at least 64 MiB."""
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        try:
            return max(0, int(float(env)))
        except ValueError:
            pass
    return max(64 << 20, int(numel), int(DEFAULT_CACHE_FRACTION * float_bytes))


class _QuantView(nn.Module):
    """``sim.qmodel``: calls the one model with quantization switched on."""

    def __init__(self, sim: "QuantSim"):
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
        from .data import fixed_batch_of

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


class QuantSim(AlgorithmSupport):
    def __init__(self, model: nn.Module, *, fold_bn: bool = True, device: str | torch.device = "cpu",
                 equalize: bool = False, copy_model: bool | None = None, weight_cache_bytes: int | None = None,
                 readout=None):
        from .readout import DEFAULT

        self.device = torch.device(device)
        self.readout = readout or DEFAULT  # the output / real-token mask metrics and statistics use
        self.weights_only = isinstance(model, torch.jit.ScriptModule)
        self.folded_pairs: list[tuple[str, str]] = []
        self.fold_bn = fold_bn
        if self.weights_only:
            base, self.qmodel = copy.deepcopy(model), model
            for m in (base, model):
                m.eval()
        else:
            if copy_model is None:  # folding / equalization rewrite weights: never change the caller's model
                copy_model = equalize or (fold_bn and any(isinstance(m, _BN) for m in model.modules()))
            base = copy.deepcopy(model) if copy_model else model
            base.eval()
            if fold_bn:
                try:
                    base, self.folded_pairs = fold_batchnorm(base, inplace=True)
                except Exception:  # a model we cannot analyse stays unfolded
                    self.folded_pairs = []
            self.qmodel = _QuantView(self)
        self.equalize = equalize
        self.cle_report: dict | None = None
        if equalize and not self.weights_only:  # cross-layer equalization of conv -> ReLU -> conv pairs
            from .algorithms.cle import equalize as _cle

            self.cle_report = _cle(base)
        for m in ([base, self.qmodel] if self.weights_only else [base]):
            for p in m.parameters():
                if p.is_leaf:  # a copied TorchScript module holds non-leaf parameters
                    p.requires_grad_(False)
        self.float_model = base.to(self.device).eval()
        if self.weights_only:
            self.qmodel.to(self.device)
        self.layers: list[LayerInfo] = inventory(self.float_model)
        self.by_name = {l.name: l for l in self.layers}
        fmods = dict(self.float_model.named_modules())  # (ScriptModules have no get_submodule)
        self._fmods = {l.name: fmods[l.name] for l in self.layers}
        qmods = dict(self.qmodel.named_modules()) if self.weights_only else fmods
        self._qmods = {l.name: qmods[l.name] for l in self.layers}
        # views of the float weights, never copies: the float model is never written to
        self._float_w = {n: m.weight.detach() for n, m in self._fmods.items()}
        self._float_param = {} if self.weights_only else {n: m._parameters.get("weight") for n, m in self._fmods.items()}
        float_bytes = sum(_nbytes(w) for w in {id(w): w for w in self._float_w.values()}.values())
        self.float_weight_bytes = float_bytes
        if float_bytes >= MIN_MODEL_BYTES:  # big models: freed temporaries go back to the system
            limit_heap_fragmentation()
        numel = sum(w.numel() for w in {id(w): w for w in self._float_w.values()}.values())
        self.weight_cache_bytes = (_default_cache_bytes(float_bytes, numel) if weight_cache_bytes is None
                                   else int(weight_cache_bytes))
        self._cached_bytes = 0
        self._no_store = False
        self._wcache: dict[tuple[str, WeightSpec], WeightQuant] = {}
        self._applied_w: dict[str, WeightSpec | None] = {}
        self.act_obs: dict[str, HistogramObserver] = {}
        self._act_qp: dict[str, QParams | None] = {}
        self._act_spec: dict[str, ActSpec] = {}
        self._tls = threading.local()
        self._swapped: list[tuple[nn.Module, str]] = []
        self._swapped_now: dict[str, nn.Module] = {}
        self._gathers: dict = {}  # embeddings that look up their quantized rows in this call
        self._run_w: dict[str, tuple] = {}  # name -> (applied WeightSpec, its whole quantized tensor)
        self._applied_spec: dict[str, WeightSpec | None] = {}  # the WeightSpec behind _applied_w's key
        self._applied_bias: dict[str, torch.Tensor] = {}  # bias correction: the bias a layer runs with
        self._float_bias = {} if self.weights_only else {n: m._parameters.get("bias") for n, m in self._fmods.items()}
        self._in_scale: dict[str, torch.Tensor] = {}
        self._init_algorithms()
        self._hooks = []
        if not self.weights_only:
            for l in self.layers:
                self._hooks.append(self._fmods[l.name].register_forward_pre_hook(self._make_hook(l.name)))
                self._hooks.append(self._fmods[l.name].register_forward_hook(self._make_post_hook(l.name)))
        # bf16 / fp16 layers on the CPU compute in float32, float and quantized runs alike (:mod:`.cpucompute`)
        self._upcast = [] if self.weights_only else _upcast.install(
            m for m in self._fmods.values() if _upcast.wants(m, self.device))

    # ----------------------------------------------------- quantized mode
    @property
    def active(self) -> bool:
        return getattr(self._tls, "depth", 0) > 0

    @contextlib.contextmanager
    def quantized(self):
        """Within this block (this thread) the model runs quantized."""
        self._tls.depth = getattr(self._tls, "depth", 0) + 1
        try:
            yield
        finally:
            self._tls.depth -= 1
            if self._tls.depth == 0:
                self._restore_weights()

    def _restore_weights(self) -> None:
        self._swapped_now.clear()
        self._gathers.clear()
        while self._swapped:
            mod, name = self._swapped.pop()
            self._restore_layer(mod, name)

    def _restore_layer(self, mod: nn.Module, name: str) -> None:
        mod._parameters["weight"] = self._float_param[name]
        if name in self._applied_bias:
            mod._parameters["bias"] = self._float_bias.get(name)

    def _make_hook(self, name: str):
        # a closure, not a bound method: a deep copy of the model (torchao export) shares it,
        # and it does nothing there (``mod`` is not this simulation's module)
        def hook(mod, args):
            if not self.active or mod is not self._fmods.get(name):
                return None
            wspec = self._applied_spec.get(name)
            if wspec is not None and self._gather_codes(name, mod, wspec, args):
                pass  # an embedding whose codes are looked up row by row after its call
            elif wspec is not None and mod._parameters.get("weight") is self._float_param[name]:
                rw = self._run_w.get(name)  # fast path: the applied config's whole tensor
                mod._parameters["weight"] = rw[1] if rw is not None and rw[0] is wspec else self._weight_for_run(name, wspec)
                if name in self._applied_bias:
                    mod._parameters["bias"] = self._applied_bias[name]
                self._swapped.append((mod, name))
                self._swapped_now[name] = mod
            qp = self._act_qp.get(name)
            s = self._in_scale.get(name)
            if s is not None and qp is not None and args and isinstance(args[0], torch.Tensor):
                # SmoothQuant / AWQ: the input quantizer sees x / s; the weight is Q(W s) / s
                x = args[0]
                sv = s.to(x.device).view(*([1] * (x.dim() - 1)), -1)
                return (fake_quantize_tensor(x / sv, qp) * sv,) + tuple(args[1:])
            if qp is None or not args or not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
                return None
            return (quantize_input(args[0], qp),) + tuple(args[1:])

        return hook

    def _make_post_hook(self, name: str):
        def post(mod, args, out):  # the quantized weight of a layer that ran is not held any longer
            if self._swapped_now.pop(name, None) is mod:
                self._restore_layer(mod, name)
            codes = self._gathers.pop(name, None)
            if codes is not None and isinstance(out, torch.Tensor):
                return codes.take(args[0]).to(out.device)  # the quantized table's rows, as the lookup gives them
            return None

        return post

    def _gather_codes(self, name: str, mod: nn.Module, spec: WeightSpec, args) -> bool:
        """An ``nn.Embedding`` whose quantized table is held as codes looks up only the rows it needs
        (the post-hook replaces its output with those rows, decoded): a language model's token table
        is never decoded whole."""
        if (type(mod) is not nn.Embedding or mod.max_norm is not None or spec.algorithm != "none"
                or not args or not isinstance(args[0], torch.Tensor) or args[0].is_floating_point()):
            return False
        entry = self._wcache.get((name, spec))
        if entry is None or entry.tensor is not None or entry.packed is None or entry.packed.axis not in (None, 0):
            return False
        self._gathers[name] = entry.packed
        return True

    def _weight_for_run(self, name: str, spec: WeightSpec) -> torch.Tensor:
        if spec.algorithm != "none":  # algorithm results stay whole in the cache
            wq = self.quantize_weight(name, spec, compute=False)  # never start an algorithm mid-forward
            return self._float_param[name] if wq is None else wq.tensor.to(self._float_w[name])
        key = (name, spec)
        entry = self._wcache.get(key)
        t = self.quantize_weight(name, spec).tensor  # decoded or recomputed when not held whole
        entry = self._wcache.get(key, entry)
        if entry is not None and entry.held_bytes == 0:
            self._keep(name, spec, entry, t)  # the applied config's tensors come first
        if entry is not None and entry.tensor is t:  # held whole: the next calls take it directly
            self._run_w[name] = (spec, t)
        return t

    def _keep(self, name: str, spec: WeightSpec, entry: WeightQuant, t: torch.Tensor) -> bool:
        """Hold ``t`` for ``entry``: whole when all the model's weights fit the budget whole (small
        models: no decoding on every call), else as integer codes (a quarter of float32), else whole
        if it fits, else not at all (recomputed when needed)."""
        whole_ok = self.keeps_whole
        if whole_ok and self._make_room(_nbytes(t)):
            entry.tensor = t
            self._cached_bytes += _nbytes(t)
            return True
        from .wcodes import encode

        axis = None if spec.granularity == "per_tensor" else self.by_name[name].channel_axis
        codes = encode(t, entry.qparams, axis, spec.effective_group_size())
        if codes is not None and self._make_room(codes.nbytes):
            entry.packed = codes
            self._cached_bytes += codes.nbytes
            return True
        if codes is None and not whole_ok and self._make_room(_nbytes(t)):
            entry.tensor = t
            self._cached_bytes += _nbytes(t)
            return True
        return False

    # ------------------------------------------------------- weight cache
    def _make_room(self, nbytes: int) -> bool:
        budget = self.weight_cache_bytes
        if self._cached_bytes + nbytes <= budget:
            return True
        for key, v in list(self._wcache.items()):  # oldest first; never the applied config's
            if self._cached_bytes + nbytes <= budget:
                break
            if len(key) == 2 and v.held_bytes and self._applied_spec.get(key[0]) != key[1]:
                self._cached_bytes -= v.held_bytes
                v.tensor = v.packed = None
        return self._cached_bytes + nbytes <= budget

    def _cache_put(self, key: tuple[str, WeightSpec], res: WeightQuant) -> WeightQuant:
        """Store ``res`` (its tensor whole, as codes, or not at all); returns it with its tensor."""
        if self._no_store:
            return res
        self._trim_cache()
        stored = replace(res, tensor=None, packed=None)
        self._keep(key[0], key[1], stored, res.tensor)
        self._wcache[key] = res if stored.tensor is not None else stored  # kept whole: the same object
        return res

    def _trim_cache(self) -> None:
        """Bound the weight cache; plain rounding (cheap to redo) goes before algorithm results."""
        cap = 4 * max(len(self.layers), 64)
        if len(self._wcache) > cap:
            for k in [k for k in self._wcache if k[1].algorithm == "none" and self._applied_spec.get(k[0]) != k[1]]:
                self._cached_bytes -= self._wcache.pop(k).held_bytes
        if len(self._wcache) > 2 * cap:
            self._wcache.clear()
            self._run_w.clear()
            self._cached_bytes = 0

    def _materialize(self, key: tuple[str, WeightSpec], entry: WeightQuant) -> WeightQuant:
        """``entry`` with its tensor: decoded from codes, or quantized again (not stored)."""
        if entry.packed is not None:
            return replace(entry, tensor=entry.packed.decode(), packed=None)
        return self._quantize_unstored(*key)

    def _quantize_unstored(self, name: str, spec: WeightSpec) -> WeightQuant:
        self._no_store = True
        try:
            return self._quantize_rtn(name, spec)
        finally:
            self._no_store = False

    @property
    def cache_stats(self) -> dict:
        return {"entries": len(self._wcache), "tensors": sum(v.tensor is not None for v in self._wcache.values()),
                "codes": sum(v.packed is not None for v in self._wcache.values()),
                "bytes": self._cached_bytes, "budget": self.weight_cache_bytes}

    # ----------------------------------------------------------- weights
    def float_weight(self, name: str) -> torch.Tensor:
        return self._float_w[name]

    def quantize_weight(self, name: str, spec: WeightSpec, *, compute: bool = True, progress: Progress = null_progress,
                        cancel: Callable[[], bool] = lambda: False, store: bool = True) -> WeightQuant | None:
        """The fake-quantized weight of ``name`` under ``spec`` (cached; the result always has its tensor).

        With a per-layer algorithm (``spec.algorithm``) the result depends on the
        layers before it as last applied (see :mod:`.algorithms.simulate`);
        ``compute=False`` returns None instead of running a pending algorithm.
        ``store=False``: a rounding result not cached yet is computed and not kept (a one-off
        use, such as a proxy's noise of a big model at several bit-widths)."""
        if spec.bits is None:
            return None
        if spec.algorithm != "none":
            return self._algorithm_weight(name, spec, compute=compute, progress=progress, cancel=cancel)
        key = (name, spec)
        hit = self._wcache.get(key)
        if hit is not None:
            return hit if hit.tensor is not None else self._materialize(key, hit)
        return self._quantize_rtn(name, spec) if store else self._quantize_unstored(name, spec)

    @property
    def keeps_whole(self) -> bool:
        """Whether the cache holds every quantized weight whole (a small model); else as codes, in a budget."""
        return self.float_weight_bytes <= self.weight_cache_bytes

    def _prepare_rtn(self, name: str, spec: WeightSpec) -> WeightQuant:
        """The cache entry of ``(name, spec)`` (rounding to nearest), computed if missing; its tensor
        is not materialised (the layer decodes it when it runs)."""
        hit = self._wcache.get((name, spec))
        return hit if hit is not None else self._quantize_rtn(name, spec, need_tensor=False)

    def _quantize_rtn(self, name: str, spec: WeightSpec, *, need_tensor: bool = True) -> WeightQuant:
        info = self.by_name[name]
        w = self._float_w[name]
        if (self.float_weight_bytes > self.weight_cache_bytes and w.device.type == "cpu"
                and blockable(spec, w.numel())):
            # a big layer of a model whose quantized weights are kept as codes: straight to codes,
            # a block of channels at a time (no full-size float32 temporaries)
            got = quantize_codes(w, spec, info.channel_axis, name)
            if got is not None:
                codes, qp, sqnr, mse, clipped = got
                entry = WeightQuant(None, qp, sqnr, mse, clipped)
                if not self._no_store:
                    self._trim_cache()
                    if self._make_room(codes.nbytes):
                        entry.packed = codes
                        self._cached_bytes += codes.nbytes
                    self._wcache[(name, spec)] = entry
                return replace(entry, tensor=codes.decode(), packed=None) if need_tensor else entry
        t = quantize_weight_tensor(w.float().cpu(), spec, info.channel_axis, name)
        # the float weight's dtype and device
        res = WeightQuant(t.tensor.to(self._float_w[name]), t.qparams, t.sqnr_db, t.mse, t.clipped_fraction)
        return self._cache_put((name, spec), res)

    # ------------------------------------------------------- activations
    @property
    def calibrated(self) -> bool:
        return bool(self.act_obs)

    @torch.no_grad()
    def calibrate(self, data: Dataset, *, batch_size: int = 64, progress: Progress = null_progress,
                  cancel: Callable[[], bool] = lambda: False) -> None:
        """Stream the inputs of every quantizable layer into histograms (float model)."""
        if self.weights_only:  # TorchScript modules take no Python hooks: no activation statistics
            self.act_obs = {}
            return
        observers = {l.name: HistogramObserver() for l in self.layers if l.has_activation_input}
        hooks = []
        from .lmmetrics import MaskTracker

        track = MaskTracker(self.float_model, self.readout)  # padded tokens stay out of the statistics
        for name, obs in observers.items():
            def hook(mod, args, _obs=obs):
                if args and isinstance(args[0], torch.Tensor):
                    _obs.update(track.real(args[0]))
            hooks.append(self._fmods[name].register_forward_pre_hook(hook))
        try:
            forward_batches(self.float_model, data, device=self.device, batch_size=batch_size, what="calibration",
                            progress=progress, cancel=cancel)
        finally:
            track.remove()
            for h in hooks:
                h.remove()
        bad = [n for n, o in observers.items() if o.nonfinite]
        if bad:
            raise ModelError(f"{data.name}: calibration produced NaN/Inf activations at the input of {bad[0]}"
                             + (f" (and {len(bad) - 1} more layers)" if len(bad) > 1 else ""))
        self.act_obs = {n: o for n, o in observers.items() if o.count}
        self._act_spec.clear()  # force qparams to be recomputed
        self._set_calibration(data, batch_size)

    def use_calibration(self, other: "QuantSim", data: Dataset, batch_size: int = 64) -> None:
        """Take a copy of ``other``'s activation statistics instead of calibrating: ``other`` simulates the
        same float model and was calibrated on ``data`` (the caller checks that; see
        ``Session.prepare_like``)."""
        import copy

        self.act_obs = copy.deepcopy(other.act_obs)
        self._act_spec.clear()  # force qparams to be recomputed
        self._set_calibration(data, batch_size)

    def activation_qparams(self, name: str, spec: ActSpec) -> QParams | None:
        if spec.bits is None or name not in self.act_obs:
            return None
        h = self.act_obs[name].histogram()
        if spec.format != "int":
            info = self.by_name[name]
            return activation_params(h, spec, activation_axis(info.type, len(info.weight_shape)), name)
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
        if not isinstance(qp, QParams):
            return activation_error(h.centers, h.counts, qp, h.min, h.max)[0]
        return histogram_error(h.centers, h.counts, qp, h.min, h.max)[0]

    # ------------------------------------------------------------- apply
    @torch.no_grad()
    def apply(self, specs: dict[str, LayerSpec], *, progress: Progress = null_progress,
              cancel: Callable[[], bool] = lambda: False) -> list[str]:
        """Make ``qmodel`` simulate ``specs``; returns the layers that changed.

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
            if l.has_activation_input and not self.weights_only and self._act_spec.get(l.name) != aspec:
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
                self._applied_spec.pop(l.name, None)  # while its new weight is computed the layer is float
                self._run_w.pop(l.name, None)
                self._applied_bias.pop(l.name, None)
                wq = None
                if wspec is not None:
                    if l.name in pending:
                        sub = scaled(progress, done / len(pending), (done + 1) / len(pending))
                        wq = self.quantize_weight(l.name, wspec, progress=lambda d, t, m="", _n=l.name: sub(d, t, f"{m} {_n}"),
                                                  cancel=cancel)
                        done += 1
                    elif wspec.algorithm == "none" and not self.weights_only:
                        wq = self._prepare_rtn(l.name, wspec)  # errors (bad ranges) surface here
                    else:
                        wq = self.quantize_weight(l.name, wspec)  # errors (bad ranges) surface here
                if self.weights_only:  # TorchScript: quantized in place on qmodel
                    mod = self._qmods[l.name]
                    mod.weight.data.copy_((self._float_w[l.name] if wq is None else wq.tensor).to(mod.weight.device))
                self._applied_spec[l.name] = wspec
                if wq is not None and wq.bias is not None:
                    self._applied_bias[l.name] = wq.bias.to(self._float_w[l.name])
                else:
                    self._applied_bias.pop(l.name, None)
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

    def layer_forward(self, name: str, args: tuple, kwargs: dict | None = None):
        """Layer ``name``'s own forward with its applied quantized weight (no hooks, input as given)."""
        mod = self._fmods[name]
        spec = self._applied_spec.get(name)
        if spec is None or self.weights_only:
            return mod.forward(*args, **(kwargs or {}))
        saved, saved_b = mod._parameters.get("weight"), mod._parameters.get("bias")
        mod._parameters["weight"] = self.applied_weight(name)
        if name in self._applied_bias:
            mod._parameters["bias"] = self._applied_bias[name]
        try:
            return mod.forward(*args, **(kwargs or {}))
        finally:
            mod._parameters["weight"] = saved
            if name in self._applied_bias:
                mod._parameters["bias"] = saved_b

    def applied_bias(self, name: str) -> torch.Tensor | None:
        """The bias layer ``name`` runs with in ``qmodel`` (bias correction may create one)."""
        if name in self._applied_bias:
            return self._applied_bias[name]
        b = getattr(self._qmods[name], "bias", None)
        return b.detach() if isinstance(b, torch.Tensor) else None

    def applied_weight(self, name: str) -> torch.Tensor:
        """The weight layer ``name`` runs with in ``qmodel`` under the applied config."""
        if self.weights_only:
            return self._qmods[name].weight.detach()
        spec = self._applied_spec.get(name)
        return self._float_w[name] if spec is None else self.quantize_weight(name, spec).tensor

    @torch.no_grad()
    def load_state(self, state: dict) -> None:
        """Hold new float weights (a state of the folded model, e.g. after training), loaded in
        place into the one model; every quantized weight is recomputed on the next apply."""
        self._restore_weights()
        self.float_model.load_state_dict(state)
        if self.weights_only:
            self.qmodel.load_state_dict(state, strict=False)
        self._wcache.clear()  # plain and algorithm results alike depend on the weights
        self._run_w.clear()
        self._cached_bytes = 0
        self._applied_w.clear()
        self._applied_spec.clear()
        self._applied_bias.clear()
        self._calib_gen += 1

    def weight_histogram(self, name: str, bins: int = 256):
        return histogram_of(self._float_w[name].float().cpu(), bins=bins)

    def close(self) -> None:
        self._restore_weights()
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        _upcast.uninstall(self._upcast)
        self._upcast = []


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
    from .data import batch_len
    from .readout import readout_of

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
