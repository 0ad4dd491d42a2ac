"""The app's safety nets (quantviz.gui.safety): the recipe question, autosave, recovery after SIGKILL.

The main window may or may not have the safety nets wired in yet (see the
reliability report); the tests attach them the way the window does
(``AutosaveController(win)``; ``ask_recipe`` before ``open_model``), so they
test the same code either way.
"""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import select  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from corpus import good_data, write_recipe  # noqa: E402

pytest.importorskip("pytestqt")
REPO = Path(__file__).resolve().parents[2]


def _wait_idle(qtbot, win, timeout=60000):
    qtbot.waitUntil(lambda: not win.runner.busy() and not win._check_timer.isActive()
                    and not win.table.model._flush_timer.isActive(), timeout=timeout)


@pytest.fixture
def win(qtbot, tmp_path):
    from PySide6.QtCore import QSettings

    from quantviz.gui.main_window import MainWindow

    QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, str(tmp_path / "settings"))
    from quantviz.gui.safety import AutosaveController

    w = MainWindow(restore=False)
    if getattr(w, "autosave", None) is None:
        w.autosave = AutosaveController(w)
    qtbot.addWidget(w)
    w.show()
    yield w
    w.runner.shutdown(15000)
    w.unsaved.mark_clean()  # the tests' edits are not work to keep
    w.close()


def open_guarded(win, reference: str) -> None:
    """Open as the app does: a recipe the user has not agreed to run is asked about first."""
    from quantviz.gui import safety

    if safety.needs_recipe_question(reference):
        safety.ask_recipe(win, reference, lambda: win.open_model(reference))
    else:
        win.open_model(reference)


@pytest.fixture
def recipe(tmp_path):
    """A working recipe that leaves a marker when its code runs."""
    r = write_recipe(tmp_path / "net.py")
    marker = tmp_path / "ran"
    r.write_text(f"from pathlib import Path\nPath({str(marker)!r}).touch()\n" + r.read_text())
    return r, marker


def test_recipe_runs_only_after_the_user_agrees_and_the_answer_is_remembered(win, qtbot, recipe):
    from PySide6.QtWidgets import QMessageBox

    from quantviz.session.trust import TrustStore

    r, marker = recipe
    win._recipe_box = None
    open_guarded(win, str(r))
    box = win._recipe_box
    assert box.objectName() == "recipeTrustDialog" and box.isVisible()
    assert "net.py" in box.informativeText() and "runs its code" in box.informativeText()
    box.button(QMessageBox.No).click()
    _wait_idle(qtbot, win)
    assert not marker.exists() and win.session is None
    assert "declined" in win.error_label.text()
    assert not TrustStore().is_trusted(r)

    open_guarded(win, str(r))
    win._recipe_box.button(QMessageBox.Yes).click()
    _wait_idle(qtbot, win)
    assert marker.exists() and win.session is not None
    assert TrustStore().is_trusted(r)

    marker.unlink()
    win._recipe_box = None
    open_guarded(win, str(r))  # known hash: no question
    _wait_idle(qtbot, win)
    assert win._recipe_box is None and marker.exists()

    r.write_text(r.read_text() + "\n# edited\n")  # a changed file is asked about again
    open_guarded(win, str(r))
    assert win._recipe_box is not None and win._recipe_box.isVisible()
    win._recipe_box.button(QMessageBox.No).click()


def test_autosave_after_edits_and_a_close_that_discards_removes_it(win, qtbot, recipe):
    from quantviz.session import autosave
    from quantviz.session.trust import TrustStore

    r, _ = recipe
    TrustStore().trust(r)
    win.open_model(str(r))
    _wait_idle(qtbot, win)
    path = autosave.recovery_path()
    assert not path.exists()  # opening is not an edit
    s = win.session
    s.edit_layers([s.layer_names[1]], {"weight": {"bits": 5}})
    qtbot.waitUntil(path.exists, timeout=10000)
    saved = autosave.load_recovery(path)
    assert saved["config"]["layers"][s.layer_names[1]]["weight"]["bits"] == 5
    _wait_idle(qtbot, win)
    from PySide6.QtWidgets import QMessageBox

    win.close()  # unsaved work: the close asks first, and the recovery file stays until answered
    qtbot.waitUntil(lambda: getattr(win, "_unsaved_box", None) is not None and win._unsaved_box.isVisible())
    assert path.exists() and win.isVisible()
    win._unsaved_box.button(QMessageBox.Discard).click()  # knowingly discarded: a clean close
    assert not path.exists()



