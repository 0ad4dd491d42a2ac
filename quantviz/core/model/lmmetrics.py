"""Token-aware metrics: attention masks, KL divergence and perplexity.

A model's *task* says what its main output is:

* ``causal_lm``: next-token logits ``(batch, tokens, vocab)`` of a causal
  language model (Hugging Face ``*ForCausalLM`` / ``*LMHeadModel``, or a recipe
  with ``TASK = "causal_lm"``). Gets ``perplexity`` and ``kl_div``;
* ``logits``: class or token logits (classifiers). Gets ``kl_div`` and
  ``top1_agreement``;
* ``hidden``: hidden states / embeddings (``AutoModel`` folders). Neither
  agreement nor KL is defined for them;
* ``None``: decided from the first output (a class axis means ``logits``).

The per-batch *aux* record holds the mask of real tokens (bool, ``(batch,
tokens)``: the inputs' ``attention_mask``, or what a recipe's ``MASK`` says, see
:mod:`.readout`) and, for a causal LM, the ``input_ids``. Every metric is
computed over the positions the mask marks as real; padding never enters a sum.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from .readout import DEFAULT, Readout, inputs_of_call, real_rows

TASKS = ("causal_lm", "logits", "hidden")
LM_METRICS = ("perplexity", "kl_div")


def batch_aux(x, task: str | None, readout: Readout = DEFAULT) -> dict | None:
    """The mask (and next-token targets for a causal LM) of one input batch."""
    aux = {}
    m = readout.mask_of(x)
    if m is not None:
        aux["mask"] = m.detach().cpu().bool()
    # the task comes from the model: a causal LM's integer input is its token ids, whatever the
    # data file called it (``x`` is the generic convention, ``input_ids`` the tokenizer's)
    ids = x.get("input_ids") if isinstance(x, Mapping) else x
    if task == "causal_lm" and isinstance(ids, torch.Tensor) and ids.dim() == 2 and not ids.is_floating_point():
        aux["ids"] = ids.detach().cpu().long()
    return aux or None


def slice_aux(aux: dict | None, a: int, b: int) -> dict | None:
    return {k: v[a:b] for k, v in aux.items()} if aux else None


def cat_aux(auxes: list) -> dict | None:
    if not auxes or any(a is None for a in auxes):
        return None
    keys = set(auxes[0])
    if any(set(a) != keys for a in auxes):
        return None
    try:
        return {k: torch.cat([a[k] for a in auxes]) for k in keys}
    except RuntimeError:  # different token counts per batch: no single tensor
        return None


def token_mask(out: torch.Tensor, aux: dict | None) -> torch.Tensor | None:
    """The aux mask when it lines up with the output's (batch, tokens) axes and hides something."""
    m = aux.get("mask") if aux else None
    if m is None or out.dim() < 3 or tuple(out.shape[:2]) != tuple(m.shape):
        return None
    return None if bool(m.all()) else m


def mask_padding(t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``t`` with padded positions set to zero (they add nothing to sums of squares or dot products)."""
    return t * mask.reshape(tuple(mask.shape) + (1,) * (t.dim() - 2)).to(t.dtype)


def kl_per_position(fout: torch.Tensor, qout: torch.Tensor) -> torch.Tensor:
    """KL(P_float || P_quant) of the softmax over the last axis, per position (float32)."""
    lf = F.log_softmax(fout.float(), dim=-1)
    lq = F.log_softmax(qout.float(), dim=-1)
    return F.kl_div(lq, lf, reduction="none", log_target=True).sum(-1)


def next_token_ce(logits: torch.Tensor, aux: dict | None, owner: str = "") -> torch.Tensor | None:
    """Cross-entropy of every real next-token prediction (1-D), or None if not a causal LM batch."""
    ids = aux.get("ids") if aux else None
    if ids is None or logits.dim() != 3 or tuple(logits.shape[:2]) != tuple(ids.shape) or ids.shape[1] < 2:
        return None
    valid = torch.ones(ids.shape[0], ids.shape[1] - 1, dtype=torch.bool)
    m = aux.get("mask")
    if m is not None:
        valid = m[:, :-1] & m[:, 1:]
    pred = logits[:, :-1][valid].float()
    target = ids[:, 1:][valid]
    top = int(target.max()) if target.numel() else -1
    if top >= logits.shape[-1]:
        from ..errors import ModelError

        raise ModelError(f"{owner}token ids reach {top} but the output read has {logits.shape[-1]} classes: "
                         "perplexity needs next-token logits (a recipe names that output with OUTPUT)")
    return F.cross_entropy(pred, target, reduction="none")


class Moments:
    """Streaming mean with a 95 % normal band (finite population correction via ``fpc``)."""

    __slots__ = ("n", "s", "s2")

    def __init__(self) -> None:
        self.n = 0
        self.s = 0.0
        self.s2 = 0.0

    def add(self, v: torch.Tensor) -> None:
        if v.numel():
            v = v.double()
            sums = torch.stack([v.sum(), (v * v).sum()]).tolist()
            self.n += v.numel()
            self.s += sums[0]
            self.s2 += sums[1]

    @property
    def mean(self) -> float:
        return self.s / self.n if self.n else float("nan")

    def band(self, fpc: float = 1.0, z: float = 1.959963984540054) -> tuple[float, float]:
        m = self.mean
        if self.n < 2:
            return m, m
        sd = math.sqrt(max(self.s2 / self.n - m * m, 0.0))
        half = z * sd / math.sqrt(self.n) * fpc
        return m - half, m + half


class MaskTracker:
    """Remembers the real-token mask of each call of ``model`` (a forward pre-hook on the
    root; the mask as ``readout`` reads it from the call's inputs), so that hooks on inner
    layers can keep only the real tokens of what they see: calibration statistics, like
    the metrics, must not see padding."""

    def __init__(self, model: torch.nn.Module, readout: Readout = DEFAULT) -> None:
        self.mask: torch.Tensor | None = None
        self.readout = readout
        self._handle = model.register_forward_pre_hook(self._on_call, with_kwargs=True)

    def _on_call(self, module, args, kwargs) -> None:
        self.mask = self.readout.mask_of(inputs_of_call(args, kwargs or {}))

    def real(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` (batch, tokens, ...) reduced to the rows of real tokens; ``t`` itself otherwise."""
        return real_rows(t, self.mask)

    def remove(self) -> None:
        self._handle.remove()


def perplexity(ce_mean: float) -> float:
    return float(math.exp(min(ce_mean, 700.0)))


__all__ = ["TASKS", "LM_METRICS", "batch_aux", "slice_aux", "cat_aux", "token_mask", "mask_padding",
           "kl_per_position", "next_token_ce", "Moments", "MaskTracker", "perplexity"]
