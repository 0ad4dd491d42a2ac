"""The histogram panel: a layer's weight / activation distribution and its clip range.

Each histogram tab shows the float distribution, the quantization levels and
the quantized histogram, with the clip range as a draggable band. While the
band is dragged the layer's quantized histogram, SQNR, MSE and clipped
fraction follow it (``quantviz.core.preview``; one tensor, no model pass,
throttled by a single-shot timer) and :attr:`HistogramPanel.rangePreview` is
emitted; on release :attr:`HistogramPanel.rangeCommitted` asks the main
window to store ``manual [lo, hi]`` and start a re-check. A third tab shows
every output channel's range (``channel_ranges.py``).

Run ``python -m quantviz.gui.views.histogram`` to open it alone on the demo.
"""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QSizePolicy, QTabWidget, QVBoxLayout, QWidget

from ...core.errors import QuantvizError
from ..bridge import SessionFollower
from ...core.preview import channel_ranges, display_edges, preview_activation, preview_weight
from .channel_ranges import ChannelRangeView
from .hist_extras import ClipRangeEditor, LevelMarkers, legend_html
from .hist_math import fmt_stats, format_label, format_note, grid_note, weight_note

THROTTLE_MS = 30  # at most ~30 previews per second while dragging
LOG_FLOOR = 0.5  # empty bins are drawn at this count on a log axis
RUG_ABOVE = 64  # with more levels than this, draw them as short ticks
FLOAT_PEN, FLOAT_BRUSH = (70, 105, 170), (100, 145, 215, 150)
QUANT_PEN = (230, 110, 20)
LEVEL_PEN = (60, 60, 60, 70)
REGION_BRUSH, REGION_HOVER = (250, 200, 60, 45), (250, 200, 60, 80)
REGION_LINE = (200, 60, 30)


