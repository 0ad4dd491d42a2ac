"""The Run menu's sensitivity and search jobs, and the docked analysis panels."""
from __future__ import annotations


def test_analysis_panels_are_docked(window):
    for key in ("sensitivity", "pareto", "config_diff"):
        assert key in window.docks
    assert window.sensitivity is not None and window.pareto is not None and window.config_diff is not None


def test_sensitivity_from_the_run_menu_fills_panel_and_table(window, qtbot, wait_idle):
    from quantviz.gui.views.layer_model import COL

    window.actions["sensitivity_e2e"].trigger()
    qtbot.waitUntil(lambda: "e2e" in window.session.analysis.sensitivity, timeout=60000)
    wait_idle(window)
    assert "e2e" in window.sensitivity._results
    scores = window.session.analysis.scores.scores
    assert set(scores) == set(window.session.layer_names)
    shown = [window.table.proxy.index(r, COL["sensitivity"]).data() for r in range(window.table.proxy.rowCount())]
    assert all(v not in (None, "", "—") for v in shown)


def test_search_then_click_a_pareto_point_is_undoable(window, qtbot, wait_idle):
    from quantviz.gui import analysis
    from quantviz.io.config import QuantConfig

    before = window.session.config.to_dict()
    analysis.run_search(window, avg_bits=4.0)
    qtbot.waitUntil(lambda: window.session.analysis.search is not None, timeout=120000)
    wait_idle(window)
    front = window.pareto._front
    assert len(front) >= 2
    spots = window.pareto.front_item.scatter.points()
    assert len(spots) == len(front)  # every front point is drawn
    pick = spots[-1].data()
    window.pareto._on_points_clicked([spots[-1]])  # what a click on that point does
    wait_idle(window)
    assert window.session.config == QuantConfig.from_dict(pick["config"])
    assert window.session.config.to_dict() != before
    window.actions["undo"].trigger()
    assert window.session.config.to_dict() == before
    wait_idle(window)


def test_measure_real_models_from_the_run_menu_opens_the_report(window, qtbot, wait_idle, tmp_path):
    import os

    import pytest

    pytest.importorskip("torchao")
    pytest.importorskip("onnxruntime")
    window.session.apply_preset("W8A8")
    wait_idle(window)
    window.actions["benchmark"].trigger()
    assert window.runner.busy("benchmark")
    qtbot.waitUntil(lambda: getattr(window, "deploy_report", None) is not None, timeout=180000)
    wait_idle(window)
    dlg = window.deploy_report
    rep = dlg.report
    assert dlg.isVisible() and {"float", "torchao", "pt2e", "onnxruntime"} <= set(rep)
    labels = [dlg.table.item(r, 0).text() for r in range(dlg.table.rowCount())]
    assert labels[0] == "float (torch)" and "pt2e → oneDNN int8" in labels
    row = labels.index("pt2e → oneDNN int8")
    assert dlg.table.item(row, 5).text() == f"{rep['pt2e']['accuracy'] * 100:.2f}%"
    assert "features.0" in dlg.notes.text()  # the convolutions ran real int8 kernels
    shot = os.environ.get("QUANTVIZ_SHOT_DIR") or str(tmp_path)
    assert dlg.grab().save(os.path.join(shot, "deploy_report.png"))


def test_hand_made_configs_join_the_pareto_plot(window, qtbot, wait_idle):
    s = window.session
    window.docks["histogram"].raise_()  # the Pareto panel is a hidden tab: it catches up when shown
    before = len(window.pareto._history)
    s.edit_layers([s.layers[0].name], {"weight": {"bits": 3}})
    wait_idle(window)
    assert len(s.results) > before
    window.docks["pareto"].raise_()
    qtbot.waitUntil(lambda: len(window.pareto._history) == len(s.results), timeout=5000)
    s.edit_layers([s.layers[1].name], {"weight": {"bits": 5}})  # while it is shown: at once
    wait_idle(window)
    assert len(window.pareto._history) == len(s.results)
    assert window.pareto.hist_item.points().size == len(s.results)


def test_score_cache_and_ray_preferences_reach_the_session(window, qtbot, wait_idle, tmp_path, monkeypatch):
    from quantviz.gui import scale_menu

    cache = tmp_path / "cache"
    monkeypatch.setenv("QUANTVIZ_CACHE_DIR", str(cache))
    assert window.actions["score_cache"].isChecked()
    window.actions["score_cache"].setChecked(False)
    scale_menu.set_ray_address(window, "local:2", window.actions["ray"])
    assert "local:2" in window.actions["ray"].text()
    scale_menu.apply(window, window.session)
    assert window.session.use_score_cache is False and window.session.ray_address == "local:2"
    scale_menu.set_ray_address(window, "", window.actions["ray"])  # back to running here
    window.actions["sensitivity_local"].trigger()
    qtbot.waitUntil(lambda: "local" in window.session.analysis.sensitivity, timeout=60000)
    wait_idle(window)
    assert window.session.ray_address is None
    assert not cache.exists()  # cache off: nothing written
    window.actions["score_cache"].setChecked(True)
    window.session.analysis.sensitivity.clear()
    window.actions["sensitivity_local"].trigger()
    qtbot.waitUntil(lambda: "local" in window.session.analysis.sensitivity, timeout=60000)
    wait_idle(window)
    assert list(cache.glob("*/result-*.json"))
