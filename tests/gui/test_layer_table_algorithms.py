"""The layer table's Algorithm column: editing, 'pending' until a re-check computed it."""
from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from quantviz.gui.views.layer_model import COL
from quantviz.gui.views.layer_table import LayerTablePanel, choices


@pytest.fixture
def panel(qtbot, demo_session):
    p = LayerTablePanel()
    qtbot.addWidget(p)
    p.set_session(demo_session)
    p.resize(1200, 400)
    p.show()
    return p


def test_algorithm_edit_shows_pending_then_what_it_changed(panel, demo_session, tmp_path):
    s = demo_session
    name = s.layers[3].name  # classifier.1
    assert [v for _, v, _ in choices("algorithm")][:3] == ["none", "adaround", "gptq"]
    idx = panel.proxy.index(3, COL["algorithm"])
    assert idx.data() == "none" and panel.proxy.flags(idx) & Qt.ItemIsEditable
    assert panel.proxy.setData(panel.proxy.index(3, COL["weight_bits"]), 3)
    assert panel.proxy.setData(idx, "adaround")
    assert s.spec(name).weight.algorithm == "adaround" and idx.data() == "adaround"
    sq = panel.proxy.index(3, COL["weight_sqnr_db"])
    sq.data()
    panel.model._flush_stats()
    assert sq.data() == "pending"  # the table never runs the algorithm itself
    assert "next re-check" in sq.data(Qt.ToolTipRole)
    s.check(record=False)  # the re-check job computes it
    panel.model.refresh_column("weight_sqnr_db")
    sq.data()
    panel.model._flush_stats()
    assert sq.data().endswith("dB")
    tip = sq.data(Qt.ToolTipRole)
    assert "adaround:" in tip and "round differently from nearest" in tip
    panel.grab().save(str(tmp_path / "table.png"))
    # undo is instant: the result is cached per (layer, settings, context)
    s.undo()
    assert s.spec(name).weight.algorithm == "none"
    s.redo()
    assert not s.sim.algorithm_pending(name, s.spec(name).weight)


def test_the_histogram_shows_the_algorithms_result_once_a_recheck_ran_it(window, wait_idle):
    """#22 item 8: after the re-check that ran AdaRound the histogram said "adaround: pending" (and the
    plain rounding's SQNR) while the table showed the algorithm's; it follows the re-check now."""
    s = window.session
    name = s.layer_names[-1]
    window.table.select_layer(name)
    window.table.apply_field("weight_bits", 3, [name])
    s.edit_layers([name], {"weight": {"algorithm": "adaround"}})
    wait_idle(window, 120000)
    assert not s.sim.algorithm_pending(name, s.spec(name).weight)  # the re-check ran it
    note = window.histogram.weights.note.text()
    assert "pending" not in note and "adaround" in note
    sqnr = float(window.histogram.stats_text("weight").split("SQNR ")[1].split(" dB")[0])
    assert sqnr == pytest.approx(s.layer_row(name)["weight_sqnr_db"], abs=0.05)


def test_a_reopened_session_computes_its_algorithms_and_the_table_leaves_pending(window, qtbot, tmp_path,
                                                                                 wait_idle):
    """#22 item 8: a session saved with a GPTQ layer and reopened showed 'pending' in the table for good
    while the summary said 'Up to date' (the kept result was shown again and nothing ran the algorithm)."""
    from quantviz.gui.main_window import MainWindow

    s = window.session
    name = s.layer_names[-2]
    window.table.apply_field("weight_bits", 3, [name])
    s.edit_layers([name], {"weight": {"algorithm": "gptq"}})
    wait_idle(window, 120000)
    path = tmp_path / "gptq.qvs"
    assert window.save_session(str(path))
    other = MainWindow()
    qtbot.addWidget(other)
    try:
        other.open_path(str(path))
        qtbot.waitUntil(lambda: other.session is not None and other.session.prepared, timeout=120000)
        wait_idle(other, 120000)
        o = other.session
        assert o.spec(name).weight.algorithm == "gptq"
        assert not o.sim.algorithm_pending(name, o.spec(name).weight)  # the reopened session ran GPTQ
        row = other.table.model.row_of(name)
        idx = other.table.model.index(row, COL["weight_sqnr_db"])
        idx.data()
        other.table.model._flush_stats()
        wait_idle(other, 120000)
        assert idx.data() != "pending" and idx.data().endswith("dB"), idx.data()
        assert other.summary.state.text().startswith("Up to date")
        assert other.summary.current is not None and other.summary.current.config == o.config.to_dict()
    finally:
        other.unsaved.mark_clean()
        other.close()
