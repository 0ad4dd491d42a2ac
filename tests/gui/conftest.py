"""Qt test plumbing: offscreen platform, Qt warnings fail the test, no jobs left running,
settings in a temporary folder, and a main-window fixture."""
from __future__ import annotations

import os
import threading

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

# Noise from the offscreen platform plugin itself, not from our code.
IGNORED_QT_MESSAGES = ("propagateSizeHints", "This plugin does not support raise()", "QFont::setPointSize: Point size <= 0")


@pytest.fixture(autouse=True)
def qt_warnings_fail(qapp):
    """Any Qt warning / critical message during the test fails it."""
    from PySide6.QtCore import QtMsgType, qInstallMessageHandler

    seen: list[str] = []

    def handler(mode, context, message):
        if mode in (QtMsgType.QtWarningMsg, QtMsgType.QtCriticalMsg, QtMsgType.QtFatalMsg):
            if not any(s in message for s in IGNORED_QT_MESSAGES):
                if threading.current_thread() is not threading.main_thread() and len(seen) < 3:
                    import traceback  # name the Python code that made Qt complain off the GUI thread

                    message += f"\n  (on thread {threading.current_thread().name}, from:)\n" + "".join(
                        traceback.format_stack(limit=8))
                seen.append(message)

    previous = qInstallMessageHandler(handler)
    yield seen
    qInstallMessageHandler(previous)
    if seen:
        pytest.fail("Qt warnings during the test:\n" + "\n".join(seen))


@pytest.fixture(autouse=True)
def pyqtgraph_exceptions_fail():
    """An exception pyqtgraph swallows in a paint or mouse handler ("Ignored exception") fails the test.

    It once was the only visible sign of a stale PySide wrapper that later crashed the process."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    bad = [str(w.message) for w in caught
           if issubclass(w.category, RuntimeWarning) and "Ignored exception" in str(w.message)]
    if bad:
        pytest.fail("pyqtgraph swallowed an exception during the test:\n" + bad[0][-1500:])


@pytest.fixture(autouse=True)
def no_jobs_left_running(qapp):
    """A test that leaves a background job or a Python thread running fails."""
    before = set(threading.enumerate())
    yield
    from quantviz.gui.workers import all_runners

    left = [j.label for r in all_runners() for j in r.running()]
    for r in all_runners():
        r.shutdown(15000)
    new = [t for t in threading.enumerate()
           if t not in before and t.is_alive() and not t.daemon and not isinstance(t, threading._DummyThread)]
    if left:
        pytest.fail(f"the test left background jobs running: {left}")
    if new:
        pytest.fail(f"the test left threads running: {[t.name for t in new]}")


@pytest.fixture(autouse=True)
def settings_in_tmp(tmp_path, qapp):
    """QSettings (window layout, recent files) go to a per-test folder."""
    from PySide6.QtCore import QSettings

    QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, str(tmp_path / "settings"))
    qapp.setOrganizationName("quantviz-tests")
    qapp.setApplicationName("quantviz-tests")
    yield tmp_path / "settings"


@pytest.fixture(scope="session", autouse=True)
def _themed(qapp):
    from quantviz.gui.launch import create_app

    create_app()  # style sheet, pyqtgraph colours, torch threads


@pytest.fixture(scope="session")
def _calibrated_demo():
    """One calibrated demo for the whole run, never shown nor edited: the sessions the fixtures below
    hand out take a copy of its calibration and float reference (Session.prepare_like) instead of
    calibrating and running the float model again; each is otherwise freshly opened, and a test's
    edits stay in its own session."""
    from quantviz.session import Session

    return Session.open("demo")


def _fresh_demo(calibrated, **kw):
    from quantviz.session import Session

    s = Session.open("demo", prepare=False, **kw)
    s.prepare_like(calibrated)
    return s


@pytest.fixture
def demo_session(_calibrated_demo):
    return _fresh_demo(_calibrated_demo)


@pytest.fixture
def window(qtbot, _calibrated_demo):
    """A main window with the demo open, re-checked, and idle.

    It opens "demo" as the user does (File › Open: a background load, then the session is shown and
    re-checked); only the calibration and float reference come from one calibrated demo
    (:func:`_calibrated_demo`) instead of being computed again for every test."""
    from quantviz.gui.main_window import MainWindow
    from quantviz.session import Session

    real_open = Session.open.__func__

    def open_demo(cls, reference, **kw):
        if reference != "demo" or kw.get("prepare", True) or kw.get("data") or kw.get("calib"):
            return real_open(cls, reference, **kw)
        s = real_open(cls, reference, **kw)
        s.prepare_like(_calibrated_demo)
        return s

    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    with pytest.MonkeyPatch.context() as mp:  # for this open only: the test's own opens are the app's
        mp.setattr(Session, "open", classmethod(open_demo))
        win.open_model("demo")
        _wait_idle(qtbot, win)
    assert win.session is not None, win.last_error
    assert win.session.prepared and win.session.results, "the demo was not opened and re-checked"
    yield win
    win.unsaved.mark_clean()  # a test's edits are not work to keep: close without the question
    win.close()


@pytest.fixture
def wait_idle(qtbot):
    """``wait_idle(win)``: block (running the event loop) until the window is idle."""
    return lambda win, timeout=30000: _wait_idle(qtbot, win, timeout)


def _wait_idle(qtbot, win, timeout: int = 30000) -> None:
    """Wait until no job runs or is about to start (debounced re-check, layer statistics)."""
    def idle():
        return (not win.runner.busy() and not win._check_timer.isActive()
                and not win.table.model._flush_timer.isActive())

    qtbot.waitUntil(idle, timeout=timeout)
