"""The search dialog's "Rank layers by" choice (issue 16): the search ranks by the chosen sensitivity."""
from __future__ import annotations


def test_rank_layers_by_local_runs_a_local_ranked_search(window, qtbot, wait_idle):
    from quantviz.gui import analysis

    s = window.session
    analysis.ask_and_search(window)
    dlg = window._search_dialog
    qtbot.waitExposed(dlg)
    keys = [dlg.rank.itemData(i) for i in range(dlg.rank.count())]
    assert keys == ["e2e", "local", "hessian"] and dlg.rank.currentData() == "e2e"  # as quantviz search
    assert "--sensitivity" in dlg.rank.toolTip()
    dlg.rank.setCurrentIndex(keys.index("local"))
    dlg.avg_bits.setValue(6.0)
    for b, cb in dlg.bit_boxes.items():
        cb.setChecked(b in (4, 8))
    req = dlg.request()
    assert req["sensitivity"] == "local" and req["bits"] == (4, 8)
    dlg.accept()
    qtbot.waitUntil(lambda: s.analysis.search is not None, timeout=120000)
    wait_idle(window)
    res = s.analysis.search
    assert res["sensitivity"] == "local" and res["chosen"]["avg_bits"] <= 6 + 1e-9
    assert "local" in s.analysis.sensitivity and "e2e" not in s.analysis.sensitivity
