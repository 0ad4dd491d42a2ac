"""Which data a model is evaluated and calibrated on: the dialog, and its memory per model.

A model without data of its own (a Hugging Face folder, a TorchScript file, a
pickled module) cannot be opened from the app without naming some: the CLI's
``--data`` / ``--calib`` / ``--seq-len``. When an open fails for that reason
the app shows :class:`DataDialog`; File › Data… shows it for the open model to
choose other data (the model is reopened with it, the config kept). What the
user chose is remembered per model in the app's settings and filled in next
time.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QPushButton,
                               QSpinBox, QVBoxLayout, QWidget)

DATA_FILTER = ("Data (*.npz *.npy *.pt *.txt *.jsonl *.json);;Arrays (*.npz *.npy *.pt);;Text (*.txt *.jsonl *.json);;"
               "All files (*)")


@dataclass(frozen=True)
class DataChoice:
    """Evaluation data, optional calibration data, and the sequence length text is cut into (0: the model's)."""

    data: str
    calib: str = ""
    seq_len: int = 0

    @property
    def seq(self) -> int | None:
        return self.seq_len or None


def _key(reference: str) -> str:
    p = Path(str(reference))
    ref = str(p.expanduser().resolve()) if p.exists() else str(reference)
    return "data/" + ref.replace("/", "|")


def remembered(settings, reference: str) -> DataChoice | None:
    """The data last chosen for this model (None when there is none, or it is unreadable)."""
    raw = settings.value(_key(reference))
    try:
        d = json.loads(raw) if isinstance(raw, str) else None
        return DataChoice(str(d["data"]), str(d.get("calib") or ""), int(d.get("seq_len") or 0)) if d else None
    except (ValueError, KeyError, TypeError):
        return None


def remember(settings, reference: str, choice: DataChoice) -> None:
    settings.setValue(_key(reference), json.dumps(asdict(choice)))


class _PathField(QWidget):
    def __init__(self, placeholder: str, parent=None):
        super().__init__(parent)
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        self.file_btn = QPushButton("File…")
        self.folder_btn = QPushButton("Folder…")
        self.file_btn.setToolTip("Choose a data file (.npz with x[, y], token ids, a text file)")
        self.folder_btn.setToolTip("Choose an image folder (one sub-folder per class)")
        self.file_btn.clicked.connect(self._choose_file)
        self.folder_btn.clicked.connect(self._choose_folder)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.edit, 1)
        lay.addWidget(self.file_btn)
        lay.addWidget(self.folder_btn)

    def _choose_file(self) -> None:
        from . import dialogs

        path = dialogs.choose_open(self, "Choose data", DATA_FILTER, self.edit.text())
        if path:
            self.edit.setText(path)

    def _choose_folder(self) -> None:
        from . import dialogs

        path = dialogs.choose_folder(self, "Choose an image folder", self.edit.text())
        if path:
            self.edit.setText(path)


class DataDialog(QDialog):
    """Evaluation data (required), calibration data (optional) and sequence length for ``reference``."""

    def __init__(self, reference: str, initial: DataChoice | None = None, reason: str = "", parent=None):
        super().__init__(parent)
        self.setObjectName("dataDialog")
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.setWindowTitle("Data for the model")
        self.reference = reference
        self.intro = intro = QLabel(reason or f"Choose the data {Path(str(reference)).name or reference} is evaluated and "
                                 "calibrated on.")
        intro.setWordWrap(True)
        self.data = _PathField(".npz (x[, y] or token ids), an image folder, or a text file")
        self.calib = _PathField("optional")
        self.calib.edit.setToolTip("Calibration data; when empty, the first samples of the evaluation data (at most "
                                   "half) calibrate and the figures come from the rest, held out")
        self.seq_len = QSpinBox()
        self.seq_len.setRange(0, 1_000_000)
        self.seq_len.setSpecialValueText("model default")
        self.seq_len.setToolTip("Text data is cut into sequences of this many tokens (language models)")
        form = QFormLayout()
        form.addRow("Evaluation data:", self.data)
        form.addRow("Calibration data:", self.calib)
        form.addRow("Sequence length:", self.seq_len)
        self.error = QLabel()
        self.error.setObjectName("error")
        self.error.setWordWrap(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        self.buttons.button(QDialogButtonBox.Ok).setText("Open with this data")
        self.buttons.accepted.connect(self._on_ok)
        self.buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(intro)
        lay.addLayout(form)
        lay.addWidget(self.error)
        lay.addWidget(self.buttons)
        self.resize(620, self.sizeHint().height())
        if initial is not None:
            self.data.edit.setText(initial.data)
            self.calib.edit.setText(initial.calib)
            self.seq_len.setValue(initial.seq_len)

    def choice(self) -> DataChoice:
        return DataChoice(self.data.edit.text().strip(), self.calib.edit.text().strip(), int(self.seq_len.value()))

    def _on_ok(self) -> None:
        c = self.choice()
        for label, path in (("evaluation data", c.data), ("calibration data", c.calib)):
            if label == "evaluation data" and not path:
                self.error.setText("Choose the evaluation data.")
                return
            if path and not Path(path).expanduser().exists():
                self.error.setText(f"{label}: no such file or folder ({path})")
                return
        self.error.clear()
        self.accept()


__all__ = ["DataDialog", "DataChoice", "remembered", "remember"]
