"""The QAT panel: a live run through the job runner (curves grow, pause holds it,
the result becomes the session state and stays as the panel's curves), and cancel."""
import pytest
import torch
from torch import nn

from quantviz.core.model.data import Dataset
from quantviz.core.training.qat import QATOptions
from quantviz.core.sources.base import ModelBundle
from quantviz.io.config import preset
from quantviz.session import Session


def _session():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    x = torch.randn(96, 6)
    with torch.no_grad():
        y = m(x).argmax(1)
    data = Dataset(x, y)
    s = Session(ModelBundle(model=m, name="mlp", kind="recipe", reference="mlp", eval=data, calib=data, train=data),
                eval_data=data, calib_data=data, config=preset("W2"), batch_size=32)
    s.prepare()
    return s


@pytest.fixture
def view(qtbot):
    from quantviz.gui.views.qat import QATView
    from quantviz.gui.workers import JobRunner

    runner = JobRunner()
    w = QATView()
    qtbot.addWidget(w)
    w.set_runner(runner)
    w.show()
    qtbot.waitExposed(w)
    yield w
    runner.cancel()
    runner.shutdown()


def test_live_run_pause_and_result(qtbot, view):
    s = _session()
    view.set_session(s)
    view.select_layer("2")
    view.start(QATOptions(steps=40, lr=3e-3, log_every=2, eval_every=10), paused=True)
    qtbot.wait(300)
    assert view._curves["step"] == [] and s.analysis.qat is None
    assert view.pause_btn.text() == "Resume"
    view.toggle_pause()  # resume
    qtbot.waitUntil(lambda: s.analysis.qat is not None and view._job is None, timeout=60000)
    assert view.loss_item.getData()[0] is not None and len(view.loss_item.getData()[0]) == 40
    assert len(view.changed_item.getData()[0]) > 5
    assert s.weights_tag == "qat-1" and s.history.undo_label.startswith("QAT")
    assert "Last run" in view.status.text()
    # the histogram shows the trained weights of the chosen layer
    xs, counts = view.hist_item.getData()
    assert counts.sum() == s.sim.float_weight("2").numel()
    # the curves stay in the session: a new panel shows them
    from quantviz.gui.views.qat import QATView

    other = QATView()
    qtbot.addWidget(other)
    other.set_session(s)
    assert len(other.loss_item.getData()[0]) == 40


def test_cancel_leaves_the_session_unchanged(qtbot, view):
    s = _session()
    view.set_session(s)
    cfg = s.config.to_dict()
    view.start(QATOptions(steps=100000, lr=1e-3))
    qtbot.waitUntil(lambda: len(view._curves["step"]) >= 3, timeout=60000)
    view.cancel()
    qtbot.waitUntil(lambda: view._job is None, timeout=60000)
    assert "cancelled" in view.status.text()
    assert s.config.to_dict() == cfg and s.analysis.qat is None and not s.history.can_undo


def test_weight_histogram_waits_until_shown_and_samples_a_big_layer(qtbot):
    """Hidden (a tab behind another), the panel computes no histogram; shown, it draws one from at
    most MAX_HIST_SAMPLES strided weights, scaled back to the layer's count (a 1.1B model's
    embedding took 4 s of the GUI thread on every load before)."""
    from quantviz.core.numerics.preview import MAX_HIST_SAMPLES
    from quantviz.gui.views.qat import QATView

    torch.manual_seed(0)
    m = nn.Sequential(nn.Embedding(3000, 700), nn.Linear(700, 4)).eval()
    x = torch.randint(0, 3000, (16, 5))
    data = Dataset(x, None)
    s = Session(ModelBundle(model=m, name="emb", kind="recipe", reference="emb", eval=data, calib=data),
                eval_data=data, calib_data=data, config=preset("W8"), batch_size=8)
    w = QATView()
    qtbot.addWidget(w)
    w.set_session(s)  # not shown: nothing drawn yet
    assert w.hist_item.getData()[1] is None and w._hist_pending == "0"
    w.show()
    qtbot.waitExposed(w)
    qtbot.waitUntil(lambda: w.hist_item.getData()[1] is not None, timeout=2000)
    counts = w.hist_item.getData()[1]
    numel = s.sim.float_weight("0").numel()
    stride = -(-numel // MAX_HIST_SAMPLES)
    assert stride > 1 and counts.sum() == stride * len(range(0, numel, stride))
    from quantviz.core.fmt import every_nth

    assert every_nth(stride, "weight") in w.hist_plot.getPlotItem().titleLabel.text


def test_a_flood_of_steps_is_drawn_in_a_few_redraws(qtbot, view, monkeypatch):
    """Thousands of step reports (a small model trains fast) are coalesced into a few redraws,
    so the GUI thread keeps up and the user's clicks (Cancel) are handled."""
    s = _session()
    view.set_session(s)
    view.start(QATOptions(steps=40, lr=1e-3), paused=True)
    from quantviz.core.training.qat import new_curves

    view._curves = new_curves(None, s.layer_names)
    redraws = []
    real = view._redraw
    monkeypatch.setattr(view, "_redraw", lambda: (redraws.append(1), real()))
    view._redraw_timer.timeout.disconnect()
    view._redraw_timer.timeout.connect(view._redraw)
    for step in range(1, 2001):
        view.stepReported.emit({"step": step, "steps": 2000, "loss": 1.0 / step})
    qtbot.waitUntil(lambda: not view._redraw_timer.isActive(), timeout=10000)
    assert len(view._curves["step"]) == 2000  # every step is kept...
    assert 1 <= len(redraws) <= 5  # ...and drawn in a few redraws, not 2000
    assert len(view.loss_item.getData()[0]) == 2000
    view.cancel()
    qtbot.waitUntil(lambda: view._job is None, timeout=60000)
