"""The layer table's Qt model: one row per quantizable layer, computed lazily.

The columns are the entries of :data:`.columns.TABLE`; this model knows
none by name. Rows are never materialised: ``data()`` reads the layer's :class:`LayerInfo`,
its resolved :class:`LayerSpec` (cached per layer, refreshed only for layers
an edit touched) and a cache of per-layer statistics (weight / activation
SQNR) keyed by ``(name, spec)``. Missing statistics are collected and computed
by one background job at a time (:func:`quantviz.session.stats.layer_stats`), which never takes the
session lock, so the GUI thread never waits for a running re-check. Only rows
the view asks for are computed, so thousands of layers stay fast.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt, QTimer, Signal
from PySide6.QtGui import QBrush, QColor

from ...core.numerics.spec import LayerSpec
from ...session.stats import layer_stats
from .columns import COL, FIELDS, GRAN_LABEL, TABLE, Column, edit_label, stats_cell  # noqa: F401 (GRAN_LABEL re-exported)

if TYPE_CHECKING:
    from ...session.session import Session

COLUMNS = [(c.key, c.header, c.tip) for c in TABLE]  # (key, header, tooltip), in order
EDITABLE = {c.key for c in TABLE if c.editable}
STATS_KEYS = {c.key for c in TABLE if c.kind == "stats"}
VARIES_SAMPLE = 4000  # layers looked at to tell whether a column says something
SORT_ROLE = Qt.UserRole + 1
NAME_ROLE = Qt.UserRole + 2
TYPE_ROLE = Qt.UserRole + 3


def field_patch(field: str, value) -> dict:
    """The config patch that sets one table field (``value`` as the editors give it)."""
    if field not in FIELDS:
        raise ValueError(f"not an editable field: {field}")
    return FIELDS[field].patch(value)


def _sqnr_brush(v: float | None) -> QBrush | None:
    if v is None or not math.isfinite(v):
        return None
    if v < 20:
        return QBrush(QColor("#f8d7d3"))
    if v < 30:
        return QBrush(QColor("#fcebc8"))
    return QBrush(QColor("#dff0e0"))


class LayerTableModel(QAbstractTableModel):
    """Rows of ``session.layers``; edits go to ``session.edit_layers`` (undoable)."""

    statsUpdated = Signal()
    editFailed = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.session: Session | None = None
        self._layers = []
        self._row_of: dict[str, int] = {}
        self._specs: dict[str, LayerSpec] = {}
        self._stats: dict[tuple[str, LayerSpec], dict] = {}
        self._pending: set[tuple[str, LayerSpec]] = set()
        self._varies: dict[str, bool] = {}  # column key -> do its cells differ between layers
        self.weights_only = False
        self._inflight = False
        self._req = 0
        # request_stats(session, items, done(stats), failed(message | None)) runs layer_stats in the background;
        # None computes synchronously (used when the widget runs alone)
        self.request_stats: Callable | None = None
        # edit_targets(name) -> names an edit of this row applies to (the selection)
        self.edit_targets: Callable[[str], list[str]] = lambda name: [name]
        self._flush_timer = QTimer(self)
        self._flush_timer.setSingleShot(True)
        self._flush_timer.setInterval(0)
        self._flush_timer.timeout.connect(self._flush_stats)

    # ---------------------------------------------------------- session
    def set_session(self, session) -> None:
        self.beginResetModel()
        self.session = session
        self._layers = list(session.layers) if session is not None else []
        self._row_of = {l.name: i for i, l in enumerate(self._layers)}
        self._specs = dict(session.specs) if session is not None else {}
        self._weights = session.config.options.get("weights") if session is not None else None
        self._stats.clear()
        self._pending.clear()
        self._varies.clear()
        # a file whose activations cannot be simulated (unconvertible TorchScript): no activation cells
        self.weights_only = bool(session is not None and session.bundle.meta.get("weights_only"))
        self._inflight = False
        self._req += 1  # answers to earlier requests are dropped
        self.endResetModel()

    def specs_changed(self, changed: dict[str, LayerSpec]) -> None:
        """Take the new specs of the layers an edit changed (a ConfigChange's ``changed``)."""
        if self.session is None:
            return
        weights = self.session.config.options.get("weights")
        if weights != getattr(self, "_weights", None):
            # other weights (QAT's trained ones, or back to the untrained): every statistic is of the
            # old weights, under unchanged specs (the W SQNR column kept the untrained weights' numbers)
            self._weights = weights
            self._stats.clear()
            self._pending.clear()
            self._req += 1  # answers computed on the old weights are dropped
            self._inflight = False
            if self._layers:
                self.dataChanged.emit(self.index(0, 0), self.index(len(self._layers) - 1, len(COLUMNS) - 1))
        self._varies.clear()
        rows = []
        for n, spec in changed.items():
            if n in self._row_of:
                self._specs[n] = spec
                rows.append(self._row_of[n])
        if rows:
            self.dataChanged.emit(self.index(min(rows), 0), self.index(max(rows), len(COLUMNS) - 1))

    def refresh_column(self, key: str) -> None:
        if self._layers:
            c = COL[key]
            self.dataChanged.emit(self.index(0, c), self.index(len(self._layers) - 1, c))
            self.headerDataChanged.emit(Qt.Horizontal, c, c)  # the sensitivity header names its unit

    def column_varies(self, key: str) -> bool:
        """Whether a column says something: its cells differ between layers (computed columns always do)."""
        col = TABLE[COL[key]]
        if col.cell is None or not self._layers:
            return True
        if key not in self._varies:
            first, varies = None, False
            step = max(1, len(self._layers) // VARIES_SAMPLE)  # a huge model: a spread sample decides (cheap per edit)
            for info in self._layers[::step]:
                text = col.cell(info, self._specs[info.name])[0]
                if first is None:
                    first = text
                elif text != first:
                    varies = True
                    break
            self._varies[key] = varies
        return self._varies[key]

    def name_at(self, row: int) -> str:
        return self._layers[row].name

    def row_of(self, name: str) -> int:
        return self._row_of.get(name, -1)

    def spec_of(self, name: str) -> LayerSpec:
        return self._specs[name]

    def stats_of(self, name: str) -> dict | None:
        """Cached statistics of ``name`` under its current spec (None: not computed yet)."""
        return self._stats.get((name, self._specs.get(name)))

    # ------------------------------------------------------------ stats
    def _want_stats(self, key) -> None:
        if key not in self._pending:
            self._pending.add(key)
            if not self._inflight:
                self._flush_timer.start()

    def _flush_stats(self) -> None:
        if self._inflight or not self._pending or self.session is None:
            return
        items = sorted(self._pending, key=lambda k: self._row_of.get(k[0], 0))
        self._pending.clear()
        session = self.session
        self._req += 1
        req = self._req
        if self.request_stats is None:
            self._stats_arrived(req, layer_stats(session, items))
            return
        self._inflight = True
        self.request_stats(session, items, lambda stats: self._stats_arrived(req, stats),
                           lambda message=None: self._stats_failed(req, items, message))

    def _stats_failed(self, req: int, items, message: str | None) -> None:
        """A stats job ended without results: retry cancelled items, mark failed ones."""
        if req != self._req:
            return
        self._inflight = False
        if message is None:
            self._pending.update(items)
        else:
            self._stats_arrived(req, {k: {"weight_sqnr_db": None, "act_sqnr_db": None, "error": message} for k in items})
            return
        if self._pending:
            self._flush_timer.start()

    def _stats_arrived(self, req: int, stats: dict) -> None:
        if req != self._req:
            return
        self._inflight = False
        self.add_stats(stats)
        if self._pending:
            self._flush_timer.start()

    def add_stats(self, stats: dict) -> None:
        """Store statistics computed elsewhere (``layer_stats`` output)."""
        self._stats.update(stats)
        self._pending.difference_update(stats)
        rows = [self._row_of[n] for n, _ in stats if n in self._row_of]
        if rows:
            a, b = COL["weight_sqnr_db"], COL["act_sqnr_db"]
            self.dataChanged.emit(self.index(min(rows), a), self.index(max(rows), b))
        self.statsUpdated.emit()

    # ------------------------------------------------------- Qt model API
    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._layers)

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.DisplayRole):
        if orientation != Qt.Horizontal or not 0 <= section < len(COLUMNS):
            return None
        sc = self.session.analysis.scores if self.session is not None and TABLE[section].kind == "sensitivity" else None
        if role == Qt.DisplayRole:
            return sc.header if sc is not None else COLUMNS[section][1]
        if role == Qt.ToolTipRole:
            return sc.describe() if sc is not None else COLUMNS[section][2]
        return None

    def flags(self, index):
        f = Qt.ItemIsEnabled | Qt.ItemIsSelectable
        if not index.isValid():
            return f
        key = COLUMNS[index.column()][0]
        if key in EDITABLE:
            info = self._layers[index.row()]
            if self._no_activation(TABLE[index.column()], info):
                return f
            spec = self._specs.get(info.name)
            if key == "algorithm" and spec is not None and spec.weight.format != "int":
                return f  # algorithms fit integer grids; a float / block format has none
            f |= Qt.ItemIsEditable
        return f

    def _no_activation(self, col: Column, info) -> bool:
        """An activation cell with nothing to show: the input is not a float tensor, or the file is weights-only."""
        act = (col.field is not None and col.field.activation) or col.key == "act_sqnr_db"
        return act and (self.weights_only or not info.has_activation_input)

    def _value(self, info, spec: LayerSpec, col: Column):
        """(display text, sort key) of one cell."""
        if self.weights_only and self._no_activation(col, info):
            return "—", 100
        if col.cell is not None:
            return col.cell(info, spec)
        if col.kind == "sensitivity":
            sc = self.session.analysis.scores if self.session else None
            v = sc.scores.get(info.name) if sc else None
            return ("", -math.inf) if v is None else (sc.fmt(v), float(v))
        st = self._stats.get((info.name, spec))
        if st is not None and st.get("pending") and not self.session.sim.algorithm_pending(info.name, spec.weight):
            del self._stats[(info.name, spec)]  # a re-check computed the layer's algorithm meanwhile
            st = None
        cell = stats_cell(col.key, info, spec, st)
        if cell is None:
            self._want_stats((info.name, spec))
            return "…", -math.inf
        return cell

    def data(self, index, role=Qt.DisplayRole):
        if not index.isValid() or self.session is None:
            return None
        info = self._layers[index.row()]
        col = TABLE[index.column()]
        spec = self._specs.get(info.name)
        if spec is None:
            return None
        if role in (Qt.DisplayRole, SORT_ROLE):
            text, sort = self._value(info, spec, col)
            return text if role == Qt.DisplayRole else sort
        if role == Qt.EditRole:
            return col.field.get(spec) if col.field is not None else None
        if role == NAME_ROLE:
            return info.name
        if role == TYPE_ROLE:
            return info.type
        if role == Qt.TextAlignmentRole:
            return int((Qt.AlignRight if col.right else Qt.AlignLeft) | Qt.AlignVCenter)
        if role == Qt.BackgroundRole and col.kind == "stats":
            st = self._stats.get((info.name, spec))
            return _sqnr_brush(st.get(col.key)) if st else None
        if role == Qt.ToolTipRole:
            return self._tooltip(info, spec, col)
        return None

    def _tooltip(self, info, spec: LayerSpec, col: Column) -> str:
        if self.weights_only and self._no_activation(col, info):
            return "Activations cannot be simulated for this file: only its weights are quantized."
        if col.key == "name":
            return f"{info.name}\n{info.type}, weight shape {tuple(info.weight_shape)}"
        if col.kind == "stats":
            st = self._stats.get((info.name, spec))
            if st and st.get("error"):
                return st["error"]
            if st and col.key == "weight_sqnr_db" and st.get("pending"):
                return f"{spec.weight.algorithm} runs with the next re-check"
            if st and col.key == "weight_sqnr_db" and st.get("clipped") is not None:
                tip = f"{col.tip}\nclipped weights: {st['clipped'] * 100:.2f}%"
                return tip + (f"\n{st['algorithm']}" if st.get("algorithm") else "")
        return col.tip

    def setData(self, index, value, role=Qt.EditRole):
        if role != Qt.EditRole or not index.isValid() or self.session is None:
            return False
        key = TABLE[index.column()].key
        if key not in EDITABLE:
            return False
        name = self._layers[index.row()].name
        if self.data(index, Qt.EditRole) == value and self.edit_targets(name) == [name]:
            return False
        from ...core.errors import QuantvizError

        try:
            apply_field(self.session, key, value, self.edit_targets(name))
        except QuantvizError as exc:
            self.editFailed.emit(str(exc))
            return False
        return True


