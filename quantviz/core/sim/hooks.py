"""How a simulated model runs quantized: :class:`QuantizedMode`, a mixin of :class:`~.fakequant.QuantSim`.

Inside ``sim.quantized()`` (per thread) a forward pre-hook on each quantizable
layer swaps in its fake-quantized weight (and the bias its algorithm computed)
and fake-quantizes its input; the post-hook puts the float weight back as soon
as the layer ran, so at most one layer's quantized tensor is held beyond the
cache. The fast path is the applied config's whole tensor (``LayerState.run``,
valid while the cache's generation is the same); otherwise the tensor is
decoded from its codes or quantized again. An ``nn.Embedding`` held as codes
looks up only the rows it needs.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..numerics.spec import WeightSpec
from .forward import fake_quantize_tensor, quantize_input
from .layerstate import LayerState
from .weightcache import RoundKey


class QuantizedMode:
    """Mixin of QuantSim (uses its ``state``, ``cache``, ``quantize_weight`` and ``_tls`` / ``_touched``)."""

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
        while self._touched:
            st = self._touched.pop()
            st.gather = None
            if st.swapped is not None:
                mod, st.swapped = st.swapped, None
                st.restore(mod)

    def _make_hook(self, st: LayerState):
        # a closure, not a bound method: a deep copy of the model (torchao export) shares it,
        # and it does nothing there (``mod`` is not this simulation's module)
        def hook(mod, args):
            if not self.active or mod is not st.fmod:
                return None
            wspec = st.wspec
            if wspec is not None and self._gather_codes(st, mod, wspec, args):
                self._touched.append(st)  # an embedding whose codes are looked up row by row after its call
            elif wspec is not None and mod._parameters.get("weight") is st.float_param:
                rw = st.run  # fast path: the applied config's whole tensor
                fast = rw is not None and rw[0] is wspec and rw[2] == self.cache.generation
                mod._parameters["weight"] = rw[1] if fast else self._weight_for_run(st, wspec)
                if st.bias is not None:
                    mod._parameters["bias"] = st.bias
                st.swapped = mod
                self._touched.append(st)
            qp, s = st.act_qp, st.in_scale
            if s is not None and qp is not None and args and isinstance(args[0], torch.Tensor):
                # SmoothQuant / AWQ: the input quantizer sees x / s; the weight is Q(W s) / s
                x = args[0]
                sv = s.to(x.device).view(*([1] * (x.dim() - 1)), -1)
                return (fake_quantize_tensor(x / sv, qp) * sv,) + tuple(args[1:])
            if qp is None or not args or not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
                return None
            return (quantize_input(args[0], qp),) + tuple(args[1:])

        return hook

    def _make_post_hook(self, st: LayerState):
        def post(mod, args, out):  # the quantized weight of a layer that ran is not held any longer
            if st.swapped is mod:
                st.swapped = None
                st.restore(mod)
            codes, st.gather = st.gather, None
            if codes is not None and isinstance(out, torch.Tensor):
                return codes.take(args[0]).to(out.device)  # the quantized table's rows, as the lookup gives them
            return None

        return post

    def _gather_codes(self, st: LayerState, mod: nn.Module, spec: WeightSpec, args) -> bool:
        """An ``nn.Embedding`` whose quantized table is held as codes looks up only the rows it needs
        (the post-hook replaces its output with those rows, decoded): a language model's token table
        is never decoded whole."""
        if (type(mod) is not nn.Embedding or mod.max_norm is not None or spec.algorithm != "none"
                or not args or not isinstance(args[0], torch.Tensor) or args[0].is_floating_point()):
            return False
        entry = self.cache.get(RoundKey(st.name, spec))
        if entry is None or entry.tensor is not None or entry.packed is None or entry.packed.axis not in (None, 0):
            return False
        st.gather = entry.packed
        return True

    def _weight_for_run(self, st: LayerState, spec: WeightSpec) -> torch.Tensor:
        if spec.algorithm != "none":  # algorithm results stay whole in the cache
            wq = self.quantize_weight(st.name, spec, compute=False)  # never start an algorithm mid-forward
            return st.float_param if wq is None else wq.tensor.to(st.float_w)
        key = RoundKey(st.name, spec)
        entry = self.cache.get(key)
        t = self.quantize_weight(st.name, spec).tensor  # decoded or recomputed when not held whole
        entry = self.cache.get(key) or entry
        if entry is not None and entry.held_bytes == 0:
            self.cache.hold(key, entry, t, st.info.channel_axis)  # the applied config's tensors come first
        if entry is not None and entry.tensor is t:  # held whole: the next calls take it directly
            st.run = (spec, t, self.cache.generation)
        return t


__all__ = ["QuantizedMode"]
