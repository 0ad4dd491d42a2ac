"""Small dialogs: error details, the trust question, file choosers.

Dialogs the app opens by itself are window-modal but never block the event
loop (``open()``, not ``exec()``), so background jobs keep reporting and
tests can find and answer them.
"""
from __future__ import annotations

from typing import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QFileDialog, QLabel, QMessageBox, QPlainTextEdit,
                               QVBoxLayout, QWidget)

MODEL_FILTER = ("Models (*.py *.pt *.pth *.ts *.pt2 *.onnx *.qvs *.json);;Python recipe (*.py);;"
                "TorchScript / pickled module (*.pt *.pth *.ts);;torch.export program (*.pt2);;ONNX model (*.onnx);;"
                "quantviz session (*.qvs);;All files (*)")
SESSION_FILTER = "quantviz session (*.qvs);;All files (*)"
CONFIG_FILTER = "quantviz config (*.json);;All files (*)"


class ErrorDialog(QDialog):
    """The message of a failed job and, below it, the technical details."""

    def __init__(self, message: str, details: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("quantviz — error")
        self.setObjectName("errorDialog")
        self.resize(640, 360)
        text = QLabel(message)
        text.setObjectName("error")
        text.setWordWrap(True)
        text.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.details = QPlainTextEdit(details or "(no details)")
        self.details.setReadOnly(True)
        self.details.setToolTip("What went wrong, in full; copy it into a bug report if it looks like a bug.")
        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(text)
        lay.addWidget(QLabel("Details:"))
        lay.addWidget(self.details, 1)
        lay.addWidget(buttons)


def ask_trust(parent: QWidget, message: str, on_yes: Callable[[], None]) -> QMessageBox:
    """Ask whether to load a file that runs code when opened (non-blocking)."""
    box = QMessageBox(parent)
    box.setObjectName("trustDialog")
    box.setIcon(QMessageBox.Warning)
    box.setWindowTitle("Trust this file?")
    box.setText("Opening this model runs code stored in the file.")
    box.setInformativeText(f"{message}\n\nOnly continue if you trust where the file came from.")
    box.setStandardButtons(QMessageBox.Yes | QMessageBox.Cancel)
    box.setDefaultButton(QMessageBox.Cancel)
    box.button(QMessageBox.Yes).setText("Trust and open")
    box.setAttribute(Qt.WA_DeleteOnClose)

    def finished(code):
        if code == QMessageBox.Yes:
            on_yes()

    box.finished.connect(finished)
    box.open()
    return box


def choose_open(parent, title: str, filt: str, start: str = "") -> str | None:
    path, _ = QFileDialog.getOpenFileName(parent, title, start, filt)
    return path or None


def choose_folder(parent, title: str, start: str = "") -> str | None:
    return QFileDialog.getExistingDirectory(parent, title, start) or None


def choose_save(parent, title: str, filt: str, start: str = "") -> str | None:
    path, _ = QFileDialog.getSaveFileName(parent, title, start, filt)
    return path or None
