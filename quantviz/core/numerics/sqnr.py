"""The one signal-to-quantization-noise ratio every number in quantviz is written in.

``SQNR = 10 log10(signal / noise)`` in dB, where ``signal`` is the energy of the
reference (float) values and ``noise`` the energy of their difference from the
quantized ones. The edge rules, the same everywhere:

* identical (``noise == 0``, also when the tensor is empty or all zero): ``+inf``;
* no signal but some noise: ``-inf``;
* ``cap=True`` limits the result, infinities included, to ``+-SQNR_CAP_DB``.
  Metrics that are averaged, banded, plotted on an axis or written to JSON use
  the capped form (:func:`quantviz.core.fmt.metric` shows the cap as
  "identical"); per-tensor readouts use the plain one.
"""
from __future__ import annotations

import math

SQNR_CAP_DB = 200.0


def sqnr_db(signal: float, noise: float, *, cap: bool = False) -> float:
    """SQNR in dB of ``signal`` and ``noise`` energies (sums of squares)."""
    signal, noise = float(signal), float(noise)
    if noise <= 0.0:
        db = math.inf
    elif signal <= 0.0:
        db = -math.inf
    else:
        db = 10.0 * math.log10(signal / noise)
    return max(-SQNR_CAP_DB, min(SQNR_CAP_DB, db)) if cap else db


def tensor_sqnr_db(ref, test, *, cap: bool = False) -> float:
    """SQNR in dB of tensor ``test`` against reference ``ref`` (same number of elements)."""
    ref = ref.detach().double().flatten()
    diff = ref - test.detach().double().flatten()
    return sqnr_db(float((ref * ref).sum()), float((diff * diff).sum()), cap=cap)


__all__ = ["SQNR_CAP_DB", "sqnr_db", "tensor_sqnr_db"]
