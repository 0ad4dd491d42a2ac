"""QAT panel: quantization-aware training you can watch.

Left: the training loss and the held-out metric against steps. Right, for the
chosen layer: its quantizer scale (weights, and the input's when learned)
with its distance from the calibrated start, the fraction of integer codes
changed since the start and the clipped fraction, and the histogram of its
current weights. Pause / Resume / Cancel act on the running job; the curves
of the last run stay in the session (``analysis.qat``) and are shown again
when the session is reopened. Few long-lived plot items, updated with
``setData``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import threading

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout,
                               QGridLayout, QHBoxLayout, QLabel, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from ...core.fmt import every_nth
from ...core.numerics.preview import MAX_HIST_SAMPLES
from ..bridge import OnScreen, SessionFollower
from ..elided import ElidedLabel

if TYPE_CHECKING:
    from ...session.session import Session

PCT = ("accuracy", "top1_agreement")
REDRAW_MS = 40  # live training curves: at most ~25 redraws a second, however fast the steps come


def _plot(title: str, left: str, bottom: str = "step") -> pg.PlotWidget:
    w = pg.PlotWidget(background="w")
    pi = w.getPlotItem()
    pi.setTitle(title, color=(40, 40, 40), size="10pt")
    pi.setLabel("left", left)
    pi.setLabel("bottom", bottom)
    pi.showGrid(x=True, y=True, alpha=0.25)
    w.setMinimumSize(160, 150)  # three columns in a tab beside the summary on a 1024 px screen
    return w


class QATDialog(QDialog):
    """Steps, learning rate, LSQ on/off and the loss of one QAT run."""

    def __init__(self, parent=None, *, steps: int = 300, lr: float = 1e-3, lsq: bool = False):
        super().__init__(parent)
        self.setWindowTitle("Quantization-aware training")
        form = QFormLayout(self)
        self.steps = QSpinBox(minimum=1, maximum=1_000_000, value=steps)
        self.lr = QDoubleSpinBox(decimals=5, minimum=1e-5, maximum=1.0, singleStep=1e-4, value=lr)
        self.lsq = QCheckBox("learn the quantizer scales (LSQ)")
        self.lsq.setChecked(lsq)
        self.loss = QComboBox()
        self.loss.addItems(["auto", "ce", "kl", "mse"])
        self.loss.setToolTip("auto: the recipe's loss, else cross-entropy with labels, else distillation from the float model")
        form.addRow("Steps:", self.steps)
        form.addRow("Learning rate:", self.lr)
        form.addRow("", self.lsq)
        form.addRow("Loss:", self.loss)
        bb = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        bb.accepted.connect(self.accept)
        bb.rejected.connect(self.reject)
        form.addRow(bb)

    def options(self):
        from ...core.training.qat import QATOptions

        return QATOptions(steps=self.steps.value(), lr=self.lr.value(), lsq=self.lsq.isChecked(),
                          loss=self.loss.currentText())


class QATView(OnScreen, SessionFollower, QWidget):
    stepReported = Signal(object)  # emitted on the training thread, handled on the GUI thread

    def __init__(self, parent=None):
        super().__init__(parent)
        self.session: Session | None = None
        self.runner = None
        self._job = None
        self._pause = threading.Event()
        self._watch: set = set()
        self._curves = None
        self._weights: dict = {}
        self._hist_pending: str | None = None  # a layer whose histogram waits for the panel to be shown
        self.stepReported.connect(self._on_step)
        # steps arrive faster than curves can be redrawn (thousands a second on a small model): one
        # redraw per frame at most, or the GUI thread drowns in redraws and never reaches the user
        self._redraw_timer = QTimer(self)
        self._redraw_timer.setSingleShot(True)
        self._redraw_timer.setInterval(REDRAW_MS)
        self._redraw_timer.timeout.connect(self._redraw)
        top = QHBoxLayout()
        self.status = ElidedLabel("No training yet: Run › Quantization-aware training…")
        self.pause_btn = QPushButton("Pause")
        self.pause_btn.clicked.connect(self.toggle_pause)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.clicked.connect(self.cancel)
        self.layer_combo = QComboBox()
        self.layer_combo.setMinimumContentsLength(14)
        self.layer_combo.currentTextChanged.connect(self._on_layer_changed)
        top.addWidget(self.status, 1)
        top.addWidget(QLabel("Layer:"))
        top.addWidget(self.layer_combo)
        top.addWidget(self.pause_btn)
        top.addWidget(self.cancel_btn)
        self.loss_plot = _plot("training loss", "loss")
        self.metric_plot = _plot("held-out metric", "metric")
        self.scale_plot = _plot("scale vs calibrated", "scale / start")
        self.codes_plot = _plot("codes changed / clipped", "fraction (%)")
        self.hist_plot = _plot("current weights", "count", "weight")
        self.loss_item = self.loss_plot.plot(pen=pg.mkPen(40, 90, 170, width=1.5))
        self.metric_item = self.metric_plot.plot(pen=pg.mkPen(30, 140, 60, width=2), symbol="o", symbolSize=6,
                                                 symbolBrush=pg.mkBrush(30, 140, 60))
        self.scale_plot.getPlotItem().addLegend(offset=(5, 5), labelTextColor=(40, 40, 40))
        self.w_scale_item = self.scale_plot.plot(pen=pg.mkPen(170, 60, 40, width=2), name="weight scale")
        self.a_scale_item = self.scale_plot.plot(pen=pg.mkPen(120, 60, 170, width=2, style=Qt.DashLine), name="input scale")
        self.codes_plot.getPlotItem().addLegend(offset=(5, 5), labelTextColor=(40, 40, 40))
        self.changed_item = self.codes_plot.plot(pen=pg.mkPen(40, 90, 170, width=2), name="codes changed")
        self.clipped_item = self.codes_plot.plot(pen=pg.mkPen(220, 120, 20, width=2), name="weights clipped")
        self.hist_item = pg.PlotDataItem(stepMode="center", fillLevel=0, pen=pg.mkPen(90, 90, 90),
                                         brush=pg.mkBrush(90, 130, 200, 120))
        self.hist_plot.addItem(self.hist_item)
        grid = QGridLayout()
        grid.addWidget(self.loss_plot, 0, 0)
        grid.addWidget(self.metric_plot, 1, 0)
        grid.addWidget(self.scale_plot, 0, 1)
        grid.addWidget(self.codes_plot, 1, 1)
        grid.addWidget(self.hist_plot, 0, 2, 2, 1)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addLayout(grid, 1)
        self._set_running(False)

    # ------------------------------------------------------------ wiring
    def set_runner(self, runner) -> None:
        self.runner = runner

    def set_session(self, session) -> None:
        self.session = session
        self.follow(session)
        self.when_shown(self._catch_up)
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        if session is not None:
            self.layer_combo.addItems(session.layer_names)
        self.layer_combo.blockSignals(False)
        self._on_layer_changed(self.layer_combo.currentText())
        self._show_stored()

    def _catch_up(self, raised: bool) -> None:
        if self._hist_pending is not None and (raised or self.on_screen()):
            self._draw_hist(self._hist_pending, force=True)

    def select_layer(self, name: str) -> None:
        if name and self.layer_combo.findText(name) >= 0:
            self.layer_combo.setCurrentText(name)

    def _on_session_analysis_changed(self, what: str, payload) -> None:
        if what in ("qat", "all") and self._job is None:
            self._show_stored()

    def _show_stored(self) -> None:
        rec = self.session.analysis.qat if self.session is not None else None
        self._curves = rec["curves"] if rec else None
        if rec:
            m = rec["curves"].get("metric_name")
            b, a = rec["before"]["metrics"].get(m), rec["after"]["metrics"].get(m)
            st = rec["settings"]
            self.status.setText(f"Last run: {st['steps']} steps, lr {st['lr']:g}, LSQ {'on' if st['lsq'] else 'off'}, "
                                f"{rec['seconds']:.1f} s — {m} {self._fmt(m, b)} → {self._fmt(m, a)}")
        self._redraw()

    # ----------------------------------------------------------- the job
    def start(self, options, *, paused: bool = False) -> None:
        """Run QAT on the current session through the job runner (``paused``: hold it before the first step)."""
        from ...core.training.qat import new_curves

        s = self.session
        if s is None or self.runner is None:
            return
        self._curves = new_curves(None, s.layer_names)
        self._weights = {}
        self._watch = {self.layer_combo.currentText()}
        self.status.setText(f"Training {options.steps} steps…")

        def job(progress, cancel):
            return s.run_qat(options, on_step=self.stepReported.emit, watch=lambda: set(self._watch),
                             progress=progress, cancel=cancel, pause=self._pause.is_set)

        def ended(*_a):
            self._job = None
            self._set_running(False)
            self._show_stored()

        def failed(message, details, exc):
            ended()
            self.status.setText(f"Training stopped: {message}")

        def cancelled():
            ended()
            self.status.setText("Training cancelled: the session is unchanged")

        self._job = self.runner.submit("qat", job, label="Quantization-aware training", on_done=ended,
                                       on_error=failed, on_cancel=cancelled)
        self._set_running(True)
        if paused:
            self._pause.set()
            self.pause_btn.setText("Resume")
        else:
            self._pause.clear()

    def toggle_pause(self) -> None:
        if self._pause.is_set():
            self._pause.clear()
            self.status.setText("Training…")
        else:
            self._pause.set()
            self.status.setText("Paused (Resume continues from this step)")
        self.pause_btn.setText("Resume" if self._pause.is_set() else "Pause")

    def cancel(self) -> None:
        self._pause.clear()
        if self._job is not None:
            self._job.cancel()

    def _set_running(self, running: bool) -> None:
        self.pause_btn.setEnabled(running)
        self.cancel_btn.setEnabled(running)
        self.pause_btn.setText("Pause")

    def _on_step(self, info: dict) -> None:
        c = self._curves
        if c is None or self._job is None:
            return
        from ...core.training.qat import append_snapshot

        c["step"].append(info["step"])
        c["loss"].append(info["loss"])
        if "metric" in info:
            (name, v), = info["metric"].items()
            c["metric_name"] = name
            c["eval_step"].append(info["step"])
            c["metric"].append(v)
        if "layers" in info:
            append_snapshot(c, info["step"], info["layers"])
            self._weights.update(info.get("weights") or {})
        if not self._pause.is_set():
            self.status.setText(f"Step {info['step']}/{info['steps']}  loss {info['loss']:.4f}")
        if not self._redraw_timer.isActive():
            self._redraw_timer.start()

    # ------------------------------------------------------------ drawing
    @staticmethod
    def _fmt(metric, v) -> str:
        if v is None:
            return "–"
        return f"{v * 100:.2f} %" if metric in PCT else f"{v:.4g}"

    def _on_layer_changed(self, name: str) -> None:
        self._watch = {name} if name else set()
        self._redraw()

    def _redraw(self) -> None:
        c = self._curves or {}
        self.loss_item.setData(c.get("step", []), c.get("loss", []))
        m = c.get("metric_name")
        scale = 100.0 if m in PCT else 1.0
        self.metric_item.setData(c.get("eval_step", []), [v * scale for v in c.get("metric", [])])
        self.metric_plot.getPlotItem().setLabel("left", f"{m} (%)" if m in PCT else (m or "metric"))
        name = self.layer_combo.currentText()
        lay = (c.get("layers") or {}).get(name, {})
        xs = c.get("log_step", [])

        def rel(key):
            v = lay.get(key, [])
            return [x / v[0] for x in v] if v and v[0] else []

        ws, as_ = rel("w_scale"), rel("a_scale")
        self.w_scale_item.setData(xs[:len(ws)], ws)
        self.a_scale_item.setData(xs[:len(as_)] if len(set(as_)) > 1 else [], as_ if len(set(as_)) > 1 else [])
        ch, cl = lay.get("w_changed", []), lay.get("w_clipped", [])
        self.changed_item.setData(xs[:len(ch)], [v * 100 for v in ch])
        self.clipped_item.setData(xs[:len(cl)], [v * 100 for v in cl])
        self._draw_hist(name)

    def _draw_hist(self, name: str, force: bool = False) -> None:
        """The layer's current weights; drawn when the panel is on screen (else when it is shown), from
        at most ``MAX_HIST_SAMPLES`` evenly strided weights (a big embedding holds tens of millions)."""
        if not (force or self.on_screen()):
            self._hist_pending = name
            return
        self._hist_pending = None
        w = self._weights.get(name)
        if w is None and self.session is not None and name in self.session.layer_names:
            w = self.session.sim.float_weight(name)
        if w is None:
            self.hist_item.setData([], [])
            return
        flat = w.detach().reshape(-1)
        stride = max(1, -(-flat.numel() // MAX_HIST_SAMPLES))
        counts, edges = np.histogram(flat[::stride].float().cpu().numpy(), bins=80)
        self.hist_item.setData(edges, counts * stride)
        sampled = f" ({every_nth(stride, 'weight')})" if stride > 1 else ""
        self.hist_plot.getPlotItem().setTitle(f"current weights: {name}{sampled}", color=(40, 40, 40), size="10pt")


def ask_and_start(win) -> None:
    """Run › Quantization-aware training…: ask for the settings, raise the panel, start."""
    view = getattr(win, "qat", None)
    if view is None or win.session is None:
        return
    dlg = QATDialog(win)
    if dlg.exec() != QDialog.Accepted:
        return
    dock = getattr(win, "docks", {}).get("qat")
    if dock is not None:
        dock.show()
        dock.raise_()
    view.start(dlg.options())


def main() -> int:  # pragma: no cover - a look at the widget alone
    from ...core.training.qat import QATOptions
    from ...io.config import preset
    from ..launch import standalone

    def build(session):
        session.set_config(preset("W2"))
        session.run_qat(QATOptions(steps=30, lr=1e-3, log_every=3, eval_every=5))
        w = QATView()
        w.set_session(session)
        w.select_layer(session.layer_names[1])
        w.resize(1100, 520)
        return w

    return standalone(build)


if __name__ == "__main__":
    raise SystemExit(main())
