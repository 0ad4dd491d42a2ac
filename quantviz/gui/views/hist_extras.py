"""Pieces of the histogram plot kept apart from ``histogram.py``: the typed clip range,
the level markers drawn at low bit-widths, and the legend line above the plot.

* :class:`ClipRangeEditor` — two spin boxes (lo, hi) and Apply: the clip range
  typed instead of dragged; Apply does what releasing the band does.
* :class:`LevelMarkers` — at 8 levels or fewer each level gets a stem and a dot
  (and, for a per-tensor grid, the share of values it holds), so the 4 levels
  of a 2-bit grid are seen as 4 levels (the quantized staircase alone spreads
  each level over its cell).
* :func:`legend_html` — the legend as a line of text above the plot, so it
  never covers the data.
"""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QDoubleSpinBox, QHBoxLayout, QLabel, QPushButton, QWidget

MARKED_LEVELS = 8  # grids with at most this many levels (3 bits and below) get a marker per level


def legend_html(float_rgb, quant_rgb, region_rgb, *, quantized: bool = True, clip: bool = True) -> str:
    """The legend of what is drawn: the quantized curve and levels only for a quantized tensor, the
    clip band only when it is shown (not for float tensors, nor block formats, whose scales follow
    each block's maximum)."""
    def c(rgb):
        return f"rgb({rgb[0]},{rgb[1]},{rgb[2]})"

    parts = [f"<span style='color:{c(float_rgb)}'>■</span> float"]
    if quantized:
        parts += [f"<span style='color:{c(quant_rgb)}'>━</span> quantized",
                  "<span style='color:#666'>┃</span> quantization levels"]
    if clip:
        parts.append(f"<span style='color:{c(region_rgb)}'>┃ ┃</span> clip range (drag its edges)")
    return " &nbsp; ".join(parts)


class ClipRangeEditor(QWidget):
    """lo / hi spin boxes and Apply; ``applied(lo, hi)`` when the user applies a valid range."""

    applied = Signal(float, float)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.lo = QDoubleSpinBox()
        self.hi = QDoubleSpinBox()
        for box, tip in ((self.lo, "Lower end of the clip range"), (self.hi, "Upper end of the clip range")):
            box.setDecimals(5)
            box.setRange(-1e3, 1e3)  # widened to the data in set_range; a small range keeps the boxes narrow
            box.setMinimumWidth(90)
            box.setKeyboardTracking(False)
            box.setToolTip(tip + " (type a value, then Apply or Enter).")
            box.lineEdit().returnPressed.connect(self.apply)
        self.apply_button = QPushButton("Apply")
        self.apply_button.setToolTip("Set this clip range (a manual range, undoable), as releasing the band does.")
        self.apply_button.clicked.connect(self.apply)
        self.error = QLabel()
        self.error.setObjectName("error")
        self._shown: dict = {}  # each box's value as last shown by set_range (the current range)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(QLabel("Clip:"))
        lay.addWidget(self.lo)
        lay.addWidget(QLabel("to"))
        lay.addWidget(self.hi)
        lay.addWidget(self.apply_button)
        lay.addWidget(self.error, 1)

    def set_range(self, lo: float, hi: float, span: float | None = None) -> None:
        """Show [lo, hi] (not while the user is typing in a box); steps of ~1 % of ``span``."""
        span = span if span and span > 0 else max(abs(hi - lo), 1e-6)
        step = 10 ** math.floor(math.log10(span / 100))
        reach = max(10 * span, abs(lo) * 2, abs(hi) * 2, 1e-3)
        for box, v in ((self.lo, lo), (self.hi, hi)):
            if box.hasFocus():
                continue
            box.blockSignals(True)
            box.setRange(-reach, reach)
            box.setSingleStep(step)
            box.setValue(float(v))
            box.blockSignals(False)
            self._shown[box] = box.value()  # as the box rounds it
        self.error.clear()

    def apply(self) -> None:
        """Commit the typed range; the range shown, untouched, is no change (no commit, no undo step)."""
        lo, hi = float(self.lo.value()), float(self.hi.value())
        if not lo < hi:
            self.error.setText("lo must be below hi")
            return
        self.error.clear()
        if self._shown.get(self.lo) == lo and self._shown.get(self.hi) == hi:
            return
        self.applied.emit(lo, hi)


class LevelMarkers:
    """Stems, dots and share labels at each level of a low-bit grid (long-lived items, updated in place)."""

    def __init__(self, plot_item, rgb):
        self.stems = pg.PlotDataItem(pen=pg.mkPen(*rgb, width=2.5), connect="pairs")
        self.dots = pg.ScatterPlotItem(size=8, brush=pg.mkBrush(*rgb), pen=pg.mkPen("w"))
        plot_item.addItem(self.stems)
        plot_item.addItem(self.dots)
        self.labels = []
        for _ in range(MARKED_LEVELS):
            t = pg.TextItem(anchor=(0.5, 1.0), color=rgb)
            t.setVisible(False)
            plot_item.addItem(t)
            self.labels.append(t)
        self.shares: list[float] = []

    def clear(self) -> None:
        self.stems.setData([], [])
        self.dots.setData([], [])
        for t in self.labels:
            t.setVisible(False)
        self.shares = []

    def update(self, p: dict, log: bool, floor: float) -> bool:
        """Mark each level of ``p``'s grid when there are few; returns whether it did."""
        lv = np.asarray(p.get("levels", []), dtype=float)
        if p.get("float") or p.get("levels_total", 1 << 30) > MARKED_LEVELS or lv.size == 0:
            self.clear()
            return False
        edges = np.asarray(p["edges"], dtype=float)
        counts = np.asarray(p["quant_counts"], dtype=float)
        centres = (edges[:-1] + edges[1:]) / 2
        nearest = np.abs(centres[:, None] - lv[None, :]).argmin(axis=1)
        mass = np.bincount(nearest, weights=counts, minlength=lv.size)
        total = max(float(counts.sum()), 1e-12)
        self.shares = list(mass / total)
        # each stem as tall as the staircase at its level (the same density scale as the float histogram)
        idx = np.clip(np.searchsorted(edges, lv) - 1, 0, len(counts) - 1)
        height = counts[idx]
        if log:
            height = np.log10(np.maximum(height, floor))
            base = math.log10(floor)
        else:
            base = 0.0
        inside = (lv >= edges[0]) & (lv <= edges[-1])
        xs, hs = lv[inside], height[inside]
        self.stems.setData(np.repeat(xs, 2), np.column_stack([np.full(xs.size, base), hs]).ravel())
        self.dots.setData(xs, hs)
        shares = np.asarray(self.shares)[inside]
        one_grid = p.get("granularity") == "per_tensor"  # per-channel: each channel has its own levels
        for i, t in enumerate(self.labels):
            if i < xs.size and one_grid:
                t.setText(f"{shares[i] * 100:.0f}%")
                t.setPos(float(xs[i]), float(hs[i]))
                t.setVisible(True)
            else:
                t.setVisible(False)
        return True


__all__ = ["ClipRangeEditor", "LevelMarkers", "legend_html", "MARKED_LEVELS"]


def main() -> int:  # pragma: no cover - a look at the widget alone
    from ..launch import standalone

    def build(_session):
        w = ClipRangeEditor()
        w.set_range(-0.25, 0.31, 0.6)
        return w

    return standalone(build)


if __name__ == "__main__":
    raise SystemExit(main())
