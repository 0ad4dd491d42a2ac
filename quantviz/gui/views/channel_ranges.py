"""Per-channel weight ranges of one layer: outlier channels at a glance.

One thin bar per output channel spans its min..max, a thick bar its 1st..99th
percentile (a box), outlier channels are drawn in red, and short ticks mark
each channel's clip range under the current (or dragged) config. Everything
is three long-lived plot items updated with ``setData``.
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from ...core.numerics.preview import OUTLIER_RATIO

NORMAL = (70, 110, 180)
OUTLIER = (210, 50, 50)
CLIP = (230, 130, 20)


def _rgb(c) -> str:
    return "#%02x%02x%02x" % c


LEGEND_HTML = (f"<span style='color:{_rgb(NORMAL)}'>│</span> min..max &nbsp; "
               f"<span style='color:{_rgb(NORMAL)}'><b>┃</b></span> 1st..99th percentile &nbsp; "
               f"<span style='color:{_rgb(OUTLIER)}'><b>┃</b></span> outlier channel (largest |w| &gt; "
               f"{OUTLIER_RATIO:g}x the median channel's) &nbsp; "
               f"<span style='color:{_rgb(CLIP)}'><b>▬</b></span> clip range per channel")


def _pairs(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertical segments x=x[i], lo[i]..hi[i] as one connect='pairs' polyline."""
    return np.repeat(x, 2).astype(float), np.column_stack([lo, hi]).ravel().astype(float)


class ChannelRangeView(QWidget):
    """Min/max and percentile box of every output channel, with the clip range."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self.note.setToolTip("Channels whose largest |weight| is far above the median channel's make one "
                             "per-tensor grid coarse for all others; per-channel quantization gives each its own grid.")
        self.plot = pg.PlotWidget()
        self.plot.setBackground("w")
        item = self.plot.getPlotItem()
        item.setLabel("bottom", "output channel (index)")
        item.setLabel("left", "weight value")
        item.showGrid(x=False, y=True, alpha=0.25)
        self.plot.setMenuEnabled(False)
        item.getAxis("left").enableAutoSIPrefix(False)
        self.key = QLabel(LEGEND_HTML)
        self.key.setWordWrap(True)  # otherwise its one long line sets the whole dock's minimum width
        self.key.setToolTip("Thin bar: a channel's smallest..largest weight; thick bar: its 1st..99th percentile; "
                            "ticks: the clip range that channel is quantized with.")
        self._minmax = item.plot(pen=pg.mkPen(NORMAL, width=1), connect="pairs")
        self._box = item.plot(pen=pg.mkPen(NORMAL, width=5), connect="pairs")
        self._outlier = item.plot(pen=pg.mkPen(OUTLIER, width=5), connect="pairs")
        self._clip = pg.ScatterPlotItem(symbol="_", size=12, pen=pg.mkPen(CLIP, width=2), brush=pg.mkBrush(CLIP))
        item.addItem(self._clip)
        self._zero = pg.InfiniteLine(pos=0.0, angle=0, pen=pg.mkPen((150, 150, 150), width=1, style=pg.QtCore.Qt.PenStyle.DashLine))
        item.addItem(self._zero, ignoreBounds=True)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.note)
        lay.addWidget(self.key)
        lay.addWidget(self.plot, 1)
        self._stats: dict | None = None

    def clear(self, message: str = "") -> None:
        for it in (self._minmax, self._box, self._outlier):
            it.setData([], [])
        self._clip.setData([], [])
        self._stats = None
        self.note.setText(message)

    def set_channels(self, stats: dict, channel_lo: np.ndarray | None, channel_hi: np.ndarray | None,
                     granularity: str | None) -> None:
        """Show ``quantviz.core.numerics.preview.channel_ranges`` output and the clip per channel."""
        self._stats = stats
        n = stats["channels"]
        x = np.arange(n)
        out = np.zeros(n, dtype=bool)
        out[stats["outliers"]] = True
        self._minmax.setData(*_pairs(x, stats["min"], stats["max"]))
        self._box.setData(*_pairs(x[~out], stats["p01"][~out], stats["p99"][~out]))
        self._outlier.setData(*_pairs(x[out], stats["min"][out], stats["max"][out]))
        self.set_clip(channel_lo, channel_hi)
        spread = stats["spread"]
        text = f"{n} output channels · largest |w| of a channel: max / median = {spread:.1f}x"
        if len(stats["outliers"]):
            shown = ", ".join(str(int(i)) for i in stats["outliers"][:8])
            more = f" (+{len(stats['outliers']) - 8} more)" if len(stats["outliers"]) > 8 else ""
            text += f" · outlier channels {shown}{more}"
            if granularity == "per_tensor":
                text += " — per-channel quantization would give them their own grid"
        elif granularity is not None:
            text += " · no outlier channels"
        if granularity is None:
            text += " · float (not quantized)"
        self.note.setText(text)
        self.plot.getPlotItem().setXRange(-1, n, padding=0.01)

    def set_clip(self, channel_lo: np.ndarray | None, channel_hi: np.ndarray | None) -> None:
        """Update only the clip ticks (called while a range is dragged)."""
        if channel_lo is None or channel_hi is None or self._stats is None:
            self._clip.setData([], [])
            return
        x = np.arange(len(channel_lo), dtype=float)
        self._clip.setData(np.concatenate([x, x]), np.concatenate([channel_lo, channel_hi]).astype(float))


def main() -> int:  # pragma: no cover - a look at the widget alone
    from ...core.numerics.preview import channel_ranges
    from ..launch import standalone

    def build(session):
        name = session.layer_names[0]
        w = ChannelRangeView()
        w.set_channels(channel_ranges(session.sim, name), None, None, session.spec(name).weight.granularity)
        w.resize(700, 300)
        return w

    return standalone(build)


if __name__ == "__main__":
    raise SystemExit(main())
