"""Where the error enters: quantization error traced layer by layer.

For every quantizable layer, in the order the model executes them, on a data
set:

* **accumulated** SQNR: the layer's output in the fully quantized model
  against the same output in the float model (error made here *and* before);
* **local** SQNR: the layer's output when only its own quantization applies
  (quantized weight, and its input quantizer) to the float model's input, so
  accumulated vs local separates propagated error from error made here;
* the same two for the layer's **input** activation where it is quantized
  (local: ``Q(x_float)`` vs ``x_float``; accumulated: what the quantized
  layer consumes vs ``x_float``), and the **clipped fraction** of the float
  input outside the quantizer's grid.

SQNR is ``10 log10(sum f^2 / sum (f - q)^2)`` over all elements the layer
produced on the data; ``inf`` when the two are identical (layers before the
first quantized one). For text models whose data carries an
``attention_mask`` (or whose recipe names a ``MASK``, see :mod:`.readout`),
tensors shaped ``(batch, tokens, ...)`` count real tokens only.

How: the data is cut into chunks; for each chunk one float pass (forward
hooks keep that chunk's layer outputs and compute the local terms at once,
from the float input just captured) and one quantized pass (hooks compare
with the kept outputs and drop them). Only sums of squares survive a chunk,
so memory is one chunk's layer outputs; the chunk size adapts to
``budget_bytes``. Cancellation is checked before every chunk.

With ``previous`` (a trace of the same data) and ``changed`` (layers whose
settings differ since), only the changed layers' local terms and the
accumulated terms from the first changed layer on are recomputed; the rest is
carried over (the two passes still run).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields, replace
from typing import Callable, Iterable

import torch

from ..model.data import Dataset, call_model, output_tensor, to_device
from ..numerics.describe import describe_layer
from ..errors import Cancelled, ModelError, QuantvizError
from ..numerics.sqnr import sqnr_db
from ..sim.fakequant import QuantSim, input_clip_range, quantize_input
from ..progress import Progress, null_progress
from ..numerics.spec import ActSpec, LayerSpec

DEFAULT_BUDGET_BYTES = 256 << 20


def _db(signal: float, noise: float) -> float:
    """The capped SQNR, except that a layer with no noise at all stays ``inf``: the trace draws
    and names "float (exact)" apart from a finite value."""
    return math.inf if noise <= 0 else sqnr_db(signal, noise, cap=True)


def _opt_db(signal: float | None, noise: float | None) -> float | None:
    return None if signal is None or noise is None else _db(signal, noise)


def _json_db(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else round(v, 4)


@dataclass
class LayerTrace:
    """Sums behind one layer's numbers (energies summed over the data)."""

    name: str
    type: str
    weight_bits: int | None
    act_bits: int | None
    calls: int = 0  # how often the layer ran over the data (chunks x calls per forward)
    signal: float = 0.0  # sum of float output^2
    acc_noise: float = 0.0  # sum of (quantized-model output - float output)^2
    local_noise: float = 0.0  # sum of (own-quantization output - float output)^2
    in_signal: float | None = None  # None where the input is not quantized
    in_acc_noise: float | None = None
    in_local_noise: float | None = None
    clipped: float = 0.0  # float-input elements outside the input grid
    in_count: float = 0.0  # float-input elements seen
    setting: str = ""  # the layer's settings in words (quantviz.core.numerics.describe)
    feeds_output: bool | None = None  # whether the output the metrics read depends on this layer (None: unknown)

    @property
    def quantized(self) -> bool:
        return self.weight_bits is not None or self.act_bits is not None

    @property
    def accumulated_sqnr_db(self) -> float:
        return _db(self.signal, self.acc_noise)

    @property
    def local_sqnr_db(self) -> float:
        return _db(self.signal, self.local_noise)

    @property
    def input_accumulated_sqnr_db(self) -> float | None:
        return _opt_db(self.in_signal, self.in_acc_noise)

    @property
    def input_local_sqnr_db(self) -> float | None:
        return _opt_db(self.in_signal, self.in_local_noise)

    @property
    def input_clipped_fraction(self) -> float | None:
        if self.in_signal is None or not self.in_count:
            return None
        return self.clipped / self.in_count

    def to_dict(self) -> dict:
        """JSON form: dB values (``None`` = identical to float, or not applicable) and the raw sums."""
        return {"name": self.name, "type": self.type, "weight_bits": self.weight_bits, "act_bits": self.act_bits,
                "setting": self.setting,
                "accumulated_sqnr_db": _json_db(self.accumulated_sqnr_db),
                "local_sqnr_db": _json_db(self.local_sqnr_db),
                "input_accumulated_sqnr_db": _json_db(self.input_accumulated_sqnr_db),
                "input_local_sqnr_db": _json_db(self.input_local_sqnr_db),
                "input_clipped_fraction": self.input_clipped_fraction,
                "calls": self.calls, "feeds_output": self.feeds_output,
                "sums": {f.name: getattr(self, f.name) for f in fields(self)
                         if f.name not in ("name", "type", "weight_bits", "act_bits", "calls", "setting",
                                           "feeds_output")}}

    @classmethod
    def from_dict(cls, d: dict) -> "LayerTrace":
        s = dict(d.get("sums") or {})
        return cls(str(d["name"]), str(d.get("type", "")), d.get("weight_bits"), d.get("act_bits"),
                   int(d.get("calls", 0)), setting=str(d.get("setting", "")), feeds_output=d.get("feeds_output"),
                   **{k: (None if v is None else float(v)) for k, v in s.items()
                      if k in {f.name for f in fields(cls)} and k not in ("setting", "feeds_output")})


