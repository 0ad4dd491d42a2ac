"""Retake the docs' screenshots (docs/*.png) offscreen: ``python scripts/docs_shots.py [OUT_DIR]``.

* ``screenshot.png`` — the main window on the demo at 1280x800 (W8, as it opens);
* ``screenshot_1600.png`` — at 1600x1000 after an e2e sensitivity sweep, a search and a hand edit
  (the Sensitivity column filled, the Pareto tab shown beside the summary);
* ``histogram_drag.png`` — features.7 at 4 bits with a manual clip range.
"""
from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def _settle(app, win, seconds: float = 120.0) -> None:
    t0 = time.time()
    while time.time() - t0 < seconds:
        app.processEvents()
        time.sleep(0.02)
        if win.session is not None and not win.runner.busy() and not win._check_timer.isActive():
            break
    for _ in range(10):
        app.processEvents()


def main(out: str = "docs") -> int:
    import tempfile

    from PySide6.QtCore import QSettings

    from quantviz.gui.launch import create_app
    from quantviz.gui.main_window import MainWindow
    from quantviz.gui.views.histogram import HistogramPanel
    from quantviz.session import Session

    app = create_app()
    settings = QSettings(os.path.join(tempfile.mkdtemp(prefix="qv-shots-"), "s.ini"), QSettings.IniFormat)
    for size, name in (((1280, 800), "screenshot.png"), ((1600, 1000), "screenshot_1600.png")):
        win = MainWindow(settings=settings, restore=False)
        win.resize(*size)
        win.show()
        win.open_model("demo")
        _settle(app, win)
        if name == "screenshot_1600.png":
            s = win.session
            s.run_sensitivity("e2e")
            s.run_search(avg_bits=4.0, bits=(2, 4, 8))
            s.edit_layers(["classifier.1"], {"weight": {"bits": 4}}, "classifier.1 at 4 bits")
            _settle(app, win)
            win.docks["pareto"].raise_()
        win.table.select_layer("features.7")
        _settle(app, win)
        win.grab().save(os.path.join(out, name))
        win.unsaved.mark_clean()
        win.runner.shutdown()
        win.close()
    s = Session.open("demo")
    s.edit_layers(["features.7"], {"weight": {"bits": 4}})
    s.set_range("features.7", "weight", -0.22, 0.24)
    panel = HistogramPanel()
    panel.set_session(s)
    panel.resize(760, 520)
    panel.show_layer("features.7")
    panel.show()
    for _ in range(10):
        app.processEvents()
    panel.grab().save(os.path.join(out, "histogram_drag.png"))
    print("wrote", ", ".join(os.path.join(out, n) for n in ("screenshot.png", "screenshot_1600.png", "histogram_drag.png")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
