"""Sensitivity view: a layers x bit-widths heatmap and a sorted bar chart.

Reads ``session.analysis.sensitivity`` (results of
:func:`quantviz.core.analysis.sensitivity.run_sensitivity`). Colour = how much worse
the model gets (the primary metric's drop, or the output noise in dB for the
fidelity view); values show on hover.

Signals:
    layerClicked(str): the user clicked a layer's row in the heatmap or its bar.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QScrollArea, QSplitter, QVBoxLayout, QWidget

from ...core.fmt import METRIC_LABELS, PERCENT_METRICS
from ...core.analysis.ranking import predicted
from ..bridge import SessionFollower
from ..elided import ElidedLabel, elide_layer_name

if TYPE_CHECKING:
    from ...session.session import Session

ROW_PX = 20  # a heatmap row is never thinner than this: a long model scrolls instead
NAME_PX = 150  # layer names on the axes: longer ones keep their block index and end (elide_layer_name)

MODES = {  # method -> [(label, key)]; "drop" stands for one entry per metric the cells hold
    "e2e": [("metric drop", "drop"), ("output noise (-SQNR dB)", "fid")],
    "loo": [("metric drop", "drop"), ("SQNR drop (dB)", "fid")],
    "local": [("layer noise (-SQNR dB)", "fid")],
    "hessian": [("log10 Hessian score", "fid")],
}


def drop_label(metric: str) -> str:
    """``accuracy drop (pt)``, ``KL divergence increase``: what a positive (worse) change of ``metric`` is."""
    from ...core.sim.evaluate import higher_is_better

    word = "drop" if higher_is_better(metric) else "increase"
    unit = " (pt)" if metric in PERCENT_METRICS else " (dB)" if metric == "sqnr_db" else ""
    return f"{METRIC_LABELS.get(metric, metric)} {word}{unit}"


def drop_metrics(result: dict) -> list[str]:
    """Metrics whose drop the cells of ``result`` hold (the result's own metric first)."""
    seen: dict[str, None] = {}
    if result.get("metric"):
        seen[result["metric"]] = None
    for e in result.get("layers", [])[:1]:
        for cell in e["results"].values():
            for k in cell.get("drop", {}):
                if k != "sqnr_db":
                    seen.setdefault(k, None)
    return list(seen)


def metric_choices(metrics: dict) -> list[str]:
    """The metrics a model can be ranked by, its primary metric first."""
    from ...core.sim.evaluate import primary_metric

    if not metrics:
        return []
    first = primary_metric(metrics)
    return [first] + [k for k in metrics if k != first]


def cell_value(result: dict, entry: dict, bits: str, mode: str) -> float:
    """The number a cell is coloured by (higher = more sensitive); NaN when missing.
    ``mode``: ``"fid"``, or ``"drop"`` / ``"drop:METRIC"`` (the result's metric / another one the cells hold)."""
    cell = entry["results"].get(bits)
    if cell is None:
        return float("nan")
    if mode.startswith("drop") and "drop" in cell:
        metric = mode[5:] or result.get("metric")
        v = cell["drop"].get(metric)
        if v is not None:
            return float(v) * (100.0 if metric in PERCENT_METRICS else 1.0)
    v = predicted(result, entry["name"], bits)
    if v is None:
        return float("nan")
    if result["method"] == "hessian":
        return math.log10(max(abs(v), 1e-30))
    return float(v)


class SensitivityView(SessionFollower, QWidget):
    layerClicked = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.session: Session | None = None
        self._result: dict | None = None
        self._results: dict = {}
        self._values = np.zeros((0, 0))
        self._names: list[str] = []
        self._bits: list[str] = []
        top = QHBoxLayout()
        top.addWidget(QLabel("Method:"))
        self.method_combo = QComboBox()
        self.method_combo.currentIndexChanged.connect(self._on_method_changed)
        top.addWidget(self.method_combo)
        top.addWidget(QLabel("Colour by:"))
        self.mode_combo = QComboBox()
        self.mode_combo.currentIndexChanged.connect(lambda _i: self._redraw())
        top.addWidget(self.mode_combo)
        top.addSpacing(12)
        top.addWidget(QLabel("Rank by:"))
        self.metric_combo = QComboBox()
        self.metric_combo.setToolTip("The metric the next sensitivity run and the search rank layers by (kept with "
                                     "the session; quantviz sensitivity/search --metric). End-to-end and "
                                     "leave-one-out results hold every metric's drop: colour by any of them above.")
        self.metric_combo.activated.connect(self._on_metric_chosen)
        top.addWidget(self.metric_combo)
        top.addStretch(1)
        self.info = ElidedLabel("Hover a cell for its values; click a layer to select it.")
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.heat = pg.PlotWidget(background="w")
        self.heat.setMouseEnabled(False, False)
        self.heat.hideButtons()
        hp = self.heat.getPlotItem()
        hp.setLabel("bottom", "weight bits")
        hp.invertY(True)
        self.image = pg.ImageItem(axisOrder="row-major")
        hp.addItem(self.image)
        self.cmap = pg.colormap.get("viridis")
        self.colorbar = pg.ColorBarItem(colorMap=self.cmap, interactive=False, width=14, label="")
        self.colorbar.setImageItem(self.image, insert_in=hp)
        self.colorbar.axis.enableAutoSIPrefix(False)  # KL drops of 1e-5: the label names the unit, never "x0.001"
        self.colorbar.axis.setWidth(self.fontMetrics().horizontalAdvance("0.0000") + 34)  # ticks and label side by side
        self.heat.scene().sigMouseMoved.connect(self._on_heat_hover)
        self.heat.scene().sigMouseClicked.connect(self._on_heat_clicked)

        self.bars = pg.PlotWidget(background="w")
        self.bars.setMouseEnabled(False, False)
        self.bars.hideButtons()
        bp = self.bars.getPlotItem()
        bp.invertY(True)
        bp.getAxis("bottom").enableAutoSIPrefix(False)
        self.bar_item = pg.BarGraphItem(x0=[], y=[], height=[], width=[], brush=pg.mkBrush(70, 110, 180))
        bp.addItem(self.bar_item)
        self.bars.scene().sigMouseClicked.connect(self._on_bars_clicked)
        self._bar_names: list[str] = []

        for combo in (self.method_combo, self.mode_combo, self.metric_combo):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.split = split = QSplitter(Qt.Orientation.Horizontal)
        for plot in (self.heat, self.bars):
            plot.setMinimumWidth(220)  # the two plots share a narrow panel instead of running off its edge
        split.addWidget(self.heat)
        split.addWidget(self.bars)
        split.setSizes([500, 500])  # the bar chart's names take as much room as the heatmap's
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll.setWidget(split)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.scroll, 1)
        lay.addWidget(self.info)

    # ------------------------------------------------------------ data
    def set_session(self, session) -> None:
        self.session = session
        self.follow(session)
        self._fill_metrics()
        self.set_results(dict(session.analysis.sensitivity) if session is not None else {})

    def _on_session_analysis_changed(self, what: str, _payload) -> None:
        if what in ("sensitivity", "all", "metric") and self.session is not None:
            self._fill_metrics()
            self.set_results(dict(self.session.analysis.sensitivity))

    def _fill_metrics(self) -> None:
        """The metrics this model has (the float reference's), the primary marked; the session's choice current."""
        from ...core.sim.evaluate import primary_metric

        s = self.session
        ref = getattr(s, "reference", None) if s is not None else None
        metrics = metric_choices(ref.metrics if ref is not None else {})
        self.metric_combo.blockSignals(True)
        self.metric_combo.clear()
        for k in metrics:
            self.metric_combo.addItem(METRIC_LABELS.get(k, k) + (" (primary)" if k == primary_metric(ref.metrics) else ""), k)
        chosen = s.analysis_metric if s is not None else None
        if chosen in metrics:
            self.metric_combo.setCurrentIndex(metrics.index(chosen))
        self.metric_combo.setEnabled(bool(metrics))
        self.metric_combo.blockSignals(False)

    def _on_metric_chosen(self, _i: int) -> None:
        from ...core.errors import QuantvizError

        if self.session is None:
            return
        try:
            self.session.set_analysis_metric(self.metric_combo.currentData())
        except QuantvizError as exc:
            self.info.setText(str(exc))

    def set_results(self, results: dict) -> None:
        """``{method: result}`` as stored in ``session.analysis.sensitivity``."""
        self._results = {m: r for m, r in results.items() if r.get("layers")}
        self.method_combo.blockSignals(True)
        self.method_combo.clear()
        for m in ("e2e", "loo", "local", "hessian"):
            if m in self._results:
                self.method_combo.addItem(m, m)
        self.method_combo.blockSignals(False)
        self._on_method_changed()

    def _on_method_changed(self, *_a) -> None:
        m = self.method_combo.currentData()
        self._result = self._results.get(m)
        chosen = self.session.analysis_metric if self.session is not None else None
        self.mode_combo.blockSignals(True)
        self.mode_combo.clear()
        for label, key in MODES.get(m, []):
            if key == "drop":
                if not self._result or not self._result.get("metric"):
                    continue
                for metric in drop_metrics(self._result):  # one entry per metric the cells hold
                    self.mode_combo.addItem(drop_label(metric), f"drop:{metric}")
                continue
            self.mode_combo.addItem(label, key)
        i = self.mode_combo.findData(f"drop:{chosen}")  # colour by the chosen metric where the cells hold it
        if i >= 0:
            self.mode_combo.setCurrentIndex(i)
        self.mode_combo.blockSignals(False)
        self._redraw()

    def _redraw(self) -> None:
        r = self._result
        if not r:
            self.image.clear()
            self.bar_item.setOpts(x0=[], y=[], height=[], width=[])
            self.info.setText("No sensitivity results yet: Run › Sensitivity in the app, or quantviz sensitivity.")
            return
        self.info.setText("Hover a cell for its values; click a layer to select it everywhere." + self._metric_note())
        mode = self.mode_combo.currentData() or "fid"
        self._names = [e["name"] for e in r["layers"]]
        self._bits = [str(b) for b in r["bits"]]
        vals = np.array([[cell_value(r, e, b, mode) for b in self._bits] for e in r["layers"]], dtype=float)
        self._values = vals
        finite = vals[np.isfinite(vals)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if hi <= lo:
            hi = lo + 1e-9
        self.image.setImage(np.nan_to_num(vals, nan=lo), autoLevels=False, levels=(lo, hi))
        self.image.setRect(-0.5, -0.5, len(self._bits), len(self._names))
        self.colorbar.setLevels((lo, hi))
        self.colorbar.axis.setLabel(self._mode_label())
        hp = self.heat.getPlotItem()
        hp.getAxis("bottom").setTicks([[(i, f"W{b}") for i, b in enumerate(self._bits)]])
        self._name_ticks(hp.getAxis("left"), self._names)
        hp.setXRange(-0.5, len(self._bits) - 0.5, padding=0)
        hp.setYRange(-0.5, len(self._names) - 0.5, padding=0)
        hp.setTitle(f"{r['method']} sensitivity", color="#333")
        # rows stay readable: the plots grow with the model and the panel scrolls
        self.split.setMinimumHeight(len(self._names) * ROW_PX + 90)
        col = 0  # bar chart at the lowest tested bit-width, most sensitive first
        v = np.nan_to_num(vals[:, col], nan=lo)
        order = list(np.argsort(-v, kind="stable"))
        self._bar_names = [self._names[i] for i in order]
        base = min(0.0, float(v.min()))
        self.bar_item.setOpts(x0=[base] * len(order), y=list(range(len(order))), height=[0.7] * len(order),
                              width=[float(v[i]) - base for i in order])
        bp = self.bars.getPlotItem()
        self._name_ticks(bp.getAxis("left"), self._bar_names)
        bp.setLabel("bottom", f"{self._mode_label()} at W{self._bits[col]}")
        bp.setYRange(-0.6, len(order) - 0.4, padding=0)
        top = float(v.max()) if len(v) else 0.0
        bp.setXRange(base, top + 0.06 * (top - base) if top > base else base + 1.0, padding=0)  # no bar on the edge
        bp.setTitle("most sensitive first", color="#333", size="9pt")

    def _mode_label(self) -> str:
        return self.mode_combo.currentText()

    def _metric_note(self) -> str:
        """Say so when the shown result ranks by another metric than the one chosen for the next run."""
        chosen = self.session.analysis_metric if self.session is not None else None
        ranked = (self._result or {}).get("metric")
        if chosen and ranked and chosen != ranked:
            return (f" This {self._result['method']} result ranks by {METRIC_LABELS.get(ranked, ranked)}; run it "
                    f"again to rank by {METRIC_LABELS.get(chosen, chosen)}.")
        return ""

    def _name_ticks(self, axis, names) -> None:
        """One tick per layer name; a long name keeps its block index and its end (``…3.intermediate.dense``),
        in full on hover."""
        fm = self.fontMetrics()
        room = NAME_PX
        short = [elide_layer_name(n, lambda t: fm.horizontalAdvance(t) <= room) for n in names]
        axis.setStyle(hideOverlappingLabels=False)
        axis.setTicks([[(i, n) for i, n in enumerate(short)]])
        axis.setWidth(max((fm.horizontalAdvance(n) for n in short), default=20) + 16)

    # ---------------------------------------------------------- mouse
    def _cell_at(self, scene_pos):
        vb = self.heat.getPlotItem().vb
        if not vb.sceneBoundingRect().contains(scene_pos):
            return None
        p = vb.mapSceneToView(scene_pos)
        i, j = int(round(p.y())), int(round(p.x()))
        if 0 <= i < len(self._names) and 0 <= j < len(self._bits):
            return i, j
        return None

    def _on_heat_hover(self, pos) -> None:
        ij = self._cell_at(pos)
        if ij is None or not self._result:
            return
        i, j = ij
        cell = self._result["layers"][i]["results"].get(self._bits[j], {})
        from ...core.fmt import fmt_drop, fmt_metric

        parts = [f"{k} {fmt_metric(k, v)}" for k, v in cell.get("metrics", {}).items() if isinstance(v, (int, float))]
        parts += [f"{k} drop {fmt_drop(k, v)}" for k, v in cell.get("drop", {}).items()]
        self.info.setText(f"{self._names[i]} at W{self._bits[j]}: " + ", ".join(parts))

    def _on_heat_clicked(self, ev) -> None:
        ij = self._cell_at(ev.scenePos())
        if ij is not None:
            self.layerClicked.emit(self._names[ij[0]])

    def _on_bars_clicked(self, ev) -> None:
        vb = self.bars.getPlotItem().vb
        if not vb.sceneBoundingRect().contains(ev.scenePos()):
            return
        i = int(round(vb.mapSceneToView(ev.scenePos()).y()))
        if 0 <= i < len(self._bar_names):
            self.layerClicked.emit(self._bar_names[i])


def main() -> int:  # pragma: no cover - a look at the widget alone
    from ..launch import standalone

    def build(session):
        session.run_sensitivity("e2e", bits=(2, 4, 8))
        session.run_sensitivity("local", bits=(2, 4, 8))
        w = SensitivityView()
        w.set_session(session)
        w.resize(1000, 420)
        return w

    return standalone(build)


if __name__ == "__main__":
    raise SystemExit(main())