@dataclass
class TraceResult:
    layers: list[LayerTrace]  # in execution order (first call)
    samples: int
    tokens: int | None = None  # real tokens counted (data with an attention mask)
    not_executed: list[str] = field(default_factory=list)  # quantizable layers the data never reached
    seconds: float = 0.0
    data: str = ""
    label: str = ""  # the config's name, for legends
    recomputed: dict = field(default_factory=dict)  # {"local": n, "accumulated": n} layers recomputed
    config: dict = field(default_factory=dict)  # the config traced, as the caller describes it (JSON-able)
    # the model's output that the metrics read, summed exactly as the re-check's output SQNR
    # (per sample, padding tokens zeroed, float64): the trace's last row
    output_signal: float | None = None
    output_noise: float | None = None

    @property
    def output_sqnr_db(self) -> float | None:
        """The model output's SQNR, as the re-check's ``sqnr_db`` (capped; ``inf`` when identical)."""
        return _opt_db(self.output_signal, self.output_noise)

    @property
    def not_feeding(self) -> list[str]:
        """Layers the read output does not depend on (a BERT's pooler when the metrics read the hidden states)."""
        return [l.name for l in self.layers if l.feeds_output is False]

    def layer(self, name: str) -> LayerTrace:
        for l in self.layers:
            if l.name == name:
                return l
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [l.name for l in self.layers]

    @property
    def entry(self) -> int | None:
        """Index of the first layer whose output differs from float (where the error enters)."""
        return next((i for i, l in enumerate(self.layers) if l.acc_noise > 0), None)

    def biggest_drop(self) -> tuple[int, float] | None:
        """``(index, dB)``: the largest fall of the accumulated SQNR from one layer to the next,
        among layers after the entry (both values finite); None when it never falls."""
        best = None
        acc = [l.accumulated_sqnr_db for l in self.layers]
        for i in range(1, len(acc)):
            if math.isfinite(acc[i - 1]) and math.isfinite(acc[i]):
                d = acc[i - 1] - acc[i]
                if d > 0 and (best is None or d > best[1]):
                    best = (i, d)
        return best

    def to_dict(self) -> dict:
        drop = self.biggest_drop()
        entry = self.entry
        return {"layers": [l.to_dict() for l in self.layers], "samples": self.samples, "tokens": self.tokens,
                "data": self.data, "label": self.label,
                "entry": self.layers[entry].name if entry is not None else None,
                "biggest_drop": ({"layer": self.layers[drop[0]].name, "after": self.layers[drop[0] - 1].name,
                                  "drop_db": round(drop[1], 4)} if drop else None),
                "not_executed": list(self.not_executed), "seconds": self.seconds,
                "recomputed": dict(self.recomputed), "config": self.config,
                "output": ({"sqnr_db": _json_db(self.output_sqnr_db), "signal": self.output_signal,
                            "noise": self.output_noise} if self.output_signal is not None else None),
                "not_feeding_output": self.not_feeding}

    @classmethod
    def from_dict(cls, d: dict) -> "TraceResult":
        out = d.get("output") or {}
        return cls([LayerTrace.from_dict(x) for x in d.get("layers", [])], int(d.get("samples", 0)),
                   d.get("tokens"), list(d.get("not_executed", [])), float(d.get("seconds", 0.0)),
                   str(d.get("data", "")), str(d.get("label", "")), dict(d.get("recomputed") or {}),
                   dict(d.get("config") or {}),
                   None if out.get("signal") is None else float(out["signal"]),
                   None if out.get("noise") is None else float(out["noise"]))


