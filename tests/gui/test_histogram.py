"""The histogram panel: live drag preview, commit, float layers, activations, log scale."""
from __future__ import annotations

import math

import numpy as np
import pytest

from quantviz.core.numerics.preview import preview_activation, preview_weight
from quantviz.gui.views.histogram import LOG_FLOOR
from quantviz.io.config import preset

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

LAYER = "features.3"


@pytest.fixture(scope="module")
def session():
    from quantviz.session import Session

    return Session.open("demo")


@pytest.fixture
def panel(qtbot, session):
    from quantviz.gui.views.histogram import HistogramPanel

    session.set_config(preset("W8"), "reset", record=False)
    p = HistogramPanel()
    qtbot.addWidget(p)
    p.resize(900, 600)
    p.set_session(session)
    return p


def _sqnr(text: str) -> float:
    return float(text.split("SQNR ")[1].split(" dB")[0])


def _drag(qtbot, view, lo, hi, signal):
    """Move the band as a mouse drag does: region changed, no release yet."""
    view.region.blockSignals(True)  # setRegion alone would also emit the release
    view.region.setRegion((lo, hi))
    view.region.blockSignals(False)
    with qtbot.waitSignal(signal, timeout=3000) as blocker:
        view.region.sigRegionChanged.emit(view.region)
    return blocker.args


def test_weight_drag_previews_then_commits(qtbot, panel, session):
    session.edit_layers([LAYER], {"weight": {"bits": 4}})
    panel.show_layer(LAYER)
    assert panel.weights.editable
    assert "4-bit per_channel" in panel.header.text()
    before = panel.stats_text("weight")
    assert _sqnr(before) == pytest.approx(session.layer_row(LAYER)["weight_sqnr_db"], abs=0.05)
    w = session.sim.float_weight(LAYER)
    lo, hi = 0.4 * float(w.min()), 0.4 * float(w.max())

    layer, kind, plo, phi = _drag(qtbot, panel.weights, lo, hi, panel.rangePreview)
    assert (layer, kind) == (LAYER, "weight")
    assert (plo, phi) == pytest.approx((lo, hi))
    expected = preview_weight(session.sim, LAYER, session.spec(LAYER).weight, lo, hi)
    after = panel.stats_text("weight")
    assert after != before
    assert _sqnr(after) == pytest.approx(expected["sqnr_db"], abs=0.05)
    assert f"clipped {100 * expected['clipped']:.2f}%" in after
    # the quantized histogram follows the drag: mass piles up at the new clip edges
    qx, qy = panel.weights._quant.getData()
    assert np.allclose(qy, expected["quant_counts"])
    # the per-channel view shows each channel's clip intersected with [lo, hi]
    _, clip_y = panel.channels._clip.getData()
    assert clip_y.max() <= max(abs(lo), abs(hi)) + 1e-6

    with qtbot.waitSignal(panel.rangeCommitted, timeout=3000) as blocker:
        panel.weights.region.sigRegionChangeFinished.emit(panel.weights.region)
    assert blocker.args[:2] == [LAYER, "weight"]
    assert blocker.args[2:] == pytest.approx([lo, hi])
    # what the main window does on commit: store the range, then refresh
    session.set_range(LAYER, "weight", *blocker.args[2:])
    panel.refresh()
    assert "manual" in panel.header.text()
    assert panel.weights.region.getRegion() == pytest.approx((lo, hi))
    assert _sqnr(panel.stats_text("weight")) == pytest.approx(session.layer_row(LAYER)["weight_sqnr_db"], abs=0.05)


def test_programmatic_updates_emit_nothing(qtbot, panel, session):
    seen = []
    panel.show_layer(LAYER)
    panel.rangePreview.connect(lambda *a: seen.append(a))
    panel.rangeCommitted.connect(lambda *a: seen.append(a))
    panel.show_layer(LAYER)
    panel.refresh()
    panel.show_layer("classifier.1")
    qtbot.wait(80)  # longer than the throttle interval
    assert seen == []
    with qtbot.waitSignal(panel.rangeCommitted, timeout=3000) as blocker:  # a programmatic move is an edit
        panel.weights.region.setRegion((-0.1, 0.1))
    assert blocker.args == ["classifier.1", "weight", -0.1, 0.1]


