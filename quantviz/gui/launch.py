"""The app's launch pieces that every window and view shares: the QApplication
(theme, garbage-collection guard, torch threads), the persistent settings, and
:func:`standalone`, which shows one widget alone on the demo.

It imports no window or view, so views can use it without an import circle.
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


__all__ = ["create_app", "make_settings", "set_torch_threads", "smoke_quit", "standalone"]