class RangeHistogram(QWidget):
    """One histogram plot (float, quantized, levels) with a draggable clip band.

    Emits ``dragged(lo, hi)`` at most every THROTTLE_MS while the band moves
    and ``released(lo, hi)`` when the user lets go; programmatic moves
    (:meth:`show_preview`) emit nothing.
    """

    dragged = Signal(float, float)
    released = Signal(float, float)

    def __init__(self, xlabel: str, ylabel: str, parent=None):
        super().__init__(parent)
        self.stats = QLabel("")
        self.stats.setWordWrap(True)
        self.stats.setToolTip("Signal-to-quantization-noise ratio, mean squared error and share of values "
                              "outside the grid for this tensor under the shown clip range (updates while you drag).")
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: #555;")
        # one line of fixed height, never wrapped: a longer stats line while dragging never moves the plot
        self.stats.setWordWrap(False)
        self.stats.setFixedHeight(self.fontMetrics().lineSpacing() + 4)
        self.stats.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Fixed)
        self.legend = QLabel(legend_html(FLOAT_PEN, QUANT_PEN, REGION_LINE))  # above the plot, never over the data
        self.editor = ClipRangeEditor()
        self.editor.applied.connect(self._on_editor_applied)
        self.plot = pg.PlotWidget()
        self.plot.setBackground("w")
        self.plot.setMenuEnabled(False)
        item = self.plot.getPlotItem()
        item.setLabel("bottom", xlabel)
        item.setLabel("left", ylabel)
        item.showGrid(x=False, y=True, alpha=0.2)
        item.getAxis("bottom").enableAutoSIPrefix(False)
        item.getAxis("left").enableAutoSIPrefix(False)
        self._float = item.plot(stepMode="center", fillLevel=0, pen=pg.mkPen(FLOAT_PEN, width=1),
                                brush=pg.mkBrush(*FLOAT_BRUSH), name="float")
        self._quant = item.plot(stepMode="center", pen=pg.mkPen(QUANT_PEN, width=2), name="quantized")
        self._levels = item.plot(pen=pg.mkPen(LEVEL_PEN, width=1), connect="pairs", name="quantization levels")
        self.region = pg.LinearRegionItem(brush=pg.mkBrush(*REGION_BRUSH), hoverBrush=pg.mkBrush(*REGION_HOVER),
                                          pen=pg.mkPen(REGION_LINE, width=2), swapMode="block")
        self.region.setZValue(10)
        self.region.setToolTip("Clip range: drag either edge (or the band) to change where values are clipped; "
                               "the layer's SQNR updates live and the model is re-checked on release.")
        item.addItem(self.region, ignoreBounds=True)
        self.markers = LevelMarkers(item, QUANT_PEN)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.setSpacing(2)
        lay.addWidget(self.stats)
        lay.addWidget(self.note)
        lay.addWidget(self.legend)
        lay.addWidget(self.plot, 1)
        lay.addWidget(self.editor)
        self._log = False
        self._syncing = False
        self._last: dict | None = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(THROTTLE_MS)
        self._timer.timeout.connect(self._emit_dragged)
        self.region.sigRegionChanged.connect(self._on_region_changed)
        self.region.sigRegionChangeFinished.connect(self._on_region_finished)

    # ----------------------------------------------------------- state
    @property
    def editable(self) -> bool:
        return self.region.movable and self.region.isVisible()

    def set_editable(self, on: bool) -> None:
        self.region.setMovable(on)
        self.region.setVisible(on)
        self.editor.setEnabled(on)

    def set_log(self, on: bool) -> None:
        self._log = bool(on)
        self.plot.getPlotItem().setLogMode(False, self._log)
        if self._last is not None:
            self._draw(self._last)

    def clear(self, message: str) -> None:
        self._last = None
        for it in (self._float, self._quant, self._levels):
            it.setData([], [])
        self.markers.clear()
        self.set_editable(False)
        self.stats.setText("")
        self.note.setText(message)

    # ----------------------------------------------------------- drawing
    def _y(self, counts: np.ndarray) -> np.ndarray:
        return np.maximum(counts, LOG_FLOOR) if self._log else counts

    def _draw(self, p: dict) -> None:
        edges = p["edges"]
        base = LOG_FLOOR if self._log else 0.0
        self._float.setFillLevel(math.log10(base) if self._log else 0.0)
        self._float.setData(edges, self._y(p["float_counts"]))
        ytop = max(float(np.max(p["float_counts"], initial=0.0)), 1.0)
        if p.get("float"):
            self._quant.setData([], [])
            self._levels.setData([], [])
            self.markers.clear()
            self._set_yrange(ytop)
            return
        self._quant.setData(edges, self._y(p["quant_counts"]))
        ytop = max(ytop, float(np.max(p["quant_counts"], initial=0.0)))
        self._set_yrange(ytop)
        lv = p["levels"]
        lv = lv[(lv >= edges[0]) & (lv <= edges[-1])]
        if len(lv) > RUG_ABOVE:  # dense grids: short ticks along the axis instead of a grey wash
            top = ytop ** 0.08 if self._log else ytop * 0.05
        else:
            top = ytop * (2.0 if self._log else 1.05)
        self._levels.setData(np.repeat(lv, 2), np.tile([base if self._log else 0.0, top], len(lv)))
        self.markers.update(p, self._log, LOG_FLOOR)  # few levels: each one marked, with its share

    def _set_yrange(self, ytop: float) -> None:
        """Fixed y range with headroom above the tallest bar for the legend."""
        item = self.plot.getPlotItem()
        if self._log:
            item.setYRange(math.log10(LOG_FLOOR), math.log10(ytop) * 1.12 + 0.3, padding=0.0)
        else:
            item.setYRange(0.0, ytop * 1.12, padding=0.0)

    def show_preview(self, p: dict, *, move_region: bool, editable: bool, baseline: dict | None = None) -> None:
        """Draw ``preview_*`` output; move the band to its range unless the user is dragging.

        ``baseline`` (the preview under the stored config) is quoted next to the live SQNR.
        """
        self._last = p
        self._draw(p)
        item = self.plot.getPlotItem()
        edges = p["edges"]
        item.setXRange(float(edges[0]), float(edges[-1]), padding=0.0)
        if p.get("float"):
            self.stats.setText("<b>float (not quantized)</b>")
            self.set_editable(False)
            return
        self.stats.setText(f"<b>{fmt_stats(p, baseline)}</b>")
        self.set_editable(editable)
        if move_region:
            self._syncing = True
            try:
                self.region.setBounds([float(edges[0]), float(edges[-1])])
                self.region.setRegion((p["lo"], p["hi"]))
            finally:
                self._syncing = False
        self.editor.set_range(p["lo"], p["hi"], float(edges[-1] - edges[0]))

    # ------------------------------------------------------------ drag
    def _on_region_changed(self) -> None:
        if self._syncing:
            return
        if not self._timer.isActive():
            self._timer.start()

    def _emit_dragged(self) -> None:
        lo, hi = self.region.getRegion()
        self.dragged.emit(float(lo), float(hi))

    def _on_editor_applied(self, lo: float, hi: float) -> None:
        """A typed range: move the band there and commit it, as a release would."""
        self._syncing = True
        try:
            self.region.setRegion((lo, hi))
        finally:
            self._syncing = False
        self.released.emit(float(lo), float(hi))

    def _on_region_finished(self) -> None:
        if self._syncing:
            return
        self._timer.stop()
        lo, hi = self.region.getRegion()
        self.released.emit(float(lo), float(hi))


