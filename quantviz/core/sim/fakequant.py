"""Simulated quantization of a model: :class:`QuantSim`.

``QuantSim`` keeps **one** (BatchNorm-folded) model. ``sim.float_model`` is
that model; ``sim.qmodel`` is a thin view of it that runs it *quantized*:
while it runs, a forward pre-hook on each quantizable layer swaps in the
layer's fake-quantized weight (restored when the call returns) and
fake-quantizes the layer's input. **The activation settings of layer L apply
to L's input** (per-tensor), so every quantized layer consumes a quantized
tensor, as in a QDQ graph. Embedding inputs are indices and are never
quantized. Outside a quantized call the hooks do nothing (:mod:`.hooks`;
calibration and input qparams: :mod:`.activations`).

What the simulation knows about a layer is one :class:`~.layerstate.LayerState`
(``sim.state[name]``). The caller's model is not copied unless BatchNorm
folding must change its weights (then one copy is folded). Quantized weights
and their qparams live in a :class:`~.weightcache.WeightCache` (``sim.cache``)
keyed per ``(layer, WeightSpec)``, in a byte budget (``weight_cache_bytes``,
default room for every weight as int8 codes: a quarter of float32 weight
bytes, half of bf16, at least 64 MiB; or ``$QUANTVIZ_WEIGHT_CACHE``): the
tensors of the applied config are kept first, others are dropped oldest first,
and a layer whose tensor does not fit is re-quantized when it runs. Large
layers of a model kept as codes are quantized straight to codes a block of
channels at a time (:mod:`.wcodes`), and an ``nn.Embedding`` held as codes
decodes only the rows it looks up. Quantized weights keep the model's dtype
(bf16 / fp16 checkpoints stay so); ranges, qparams and rounding are computed
in float32.

A TorchScript module (no Python hooks) is simulated weights-only: its weights
are quantized in place on the module ``qmodel`` and ``float_model`` is a copy.
"""
from __future__ import annotations

import copy
import threading
from dataclasses import replace
from typing import Callable

import torch
from torch import nn

from ..model import cpucompute as _upcast
from ..algorithms.simulate import AlgorithmSupport
from ..model.allocator import MIN_MODEL_BYTES, available_memory, limit_heap_fragmentation
from ..errors import QuantvizError
from ..model.layers import _BN, LayerInfo, fold_batchnorm, inventory
from ..numerics.observers import HistogramObserver, histogram_of
from ..progress import Progress, null_progress, scaled
from ..numerics.quantize import quantize_weight_tensor
from ..numerics.qparams import compute_qparams
from ..numerics.spec import ActSpec, LayerSpec, WeightSpec
from ..numerics.specmap import SpecMap
from .activations import ActivationSupport
from .hooks import QuantizedMode
# re-exported: callers import these from here
from .forward import (QuantView, fake_quantize_tensor, forward_batches, input_clip_range,  # noqa: F401
                      iterate_outputs, quantize_input, run_model)
from .layerstate import UNSET, LayerState
from .wcodes import blockable, quantize_codes
from .weightcache import RoundKey, WeightCache, WeightQuant, default_cache_bytes, nbytes  # noqa: F401


