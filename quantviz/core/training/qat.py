"""Quantization-aware training: fine-tune a model with its quantizers in the loop.

:func:`train_qat` takes what it needs (the BatchNorm-folded float model of a
:class:`~.fakequant.QuantSim`, the layers, their resolved specs and the
calibrated activation qparams, training and held-out data) and returns a
:class:`QATResult`: the trained float state (what the simulation should hold),
learned ranges and the curves. It never touches a session.

* Fake quantization with straight-through gradients (:mod:`.qat_quant`):
  weights on every granularity, layer inputs per tensor, exactly the grids
  the simulation uses; LSQ learned scales as an option, else frozen ranges.
* BatchNorm is trained folded, as the simulation folds it; where a model
  keeps BatchNorm (``fold_bn`` off) training runs with frozen statistics and
  they are re-estimated under quantization afterwards.
* Loss: the recipe's ``loss(output, batch)``, cross-entropy with labels, or
  distillation from the float model (KL on logits, MSE otherwise).
* Seeded: the batch order of epoch ``e`` is a permutation drawn from
  ``seed`` and ``e``, so a run resumed from a checkpoint (written atomically
  every ``checkpoint_every`` steps) repeats the uninterrupted run exactly.
* ``progress`` / ``cancel`` as every long job; ``pause()`` True holds the
  run between steps; ``on_step(info)`` reports every step (loss; every
  ``log_every`` steps the per-layer quantizer statistics; the held-out
  metric every ``eval_every`` steps).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..model.data import Dataset, call_model, to_device
from ..errors import Cancelled, QuantvizError
from ..sim.evaluate import FloatReference, evaluate_quantized, is_classifier_output, primary_metric
from ..model.layers import LayerInfo
from ..progress import Progress, null_progress
from .qat_quant import ActQuantizer, WeightQuantizer
from ..numerics.qparams import QParams
from ..numerics.spec import LayerSpec

LOSSES = ("auto", "ce", "kl", "mse")
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class QATError(QuantvizError, ValueError):
    pass


@dataclass
class QATOptions:
    steps: int = 300
    lr: float = 1e-3
    batch_size: int = 32
    lsq: bool = False
    loss: str = "auto"
    seed: int = 0
    temperature: float = 1.0
    weight_decay: float = 0.0
    eval_every: int = 0  # 0: about 10 evaluations over the run
    log_every: int = 0  # 0: about 100 layer snapshots over the run
    checkpoint_every: int = 50
    bn_batches: int = 20  # batches to re-estimate kept BatchNorm statistics

    def check(self) -> None:
        if self.steps < 1:
            raise QATError(f"steps must be at least 1, got {self.steps}")
        if not (self.lr > 0):
            raise QATError(f"learning rate must be positive, got {self.lr}")
        if self.batch_size < 1:
            raise QATError(f"batch size must be at least 1, got {self.batch_size}")
        if self.loss not in LOSSES:
            raise QATError(f"unknown loss {self.loss!r} (allowed: {', '.join(LOSSES)})")

    def fingerprint(self, extra: str = "") -> str:
        d = asdict(self)
        for k in ("eval_every", "log_every", "checkpoint_every"):
            d.pop(k)
        return hashlib.sha256((json.dumps(d, sort_keys=True) + extra).encode()).hexdigest()[:16]


@dataclass
class QATInputs:
    model: nn.Module  # the BatchNorm-folded float model (not modified)
    layers: list[LayerInfo]
    specs: dict[str, LayerSpec]
    act_qparams: dict[str, QParams]  # calibrated input qparams of layers that quantize activations
    train: Dataset
    eval: Dataset | None = None
    reference: FloatReference | None = None
    evaluate_fn: Callable | None = None
    loss_fn: Callable | None = None  # recipe loss(model_output, batch) -> scalar tensor
    device: str = "cpu"


@dataclass
class QATResult:
    state: dict  # the trained float state of the folded model (CPU tensors)
    act_ranges: dict[str, tuple[float, float]]  # learned input ranges (LSQ only)
    weight_ranges: dict[str, tuple[float, float]]  # learned per-tensor weight ranges (LSQ only)
    curves: dict
    steps: int
    seconds: float
    loss: str
    options: dict = field(default_factory=dict)


# ------------------------------------------------------------------ model
def build_qat_model(inp: QATInputs, lsq: bool) -> tuple[nn.Module, dict, dict]:
    """A trainable copy of ``inp.model`` with weight parametrizations and input quantizers."""
    model = copy.deepcopy(inp.model).to(inp.device)
    for p in model.parameters():
        p.requires_grad_(True)
    wq: dict[str, WeightQuantizer] = {}
    aq: dict[str, ActQuantizer] = {}
    for l in inp.layers:
        spec = inp.specs.get(l.name)
        if spec is None:
            continue
        mod = model.get_submodule(l.name)
        if spec.weight.bits is not None:
            q = WeightQuantizer(mod.weight.detach().float().cpu(), spec.weight, l.channel_axis, lsq=lsq).to(inp.device)
            parametrize.register_parametrization(mod, "weight", q, unsafe=True)
            wq[l.name] = q
        qp = inp.act_qparams.get(l.name)
        if l.has_activation_input and spec.activation.bits is not None and qp is not None:
            a = ActQuantizer(qp, spec.activation, lsq=lsq).to(inp.device)
            mod.add_module("_qat_input", a)
            mod.register_forward_pre_hook(_input_hook)
            aq[l.name] = a
    return model, wq, aq


def _input_hook(mod, args):
    if not args or not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
        return None
    return (mod._qat_input(args[0]),) + tuple(args[1:])


def _raw_weight(model: nn.Module, name: str) -> torch.Tensor:
    return model.get_submodule(name).parametrizations.weight.original


def trained_state(model: nn.Module, wq: dict[str, WeightQuantizer]) -> dict:
    """The float state of the trained model in the original model's keys (weights baked)."""
    raw = {n: q.baked(_raw_weight(model, n)) for n, q in wq.items()}
    out = {}
    for k, v in model.state_dict().items():
        if "._qat_input." in k or ".parametrizations.weight.0." in k:
            continue
        if k.endswith(".parametrizations.weight.original"):
            name = k[: -len(".parametrizations.weight.original")]
            out[name + ".weight"] = raw[name].detach().cpu().clone()
        else:
            out[k] = v.detach().cpu().clone()
    return out


