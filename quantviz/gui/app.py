"""Starting the app: the main window on a model, or a screenshot of it.

``run(...)`` is what ``quantviz gui`` calls (through :func:`quantviz.gui.start`). With ``screenshot`` it loads and
evaluates synchronously, selects the most interesting layer (lowest weight
SQNR), renders the main window to a PNG and returns without an event loop.
"""
from __future__ import annotations

import os

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

from .launch import create_app
from .main_window import MainWindow


def parse_size(text: str | None) -> tuple[int, int]:
    from ..core.errors import QuantvizError

    if not text:
        return 1280, 800
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise QuantvizError(f"--size: expected WIDTHxHEIGHT like 1280x800, got {text!r}") from None
    if not (640 <= w <= 7680 and 480 <= h <= 4320):
        raise QuantvizError(f"--size: {w}x{h} is outside 640x480..7680x4320")
    return w, h


def screenshot(model: str, out: str, *, data=None, config=None, trust=False, size=(1280, 800), settings=None,
               threads: int | None = None) -> str:
    """Load, evaluate, select the weakest layer and render the window to ``out``."""
    from ..io import atomic
    from ..io.config import load_config
    from ..session import Session
    from ..session.stats import layer_stats

    create_app(threads=threads)
    from ..io.config import NeedsModel

    try:
        cfg = load_config(config) if config else None
    except NeedsModel:
        cfg = None
    session = Session.open(model, data=data, config=cfg, trust=trust)
    if config and cfg is None:
        cfg = session.load_config_file(config)
        session.set_config(cfg, f"import {config}")
    session.check(label=cfg.name if cfg is not None and cfg.name else "current config")
    win = MainWindow(settings=settings if settings is not None else _scratch_settings(), restore=False)
    win.resize(*size)
    win.set_session(session)
    win.table.model.add_stats(layer_stats(session, list(session.specs.items())))
    win.table.select_layer(win.most_interesting_layer() or session.layers[0].name)
    win.show()
    app = QApplication.instance()
    for _ in range(5):
        app.processEvents()
    image = win.grab().toImage()
    with atomic.atomic_path(out, force=True) as tmp:
        if not image.save(str(tmp), "PNG"):
            raise OSError(f"{out}: could not write the PNG")
    win.runner.shutdown()
    win.close()
    return out


def _scratch_settings() -> QSettings:
    import tempfile

    path = os.path.join(tempfile.mkdtemp(prefix="quantviz-shot-"), "settings.ini")
    return QSettings(path, QSettings.IniFormat)


def run(model: str | None = None, *, data=None, config=None, trust=False, screenshot_path=None, size=None,
        threads: int | None = None) -> int:
    """The ``quantviz gui`` entry point; returns the exit status."""
    if screenshot_path:
        screenshot(model or "demo", screenshot_path, data=data, config=config, trust=trust, size=parse_size(size),
                   threads=threads)
        print(screenshot_path)
        return 0
    app = create_app(threads=threads)
    win = MainWindow()
    win.echo_errors = True  # a failed open also prints its one line on stderr
    if size:
        win.resize(*parse_size(size))
    win.show()
    win.open_model(model or "demo", data=data, config=config, trust=trust)
    from .safety import offer_recovery

    offer_recovery(win)  # the last run was killed: offer its autosaved session
    from .launch import smoke_quit

    smoke_quit(app)  # tests: quit after $QUANTVIZ_SMOKE_MS
    return app.exec()