def apply_field(session, key: str, value, names: list[str]) -> None:
    """Set one field on ``names`` in a single undoable edit."""
    if not names:
        return
    if FIELDS[key].activation:
        names = [n for n in names if session.layer(n).has_activation_input]
    session.edit_layers(names, field_patch(key, value), edit_label(key, value, names))


def name_matcher(text: str):
    """(match(name) -> bool or None, error) for the filter field's text.

    Plain text matches a case-insensitive substring; ``/pattern/`` (the
    closing slash optional) is a case-insensitive regular expression, kept as
    typed (``\\D`` stays "not a digit").
    """
    import re

    text = text.strip()
    if not text:
        return None, ""
    if text.startswith("/") and len(text) > 1:
        pattern = text[1:-1] if text.endswith("/") and len(text) > 2 else text[1:]
        try:
            rx = re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            return (lambda name: False), f"invalid regex: {exc}"
        return (lambda name: rx.search(name) is not None), ""
    low = text.lower()
    return (lambda name: low in name.lower()), ""


class LayerFilterProxy(QSortFilterProxyModel):
    """Filters rows by a name substring (or /regex/) and by module type."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._match = None  # name -> bool, or None for "show all"
        self._type = ""
        self.error = ""  # why the filter text matches nothing (a bad regex), or ""
        self.setSortRole(SORT_ROLE)

    def set_text(self, text: str) -> str:
        """Filter by ``text``; returns the error for an invalid /regex/ ("" when fine)."""
        match, error = name_matcher(text)
        self.error = error
        self._refilter(lambda: setattr(self, "_match", match))
        return error

    def set_type(self, type_name: str) -> None:
        self._refilter(lambda: setattr(self, "_type", type_name))

    def _refilter(self, change) -> None:
        if hasattr(self, "beginFilterChange"):  # Qt >= 6.10
            self.beginFilterChange()
            change()
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:
            change()
            self.invalidateRowsFilter()

    def filterAcceptsRow(self, row, parent):
        m = self.sourceModel()
        idx = m.index(row, 0, parent)
        if self._type and m.data(idx, TYPE_ROLE) != self._type:
            return False
        if self._match is not None:
            return self._match(m.data(idx, NAME_ROLE) or "")
        return True