# ------------------------------------------------------------------- loss
def choose_loss(opt: QATOptions, inp: QATInputs, out: torch.Tensor, y) -> str:
    if opt.loss != "auto":
        if opt.loss == "ce" and (y is None or not is_classifier_output(out)):
            raise QATError("loss ce needs labels in the training data and a classifier output")
        return opt.loss
    if inp.loss_fn is not None:
        return "recipe"
    if y is not None and is_classifier_output(out) and y.dtype in (torch.int64, torch.int32) and y.dim() == 1:
        return "ce"
    return "kl" if is_classifier_output(out) else "mse"


def loss_value(kind: str, inp: QATInputs, out: torch.Tensor, teacher: torch.Tensor | None, x, y, T: float,
               mask: torch.Tensor | None = None):
    """The training loss; ``mask`` (batch, tokens): distillation counts the real tokens only
    (the same value as without ``mask`` when nothing is padded)."""
    from ..model.lmmetrics import mask_padding
    from ..model.readout import real_rows

    if mask is not None and teacher is not None and (out.dim() < 3 or tuple(out.shape[:2]) != tuple(mask.shape)):
        mask = None
    if kind == "recipe":
        v = inp.loss_fn(out, (x, y))
        if not isinstance(v, torch.Tensor) or v.dim() != 0:
            raise QATError(f"the recipe's loss() must return a scalar tensor, got {type(v).__name__}")
        return v
    if kind == "ce":
        return nn.functional.cross_entropy(out, y.to(out.device).long())
    if kind == "kl":
        if mask is not None:  # padded positions: both logits zero, a KL of 0
            m = mask.to(out.device)
            out, teacher = mask_padding(out, m), mask_padding(teacher, m)
        return nn.functional.kl_div(nn.functional.log_softmax(out / T, dim=-1),
                                    nn.functional.log_softmax(teacher / T, dim=-1), log_target=True,
                                    reduction="batchmean") * (T * T)
    if mask is not None:
        out, teacher = real_rows(out, mask), real_rows(teacher, mask)
    return nn.functional.mse_loss(out, teacher)


