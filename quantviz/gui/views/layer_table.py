"""The layer table panel: every quantizable layer, sortable, filterable, editable.

Double-click a bits / granularity / range cell to change it; with several rows
selected, the edit applies to the whole selection. The "Edit" button (and the
right-click menu) sets a field for the selection, for every layer of a type,
or for layers whose name matches a pattern, and applies presets. Every change
is one undoable session edit.

Run alone for a look: ``python -m quantviz.gui.views.layer_table``.
"""
from __future__ import annotations

from PySide6.QtCore import QItemSelectionModel, Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QHBoxLayout, QHeaderView, QInputDialog, QLabel, QLineEdit,
                               QMenu, QStyledItemDelegate, QTableView, QToolButton, QVBoxLayout, QWidget)

from ...core.qparams import MAX_BITS, MIN_BITS
from ...core.formats import FORMATS
from ...core.spec import GRANULARITIES, NUMBER_FORMATS, RANGE_METHODS, SYMMETRIC_GRIDS
from ...core.algorithms.options import DESCRIPTIONS as ALGORITHM_HELP
from ...core.spec import ALGORITHMS
from ...io.config import PRESET_HELP, PRESETS
from ..bridge import SessionFollower
from .layer_model import COL, COLUMNS, GRAN_LABEL, LayerFilterProxy, LayerTableModel, apply_field

BIT_CHOICES = [None] + ([16] if MAX_BITS >= 16 else []) + list(range(min(MAX_BITS, 8), MIN_BITS - 1, -1))
RANGE_HELP = {
    "minmax": "the full range of the values",
    "percentile": "clip at the 99.99th percentile of |x|",
    "mse": "the clip range that minimises the mean squared error",
    "kl": "the clip range that minimises the KL divergence of the histogram",
    "manual": "a range set by dragging on the histogram",
}
GRID_HELP = {
    "full": "[-2^(b-1), 2^(b-1)-1], scale = max(max / qmax, min / qmin): both ends of the range on the grid, "
            "nothing clipped (AIMET's rule; the default)",
    "torch": "[-2^(b-1), 2^(b-1)-1], scale = max|x| / ((qmax - qmin) / 2) as torch's observers: max|x| falls on a "
             "rounding tie and a positive maximum is clipped to qmax",
    "restricted": "[-(2^(b-1)-1), 2^(b-1)-1], scale = max|x| / qmax: one level fewer, symmetric around 0 "
                  "(many inference backends)",
}
GRAN_HELP = {
    "per_tensor": "one scale for the whole weight tensor",
    "per_channel": "one scale per output channel: each filter gets its own range",
    "per_group": "one scale per group of 32 values within a channel (finer, more overhead)",
}


def choices(field: str) -> list[tuple[str, object, str]]:
    """(label, value, tooltip) of what a field can be set to."""
    if field in ("weight_bits", "act_bits"):
        return [("float" if b is None else f"{b} bits", b,
                 "keep it unquantized" if b is None else f"{2 ** b} levels") for b in BIT_CHOICES]
    if field == "granularity":
        return [(GRAN_LABEL[g], g, GRAN_HELP[g]) for g in GRANULARITIES]
    if field in ("format", "act_format"):
        return [("int" if f == "int" else FORMATS[f].label, f,
                 "integer grid (bits, granularity, grid)" if f == "int" else
                 f"{FORMATS[f].element.name.upper()} elements, {FORMATS[f].bits_per_element():g} bits per value"
                 + (f" with a scale per block of {FORMATS[f].block}" if FORMATS[f].block else " with an FP32 scale"))
                for f in NUMBER_FORMATS]
    if field == "algorithm":
        return [(a, a, ALGORITHM_HELP[a]) for a in ALGORITHMS]
    if field in ("grid", "act_grid"):
        return [(g, g, GRID_HELP[g] + " (symmetric grids only)") for g in SYMMETRIC_GRIDS]
    methods = [m for m in RANGE_METHODS if m != "manual"]
    return [(m, m, RANGE_HELP[m]) for m in methods]


FIELD_LABELS = {"weight_bits": "Weight bits", "act_bits": "Activation bits", "granularity": "Granularity",
                "format": "Weight format", "act_format": "Activation format",
                "grid": "Weight grid", "act_grid": "Activation grid",
                "range": "Weight range", "act_range": "Activation range", "algorithm": "Algorithm"}