def test_float_layer_disables_editing(panel, session):
    session.edit_layers([LAYER], {"weight": {"bits": None}})
    panel.show_layer(LAYER)
    assert not panel.weights.editable
    assert "float (not quantized)" in panel.stats_text("weight")
    assert "float (not quantized)" in panel.header.text()
    x, y = panel.weights._float.getData()
    assert y is not None and y.sum() == session.sim.float_weight(LAYER).numel()
    assert panel.weights._quant.getData()[0] is None or len(panel.weights._quant.getData()[0]) == 0


def test_activation_tab_edits_range(qtbot, panel, session):
    panel.show_layer(LAYER)
    assert not panel.acts.editable  # the W8 preset leaves activations float
    session.apply_preset("W8A8")
    panel.refresh()
    assert panel.acts.editable
    aspec = session.spec(LAYER).activation
    assert _sqnr(panel.stats_text("activation")) == pytest.approx(session.sim.activation_sqnr(LAYER, aspec), abs=0.05)
    hist = session.sim.act_obs[LAYER].histogram()
    lo, hi = hist.min, 0.5 * hist.max
    layer, kind, plo, phi = _drag(qtbot, panel.acts, lo, hi, panel.rangePreview)
    assert (layer, kind) == (LAYER, "activation")
    expected = preview_activation(hist, aspec, plo, phi)
    assert _sqnr(panel.stats_text("activation")) == pytest.approx(expected["sqnr_db"], abs=0.05)
    assert expected["clipped"] > 0
    with qtbot.waitSignal(panel.rangeCommitted, timeout=3000) as blocker:
        panel.acts.region.sigRegionChangeFinished.emit(panel.acts.region)
    assert blocker.args[:2] == [LAYER, "activation"]
    session.set_range(LAYER, "activation", *blocker.args[2:])
    panel.refresh()
    assert "manual" in panel.header.text()


def test_log_toggle(panel, session):
    panel.show_layer(LAYER)
    item = panel.weights.plot.getPlotItem()
    _, y_lin = panel.weights._float.getData()
    panel.log_box.setChecked(True)
    assert item.ctrl.logYCheck.isChecked()
    _, y_log = panel.weights._float.getData()  # the displayed (log10) values
    assert np.all(np.isfinite(y_log))  # empty bins sit on a floor instead of log(0)
    assert np.allclose(y_log, np.log10(np.maximum(y_lin, LOG_FLOOR)))
    assert panel.acts.plot.getPlotItem().ctrl.logYCheck.isChecked()
    panel.log_box.setChecked(False)
    assert not item.ctrl.logYCheck.isChecked()


def test_no_layer_and_levels(panel, session):
    panel.show_layer(None)
    assert not panel.weights.editable and panel.layer is None
    panel.show_layer("features.0")
    lx, ly = panel.weights._levels.getData()
    p = preview_weight(session.sim, "features.0", session.spec("features.0").weight)
    visible = p["levels"][(p["levels"] >= p["edges"][0]) & (p["levels"] <= p["edges"][-1])]
    assert p["levels_total"] == 256 and len(visible) > 128
    assert np.allclose(lx, np.repeat(visible, 2))  # one vertical segment per visible level
    session.edit_layers(["features.0"], {"weight": {"bits": 16}})
    panel.refresh()
    assert "every" in panel.weights.note.text()  # 65536 levels: subsampled and said so
    assert len(panel.weights._levels.getData()[0]) <= 2 * 257


def test_controls_have_tooltips(panel):
    assert panel.log_box.toolTip() and panel.header.toolTip() and panel.weights.region.toolTip()
    for i in range(panel.tabs.count()):
        assert panel.tabs.tabToolTip(i)
    for view in (panel.weights, panel.acts):
        item = view.plot.getPlotItem()
        assert item.getAxis("bottom").labelText and item.getAxis("left").labelText


def test_render_png(panel, session, tmp_path):
    session.edit_layers([LAYER], {"weight": {"bits": 4}})
    panel.show_layer(LAYER)
    out = tmp_path / "h.png"
    assert panel.grab().save(str(out))
    from PySide6.QtGui import QImage

    img = QImage(str(out))
    assert (img.width(), img.height()) == (900, 600)
    assert not math.isnan(_sqnr(panel.stats_text("weight")))


