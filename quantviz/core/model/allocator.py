"""Keep the C heap from holding freed memory while big models run.

glibc's ``malloc`` serves a large allocation with its own ``mmap`` (returned to
the system when freed) only above a threshold that it raises on its own, up to
32 MiB, each time such a block is freed. After a few batches of a language
model, the many 1-32 MiB temporaries of a forward pass (activations, metric
blocks, weight decoding) then come from the heap, which cannot shrink past a
block still in use: measured on a 134M-parameter model, calibration alone left
about 100 MB of freed but resident heap (0.2x its weights).

:func:`limit_heap_fragmentation` fixes the threshold with ``mallopt``
(``M_MMAP_THRESHOLD``, documented in ``man 3 mallopt``; the same as the
``MALLOC_MMAP_THRESHOLD_`` environment variable, without asking the user to
set it): blocks of ``threshold`` bytes and more are mapped and given back when
freed. :class:`~quantviz.core.sim.fakequant.QuantSim` calls it for models of
``MIN_MODEL_BYTES`` and more; small models keep glibc's defaults. It does
nothing where ``mallopt`` does not exist (not glibc), and
``$QUANTVIZ_MMAP_THRESHOLD`` (bytes; ``0``: leave malloc alone) overrides it.
"""
from __future__ import annotations

import ctypes
import os
import sys

ENV = "QUANTVIZ_MMAP_THRESHOLD"
DEFAULT_THRESHOLD = 1 << 20
MIN_MODEL_BYTES = 256 << 20
_M_MMAP_THRESHOLD = -3  # glibc's malloc.h

_applied: int | None = None


def limit_heap_fragmentation(threshold: int | None = None) -> int | None:
    """Set glibc's mmap threshold (once per process); returns the threshold in force, or None."""
    global _applied
    env = os.environ.get(ENV, "").strip()
    if env:
        try:
            threshold = int(float(env))
        except ValueError:
            pass
    threshold = DEFAULT_THRESHOLD if threshold is None else int(threshold)
    if threshold <= 0 or not sys.platform.startswith("linux"):
        return _applied
    if _applied == threshold:
        return _applied
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, threshold) == 1:
        _applied = threshold
    return _applied


def available_memory() -> int | None:
    """Bytes of RAM available to new allocations (``MemAvailable``; None when unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


__all__ = ["limit_heap_fragmentation", "available_memory", "MIN_MODEL_BYTES", "ENV"]