class ChoiceDelegate(QStyledItemDelegate):
    """A combo box editor for the bits / granularity / range columns."""

    def createEditor(self, parent, option, index):
        key = COLUMNS[index.column()][0]
        if key not in FIELD_LABELS:
            return super().createEditor(parent, option, index)
        box = QComboBox(parent)
        for label, value, tip in choices(key):
            box.addItem(label, value)
            box.setItemData(box.count() - 1, tip, Qt.ToolTipRole)
        box.setToolTip(COLUMNS[index.column()][2])
        box.activated.connect(lambda _i, b=box: self._commit(b))
        return box

    def updateEditorGeometry(self, editor, option, index):
        """As wide as its longest choice ("8 bits", not "8 bi"), even in a narrow column."""
        rect = option.rect
        if isinstance(editor, QComboBox):
            rect = rect.adjusted(0, 0, max(0, editor.sizeHint().width() - rect.width()), 0)
        editor.setGeometry(rect)

    def _commit(self, box):
        self.commitData.emit(box)
        self.closeEditor.emit(box)

    def setEditorData(self, editor, index):
        if isinstance(editor, QComboBox):
            value = index.data(Qt.EditRole)
            i = editor.findData(value)
            editor.setCurrentIndex(max(i, 0))
        else:
            super().setEditorData(editor, index)

    def setModelData(self, editor, model, index):
        if isinstance(editor, QComboBox):
            model.setData(index, editor.currentData(), Qt.EditRole)
        else:
            super().setModelData(editor, model, index)


