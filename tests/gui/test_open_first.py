"""The app shows a model's table and weight histograms before calibration has run (issue #16:
a 1B-parameter model's forward passes take minutes)."""
import threading

from quantviz.session import Session


def test_table_and_histogram_show_before_calibration_completes(qtbot, monkeypatch, wait_idle):
    from quantviz.gui.main_window import MainWindow

    gate = threading.Event()
    real_prepare = Session.prepare

    def slow_prepare(self, **kw):  # calibration held until the test has looked
        assert gate.wait(60)
        return real_prepare(self, **kw)

    monkeypatch.setattr(Session, "prepare", slow_prepare)
    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    try:
        win.open_model("demo")
        qtbot.waitUntil(lambda: win.session is not None, timeout=30000)
        s = win.session
        assert not s.prepared  # calibration is still waiting
        assert win.table.model.rowCount() == len(s.layers) > 0
        name = s.layers[1].name
        win.table.select_layer(name)
        qtbot.waitUntil(lambda: win.histogram.layer == name, timeout=10000)
        assert win.histogram._config_preview.get("weight") is not None  # the weight histogram is drawn
        assert win.histogram.stats_text("weight")
        gate.set()
        qtbot.waitUntil(lambda: bool(s.prepared and s.results), timeout=60000)  # then the re-check follows
        wait_idle(win)
        assert win.summary.current is not None
    finally:
        gate.set()
        win.unsaved.mark_clean()
        win.close()