def test_a_sensitivity_result_alone_is_autosaved_in_the_app(win, qtbot, recipe):
    """No edit after the sweep: the sweep's own event makes the app write the recovery file."""
    from quantviz.gui import analysis
    from quantviz.session import autosave
    from quantviz.session.trust import TrustStore

    r, _ = recipe
    TrustStore().trust(r)
    win.open_model(str(r))
    _wait_idle(qtbot, win)
    path = autosave.recovery_path()
    assert not path.exists()
    analysis.run_sensitivity(win, "local")
    qtbot.waitUntil(path.exists, timeout=60000)
    saved = autosave.load_recovery(path)
    assert saved["analysis"]["sensitivity"]["local"]["method"] == "local"
    assert saved["config"]["layers"] == {}  # nothing was edited
    _wait_idle(qtbot, win)


CHILD = textwrap.dedent("""
    import sys
    from PySide6.QtCore import QTimer
    from quantviz.gui.launch import create_app
    from quantviz.gui.main_window import MainWindow
    from quantviz.gui.safety import AutosaveController
    from quantviz.session.trust import TrustStore

    TrustStore().trust(sys.argv[1])
    app = create_app(threads=1)
    win = MainWindow(restore=False)
    if getattr(win, "autosave", None) is None:
        win.autosave = AutosaveController(win)
    win.show()
    win.open_model(sys.argv[1], data=sys.argv[2])
    step = [0]

    def tick():
        s = win.session
        if s is None or win.runner.busy():
            return
        if step[0] < 3:
            s.edit_layers([s.layer_names[step[0] % 2]], {"weight": {"bits": [6, 4, 3][step[0]]}})
            step[0] += 1
        elif step[0] == 3 and not win.autosave.timer.isActive() and not win.autosave.saver.dirty:
            print("autosaved", flush=True)
            step[0] = 4

    t = QTimer()
    t.timeout.connect(tick)
    t.start(100)
    app.exec()
""")


def test_app_killed_with_sigkill_offers_recovery_with_every_autosaved_edit(win, qtbot, tmp_path):
    from PySide6.QtWidgets import QMessageBox

    from quantviz.gui import safety
    from quantviz.session import autosave

    r = write_recipe(tmp_path / "mlp.py")
    data = good_data(tmp_path / "mlp.npz")
    env = dict(os.environ, PYTHONPATH=str(REPO), QT_QPA_PLATFORM="offscreen")
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(r), str(data)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 150)  # the child prints once it autosaved
        line = proc.stdout.readline() if ready else ""
        if line.strip() != "autosaved":
            proc.kill()
            pytest.fail(f"the app did not autosave: {line!r} {proc.stderr.read()[-2000:]}")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    found = autosave.find_recovery()
    assert len(found) == 1 and found[0].pid == proc.pid and found[0].edits == 3

    assert win.session is None
    box = safety.offer_recovery(win)  # what the app does at start
    assert box is not None and box.objectName() == "recoveryDialog" and "mlp.py" in box.informativeText()
    box.button(QMessageBox.Yes).click()
    _wait_idle(qtbot, win)
    s = win.session
    assert s is not None, win.last_error
    assert [s.spec(n).weight.bits for n in s.layer_names] == [3, 4]
    assert autosave.find_recovery() == []  # recovered: the dead process's file is gone
    assert safety.offer_recovery(win) is None
    dead = autosave.recovery_path(proc.pid)
    assert not list(dead.parent.glob(f"{dead.stem}*"))  # nor anything next to it (trained weights)
    # the recovered work is unsaved work: marked in the title, asked about on quit, autosaved by this process
    assert win.unsaved.dirty and win.isWindowModified() and "recovered work" in win.unsaved.describe()
    assert win.session_path is None  # Save asks for a file name: the recovery file is not the user's
    from quantviz.gui import menus

    assert not any("session-" in r for r in menus.recent(win))  # nor is it a recent file
    mine = autosave.find_recovery(include_live=True)
    assert [f.pid for f in mine] == [os.getpid()] and mine[0].edits == 3
    win.close()
    qtbot.waitUntil(lambda: win.findChild(QMessageBox, "unsavedDialog") is not None, timeout=5000)
    assert win.isVisible() and autosave.find_recovery(include_live=True)  # asked first; nothing deleted yet
    win.findChild(QMessageBox, "unsavedDialog").button(QMessageBox.Cancel).click()
    win.unsaved.mark_clean()