class HistogramPanel(SessionFollower, QWidget):
    """Weight, per-channel and activation views of the selected layer."""

    rangePreview = Signal(str, str, float, float)  # layer, kind, lo, hi — while dragging
    rangeCommitted = Signal(str, str, float, float)  # layer, kind, lo, hi — on release

    def __init__(self, parent=None):
        super().__init__(parent)
        self.session = None
        self.layer: str | None = None
        self._edges: dict[str, np.ndarray] = {}  # weight display bins per layer (stable while dragging)
        self._config_preview: dict[str, dict | None] = {}  # kind -> preview under the stored config
        self._channel_stats: dict[str, dict] = {}  # per-channel ranges per layer
        self.header = QLabel("No layer selected")
        self.header.setTextFormat(pg.QtCore.Qt.TextFormat.RichText)
        self.header.setWordWrap(True)
        self.header.setToolTip("The selected layer: its type, weight shape and current quantization settings.")
        self.log_box = QCheckBox("Log-scale counts")
        self.log_box.setToolTip("Show counts on a logarithmic axis, so rare outliers and long tails stay visible.")
        self.log_box.toggled.connect(self._on_log_toggled)
        top = QHBoxLayout()
        top.addWidget(self.header, 1)
        top.addWidget(self.log_box)
        self.weights = RangeHistogram("weight value", "weights per bin")
        self.channels = ChannelRangeView()
        self.acts = RangeHistogram("activation value (layer input, calibration data)", "values per bin")
        self.tabs = QTabWidget()
        self.tabs.addTab(self.weights, "Weights")
        self.tabs.addTab(self.channels, "Per-channel ranges")
        self.tabs.addTab(self.acts, "Activations")
        self.tabs.setTabToolTip(0, "Distribution of this layer's float weights, its quantization grid and the clip range.")
        self.tabs.setTabToolTip(1, "Range of every output channel's weights; outliers argue for per-channel quantization.")
        self.tabs.setTabToolTip(2, "Distribution of this layer's input on the calibration data, with its clip range.")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addLayout(top)
        lay.addWidget(self.tabs, 1)
        self.weights.dragged.connect(lambda lo, hi: self._on_drag("weight", lo, hi, False))
        self.weights.released.connect(lambda lo, hi: self._on_drag("weight", lo, hi, True))
        self.acts.dragged.connect(lambda lo, hi: self._on_drag("activation", lo, hi, False))
        self.acts.released.connect(lambda lo, hi: self._on_drag("activation", lo, hi, True))
        self.show_layer(None)

    # ------------------------------------------------------------ API
    def set_session(self, session) -> None:
        self.session = session
        self.follow(session)
        self._edges.clear()
        self._channel_stats.clear()
        self.show_layer(None)

    def show_layer(self, name: str | None) -> None:
        if self.session is None or name is None:
            self.layer = None
            self.header.setText("No layer selected" if self.session is not None else "No model open")
            self.weights.clear("Select a layer to see its weight histogram.")
            self.channels.clear("Select a layer to see its per-channel ranges.")
            self.acts.clear("Select a layer to see its input's histogram.")
            return
        self.session.layer(name)  # raises SessionError for an unknown name
        self.layer = name
        self.refresh()

    def _on_session_config_changed(self, change) -> None:
        if self.layer is not None and self.layer in change.changed:
            self.refresh()

    def refresh(self) -> None:
        """Redraw the current layer from ``session.spec(name)`` (after a config change)."""
        if self.session is None or self.layer is None:
            return
        try:
            self._refresh_weight()
            self._refresh_activation()
        except QuantvizError as exc:
            self.weights.note.setText(f"<span style='color:#b00'>{exc}</span>")

    def stats_text(self, kind: str) -> str:
        """The live statistics line of the ``"weight"`` or ``"activation"`` tab (plain text)."""
        label = (self.weights if kind == "weight" else self.acts).stats
        return label.text().replace("<b>", "").replace("</b>", "")

    # ------------------------------------------------------------ build
    def _weight_edges(self) -> np.ndarray:
        e = self._edges.get(self.layer)
        if e is None:
            w = self.session.sim.float_weight(self.layer)
            e = self._edges[self.layer] = display_edges(float(w.min()), float(w.max()), w.numel())
        return e

    def _header(self, spec) -> None:
        info = self.session.layer(self.layer)
        shape = "×".join(str(s) for s in info.weight_shape)
        w = spec.weight
        if w.bits is None:
            wtxt = "float (not quantized)"
        else:
            gran = w.granularity + (f" ({w.effective_group_size()})" if w.granularity == "per_group" else "")
            wtxt = f"{w.bits}-bit {gran} {f'symmetric ({w.grid} grid)' if w.symmetric else 'asymmetric'}, range {w.range.describe()}"
            if w.format != "int":
                wtxt = format_label(w.format) + (f" {gran}, range {w.range.describe()}" if w.format.startswith("fp8") else "")
            if w.algorithm != "none":
                wtxt += f", {w.algorithm}"
        a = spec.activation
        if not info.has_activation_input:
            atxt = "none (index input)"
        elif a.bits is None:
            atxt = "float"
        else:
            atxt = f"{a.bits}-bit {f'symmetric ({a.grid} grid)' if a.symmetric else 'asymmetric'}, range {a.range.describe()}"
            if a.format != "int":
                atxt = format_label(a.format) + (f", range {a.range.describe()}" if a.format.startswith("fp8") else "")
        self.header.setText(f"<b>{self.layer}</b> · {info.type} · weight {shape} ({info.weight_numel:,} values)"
                            f"<br>weights: {wtxt} · activations: {atxt}")

    def _refresh_weight(self, lo: float | None = None, hi: float | None = None, dragging: bool = False) -> dict:
        spec = self.session.spec(self.layer)
        if not dragging:
            self._header(spec)
        p = preview_weight(self.session.sim, self.layer, spec.weight, lo, hi, edges=self._weight_edges())
        if not dragging:
            self._config_preview["weight"] = p
        base = self._config_preview.get("weight") if dragging else None
        self.weights.show_preview(p, move_region=not dragging, editable=not (p.get("float") or p.get("block")), baseline=base)
        self.weights.note.setText(weight_note(p))
        if not dragging:
            stats = self._channel_stats.get(self.layer)
            if stats is None:  # depends only on the float weight: once per layer
                stats = self._channel_stats[self.layer] = channel_ranges(self.session.sim, self.layer)
            self.channels.set_channels(stats, p.get("channel_lo"), p.get("channel_hi"),
                                       None if p.get("float") else p["granularity"])
        else:
            self.channels.set_clip(p.get("channel_lo"), p.get("channel_hi"))
        return p

    def _refresh_activation(self, lo: float | None = None, hi: float | None = None, dragging: bool = False) -> dict | None:
        info = self.session.layer(self.layer)
        obs = self.session.sim.act_obs.get(self.layer)
        if not info.has_activation_input:
            self.acts.clear("This layer's input is indices (Embedding): there is no activation to quantize.")
            return None
        if obs is None or obs.count == 0:
            self.acts.clear("No calibration statistics for this layer's input (open the model with data).")
            return None
        aspec = self.session.spec(self.layer).activation
        p = preview_activation(obs.histogram(), aspec, lo, hi)
        if not dragging:
            self._config_preview["activation"] = p
        base = self._config_preview.get("activation") if dragging else None
        self.acts.show_preview(p, move_region=not dragging, editable=not (p.get("float") or p.get("block")), baseline=base)
        if p.get("float"):
            self.acts.note.setText("Activations stay float (bits = null): set activation bits (e.g. preset W8A8) "
                                   "to edit their clip range.")
        elif p.get("format"):
            self.acts.note.setText(f"{format_note(p)} · from {int(p['numel']):,} calibration values, observed "
                                   f"[{p['data_lo']:.4g}, {p['data_hi']:.4g}]")
        else:
            sym = f" · {grid_note(p)}" if p["symmetric"] else ""
            self.acts.note.setText(f"{p['levels_total']} levels (per-tensor) · from {int(p['numel']):,} "
                                   f"calibration values, observed [{p['data_lo']:.4g}, {p['data_hi']:.4g}]{sym}")
        return p

    # ----------------------------------------------------------- events
    def _on_drag(self, kind: str, lo: float, hi: float, final: bool) -> None:
        if self.session is None or self.layer is None or not hi > lo:
            return
        try:
            if kind == "weight":
                self._refresh_weight(lo, hi, dragging=True)
            else:
                self._refresh_activation(lo, hi, dragging=True)
        except QuantvizError as exc:
            (self.weights if kind == "weight" else self.acts).note.setText(f"<span style='color:#b00'>{exc}</span>")
            return
        (self.rangeCommitted if final else self.rangePreview).emit(self.layer, kind, lo, hi)

    def _on_log_toggled(self, on: bool) -> None:
        self.weights.set_log(on)
        self.acts.set_log(on)


