"""The layer table's Qt model: one row per quantizable layer, computed lazily.

Rows are never materialised: ``data()`` reads the layer's :class:`LayerInfo`,
its resolved :class:`LayerSpec` (cached per layer, refreshed only for layers
an edit touched) and a cache of per-layer statistics (weight / activation
SQNR) keyed by ``(name, spec)``. Missing statistics are collected and computed
by one background job at a time (:func:`compute_stats`), which never takes the
session lock, so the GUI thread never waits for a running re-check. Only rows
the view asks for are computed, so thousands of layers stay fast.
"""
from __future__ import annotations

import math
from typing import Callable

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt, QTimer, Signal
from PySide6.QtGui import QBrush, QColor

from ...core.fmt import fmt_bytes as _fmt_bytes
from ...core.size import layer_weight_bytes
from ...core.spec import LayerSpec

# key, header, tooltip
COLUMNS = [
    ("name", "Layer", "The module's full name in the model; dots show the hierarchy (features.3 is child 3 of features)."),
    ("type", "Type", "The module type (Conv2d, Linear, Embedding, ...)."),
    ("params", "Params", "Number of parameters of the layer (weight and bias)."),
    ("weight_bits", "W bits", "Bits per weight value; 'float' keeps the weight unquantized. Double-click to change."),
    ("act_bits", "A bits", "Bits of this layer's input activation; 'float' keeps it unquantized, '—' when the input is not a float tensor."),
    ("weight_sqnr_db", "W SQNR", "Signal-to-quantization-noise ratio of the weight: 10·log10(Σw² / Σ(w−q(w))²). "
                                      "Higher is better; each extra bit adds about 6 dB."),
    ("act_sqnr_db", "A SQNR", "SQNR of quantizing this layer's input activation, estimated from the calibration histogram."),
    ("granularity", "Granularity", "How many scales the weight gets: one per tensor, one per output channel (per-channel), "
                                   "or one per group of values within a channel (per-group)."),
    ("grid", "W grid", "The weight's symmetric grid: full [-2^(b-1), 2^(b-1)-1] with both range ends on it (nothing "
                       "clipped), torch (torch observers' scale: max|w| on a rounding tie, the top clipped) or restricted "
                       "[-(2^(b-1)-1), 2^(b-1)-1]. Asymmetric weights ignore it ('asym')."),
    ("range", "W range", "How the weight clip range is chosen: min-max, a percentile of |w|, the range minimising MSE, "
                         "KL divergence, or a manual range dragged on the histogram."),
    ("act_range", "A range", "How the activation clip range is chosen from the calibration histogram."),
    ("algorithm", "Algorithm", "Post-training algorithm for this weight: round to nearest (none), AdaRound's learned rounding, "
                               "GPTQ's error compensation, bias correction, SmoothQuant / AWQ scaling. It runs on the "
                               "calibration data with the next re-check ('pending' until then)."),
    ("size_bytes", "Size", "Storage of this layer's weight under its settings, including scales and zero points."),
    ("sensitivity", "Sensitivity", "How much the model's metric drops when only this layer is quantized "
                                   "(filled in once sensitivity is computed)."),
]
COL = {key: i for i, (key, _, _) in enumerate(COLUMNS)}
EDITABLE = {"weight_bits", "act_bits", "granularity", "grid", "range", "act_range", "algorithm"}
STATS_KEYS = {"weight_sqnr_db", "act_sqnr_db"}
SORT_ROLE = Qt.UserRole + 1
NAME_ROLE = Qt.UserRole + 2
TYPE_ROLE = Qt.UserRole + 3
GRAN_LABEL = {"per_tensor": "per-tensor", "per_channel": "per-channel", "per_group": "per-group"}


def fmt_bytes(n: float | None) -> str:
    return _fmt_bytes(n, missing="")


def field_patch(field: str, value) -> dict:
    """The config patch that sets one table field (``value`` as the editors give it)."""
    if field == "weight_bits":
        return {"weight": {"bits": value}}
    if field == "act_bits":
        return {"activation": {"bits": value}}
    if field == "granularity":
        return {"weight": {"granularity": value}}
    if field == "algorithm":
        return {"weight": {"algorithm": value}}
    if field == "grid":
        return {"weight": {"grid": value}}
    if field == "act_grid":
        return {"activation": {"grid": value}}
    if field in ("range", "act_range"):
        kind = "weight" if field == "range" else "activation"
        r = {"method": value}
        if value == "percentile":
            r["p"] = 99.99
        return {kind: {"range": r}}
    raise ValueError(f"not an editable field: {field}")


