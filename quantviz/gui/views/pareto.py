"""Pareto view: model size vs measured metric for searched and hand-made configs.

Reads ``session.analysis.search`` (the Pareto front of
:func:`quantviz.core.analysis.search.search`, with its chosen point) and
``session.results`` (every re-check: the hand-made config history).

Signals:
    configChosen(dict): the user clicked a point; the payload is its full
    quantviz config (``QuantConfig.to_dict()`` form).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import math

import pyqtgraph as pg
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QToolTip, QVBoxLayout, QWidget

from ...core.fmt import IDENTICAL_DB, PERCENT_METRICS, fmt_bytes, fmt_drop, fmt_metric, metric_label, size_unit
from .. import theme
from ..bridge import SessionFollower

if TYPE_CHECKING:
    from ...session.session import Session

HOVER_PX = 10  # a point within this many pixels of the mouse shows its details

FRONT_COLOR = (40, 90, 170)
HAND_COLOR = (230, 130, 30)
CHOSEN_COLOR = (200, 30, 30)


def _y(metric: str, v):
    if v is None:
        return None
    if metric == "sqnr_db" and v >= IDENTICAL_DB:
        return None  # "identical" (the float model) is not a point on a dB axis
    return v * 100.0 if metric in PERCENT_METRICS else float(v)


def _legend_html() -> str:
    def dot(rgb, shape="●"):
        return f"<span style='color: rgb{rgb}'>{shape}</span>"

    return (f"{dot(FRONT_COLOR)} search: Pareto front &nbsp; {dot(HAND_COLOR, '■')} hand-made configs &nbsp; "
            f"{dot(CHOSEN_COLOR, '★')} search's pick &nbsp; <span style='color: {theme.HIGHLIGHT}'>◯</span> "
            "current config")


class ParetoView(SessionFollower, QWidget):
    configChosen = Signal(dict)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._front: list[dict] = []
        self._chosen: dict | None = None
        self._history: list[dict] = []
        self._float: dict | None = None
        self._budget: dict = {}
        self.session: Session | None = None
        self._stale = False
        self._div, self._unit = 1024.0, "KB"
        top = QHBoxLayout()
        top.addWidget(QLabel("Metric:"))
        self.metric_combo = QComboBox()
        self.metric_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.metric_combo.currentIndexChanged.connect(lambda _i: self._redraw())
        self._picked: str | None = None  # the metric the user chose here (kept across results); else the search's
        self.metric_combo.activated.connect(lambda _i: setattr(self, "_picked", self.metric_combo.currentData()))
        top.addWidget(self.metric_combo)
        top.addStretch(1)
        self.legend = QLabel(_legend_html())  # outside the plot: it never hides a point
        self.legend.setWordWrap(True)
        self.plot = pg.PlotWidget(background="w")
        pi = self.plot.getPlotItem()
        pi.setLabel("bottom", "model size")
        for axis in ("bottom", "left"):
            pi.getAxis(axis).enableAutoSIPrefix(False)  # units are in the labels
        pi.showGrid(x=True, y=True, alpha=0.25)
        self.front_item = pg.PlotDataItem(pen=pg.mkPen(*FRONT_COLOR, width=2), symbol="o", symbolSize=9,
                                          symbolBrush=pg.mkBrush(*FRONT_COLOR))
        self.hist_item = pg.ScatterPlotItem(size=9, symbol="s", brush=pg.mkBrush(*HAND_COLOR), pen=pg.mkPen("w"))
        self.chosen_item = pg.ScatterPlotItem(size=16, symbol="star", brush=pg.mkBrush(*CHOSEN_COLOR), pen=pg.mkPen("k"))
        self.current_item = pg.ScatterPlotItem(size=22, symbol="o", brush=pg.mkBrush(None),
                                               pen=pg.mkPen(theme.HIGHLIGHT, width=2.5))
        for it in (self.front_item, self.hist_item, self.chosen_item, self.current_item):
            pi.addItem(it)
        self.front_item.sigPointsClicked.connect(lambda _i, pts, _ev=None: self._on_points_clicked(pts))
        self.hist_item.sigClicked.connect(lambda _i, pts, _ev=None: self._on_points_clicked(pts))
        self.chosen_item.sigClicked.connect(lambda _i, pts, _ev=None: self._on_points_clicked(pts))
        self.plot.scene().sigMouseMoved.connect(self._on_plot_hover)
        self.info = QLabel("Hover a point for its details; click it to use its config.")
        self.info.setWordWrap(True)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.legend)
        lay.addWidget(self.plot, 1)
        lay.addWidget(self.info)

    def set_session(self, session) -> None:
        self.session = session
        self.follow(session)
        self._stale = False
        if session is None:
            self.set_data([])
            return
        search = session.analysis.search or {}
        hist = [{"size_bytes": r.size.get("quantized_bytes"), "avg_bits": r.size.get("avg_bits"), "metrics": r.metrics,
                 "config": r.config, "label": r.label} for r in session.results]
        self._budget = dict(search.get("budget") or {})
        self.set_data(search.get("pareto", []), search.get("chosen"), hist, search.get("metric") or self._metric_of(session))

    @staticmethod
    def _metric_of(session) -> str | None:
        """Before a search: the metric sweeps rank by (the model's task metric unless chosen otherwise)."""
        return getattr(session, "analysis_metric", None)

    def _on_session_analysis_changed(self, what: str, _payload) -> None:
        if what in ("search", "all", "metric"):
            self.set_session(self.session)

    def _on_session_config_changed(self, _change) -> None:
        self._mark_current()  # a loaded point is marked at once

    def _on_session_result(self, _result) -> None:
        # hand-made configs join the plot: at once when it is on screen, else when it is shown
        if self.isVisible():
            self.set_session(self.session)
        else:
            self._stale = True

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if getattr(self, "_stale", False):
            self.set_session(self.session)

    def set_data(self, front: list[dict], chosen: dict | None = None, history: list[dict] | None = None,
                 metric: str | None = None) -> None:
        """Points are ``{"size_bytes", "avg_bits", "metrics", "config"}`` dicts."""
        self._front, self._chosen, self._history = list(front), chosen, list(history or [])
        names = []
        for q in self._front + self._history + ([chosen] if chosen else []):
            for k in q.get("metrics", {}):
                if k not in names:
                    names.append(k)
        first = metric if metric in names else (names[0] if names else None)
        order = ([first] if first else []) + [n for n in names if n != first]
        current = self._picked
        self.metric_combo.blockSignals(True)
        self.metric_combo.clear()
        for n in order:
            self.metric_combo.addItem(metric_label(n), n)
        if current in order:
            self.metric_combo.setCurrentIndex(order.index(current))
        self.metric_combo.blockSignals(False)
        self._redraw()

    def _points(self, pts, metric):
        xs, ys, data = [], [], []
        for q in pts:
            y = _y(metric, q.get("metrics", {}).get(metric))
            if y is None or q.get("size_bytes") is None:
                continue
            xs.append(q["size_bytes"] / self._div)
            ys.append(y)
            data.append(q)
        return xs, ys, data

    def _redraw(self) -> None:
        metric = self.metric_combo.currentData()
        if metric is None:
            for it in (self.front_item,):
                it.setData([], [])
            for it in (self.hist_item, self.chosen_item, self.current_item):
                it.setData([], [])
            self.info.setText("No search results or re-checks yet.")
            return
        sizes = [q.get("size_bytes") or 0 for q in self._front + self._history + ([self._chosen] if self._chosen else [])]
        self._unit, self._div = size_unit(max(sizes, default=0))
        x, y, d = self._points(self._front, metric)
        self.front_item.setData(x, y, data=d)
        x, y, d = self._points(self._history, metric)
        self.hist_item.setData(x=x, y=y, data=d)
        x, y, d = self._points([self._chosen] if self._chosen else [], metric)
        self.chosen_item.setData(x=x, y=y, data=d)
        pi = self.plot.getPlotItem()
        pi.setLabel("left", metric_label(metric))
        pi.setLabel("bottom", f"model size ({self._unit})")
        self._mark_current()
        budget = ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in self._budget.items() if v is not None)
        self.info.setText(f"{len(self._front)} Pareto points{f' (budget: {budget})' if budget else ''}, "
                          f"{len(self._history)} hand-made configs. Hover a point for details; click to use it.")

    def _mark_current(self) -> None:
        """Ring the point whose config is the session's current one (a loaded point, say)."""
        metric = self.metric_combo.currentData()
        s = self.session
        if metric is None or s is None:
            self.current_item.setData([], [])
            return
        cur = s.config
        from ...io.config import QuantConfig

        for q in [self._chosen] + self._front + self._history[::-1]:
            if q and isinstance(q.get("config"), dict):
                try:
                    same = QuantConfig.from_dict(q["config"]) == cur
                except Exception:  # noqa: BLE001 - an old point with an unreadable config is just not marked
                    same = False
                if same:
                    x, y, d = self._points([q], metric)
                    self.current_item.setData(x=x, y=y, data=d)
                    return
        self.current_item.setData([], [])

    # ---------------------------------------------------------- hover
    def describe(self, q: dict) -> str:
        """A point's details: its label, size, bits and every metric (with the change against float)."""
        s = self.session
        fm = dict(s.reference.metrics) if s is not None and s.reference is not None else {}
        lines = [q.get("label") or q.get("name") or "search point",
                 f"{fmt_bytes(q.get('size_bytes'))} · {q.get('avg_bits', 0):.2f} bits/weight"]
        for k, v in (q.get("metrics") or {}).items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                d = fmt_drop(k, v - fm[k]) if k in fm and k != "sqnr_db" else ""
                lines.append(f"{metric_label(k)}: {fmt_metric(k, v)}" + (f" ({d} vs float)" if d else ""))
        bits = q.get("bits")
        if isinstance(bits, dict) and bits:
            lines.append("bits: " + ", ".join(f"{n} {b}" for n, b in list(bits.items())[:8])
                         + (" …" if len(bits) > 8 else ""))
        return "\n".join(lines)

    def point_near(self, scene_pos):
        vb = self.plot.getPlotItem().vb
        if not vb.sceneBoundingRect().contains(scene_pos):
            return None
        best, best_d = None, HOVER_PX
        for pts in (self.chosen_item.points(), self.front_item.scatter.points(), self.hist_item.points()):
            for p in pts:
                sp = vb.mapViewToScene(p.pos())
                d = math.hypot(sp.x() - scene_pos.x(), sp.y() - scene_pos.y())
                if d < best_d:
                    best, best_d = p.data(), d
        return best

    def _on_plot_hover(self, scene_pos) -> None:
        q = self.point_near(scene_pos)
        if not isinstance(q, dict):
            QToolTip.hideText()
            return
        text = self.describe(q)
        self.info.setText(text.replace("\n", " · "))
        QToolTip.showText(self.plot.mapToGlobal(self.plot.mapFromScene(scene_pos)), text + "\nclick to use this config",
                          self.plot)

    def _on_points_clicked(self, pts) -> None:
        if not len(pts):
            return
        q = pts[0].data()
        if isinstance(q, dict) and isinstance(q.get("config"), dict):
            self.info.setText(f"loaded {fmt_bytes(q['size_bytes'])}, {q.get('avg_bits', 0):.2f} bits/weight "
                              "(Edit › Undo goes back)")
            self.configChosen.emit(q["config"])


def main() -> int:  # pragma: no cover - a look at the widget alone
    from ...io.config import preset
    from ..launch import standalone

    def build(session):
        for p in ("W8", "W4", "W3"):
            session.check(config=preset(p))
        session.run_search(avg_bits=4, bits=(2, 4, 8), pareto_steps=3)
        w = ParetoView()
        w.set_session(session)
        w.resize(800, 480)
        return w

    return standalone(build)


if __name__ == "__main__":
    raise SystemExit(main())
