"""Python's cyclic garbage collector, run on the GUI thread only.

With automatic collection, whichever thread happens to allocate when a
threshold is crossed runs the collector. In the app that is usually a worker
(a re-check allocates far more than the GUI does), and a collected cycle that
holds Qt objects (widgets, timers, plot items) is then destroyed on that
worker: Qt warns ("Timers cannot be started from another thread") or worse.

While installed, automatic collection is off and a timer on the GUI thread
runs the generation whose threshold was crossed, as the interpreter would.
A full collection walks every tracked object (~140 ms once torch and a model
are loaded), so :func:`settle` freezes what is alive after a model load:
later full collections only walk what was created since.
"""
from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer

INTERVAL_MS = 100

_collector: "GuiThreadCollector | None" = None


class GuiThreadCollector(QObject):
    def __init__(self, parent: QObject | None = None, interval_ms: int = INTERVAL_MS):
        super().__init__(parent)
        self.thresholds = gc.get_threshold()
        self.collections = [0, 0, 0]
        self.timer = QTimer(self)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self.tick)

    def start(self) -> None:
        gc.disable()
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()
        gc.unfreeze()
        gc.enable()

    def tick(self) -> int | None:
        """Collect the oldest generation whose threshold was crossed; returns it (None: nothing to do)."""
        counts = gc.get_count()
        for gen in (2, 1, 0):
            if counts[gen] > self.thresholds[gen]:
                gc.collect(gen)
                self.collections[gen] += 1
                return gen
        return None


def install(parent: QObject) -> GuiThreadCollector:
    """Start collecting on the GUI thread (idempotent); ``parent`` is usually the QApplication."""
    global _collector
    if _collector is None:
        _collector = GuiThreadCollector(parent)
    _collector.start()
    return _collector


def uninstall() -> None:
    """Give collection back to the interpreter (tests that do not run an event loop)."""
    if _collector is not None:
        _collector.stop()


def installed() -> bool:
    return _collector is not None and _collector.timer.isActive()


def settle() -> None:
    """After a model load: collect everything once, then freeze the survivors.

    The objects of a model replaced by this load were frozen by the previous
    settle; unfreezing first lets this collection free them.
    """
    if not installed():
        return
    gc.unfreeze()
    gc.collect()
    gc.freeze()
