"""Side-by-side difference of two configs, layer by layer.

The user picks both sides (A and B) from every config the session knows:
the current one, float, the presets, each checked config in the history,
the search's pick and Pareto points, or a file. The view follows the
session's events, so it is never stale (load a Pareto point and "current"
changes at once). ``set_data(layers, a, b, names)`` compares two configs
(``QuantConfig`` or its dict form); differing layers are highlighted and
listed first.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import json
from pathlib import Path

from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (QCheckBox, QComboBox, QHBoxLayout, QHeaderView, QLabel, QTableWidget, QTableWidgetItem,
                               QVBoxLayout, QWidget)

from ...core.numerics.describe import describe_layer, same_setting
from ...io.config import QuantConfig
from ..bridge import OnScreen, SessionFollower

if TYPE_CHECKING:
    from ...session.session import Session


def describe(spec) -> str:
    """Two short lines: the weight settings, then the activation settings (the shared describer)."""
    return describe_layer(spec)


def diff_rows(layers, a, b) -> list[tuple[str, str, str, bool]]:
    ca = a if isinstance(a, QuantConfig) else QuantConfig.from_dict(a)
    cb = b if isinstance(b, QuantConfig) else QuantConfig.from_dict(b)
    rows = []
    for l in layers:
        sa, sb = ca.resolve(l), cb.resolve(l)
        rows.append((l.name, describe(sa), describe(sb), not same_setting(sa, sb)))
    return rows


def config_choices(session, files: dict | None = None) -> list[tuple[str, str, object]]:
    """Every config the user may compare: ``(key, label, config)``, in menu order.

    The current config, float, the presets, every checked config in the
    history (newest first, once each), the search's pick and its Pareto
    points, and files the user opened here.
    """
    from ...io.config import PRESETS, preset

    out: list[tuple[str, str, object]] = [("current", "current config", session.config)]
    out += [(f"preset:{p}", "float" if p == "float" else f"preset {p}", preset(p)) for p in PRESETS]
    seen = set()
    for r in reversed(session.results):
        k = json.dumps(r.config, sort_keys=True)
        if k in seen:
            continue
        seen.add(k)
        out.append((f"checked:{k}", f"checked #{r.generation}: {r.label}", r.config))
    search = session.analysis.search or {}
    if search.get("chosen", {}).get("config"):
        c = search["chosen"]
        out.append(("search:chosen", f"search pick ({c.get('avg_bits', 0):.2f} bits)", c["config"]))
    for i, q in enumerate(search.get("pareto") or []):
        if q.get("config"):
            out.append((f"search:pareto:{i}", f"Pareto point {i + 1} ({q.get('avg_bits', 0):.2f} bits)", q["config"]))
    for path, cfg in (files or {}).items():
        out.append((f"file:{path}", f"file {Path(path).name}", cfg))
    return out


FILE_ITEM = "__file__"


class ConfigDiffView(OnScreen, SessionFollower, QWidget):
    """Pick two configs (A, B); the table lists each layer's settings in both, differing rows first."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.session: Session | None = None
        self._rows: list = []
        self._table_stale = False
        self._files: dict[str, object] = {}
        self._choices: dict[str, tuple[str, object]] = {}
        self.pick_a, self.pick_b = QComboBox(), QComboBox()
        for combo, tip in ((self.pick_a, "The first config to compare"), (self.pick_b, "The second config to compare")):
            combo.setToolTip(tip + ": the current one, float, a preset, a checked config, a search result or a file.")
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(14)
            combo.activated.connect(lambda _i, c=combo: self._on_pick_activated(c))
        self.summary = QLabel("No configs to compare.")
        self.only_diff = QCheckBox("Only differing layers")
        self.only_diff.toggled.connect(lambda _v: self._fill())
        picks = QHBoxLayout()
        picks.addWidget(QLabel("A:"))
        picks.addWidget(self.pick_a, 1)
        picks.addWidget(QLabel("B:"))
        picks.addWidget(self.pick_b, 1)
        top = QHBoxLayout()
        top.addWidget(self.summary, 1)
        top.addWidget(self.only_diff)
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["layer", "A", "B"])
        self.table.verticalHeader().setVisible(False)
        self.table.setWordWrap(False)
        self.table.setHorizontalScrollMode(QTableWidget.ScrollMode.ScrollPerPixel)
        hh = self.table.horizontalHeader()
        hh.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)  # never cut a setting off
        hh.setStretchLastSection(False)
        lay = QVBoxLayout(self)
        lay.addLayout(picks)
        lay.addLayout(top)
        lay.addWidget(self.table, 1)

    # --------------------------------------------------------- session
    def set_session(self, session, other: dict | None = None) -> None:
        """Follow ``session``; ``other`` (a config dict) becomes side B."""
        self.session = session
        self.follow(session)
        self.when_shown(self._catch_up)
        if session is None:
            self._choices = {}
            return
        if other is not None:
            self._files["(given)"] = QuantConfig.from_dict(other)
            self._refresh(b="file:(given)")
        else:
            self._refresh(follow=True)  # a new or recalibrated session: the table fills when shown

    def _on_session_config_changed(self, _change) -> None:
        self._refresh(follow=True)

    def _on_session_result(self, _result) -> None:
        self._refresh(follow=True)

    def _on_session_analysis_changed(self, what: str, _payload) -> None:
        if what in ("search", "all"):
            self._refresh(follow=True)

    def _catch_up(self, raised: bool) -> None:
        if self._table_stale and (raised or self.on_screen()):
            self._fill()

    def select(self, a: str | None = None, b: str | None = None) -> None:
        """Compare the choices with keys ``a`` and ``b`` (see :func:`config_choices`)."""
        self._refresh(a, b)

    def keys(self) -> list[str]:
        return list(self._choices)

    def _refresh(self, a: str | None = None, b: str | None = None, follow: bool = False) -> None:
        """Rebuild both pickers and the comparison. ``follow``: caused by a session event, so
        while the panel is hidden only the count is updated and the table waits until it is shown."""
        s = self.session
        if s is None:
            return
        a = a or self.pick_a.currentData() or "current"
        default_b = "search:chosen" if s.analysis.search else "preset:float"
        b = b or self.pick_b.currentData() or default_b
        choices = config_choices(s, self._files)
        self._choices = {k: (label, cfg) for k, label, cfg in choices}
        for combo, want, fallback in ((self.pick_a, a, "current"), (self.pick_b, b, default_b)):
            combo.blockSignals(True)
            combo.clear()
            for k, label, _cfg in choices:
                combo.addItem(label, k)
            combo.addItem("File…", FILE_ITEM)
            i = combo.findData(want)
            combo.setCurrentIndex(i if i >= 0 else combo.findData(fallback))
            combo.blockSignals(False)
        ka, kb = self.pick_a.currentData(), self.pick_b.currentData()
        (la, ca), (lb, cb) = self._choices[ka], self._choices[kb]
        self.set_data(s.layers, ca, cb, (la, lb), fill=not follow or self.on_screen())

    def _on_pick_activated(self, combo) -> None:
        if combo.currentData() == FILE_ITEM:
            from .. import dialogs

            path = dialogs.choose_open(self, "Compare with a config file", dialogs.CONFIG_FILTER)
            key = None
            if path:
                key = self.add_file(path)
            side = {"a": key} if combo is self.pick_a else {"b": key}
            if key is None:  # cancelled or unreadable: back to what was shown
                side = {}
                combo.setCurrentIndex(0)
            self._refresh(**side)
            return
        self._refresh()

    def add_file(self, path: str) -> str | None:
        """Read a config-bearing file (any that File › Import config reads); its choice key, or None."""
        from ...core.errors import QuantvizError

        try:
            self._files[str(path)] = self.session.load_config_file(path)
        except (QuantvizError, OSError) as exc:
            self.summary.setText(f"Could not read {Path(path).name}: {exc}")
            return None
        return f"file:{path}"

    # ------------------------------------------------------------ table
    def set_data(self, layers, a, b, names=("A", "B"), fill: bool = True) -> None:
        """Compare ``a`` with ``b``; ``fill=False`` updates the count now and the table when it is next shown
        (a hidden panel costs no item churn on the GUI thread while a model computes in the background)."""
        self._rows = diff_rows(layers, a, b)
        self.table.setHorizontalHeaderLabels(["layer", names[0], names[1]])
        n = sum(r[3] for r in self._rows)
        self.summary.setText(f"{n} of {len(self._rows)} layers differ")
        if fill:
            self._fill()
        else:
            self._table_stale = True

    def _fill(self) -> None:
        self._table_stale = False
        rows = sorted(self._rows, key=lambda r: not r[3])
        if self.only_diff.isChecked():
            rows = [r for r in rows if r[3]]
        self.table.setRowCount(len(rows))
        hi = QBrush(QColor(255, 236, 200))
        for i, (name, sa, sb, differs) in enumerate(rows):
            for j, text in enumerate((name, sa, sb)):
                it = QTableWidgetItem(text)
                it.setToolTip(text)
                if differs:
                    it.setBackground(hi)
                self.table.setItem(i, j, it)
        self.table.resizeRowsToContents()


def main() -> int:  # pragma: no cover - a look at the widget alone
    from ...io.config import preset
    from ..launch import standalone

    def build(session):
        other = preset("W4").copy()
        other.set_layer(session.layers[0].name, {"weight": {"bits": 8}})
        w = ConfigDiffView()
        w.set_data(session.layers, session.config, other, ("W8 (current)", "W4, first layer W8"))
        w.resize(800, 300)
        return w

    return standalone(build)


if __name__ == "__main__":
    raise SystemExit(main())