# -------------------------------------------------------------- checkpoint
def save_checkpoint(path: Path, payload: dict) -> None:
    """Write atomically: a killed run leaves the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path | None, fingerprint: str) -> dict | None:
    if path is None or not Path(path).is_file():
        return None
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a damaged checkpoint is ignored, the run starts over
        return None
    return ck if isinstance(ck, dict) and ck.get("fingerprint") == fingerprint else None


# ------------------------------------------------------------------ train
def _batch(data: Dataset, idx: torch.Tensor):
    x = data._take(idx)
    return x, (data.y[idx] if data.y is not None else None)


def _order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def _heldout(model, inp: QATInputs, cancel) -> dict:
    if inp.eval is None or inp.reference is None:
        return {}
    model.eval()
    with torch.no_grad():
        return evaluate_quantized(model, inp.eval, inp.reference, device=inp.device, evaluate_fn=inp.evaluate_fn,
                                  cancel=cancel)


def _layer_snapshot(model, wq, aq) -> dict:
    snap = {}
    for n, q in wq.items():
        snap[n] = {"w": q.stats(_raw_weight(model, n).detach())}
    for n, a in aq.items():
        snap.setdefault(n, {})["a"] = a.stats()
    return snap


def new_curves(metric: str | None, layers: list[str]) -> dict:
    return {"step": [], "loss": [], "eval_step": [], "metric": [], "metric_name": metric,
            "log_step": [], "layers": {n: {} for n in layers}}


def append_snapshot(curves: dict, step: int, snap: dict) -> None:
    curves["log_step"].append(step)
    for n, kinds in snap.items():
        lay = curves["layers"].setdefault(n, {})
        for kind, st in kinds.items():
            for k, v in st.items():
                lay.setdefault(f"{kind}_{k}", []).append(v)


@torch.enable_grad()  # whatever the caller's grad mode (a worker thread, an app in no_grad)
def train_qat(inp: QATInputs, opt: QATOptions, *, checkpoint: str | Path | None = None,
              on_step: Callable[[dict], None] | None = None, watch: Callable[[], set] | None = None,
              progress: Progress = null_progress, cancel: Callable[[], bool] = lambda: False,
              pause: Callable[[], bool] = lambda: False) -> QATResult:
    """Fine-tune ``inp.model`` under fake quantization (see the module doc).

    ``watch()`` names layers whose current weight goes into the logged step
    info (``info["weights"]``), for a live histogram."""
    opt.check()
    if len(inp.train) == 0:
        raise QATError("training data is empty")
    t0 = time.perf_counter()
    torch.manual_seed(opt.seed)
    model, wq, aq = build_qat_model(inp, opt.lsq)
    teacher = inp.model.to(inp.device).eval()
    from ..model.readout import DEFAULT

    readout = inp.reference.readout if inp.reference is not None else DEFAULT  # the output and tokens metrics read
    model.eval()  # dropout off, BatchNorm statistics frozen (re-estimated below where kept)
    params = [p for n, p in model.named_parameters() if not n.endswith(".scale")]
    scales = [p for n, p in model.named_parameters() if n.endswith(".scale")]
    groups = [{"params": params, "weight_decay": opt.weight_decay}]
    if scales:
        groups.append({"params": scales, "weight_decay": 0.0})
    optim = torch.optim.Adam(groups, lr=opt.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=opt.steps)
    n = len(inp.train)
    per_epoch = max(1, (n + opt.batch_size - 1) // opt.batch_size)
    eval_every = opt.eval_every or max(1, opt.steps // 10)
    log_every = opt.log_every or max(5, opt.steps // 100)
    metric = primary_metric(inp.reference.metrics) if inp.reference is not None else None
    curves = new_curves(metric, list(wq) + [a for a in aq if a not in wq])
    fp = opt.fingerprint(json.dumps(sorted((k, str(v)) for k, v in inp.specs.items())) + str(n))
    start, kind = 0, None
    ck = load_checkpoint(Path(checkpoint) if checkpoint else None, fp)
    if ck is not None:
        model.load_state_dict(ck["model"])
        optim.load_state_dict(ck["optim"])
        sched.load_state_dict(ck["sched"])
        start, curves, kind = int(ck["step"]), ck["curves"], ck["loss"]
    else:
        m0 = _heldout(model, inp, cancel)
        if metric in m0:
            curves["eval_step"].append(0)
            curves["metric"].append(m0[metric])
        append_snapshot(curves, 0, _layer_snapshot(model, wq, aq))
    for step in range(start, opt.steps):
        while pause():
            if cancel():
                raise Cancelled("training cancelled")
            time.sleep(0.05)
        if cancel():
            raise Cancelled("training cancelled")
        epoch, pos = divmod(step, per_epoch)
        idx = _order(n, opt.seed, epoch)[pos * opt.batch_size:(pos + 1) * opt.batch_size]
        x, y = _batch(inp.train, idx)
        xd = to_device(x, inp.device)
        logged = (step + 1) % log_every == 0 or step + 1 == opt.steps
        for a in aq.values():
            a.record = logged
        out = readout.pick(call_model(model, xd)).float()
        if kind is None:
            kind = choose_loss(opt, inp, out, y)
        tout = None
        if kind in ("kl", "mse"):
            with torch.no_grad():
                tout = readout.pick(call_model(teacher, xd)).float()
        loss = loss_value(kind, inp, out, tout, x, y, opt.temperature, readout.mask_of(x))
        if not torch.isfinite(loss):
            raise QATError(f"the training loss became {float(loss)} at step {step + 1}; lower the learning rate")
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        sched.step()
        done = step + 1
        curves["step"].append(done)
        curves["loss"].append(float(loss.detach()))
        info = {"step": done, "steps": opt.steps, "loss": curves["loss"][-1], "loss_kind": kind}
        if logged:
            snap = _layer_snapshot(model, wq, aq)
            append_snapshot(curves, done, snap)
            info["layers"] = snap
            names = watch() if watch is not None else ()
            info["weights"] = {w: _raw_weight(model, w).detach().cpu().clone() for w in names if w in wq}
        if done % eval_every == 0 or done == opt.steps:
            m = _heldout(model, inp, cancel)
            if metric in m:
                curves["eval_step"].append(done)
                curves["metric"].append(m[metric])
                info["metric"] = {metric: m[metric]}
        if checkpoint and opt.checkpoint_every and done % opt.checkpoint_every == 0 and done < opt.steps:
            save_checkpoint(Path(checkpoint), {"fingerprint": fp, "step": done, "model": model.state_dict(),
                                               "optim": optim.state_dict(), "sched": sched.state_dict(),
                                               "curves": curves, "loss": kind})
        if on_step is not None:
            on_step(info)
        progress(done, opt.steps, f"QAT step {done}/{opt.steps}  loss {curves['loss'][-1]:.4f}")
    _reestimate_bn(model, inp, opt, per_epoch)
    state = trained_state(model, wq)
    act_ranges = {n: a.learned_range() for n, a in aq.items() if a.lsq}
    w_ranges = {n: r for n, q in wq.items() if (r := q.learned_range()) is not None}
    return QATResult(state, act_ranges, w_ranges, curves, opt.steps, time.perf_counter() - t0, kind or opt.loss,
                     asdict(opt))


@torch.no_grad()
def _reestimate_bn(model: nn.Module, inp: QATInputs, opt: QATOptions, per_epoch: int) -> None:
    """Re-estimate the statistics of BatchNorm layers the model keeps, under quantization."""
    bns = [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats]
    if not bns:
        return
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
        m.train()
    for b in range(min(opt.bn_batches, per_epoch)):
        idx = _order(len(inp.train), opt.seed, 10_000 + b)[: opt.batch_size]
        call_model(model, to_device(_batch(inp.train, idx)[0], inp.device))
    for m in bns:
        m.eval()


__all__ = ["QATOptions", "QATInputs", "QATResult", "QATError", "train_qat", "LOSSES", "save_checkpoint",
           "load_checkpoint"]