class LayerTablePanel(SessionFollower, QWidget):
    """Filter bar + table. Emits ``layerSelected(name)`` for the current row."""

    layerSelected = Signal(str)
    message = Signal(str)  # one-line notes for the status bar (failed edits)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.session = None
        self.model = LayerTableModel(self)
        self.model.edit_targets = self._edit_targets
        self.model.editFailed.connect(self.message)
        self.proxy = LayerFilterProxy(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setDynamicSortFilter(True)

        self.filter_edit = QLineEdit(placeholderText="Filter layers by name (or /regex/)")
        self.filter_edit.setClearButtonEnabled(True)
        self._filter_tip = ("Show only layers whose name contains this text (any case); "
                            "/pattern/ is a regular expression, e.g. /classifier|features\\.0/.")
        self.filter_edit.setToolTip(self._filter_tip)
        self.filter_error = QLabel()
        self.filter_error.setObjectName("error")
        self.filter_error.setStyleSheet("color: #c62828;")
        self.filter_error.setVisible(False)
        self.filter_edit.textChanged.connect(self._on_filter_changed)
        self.type_combo = QComboBox()
        self.type_combo.setToolTip("Show only layers of one module type.")
        self.type_combo.currentIndexChanged.connect(self._on_type_changed)
        self.edit_button = QToolButton(text="Edit selection")
        self.edit_button.setPopupMode(QToolButton.InstantPopup)
        self.edit_button.setToolTip("Set bits, granularity or range for the selected layers, for all layers of a type, "
                                    "or for names matching a pattern; or apply a preset.")
        self.edit_button.setMenu(QMenu(self.edit_button))
        self.edit_button.menu().aboutToShow.connect(lambda: self.fill_edit_menu(self.edit_button.menu()))
        self.count_label = QLabel()
        self.count_label.setObjectName("muted")

        bar = QHBoxLayout()
        bar.setContentsMargins(0, 0, 0, 0)
        bar.addWidget(self.filter_edit, 3)
        bar.addWidget(self.type_combo, 1)
        bar.addWidget(self.edit_button)
        bar.addWidget(self.count_label)

        self.view = QTableView()
        self.view.setModel(self.proxy)
        self.view.setItemDelegate(ChoiceDelegate(self.view))
        self.view.setSortingEnabled(True)
        self.view.sortByColumn(COL["name"], Qt.AscendingOrder)
        self.view.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.view.setEditTriggers(QAbstractItemView.DoubleClicked | QAbstractItemView.EditKeyPressed
                                  | QAbstractItemView.SelectedClicked)
        self.view.setAlternatingRowColors(True)
        self.view.setWordWrap(False)
        self.view.verticalHeader().setVisible(False)
        self.view.verticalHeader().setDefaultSectionSize(24)
        self.view.setContextMenuPolicy(Qt.CustomContextMenu)
        self.view.customContextMenuRequested.connect(self._on_view_context_menu)
        hh = self.view.horizontalHeader()
        hh.setSectionResizeMode(QHeaderView.Interactive)
        hh.setStretchLastSection(True)
        hh.setHighlightSections(False)
        self._fit_columns()
        self.view.selectionModel().currentRowChanged.connect(self._on_view_current_changed)
        self.proxy.rowsInserted.connect(self._update_count)
        self.proxy.modelReset.connect(self._update_count)
        self.proxy.layoutChanged.connect(self._update_count)

        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.setSpacing(6)
        lay.addLayout(bar)
        lay.addWidget(self.filter_error)
        lay.addWidget(self.view)

    # ---------------------------------------------------------- session
    def set_session(self, session) -> None:
        self.session = session
        self.follow(session)
        self.model.set_session(session)
        self.type_combo.blockSignals(True)
        self.type_combo.clear()
        self.type_combo.addItem("All types", "")
        if session is not None:
            for t in sorted({l.type for l in session.layers}):
                self.type_combo.addItem(t, t)
        self.type_combo.blockSignals(False)
        self.proxy.set_type("")
        self._update_count()
        self._fit_columns()

    def _fit_columns(self) -> None:
        """Columns as wide as their content (visible rows only, so cheap for big models)."""
        self.view.horizontalHeader().setResizeContentsPrecision(100)
        fixed = {"weight_sqnr_db": 78, "act_sqnr_db": 78, "weight_bits": 58, "act_bits": 58}
        for c, (key, _h, _t) in enumerate(COLUMNS):
            if key in fixed:  # narrow, and the SQNR columns are computed lazily: do not force them here
                self.view.setColumnWidth(c, fixed[key])
            else:
                self.view.resizeColumnToContents(c)
        for key, lo, hi in (("name", 110, 260), ("granularity", 80, 140), ("grid", 52, 90), ("range", 64, 140),
                            ("act_range", 60, 140), ("algorithm", 70, 120)):
            c = COL[key]
            self.view.setColumnWidth(c, max(lo, min(hi, self.view.columnWidth(c))))

    def _on_session_config_changed(self, change) -> None:
        self.model.specs_changed(change.changed)

    def _on_session_result(self, _result) -> None:
        self.model.refresh_column("weight_sqnr_db")  # per-layer algorithms ("pending") computed by the re-check

    def _on_session_analysis_changed(self, what: str, _payload) -> None:
        if what in ("sensitivity", "all"):
            self.model.refresh_column("sensitivity")
            self.view.resizeColumnToContents(COL["sensitivity"])

    # -------------------------------------------------------- selection
    def selected_names(self) -> list[str]:
        rows = self.view.selectionModel().selectedRows()
        names = [self.proxy.mapToSource(i).row() for i in rows]
        return [self.model.name_at(r) for r in sorted(names)]

    def current_name(self) -> str | None:
        idx = self.view.currentIndex()
        if not idx.isValid():
            return None
        return self.model.name_at(self.proxy.mapToSource(idx).row())

    def select_layer(self, name: str) -> None:
        r = self.model.row_of(name)
        if r < 0:
            return
        idx = self.proxy.mapFromSource(self.model.index(r, 0))
        if not idx.isValid():  # filtered out: clear the filter to show it
            self.filter_edit.clear()
            self.type_combo.setCurrentIndex(0)
            idx = self.proxy.mapFromSource(self.model.index(r, 0))
        self.view.selectionModel().setCurrentIndex(
            idx, QItemSelectionModel.ClearAndSelect | QItemSelectionModel.Rows)
        self.view.scrollTo(idx)

    def select_names(self, names: list[str]) -> None:
        sm = self.view.selectionModel()
        sm.clearSelection()
        for n in names:
            idx = self.proxy.mapFromSource(self.model.index(self.model.row_of(n), 0))
            if idx.isValid():
                sm.select(idx, QItemSelectionModel.Select | QItemSelectionModel.Rows)

    def _edit_targets(self, name: str) -> list[str]:
        sel = self.selected_names()
        return sel if name in sel and len(sel) > 1 else [name]

    def _on_view_current_changed(self, current, _previous) -> None:
        if current.isValid():
            self.layerSelected.emit(self.model.name_at(self.proxy.mapToSource(current).row()))

    # ------------------------------------------------------------ bulk
    def apply_field(self, field: str, value, names: list[str]) -> None:
        """Set ``field`` to ``value`` on ``names`` (one undoable edit)."""
        from ...core.errors import QuantvizError

        try:
            apply_field(self.session, field, value, names)
        except QuantvizError as exc:
            self.message.emit(str(exc))

    def targets(self, scope: str, arg: str | None = None) -> list[str]:
        """Layer names for a bulk edit: "selection", "type" (arg = type), "pattern" (arg = regex), "shown"."""
        if self.session is None:
            return []
        if scope == "selection":
            return self.selected_names()
        if scope == "type":
            return self.session.layers_of_type(arg or "")
        if scope == "pattern":
            return self.session.layers_matching(arg or "")
        if scope == "shown":
            return [self.model.name_at(self.proxy.mapToSource(self.proxy.index(r, 0)).row())
                    for r in range(self.proxy.rowCount())]
        return list(self.session.layer_names)

    def apply_preset(self, preset: str, names: list[str] | None) -> None:
        from ...core.errors import QuantvizError

        try:
            self.session.apply_preset(preset, names)
        except QuantvizError as exc:
            self.message.emit(str(exc))

    def fill_edit_menu(self, menu: QMenu) -> None:
        menu.clear()
        if self.session is None:
            menu.addAction("No model open").setEnabled(False)
            return
        sel = self.selected_names()
        scopes = [(f"Selection ({len(sel)})", "selection", None)]
        types = sorted({l.type for l in self.session.layers})
        scopes += [(f"All {t} layers", "type", t) for t in types]
        scopes += [("Layers matching a pattern…", "pattern", None), ("All shown layers", "shown", None)]
        for field, flabel in FIELD_LABELS.items():
            sub = menu.addMenu(f"Set {flabel.lower()}")
            for slabel, scope, arg in scopes:
                target = sub.addMenu(slabel)
                if scope == "selection" and not sel:
                    target.setEnabled(False)
                for clabel, value, tip in choices(field):
                    act = target.addAction(clabel)
                    act.setToolTip(tip)
                    act.triggered.connect(lambda _c=False, f=field, v=value, s=scope, a=arg: self._bulk(f, v, s, a))
        menu.addSeparator()
        pre = menu.addMenu("Apply preset")
        for name in PRESETS:
            sub = pre.addMenu(name)
            sub.setToolTipsVisible(True)
            sub.setToolTip(PRESET_HELP.get(name, ""))
            a = sub.addAction("To all layers")
            a.triggered.connect(lambda _c=False, p=name: self.apply_preset(p, None))
            a = sub.addAction(f"To selection ({len(sel)})")
            a.setEnabled(bool(sel))
            a.triggered.connect(lambda _c=False, p=name: self.apply_preset(p, self.selected_names()))
        menu.addSeparator()
        sel_menu = menu.addMenu("Select")
        for t in types:
            sel_menu.addAction(f"All {t} layers").triggered.connect(
                lambda _c=False, t=t: self.select_names(self.session.layers_of_type(t)))

    def _bulk(self, field: str, value, scope: str, arg) -> None:
        if scope == "pattern":
            arg, ok = QInputDialog.getText(self, "Layers matching", "Regular expression searched in layer names:")
            if not ok or not arg:
                return
        try:
            names = self.targets(scope, arg)
        except Exception as exc:  # noqa: BLE001 - a bad pattern
            self.message.emit(str(exc))
            return
        if not names:
            self.message.emit("no layer matches")
            return
        self.apply_field(field, value, names)

    def _on_view_context_menu(self, pos) -> None:
        menu = QMenu(self)
        self.fill_edit_menu(menu)
        menu.popup(self.view.viewport().mapToGlobal(pos))

    # ----------------------------------------------------------- filter
    def _on_filter_changed(self, text: str) -> None:
        error = self.proxy.set_text(text)
        self.filter_error.setText(error)
        self.filter_error.setVisible(bool(error))
        self.filter_edit.setToolTip(error or self._filter_tip)
        self._update_count()

    def _on_type_changed(self, _i: int) -> None:
        self.proxy.set_type(self.type_combo.currentData() or "")
        self._update_count()

    def _update_count(self, *args) -> None:
        total = self.model.rowCount()
        shown = self.proxy.rowCount()
        self.count_label.setText(f"{total} layers" if shown == total else f"{shown} of {total} layers")


def main() -> int:  # pragma: no cover - a look at the widget alone
    from ..launch import standalone

    def build(session):
        w = LayerTablePanel()
        w.set_session(session)
        w.resize(1000, 420)
        return w

    return standalone(build)


if __name__ == "__main__":
    raise SystemExit(main())
