"""Which layer-table columns show: the user's choice, else as many as fit the window.

The table gives up height, never the columns that matter. Every column of
:data:`.columns.TABLE` with ``hide_rank`` 0 always shows (layer, bits, SQNR,
ranges, size, sensitivity). The others show while they fit beside them; when
the window is too narrow, the ones that say nothing (every layer reads the
same: all ``int``, all ``none``) go first, then the highest ``hide_rank``.
Right-click the header to show or hide any column (but the layer's name)
for good, kept in the settings file, or to go back to fitting the window.
"""
from __future__ import annotations

import json

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtWidgets import QMenu

from .columns import TABLE

SETTINGS_KEY = "layer_table/columns"


class ColumnFitter(QObject):
    """Shows and hides the columns of ``view`` (a QTableView over :data:`TABLE`).

    ``settings()`` gives the QSettings that keep the user's choice (or None);
    ``informative(key)`` tells whether a column's cells differ between layers.
    """

    changed = Signal()  # the set of shown columns changed

    def __init__(self, view, settings=lambda: None, informative=lambda key: True):
        super().__init__(view)
        self.view = view
        self._settings = settings
        self.informative = informative
        self.natural: dict[int, int] = {}  # column -> width it wants (content, header)
        self.choice: dict[str, bool] = self._load()  # key -> shown (True) / hidden (False); absent: fit
        self.hidden: list[str] = []  # keys hidden now (by the user or to fit)
        self._fitting = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(0)
        self._timer.timeout.connect(self.fit)
        header = view.horizontalHeader()
        header.setContextMenuPolicy(Qt.CustomContextMenu)
        header.customContextMenuRequested.connect(self._on_header_menu)
        header.sectionResized.connect(self._on_section_resized)
        # the panel calls schedule() when it is resized (no Python event filter on the viewport); a vertical
        # scroll bar that comes or goes changes the width too
        view.verticalScrollBar().rangeChanged.connect(self.schedule)

    # --------------------------------------------------------- settings
    def _load(self) -> dict[str, bool]:
        s = self._settings()
        raw = s.value(SETTINGS_KEY, "") if s is not None else ""
        try:
            d = json.loads(raw) if raw else {}
        except (TypeError, ValueError):
            return {}
        keys = {c.key for c in TABLE if c.key != "name"}
        return {k: bool(v) for k, v in d.items() if k in keys} if isinstance(d, dict) else {}

    def _save(self) -> None:
        s = self._settings()
        if s is not None:
            s.setValue(SETTINGS_KEY, json.dumps(self.choice, sort_keys=True))

    def set_shown(self, key: str, shown: bool | None) -> None:
        """Show (True) or hide (False) a column for good; None: let it follow the window's width."""
        if shown is None:
            self.choice.pop(key, None)
        else:
            self.choice[key] = bool(shown)
        self._save()
        self.fit()

    def reset(self) -> None:
        self.choice.clear()
        self._save()
        self.fit()

    # -------------------------------------------------------------- fit
    def schedule(self, *_a) -> None:
        self._timer.start()

    def fit(self) -> None:
        """Show every column that must show, then the others in order of value while they fit."""
        avail = self.view.viewport().width()
        show: set[int] = set()
        optional = []
        for c, col in enumerate(TABLE):
            chosen = self.choice.get(col.key)
            if chosen is True or (col.hide_rank == 0 and chosen is None):
                show.add(c)
            elif chosen is None:
                optional.append(c)
        used = sum(self.natural.get(c, 0) for c in show)
        # informative columns before uniform ones; among each, the lowest hide_rank first
        optional.sort(key=lambda c: (not self.informative(TABLE[c].key), TABLE[c].hide_rank))
        for c in optional:
            w = self.natural.get(c, 0)
            if used + w > avail:
                break  # strictly in order of value: a narrow, less useful column never takes a wider one's place
            show.add(c)
            used += w
        hidden = [col.key for c, col in enumerate(TABLE) if c not in show]
        self._fitting = True
        try:
            for c, col in enumerate(TABLE):
                if self.view.isColumnHidden(c) != (c not in show):
                    self.view.setColumnHidden(c, c not in show)
                if c in show and c in self.natural and self.view.columnWidth(c) != self.natural[c]:
                    self.view.setColumnWidth(c, self.natural[c])  # the last one then stretches to the edge
        finally:
            self._fitting = False
        if hidden != self.hidden:
            self.hidden = hidden
            self.changed.emit()

    def _on_section_resized(self, c: int, _old: int, new: int) -> None:
        """A column the user dragged wider or narrower keeps that width (the stretched last one excepted)."""
        if self._fitting or new <= 0 or self.view.isColumnHidden(c):
            return
        header = self.view.horizontalHeader()
        last = max((i for i in range(len(TABLE)) if not self.view.isColumnHidden(i)), default=-1)
        if c != last and header.sectionResizeMode(c) == header.ResizeMode.Interactive and self.natural.get(c) != new:
            self.natural[c] = new
            self.schedule()

    # ------------------------------------------------------------- menu
    def fill_menu(self, menu: QMenu) -> None:
        menu.setToolTipsVisible(True)
        for c, col in enumerate(TABLE):
            label = col.header if col.kind != "sensitivity" else "Sensitivity"
            act = menu.addAction(label)
            act.setCheckable(True)
            act.setChecked(not self.view.isColumnHidden(c))
            act.setToolTip(col.tip)
            if col.key == "name":
                act.setEnabled(False)  # the row's name always shows
                continue
            act.toggled.connect(lambda on, k=col.key: self.set_shown(k, on))
        menu.addSeparator()
        fit = menu.addAction("Fit columns to the window")
        fit.setToolTip("Forget the columns shown or hidden by hand: show the less useful ones while they fit")
        fit.setEnabled(bool(self.choice))
        fit.triggered.connect(lambda _c=False: self.reset())

    def _on_header_menu(self, pos) -> None:
        menu = QMenu(self.view)
        self.fill_menu(menu)
        menu.popup(self.view.horizontalHeader().mapToGlobal(pos))


__all__ = ["ColumnFitter", "SETTINGS_KEY"]
