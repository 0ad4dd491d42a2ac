"""Turns a session's plain-Python events into Qt signals.

``Session.events`` handlers may run on a worker thread (a re-check emits
``estimate`` and ``result`` from the pool). The bridge lives on the GUI
thread, so Qt queues signals emitted from other threads: every connected
widget runs its handler on the GUI thread. Edits made on the GUI thread are
delivered at once (direct connection), so views update synchronously.
"""
from __future__ import annotations

from PySide6.QtCore import QObject, Signal


class SessionBridge(QObject):
    configChanged = Signal(str, list)  # label, names of layers whose settings changed
    resultReady = Signal(object)  # CheckResult
    estimate = Signal(int, object)  # generation, snapshot {"metrics", "bands", "samples", ...}
    loaded = Signal(object)  # Session
    sessionChanged = Signal(object)  # the bridge now follows another session (or None)
    event = Signal(str, object)  # any other session event (kind, payload)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.session = None

    def set_session(self, session) -> None:
        if self.session is not None:
            self.session.events.disconnect(self._on_session_event)
        self.session = session
        if session is not None:
            session.events.connect(self._on_session_event)
        self.sessionChanged.emit(session)

    def _on_session_event(self, kind: str, payload: dict) -> None:
        # may run on any thread: only emit signals here
        if kind == "config_changed":
            self.configChanged.emit(str(payload.get("label", "")), list(payload.get("layers", [])))
        elif kind == "result":
            self.resultReady.emit(payload.get("result"))
        elif kind == "estimate":
            self.estimate.emit(int(payload.get("generation", 0)), payload.get("snapshot"))
        elif kind == "loaded":
            self.loaded.emit(payload.get("session"))
        else:
            self.event.emit(kind, dict(payload))
