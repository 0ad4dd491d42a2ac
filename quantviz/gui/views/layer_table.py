"""The layer table panel: every quantizable layer, sortable, filterable, editable.

Double-click a bits / granularity / range cell to change it; with several rows
selected, the edit applies to the whole selection. The "Edit" button (and the
right-click menu) sets a field for the selection, for every layer of a type,
or for layers whose name matches a pattern, and applies presets. Every change
is one undoable session edit.

Run alone for a look: ``python -m quantviz.gui.views.layer_table``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QItemSelectionModel, Qt, Signal
from PySide6.QtGui import QFont, QFontMetrics
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QHBoxLayout, QHeaderView, QInputDialog, QLabel, QLineEdit,
                               QMenu, QSizePolicy, QStyledItemDelegate, QTableView, QToolButton, QVBoxLayout, QWidget)

from ...io.config import PRESET_HELP, PRESETS
from ..bridge import SessionFollower
from .choices import FIELD_LABELS, choices  # noqa: F401 (choices re-exported)
from .layer_model import COL, COLUMNS, LayerFilterProxy, LayerTableModel, apply_field
from .table_columns import ColumnFitter

if TYPE_CHECKING:
    from ...session.session import Session


def header_text_width(header, text: str) -> int:
    """Pixels the header's text needs (the theme draws headers bold)."""
    font = QFont(header.font())
    font.setBold(True)
    return QFontMetrics(font).horizontalAdvance(text)


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

    def __init__(self, parent=None, settings=None):
        super().__init__(parent)
        self.session: Session | None = None
        self.settings = settings  # QSettings that keep the columns shown / hidden by hand (None: not kept)
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
        self.note = QLabel()  # what is (not) simulated for this file, in one line (full text in the tooltip)
        self.note.setObjectName("modelNote")
        self.note.setTextFormat(Qt.PlainText)
        self.note.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Fixed)
        self.note.setVisible(False)
        self._note_text = ""

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
        hh.setToolTip("Right-click to show or hide columns")
        self.columns = ColumnFitter(self.view, lambda: self.settings, self.model.column_varies)
        self.columns.changed.connect(self._update_count)
        self._fit_columns()
        self.view.selectionModel().currentRowChanged.connect(self._on_view_current_changed)
        self.proxy.rowsInserted.connect(self._update_count)
        self.proxy.modelReset.connect(self._update_count)
        self.proxy.layoutChanged.connect(self._update_count)

        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.setSpacing(6)
        lay.addLayout(bar)
        lay.addWidget(self.note)
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
        meta = session.bundle.meta if session is not None else {}
        warn = bool(meta.get("weights_only"))
        self.set_note(meta.get("note", "") if warn or meta.get("fixed_batch") else "", warn)

    def set_note(self, text: str, warn: bool = False) -> None:
        """One line above the table about the file (elided in the middle: its start and its verdict show)."""
        self._note_text = ("⚠ " if warn and text else "") + text
        self.note.setStyleSheet("background: #fff3cd; color: #5c4400; padding: 3px 6px; border-radius: 3px;" if warn
                                else "color: palette(window-text); padding: 3px 6px;")
        self.note.setToolTip(text)
        self.note.setVisible(bool(text))
        self._elide_note()

    def _elide_note(self) -> None:
        fm = self.note.fontMetrics()
        self.note.setText(fm.elidedText(self._note_text, Qt.ElideMiddle, max(40, self.note.width() - 14)))

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._elide_note()
        self.columns.schedule()  # as many columns as fit the new width

    def _fit_columns(self) -> None:
        """Columns as wide as their content (the first rows only, so cheap for big models), within caps;
        then as many as fit the window show (:class:`.table_columns.ColumnFitter`)."""
        self.view.horizontalHeader().setResizeContentsPrecision(100)
        fixed = {"weight_sqnr_db": 74, "act_sqnr_db": 74, "weight_bits": 56, "act_bits": 56}
        caps = {"name": (110, 260), "granularity": (80, 130), "grid": (52, 80), "range": (64, 130),
                "act_range": (60, 130), "algorithm": (70, 110), "format": (62, 90), "act_format": (62, 90)}
        for c, (key, _h, _t) in enumerate(COLUMNS):
            # narrow, and the SQNR columns are computed lazily: do not force them here
            w = fixed.get(key) or self._content_width(c)
            lo, hi = caps.get(key, (0, 10 ** 6))
            self.columns.natural[c] = max(lo, min(hi, w), self._header_width(c))
            self.view.setColumnWidth(c, self.columns.natural[c])
        self.columns.fit()

    def _content_width(self, c: int) -> int:
        return max(self.view.sizeHintForColumn(c), self._header_width(c))

    def _header_width(self, c: int) -> int:
        """Room for the header's text (and the sort arrow on the sorted column); cells elide, headers never."""
        hh = self.view.horizontalHeader()
        text = self.model.headerData(c, Qt.Horizontal) or ""
        return header_text_width(hh, text) + 18 + (16 if hh.sortIndicatorSection() == c else 0)

    def _on_session_config_changed(self, change) -> None:
        self.model.specs_changed(change.changed)
        self.columns.schedule()  # a column that said nothing may say something now (an FP8 layer)

    def _on_session_result(self, _result) -> None:
        self.model.refresh_column("weight_sqnr_db")  # per-layer algorithms ("pending") computed by the re-check

    def _on_session_analysis_changed(self, what: str, _payload) -> None:
        if what in ("sensitivity", "all"):
            self.model.refresh_column("sensitivity")
            self.columns.natural[COL["sensitivity"]] = self._content_width(COL["sensitivity"])
            self.columns.fit()

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
        from ...io.gguf_export import LLAMA_PRESET_HELP, LLAMA_PRESETS

        for name in list(PRESETS) + list(LLAMA_PRESETS):  # llama.cpp's mixes resolve on the open model
            sub = pre.addMenu(name)
            sub.setToolTipsVisible(True)
            sub.setToolTip(PRESET_HELP.get(name) or LLAMA_PRESET_HELP.get(name, ""))
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
        text = f"{total} layers" if shown == total else f"{shown} of {total} layers"
        hidden = len(self.columns.hidden)
        self.count_label.setText(text + (f" · {hidden} column{'s' * (hidden > 1)} hidden" if hidden else ""))
        self.count_label.setToolTip(("Hidden to fit the window or by hand: " + ", ".join(
            COLUMNS[COL[k]][1] for k in self.columns.hidden) + ". Right-click the table header to choose.")
            if hidden else "")


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
