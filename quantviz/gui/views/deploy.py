"""The measured real quantized models: size, latency and accuracy per backend.

Shows the report of :func:`quantviz.session.deploy.benchmark` (the same
numbers as ``quantviz benchmark --json``) in a small non-modal window.
"""
from __future__ import annotations

import html

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QAbstractItemView, QAbstractScrollArea, QDialog, QDialogButtonBox, QHeaderView, QLabel, QTableWidget,
                               QTableWidgetItem, QVBoxLayout)

from ...core.fmt import fmt_bytes

ROWS = (("float", "float (torch)"), ("torchao", "torchao quantize_"), ("pt2e", "pt2e → oneDNN int8"),
        ("onnxruntime_float", "ONNX Runtime float"), ("onnxruntime", "ONNX Runtime QDQ"))
HEADERS = ("Backend", "Size", "Size vs float", "Latency", "Speed-up", "Accuracy", "Real kernels")


def _pct(v) -> str:
    return "—" if v is None else f"{v * 100:.2f}%"


def report_rows(rep: dict) -> list[list[str]]:
    """Table cells for a benchmark report (one row per backend present)."""
    rows = []
    for key, label in ROWS:
        r = rep.get(key)
        if r is None or "error" in r:
            continue
        ratio = r.get("size_ratio")
        speed = r.get("speedup")
        kernels = r.get("real_kernels", r.get("qdq_layers"))
        rows.append([label, fmt_bytes(r.get("size_bytes")),
                     "—" if ratio is None else f"{1 / ratio:.2f}× smaller" if ratio < 1 else f"{ratio:.2f}×",
                     f"{r['latency_ms']:.2f} ms" if r.get("latency_ms") is not None else "—",
                     "—" if speed is None else f"{speed:.2f}×",
                     _pct(r.get("accuracy")),
                     "—" if kernels is None else (f"{len(kernels)} layers" if kernels else "none")])
    return rows


class DeployReport(QDialog):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("deployReport")
        self.setWindowTitle("Real quantized models")
        self.report: dict | None = None
        self.header = QLabel()
        self.header.setWordWrap(True)
        self.table = QTableWidget(0, len(HEADERS))
        self.table.setHorizontalHeaderLabels(list(HEADERS))
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setFocusPolicy(Qt.NoFocus)
        self.table.setSelectionMode(QAbstractItemView.NoSelection)
        self.table.setSizeAdjustPolicy(QAbstractScrollArea.AdjustToContents)
        self.notes = QLabel()
        self.notes.setWordWrap(True)
        self.notes.setTextInteractionFlags(Qt.TextSelectableByMouse)
        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        buttons.rejected.connect(self.close)
        lay = QVBoxLayout(self)
        lay.addWidget(self.header)
        lay.addWidget(self.table, 1)
        lay.addWidget(self.notes)
        lay.addWidget(buttons)
        self.resize(820, 320)

    def set_report(self, rep: dict) -> None:
        self.report = rep
        sim = rep.get("simulated", {}).get("accuracy")
        self.header.setText(
            f"<b>{rep.get('model', '')}</b>: latency is the median of {rep.get('repeats')} calls on a batch of "
            f"{rep.get('batch')} after warm-up, {rep.get('threads')} CPU thread(s). The app's simulated accuracy "
            f"for this config: <b>{_pct(sim)}</b>. ONNX Runtime is compared with its own float model.")
        rows = report_rows(rep)
        self.table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            for j, text in enumerate(row):
                item = QTableWidgetItem(text)
                if j:
                    item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
                self.table.setItem(i, j, item)
        lines = []
        for key, label in ROWS:
            r = rep.get(key) or {}
            if r.get("error"):
                lines.append(f"<b>{label}</b> not measured: {html.escape(r['error'])}")
            if r.get("real_kernels"):
                lines.append(f"<b>{label}</b> real kernels: {', '.join(r['real_kernels'])}")
            if r.get("simulated"):
                lines.append(f"<b>{label}</b> simulated: {', '.join(r['simulated'])}")
        self.notes.setText("<br>".join(lines))
        self.table.resizeColumnsToContents()
        self.resize(max(self.width(), self.sizeHint().width()), self.sizeHint().height())


def main() -> int:  # pragma: no cover - a look at the widget alone
    from ..launch import standalone

    def build(session):
        w = DeployReport()
        w.set_report(session.run_benchmark(backends=(), repeats=3))
        return w

    return standalone(build)


if __name__ == "__main__":
    raise SystemExit(main())