class QuantSim(QuantizedMode, ActivationSupport, AlgorithmSupport):
    def __init__(self, model: nn.Module, *, fold_bn: bool = True, device: str | torch.device = "cpu",
                 equalize: bool = False, copy_model: bool | None = None, weight_cache_bytes: int | None = None,
                 readout=None):
        from ..model.readout import DEFAULT

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
            self.qmodel = QuantView(self)
        self.equalize = equalize
        self.cle_report: dict | None = None
        if equalize and not self.weights_only:  # cross-layer equalization of conv -> ReLU -> conv pairs
            from ..algorithms.cle import equalize as _cle

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
        qmods = dict(self.qmodel.named_modules()) if self.weights_only else fmods
        self.state: dict[str, LayerState] = {}
        for l in self.layers:
            f = fmods[l.name]
            self.state[l.name] = LayerState(
                l, f, qmods[l.name], f.weight.detach(),  # views of the float weights: never written to
                None if self.weights_only else f._parameters.get("weight"),
                None if self.weights_only else f._parameters.get("bias"))
        unique = {id(s.float_w): s.float_w for s in self.state.values()}.values()
        self.float_weight_bytes = sum(nbytes(w) for w in unique)
        if self.float_weight_bytes >= MIN_MODEL_BYTES:  # big models: freed temporaries go back to the system
            limit_heap_fragmentation()
        avail = available_memory() if self.float_weight_bytes >= MIN_MODEL_BYTES else None
        self.cache = WeightCache(default_cache_bytes(self.float_weight_bytes, sum(w.numel() for w in unique), avail)
                                 if weight_cache_bytes is None else int(weight_cache_bytes),
                                 self.float_weight_bytes, cap=max(len(self.layers), 64))
        self.act_obs: dict[str, HistogramObserver] = {}
        self.applied_specs: SpecMap | None = None  # the SpecMap applied last, while the layers follow it
        self._tls = threading.local()
        self._touched: list[LayerState] = []  # layers swapped or gathering in this quantized call
        self._init_algorithms()
        self._hooks = []
        if not self.weights_only:
            for st in self.state.values():
                self._hooks.append(st.fmod.register_forward_pre_hook(self._make_hook(st)))
                self._hooks.append(st.fmod.register_forward_hook(self._make_post_hook(st)))
        # bf16 / fp16 layers on the CPU compute in float32, float and quantized runs alike (:mod:`.cpucompute`)
        self._upcast = [] if self.weights_only else _upcast.install(
            st.fmod for st in self.state.values() if _upcast.wants(st.fmod, self.device))

    @property
    def weight_cache_bytes(self) -> int:
        return self.cache.budget

    @weight_cache_bytes.setter
    def weight_cache_bytes(self, value: int) -> None:
        self.cache.budget = int(value)

    @property
    def cache_stats(self) -> dict:
        return self.cache.stats

    @property
    def keeps_whole(self) -> bool:
        """Whether the cache holds every quantized weight whole (a small model); else as codes, in a budget."""
        return self.cache.keeps_whole

    # ----------------------------------------------------------- weights
    def float_weight(self, name: str) -> torch.Tensor:
        return self.state[name].float_w

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
        hit = self.cache.whole(RoundKey(name, spec), lambda: self._quantize_rtn(name, spec, store=False))
        return hit if hit is not None else self._quantize_rtn(name, spec, store=store)

    def _quantize_rtn(self, name: str, spec: WeightSpec, *, store: bool = True,
                      need_tensor: bool = True) -> WeightQuant:
        """Round ``name``'s weight to nearest under ``spec``; ``store``: into the cache (its tensor as
        the budget allows); ``need_tensor=False``: the result may hold its tensor as codes only."""
        st = self.state[name]
        w, axis, key = st.float_w, st.info.channel_axis, RoundKey(name, spec)
        self.cache.count(name)
        if not self.cache.keeps_whole and w.device.type == "cpu" and blockable(spec, w.numel()):
            # a big layer of a model whose quantized weights are kept as codes: straight to codes,
            # a block of channels at a time (no full-size float32 temporaries)
            got = quantize_codes(w, spec, axis, name)
            if got is not None:
                codes, qp, sqnr, mse, clipped = got
                entry = WeightQuant(None, qp, sqnr, mse, clipped)
                if store:
                    self.cache.store_codes(key, entry, codes)
                return replace(entry, tensor=codes.decode(), packed=None) if need_tensor else entry
        t = quantize_weight_tensor(w.float().cpu(), spec, axis, name)
        res = WeightQuant(t.tensor.to(w), t.qparams, t.sqnr_db, t.mse, t.clipped_fraction)  # the float dtype / device
        return self.cache.store(key, res, axis) if store else res

    # ------------------------------------------------------------- apply
    @torch.no_grad()
    def apply(self, specs: dict[str, LayerSpec], *, progress: Progress = null_progress,
              cancel: Callable[[], bool] = lambda: False) -> list[str]:
        """Make ``qmodel`` simulate ``specs``; returns the layers that changed.

        Layers are set in inventory order, each layer's input quantizer before its
        weight, so a per-layer algorithm sees its input as the new config computes it;
        pending algorithms report ``progress`` and stop on ``cancel``. When ``specs`` and
        the specs applied last are both a :class:`SpecMap`, only the layers that differ
        between them (:meth:`SpecMap.changed_from`, computed once per pair) and the
        algorithm layers after the first of them are looked at."""
        prev, self.applied_specs = self.applied_specs, None  # a failed apply leaves no known state
        changed = []
        self._context = self.context_tokens(specs)
        pending = set(self.pending_algorithms(specs))
        done = 0
        for l in self._to_visit(specs, prev):
            st = self.state[l.name]
            spec = specs.get(l.name)
            aspec = spec.activation if spec is not None else ActSpec(bits=None)
            if l.has_activation_input and not self.weights_only and st.act_spec != aspec:
                if aspec.bits is not None and not self.calibrated:
                    raise QuantvizError("activation quantization needs calibration data (calibrate first)")
                st.act_qp, st.act_spec = self.activation_qparams(l.name, aspec), aspec
                if st.in_scale is not None:
                    st.in_scale, st.applied_key = None, UNSET  # re-apply the scaled input quantizer below
                changed.append(l.name)
            wspec = spec.weight if spec is not None and spec.weight.bits is not None else None
            wkey = wspec if wspec is None or wspec.algorithm == "none" else self.algorithm_key(l.name, wspec)
            if st.applied_key != wkey:
                st.forget_weight()  # while its new weight is computed the layer is float
                self.cache.pin(l.name, None)
                wq = None
                if wspec is not None:
                    if l.name in pending:
                        sub = scaled(progress, done / len(pending), (done + 1) / len(pending))
                        wq = self.quantize_weight(l.name, wspec, progress=lambda d, t, m="", _n=l.name: sub(d, t, f"{m} {_n}"),
                                                  cancel=cancel)
                        done += 1
                    elif wspec.algorithm == "none" and not self.weights_only:  # computed, not materialised
                        wq = self.cache.get(RoundKey(l.name, wspec)) or self._quantize_rtn(l.name, wspec, need_tensor=False)
                    else:
                        wq = self.quantize_weight(l.name, wspec)  # errors (bad ranges) surface here
                if self.weights_only:  # TorchScript: quantized in place on qmodel
                    st.qmod.weight.data.copy_((st.float_w if wq is None else wq.tensor).to(st.qmod.weight.device))
                st.set_weight(wspec, wkey, wq.bias.to(st.float_w) if wq is not None and wq.bias is not None else None)
                self.cache.pin(l.name, wspec)
                scale = None if wq is None else wq.input_scale
                if scale is not None or st.in_scale is not None:
                    st.in_scale = scale
                    if scale is None:
                        st.act_qp = self.activation_qparams(l.name, aspec)
                    else:
                        st.act_qp = (compute_qparams(wq.input_range[0], wq.input_range[1], aspec.bits,
                                                     aspec.symmetric, aspec.grid) if aspec.bits is not None else None)
                if l.name not in changed:
                    changed.append(l.name)
        self.applied_specs = specs if isinstance(specs, SpecMap) else None
        return changed

    def _to_visit(self, specs, prev) -> list[LayerInfo]:
        """The layers :meth:`apply` must look at: all, unless both maps are SpecMaps (then the ones
        that differ, and the algorithm layers after the first of them: their context changed)."""
        if not isinstance(specs, SpecMap) or not isinstance(prev, SpecMap):
            return self.layers
        diff = set(specs.changed_from(prev))
        out, after = [], False
        for l in self.layers:
            sp = specs.get(l.name)
            after = after or l.name in diff
            if l.name in diff or (after and sp is not None and sp.weight.bits is not None
                                  and sp.weight.algorithm != "none"):
                out.append(l)
        return out

    def layer_forward(self, name: str, args: tuple, kwargs: dict | None = None):
        """Layer ``name``'s own forward with its applied quantized weight (no hooks, input as given)."""
        st = self.state[name]
        mod = st.fmod
        if st.wspec is None or self.weights_only:
            return mod.forward(*args, **(kwargs or {}))
        saved, saved_b = mod._parameters.get("weight"), mod._parameters.get("bias")
        mod._parameters["weight"] = self.applied_weight(name)
        if st.bias is not None:
            mod._parameters["bias"] = st.bias
        try:
            return mod.forward(*args, **(kwargs or {}))
        finally:
            mod._parameters["weight"] = saved
            if st.bias is not None:
                mod._parameters["bias"] = saved_b

    def applied_bias(self, name: str) -> torch.Tensor | None:
        """The bias layer ``name`` runs with in ``qmodel`` (bias correction may create one)."""
        st = self.state[name]
        if st.bias is not None:
            return st.bias
        b = getattr(st.qmod, "bias", None)
        return b.detach() if isinstance(b, torch.Tensor) else None

    def applied_weight(self, name: str) -> torch.Tensor:
        """The weight layer ``name`` runs with in ``qmodel`` under the applied config."""
        st = self.state[name]
        if self.weights_only:
            return st.qmod.weight.detach()
        return st.float_w if st.wspec is None else self.quantize_weight(name, st.wspec).tensor

    @torch.no_grad()
    def load_state(self, state: dict) -> None:
        """Hold new float weights (a state of the folded model, e.g. after training), loaded in
        place into the one model; every quantized weight is recomputed on the next apply."""
        self._restore_weights()
        self.float_model.load_state_dict(state)
        if self.weights_only:
            self.qmodel.load_state_dict(state, strict=False)
        self.cache.clear()  # plain and algorithm results alike depend on the weights
        for st in self.state.values():
            st.forget_weight()
            self.cache.pin(st.name, None)
        self._calib_gen += 1
        self.applied_specs = None

    def weight_histogram(self, name: str, bins: int = 256):
        return histogram_of(self.state[name].float_w.float().cpu(), bins=bins)

    def close(self) -> None:
        self._restore_weights()
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        _upcast.uninstall(self._upcast)
        self._upcast = []
