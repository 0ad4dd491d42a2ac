"""The app lets you choose the metric sensitivity and search rank by (issue 12, section 3)."""
from __future__ import annotations

from PySide6.QtCore import Qt


def test_rank_by_metric_is_chosen_in_the_sensitivity_panel_and_kept_with_the_session(window, wait_idle):
    from quantviz.gui import analysis
    from quantviz.gui.views.layer_model import COL
    from quantviz.session.analysis import Analysis

    s, view = window.session, window.sensitivity
    keys = [view.metric_combo.itemData(i) for i in range(view.metric_combo.count())]
    assert keys[0] == "accuracy" and set(keys) == set(s.reference.metrics) and "top1_agreement" in keys  # primary first
    assert view.metric_combo.currentData() == "accuracy" and "(primary)" in view.metric_combo.currentText()
    view.metric_combo.setCurrentIndex(keys.index("top1_agreement"))
    view.metric_combo.activated.emit(keys.index("top1_agreement"))
    assert s.analysis_metric == "top1_agreement" and s.analysis.metric == "top1_agreement"
    assert window.unsaved.dirty  # a choice worth saving
    analysis.run_sensitivity(window, "e2e")  # Run › Sensitivity: ranks by the chosen metric
    wait_idle(window)
    assert s.analysis.sensitivity["e2e"]["metric"] == "top1_agreement"
    tip = window.table.model.headerData(COL["sensitivity"], Qt.Horizontal, Qt.ToolTipRole)
    assert "top-1 agreement drop" in tip
    assert view.mode_combo.currentText() == "top-1 agreement drop (pt)"
    # the heatmap can colour by any metric the cells hold, without a new run; the note says what ranks
    labels = [view.mode_combo.itemText(i) for i in range(view.mode_combo.count())]
    assert "accuracy drop (pt)" in labels and "cosine drop" in labels
    assert Analysis.from_dict(s.to_dict()["analysis"]).metric == "top1_agreement"
    view.metric_combo.setCurrentIndex(keys.index("cosine"))
    view.metric_combo.activated.emit(keys.index("cosine"))
    assert s.analysis.metric == "cosine"
    assert view.mode_combo.currentText() == "cosine drop"
    assert "ranks by top-1 agreement; run it again to rank by cosine" in view.info.text()


def test_run_menu_lists_the_metrics_and_checks_the_chosen_one(window):
    from PySide6.QtWidgets import QMenu

    from quantviz.gui import analysis

    menu = QMenu()
    analysis.fill_metric_menu(window, menu)
    acts = {a.data(): a for a in menu.actions()}
    assert set(acts) == set(window.session.reference.metrics)
    assert acts["accuracy"].isChecked() and "(primary)" in acts["accuracy"].text()
    acts["cosine"].trigger()
    assert window.session.analysis_metric == "cosine"
    analysis.fill_metric_menu(window, menu)
    assert {a.data(): a for a in menu.actions()}["cosine"].isChecked()
    assert "cosine" in window.error_label.text().lower()
    menu.deleteLater()


def test_search_dialog_compares_by_the_chosen_metric(window, qtbot):
    from quantviz.gui.search_dialog import SearchDialog

    s = window.session
    s.set_analysis_metric("cosine")
    dlg = SearchDialog(s, window)
    qtbot.addWidget(dlg)
    dlg.show()
    qtbot.waitExposed(dlg)
    assert dlg.metric_combo.currentData() == "cosine"
    assert dlg.radios["max_drop"].text() == "Largest cosine drop" and dlg.max_drop.suffix() == ""
    dlg.metric_combo.setCurrentIndex(dlg.metric_combo.findData("accuracy"))
    assert dlg.radios["max_drop"].text() == "Largest accuracy drop" and dlg.max_drop.suffix() == " pt"
    dlg.radios["max_drop"].setChecked(True)
    dlg.max_drop.setValue(2.0)
    req = dlg.request()
    assert req["metric"] == "accuracy" and abs(req["budget"]["max_drop"] - 0.02) < 1e-12


def test_an_unknown_metric_is_refused_in_one_line(demo_session):
    import pytest

    from quantviz.core.errors import QuantvizError

    demo_session.prepare()
    with pytest.raises(QuantvizError, match="unknown metric 'perplexity'; this model has: .*accuracy"):
        demo_session.set_analysis_metric("perplexity")
    demo_session.set_analysis_metric("accuracy")  # the primary: stored as the default
    assert demo_session.analysis.metric is None and demo_session.analysis_metric == "accuracy"
