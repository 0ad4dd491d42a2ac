"""Summary panel: float vs quantized metrics and size, plus a size-vs-metric plot.

The table shows the task metric (accuracy when the data has labels), output
fidelity (SQNR, cosine, top-1 agreement) and size (bytes, compression,
average bits per weight). While a re-check streams, the quantized column shows
the running estimate with its 95 % band ("97.1% ± 0.8"), tightening until the
final value arrives. Every re-checked config (``session.results``) is a point
in the plot; the current one is highlighted; clicking a point emits
``resultClicked`` so the window can restore that config (undoable).

Run alone for a look: ``python -m quantviz.gui.views.summary``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import json
import math

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QBoxLayout, QGridLayout, QLabel, QVBoxLayout, QWidget

from ...core.sim.evaluate import primary_metric
from ...core.fmt import IDENTICAL_DB, PERCENT_METRICS, fmt_bytes, fmt_metric, metric_label, size_unit
from .. import theme
from ..elided import ElidedLabel
from ..bridge import SessionFollower

if TYPE_CHECKING:
    from ...session.session import Session

METRIC_ROWS = [
    ("accuracy", "Accuracy", "Top-1 accuracy on the evaluation data's labels (the task metric)."),
    ("sqnr_db", "Output SQNR", "Signal-to-quantization-noise ratio of the model's outputs against the float model's: "
                               "10·log10(Σf² / Σ(f−q)²) in dB. Higher is better; 'identical' means no difference."),
    ("cosine", "Cosine", "Mean cosine similarity between the quantized and the float outputs, per sample (1 = same direction)."),
    ("top1_agreement", "Top-1 agreement", "Share of samples where the quantized model predicts the same class as the float model."),
    ("perplexity", "Perplexity", "exp of the mean next-token cross-entropy over the real (unpadded) evaluation tokens "
                                 "(a causal language model's task metric). Lower is better."),
    ("kl_div", "KL divergence", "Mean KL divergence of the quantized model's output distribution from the float "
                                "model's, over real tokens / samples (0 = identical). Lower is better."),
]
SIZE_ROWS = [
    ("bytes", "Model size", "Bytes to store the model: quantized weights bit-packed plus scales and zero points; "
                            "everything else at its float size."),
    ("compression", "Compression", "Float size divided by quantized size."),
    ("avg_bits", "Bits / weight", "Bits per weight of the quantizable layers, scales and zero points included "
                                "(MXFP4: 4.25), as the model size counts them (a float weight counts its dtype's bits: "
                                "32, or 16 for a bf16 / fp16 checkpoint)."),
]


LEFT_WIDTH = 400


class SummaryPanel(SessionFollower, QWidget):
    resultClicked = Signal(object)  # CheckResult whose config the user wants back

    def __init__(self, parent=None):
        super().__init__(parent)
        self.session: Session | None = None
        self.current = None  # the CheckResult of the current config, when known
        self._size: dict | None = None
        self._estimate: dict | None = None
        self._points: list = []

        self.state = ElidedLabel("No model open")
        self.state.setObjectName("muted")
        self.state.setFixedWidth(LEFT_WIDTH)  # fixed sizes: updates while streaming never relayout the plot
        self.data_line = ElidedLabel("")  # which samples the figures are on (held out from calibration or not)
        self.data_line.setObjectName("muted")
        self.data_line.setFixedWidth(LEFT_WIDTH)
        self.grid = QGridLayout()
        self.grid.setHorizontalSpacing(14)
        self.grid.setVerticalSpacing(4)
        for c, text in enumerate(("", "Float", "Quantized", "Change")):
            h = QLabel(f"<b>{text}</b>")
            h.setAlignment(Qt.AlignRight | Qt.AlignVCenter if c else Qt.AlignLeft)
            self.grid.addWidget(h, 0, c)
        # One row of four labels per metric / size entry, built once. Rows never move in the grid: re-adding a
        # widget deletes its layout item, and PySide keeps a stale wrapper for an item of a nested layout (a
        # crash later, when its address is reused). To put the task metric first, a row takes another key.
        self._rows: list[tuple[QLabel, QLabel, QLabel, QLabel]] = []
        for r in range(1, len(METRIC_ROWS + SIZE_ROWS) + 1):
            cells = tuple(QLabel() for _ in range(4))
            for i, c in enumerate(cells):
                if i:
                    c.setAlignment(Qt.AlignRight | Qt.AlignVCenter)
                    c.setTextInteractionFlags(Qt.TextSelectableByMouse)
                self.grid.addWidget(c, r, i)
            cells[2].setObjectName("metricValue")
            cells[0].setFixedWidth(110)
            for c, w in zip(cells[1:], (72, 112, 70)):
                c.setFixedWidth(w)
            self._rows.append(cells)
        self.cells: dict[str, tuple[QLabel, QLabel, QLabel, QLabel]] = {}  # key -> the row showing it
        self._row_keys: list[str] = []  # key of each row, top to bottom
        self._assign_rows([k for k, _l, _t in METRIC_ROWS + SIZE_ROWS])

        left_box = QWidget()
        left_box.setFixedWidth(LEFT_WIDTH)
        left = QVBoxLayout(left_box)
        left.setContentsMargins(0, 0, 0, 0)
        left.addWidget(self.state)
        left.addWidget(self.data_line)
        left.addLayout(self.grid)
        left.addStretch(1)

        self.plot = pg.PlotWidget()
        self.plot.setToolTip("Every re-checked config as a point: size against the task metric. "
                             "The current config is orange; click a point to go back to that config (undoable).")
        self.plot.setMinimumSize(0, 140)  # narrow: the panel stacks the plot under the table instead
        self.plot.showGrid(x=True, y=True, alpha=0.25)
        self.plot.setLabel("bottom", "size")
        for axis in ("bottom", "left"):
            self.plot.getAxis(axis).enableAutoSIPrefix(False)  # the unit is in the label (B, KB, MB, GB)
        self._unit = "KB"
        self.plot.setMenuEnabled(False)
        self.scatter = pg.ScatterPlotItem(size=9, pen=pg.mkPen(theme.ACCENT, width=1.2), brush=pg.mkBrush(theme.ACCENT_SOFT),
                                          hoverable=True, hoverSize=12, tip=self._point_tip)
        self.scatter.sigClicked.connect(self._on_scatter_clicked)
        self.float_point = pg.ScatterPlotItem(size=13, symbol="star", pen=pg.mkPen(theme.FOREGROUND),
                                              brush=pg.mkBrush(theme.MUTED))
        self.current_point = pg.ScatterPlotItem(size=15, pen=pg.mkPen(theme.HIGHLIGHT, width=2.5), brush=pg.mkBrush(None))
        for item in (self.float_point, self.scatter, self.current_point):
            self.plot.addItem(item)
        legend = self.plot.addLegend(offset=(-8, -8), labelTextSize="8pt")
        legend.addItem(self.float_point, "float")
        legend.addItem(self.current_point, "current")

        # stacked until the first resize finds room for the plot beside the table: side by side asked for
        # 500 px before the window was shown, so the window opened wider than a 1024 px screen
        self._lay = lay = QBoxLayout(QBoxLayout.TopToBottom, self)
        lay.setContentsMargins(8, 6, 8, 6)
        lay.setSpacing(16)
        lay.addWidget(left_box, 0)
        lay.addWidget(self.plot, 1)

    def resizeEvent(self, event) -> None:
        """Side by side when there is room for a useful plot, else the plot under the table."""
        wide = event.size().width() >= LEFT_WIDTH + 340
        want = QBoxLayout.LeftToRight if wide else QBoxLayout.TopToBottom
        if self._lay.direction() != want:
            self._lay.setDirection(want)
        super().resizeEvent(event)

    # ---------------------------------------------------------- session
    def set_session(self, session) -> None:
        self.session = session
        self.follow(session)
        self.current = None
        self._estimate = None
        self._size = session.size().to_dict() if session is not None else None
        self.state.setText("Loaded; waiting for the first re-check" if session is not None else "No model open")
        self._show_data()
        self._order_rows()
        self._render()
        self.refresh_points()

    def _show_data(self) -> None:
        """Which samples the figures are on; a warning colour when they are the calibration samples."""
        split = getattr(self.session, "split", None) if self.session is not None else None
        if split is None:
            self.data_line.clear()
            self.data_line.setToolTip("")
            return
        self.data_line.setText(split.short())
        self.data_line.setToolTip(split.describe()[:1].upper() + split.describe()[1:] + ".")
        self.data_line.setObjectName("error" if split.on_calibration_data else "muted")
        self._restyle(self.data_line)

    def _order_rows(self) -> None:
        """The model's task metric on the first row (perplexity for a language model), the others after it."""
        ref = getattr(self.session, "reference", None) if self.session is not None else None
        first = primary_metric(ref.metrics) if ref is not None and ref.metrics else "accuracy"
        keys = [k for k, _l, _t in METRIC_ROWS]
        self._assign_rows(([first] if first in keys else []) + [k for k in keys if k != first]
                          + [k for k, _l, _t in SIZE_ROWS])

    def _assign_rows(self, order: list[str]) -> None:
        """Row i shows ``order[i]``: its label and tooltip change, its widgets stay where they are."""
        if order == self._row_keys:
            return
        texts = {k: (label, tip) for k, label, tip in METRIC_ROWS + SIZE_ROWS}
        self.cells = {}
        for cells, key in zip(self._rows, order):
            label, tip = texts[key]
            cells[0].setText(label)
            for c in cells:
                c.setToolTip(tip)
                if c is not cells[0]:
                    c.clear()
            self.cells[key] = cells
        self._row_keys = list(order)

    def metric_rows(self) -> list[str]:
        """The metric rows shown, top to bottom."""
        metrics = {k for k, _l, _t in METRIC_ROWS}
        return [k for k in self._row_keys if k in metrics and not self.cells[k][0].isHidden()]

    def _on_session_config_changed(self, change) -> None:
        self._size = change.size.to_dict()
        self.show_pending("Changed; re-checking…")

    def _on_session_result(self, result) -> None:
        if self.session is not None and self.session.is_wanted(result.generation):
            self.show_result(result)
        else:
            self.refresh_points()

    def _on_session_estimate(self, generation: int, snapshot) -> None:
        if (self.session is not None and self.session.is_wanted(generation)
                and (self.current is None or self.current.generation != generation)):
            self.show_estimate(snapshot)

    def show_size(self, size: dict) -> None:
        """The size of the current config (known at once after an edit)."""
        self._size = dict(size)
        self._render()

    def show_pending(self, text: str = "Re-checking…") -> None:
        self.current = None
        self._estimate = None
        self.state.setText(text)
        self.state.setObjectName("estimate")
        self._restyle(self.state)
        self._render()

    def show_estimate(self, snapshot: dict) -> None:
        self._estimate = snapshot
        done, total = snapshot.get("batches", (0, 0))
        n = snapshot.get("samples", 0)
        self.state.setText(f"Re-checking… estimate from {n} samples ({done} of {total} batches)")
        self._render()

    def show_result(self, result) -> None:
        self.current = result
        self._estimate = None
        self._size = dict(result.size)
        self.state.setText(f"Up to date · {result.label} · checked in {result.seconds:.2f} s")
        self.state.setObjectName("muted")
        self._restyle(self.state)
        self._render()
        self.refresh_points()

    def show_failed(self, message: str) -> None:
        self._estimate = None
        self.state.setText(f"Re-check failed: {message}")
        self.state.setObjectName("error")
        self._restyle(self.state)

    @staticmethod
    def _restyle(w) -> None:
        w.style().unpolish(w)
        w.style().polish(w)

    # ------------------------------------------------------------ table
    def _render(self) -> None:
        s = self.session
        fm = dict(s.reference.metrics) if s is not None and s.reference is not None else {}
        qm, bands = {}, {}
        if self._estimate is not None:
            qm, bands = self._estimate.get("metrics", {}), self._estimate.get("bands", {})
        elif self.current is not None:
            qm = self.current.metrics
        for key, _label, _tip in METRIC_ROWS:
            cells = self.cells[key]
            visible = key in fm or key in qm
            for c in cells:
                c.setVisible(visible)
            if not visible:
                continue
            f, q = fm.get(key), qm.get(key)
            cells[1].setText(fmt_metric(key, f))
            cells[2].setText(fmt_metric(key, q, bands.get(key)))
            cells[3].setText(self._delta(key, f, q) if self._estimate is None else "")
        size = self._size or {}
        fb, qb = size.get("float_bytes"), size.get("quantized_bytes")
        self.cells["bytes"][1].setText(fmt_bytes(fb))
        self.cells["bytes"][2].setText(fmt_bytes(qb))
        self.cells["bytes"][3].setText(f"−{(1 - qb / fb) * 100:.0f}%" if fb and qb is not None else "")
        comp = size.get("compression")
        self.cells["compression"][1].setText("1.00×" if fb else "–")
        self.cells["compression"][2].setText(f"{comp:.2f}×" if comp and math.isfinite(comp) else "–")
        self.cells["avg_bits"][1].setText(f"{size.get('float_avg_bits', 32.0):.1f}" if fb else "–")
        ab = size.get("avg_bits")
        self.cells["avg_bits"][2].setText(f"{ab:.2f}" if ab is not None else "–")

    @staticmethod
    def _delta(key: str, f, q) -> str:
        if f is None or q is None:
            return ""
        if key in ("accuracy", "top1_agreement"):
            return f"{(q - f) * 100:+.2f} pt"
        if key == "sqnr_db" or (key == "kl_div" and not f):
            return ""  # against a float reference of 0 the change is the value itself
        if key == "cosine":
            d = q - f
            return "±0" if abs(d) < 5e-6 else f"{d:+.5f}"
        return f"{q - f:+.4g}"

    # ------------------------------------------------------------- plot
    def refresh_points(self) -> None:
        """One point per distinct re-checked config (the latest result of each)."""
        s = self.session
        if s is None or s.reference is None:
            self.scatter.setData([])
            self.float_point.setData([])
            self.current_point.setData([])
            return
        key = primary_metric(s.reference.metrics)
        self.plot.setLabel("left", metric_label(key))
        scale = 100.0 if key in PERCENT_METRICS else 1.0
        latest: dict[str, object] = {}
        for r in s.results:
            latest[json.dumps(r.config, sort_keys=True)] = r
        self._points = [r for r in latest.values() if r.metrics.get(key) is not None]
        fb = s.size().float_bytes
        unit, div = size_unit(max([fb] + [r.size["quantized_bytes"] for r in self._points]))
        self._unit = unit
        self.plot.setLabel("bottom", f"size ({unit})")
        fv = s.reference.metrics.get(key)
        y_of = self._y_mapper(key, [r.metrics[key] for r in self._points] + ([fv] if fv is not None else []), scale)
        spots = [{"pos": (r.size["quantized_bytes"] / div, y_of(r.metrics[key])), "data": r} for r in self._points]
        self.scatter.setData(spots)
        self.float_point.setData([fb / div], [y_of(fv)] if fv is not None else [0])
        cur = self.current
        if cur is not None and cur.metrics.get(key) is not None:
            self.current_point.setData([cur.size["quantized_bytes"] / div], [y_of(cur.metrics[key])])
        else:
            self.current_point.setData([])

    @staticmethod
    def _y_mapper(key: str, values: list, scale: float):
        """Metric -> y. SQNR's "identical" cap (200 dB) is drawn just above the real points,
        not at 200, so it does not squash them to the bottom of the plot."""
        if key != "sqnr_db":
            return lambda v: v * scale
        real = [v for v in values if v is not None and math.isfinite(v) and v < IDENTICAL_DB]
        top = (max(real) + max(3.0, 0.15 * (max(real) - min(real)))) if real else 60.0
        return lambda v: top if v is None or not math.isfinite(v) or v >= IDENTICAL_DB else v

    def _point_tip(self, x, y, data):
        r = data
        if r is None:
            return ""
        key = primary_metric(self.session.reference.metrics) if self.session is not None else ""
        return (f"{r.label}\n{fmt_bytes(r.size.get('quantized_bytes'))}, {fmt_metric(key, r.metrics.get(key))}"
                "\nclick to restore this config")

    def _on_scatter_clicked(self, _item, points, *_args) -> None:
        if len(points):
            self.resultClicked.emit(points[0].data())


def main() -> int:  # pragma: no cover - a look at the widget alone
    from ..launch import standalone

    def build(session):
        w = SummaryPanel()
        w.set_session(session)
        w.show_result(session.check(label="W8"))
        session.apply_preset("W4")
        w.show_result(session.check(label="W4"))
        w.resize(900, 300)
        return w

    return standalone(build)


if __name__ == "__main__":
    raise SystemExit(main())
