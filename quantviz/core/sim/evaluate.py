"""Float vs quantized evaluation with metrics that stream batch by batch.

Metric names (stable, used by the CLI's JSON, sensitivity and search):

* ``accuracy``: top-1 accuracy against labels (a fraction in [0, 1]), when
  the data has integer class labels;
* ``sqnr_db``: output SQNR of the quantized model against the float model,
  ``10 log10(sum f^2 / sum (f - q)^2)`` over all outputs, capped at
  ``SQNR_CAP_DB`` (identical outputs);
* ``cosine``: mean per-sample cosine similarity of the outputs;
* ``top1_agreement``: fraction of samples (tokens) whose argmax agrees with
  the float model's, for class / token logits (not hidden states);
* ``kl_div``: mean KL divergence of the quantized model's output distribution
  from the float one (per sample, or per token), for class / token logits;
* ``perplexity``: ``exp`` of the mean next-token cross-entropy over the
  evaluation tokens, for causal language models (float and quantized);
* anything a recipe's ``evaluate(model, data)`` returns.

With an attention mask in the inputs, every metric is computed over the
tokens the mask marks as real (``quantviz.core.model.lmmetrics``); a recipe can name
the output and the mask the metrics read (:mod:`quantviz.core.model.readout`). While streaming, :meth:`MetricStream.snapshot` gives each metric an
uncertainty band: a 95 % Wilson interval for proportions, a normal interval
(1.96 standard errors) for the others.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..model.data import ChunkedData, Dataset, chunk_bounds
from ..errors import ModelError, QuantvizError
from .fakequant import iterate_outputs
from ..model.lmmetrics import Moments, batch_aux, kl_per_position, mask_padding, next_token_ce, perplexity, slice_aux, token_mask
from ..progress import Progress, null_progress
from ..model.readout import DEFAULT, Readout
from ..numerics.sqnr import SQNR_CAP_DB, sqnr_db

Z95 = 1.959963984540054
LOWER_IS_BETTER_SUFFIXES = ("loss", "perplexity", "error", "mse", "kl_div")


def higher_is_better(metric: str) -> bool:
    return not metric.lower().endswith(LOWER_IS_BETTER_SUFFIXES)


def wilson(k: float, n: float, z: float = Z95) -> tuple[float, float]:
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # the exact interval always holds p; clamp so rounding (p = 0 or 1) cannot exclude it
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def _db(ratio: float) -> float:
    """A signal / noise ratio in the capped dB every output metric uses."""
    return sqnr_db(ratio, 1.0, cap=True)


def row_blocks(rows: int, row_numel: int, max_elems: int = 1 << 20):
    """Slices of ``rows`` samples, each block at most ``max_elems`` elements (at least one row)."""
    step = max(1, max_elems // max(row_numel, 1))
    for a in range(0, rows, step):
        yield slice(a, min(a + step, rows))


def all_finite(t: torch.Tensor) -> bool:
    """No NaN / Inf in ``t``: NaN propagates through min / max and an Inf shows in them, so two
    reductions decide it (``torch.isfinite`` makes an ``abs`` copy of the whole tensor)."""
    if t.numel() == 0 or not t.is_floating_point():
        return True
    lo, hi = torch.aminmax(t)
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


def _row_sums(fr: torch.Tensor, qr: torch.Tensor, max_elems: int = 1 << 19) -> torch.Tensor:
    """Per row: sum f^2, sum (f - q)^2, sum f q, sum q^2 in float64, over blocks of at most
    ``max_elems`` elements (rows split into column blocks when long): bounded temporaries."""
    b, n = fr.shape
    out = torch.zeros(4, b, dtype=torch.float64)
    if n <= max_elems:
        blocks = [(sl, slice(0, n)) for sl in row_blocks(b, n, max_elems)]
    else:
        blocks = [(slice(r, r + 1), slice(c, min(n, c + max_elems))) for r in range(b) for c in range(0, n, max_elems)]
    for rs, cs in blocks:
        f, q = fr[rs, cs].double(), qr[rs, cs].double()
        d = f - q
        out[:, rs] += torch.stack([(f * f).sum(dim=1), (d * d).sum(dim=1), (f * q).sum(dim=1), (q * q).sum(dim=1)])
        del f, q, d
    return out


def is_classifier_output(out: torch.Tensor) -> bool:
    return out.dim() >= 2 and out.shape[-1] > 1


class MetricStream:
    """Accumulates metrics of quantized outputs against float outputs / labels."""

    def __init__(self, total_samples: int | None = None, task: str | None = None, readout: Readout = DEFAULT):
        self.total = total_samples
        self.readout = readout
        self.task = task  # see quantviz.core.model.lmmetrics; None: decided by the first output
        self.kl = Moments()
        self.ce_q = Moments()
        self.ce_f = Moments()
        self.n = 0
        self.s = self.nn = self.s2 = self.n2 = self.sn = 0.0  # per-sample signal / noise moments
        self.cos_sum = self.cos_sq = 0.0
        self.agree = 0.0
        self.agree_n = 0.0
        self.correct = 0.0
        self.labelled = 0
        self.float_correct = 0.0

    def update(self, fout: torch.Tensor, qout: torch.Tensor, labels: torch.Tensor | None,
               aux: dict | None = None) -> None:
        """One batch; ``aux`` holds its attention mask / token ids (``lmmetrics.batch_aux``)."""
        if fout.shape != qout.shape:
            raise ModelError(f"quantized output shape {tuple(qout.shape)} differs from float {tuple(fout.shape)}")
        if not all_finite(qout):
            raise ModelError("quantized model produced NaN/Inf outputs")
        if self.task is None:
            self.task = "logits" if is_classifier_output(fout) else "hidden"
        self.readout.check_lines_up(aux.get("mask") if aux else None, fout)
        mask = token_mask(fout, aux)
        same = qout is fout
        self._lm_update(fout, qout, aux, mask, same)
        b = fout.shape[0] if fout.dim() else 1
        if mask is not None:  # padding contributes nothing to the sums below
            fout_m = mask_padding(fout, mask)
            qout_m = fout_m if same else mask_padding(qout, mask)
        else:
            fout_m, qout_m = fout, qout
        sig, noise, dot, qq = _row_sums(fout_m.reshape(b, -1), qout_m.reshape(b, -1))
        fn, qn = sig.sqrt(), qq.sqrt()
        cos = dot / (fn * qn).clamp_min(1e-30)
        cos = torch.where((fn == 0) & (qn == 0), torch.ones_like(cos), cos)
        # every per-sample statistic summed at once: one conversion to Python per batch
        sums = torch.stack([sig, noise, sig**2, noise**2, sig * noise, cos, cos**2]).sum(dim=1).tolist()
        self.s += sums[0]
        self.nn += sums[1]
        self.s2 += sums[2]
        self.n2 += sums[3]
        self.sn += sums[4]
        self.cos_sum += sums[5]
        self.cos_sq += sums[6]
        self.n += b
        if self.task != "hidden" and is_classifier_output(fout):
            fa = fout.argmax(dim=-1)
            qa = qout.argmax(dim=-1)
            if mask is not None:
                fa, qa = fa[mask], qa[mask]
                if labels is not None and tuple(labels.shape) == tuple(mask.shape):
                    labels = labels[mask]
            self.agree_n += fa.numel()
            if labels is not None and labels.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8) and labels.shape == fa.shape:
                agree, correct, fcorrect = torch.stack([(fa == qa).sum(), (qa == labels).sum(), (fa == labels).sum()]).tolist()
                self.correct += float(correct)
                self.float_correct += float(fcorrect)
                self.labelled += labels.numel()
            else:
                agree = (fa == qa).sum().item()
            self.agree += float(agree)

    def _lm_update(self, fout, qout, aux, mask, same: bool) -> None:
        if self.task == "hidden" or not is_classifier_output(fout):
            return
        if not same:
            b = fout.shape[0]
            for sl in row_blocks(b, fout[0].numel() if b else 1):  # log-softmax copies per block of samples
                kl = kl_per_position(fout[sl], qout[sl])
                self.kl.add(kl[mask[sl]] if mask is not None else kl)
        if self.task == "causal_lm":
            owner = f"{self.readout.owner}: " if self.readout.custom_output else ""
            b = fout.shape[0]
            for sl in row_blocks(b, fout[0].numel() if b else 1):  # log-softmax copies per block of samples
                a_sl = slice_aux(aux, sl.start, sl.stop)
                ce_f = next_token_ce(fout[sl], a_sl, owner)
                if ce_f is None:
                    break
                self.ce_f.add(ce_f)
                self.ce_q.add(ce_f if same else next_token_ce(qout[sl], a_sl, owner))

    def _sqnr_band(self) -> tuple[float, float, float]:
        if self.nn == 0:
            return SQNR_CAP_DB, SQNR_CAP_DB, SQNR_CAP_DB
        r = self.s / self.nn
        n = self.n
        if n < 2:
            return _db(r), -SQNR_CAP_DB, SQNR_CAP_DB
        ms, mn = self.s / n, self.nn / n
        var_s = max(self.s2 / n - ms**2, 0.0)
        var_n = max(self.n2 / n - mn**2, 0.0)
        cov = self.sn / n - ms * mn
        var_r = max((var_s - 2 * r * cov + r * r * var_n) / (n * mn * mn), 0.0)
        if self.total:  # finite population correction
            var_r *= max(0.0, (self.total - n) / max(self.total - 1, 1))
        se = math.sqrt(var_r)
        return _db(r), _db(r - Z95 * se), _db(r + Z95 * se)

    def snapshot(self) -> dict:
        """``{"metrics": {...}, "bands": {name: [lo, hi]}, "samples": n}``."""
        metrics: dict[str, float] = {}
        bands: dict[str, list[float]] = {}
        fpc = 1.0
        if self.total and self.n:
            fpc = math.sqrt(max(0.0, (self.total - self.n) / max(self.total - 1, 1)))
        if self.labelled:
            acc = self.correct / self.labelled
            metrics["accuracy"] = acc
            lo, hi = wilson(self.correct, self.labelled)
            bands["accuracy"] = [acc - (acc - lo) * fpc, acc + (hi - acc) * fpc]
        if self.n:
            v, lo, hi = self._sqnr_band()
            metrics["sqnr_db"] = v
            bands["sqnr_db"] = [lo, hi]
            c = self.cos_sum / self.n
            sd = math.sqrt(max(self.cos_sq / self.n - c * c, 0.0))
            half = Z95 * sd / math.sqrt(self.n) * fpc
            metrics["cosine"] = c
            bands["cosine"] = [c - half, min(1.0, c + half)]
        if self.kl.n:
            m = self.kl.mean
            lo, hi = self.kl.band(fpc)
            metrics["kl_div"] = m
            bands["kl_div"] = [max(0.0, lo), hi]
        if self.ce_q.n:
            lo, hi = self.ce_q.band(fpc)
            metrics["perplexity"] = perplexity(self.ce_q.mean)
            bands["perplexity"] = [perplexity(lo), perplexity(hi)]
        if self.agree_n:
            a = self.agree / self.agree_n
            metrics["top1_agreement"] = a
            lo, hi = wilson(self.agree, self.agree_n)
            bands["top1_agreement"] = [a - (a - lo) * fpc, a + (hi - a) * fpc]
        return {"metrics": metrics, "bands": bands, "samples": self.n}


@dataclass
class FloatReference:
    """Float outputs and metrics on an evaluation set, computed once."""

    outputs: list[torch.Tensor]
    labels: list[torch.Tensor | None]
    metrics: dict
    batch_size: int
    num_samples: int
    extra: dict = field(default_factory=dict)
    aux: list = field(default_factory=list)  # per batch: attention mask / token ids (lmmetrics.batch_aux)
    task: str | None = None
    readout: Readout = DEFAULT  # the output and token mask the metrics read

    recompute: Callable[[int, int], torch.Tensor] | None = None  # rows a:b -> float outputs (when not kept)

    def aux_of(self, i: int) -> dict | None:
        return self.aux[i] if i < len(self.aux) else None

    def output(self, i: int) -> torch.Tensor:
        """The float outputs of batch ``i`` (kept, or computed again when over the memory budget)."""
        o = self.outputs[i]
        if o is None:
            a = i * self.batch_size
            o = self.recompute(a, min(a + self.batch_size, self.num_samples))
        return o

    def rows(self, a: int, b: int) -> torch.Tensor:
        """The float outputs of samples ``a:b`` (within one batch)."""
        k = a // self.batch_size
        o = self.outputs[k]
        if o is None:
            return self.recompute(a, b)
        return o[a - k * self.batch_size:b - k * self.batch_size]

    @property
    def kept_bytes(self) -> int:
        return sum(o.numel() * o.element_size() for o in self.outputs if o is not None)

    def stream(self) -> "MetricStream":
        return MetricStream(self.num_samples, task=self.task, readout=self.readout)


def float_reference(model, data: Dataset, *, device="cpu", batch_size: int = 64,
                    evaluate_fn: Callable | None = None, progress: Progress = null_progress,
                    cancel: Callable[[], bool] = lambda: False, first_chunk: int | None = None,
                    task: str | None = None, keep_bytes: int | None = None,
                    readout: Readout | None = None) -> FloatReference:
    """The float model's outputs per ``batch_size`` batch, and its metrics.

    With ``first_chunk`` the model runs over :func:`~.data.chunk_bounds` (a
    small first chunk, then whole batches), the chunks a re-check uses, so a
    config that quantizes nothing reproduces these outputs bit for bit (the
    kernels a backend picks can depend on the batch size). ``task``: see
    :mod:`.lmmetrics` (masks and next-token targets come from the inputs).
    ``keep_bytes`` bounds the outputs kept in memory (a language model's logits
    are large): batches beyond it are computed again when needed. ``readout``: the output and
    token mask the metrics read (default: the main output and the inputs' attention mask)."""
    readout = readout or DEFAULT
    outs, labels = [], []
    src = ChunkedData(data, chunk_bounds(len(data), batch_size, first_chunk)) if first_chunk else data
    total = src.num_batches(batch_size)
    aux = [batch_aux(x, task, readout) for x, _ in data.batches(batch_size)]
    chunk_aux = [batch_aux(x, task, readout) for x, _ in src.batches(batch_size)] if first_chunk else aux
    stream = MetricStream(len(data), task=task, readout=readout)
    pending: list = []  # chunks of the batch being assembled
    kept = 0
    for i, out, y in iterate_outputs(model, src, device=device, batch_size=batch_size, cancel=cancel,
                                     readout=readout):
        if not all_finite(out):
            raise ModelError(f"the float model produces NaN/Inf outputs on {data.name}")
        stream.update(out, out, y, chunk_aux[i])
        pending.append((out, y))
        if sum(o.shape[0] for o, _ in pending) >= batch_size or i + 1 == total:
            o = pending[0][0] if len(pending) == 1 else torch.cat([o for o, _ in pending])
            size = o.numel() * o.element_size()
            if keep_bytes is not None and kept + size > keep_bytes:
                o = None  # over the budget: computed again when needed
            else:
                kept += size
            outs.append(o)
            ys = [t for _, t in pending]
            labels.append(ys[0] if len(ys) == 1 or ys[0] is None else torch.cat([torch.as_tensor(t) for t in ys]))
            pending = []
            del o
        del out
        progress(i + 1, total, "float reference")
    metrics = {"sqnr_db": SQNR_CAP_DB, "cosine": 1.0}
    if stream.labelled:
        metrics["accuracy"] = stream.float_correct / stream.labelled
    if stream.agree_n:
        metrics["top1_agreement"] = 1.0
    if stream.task in ("logits", "causal_lm") and stream.agree_n:
        metrics["kl_div"] = 0.0
    if stream.ce_f.n:
        metrics["perplexity"] = perplexity(stream.ce_f.mean)
    if evaluate_fn is not None:
        metrics.update(user_metrics(evaluate_fn, model, data))
    ref = FloatReference(outs, labels, metrics, batch_size, len(data), aux=aux, task=stream.task, readout=readout)
    if any(o is None for o in outs):
        ref.recompute = _rows_recomputer(model, data, device, readout)
    return ref


def _rows_recomputer(model, data: Dataset, device, readout: Readout) -> Callable[[int, int], torch.Tensor]:
    from ..model.data import call_model, to_device

    def recompute(a: int, b: int) -> torch.Tensor:
        with torch.no_grad():
            out = readout.pick(call_model(model, to_device(data._take(slice(a, b)), device)))
        return out.detach().float().cpu()

    return recompute


REFERENCE_ENV = "QUANTVIZ_REFERENCE_BYTES"


def default_reference_bytes(weight_bytes: int) -> int:
    """How much of the float reference's outputs to keep: ``$QUANTVIZ_REFERENCE_BYTES``,
    else an eighth of the model's weight bytes (at least 64 MiB): with the weights, their int8
    codes and a batch's transients this keeps a model's peak within twice its weights."""
    import os

    env = os.environ.get(REFERENCE_ENV, "").strip()
    if env:
        try:
            return max(0, int(float(env)))
        except ValueError:
            pass
    return max(64 << 20, weight_bytes // 8)


def user_metrics(evaluate_fn, model, data) -> dict:
    """Run a caller-supplied ``evaluate(model, data)`` and check it returned ``{name: number}``.

    The one place such results are validated (recipes, API callers); errors name
    ``evaluate_fn.owner`` when the function carries one (a recipe's file name)."""
    who = getattr(evaluate_fn, "owner", "the recipe's evaluate()")
    try:
        res = evaluate_fn(model, data)
    except QuantvizError:
        raise
    except Exception as exc:
        raise ModelError(f"{who} raised {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    if not isinstance(res, dict):
        raise ModelError(f"{who} returned {type(res).__name__}: expected a dict of metric name -> number")
    out = {}
    for k, v in res.items():
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            raise ModelError(f"{who} returned a non-number for {k!r}: {v!r}") from None
    return out


FIDELITY_METRICS = ("sqnr_db", "cosine", "top1_agreement", "kl_div")


def primary_metric(metrics: dict) -> str:
    """The metric a model is judged by: accuracy, else perplexity, else a recipe's own metric, else
    top-1 agreement, cosine or SQNR (the first the metrics have)."""
    if "accuracy" in metrics:
        return "accuracy"
    if "perplexity" in metrics:  # a causal language model
        return "perplexity"
    for k in metrics:
        if k not in FIDELITY_METRICS:
            return k
    for k in ("top1_agreement", "cosine", "sqnr_db"):
        if k in metrics:
            return k
    return "sqnr_db"


def evaluate_quantized(qmodel, data: Dataset, ref: FloatReference, *, device="cpu",
                       evaluate_fn: Callable | None = None, progress: Progress = null_progress,
                       cancel: Callable[[], bool] = lambda: False,
                       on_estimate: Callable[[dict], None] | None = None) -> dict:
    """Metrics of ``qmodel`` against the float reference; streams estimates."""
    stream = ref.stream()
    total = len(ref.outputs)
    for i, out, y in iterate_outputs(qmodel, data, device=device, batch_size=ref.batch_size, cancel=cancel,
                                     readout=ref.readout):
        stream.update(ref.output(i), out, y, ref.aux_of(i))
        del out  # not held while the next batch runs
        progress(i + 1, total, "evaluating")
        if on_estimate is not None and i + 1 < total:
            snap = stream.snapshot()
            snap["final"] = False
            snap["batches"] = (i + 1, total)
            on_estimate(snap)
    metrics = stream.snapshot()["metrics"]
    if evaluate_fn is not None:
        metrics.update(user_metrics(evaluate_fn, qmodel, data))
    return metrics
