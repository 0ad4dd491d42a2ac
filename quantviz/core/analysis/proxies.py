"""Sensitivity proxies that need no end-to-end evaluation per cell.

* ``local``: SQNR of each layer's own output on calibration data when only it
  is quantized (float input), exact or through a random sign sketch.
* ``hessian``: HAWQ's proxy, mean Hessian trace (Hutchinson) times the
  squared weight perturbation.

Both return the same JSON-able result layout as :func:`.sensitivity.sweep`.
Padded tokens (the inputs' ``attention_mask``, or a recipe's ``MASK``) enter
neither: the local sums count the real tokens of each layer's output, the
Hessian's loss the real tokens of the model's output.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..model.cpucompute import half_call
from ..model.data import batch_len, call_model, output_tensor, to_device
from ..errors import Cancelled, ModelError
from ..numerics.sqnr import sqnr_db
from ..sim.fakequant import forward_batches
from ..model.lmmetrics import MaskTracker
from ..progress import Progress, null_progress
from ..model.readout import real_rows
from .sensitivity import DEFAULT_BITS, Parts, result_of, act_setting, tie_groups, weight_setting

# ------------------------------------------------------------ local
def _noise_call(mod: nn.Module):
    """``f(x, w)`` without bias for layers whose output is linear in the weight."""
    if isinstance(mod, nn.Linear):  # bf16 / fp16 on the CPU: computed in float32 (:mod:`.cpucompute`)
        return lambda x, w: half_call(F.linear, x, w)
    if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return lambda x, w: half_call(lambda a, b: mod._conv_forward(a, b, None), x, w)
    if isinstance(mod, nn.Embedding):
        return lambda x, w: F.embedding(x, w, mod.padding_idx, mod.max_norm, mod.norm_type, mod.scale_grad_by_freq, mod.sparse)

    def generic(x, w):
        from torch.func import functional_call

        params = {"weight": w}
        if getattr(mod, "bias", None) is not None:
            params["bias"] = torch.zeros_like(mod.bias)
        return functional_call(mod, params, (x,))

    return generic


def _norm2(t: torch.Tensor) -> torch.Tensor:
    """The 2-norm of ``t`` (0-d) in one fused float32 reduction: no squared copy, no sync."""
    return torch.linalg.vector_norm(t)


def _row_norm2(t: torch.Tensor, axis: int) -> torch.Tensor:
    """The 2-norm of every slice of ``t`` along ``axis`` (a vector), one fused reduction."""
    return torch.linalg.vector_norm(t, dim=[d for d in range(t.dim()) if d != axis % t.dim()])


def _sum_sq(norms: list[torch.Tensor]) -> torch.Tensor:
    """Sum of squares over batches of per-batch norms, accumulated in float64 (0-d or a vector)."""
    if not norms:
        return torch.zeros((), dtype=torch.float64)
    return torch.stack(norms).double().square().sum(0)


def _stackable(mod: nn.Module) -> bool:
    """Outputs along dim 1 (or last for Linear) map one-to-one to weight rows."""
    if isinstance(mod, nn.Linear):
        return True
    return isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and mod.groups == 1


@dataclass
class _LocalPlan:
    """One layer's part of the local proxy: its weight noise per bit-width and the sums it collects."""

    mod: nn.Module
    call: Callable  # f(x, w) without bias
    deltas: list  # Q(W) - W per bit-width (or its sketch)
    stacked: torch.Tensor | None  # all deltas along the output axis, for one call per batch
    axis: int  # output-channel axis of the layer's output
    act_qparams: list  # input qparams per activation bit-width (None where not quantized)
    signal: list = field(default_factory=list)  # per batch: ||y||
    noise: list = field(default_factory=list)  # per batch: ||f(x, dW)|| per bit-width (rows when stacked)
    act_noise: list = field(default_factory=list)  # per activation bit-width, per batch
    busy: bool = False  # inside observe: a layer run through its own module (generic layers) is not a new call

    def hook(self, mod, args, out, real: Callable) -> None:
        if not self.busy:
            self.busy = True
            try:
                self.observe(args[0], output_tensor(out), real)
            finally:
                self.busy = False

    def observe(self, x: torch.Tensor, y: torch.Tensor, real: Callable = lambda t: t) -> None:
        """One call of the layer; ``real`` keeps the real tokens of an output (padding adds nothing)."""
        # per batch only norms are kept (float32, one reduction each); squares and sums come at the end
        self.signal.append(_norm2(real(y)))
        if self.stacked is not None:  # every bit-width's noise in one call and one reduction
            self.noise.append(_row_norm2(real(self.call(x, self.stacked)), self.axis))
        else:
            self.noise.append(torch.stack([_norm2(real(self.call(x, d))) for d in self.deltas]))
        for k, qp in enumerate(self.act_qparams):
            if qp is not None:
                xq = torch.fake_quantize_per_tensor_affine(x, float(qp.scale[0]), int(qp.zero_point[0]), qp.qmin, qp.qmax)
                self.act_noise[k].append(_norm2(real(self.mod.forward(xq) - y)))  # forward: not through this hook again

    def totals(self, nbits: int) -> tuple[float, list[float], list[float]]:
        """(signal energy, noise energy per bit-width, noise energy per activation bit-width)."""
        signal = float(_sum_sq(self.signal))
        if not self.noise:
            return signal, [0.0] * nbits, [float(_sum_sq(v)) for v in self.act_noise]
        noise = _sum_sq(self.noise)
        if self.stacked is not None:  # rows of every bit-width's sketch, in order
            noise = noise.view(nbits, -1).sum(1)
        return signal, noise.tolist(), [float(_sum_sq(v)) for v in self.act_noise]


