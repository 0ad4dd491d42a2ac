"""A simulation's input quantizers: calibration statistics and activation qparams.

:class:`ActivationSupport` is a mixin of :class:`~.fakequant.QuantSim`:
:meth:`~ActivationSupport.calibrate` streams the input of every quantizable
layer (float model) into a histogram (``sim.act_obs``), from which an
activation spec's qparams and SQNR are computed.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..errors import ModelError
from ..model.data import Dataset
from ..numerics.format_quant import activation_axis, activation_error, activation_params
from ..numerics.observers import HistogramObserver
from ..numerics.quantize import histogram_error
from ..numerics.qparams import QParams, compute_qparams
from ..numerics.ranges import RangeError, activation_range
from ..numerics.spec import ActSpec
from ..progress import Progress, null_progress
from .forward import forward_batches


class ActivationSupport:
    """Mixin of QuantSim (uses its ``layers``, ``state``, ``float_model``, ``readout``, ``device``)."""

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
        from ..model.lmmetrics import MaskTracker

        track = MaskTracker(self.float_model, self.readout)  # padded tokens stay out of the statistics
        for name, obs in observers.items():
            def hook(mod, args, _obs=obs):
                if args and isinstance(args[0], torch.Tensor):
                    _obs.update(track.real(args[0]))
            hooks.append(self.state[name].fmod.register_forward_pre_hook(hook))
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
        for st in self.state.values():
            st.act_spec = None  # force qparams to be recomputed
        self._set_calibration(data, batch_size)

    def use_calibration(self, other, data: Dataset, batch_size: int = 64) -> None:
        """Take a copy of ``other``'s activation statistics instead of calibrating: ``other`` simulates the
        same float model and was calibrated on ``data`` (the caller checks that; see
        ``Session.prepare_like``)."""
        import copy

        self.act_obs = copy.deepcopy(other.act_obs)
        for st in self.state.values():
            st.act_spec = None  # force qparams to be recomputed
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


__all__ = ["ActivationSupport"]
