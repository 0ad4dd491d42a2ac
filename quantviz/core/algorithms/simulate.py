"""How :class:`~quantviz.core.sim.fakequant.QuantSim` runs the per-layer algorithms.

A layer's algorithm sees the layer's input as the *simulated* model computes
it (every layer before it in the inventory already quantized, with its own
algorithm, and the layer's own input quantizer applied) and reconstructs the
*float* layer's output (asymmetric reconstruction, as AIMET's AdaRound and
the reference GPTQ do). Its result therefore depends on

* the layer and its weight settings,
* the settings of the layers before it (a chained hash, ``context``),
* the calibration data (a generation counter bumped by every calibration),

and is cached under exactly that key (an ``AlgorithmKey``) in the simulation's
weight cache (:class:`~quantviz.core.sim.weightcache.WeightCache`), so a
re-check after an edit recomputes only the algorithm layers at or after the
first edited layer, and undo finds every previous result again.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch

from ..errors import QuantvizError
from ..progress import Progress, null_progress, scaled
from ..numerics.spec import LayerSpec, WeightSpec
from ..numerics.sqnr import sqnr_db


class AlgorithmSupport:
    """Mixin of QuantSim: calibration data for algorithms, context keys, running one layer."""

    def _init_algorithms(self) -> None:
        self._calib_data = None
        self._calib_batch = 64
        self._calib_gen = 0
        self._context: dict[str, int] = {}

    def _set_calibration(self, data, batch_size: int) -> None:
        self._calib_data = data
        self._calib_batch = batch_size
        self._calib_gen += 1
        self.cache.drop_algorithms()
        self.applied_specs = None  # algorithm contexts changed: the next apply looks at every layer

    def context_tokens(self, specs: dict[str, LayerSpec]) -> dict[str, int]:
        """Per layer: a hash of the calibration and every setting its algorithm's input depends on."""
        out = {}
        h = hash(("calib", self._calib_gen))
        for l in self.layers:
            spec = specs.get(l.name)
            act = spec.activation if spec is not None else None
            out[l.name] = hash((h, act))
            h = hash((h, l.name, spec))
        return out

    def algorithm_applies(self, name: str, algorithm: str = "gptq") -> str | None:
        """Why ``algorithm`` cannot run on layer ``name`` (None when it can), before any calibration."""
        from . import applies

        fmod = self.state[name].fmod
        why = applies(fmod)
        if why is None and algorithm in ("smoothquant", "awq") and not isinstance(fmod, torch.nn.Linear):
            why = f"{type(fmod).__name__} layers (Linear only)"
        return why

    def algorithm_key(self, name: str, spec: WeightSpec):
        """The cache key of ``name``'s algorithm result under ``spec`` after the layers as last applied."""
        return self.cache.algorithm_key(name, spec, self._context.get(name))

    def pending_algorithms(self, specs: dict[str, LayerSpec]) -> list[str]:
        """Layers whose algorithm :meth:`apply` of ``specs`` would have to compute."""
        ctx = self.context_tokens(specs)
        return [n for n, sp in specs.items() if sp is not None and sp.weight.bits is not None
                and sp.weight.algorithm != "none" and self.cache.algorithm_key(n, sp.weight, ctx.get(n)) not in self.cache]

    def algorithm_pending(self, name: str, spec: WeightSpec) -> bool:
        """True when ``spec`` asks for an algorithm whose result is not computed yet."""
        return spec.bits is not None and spec.algorithm != "none" and self.algorithm_key(name, spec) not in self.cache

    def input_qparams(self, name: str, spec: LayerSpec):
        """The qparams of the layer's input quantizer as simulated: of ``x / s`` when the
        layer's algorithm migrated a scale into its weight (min-max of the scaled input
        on calibration data), else of ``x`` (:meth:`activation_qparams`)."""
        from ..numerics.qparams import compute_qparams

        aspec = spec.activation
        if aspec.bits is None:
            return None
        if spec.weight.bits is not None and spec.weight.algorithm in ("smoothquant", "awq"):
            wq = self.quantize_weight(name, spec.weight)
            if wq is not None and wq.input_range is not None:
                return compute_qparams(wq.input_range[0], wq.input_range[1], aspec.bits, aspec.symmetric, aspec.grid)
        return self.activation_qparams(name, aspec)

    def _algorithm_weight(self, name: str, spec: WeightSpec, *, compute: bool = True,
                          progress: Progress = null_progress, cancel: Callable[[], bool] = lambda: False):
        from . import applies, capture_input_stats, run_algorithm

        key = self.algorithm_key(name, spec)
        hit = self.cache.get(key)
        if hit is not None or not compute:
            return hit
        base = self.quantize_weight(name, spec.without_algorithm())
        algo = spec.algorithm
        st = self.state[name]  # the simulation's record of the layer (core.sim.layerstate)
        fmod = st.fmod
        why = applies(fmod)
        if why is None and algo in ("smoothquant", "awq") and not isinstance(fmod, torch.nn.Linear):
            why = f"{type(fmod).__name__} layers (Linear only)"
        stats = None
        if why is None:
            if self._calib_data is None:
                raise QuantvizError(f"layer {name}: {algo} needs calibration data (calibrate first)")
            stats = capture_input_stats(self.float_model, fmod, self.qmodel, st.qmod, self._calib_data,
                                        device=self.device, batch_size=self._calib_batch,
                                        progress=scaled(progress, 0.0, 0.2), cancel=cancel, readout=self.readout)
            if stats is None:
                why = "a layer that does not run on the calibration data"
        if why is not None:
            res = replace(base, algorithm_info={"algorithm": algo, "skipped": f"{algo} does not apply to {why}"})
            return self.cache.store_algorithm(key, res)
        w = st.float_w.float().cpu()
        shape = w.shape
        w2 = w.reshape(shape[0], -1)
        r = run_algorithm(w2, spec, stats, progress=scaled(progress, 0.2, 1.0), cancel=cancel)
        wq = r.weight.reshape(shape)
        d = (wq - w).flatten()
        noise = float(torch.dot(d, d))
        snr = sqnr_db(float(torch.dot(w.flatten(), w.flatten())), noise)
        src = w2 * r.input_scale.view(1, -1) if r.input_scale is not None else w2
        x = torch.round(src * r.grid.inv) + r.grid.zero
        clipped = float(((x < r.qparams.qmin) | (x > r.qparams.qmax)).float().mean())
        bias = None
        if r.bias_delta is not None:
            fb = getattr(fmod, "bias", None)
            bias = (fb.detach().float().cpu() if fb is not None else torch.zeros(shape[0])) + r.bias_delta
            r.info["bias_created"] = fb is None
        res = replace(base, tensor=wq.to(st.float_w.dtype), qparams=r.qparams, sqnr_db=snr,
                      mse=noise / max(w.numel(), 1), clipped_fraction=clipped,
                      codes=r.codes.reshape(shape).to(torch.int32), bias=bias, input_scale=r.input_scale,
                      input_range=r.input_range, algorithm_info=r.info)
        return self.cache.store_algorithm(key, res)

