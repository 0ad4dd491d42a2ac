"""The layer table's columns fit the window (issue 13, item 10): the less useful ones give way,
the user can show or hide any column from the header, and the choice is kept."""
from __future__ import annotations

from quantviz.gui.views.columns import COL, TABLE


def _shown(panel) -> set[str]:
    return {c.key for i, c in enumerate(TABLE) if not panel.view.isColumnHidden(i)}


def _narrow(window, qtbot, width=1280):
    window.resize(width, 800)
    window.default_dock_sizes()
    qtbot.wait(100)


def test_uniform_columns_give_way_first_and_a_column_that_says_something_comes_back(demo_session, qtbot):
    from quantviz.gui.views.layer_table import LayerTablePanel

    t = LayerTablePanel()
    qtbot.addWidget(t)
    t.resize(860, 300)  # a narrow panel: some columns must go
    t.set_session(demo_session)
    t.show()
    qtbot.waitExposed(t)
    qtbot.waitUntil(lambda: bool(t.columns.hidden))
    v = t.view

    def in_view():
        return sum(v.columnWidth(c) for c in range(len(TABLE)) if not v.isColumnHidden(c)) <= v.viewport().width() + 2

    assert in_view() and v.horizontalScrollBar().maximum() == 0
    assert {"format", "act_format", "grid"} <= set(t.columns.hidden)  # all "int" / "—" / "full" on the demo
    assert {"act_range", "size_bytes", "sensitivity"} <= _shown(t)
    assert "column" in t.count_label.text() and "Right-click" in t.count_label.toolTip()
    # room for the columns that must show, Params, Type, Granularity and W format, not for Algorithm
    keys = ["name", "weight_bits", "act_bits", "weight_sqnr_db", "act_sqnr_db", "range", "act_range", "size_bytes",
            "sensitivity", "params", "type", "granularity", "format"]
    room = sum(t.columns.natural[COL[k]] for k in keys) + 10
    t.resize(t.width() + room - v.viewport().width(), 300)
    qtbot.waitUntil(lambda: v.viewport().width() == room)
    qtbot.waitUntil(lambda: set(t.columns.hidden) == {"algorithm", "grid", "act_format"})
    # GPTQ on one layer: the Algorithm column now tells layers apart and takes a uniform column's place
    t.apply_field("algorithm", "gptq", ["features.7"])
    qtbot.waitUntil(lambda: "algorithm" in _shown(t))
    assert "format" in t.columns.hidden  # uniform (all int): it gave way
    assert in_view()


def test_header_menu_shows_and_hides_columns_and_the_choice_is_kept(window, qtbot):
    from PySide6.QtWidgets import QMenu

    from quantviz.gui.main_window import MainWindow

    t = window.table
    menu = QMenu()
    t.columns.fill_menu(menu)
    acts = {a.text(): a for a in menu.actions() if a.text()}
    assert not acts["Layer"].isEnabled()  # the row's name always shows
    acts["Type"].setChecked(False)  # hide one by hand
    assert "type" not in _shown(t)
    menu.deleteLater()
    window.resize(1600, 1000)
    qtbot.wait(100)
    assert "type" not in _shown(t)  # stays hidden, even with room to spare
    window.save_layout()

    win = MainWindow()  # the next start reads the same settings
    qtbot.addWidget(win)
    win.resize(1600, 1000)
    win.show()
    win.open_model("demo")
    qtbot.waitUntil(lambda: not win.runner.busy(), timeout=30000)
    qtbot.wait(50)
    assert "type" not in _shown(win.table)
    assert "Type" in win.table.count_label.toolTip()
    win.table.columns.reset()  # "Fit columns to the window"
    assert "type" in _shown(win.table)
    win.unsaved.mark_clean()
    win.close()


def test_a_column_shown_by_hand_shows_even_when_narrow(window, qtbot):
    t = window.table
    t.columns.set_shown("act_format", True)
    window.resize(1000, 800)
    qtbot.wait(100)
    assert "act_format" in _shown(t)
    assert not t.view.isColumnHidden(COL["act_format"])
