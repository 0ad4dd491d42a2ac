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
    assert dlg.extras.isChecked()  # the default search's per-group / GPTQ settings (next test)
    dlg.extras.setChecked(False)
    req = dlg.request()
    assert req["sensitivity"] == "local" and req["bits"] == (4, 8)
    assert req["measure"] == "less" and "--measure" in dlg.measure.toolTip()  # as quantviz search by default
    dlg.accept()
    qtbot.waitUntil(lambda: s.analysis.search is not None, timeout=120000)
    wait_idle(window)
    res = s.analysis.search
    assert res["sensitivity"] == "local" and res["chosen"]["avg_bits"] <= 6 + 1e-9
    assert "local" in s.analysis.sensitivity and "e2e" not in s.analysis.sensitivity
    # searches that measure less (#25 §4): fewer end-to-end evaluations than candidates, and the app says so
    assert res["measure"] == "less" and 1 <= res["full_evaluations"] < res["candidates"]
    assert f"{res['full_evaluations']} of {res['candidates']} candidates measured end to end" in window.error_label.text()


def test_the_dialog_offers_the_default_searchs_per_group_and_gptq_settings(window, qtbot):
    """#22 §2: the best result must not need expert flags; the app's search tries what quantviz search does."""
    from quantviz.core.analysis.candidates import is_plain
    from quantviz.gui import analysis

    analysis.ask_and_search(window)
    dlg = window._search_dialog
    qtbot.waitExposed(dlg)
    assert dlg.extras.isChecked() and dlg.extras.isEnabled()
    assert "int4g32+gptq" in dlg.extras.text() and "int4+gptq" in dlg.extras.text()
    req = dlg.request()
    assert [str(c) for c in req["bits"]] == [str(c) for c in window.session.default_search_candidates()]
    assert not all(is_plain(c) for c in req["bits"])
    for b, cb in dlg.bit_boxes.items():
        cb.setChecked(b in (4, 8))
    assert {str(c) for c in dlg.request()["bits"]} >= {"int4", "int8", "int4g32", "int4+gptq"}
    assert "int2" not in {str(c) for c in dlg.request()["bits"]}
    dlg.extras.setChecked(False)
    assert dlg.request()["bits"] == (4, 8)
    dlg.measure.setCurrentIndex(dlg.measure.findData("all"))
    assert dlg.request()["measure"] == "all"  # the exhaustive search (quantviz search --measure all)
    dlg.reject()
