"""One histogram tab: a tensor's float distribution, its quantization levels and quantized
histogram, and the clip range as a draggable band (with a typed-in range editor below).

:class:`RangeHistogram` only draws what :mod:`quantviz.core.numerics.preview` computed and reports
drags; :class:`.histogram.HistogramPanel` owns the session side.
"""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

from .hist_extras import ClipRangeEditor, LevelMarkers, legend_html
from .hist_math import fmt_stats

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
        self._set_legend()

    def _set_legend(self) -> None:
        """Name only what is drawn: the band when it is shown, the quantized curve when there is one."""
        quantized = self._last is not None and not self._last.get("float")
        self.legend.setText(legend_html(FLOAT_PEN, QUANT_PEN, REGION_LINE, quantized=quantized,
                                        clip=self.region.isVisible()))

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


def main() -> int:  # pragma: no cover - a look at the widget alone
    from ...core.numerics.preview import display_edges, preview_weight
    from ..launch import standalone

    def build(session):
        name = session.layers[-1].name
        w = session.sim.float_weight(name)
        p = preview_weight(session.sim, name, session.spec(name).weight, None, None,
                           edges=display_edges(float(w.min()), float(w.max()), w.numel()))
        view = RangeHistogram("weight value", "weights per bin")
        view.show_preview(p, move_region=True, editable=True)
        view.resize(760, 420)
        return view

    return standalone(build)


if __name__ == "__main__":
    raise SystemExit(main())
