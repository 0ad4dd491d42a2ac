"""Starting the app: QApplication, theme, settings, threads, screenshot mode.

``run(...)`` is what ``quantviz gui`` calls. With ``screenshot`` it loads and
evaluates synchronously, selects the most interesting layer (lowest weight
SQNR), renders the main window to a PNG and returns without an event loop.
"""
from __future__ import annotations

import os
import sys

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

ORG = "quantviz"
APP = "quantviz"


def make_settings() -> QSettings:
    """The app's persistent settings (an INI file; tests redirect it with QSettings.setPath)."""
    return QSettings(QSettings.IniFormat, QSettings.UserScope, ORG, APP)


def set_torch_threads() -> int:
    """Leave a core for the GUI thread: evaluation gets all cores but one."""
    import torch

    n = max(1, (os.cpu_count() or 2) - 1)
    torch.set_num_threads(n)
    return n


def create_app(argv: list[str] | None = None, threads: int | None = None) -> QApplication:
    from . import gcguard
    from .theme import apply_theme

    app = QApplication.instance()
    if app is None:
        app = QApplication(list(argv) if argv is not None else sys.argv[:1])
    app.setOrganizationName(ORG)
    app.setApplicationName(APP)
    apply_theme(app)
    gcguard.install(app)  # cyclic garbage (which may hold Qt objects) is collected on this thread only
    if threads:
        import torch

        torch.set_num_threads(threads)
    else:
        set_torch_threads()
    return app


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
    from .main_window import MainWindow
    from .views.layer_model import compute_stats

    create_app(threads=threads)
    cfg = load_config(config) if config else None
    session = Session.open(model, data=data, config=cfg, trust=trust)
    session.check(label=cfg.name if cfg is not None and cfg.name else "current config")
    win = MainWindow(settings=settings if settings is not None else _scratch_settings(), restore=False)
    win.resize(*size)
    win.set_session(session)
    win.table.model.add_stats(compute_stats(session, list(session.specs.items())))
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
    from .main_window import MainWindow

    app = create_app(threads=threads)
    win = MainWindow()
    if size:
        win.resize(*parse_size(size))
    win.show()
    win.open_model(model or "demo", data=data, config=config, trust=trust)
    from .safety import offer_recovery

    offer_recovery(win)  # the last run was killed: offer its autosaved session
    return app.exec()


def smoke_quit(app) -> None:
    """With $QUANTVIZ_SMOKE_MS set, quit the event loop after that many ms (tests)."""
    ms = os.environ.get("QUANTVIZ_SMOKE_MS")
    if ms:
        from PySide6.QtCore import QTimer

        QTimer.singleShot(int(ms), app.quit)


def standalone(build, session=None) -> int:
    """Run one widget alone on the demo: ``build(session) -> QWidget``."""
    from ..session import Session

    app = create_app()
    if session is None:
        args = [a for a in sys.argv[1:] if not a.startswith("-")]
        session = Session.open(args[0] if args else "demo")
    w = build(session)
    w.show()
    smoke_quit(app)
    app.exec()
    runner = getattr(w, "runner", None)
    if runner is not None:
        runner.shutdown()
    w.close()
    return 0