def test_main_renders_demo(tmp_path):
    from quantviz.gui.views.histogram import main

    out = tmp_path / "panel.png"
    assert main(["--layer", "features.7", "--bits", "4", "--drag", "-0.2", "0.2", "--png", str(out)]) == 0
    assert out.stat().st_size > 10_000


def test_stats_text_formats():
    from quantviz.gui.views.hist_math import fmt_stats

    p = {"sqnr_db": float("inf"), "mse": 0.0, "clipped": 0.0031}
    assert fmt_stats(p) == "SQNR ∞ dB · MSE 0 · clipped 0.31%"
    base = {"sqnr_db": 17.06, "range": "minmax"}
    assert fmt_stats({**p, "sqnr_db": 19.77}, base).startswith("SQNR 19.8 dB (config minmax: 17.1 dB)")


def test_grid_note_tells_what_each_rule_does(panel, session):
    from quantviz.gui.views.hist_math import grid_note

    notes = {}
    for grid in ("full", "torch", "restricted"):
        session.edit_layers([LAYER], {"weight": {"bits": 4, "grid": grid}})
        panel.show_layer(LAYER)
        notes[grid] = panel.weights.note.text()
        assert f"({grid} grid)" in panel.header.text()
    assert "nothing inside [lo, hi] is clipped" in notes["full"] and "16 levels" in notes["full"]
    assert "/ 7.5" in notes["torch"] and "clipped" in notes["torch"]
    assert "±7 steps" in notes["restricted"] and "15 levels" in notes["restricted"]
    assert grid_note({"bits": 3, "grid": "torch"}).startswith("symmetric, torch's grid: step = max(|lo|, |hi|) / 3.5")


def test_refresh_reuses_the_weight_preview_while_layer_setting_and_weight_are_unchanged(qtbot, monkeypatch):
    """A redraw with nothing new for the weight tab (calibration ending brings activation statistics
    only) does not quantize the weight again: on a 1.1B model's embedding that took seconds of the
    GUI thread. A changed setting, a drag, or a changed weight does."""
    import quantviz.gui.views.histogram as hmod
    from quantviz.session import Session

    session = Session.open("demo")  # its own: other tests' panels follow the shared one
    panel = hmod.HistogramPanel()
    qtbot.addWidget(panel)
    panel.set_session(session)
    calls = []
    real = hmod.preview_weight
    monkeypatch.setattr(hmod, "preview_weight", lambda *a, **k: calls.append(a[1:4]) or real(*a, **k))
    panel.show_layer(LAYER)
    assert len(calls) == 1
    panel.refresh()
    assert len(calls) == 1  # the same preview is on screen
    session.edit_layers([LAYER], {"weight": {"bits": 4}})  # the panel follows the edit
    assert len(calls) == 2 and calls[-1][1].bits == 4
    w = session.sim.float_weight(LAYER)
    _drag_args = (0.5 * float(w.min()), 0.5 * float(w.max()))
    panel._on_drag("weight", *_drag_args, False)
    assert len(calls) == 3
    panel.refresh()  # back to the stored setting: computed again (the drag's preview is on screen)
    assert len(calls) == 4
    with __import__("torch").no_grad():
        w.mul_(1.0)  # an in-place change of the weight (as QAT writes trained weights)
    panel.refresh()
    assert len(calls) == 5


