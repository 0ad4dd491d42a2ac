"""Work-around for a reference-count bug of the Qt binding, applied when quantviz.gui is imported.

PySide6 6.12 assumes Python >= 3.12, where ``None``, ``True`` and ``False``
are immortal: on Python 3.11 every void method called from Python
(``label.setText(...)``) returns ``None`` without taking a reference, and
``SignalInstance.emit`` does the same with ``True``. Each call drops the
interpreter's count by one until it reaches zero and the process aborts
("none_dealloc: deallocating None" / "bool_dealloc"), typically after a few
minutes of use or at exit.

We detect the leak with a probe and, only when present, raise the reference
counts of these three singletons by 2**40, which makes them immortal in
practice, exactly as Python 3.12 does. Nothing changes on an interpreter or
binding without the bug.
"""
from __future__ import annotations

import ctypes
import sys

_BOOST = 1 << 40
PROBE_CALLS = 64


def _leaks() -> tuple[bool, bool]:
    """(void methods leak None, emit leaks True) for this binding and interpreter."""
    from PySide6.QtCore import QObject, Signal

    class _Probe(QObject):
        sig = Signal()

    p = _Probe()
    n0, t0 = sys.getrefcount(None), sys.getrefcount(True)
    for _ in range(PROBE_CALLS):
        p.setObjectName("probe")
    for _ in range(PROBE_CALLS):
        p.sig.emit()
    n1, t1 = sys.getrefcount(None), sys.getrefcount(True)
    return n1 <= n0 - PROBE_CALLS // 2, t1 <= t0 - PROBE_CALLS // 2


def _boost(obj) -> None:
    ref = ctypes.c_ssize_t.from_address(id(obj))  # ob_refcnt is the first field of every object
    ref.value += _BOOST


def apply() -> bool:
    """Make None / True / False effectively immortal when the binding leaks them."""
    if sys.version_info >= (3, 12) or getattr(sys, "_quantviz_qt_refcount_fix", False):
        return False
    leaks_none, leaks_true = _leaks()
    if not (leaks_none or leaks_true):
        return False
    for obj in (None, True, False):
        _boost(obj)
    sys._quantviz_qt_refcount_fix = True
    return True


PATCHED = apply()
