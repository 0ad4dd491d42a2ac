"""Keeping the user's work and machine safe: autosave, crash recovery, the recipe question.

* :class:`AutosaveController` writes the open session to a recovery file
  (``quantviz.session.autosave``) a moment after the last edit or result, and
  deletes it when the window closes normally (after any unsaved work was
  saved or knowingly discarded). A killed app leaves it behind.
* :func:`offer_recovery` (at start) asks whether to reopen what a killed app
  left, and reopens it as a session file; "No" discards the file.
* :func:`ask_recipe` asks before a recipe runs for the first time and
  remembers a "yes" by the file's SHA-256 (``quantviz.session.trust``).

All questions are non-blocking message boxes (``open()``), so jobs keep
running and tests can find and answer them by object name.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from PySide6.QtCore import QObject, Qt, QTimer
from PySide6.QtWidgets import QMessageBox, QWidget

from ..session import autosave
from ..session.trust import TrustStore, is_recipe, question

AUTOSAVE_DELAY_MS = 1000


class AutosaveController(QObject):
    """Debounced autosave of ``win.session``; the recovery file goes away on a normal close."""

    def __init__(self, win, delay_ms: int = AUTOSAVE_DELAY_MS):
        super().__init__(win)
        self.win = win
        self.saver: autosave.Autosaver | None = None
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(delay_ms)
        self.timer.timeout.connect(self.flush)
        win.bridge.sessionChanged.connect(self._on_bridge_session_changed)
        win.bridge.configChanged.connect(self._on_bridge_edit)
        win.bridge.analysisChanged.connect(self._on_bridge_edit)  # sensitivity / search / deploy results
        if win.session is not None:
            self._on_bridge_session_changed(win.session)

    def _on_bridge_session_changed(self, session) -> None:
        if self.saver is not None and self.saver.session is session:
            return
        if self.saver is not None:
            self.saver.close()  # the previous session's recovery file is obsolete
        self.saver = autosave.Autosaver(session) if session is not None else None

    def _on_bridge_edit(self, *args) -> None:
        """Restart the countdown; the Autosaver itself decides (from session events) whether to write."""
        if self.saver is not None:
            self.timer.start()

    def flush(self) -> bool:
        if self.saver is None:
            return False
        saved = self.saver.flush()
        if self.saver.last_error:
            self.win.show_message(self.saver.last_error)
        return saved

    def close(self) -> None:
        self.timer.stop()
        if self.saver is not None:
            self.saver.close()
            self.saver = None


def _question_box(parent: QWidget, name: str, title: str, text: str, info: str, yes: str) -> QMessageBox:
    box = QMessageBox(parent)
    box.setObjectName(name)
    box.setIcon(QMessageBox.Question)
    box.setWindowTitle(title)
    box.setText(text)
    box.setInformativeText(info)
    box.setStandardButtons(QMessageBox.Yes | QMessageBox.No)
    box.setDefaultButton(QMessageBox.No)
    box.button(QMessageBox.Yes).setText(yes)
    box.setAttribute(Qt.WA_DeleteOnClose)
    return box


def offer_recovery(win) -> QMessageBox | None:
    """Ask whether to reopen the newest session a killed app left behind."""
    found = autosave.find_recovery()
    if not found:
        return None
    info = found[0]
    box = _question_box(win, "recoveryDialog", "Recover your work?", "quantviz did not close properly last time.",
                        f"Reopen the autosaved session?\n\n{info.describe()}", "Recover")

    def recovered(session) -> None:
        if session is not None:  # reopened: this process's recovery file holds it before the old one goes
            win.bridge.sessionChanged.disconnect(recovered)
            if win.autosave.saver is not None:
                win.autosave.saver.dirty = True
                win.autosave.flush()
            autosave.discard(info)

    def finished(code):
        if code == QMessageBox.Yes:
            win.bridge.sessionChanged.connect(recovered)
            win.open_session_file(str(info.path), recovered=True)
        else:
            autosave.discard(info)

    box.finished.connect(finished)
    box.open()
    win._recovery_box = box
    return box


def model_of(reference: str) -> str:
    """The model a session / recovery file would open (the reference itself otherwise)."""
    p = Path(str(reference))
    if p.suffix.lower() in (".qvs", ".json") and p.is_file():
        try:
            from ..session import Session

            return str(Session.read_file(p).get("model") or reference)
        except Exception:  # noqa: BLE001 - not a session: the loader will say why
            return reference
    return reference


def needs_recipe_question(reference: str, store: TrustStore | None = None) -> bool:
    """True when opening ``reference`` (or the session file naming it) would run a recipe not yet agreed to."""
    target = model_of(reference)
    return is_recipe(target) and not (store or TrustStore()).is_trusted(target)


def ask_recipe(win, reference: str, on_yes: Callable[[], None], store: TrustStore | None = None) -> QMessageBox:
    """Say that the recipe is code; on "Run it" remember the file's hash, then call ``on_yes``."""
    store = store or TrustStore()
    target = model_of(reference)
    box = _question_box(win, "recipeTrustDialog", "Run this recipe?", f"{Path(target).name} is Python code.",
                        question(target), "Run it")

    def finished(code):
        if code == QMessageBox.Yes:
            store.trust(target)
            on_yes()
        else:
            win.show_message(f"Did not open {Path(target).name}: running the recipe was declined")

    box.finished.connect(finished)
    box.open()
    win._recipe_box = box
    return box


__all__ = ["AutosaveController", "offer_recovery", "needs_recipe_question", "ask_recipe", "model_of"]
