"""Streaming statistics of a tensor: exact min / max and a fixed-size histogram.

Memory does not grow with the number of batches: the histogram keeps
``bins`` counts over a range that doubles (merging neighbouring bins in
pairs) whenever a batch falls outside it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_BINS = 2048


@dataclass
class Histogram:
    """Counts over equal-width bins starting at ``lo`` with width ``width``."""

    counts: np.ndarray  # float64, shape (bins,)
    lo: float
    width: float
    min: float
    max: float

    @property
    def edges(self) -> np.ndarray:
        return self.lo + self.width * np.arange(len(self.counts) + 1)

    @property
    def centers(self) -> np.ndarray:
        return self.lo + self.width * (np.arange(len(self.counts)) + 0.5)

    @property
    def total(self) -> float:
        return float(self.counts.sum())

    def to_dict(self) -> dict:
        return {"counts": self.counts.tolist(), "lo": self.lo, "width": self.width, "min": self.min, "max": self.max}

    @classmethod
    def from_dict(cls, d: dict) -> "Histogram":
        return cls(np.asarray(d["counts"], dtype=np.float64), float(d["lo"]), float(d["width"]), float(d["min"]), float(d["max"]))

    def rebinned(self, bins: int) -> "Histogram":
        """A coarser histogram over the occupied range (for display)."""
        occupied = np.nonzero(self.counts)[0]
        if len(occupied) == 0:
            return Histogram(np.zeros(bins), self.min, max(self.max - self.min, 1e-12) / bins, self.min, self.max)
        first, last = occupied[0], occupied[-1] + 1
        counts = self.counts[first:last]
        n = len(counts)
        factor = max(1, int(np.ceil(n / bins)))
        pad = (-n) % factor
        if pad:
            counts = np.concatenate([counts, np.zeros(pad)])
        merged = counts.reshape(-1, factor).sum(axis=1)
        return Histogram(merged, self.lo + first * self.width, self.width * factor, self.min, self.max)


def histogram_of(x: torch.Tensor, bins: int = DEFAULT_BINS) -> Histogram:
    """A one-shot histogram of a tensor over its exact min / max."""
    obs = HistogramObserver(bins=bins, margin=0.0)
    obs.update(x)
    return obs.histogram()


def _reduce(x: torch.Tensor) -> list[float]:
    """min, max, sum and sum of squares of a flat float32 tensor, read back at once.

    float32 reductions (pairwise / blocked in torch) are plenty for the
    displayed mean / std and cost a fraction of float64 copies.
    """
    mn, mx = torch.aminmax(x)
    return torch.stack((mn, mx, x.sum(), torch.dot(x, x))).tolist()


class HistogramObserver:
    """Streaming min / max / moments and a doubling fixed-size histogram."""

    def __init__(self, bins: int = DEFAULT_BINS, margin: float = 0.1):
        if bins < 2 or bins % 2:
            raise ValueError("bins must be an even number >= 2")
        self.bins = bins
        self.margin = margin
        self.reset()

    def reset(self) -> None:
        self.counts: torch.Tensor | None = None
        self.lo = 0.0
        self.width = 0.0
        self.min = float("inf")
        self.max = float("-inf")
        self.count = 0
        self.nonfinite = 0
        self.sum = 0.0
        self.sumsq = 0.0

    def _init_range(self, mn: float, mx: float) -> None:
        span = mx - mn
        if span <= 0:
            span = max(abs(mn), 1.0) * 1e-3
            lo = mn - span / 2
        else:
            lo = mn if mn >= 0 else mn - self.margin * span
            span = (mx if mx <= 0 else mx + self.margin * span) - lo
        self.lo = float(lo)
        self.width = float(span) / self.bins
        self.counts = torch.zeros(self.bins, dtype=torch.float64)

    def _grow_right(self) -> None:
        c = self.counts
        merged = c.view(-1, 2).sum(dim=1)
        self.counts = torch.cat([merged, torch.zeros(self.bins // 2, dtype=torch.float64)])
        self.width *= 2

    def _grow_left(self) -> None:
        c = self.counts
        merged = c.view(-1, 2).sum(dim=1)
        self.lo -= self.bins * self.width
        self.counts = torch.cat([torch.zeros(self.bins // 2, dtype=torch.float64), merged])
        self.width *= 2

    @property
    def hi(self) -> float:
        return self.lo + self.bins * self.width

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        x = x.detach()
        if not x.is_floating_point():
            return
        x = x.float().flatten()
        if x.numel() == 0:
            return
        mn, mx, s, ss = _reduce(x)
        # NaN propagates through aminmax and Inf shows up in it, so finite
        # extremes prove the whole batch finite: the (slow) mask is only
        # built for the rare batch that needs it.
        if not (math.isfinite(mn) and math.isfinite(mx)):
            finite = torch.isfinite(x)
            n_bad = int(x.numel() - finite.sum())
            self.nonfinite += n_bad
            x = x[finite]
            if x.numel() == 0:
                return
            mn, mx, s, ss = _reduce(x)
        self.min = min(self.min, mn)
        self.max = max(self.max, mx)
        self.count += int(x.numel())
        self.sum += s
        self.sumsq += ss
        if self.counts is None:
            self._init_range(mn, mx)
        guard = 0
        while mx > self.hi and guard < 200:
            self._grow_right()
            guard += 1
        while mn < self.lo and guard < 400:
            self._grow_left()
            guard += 1
        self.counts += torch.histc(x, bins=self.bins, min=self.lo, max=self.hi)  # float64 += float32 in place

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else 0.0

    @property
    def std(self) -> float:
        if not self.count:
            return 0.0
        return float(max(self.sumsq / self.count - self.mean**2, 0.0) ** 0.5)

    def histogram(self) -> Histogram:
        if self.counts is None:
            raise ValueError("no data observed")
        return Histogram(self.counts.numpy().copy(), self.lo, self.width, self.min, self.max)

    def state(self) -> dict:
        return {
            "histogram": self.histogram().to_dict() if self.counts is not None else None,
            "count": self.count,
            "nonfinite": self.nonfinite,
            "mean": self.mean,
            "std": self.std,
        }