def test_a_big_layers_preview_runs_on_a_worker_and_a_stale_one_is_dropped(qtbot, monkeypatch):
    """Above ASYNC_NUMEL weights the preview is computed by the job runner (the GUI thread only
    draws it); if the user has moved to another layer by then, the late result is dropped."""
    import threading

    import quantviz.gui.views.histogram as hmod
    from quantviz.gui.workers import JobRunner
    from quantviz.session import Session

    session = Session.open("demo")
    runner = JobRunner()
    panel = hmod.HistogramPanel()
    qtbot.addWidget(panel)
    panel.set_runner(runner)
    panel.set_session(session)
    monkeypatch.setattr(hmod, "ASYNC_NUMEL", 1000)  # features.7 (18,432 weights) counts as big, features.0 (36) not
    threads = []
    real = hmod.preview_weight
    monkeypatch.setattr(hmod, "preview_weight", lambda *a, **k: threads.append((a[1], threading.get_ident())) or real(*a, **k))
    try:
        panel.show_layer("features.7")
        assert "Computing the histogram of 18,432 weights" in panel.weights.note.text()
        qtbot.waitUntil(lambda: "SQNR" in panel.stats_text("weight"), timeout=10000)
        assert threads == [("features.7", threads[0][1])] and threads[0][1] != threading.get_ident()
        assert _sqnr(panel.stats_text("weight")) == pytest.approx(session.layer_row("features.7")["weight_sqnr_db"], abs=0.05)
        assert panel.weights.editable
        # moved on before the worker is done: the late preview is not drawn over the new layer
        panel.show_layer("features.7")  # same key: nothing to do
        session.edit_layers(["features.7"], {"weight": {"bits": 4}})  # a new preview of features.7 starts...
        panel.show_layer("features.0")  # ...and the user is elsewhere at once
        qtbot.waitUntil(lambda: not runner.busy(), timeout=10000)
        qtbot.wait(50)  # the finished job's queued signal
        assert "<b>features.0</b>" in panel.header.text()
        assert _sqnr(panel.stats_text("weight")) == pytest.approx(session.layer_row("features.0")["weight_sqnr_db"], abs=0.05)
    finally:
        runner.shutdown()


def test_every_nth_uses_english_ordinals():
    """Issue 22 E: the note said "every 2th weight"."""
    from quantviz.core.fmt import every_nth, ordinal
    from quantviz.gui.views.hist_math import format_note, weight_note

    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 101, 111, 112, 1000)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd", "101st", "111th", "112th", "1000th"]
    assert every_nth(2, "weight") == "every 2nd weight" and every_nth(1, "weight") == "every weight"
    p = {"levels_total": 16, "levels_step": 2, "granularity": "per_tensor", "symmetric": False, "sample_stride": 3}
    note = weight_note(p)
    assert "every 2nd drawn" in note and "histogram from every 3rd weight" in note
    f = {"format_note": "NVFP4", "levels_total": 15, "sample_stride": 22}
    assert "every 22nd weight" in format_note(f)


@pytest.mark.parametrize("patch, clip, quantized", [
    ({"weight": {"bits": 4}}, True, True),
    ({"weight": {"format": "fp8_e4m3", "bits": 8}}, True, True),
    ({"weight": {"format": "nvfp4", "bits": 4}}, False, True),
    ({"weight": {"format": "mxfp4", "bits": 4}}, False, True),
    ({"weight": {"bits": None}}, False, False),
])
def test_legend_names_only_what_is_drawn(panel, session, patch, clip, quantized):
    """Issue 22 H: block formats draw no clip band, yet the legend said "clip range (drag its edges)"."""
    session.edit_layers([LAYER], patch)
    panel.show_layer(LAYER)
    w = panel.weights
    legend = w.legend.text()
    assert w.region.isVisible() == clip == w.editable
    assert ("clip range (drag its edges)" in legend) == clip
    assert ("quantized" in legend) == quantized and ("quantization levels" in legend) == quantized


@pytest.mark.parametrize("manual", [False, True])
def test_apply_without_a_change_adds_no_undo_step(qtbot, panel, session, manual):
    """Issue 22 F: Apply in the range editor with the shown range untouched committed it (a min-max range
    became a manual one, a manual one was rounded to the boxes' decimals): an undo step that did nothing."""
    if manual:
        session.set_range(LAYER, "weight", -0.123456789, 0.2345678912)
    from quantviz.session.undo import history_to_dict

    panel.show_layer(LAYER)
    committed = []
    panel.rangeCommitted.connect(lambda *a: committed.append(a))
    panel.rangeCommitted.connect(lambda n, k, lo, hi: session.set_range(n, k, lo, hi))  # as the main window does
    steps = len(history_to_dict(session.history)["done"])
    before = session.config.to_dict()
    editor = panel.weights.editor
    editor.apply()
    editor.apply_button.click()
    assert committed == [] and session.config.to_dict() == before
    assert len(history_to_dict(session.history)["done"]) == steps
    editor.hi.setValue(editor.hi.value() / 2)  # a real change still commits, once
    editor.apply()
    assert len(committed) == 1 and len(history_to_dict(session.history)["done"]) == steps + 1
    panel.show_layer(LAYER)
    editor.apply()  # the applied range, shown again: nothing to do
    assert len(committed) == 1 and len(history_to_dict(session.history)["done"]) == steps + 1
