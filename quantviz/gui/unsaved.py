"""Unsaved work: what counts, the title-bar mark, and the save / discard / cancel question.

Work is unsaved after a config edit or a new analysis result (sensitivity,
search, deploy measurements) since the session was opened or last saved.
While it is, the title bar shows ``*`` (Qt's ``[*]`` placeholder) and the
actions that would drop it (quit, open another model) ask first. The
question is a non-blocking message box (``open()``), like every dialog the
app opens by itself, so tests find it by object name and answer it.
"""
from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QMessageBox


class UnsavedWork(QObject):
    """Follows ``win.bridge``; ``dirty`` is True while there is work not in a saved file."""

    changed = Signal(bool)

    def __init__(self, win):
        super().__init__(win)
        self.win = win
        self.dirty = False
        self.reasons: list[str] = []
        win.bridge.sessionChanged.connect(lambda _s: self.mark_clean())
        self._saved_config = None
        win.bridge.configChanged.connect(self._on_bridge_config_changed)
        win.bridge.analysisChanged.connect(self._on_bridge_analysis_changed)

    def _on_bridge_config_changed(self, _change) -> None:
        self.reasons = [r for r in self.reasons if r != "config edits"]
        s = self.win.session
        if s is not None and self._saved_config is not None and s.config == self._saved_config:
            if not self.reasons:  # undone back to the saved config
                self.mark_clean(keep_config=True)
            return
        self._touch("config edits")

    def _on_bridge_analysis_changed(self, what: str, _payload) -> None:
        self._touch({"sensitivity": "sensitivity results", "search": "search results",
                     "deploy": "measured backends", "metric": "the analysis metric"}.get(what, "analysis results"))

    def mark_recovered(self) -> None:
        """The open session came back from a recovery file: all of it is unsaved work."""
        self._saved_config = None
        self._touch("recovered work")

    def _touch(self, reason: str) -> None:
        if self.win.session is None:
            return
        if reason not in self.reasons:
            self.reasons.append(reason)
        if not self.dirty:
            self.dirty = True
            self.win.setWindowModified(True)
            self.changed.emit(True)

    def mark_clean(self, keep_config: bool = False) -> None:
        """Nothing unsaved (just opened or saved): remember the config as the saved one."""
        self.reasons = []
        if not keep_config:
            s = self.win.session
            self._saved_config = s.config if s is not None else None
        if self.dirty:
            self.dirty = False
            self.changed.emit(False)
        self.win.setWindowModified(False)

    def describe(self) -> str:
        shown = self.reasons[:4] + (["…"] if len(self.reasons) > 4 else [])
        return "; ".join(shown)


def confirm(win, action: str, proceed: Callable[[], None]) -> QMessageBox | None:
    """Call ``proceed`` now when nothing is unsaved; else ask Save / Discard / Cancel first.

    "Save" saves the session (asking for a file name when it has none) and
    proceeds only if that worked; "Discard" proceeds; "Cancel" does nothing.
    """
    if not win.unsaved.dirty:
        proceed()
        return None
    box = QMessageBox(win)
    box.setObjectName("unsavedDialog")
    box.setIcon(QMessageBox.Warning)
    box.setWindowTitle("Unsaved work")
    box.setText(f"Save your work before you {action}?")
    box.setInformativeText(f"Not in a saved session: {win.unsaved.describe()}.\n"
                           "Save keeps it in a .qvs file; Discard drops it.")
    box.setStandardButtons(QMessageBox.Save | QMessageBox.Discard | QMessageBox.Cancel)
    box.setDefaultButton(QMessageBox.Save)
    box.setEscapeButton(QMessageBox.Cancel)
    box.setAttribute(Qt.WA_DeleteOnClose)

    def clicked(button) -> None:
        role = box.standardButton(button)
        if role == QMessageBox.Save:
            if save_now(win):
                proceed()
        elif role == QMessageBox.Discard:
            win.unsaved.mark_clean()
            proceed()

    box.buttonClicked.connect(clicked)
    box.open()
    win._unsaved_box = box
    return box


def save_now(win) -> bool:
    from . import dialogs

    path = win.session_path
    if not path:
        path = dialogs.choose_save(win, "Save session", dialogs.SESSION_FILTER, "session.qvs")
    return bool(path) and win.save_session(path)


__all__ = ["UnsavedWork", "confirm", "save_now"]
