"""Turns a session's plain-Python events into Qt signals, and lets views follow them.

``Session.events`` handlers may run on a worker thread (a re-check emits
``estimate`` and ``result`` from the pool). A bridge lives on the GUI thread,
so Qt queues signals emitted from other threads: every connected widget runs
its handler on the GUI thread. Edits made on the GUI thread are delivered at
once (direct connection), so views update synchronously.

Views subscribe themselves: a widget that mixes in :class:`SessionFollower`
calls :meth:`SessionFollower.follow` from its ``set_session`` and defines the
handlers it cares about, named after the event:

* ``_on_session_config_changed(change)`` — a :class:`~quantviz.session.session.ConfigChange`;
* ``_on_session_result(result)`` — a :class:`~quantviz.session.session.CheckResult`;
* ``_on_session_estimate(generation, snapshot)``;
* ``_on_session_analysis_changed(what, payload)``.

The main window only places views; no view calls another.
"""
from __future__ import annotations

from PySide6.QtCore import QObject, Signal


class SessionBridge(QObject):
    configChanged = Signal(object)  # ConfigChange
    resultReady = Signal(object)  # CheckResult
    estimate = Signal(int, object)  # generation, snapshot {"metrics", "bands", "samples", ...}
    analysisChanged = Signal(str, object)  # what ("sensitivity", "search", "deploy", "all"), payload
    loaded = Signal(object)  # Session
    sessionChanged = Signal(object)  # the bridge now follows another session (or None)
    event = Signal(str, object)  # any other session event (kind, payload)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.session = None

    def set_session(self, session) -> None:
        if session is self.session:
            return
        if self.session is not None:
            self.session.events.disconnect(self._on_session_event)
        self.session = session
        if session is not None:
            session.events.connect(self._on_session_event)
        self.sessionChanged.emit(session)

    def _on_session_event(self, kind: str, payload: dict) -> None:
        # may run on any thread: only emit signals here
        try:
            self._forward(kind, payload)
        except RuntimeError:  # the Qt side is gone (its widget was deleted): stop listening
            session = self.session
            if session is not None:
                session.events.disconnect(self._on_session_event)

    def _forward(self, kind: str, payload: dict) -> None:
        if kind == "config_changed":
            self.configChanged.emit(payload.get("change"))
        elif kind == "result":
            self.resultReady.emit(payload.get("result"))
        elif kind == "estimate":
            self.estimate.emit(int(payload.get("generation", 0)), payload.get("snapshot"))
        elif kind == "analysis_changed":
            self.analysisChanged.emit(str(payload.get("what", "")), dict(payload))
        elif kind == "loaded":
            self.loaded.emit(payload.get("session"))
        else:
            self.event.emit(kind, dict(payload))


_HANDLERS = (("configChanged", "_on_session_config_changed"), ("resultReady", "_on_session_result"),
             ("estimate", "_on_session_estimate"), ("analysisChanged", "_on_session_analysis_changed"))


class SessionFollower:
    """Mixin for a QWidget that follows a session's events (see the module doc)."""

    def follow(self, session) -> None:
        bridge = self.__dict__.get("_session_bridge")
        if bridge is None:
            bridge = self._session_bridge = SessionBridge(self)
            for signal, handler in _HANDLERS:
                if hasattr(self, handler):
                    getattr(bridge, signal).connect(getattr(self, handler))
        bridge.set_session(session)


class OnScreen:
    """Mixin for a panel that defers work while hidden (a tab behind another dock counts as hidden).

    ``on_screen()`` says whether the user can see it; ``when_shown(callback)`` calls
    ``callback(raised)`` when the panel may have come into view: ``raised=True`` when its dock
    (or dock tab) became visible, ``False`` on a show event (which tabbed docks also get while
    behind another tab: check ``on_screen()``). Tabbed docks report ``isVisible()`` even when
    behind another tab, hence the visible region.
    """

    def on_screen(self) -> bool:
        return self.isVisible() and not self.visibleRegion().isEmpty()

    def when_shown(self, callback) -> None:
        from PySide6.QtWidgets import QDockWidget

        self.__dict__["_on_shown"] = callback
        dock = self.parentWidget()
        if isinstance(dock, QDockWidget) and not self.__dict__.get("_dock_watched"):
            self._dock_watched = True
            dock.visibilityChanged.connect(lambda visible: visible and self._on_shown(True))

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        cb = self.__dict__.get("_on_shown")
        if cb is not None:
            cb(False)
