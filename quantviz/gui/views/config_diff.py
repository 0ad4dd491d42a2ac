"""Side-by-side difference of two configs, layer by layer.

``set_data(layers, a, b, names=("A", "B"))`` takes the layer inventory and two
configs (``QuantConfig`` or its dict form); every layer's resolved settings are
compared and the differing ones are highlighted and listed first.
"""
from __future__ import annotations

from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from ...io.config import QuantConfig
from ..bridge import SessionFollower


def describe(spec) -> str:
    w, a = spec.weight, spec.activation
    if w.bits is None:
        ws = "W float"
    else:
        g = {"per_channel": "per-ch", "per_tensor": "per-tensor"}.get(w.granularity, f"g{w.effective_group_size()}")
        ws = f"W{w.bits} {g}{(f' {w.grid} grid' if w.grid != 'full' else '') if w.symmetric else ' asym'} {w.range.describe()}"
    as_ = "A float" if a.bits is None else f"A{a.bits} {a.range.describe()}"
    return f"{ws}; {as_}"


def diff_rows(layers, a, b) -> list[tuple[str, str, str, bool]]:
    ca = a if isinstance(a, QuantConfig) else QuantConfig.from_dict(a)
    cb = b if isinstance(b, QuantConfig) else QuantConfig.from_dict(b)
    rows = []
    for l in layers:
        sa, sb = ca.resolve(l), cb.resolve(l)
        rows.append((l.name, describe(sa), describe(sb), sa != sb))
    return rows


class ConfigDiffView(SessionFollower, QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.session = None
        self._rows: list = []
        self.summary = QLabel("No configs to compare.")
        self.only_diff = QCheckBox("Only differing layers")
        self.only_diff.toggled.connect(lambda _v: self._fill())
        top = QHBoxLayout()
        top.addWidget(self.summary, 1)
        top.addWidget(self.only_diff)
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["layer", "A", "B"])
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setStretchLastSection(True)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.table, 1)

    def set_session(self, session, other: dict | None = None) -> None:
        """Compare the session's config with ``other`` (default: the search's chosen config)."""
        self.session = session
        self.follow(session)
        if session is None:
            return
        if other is None:
            other = (session.analysis.search or {}).get("chosen", {}).get("config")
        if other is not None:
            self.set_data(session.layers, session.config, other, ("current", "other"))

    def _on_session_config_changed(self, _change) -> None:
        self.set_session(self.session)

    def _on_session_analysis_changed(self, what: str, _payload) -> None:
        if what in ("search", "all"):
            self.set_session(self.session)

    def set_data(self, layers, a, b, names=("A", "B")) -> None:
        self._rows = diff_rows(layers, a, b)
        self.table.setHorizontalHeaderLabels(["layer", names[0], names[1]])
        n = sum(r[3] for r in self._rows)
        self.summary.setText(f"{n} of {len(self._rows)} layers differ")
        self._fill()

    def _fill(self) -> None:
        rows = sorted(self._rows, key=lambda r: not r[3])
        if self.only_diff.isChecked():
            rows = [r for r in rows if r[3]]
        self.table.setRowCount(len(rows))
        hi = QBrush(QColor(255, 236, 200))
        for i, (name, sa, sb, differs) in enumerate(rows):
            for j, text in enumerate((name, sa, sb)):
                it = QTableWidgetItem(text)
                if differs:
                    it.setBackground(hi)
                self.table.setItem(i, j, it)
        self.table.resizeColumnsToContents()


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
