"""Trace view: where the quantization error enters, along the network's depth.

Two curves over the quantizable layers in execution order: the
**accumulated** SQNR (the layer's output in the fully quantized model vs the
float model) and the **local** SQNR (only this layer's own quantization, on
the float input). Layers still identical to the float model sit on the
"float" line at the top. The layer where the error enters and the biggest
drop between consecutive layers are marked; hovering shows every number of a
layer; clicking selects it everywhere. A previous config's curves (or a
pinned one) are drawn dashed for comparison. The last point, **model output**,
is the output the metrics read, measured as the re-check's output SQNR (so it
equals the summary's); layers that output does not depend on (a BERT's pooler
when the metrics read the hidden states) are drawn hollow and named so.

Reads ``session.analysis.trace`` (:func:`quantviz.session.trace.run_trace`).
It follows the session's events; with a runner (the main window gives it
one) it re-traces after every re-check of the current config, at once when on screen, else when
shown; only the changed layers' terms are recomputed.

Signals:
    layerClicked(str): the user clicked a layer.

Run alone for a look: ``python -m quantviz.gui.views.trace [MODEL]``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import math

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout,
                               QWidget)

from .. import theme
from ..bridge import OnScreen, SessionFollower

if TYPE_CHECKING:
    from ...session.session import Session

ACC_COLOR = (40, 90, 170)
LOCAL_COLOR = (230, 130, 30)
PREV_COLOR = (140, 140, 150)
DROP_COLOR = (200, 40, 40)
MUTED_RGB = (150, 155, 165)
LABEL_MAX_PX = 140
OUTPUT_LABEL = "model output"
UNUSED_RGB = (175, 180, 190)
CURVES = {"out": ("layer outputs", "accumulated_sqnr_db", "local_sqnr_db"),
          "in": ("layer inputs (quantized ones)", "input_accumulated_sqnr_db", "input_local_sqnr_db")}


def _fmt(v) -> str:
    if v is None:
        return "–"
    return "float (exact)" if math.isinf(v) and v > 0 else f"{v:.1f} dB"


def curve_values(res, key: str) -> list:
    """``getattr(layer, key)`` per layer: dB, inf (no error) or None (not applicable)."""
    return [getattr(l, key) for l in res.layers] if res is not None else []


class TraceView(OnScreen, SessionFollower, QWidget):
    layerClicked = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.session: Session | None = None
        self.runner = None
        self.result = None  # the shown trace
        self.previous = None  # the trace of the config before
        self.pinned = None
        self._stale = False
        self._names: list[str] = []
        self._ceiling = 0.0

        top = QHBoxLayout()
        top.addWidget(QLabel("Curves:"))
        self.curve_combo = QComboBox()
        for key, (text, _a, _l) in CURVES.items():
            self.curve_combo.addItem(text, key)
        self.curve_combo.setToolTip("Outputs: each layer's output. Inputs: the activation entering each layer whose "
                                    "input is quantized (after its quantizer).")
        self.curve_combo.currentIndexChanged.connect(lambda _i: self._redraw())
        top.addWidget(self.curve_combo)
        self.compare_box = QCheckBox("Compare")
        self.compare_box.setChecked(True)
        self.compare_box.setToolTip("Draw the previous config's curves (or the pinned ones) dashed.")
        self.compare_box.toggled.connect(lambda _c: self._redraw())
        top.addWidget(self.compare_box)
        self.pin_button = QPushButton("Pin")
        self.pin_button.setCheckable(True)
        self.pin_button.setToolTip("Keep the current curves as the comparison while you edit; click again to unpin.")
        self.pin_button.toggled.connect(self._on_pin_toggled)
        top.addWidget(self.pin_button)
        top.addStretch(1)
        self.run_button = QPushButton("Trace now")
        self.run_button.setToolTip("Trace the current config on the evaluation data (runs in the background).")
        self.run_button.clicked.connect(lambda: self.request(force=True))
        top.addWidget(self.run_button)

        self.plot = pg.PlotWidget(background="w")
        pi = self.plot.getPlotItem()
        pi.setLabel("left", "SQNR (dB)")
        pi.setLabel("bottom", "layers in execution order")
        pi.showGrid(x=False, y=True, alpha=0.25)
        pi.setMenuEnabled(False)
        self.plot.hideButtons()
        self.plot.setMouseEnabled(False, False)
        pi.addLegend(offset=(-10, 4), labelTextColor=(40, 40, 40), brush=pg.mkBrush(255, 255, 255, 220))
        pi.legend.setColumnCount(3)  # one row in the headroom above the float line, never over a curve
        pi.vb.sigResized.connect(self._fit_y)
        self.acc_item = pg.PlotDataItem(pen=pg.mkPen(ACC_COLOR, width=2.5), symbol="o", symbolSize=8,
                                        symbolPen=pg.mkPen(ACC_COLOR), symbolBrush=pg.mkBrush(ACC_COLOR),
                                        name="accumulated")
        self.local_item = pg.PlotDataItem(pen=pg.mkPen(LOCAL_COLOR, width=2), symbol="s", symbolSize=7,
                                          symbolPen=pg.mkPen(LOCAL_COLOR), symbolBrush=pg.mkBrush(255, 255, 255),
                                          name="local (own error only)")
        self.prev_acc_item = pg.PlotDataItem(pen=pg.mkPen(PREV_COLOR, width=1.5, style=Qt.DashLine), name="previous")
        self.prev_local_item = pg.PlotDataItem(pen=pg.mkPen(PREV_COLOR, width=1, style=Qt.DotLine))
        self.out_item = pg.ScatterPlotItem(symbol="d", size=15, pen=pg.mkPen(ACC_COLOR, width=1.5),
                                           brush=pg.mkBrush(ACC_COLOR))  # the model output's SQNR
        # named beside the point: the axis drops a tick label that would reach past its end, as this one's does
        self.out_text = pg.TextItem(OUTPUT_LABEL, color=ACC_COLOR, anchor=(1, 1.1))
        self.unused_item = pg.ScatterPlotItem(symbol="o", size=9, pen=pg.mkPen(UNUSED_RGB, width=1.5),
                                              brush=pg.mkBrush(255, 255, 255))  # layers not feeding the output
        self.drop_item = pg.PlotDataItem(pen=pg.mkPen(DROP_COLOR, width=5))
        self.drop_text = pg.TextItem(color=DROP_COLOR, anchor=(0, 0.5))
        self.float_line = pg.InfiniteLine(angle=0, pen=pg.mkPen(MUTED_RGB, width=1, style=Qt.DashLine),
                                          label="float (no error)", labelOpts={"position": 0.03, "color": MUTED_RGB,
                                                                               "anchors": [(0, 1), (0, 1)]})
        self.entry_line = pg.InfiniteLine(angle=90, pen=pg.mkPen(DROP_COLOR, width=1, style=Qt.DotLine),
                                          label="error enters", labelOpts={"position": 0.06, "color": DROP_COLOR,
                                                                           "anchors": [(0, 1), (0, 1)]})
        self.sel_line = pg.InfiniteLine(angle=90, pen=pg.mkPen(theme.ACCENT_SOFT, width=10))
        self.hover_line = pg.InfiniteLine(angle=90, pen=pg.mkPen(120, 120, 120, 120, width=1))
        for it in (self.sel_line, self.hover_line, self.float_line, self.entry_line, self.prev_acc_item,
                   self.prev_local_item, self.drop_item, self.acc_item, self.local_item, self.unused_item,
                   self.out_item, self.out_text, self.drop_text):
            pi.addItem(it)
        pi.legend.removeItem(self.prev_acc_item)
        for it in (self.sel_line, self.hover_line, self.float_line, self.entry_line, self.drop_text, self.out_text):
            it.setVisible(False)
        self.plot.scene().sigMouseMoved.connect(self._on_plot_hover)
        self.plot.scene().sigMouseClicked.connect(self._on_plot_clicked)

        self.info = QLabel()
        self.info.setWordWrap(True)
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.plot, 1)
        lay.addWidget(self.info)
        self._redraw()

    # ------------------------------------------------------------ wiring
    def set_runner(self, runner) -> None:
        self.runner = runner

    def set_session(self, session) -> None:
        self.follow(session)
        self.when_shown(self._catch_up)  # a tab behind another is hidden: raising it catches up
        if session is not self.session:
            self.session = session
            self.result = self.previous = None
            self.pin_button.setChecked(False)
        self.run_button.setEnabled(session is not None)
        self.show_result(session.analysis.trace if session is not None else None)

    # ------------------------------------------------------------ jobs
    def request(self, force: bool = False) -> None:
        """Trace the current config in the background (now when on screen or ``force``, else when shown)."""
        s = self.session
        if s is None or self.runner is None or not s.prepared:
            return
        if not (force or self.on_screen()):
            self._stale = True
            return
        self._stale = False

        def job(progress, cancel):
            return s.run_trace(progress=progress, cancel=cancel)

        def failed(message, details, exc):
            if s is self.session:
                self.info.setText(f"<span style='color:#c03030'>Trace failed: {message}</span>")

        self.runner.submit("trace", job, label="Tracing the error", on_done=lambda r: self._on_job_done(s, r),
                           on_error=failed)

    def _on_job_done(self, session, result) -> None:
        if session is self.session:
            self.show_result(result)

    def _on_session_result(self, result) -> None:
        s = self.session
        if s is not None and result is not None and s.is_wanted(result.generation):
            self.request()  # the current config was re-checked: trace it too

    def _on_session_config_changed(self, _change) -> None:
        if self.runner is not None:
            self.runner.cancel("trace")  # stale now; the next re-check's result starts a new one

    def _on_session_analysis_changed(self, what: str, _payload) -> None:
        if what in ("trace", "all") and self.session is not None:
            self.show_result(self.session.analysis.trace)

    def _catch_up(self, raised: bool) -> None:
        if self._stale:
            self.request(force=raised)

    # ------------------------------------------------------------ data
    def show_result(self, result) -> None:
        if result is self.result:
            return
        if self.result is not None and result is not None and result.config != self.result.config:
            self.previous = self.result
        self.result = result
        self._redraw()

    def _on_pin_toggled(self, on: bool) -> None:
        self.pinned = self.result if on else None
        self.pin_button.setText("Pinned" if on else "Pin")
        self._redraw()

    @property
    def comparison(self):
        """The curves drawn dashed: the pinned trace, else the previous config's."""
        if not self.compare_box.isChecked():
            return None
        other = self.pinned if self.pinned is not None else self.previous
        return other if other is not self.result else None

    @property
    def output_x(self) -> int | None:
        """The x of the model-output point (after the last layer), or None when it is not drawn."""
        r = self.result
        if r is None or not r.layers or r.output_sqnr_db is None or (self.curve_combo.currentData() or "out") != "out":
            return None
        return len(self._names)

    def _y(self, v: float) -> float:
        return self._ceiling if math.isinf(v) else v

    def _xy(self, res, key: str):
        """x, y (inf drawn on the float line), per-point brushes (hollow on the float line)."""
        pos = {n: i for i, n in enumerate(self._names)}
        xs, ys = [], []
        for l, v in zip(res.layers, curve_values(res, key)):
            if v is None or l.name not in pos:
                continue
            xs.append(pos[l.name])
            ys.append(self._ceiling if math.isinf(v) else v)
        return xs, ys

    def _redraw(self) -> None:
        r = self.result
        key_mode = self.curve_combo.currentData() or "out"
        _text, acc_key, loc_key = CURVES[key_mode]
        if r is None or not r.layers:
            for it in (self.acc_item, self.local_item, self.prev_acc_item, self.prev_local_item, self.drop_item,
                       self.out_item, self.unused_item):
                it.setData([], [])
            for it in (self.float_line, self.entry_line, self.drop_text, self.out_text):
                it.setVisible(False)
            self._names = []
            self.info.setText("No trace yet: Run › Trace error through layers, or the Trace now button "
                              "(quantviz trace MODEL on the command line).")
            return
        self._names = r.names
        other = self.comparison
        finite = [v for res in (r, other) if res is not None for k in (acc_key, loc_key)
                  for v in curve_values(res, k) if v is not None and math.isfinite(v)]
        if key_mode == "out" and r.output_sqnr_db is not None and math.isfinite(r.output_sqnr_db):
            finite.append(r.output_sqnr_db)
        top = max(finite) if finite else 40.0
        low = min(finite) if finite else 0.0
        self._ceiling = top + max(6.0, 0.12 * (top - low))
        self.acc_item.setData(*self._xy(r, acc_key))
        self.local_item.setData(*self._xy(r, loc_key))
        if other is not None:
            self.prev_acc_item.setData(*self._xy(other, acc_key))
            self.prev_local_item.setData(*self._xy(other, loc_key))
            tag = "pinned" if other is self.pinned else "previous"
            self.plot.getPlotItem().legend.removeItem(self.prev_acc_item)
            self.plot.getPlotItem().legend.addItem(self.prev_acc_item, f"{tag}: {other.label} (dotted: local)")
        else:
            self.prev_acc_item.setData([], [])
            self.prev_local_item.setData([], [])
            self.plot.getPlotItem().legend.removeItem(self.prev_acc_item)
        self.float_line.setPos(self._ceiling)
        self.float_line.setVisible(True)
        ox = self.output_x
        self.out_item.setData([ox] if ox is not None else [], [self._y(r.output_sqnr_db)] if ox is not None else [])
        self.out_text.setVisible(ox is not None)
        if ox is not None:
            self.out_text.setPos(ox, self._y(r.output_sqnr_db))
        unused = [(i, v) for i, (l, v) in enumerate(zip(r.layers, curve_values(r, acc_key)))
                  if l.feeds_output is False and v is not None]
        self.unused_item.setData([i for i, _ in unused], [self._y(v) for _, v in unused])
        self._mark_entry_and_drop(r, key_mode, acc_key)
        pi = self.plot.getPlotItem()
        self._update_ticks()
        pi.setXRange(-0.5, len(self._names) + (0.5 if ox is not None else -0.5), padding=0.02)
        self._floor = min(low, 0.0) - 2
        self._fit_y()
        self._default_info()

    def _fit_y(self, *_a) -> None:
        """The y range with room above the float line for the legend's row (kept as the plot resizes)."""
        if getattr(self, "_floor", None) is None:
            return
        pi = self.plot.getPlotItem()
        span = self._ceiling - self._floor
        room = pi.legend.boundingRect().height() + 8
        h = max(120.0, pi.vb.height())
        pi.setYRange(self._floor, self._ceiling + span * room / max(40.0, h - room), padding=0)

    def _update_ticks(self) -> None:
        """Layer names under the axis: every k-th one when they do not all fit (the rest get a bare tick),
        long names elided at the front (the tail is what tells layers apart)."""
        ax = self.plot.getPlotItem().getAxis("bottom")
        names = self._names + ([OUTPUT_LABEL] if self._names and self.output_x is not None else [])
        n = len(names)
        if not n:
            ax.setTicks([[]])
            return
        fm = self.fontMetrics()
        labels = [fm.elidedText(name, Qt.ElideLeft, LABEL_MAX_PX) for name in names]
        need = max(fm.horizontalAdvance(t) for t in labels) + 14
        per = max(self.plot.getPlotItem().vb.width(), 100.0) / n
        step = max(1, math.ceil(need / per))
        shown = set(range(0, n, step)) | ({n - 1} if names[-1] == OUTPUT_LABEL else set())  # the output always
        if names[-1] == OUTPUT_LABEL and (n - 1) % step:
            shown.discard(n - 1 - (n - 1) % step)  # closer than a label's width: no two labels on top of each other
        ax.setTicks([[(i, labels[i]) for i in sorted(shown)], [(i, "") for i in range(n) if i not in shown]])

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self._names:
            self._update_ticks()

    def _mark_entry_and_drop(self, r, key_mode: str, acc_key: str) -> None:
        vals = curve_values(r, acc_key)
        entry = r.entry if key_mode == "out" else next(
            (i for i, v in enumerate(vals) if v is not None and math.isfinite(v)), None)
        self.entry_line.setVisible(entry is not None)
        if entry is not None:
            self.entry_line.setPos(entry)
        best = None
        prev_i = None
        for i, v in enumerate(vals):
            if v is None:
                continue
            if prev_i is not None and math.isfinite(v) and math.isfinite(vals[prev_i]):
                d = vals[prev_i] - v
                if d > 0 and (best is None or d > best[2]):
                    best = (prev_i, i, d)
            prev_i = i
        self._drop = best
        if best is None:
            self.drop_item.setData([], [])
            self.drop_text.setVisible(False)
            return
        a, b, d = best
        self.drop_item.setData([a, b], [vals[a], vals[b]])
        self.drop_text.setText(f" biggest drop −{d:.1f} dB")
        self.drop_text.setAnchor((0, -0.2) if b < 0.7 * len(vals) else (1, -0.2))  # below the point, inside
        self.drop_text.setPos(b, vals[b])
        self.drop_text.setVisible(True)

    def _default_info(self) -> None:
        r = self.result
        what = f"{r.samples} samples" + (f", {r.tokens} real tokens" if r.tokens is not None else "")
        drop = getattr(self, "_drop", None)
        parts = [f"Trace of <b>{r.label}</b> on {r.data} ({what})."]
        if r.entry is not None:
            parts.append(f"Error enters at <b>{r.layers[r.entry].name}</b>.")
        if drop is not None:
            parts.append(f"Biggest drop: <b>{self._names[drop[1]]}</b> (−{drop[2]:.1f} dB).")
        if r.output_sqnr_db is not None:
            parts.append(f"Model output: <b>{_fmt(r.output_sqnr_db)}</b> (the output the metrics read, "
                         f"as the re-check's SQNR).")
        if r.not_feeding:
            parts.append(f"Not feeding that output (hollow): {', '.join(r.not_feeding)}.")
        if r.not_executed:
            parts.append(f"Not reached: {', '.join(r.not_executed)}.")
        parts.append("Hover for values; click to select a layer.")
        self.info.setText(" ".join(parts))

    # ---------------------------------------------------------- selection
    def show_layer(self, name: str) -> None:
        """Highlight the layer selected elsewhere."""
        if name in self._names:
            self.sel_line.setPos(self._names.index(name))
            self.sel_line.setVisible(True)
        else:
            self.sel_line.setVisible(False)

    def _index_at(self, scene_pos):
        vb = self.plot.getPlotItem().vb
        if not self._names or not vb.sceneBoundingRect().contains(scene_pos):
            return None
        i = int(round(vb.mapSceneToView(scene_pos).x()))
        last = len(self._names) if self.output_x is not None else len(self._names) - 1
        return i if 0 <= i <= last else None

    def layer_text(self, i: int) -> str:
        r = self.result
        if i == len(r.layers):
            return (f"<b>{OUTPUT_LABEL}</b> (what the metrics read): {_fmt(r.output_sqnr_db)}, "
                    f"the re-check's output SQNR on these samples")
        l = r.layers[i]
        bits = l.setting or (f"W{l.weight_bits}" if l.weight_bits is not None else "float weights") + (
            f" A{l.act_bits}" if l.act_bits is not None else "")
        text = (f"<b>{l.name}</b> ({l.type}, {bits}): accumulated {_fmt(l.accumulated_sqnr_db)}, "
                f"local {_fmt(l.local_sqnr_db)}")
        if l.input_local_sqnr_db is not None:
            clip = l.input_clipped_fraction or 0.0
            text += (f"; input accumulated {_fmt(l.input_accumulated_sqnr_db)}, local {_fmt(l.input_local_sqnr_db)}, "
                     f"clipped {clip * 100:.3g}%")
        if l.feeds_output is False:
            text += "; does not feed the model output the metrics read"
        return text

    def _on_plot_hover(self, pos) -> None:
        i = self._index_at(pos)
        if i is None or self.result is None:
            self.hover_line.setVisible(False)
            return
        self.hover_line.setPos(i)
        self.hover_line.setVisible(True)
        self.info.setText(self.layer_text(i))

    def _on_plot_clicked(self, ev) -> None:
        i = self._index_at(ev.scenePos())
        if i is not None and i < len(self._names):  # the model-output point is no layer
            self.show_layer(self._names[i])
            self.layerClicked.emit(self._names[i])

    def leaveEvent(self, event) -> None:
        super().leaveEvent(event)
        self.hover_line.setVisible(False)
        if self.result is not None:
            self._default_info()


def main() -> int:  # pragma: no cover - a look at the widget alone
    from ..launch import standalone

    def build(session):
        session.apply_preset("W4")
        session.run_trace()
        session.apply_preset("W3")
        w = TraceView()
        w.set_session(session)
        w.show_result(session.run_trace())
        w.resize(900, 420)
        return w

    return standalone(build)


if __name__ == "__main__":
    raise SystemExit(main())