def _sketch_rows(p: Parts, layer, sketch: bool, sketch_ratio: int) -> tuple[int, int] | None:
    """(C, m) of the layer's random sketch, or None when it takes none."""
    mod = p.sim.float_model.get_submodule(layer.name)
    cout = p.sim.float_weight(layer.name).shape[0]
    m = max(4, cout // sketch_ratio) if sketch else cout
    return (cout, m) if _stackable(mod) and m < cout else None


_BLOCK_ELEMS = 1 << 22  # weights larger than this are sketched a block of output channels at a time


def _deltas(p: Parts, layer, w: torch.Tensor, bits) -> list:
    out = []
    for b in bits:
        wq = p.sim.quantize_weight(layer.name, weight_setting(p.base_specs[layer.name], b).weight,
                                   store=p.sim.keeps_whole)
        out.append((wq.tensor - w).to(w.device))
    return out


def _blocked_sketch(p: Parts, layer, w: torch.Tensor, bits, rows: tuple[int, int], gen) -> list:
    """The sketch ``R^T (Q(W) - W)`` per bit-width of a large weight, summed over blocks of output
    channels in float32: the same random signs as the one-product path (drawn as int8), without a
    float copy of R or of any full-size difference (a language model's output layer has tens of
    thousands of channels: R alone would be gigabytes)."""
    cout, m = rows
    signs = torch.randint(0, 2, (cout, m), generator=gen, dtype=torch.int8)
    per = max(1, w.numel() // cout)
    step = max(1, _BLOCK_ELEMS // max(per, m))
    sk = torch.zeros((len(bits), m, per), dtype=torch.float32, device=w.device)
    wf = w.reshape(cout, per)
    for k, b in enumerate(bits):
        # used once: a big model's cache is left to the configs the user checks
        wq = p.sim.quantize_weight(layer.name, weight_setting(p.base_specs[layer.name], b).weight,
                                   store=p.sim.keeps_whole).tensor
        wqf = wq.reshape(cout, per)
        for a in range(0, cout, step):
            e = min(cout, a + step)
            r = ((signs[a:e].float() * 2 - 1) / math.sqrt(m)).to(w.device)
            d = wqf[a:e].float() - wf[a:e].float()
            sk[k].addmm_(r.t(), d)
        del wq, wqf
    return [t.view((m,) + tuple(w.shape[1:])).to(w.dtype) for t in sk.unbind(0)]


def _plan_layer(p: Parts, layer, bits, act_bits, sketch: bool, sketch_ratio: int, gen) -> _LocalPlan:
    sim = p.sim
    mod = sim.float_model.get_submodule(layer.name)
    w = sim.float_weight(layer.name)
    stack = _stackable(mod)
    rows = _sketch_rows(p, layer, sketch, sketch_ratio)
    # large or bf16 / fp16 weights: sketched in float32 blocks (CPUs without bf16 matrix units
    # multiply bf16 many times slower than float32)
    blocked = rows is not None and (w.numel() > _BLOCK_ELEMS or w.dtype != torch.float32)
    deltas = _blocked_sketch(p, layer, w, bits, rows, gen) if blocked else _deltas(p, layer, w, bits)
    if rows is not None and not blocked:
        cout, m = rows
        r = (torch.randint(0, 2, (cout, m), generator=gen).float() * 2 - 1) / math.sqrt(m)
        r = r.to(w.device, w.dtype)
        sk = torch.matmul(r.t(), torch.stack(deltas).flatten(2))  # (bits, m, rest): one product for all bits
        deltas = list(sk.view((len(deltas), m) + tuple(w.shape[1:])).unbind(0))
    aqs = [sim.activation_qparams(layer.name, act_setting(p.base_specs[layer.name], a).activation)
           if layer.has_activation_input else None for a in act_bits]
    stacked = torch.cat(deltas, 0) if stack else None
    if stacked is not None:
        deltas = []  # held once, as the stack (a language model's sketches are hundreds of MB)
    return _LocalPlan(mod, _noise_call(mod), deltas, stacked,
                      -1 if isinstance(mod, nn.Linear) else 1, aqs, act_noise=[[] for _ in act_bits])


def local_totals(parts: Parts, names, *, bits, act_bits=(), sketch: bool = True, sketch_ratio: int = 16,
                 seed: int = 0, progress: Progress = null_progress,
                 cancel: Callable[[], bool] = lambda: False) -> dict:
    """The local proxy's sums for the layers ``names`` only (one calibration pass):
    ``{name: (signal, [noise per bit-width], [noise per activation bit-width])}``.

    The random sketch of each layer is the same whichever layers are asked for (the
    generator is advanced past the others), so parts computed apart add up to the whole."""
    p = parts
    want = set(names)
    gen = torch.Generator().manual_seed(seed)
    plans = {}
    for l in p.sim.layers:
        if l.name in want:
            plans[l.name] = _plan_layer(p, l, bits, act_bits, sketch, sketch_ratio, gen)
        else:
            rows = _sketch_rows(p, l, sketch, sketch_ratio)
            if rows is not None:
                torch.randint(0, 2, rows, generator=gen)  # keep the next layers' sketches as in a full run
    track = MaskTracker(p.sim.float_model, p.sim.readout)  # padded tokens stay out of the sums
    hooks = [plan.mod.register_forward_hook(lambda mod, args, out, _p=plan: _p.hook(mod, args, out, track.real))
             for plan in plans.values()]
    try:
        forward_batches(p.sim.float_model, p.calib, device=p.device, batch_size=p.batch_size, what="local SQNR",
                        progress=progress, cancel=cancel)
    finally:
        track.remove()
        for h in hooks:
            h.remove()
    return {n: plan.totals(len(bits)) for n, plan in plans.items()}


def _chunks(items: list, n: int) -> list[list]:
    n = max(1, min(n, len(items)))
    k, r = divmod(len(items), n)
    out, i = [], 0
    for j in range(n):
        step = k + (1 if j < r else 0)
        out.append(items[i:i + step])
        i += step
    return [c for c in out if c]


def _db(sig: float, noise: float) -> float:
    return sqnr_db(sig, noise, cap=True)


def local(parts: Parts, *, bits=DEFAULT_BITS, act_bits=(), sketch: bool = True, sketch_ratio: int = 16, seed: int = 0,
          progress: Progress = null_progress, cancel: Callable[[], bool] = lambda: False, executor=None) -> dict:
    """Each layer's own output SQNR on calibration data, only that layer quantized.

    With ``sketch`` (the default) the output noise of a layer with C output channels is
    measured through a fixed random ±1 projection onto max(4, C / ``sketch_ratio``) rows,
    every bit-width's rows in one call: an unbiased estimate of the noise energy at a
    fraction of a second forward pass. On a random-weight ResNet-18 it is within 1.2 dB
    of the exact figure on average (4.7 dB at worst); ``sketch=False`` is exact.
    """
    p = parts
    sim = p.sim
    t0 = time.perf_counter()
    groups = tie_groups(sim, p.ties)
    names = [l.name for l in sim.layers]
    opts = dict(bits=tuple(bits), act_bits=tuple(act_bits), sketch=sketch, sketch_ratio=sketch_ratio, seed=seed)
    if executor is None:
        totals = local_totals(p, names, progress=progress, cancel=cancel, **opts)
    else:  # layers split over the workers; each runs the calibration pass for its share
        chunks = _chunks(names, 2 * executor.size)
        totals, done = {}, 0
        for _, part in executor.run([("local_totals", (c, opts)) for c in chunks], cancel=cancel):
            totals.update(part)
            done += 1
            progress(done, len(chunks), "local SQNR (Ray)")
    has_aq = {l.name: l.has_activation_input for l in sim.layers}
    cells = {}
    for g in groups:  # tied layers share one number: the noise over the group's outputs
        sig = sum(totals[n][0] for n in g)
        w = {str(b): {"metrics": {"sqnr_db": _db(sig, sum(totals[n][1][k] for n in g))}} for k, b in enumerate(bits)}
        a = {}
        for k, b in enumerate(act_bits):
            if any(has_aq[n] and sim.activation_qparams(n, act_setting(p.base_specs[n], b).activation) is not None
                   for n in g):
                a[str(b)] = {"metrics": {"sqnr_db": _db(sig, sum(totals[n][2][k] for n in g))}}
        for n in g:
            cells[n] = {"w": w, "a": a}
    res = result_of(p, "local", bits, act_bits, groups, cells, time.perf_counter() - t0)
    res["sketch"] = bool(sketch)
    res["sketch_ratio"] = int(sketch_ratio) if sketch else None
    return res


# ---------------------------------------------------------- hessian
def _hessian_weights(sim):
    mods = [sim.float_model.get_submodule(l.name) for l in sim.layers]
    ws, seen = [], {}
    for m in mods:  # shared weights appear once
        if id(m.weight) not in seen:
            seen[id(m.weight)] = len(ws)
            ws.append(m.weight)
    return ws, [seen[id(m.weight)] for m in mods]


def _math_attention():
    """Scaled dot-product attention through its plain (math) kernel, which has second derivatives;
    the fused CPU / GPU kernels that torch picks by default have none."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)


def hessian_traces(parts: Parts, batch_ids=None, *, iters: int = 2, max_samples: int = 128, seed: int = 0,
                   progress: Progress = null_progress, cancel: Callable[[], bool] = lambda: False):
    """Hutchinson trace sums per distinct weight over the calibration batches ``batch_ids``
    (None: all): ``(traces, use_ce)``. The random probes of each batch are the same
    whichever batches are asked for, so sums computed apart add up to the whole."""
    p = parts
    data = p.calib.subset(max_samples)
    model = p.sim.float_model
    ws, _ = _hessian_weights(p.sim)
    nbatches = data.num_batches(p.batch_size)
    mine = set(range(nbatches)) if batch_ids is None else set(batch_ids)
    gen = torch.Generator().manual_seed(seed)
    traces = [0.0] * len(ws)
    total = len(mine) * iters
    done = 0
    use_ce = None
    readout = p.sim.readout
    for w in ws:
        w.requires_grad_(True)
    try:
        for bi, (x, y) in enumerate(data.batches(p.batch_size)):
            if bi not in mine and use_ce is not None:
                for _ in range(iters):  # advance the probes past this batch
                    for w in ws:
                        torch.randint(0, 2, w.shape, generator=gen)
                continue
            x = to_device(x, p.device)
            mask = readout.mask_of(x)  # the loss reads the real tokens only
            with torch.no_grad():
                fout = readout.pick(call_model(model, x), batch_len(x)).detach()
            if use_ce is None:
                use_ce = (y is not None and not y.is_floating_point() and fout.dim() >= 2 and fout.shape[-1] > 1
                          and tuple(y.shape) == tuple(fout.shape[:-1]))
            if bi not in mine:
                for _ in range(iters):
                    for w in ws:
                        torch.randint(0, 2, w.shape, generator=gen)
                continue
            for _ in range(iters):
                if cancel():
                    raise Cancelled("sensitivity cancelled")
                with torch.enable_grad(), _math_attention():  # fused attention kernels have no double backward
                    out = readout.pick(call_model(model, x))
                    if use_ce:
                        yr = y.to(out.device)
                        if mask is not None and tuple(yr.shape[:2]) == tuple(mask.shape):
                            yr = real_rows(yr.unsqueeze(-1), mask).squeeze(-1)
                        o = real_rows(out, mask)
                        loss = F.cross_entropy(o.reshape(-1, o.shape[-1]).float(), yr.reshape(-1))
                    else:
                        loss = F.mse_loss(real_rows(out, mask).float(), real_rows(fout, mask).float())
                    # a layer the read output does not depend on (BERT's pooler under last_hidden_state)
                    # has no gradient: its trace is 0, it cannot change what is measured
                    grads = torch.autograd.grad(loss, ws, create_graph=True, allow_unused=True)
                    vs = [(torch.randint(0, 2, w.shape, generator=gen).to(w) * 2 - 1) for w in ws]
                    used = [(g, v, w) for g, v, w in zip(grads, vs, ws) if g is not None and g.requires_grad]
                    gv = sum((g * v).sum() for g, v, _ in used) if used else None
                    hvs = torch.autograd.grad(gv, ws, allow_unused=True) if gv is not None else [None] * len(ws)
                for k, (hv, v) in enumerate(zip(hvs, vs)):
                    if hv is not None:
                        traces[k] += float((hv * v).sum())
                done += 1
                progress(done, total, "Hessian trace")
    except RuntimeError as exc:
        raise ModelError(f"hessian: the model does not support second derivatives ({str(exc).splitlines()[0]})") from exc
    finally:
        for w in ws:
            w.requires_grad_(False)
            w.grad = None
    return traces, use_ce


def hessian(parts: Parts, *, bits=DEFAULT_BITS, iters: int = 2, max_samples: int = 128, seed: int = 0,
            progress: Progress = null_progress, cancel: Callable[[], bool] = lambda: False, executor=None) -> dict:
    """HAWQ proxy: mean Hessian trace (Hutchinson) x squared weight perturbation.

    With ``executor`` the calibration batches are split over the workers (every
    weight's trace needs the whole backward pass, so batches, not layers, are the
    unit of work that adds up exactly)."""
    p = parts
    sim = p.sim
    t0 = time.perf_counter()
    groups = tie_groups(sim, p.ties)
    data = p.calib.subset(max_samples)
    ws, index = _hessian_weights(sim)
    opts = dict(iters=iters, max_samples=max_samples, seed=seed)
    if executor is None:
        traces, use_ce = hessian_traces(p, None, progress=progress, cancel=cancel, **opts)
    else:
        chunks = _chunks(list(range(data.num_batches(p.batch_size))), executor.size)
        traces, use_ce, done = [0.0] * len(ws), None, 0
        for _, (part, ce) in executor.run([("hessian_traces", (c, opts)) for c in chunks], cancel=cancel):
            traces = [a + b for a, b in zip(traces, part)]
            use_ce = ce
            done += 1
            progress(done, len(chunks), "Hessian trace (Ray)")
    nb = max(data.num_batches(p.batch_size) * iters, 1)
    cells = {}
    for g in groups:
        w_res = {}
        tr_mean = 0.0
        for b in bits:
            score = 0.0
            for n in g:
                k = index[sim.layers.index(sim.by_name[n])]
                t = traces[k] / nb / ws[k].numel()
                tr_mean = t
                wq = sim.quantize_weight(n, weight_setting(p.base_specs[n], b).weight, store=sim.keeps_whole)
                score += t * float(((wq.tensor.to(ws[k]) - sim.float_weight(n).to(ws[k])) ** 2).sum())
            w_res[str(b)] = {"metrics": {"hessian_score": score}}
        for n in g:
            cells[n] = {"w": w_res, "a": {}, "trace": tr_mean}
    res = result_of(p, "hessian", bits, (), groups, cells, time.perf_counter() - t0)
    for entry in res["layers"]:
        entry["trace_mean"] = cells[entry["name"]]["trace"]
    res["loss"] = "cross_entropy" if use_ce else "mse_to_float"
    return res



__all__ = ["local", "hessian"]
