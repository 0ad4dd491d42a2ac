"""Pareto view: model size vs measured metric for searched and hand-made configs.

Reads ``session.analysis.search`` (the Pareto front of
:func:`quantviz.core.search.search`, with its chosen point) and
``session.results`` (every re-check: the hand-made config history).

Signals:
    configChosen(dict): the user clicked a point; the payload is its full
    quantviz config (``QuantConfig.to_dict()`` form).
"""
from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from ..bridge import SessionFollower

METRIC_LABELS = {"accuracy": "accuracy (%)", "top1_agreement": "top-1 agreement (%)", "sqnr_db": "output SQNR (dB)",
                 "cosine": "cosine similarity"}


def _y(metric: str, v):
    if v is None:
        return None
    return v * 100.0 if metric in ("accuracy", "top1_agreement") else float(v)


class ParetoView(SessionFollower, QWidget):
    configChosen = Signal(dict)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._front: list[dict] = []
        self._chosen: dict | None = None
        self._history: list[dict] = []
        self.session = None
        self._stale = False
        top = QHBoxLayout()
        top.addWidget(QLabel("Metric:"))
        self.metric_combo = QComboBox()
        self.metric_combo.currentIndexChanged.connect(lambda _i: self._redraw())
        top.addWidget(self.metric_combo)
        top.addStretch(1)
        self.plot = pg.PlotWidget(background="w")
        pi = self.plot.getPlotItem()
        pi.setLabel("bottom", "model size (KB)")
        pi.showGrid(x=True, y=True, alpha=0.25)
        pi.addLegend(offset=(-10, -10), labelTextColor=(40, 40, 40), brush=pg.mkBrush(255, 255, 255, 210))
        self.front_item = pg.PlotDataItem(pen=pg.mkPen(40, 90, 170, width=2), symbol="o", symbolSize=9,
                                          symbolBrush=pg.mkBrush(40, 90, 170), name="search: Pareto front")
        self.hist_item = pg.ScatterPlotItem(size=9, symbol="s", brush=pg.mkBrush(230, 130, 30), pen=pg.mkPen("w"),
                                            name="hand-made configs")
        self.chosen_item = pg.ScatterPlotItem(size=16, symbol="star", brush=pg.mkBrush(200, 30, 30), pen=pg.mkPen("k"),
                                              name="chosen")
        for it in (self.front_item, self.hist_item, self.chosen_item):
            pi.addItem(it)
        self.front_item.sigPointsClicked.connect(lambda _i, pts, _ev=None: self._on_points_clicked(pts))
        self.hist_item.sigClicked.connect(lambda _i, pts, _ev=None: self._on_points_clicked(pts))
        self.chosen_item.sigClicked.connect(lambda _i, pts, _ev=None: self._on_points_clicked(pts))
        self.info = QLabel("Click a point to use its config.")
        lay = QVBoxLayout(self)
        lay.addLayout(top)
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
        self.set_data(search.get("pareto", []), search.get("chosen"), hist, search.get("metric"))

    def _on_session_analysis_changed(self, what: str, _payload) -> None:
        if what in ("search", "all"):
            self.set_session(self.session)

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
        self.metric_combo.blockSignals(True)
        self.metric_combo.clear()
        for n in order:
            self.metric_combo.addItem(METRIC_LABELS.get(n, n), n)
        self.metric_combo.blockSignals(False)
        self._redraw()

    def _points(self, pts, metric):
        xs, ys, data = [], [], []
        for q in pts:
            y = _y(metric, q.get("metrics", {}).get(metric))
            if y is None or q.get("size_bytes") is None:
                continue
            xs.append(q["size_bytes"] / 1024.0)
            ys.append(y)
            data.append(q)
        return xs, ys, data

    def _redraw(self) -> None:
        metric = self.metric_combo.currentData()
        if metric is None:
            for it in (self.front_item,):
                it.setData([], [])
            self.hist_item.setData([], [])
            self.chosen_item.setData([], [])
            self.info.setText("No search results or re-checks yet.")
            return
        x, y, d = self._points(self._front, metric)
        self.front_item.setData(x, y, data=d)
        x, y, d = self._points(self._history, metric)
        self.hist_item.setData(x=x, y=y, data=d)
        x, y, d = self._points([self._chosen] if self._chosen else [], metric)
        self.chosen_item.setData(x=x, y=y, data=d)
        self.plot.getPlotItem().setLabel("left", METRIC_LABELS.get(metric, metric))
        self.info.setText(f"{len(self._front)} Pareto points, {len(self._history)} hand-made configs. "
                          "Click a point to use its config.")

    def _on_points_clicked(self, pts) -> None:
        if not len(pts):
            return
        q = pts[0].data()
        if isinstance(q, dict) and isinstance(q.get("config"), dict):
            self.info.setText(f"chose {q['size_bytes'] / 1024:.1f} KB, {q.get('avg_bits', 0):.2f} bits/weight")
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
