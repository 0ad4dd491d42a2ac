"""The Trace panel: curves, markers, hover, click-to-select, refresh after re-checks, pinning."""

import pytest
import torch
from PySide6.QtCore import QPointF, Qt
from torch import nn

from quantviz.core.model.data import Dataset
from quantviz.core.sources.base import ModelBundle
from quantviz.io.config import preset
from quantviz.session import Session


@pytest.fixture
def session():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    x = torch.randn(40, 6)
    data = Dataset(x, m(x).argmax(1).detach())
    s = Session(ModelBundle(model=m, name="mlp", kind="recipe", reference="mlp", eval=data, calib=data),
                eval_data=data, calib_data=data, config=preset("float"), batch_size=16)
    s.prepare()
    return s


def _click_point(qtbot, view, i):
    vb = view.plot.getPlotItem().vb
    scene = vb.mapViewToScene(QPointF(i, 0.0))
    pos = view.plot.mapFromScene(scene)
    qtbot.mouseClick(view.plot.viewport(), Qt.LeftButton, pos=pos)


def test_curves_markers_hover_and_click(qtbot, session):
    from quantviz.gui.views.trace import TraceView

    session.edit_layers(["2"], {"weight": {"bits": 3}})  # only the middle layer quantized
    w = TraceView()
    qtbot.addWidget(w)
    w.resize(700, 380)
    w.show()
    w.set_session(session)
    assert "No trace yet" in w.info.text()
    session.run_trace()  # the view follows the session's analysis_changed event
    qtbot.waitUntil(lambda: w.result is session.analysis.trace)
    xs, ys = w.acc_item.getData()
    assert list(xs) == [0, 1, 2]
    # the first layer is exact: drawn on the float line; the quantized one is below it
    assert ys[0] == pytest.approx(w._ceiling) and ys[1] < w._ceiling
    lx, ly = w.local_item.getData()
    assert list(ly).count(w._ceiling) == 2 and ly[1] == pytest.approx(ys[1])
    assert w.entry_line.isVisible() and w.entry_line.value() == 1
    assert "Error enters at <b>2</b>" in w.info.text()
    assert "W INT3 per-ch minmax" in w.layer_text(1) and "float (exact)" in w.layer_text(0)
    with qtbot.waitSignal(w.layerClicked) as sig:
        _click_point(qtbot, w, 2)
    assert sig.args == ["4"] and w.sel_line.value() == 2
    assert w.on_screen()
    w.curve_combo.setCurrentIndex(w.curve_combo.findData("in"))  # no quantized inputs: empty curves
    assert len(w.acc_item.getData()[0] or []) == 0
    w.grab()  # paints without Qt warnings


def test_previous_and_pinned_curves(qtbot, session):
    from quantviz.gui.views.trace import TraceView

    w = TraceView()
    qtbot.addWidget(w)
    session.apply_preset("W8")
    first = session.run_trace()
    w.set_session(session)
    w.pin_button.setChecked(True)
    assert w.pinned is first and w.comparison is None  # the shown curve is the pinned one
    session.apply_preset("W4A8")
    w.show_result(session.run_trace())
    assert w.previous is first and w.comparison is first
    assert len(w.prev_acc_item.getData()[0]) == 3
    session.apply_preset("W3")
    third = session.run_trace()
    w.show_result(third)
    assert w.comparison is first  # still pinned
    w.pin_button.setChecked(False)
    assert w.comparison is w.previous and w.previous is not first and w.previous is not third
    w.compare_box.setChecked(False)
    assert w.comparison is None and len(w.prev_acc_item.getData()[0] or []) == 0


def test_main_window_runs_and_refreshes_the_trace(qtbot, window, wait_idle):
    win = window
    assert win.docks["trace"].windowTitle() == "Trace"
    assert win.session.analysis.trace is None  # hidden behind the summary tab: nothing traced yet
    win.actions["trace"].trigger()
    wait_idle(win)
    first = win.session.analysis.trace
    assert first is not None and win.trace.result is first
    assert first.config == win.session.config.to_dict()
    assert win.trace.on_screen()
    # an edit: the re-check's result starts a new, incremental trace while the panel is on screen
    name = win.session.layers[-1].name
    win.session.edit_layers([name], {"weight": {"bits": 2}})
    wait_idle(win)
    second = win.session.analysis.trace
    assert second is not first and win.trace.result is second and win.trace.previous is first
    assert second.recomputed["local"] == 1
    assert second.layer(name).local_sqnr_db < first.layer(name).local_sqnr_db
    # clicking a point selects the layer in the table
    _click_point(qtbot, win.trace, 1)
    assert win.table.current_name() == second.layers[1].name


