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


def test_summary_says_which_samples_the_figures_are_on(qtbot, tmp_path):
    """#22 §2: held out from calibration, or (in the error colour) on calibration data."""
    import numpy as np

    from quantviz.gui.views.summary import SummaryPanel
    from quantviz.session import Session

    d = np.load("resources/demo/digits_test.npz")
    np.savez(tmp_path / "d40.npz", x=d["x"][:40], y=d["y"][:40])
    panel = SummaryPanel()
    qtbot.addWidget(panel)
    held = Session.open("demo", data=str(tmp_path / "d40.npz"), prepare=False)
    panel.set_session(held)
    assert panel.data_line.text() == "Held-out figures: 20 samples (calibrated on 20 others)"
    assert panel.data_line.objectName() == "muted"
    assert panel.data_line.displayed_text() == panel.data_line.text()  # fits: no eliding
    assert panel.data_line.toolTip() == "Evaluated on 20 held-out samples; calibrated on 20 others of the same data."
    same = Session.open("demo", data=str(tmp_path / "d40.npz"), holdout=False, prepare=False)
    panel.set_session(same)
    assert panel.data_line.text() == "Figures on calibration data (40 samples)"
    assert panel.data_line.objectName() == "error"
    assert "figures are on calibration data (hold-out turned off)" in panel.data_line.toolTip()
    panel.set_session(Session.open("demo", prepare=False))
    assert panel.data_line.text() == "Figures on 597 samples (calibrated on 256 others)"
    panel.set_session(None)
    assert panel.data_line.text() == ""