# ------------------------------------------------------------- helpers
def _mask_of(inputs, readout=None) -> torch.Tensor | None:
    """The ``(batch, tokens)`` real-token mask of a batch (the attention mask, or the recipe's
    ``MASK``), as float; None when there is none."""
    from ..model.readout import DEFAULT

    m = (readout or DEFAULT).mask_of(inputs)
    return None if m is None else m.float()


def _masked(t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``t`` with padding tokens zeroed when ``mask`` fits its first two axes."""
    if mask is not None and t.dim() >= 2 and tuple(t.shape[:2]) == tuple(mask.shape):
        return t * mask.view(tuple(mask.shape) + (1,) * (t.dim() - 2)).to(t.dtype)
    return t


def _sq(t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Sum of squares of ``t`` (0-d, one fused reduction, no sync); over real tokens when ``mask`` fits ``t``."""
    return torch.linalg.vector_norm(_masked(t, mask)).float().square()


def _count(t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Elements of ``t`` counted by ``_sq`` (real tokens only when ``mask`` fits)."""
    if mask is not None and t.dim() >= 2 and tuple(t.shape[:2]) == tuple(mask.shape):
        per = t[0, 0].numel() if t.dim() > 2 else 1
        return mask.sum() * per
    return torch.tensor(float(t.numel()))


def _first_tensor(out) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else output_tensor(out)


def _nbytes(t) -> int:
    return t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0


class _Layer:
    """Per-layer state while tracing: the numbers (``rec``), its settings and this chunk's float values."""

    def __init__(self, rec: LayerTrace, qmod, qp, wq: bool, local: bool, acc: bool):
        self.rec, self.qmod, self.qp, self.wq = rec, qmod, qp, wq
        self.local, self.acc = local, acc
        self.kept: list = []  # this chunk's (float output, float input or None), per call
        self.used = 0  # calls of this chunk consumed by the quantized pass
        self.sums: list[tuple[str, torch.Tensor]] = []  # pending 0-d tensors, summed once per chunk
        if qp is not None:
            self.lo, self.hi = input_clip_range(qp)


@torch.no_grad()
def trace(sim: QuantSim, specs: dict[str, LayerSpec], data: Dataset, *, batch_size: int = 64,
          budget_bytes: int = DEFAULT_BUDGET_BYTES, previous: TraceResult | None = None,
          changed: Iterable[str] | None = None, label: str = "", max_chunk: int | None = None,
          on_partial: Callable[[TraceResult], None] | None = None, progress: Progress = null_progress,
          cancel: Callable[[], bool] = lambda: False, float_model: torch.nn.Module | None = None) -> TraceResult:
    """Trace ``specs`` on ``data`` (see the module docstring); leaves ``specs`` applied to ``sim``.

    ``float_model``: the model the float pass runs (default ``sim.float_model``); after training, the
    untrained float model, so the errors are measured against what the re-check's metrics compare with.

    Chunks start at ``batch_size // 8`` samples and then grow up to ``max_chunk``
    (default ``4 * batch_size``) while one chunk's kept float values fit
    ``budget_bytes``. ``on_partial(result)`` receives the numbers so far after
    every chunk but the last."""
    t0 = time.perf_counter()
    if len(data) == 0:
        raise QuantvizError(f"{data.name}: no samples to trace")
    sim.apply(specs, cancel=cancel)  # per-layer algorithms run here when not cached
    device = sim.device
    reuse = previous is not None and changed is not None and previous.samples == len(data) \
        and previous.data == data.name
    changed = set(changed or ())
    if reuse:
        old = {l.name: l for l in previous.layers}
        pos = [i for i, l in enumerate(previous.layers) if l.name in changed]
        first = min(pos) if pos else len(previous.layers)
        acc_from = {l.name for l in previous.layers[first:]}
    states: dict[str, _Layer] = {}
    for info in sim.layers:
        spec = specs.get(info.name) or LayerSpec()
        wbits = spec.weight.bits
        qp = sim.activation_qparams(info.name, spec.activation) if info.has_activation_input else None
        rec = LayerTrace(info.name, info.type, wbits, qp.bits if qp is not None else None,
                         setting=describe_layer(spec if qp is not None else replace(spec, activation=ActSpec(bits=None)),
                                                "; "))
        local = acc = True
        if reuse and info.name in old:
            prev = old[info.name]
            local = info.name in changed
            acc = info.name in acc_from or info.name not in old
            if not local:
                rec.local_noise, rec.in_local_noise = prev.local_noise, prev.in_local_noise
                rec.clipped, rec.in_count = prev.clipped, prev.in_count
            if not acc:
                rec.acc_noise, rec.in_acc_noise = prev.acc_noise, prev.in_acc_noise
            if not (local or acc):
                rec.signal, rec.in_signal, rec.calls = prev.signal, prev.in_signal, prev.calls
        if qp is not None and rec.in_signal is None:
            rec.in_signal = 0.0
            rec.in_acc_noise = rec.in_acc_noise if rec.in_acc_noise is not None else 0.0
            rec.in_local_noise = rec.in_local_noise if rec.in_local_noise is not None else 0.0
        states[info.name] = _Layer(rec, sim.qmodel.get_submodule(info.name), qp, wbits is not None, local, acc)
    order: list[str] = []
    mask_box: list = [None]

    def float_hook(name):
        st = states[name]

        def hook(mod, args, kwargs, out):
            if sim.active:  # one model: this is the quantized pass (quant_hook's)
                return
            if name not in seen:
                seen.add(name)
                order.append(name)
            if not (st.local or st.acc):
                return
            x = args[0] if args and isinstance(args[0], torch.Tensor) else None
            y = _first_tensor(out)
            mask = mask_box[0]
            quant_in = st.qp is not None and x is not None and x.is_floating_point()
            st.rec.calls += 1
            st.sums.append(("signal", _sq(y, mask)))
            if quant_in:
                st.sums.append(("in_signal", _sq(x, mask)))
            if st.acc:  # copies: a later in-place op must not change what the quantized pass compares with
                st.kept.append((y.detach().clone(), x.detach().clone() if quant_in else None))
            if not st.local:
                return
            xq = quantize_input(x, st.qp) if quant_in else x
            if quant_in:
                st.sums.append(("in_local_noise", _sq(xq - x, mask)))
                outside = (x < st.lo) | (x > st.hi)
                st.sums.append(("clipped", _masked(outside.float(), mask).sum()))
                st.sums.append(("in_count", _count(x, mask)))
            if st.wq or quant_in:  # own quantization only: quantized weight, quantized float input, no hooks
                call = ((xq,) + tuple(args[1:])) if x is not None else tuple(args)  # keyword-only inputs as given
                yl = _first_tensor(sim.layer_forward(name, call, kwargs))
                st.sums.append(("local_noise", _sq(yl - y, mask)))

        return hook

    def quant_hook(name):
        st = states[name]

        def hook(mod, args, kwargs, out):
            if not st.acc or not sim.active:  # one model: only the quantized pass
                return
            if st.used >= len(st.kept):
                raise ModelError(f"layer {name} ran more often in the quantized model than in the float model")
            yf, xf = st.kept[st.used]
            st.kept[st.used] = None
            st.used += 1
            y = _first_tensor(out)
            mask = mask_box[0]
            if y.shape != yf.shape:
                raise ModelError(f"layer {name}: quantized output shape {tuple(y.shape)} differs from float {tuple(yf.shape)}")
            st.sums.append(("acc_noise", _sq(y - yf, mask)))
            if xf is not None and args and isinstance(args[0], torch.Tensor):
                st.sums.append(("in_acc_noise", _sq(args[0] - xf, mask)))  # the input after its quantizer

        return hook

    seen: set[str] = set()
    hooks = []
    fmodel = sim.float_model if float_model is None else float_model
    # before the trace's own hooks: this pass is not one of the chunks they count
    feeds = _feeding(fmodel, list(states), data, device, sim.readout) if len(states) else {}
    for nm, f in feeds.items():
        states[nm].rec.feeds_output = f
    for name in states:
        hooks.append(fmodel.get_submodule(name).register_forward_hook(float_hook(name), with_kwargs=True))
        hooks.append(states[name].qmod.register_forward_hook(quant_hook(name), with_kwargs=True))
    n = len(data)
    max_chunk = max(1, int(max_chunk or 4 * batch_size))
    chunk = max(1, min(max_chunk, batch_size // 8))
    start, tokens = 0, 0.0
    has_mask = False
    out_sums = [0.0, 0.0]  # the read output's sum f^2, sum (f - q)^2
    try:
        while start < n:
            if cancel():
                raise Cancelled("trace cancelled")
            stop = min(n, start + chunk)
            x = data._take(slice(start, stop))
            xd = to_device(x, device)
            mask_box[0] = _mask_of(xd, sim.readout)
            if mask_box[0] is not None:
                has_mask = True
                tokens += float(mask_box[0].sum())
            fo = _read(_run(fmodel, xd, data.name, "float"), sim.readout)
            kept = sum(_nbytes(a) + _nbytes(b) for st in states.values() for a, b in st.kept) + _nbytes(fo)
            qo = _read(_run(sim.qmodel, xd, data.name, "quantized"), sim.readout)
            _output_sums(fo, qo, mask_box[0], out_sums)
            del fo, qo
            _close_chunk(states)
            # the next chunk: as large as the budget for one chunk's kept float values allows
            chunk = max(1, min(max_chunk, int(budget_bytes * (stop - start) / kept))) if kept else max_chunk
            start = stop
            progress(start, n, "tracing")
            if on_partial is not None and start < n:
                on_partial(_result(states, order, seen, start, tokens if has_mask else None, t0, data, label,
                                   out_sums))
    finally:
        for h in hooks:
            h.remove()
        for st in states.values():
            st.kept, st.sums = [], []
        mask_box[0] = None
    res = _result(states, order, seen, n, tokens if has_mask else None, t0, data, label, out_sums)
    if not all(math.isfinite(v) for v in out_sums):
        raise ModelError(f"trace: NaN/Inf in the model's output on {data.name}")
    bad = [l.name for l in res.layers if not all(math.isfinite(v) for v in (l.signal, l.acc_noise, l.local_noise))]
    if bad:
        raise ModelError(f"trace: NaN/Inf in the outputs of layer {bad[0]} on {data.name}")
    return res


def _result(states, order, seen, samples, tokens, t0, data, label, out_sums) -> TraceResult:
    """The numbers so far (records are copied, so a partial result stays as it was)."""
    from copy import copy

    return TraceResult([copy(states[nm].rec) for nm in order], samples,
                       int(tokens) if tokens is not None else None, [nm for nm in states if nm not in seen],
                       time.perf_counter() - t0, data.name, label,
                       {"local": sum(1 for nm in order if states[nm].local),
                        "accumulated": sum(1 for nm in order if states[nm].acc)},
                       output_signal=out_sums[0], output_noise=out_sums[1])


def _read(out, readout) -> torch.Tensor:
    """The output the metrics read (the re-check's ``iterate_outputs``: the readout's pick, as float32)."""
    return readout.pick(out).detach().float()


def _output_sums(fo: torch.Tensor, qo: torch.Tensor, mask: torch.Tensor | None, acc: list) -> None:
    """Add sum f^2 and sum (f - q)^2 of one chunk's read outputs, as the re-check's
    :class:`~quantviz.core.sim.evaluate.MetricStream` sums them: padding zeroed where the
    mask lines up with the output's (batch, tokens) axes, in float64."""
    if fo.shape != qo.shape:
        raise ModelError(f"quantized output shape {tuple(qo.shape)} differs from float {tuple(fo.shape)}")
    if mask is not None and fo.dim() >= 3 and tuple(fo.shape[:2]) == tuple(mask.shape):
        m = mask.reshape(tuple(mask.shape) + (1,) * (fo.dim() - 2)).to(fo.dtype)
        fo, qo = fo * m, qo * m
    f, q = fo.double(), qo.double()
    d = f - q
    acc[0] += float((f * f).sum())
    acc[1] += float((d * d).sum())


def _feeding(model, names: list[str], data: Dataset, device, readout) -> dict[str, bool]:
    """Which layers the read output depends on: one float pass on the first sample with gradients,
    a zero added to every layer's output; a layer whose zero gets no gradient path (``None``) does
    not feed the output (a BERT's pooler when the metrics read ``last_hidden_state``). Empty when
    the model cannot be differentiated (then nothing is marked)."""
    zeros: dict[str, torch.Tensor] = {}

    def hook_of(name):
        def hook(mod, args, out):
            if not isinstance(out, torch.Tensor) or not out.is_floating_point():
                return None
            z = zeros.get(name)
            if z is None or z.dtype != out.dtype or z.device != out.device:
                z = zeros[name] = torch.zeros((), dtype=out.dtype, device=out.device, requires_grad=True)
            return out + z

        return hook

    hooks = []
    try:
        for nm in names:
            hooks.append(model.get_submodule(nm).register_forward_hook(hook_of(nm)))
        with torch.enable_grad():
            out = readout.pick(call_model(model, to_device(data._take(slice(0, 1)), device)))
            if not zeros:
                return {}
            if not out.requires_grad:
                return {nm: False for nm in zeros}
            grads = torch.autograd.grad(out.float().sum(), list(zeros.values()), allow_unused=True)
    except Exception:  # noqa: BLE001 - a model autograd cannot run through: nothing is marked
        return {}
    finally:
        for h in hooks:
            h.remove()
    return {nm: g is not None for nm, g in zip(zeros, grads)}


def _run(model, inputs, data_name: str, what: str):
    try:
        return call_model(model, inputs)
    except QuantvizError:
        raise
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ModelError(f"model raised {type(exc).__name__} during the {what} trace pass on {data_name}: {first}") from exc


def _close_chunk(states: dict[str, _Layer]) -> None:
    """Add this chunk's pending sums to the records (one sync for all layers)."""
    pend = [(st, k, v) for st in states.values() for k, v in st.sums]
    for st in states.values():
        if st.acc and st.used != len(st.kept):
            raise ModelError(f"layer {st.rec.name} ran {len(st.kept)} times in the float model "
                             f"but {st.used} times in the quantized model")
        st.kept, st.used, st.sums = [], 0, []
    if not pend:
        return
    vals = torch.stack([v.reshape(()).to("cpu", torch.float64) for _, _, v in pend]).tolist()
    for (st, k, _), v in zip(pend, vals):
        setattr(st.rec, k, (getattr(st.rec, k) or 0.0) + v)


__all__ = ["trace", "TraceResult", "LayerTrace", "sqnr_db", "DEFAULT_BUDGET_BYTES"]
