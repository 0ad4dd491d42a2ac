"""Cyclic garbage that holds Qt objects is collected on the GUI thread, never by a
worker that happens to allocate when a threshold is crossed."""
from __future__ import annotations

import gc
import threading
import weakref

from PySide6.QtCore import QTimer


class _Holder:
    pass


def _cyclic_garbage_with_a_running_timer(died: list):
    h = _Holder()
    h.me = h  # a reference cycle: only the cyclic collector frees it
    h.timer = QTimer()
    h.timer.setInterval(60000)
    h.timer.start()
    h.timer.destroyed.connect(lambda *_: died.append(threading.current_thread() is threading.main_thread()))
    return weakref.ref(h)


def _churn() -> None:
    for _ in range(50000):  # far past every generation's threshold
        x = [[]]
        x[0].append(x)


def test_worker_allocations_leave_qt_garbage_to_the_gui_thread(qtbot):
    from quantviz.gui import gcguard

    assert gcguard.installed() and not gc.isenabled()
    died: list = []
    ref = _cyclic_garbage_with_a_running_timer(died)
    worker = threading.Thread(target=_churn)
    worker.start()
    worker.join()
    assert ref() is not None, "a worker thread collected garbage"
    qtbot.waitUntil(lambda: ref() is None, timeout=5000)  # the GUI-thread timer collects it
    assert died == [True]


def test_settle_freezes_the_loaded_model_and_frees_the_previous_one(qtbot):
    from quantviz.gui import gcguard

    died: list = []
    ref = _cyclic_garbage_with_a_running_timer(died)
    gcguard.settle()
    assert ref() is None and died == [True]
    assert gc.get_freeze_count() > 0
    gcguard.uninstall()
    assert gc.isenabled() and gc.get_freeze_count() == 0
    gcguard.install(None)
    assert gcguard.installed()