def test_hidden_panel_catches_up_when_raised(qtbot, window, wait_idle):
    win = window
    win.actions["trace"].trigger()
    wait_idle(win)
    first = win.session.analysis.trace
    win.docks["histogram"].raise_()  # the Trace tab goes behind the histogram (its tab group)
    qtbot.waitUntil(lambda: not win.trace.on_screen())
    win.session.edit_layers([win.session.layers[0].name], {"weight": {"bits": 3}})
    wait_idle(win)
    assert win.session.analysis.trace is first and win.trace._stale  # nothing traced while hidden
    win.docks["trace"].raise_()
    qtbot.waitUntil(lambda: win.session.analysis.trace is not first)
    wait_idle(win)
    assert win.trace.result is win.session.analysis.trace
    assert win.trace.result.config == win.session.config.to_dict()



def test_legend_sits_above_the_curves(qtbot, demo_session):
    """The legend takes one row in the headroom above the float line: it hides no point (issue 13, look again)."""
    from quantviz.gui.views.trace import TraceView

    demo_session.prepare()
    w = TraceView()
    qtbot.addWidget(w)
    w.resize(760, 380)
    w.show()
    w.set_session(demo_session)
    demo_session.run_trace()
    qtbot.waitUntil(lambda: w.result is demo_session.analysis.trace)
    qtbot.wait(50)
    pi = w.plot.getPlotItem()
    box = pi.legend.sceneBoundingRect()
    for item in (w.acc_item, w.local_item):
        xs, ys = item.getData()
        for x, y in zip(xs, ys):
            p = pi.vb.mapViewToScene(QPointF(float(x), float(y)))
            assert not box.adjusted(-4, -4, 4, 4).contains(p), (x, y)
    line_y = pi.vb.mapViewToScene(QPointF(0.0, w._ceiling)).y()
    assert box.bottom() <= line_y + 2  # above the float line


def test_hover_names_the_format_and_the_algorithm(qtbot, session):
    """Issue 22 G: the hover said "W4" for an NVFP4 layer and left out the algorithm."""
    from quantviz.core.numerics.describe import describe_layer
    from quantviz.gui.views.trace import TraceView

    session.edit_layers(["2"], {"weight": {"format": "nvfp4", "bits": 4}})
    session.edit_layers(["0"], {"weight": {"format": "int", "bits": 4, "algorithm": "gptq"}})  # algorithms: int grids
    w = TraceView()
    qtbot.addWidget(w)
    w.set_session(session)
    session.run_trace()
    qtbot.waitUntil(lambda: w.result is session.analysis.trace)
    text = w.layer_text(1)
    assert "NVFP4 block 16" in text and "per-ch" not in text
    assert "gptq" in w.layer_text(0)
    assert describe_layer(session.spec("2"), "; ") in text  # the shared describer's words
    assert w.result.layers[1].to_dict()["setting"] == describe_layer(session.spec("2"), "; ")


class _SideBranch(nn.Module):
    """``side`` runs after ``a`` but nothing the model returns depends on it (as a BERT's pooler)."""

    def __init__(self):
        super().__init__()
        self.a, self.side, self.b = nn.Linear(6, 16), nn.Linear(16, 16), nn.Linear(16, 4)

    def forward(self, x):
        h = self.a(x)
        self.side(h)
        return self.b(torch.relu(h))


def test_model_output_point_is_the_rechecks_output_sqnr(qtbot):
    """#22: the trace's last point is the output the metrics read (the summary's SQNR), and a layer
    that does not feed it is drawn hollow and named, so its number is not read as the output's."""
    from quantviz.gui.views.trace import OUTPUT_LABEL, TraceView

    torch.manual_seed(0)
    m = _SideBranch().eval()
    x = torch.randn(40, 6)
    data = Dataset(x, m(x).argmax(1).detach())
    s = Session(ModelBundle(model=m, name="side", kind="recipe", reference="side", eval=data, calib=data),
                eval_data=data, calib_data=data, config=preset("W4"), batch_size=16)
    s.prepare()
    sqnr = s.check().metrics["sqnr_db"]
    w = TraceView()
    qtbot.addWidget(w)
    w.resize(700, 380)
    w.show()
    w.set_session(s)
    s.run_trace()
    qtbot.waitUntil(lambda: w.result is s.analysis.trace)
    assert w.result.names == ["a", "side", "b"] and w.output_x == 3
    ox, oy = w.out_item.getData()
    assert list(ox) == [3] and oy[0] == pytest.approx(sqnr, abs=1e-3)
    assert w.out_text.isVisible() and w.out_text.toPlainText() == OUTPUT_LABEL and w.out_text.pos().x() == 3
    ux, _uy = w.unused_item.getData()
    assert list(ux) == [1]
    assert f"{sqnr:.1f} dB" in w.info.text() and "Not feeding that output (hollow): side" in w.info.text()
    assert OUTPUT_LABEL in w.layer_text(3) and f"{sqnr:.1f} dB" in w.layer_text(3)
    assert "does not feed" in w.layer_text(1)
    ticks = w.plot.getPlotItem().getAxis("bottom")._tickLevels[0]
    assert (3, OUTPUT_LABEL) in ticks
    w.curve_combo.setCurrentIndex(w.curve_combo.findData("in"))  # input curves: no output point
    assert w.output_x is None and len(w.out_item.getData()[0]) == 0 and not w.out_text.isVisible()
    w.grab()
