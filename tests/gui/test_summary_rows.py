"""The summary's rows follow the model's task metric without moving a widget in the grid.

Re-adding a widget to a layout deletes its layout item; PySide keeps the wrapper it made
for an item of a nested layout, and a later object at the same address then reads as that
stale item (a segfault in the GUI tests, intermittently). So rows take other keys instead.
"""
from __future__ import annotations


def _grid_widgets(panel):
    g = panel.grid
    return {(r, c): g.itemAtPosition(r, c).widget() for r in range(1, g.rowCount()) for c in range(4)
            if g.itemAtPosition(r, c) is not None}


def test_task_metric_first_moves_labels_not_widgets(qtbot):
    from quantviz.gui.views.summary import METRIC_ROWS, SIZE_ROWS, SummaryPanel

    panel = SummaryPanel()
    qtbot.addWidget(panel)
    before = _grid_widgets(panel)
    count = panel.grid.count()
    keys = [k for k, _l, _t in METRIC_ROWS + SIZE_ROWS]
    assert [panel.cells[k][0].text() for k in keys] == [label for _k, label, _t in METRIC_ROWS + SIZE_ROWS]

    order = ["perplexity"] + [k for k in keys if k != "perplexity"]
    panel._assign_rows(order)
    assert _grid_widgets(panel) == before and panel.grid.count() == count  # same widgets, same places
    first = before[(1, 0)]
    assert first is panel.cells["perplexity"][0] and first.text() == "Perplexity"
    assert "cross-entropy" in first.toolTip()
    assert panel.cells["accuracy"][0] is before[(2, 0)] and panel.cells["accuracy"][0].text() == "Accuracy"
    assert panel._row_keys == order

    panel._assign_rows(keys)  # and back
    assert _grid_widgets(panel) == before
    assert panel.cells["accuracy"][0] is before[(1, 0)]


def test_demo_window_lists_accuracy_first(window):
    rows = window.summary.metric_rows()
    assert rows[0] == "accuracy" and "sqnr_db" in rows
    assert window.summary.cells["accuracy"][2].text()  # a value, in the row that says Accuracy