def main(argv: list[str] | None = None) -> int:
    """Open the panel alone on the demo; ``--png`` renders it offscreen instead."""
    import argparse
    import sys

    from ...session.session import Session
    from ..launch import create_app, smoke_quit

    ap = argparse.ArgumentParser(prog="python -m quantviz.gui.views.histogram")
    ap.add_argument("--model", default="demo")
    ap.add_argument("--layer", default="features.3")
    ap.add_argument("--bits", type=int, help="set the layer's weight bits first")
    ap.add_argument("--granularity", choices=["per_tensor", "per_channel", "per_group"])
    ap.add_argument("--drag", nargs=2, type=float, metavar=("LO", "HI"),
                    help="drag the weight clip range to [LO, HI] (shown mid-drag, not released)")
    ap.add_argument("--preset", help="apply a preset (e.g. W8A8) first")
    ap.add_argument("--act-drag", nargs=2, type=float, metavar=("LO", "HI"), help="drag the activation clip range")
    ap.add_argument("--tab", type=int, default=0, help="tab to show: 0 weights, 1 per-channel, 2 activations")
    ap.add_argument("--log", action="store_true", help="start with log-scale counts")
    ap.add_argument("--size", nargs=2, type=int, default=(900, 600), metavar=("W", "H"))
    ap.add_argument("--png", help="render to this PNG (offscreen) and exit")
    args = ap.parse_args(argv)
    app = create_app(sys.argv[:1])
    session = Session.open(args.model)
    if args.preset:
        session.apply_preset(args.preset)
    patch = {k: v for k, v in (("bits", args.bits), ("granularity", args.granularity)) if v is not None}
    if patch:
        session.edit_layers([args.layer], {"weight": patch})
    panel = HistogramPanel()
    panel.set_session(session)
    panel.show_layer(args.layer)
    panel.log_box.setChecked(args.log)

    def commit(layer, kind, lo, hi):
        session.set_range(layer, kind, lo, hi)
        panel.refresh()

    panel.rangeCommitted.connect(commit)
    panel.resize(*args.size)
    panel.tabs.setCurrentIndex(args.tab)
    for view, rng in ((panel.weights, args.drag), (panel.acts, args.act_drag)):
        if rng:
            view.region.blockSignals(True)  # setRegion would also "release" (commit) the range
            view.region.setRegion(tuple(rng))
            view.region.blockSignals(False)
            view.region.sigRegionChanged.emit(view.region)
            view._emit_dragged()
    if args.png:
        app.processEvents()
        panel.grab().save(args.png)
        return 0
    panel.show()
    smoke_quit(app)
    return app.exec()


if __name__ == "__main__":
    raise SystemExit(main())