def compute_stats(session, items: list[tuple[str, LayerSpec]], cancel: Callable[[], bool] = lambda: False) -> dict:
    """Weight / activation SQNR for ``(name, spec)`` pairs (worker thread, lock-free).

    Reads only the float weights and the calibration histograms, which a
    re-check never changes, and the simulation's per-spec weight cache.
    """
    sim = session.sim
    out = {}
    for name, spec in items:
        if cancel():
            break
        info = sim.by_name[name]
        stats = {"weight_sqnr_db": None, "act_sqnr_db": None, "clipped": None, "error": None}
        try:
            # an algorithm's result comes from the re-check job: never run it here ("pending")
            wq = sim.quantize_weight(name, spec.weight, compute=False)
            if wq is None and spec.weight.bits is not None:
                stats["pending"] = True
            if wq is not None:
                stats["weight_sqnr_db"] = wq.sqnr_db
                stats["clipped"] = wq.clipped_fraction
                stats["algorithm"] = algorithm_note(wq.algorithm_info)
            if info.has_activation_input and spec.activation.bits is not None and sim.calibrated:
                stats["act_sqnr_db"] = sim.activation_sqnr(name, spec.activation)
        except Exception as exc:  # noqa: BLE001 - shown in the cell's tooltip
            stats["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        out[(name, spec)] = stats
    return out


def algorithm_note(info: dict) -> str | None:
    """One line on what a layer's algorithm changed (None for rounding to nearest)."""
    from ...core.preview import algorithm_text

    return algorithm_text(info)


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
        self.session = None
        self._layers = []
        self._row_of: dict[str, int] = {}
        self._specs: dict[str, LayerSpec] = {}
        self._stats: dict[tuple[str, LayerSpec], dict] = {}
        self._pending: set[tuple[str, LayerSpec]] = set()
        self._inflight = False
        self._req = 0
        # request_stats(session, items, done(stats), failed(message | None)) runs compute_stats in the background;
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
        self._stats.clear()
        self._pending.clear()
        self._inflight = False
        self._req += 1  # answers to earlier requests are dropped
        self.endResetModel()

    def specs_changed(self, changed: dict[str, LayerSpec]) -> None:
        """Take the new specs of the layers an edit changed (a ConfigChange's ``changed``)."""
        if self.session is None:
            return
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
            self._stats_arrived(req, compute_stats(session, items))
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
        """Store statistics computed elsewhere (``compute_stats`` output)."""
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
        if role == Qt.DisplayRole:
            return COLUMNS[section][1]
        if role == Qt.ToolTipRole:
            return COLUMNS[section][2]
        return None

    def flags(self, index):
        f = Qt.ItemIsEnabled | Qt.ItemIsSelectable
        if not index.isValid():
            return f
        key = COLUMNS[index.column()][0]
        if key in EDITABLE:
            info = self._layers[index.row()]
            if key in ("act_bits", "act_range") and not info.has_activation_input:
                return f
            f |= Qt.ItemIsEditable
        return f

    def _value(self, info, spec: LayerSpec, key: str):
        """(display text, sort key) of one cell."""
        if key == "name":
            return info.name, info.index
        if key == "type":
            return info.type, info.type
        if key == "params":
            return f"{info.params:,}", info.params
        if key == "weight_bits":
            b = spec.weight.bits
            return ("float" if b is None else str(b)), (99 if b is None else b)
        if key == "act_bits":
            if not info.has_activation_input:
                return "—", 100
            b = spec.activation.bits
            return ("float" if b is None else str(b)), (99 if b is None else b)
        if key == "granularity":
            g = GRAN_LABEL.get(spec.weight.granularity, spec.weight.granularity)
            if spec.weight.granularity == "per_group":
                g += f" ({spec.weight.effective_group_size()})"
            return g, g
        if key == "grid":
            if spec.weight.bits is None:
                return "—", ""
            g = spec.weight.grid if spec.weight.symmetric else "asym"
            return g, g
        if key == "range":
            return spec.weight.range.describe(), spec.weight.range.describe()
        if key == "algorithm":
            a = spec.weight.algorithm if spec.weight.bits is not None else "—"
            return a, a
        if key == "act_range":
            if not info.has_activation_input or spec.activation.bits is None:
                return "—", ""
            return spec.activation.range.describe(), spec.activation.range.describe()
        if key == "size_bytes":
            n = layer_weight_bytes(info, spec)
            return fmt_bytes(n), n
        if key == "sensitivity":
            sc = self.session.analysis.scores if self.session else None
            v = sc.scores.get(info.name) if sc else None
            if v is None:
                return "", -math.inf
            return f"{v:.3g}", float(v)
        if key in STATS_KEYS:
            if key == "weight_sqnr_db" and spec.weight.bits is None:
                return "—", math.inf
            if key == "act_sqnr_db" and (not info.has_activation_input or spec.activation.bits is None):
                return "—", math.inf
            st = self._stats.get((info.name, spec))
            if st is not None and st.get("pending") and key == "weight_sqnr_db" \
                    and not self.session.sim.algorithm_pending(info.name, spec.weight):
                del self._stats[(info.name, spec)]  # the re-check computed it meanwhile
                st = None
            if st is None:
                self._want_stats((info.name, spec))
                return "…", -math.inf
            if st.get("pending") and key == "weight_sqnr_db":
                return "pending", -math.inf
            v = st.get(key)
            if v is None:
                return ("error" if st.get("error") else "—"), -math.inf
            return ("∞ dB" if math.isinf(v) else f"{v:.1f} dB"), v
        return "", ""

    def data(self, index, role=Qt.DisplayRole):
        if not index.isValid() or self.session is None:
            return None
        info = self._layers[index.row()]
        key = COLUMNS[index.column()][0]
        spec = self._specs.get(info.name)
        if spec is None:
            return None
        if role in (Qt.DisplayRole, SORT_ROLE):
            text, sort = self._value(info, spec, key)
            return text if role == Qt.DisplayRole else sort
        if role == Qt.EditRole:
            if key == "weight_bits":
                return spec.weight.bits
            if key == "act_bits":
                return spec.activation.bits
            if key == "granularity":
                return spec.weight.granularity
            if key == "grid":
                return spec.weight.grid
            if key == "range":
                return spec.weight.range.method
            if key == "algorithm":
                return spec.weight.algorithm
            if key == "act_range":
                return spec.activation.range.method
            return None
        if role == NAME_ROLE:
            return info.name
        if role == TYPE_ROLE:
            return info.type
        if role == Qt.TextAlignmentRole:
            if key in ("params", "weight_sqnr_db", "act_sqnr_db", "size_bytes", "sensitivity", "weight_bits", "act_bits"):
                return int(Qt.AlignRight | Qt.AlignVCenter)
            return int(Qt.AlignLeft | Qt.AlignVCenter)
        if role == Qt.BackgroundRole and key in STATS_KEYS:
            st = self._stats.get((info.name, spec))
            return _sqnr_brush(st.get(key)) if st else None
        if role == Qt.ToolTipRole:
            if key == "name":
                return f"{info.name}\n{info.type}, weight shape {tuple(info.weight_shape)}"
            if key in STATS_KEYS:
                st = self._stats.get((info.name, spec))
                if st and st.get("error"):
                    return st["error"]
                if st and key == "weight_sqnr_db" and st.get("pending"):
                    return f"{spec.weight.algorithm} runs with the next re-check"
                if st and key == "weight_sqnr_db" and st.get("clipped") is not None:
                    tip = f"{COLUMNS[index.column()][2]}\nclipped weights: {st['clipped'] * 100:.2f}%"
                    return tip + (f"\n{st['algorithm']}" if st.get("algorithm") else "")
            return COLUMNS[index.column()][2]
        return None

    def setData(self, index, value, role=Qt.EditRole):
        if role != Qt.EditRole or not index.isValid() or self.session is None:
            return False
        key = COLUMNS[index.column()][0]
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
    if key in ("act_bits", "act_range", "act_grid"):
        names = [n for n in names if session.layer(n).has_activation_input]
    shown = {"weight_bits": "weight bits", "act_bits": "activation bits", "granularity": "granularity",
             "grid": "weight grid", "act_grid": "activation grid",
             "range": "weight range", "act_range": "activation range", "algorithm": "algorithm"}[key]
    v = "float" if value is None else value
    target = names[0] if len(names) == 1 else f"{len(names)} layers"
    session.edit_layers(names, field_patch(key, value), f"{shown} = {v} on {target}")


class LayerFilterProxy(QSortFilterProxyModel):
    """Filters rows by a name substring (or /regex/) and by module type."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._text = ""
        self._type = ""
        self.setSortRole(SORT_ROLE)

    def set_text(self, text: str) -> None:
        self._refilter(lambda: setattr(self, "_text", text.strip().lower()))

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
        if self._text:
            name = (m.data(idx, NAME_ROLE) or "").lower()
            if self._text.startswith("/") and len(self._text) > 1:
                import re

                try:
                    return re.search(self._text[1:], name) is not None
                except re.error:
                    return False
            return self._text in name
        return True
