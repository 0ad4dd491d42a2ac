"""The app as it is used all day (issue 13): round trips, unsaved work, errors that cannot be missed."""
from __future__ import annotations

import subprocess
import sys

from PySide6.QtWidgets import QMessageBox


def _answer(qtbot, win, button):
    """Answer the unsaved-work question with ``button`` (it is non-blocking)."""
    qtbot.waitUntil(lambda: getattr(win, "_unsaved_box", None) is not None and win._unsaved_box.isVisible())
    box = win._unsaved_box
    win._unsaved_box = None
    box.button(button).click()


# ---------------------------------------------------------------- 1: round trips
def test_every_file_the_app_writes_imports_as_a_config(window, tmp_path, qtbot, wait_idle):
    s = window.session
    name = s.layers[1].name
    window.table.apply_field("weight_bits", 5, [name])
    for fmt, suffix in (("json", ".json"), ("aimet", ".encodings")):
        s.export(fmt, tmp_path / f"x{suffix}", force=True)
    s.save(tmp_path / "x.qvs")
    for f in ("x.json", "x.encodings", "x.qvs"):
        window.undo()
        assert s.spec(name).weight.bits == 8
        assert window.import_config(str(tmp_path / f)), window.last_error
        assert s.spec(name).weight.bits == 5, f
    wait_idle(window)


# ---------------------------------------------------------------- 3: regex filter
def test_regex_filter_as_documented_and_bad_regex_says_why(window):
    t = window.table
    t.filter_edit.setText("/classifier/")
    assert t.proxy.rowCount() == 2
    t.filter_edit.setText(r"/features\.\d/")
    assert t.proxy.rowCount() == 3
    t.filter_edit.setText(r"/\D$/")  # not lower-cased into \d
    assert t.proxy.rowCount() == 0
    t.filter_edit.setText("/CLASSIFIER")  # case-insensitive, closing slash optional
    assert t.proxy.rowCount() == 2
    t.filter_edit.setText("/features[/")
    assert t.filter_error.isVisible() and "invalid regex" in t.filter_error.text()
    t.filter_edit.setText("Features.0")
    assert t.proxy.rowCount() == 1 and not t.filter_error.isVisible()


# ---------------------------------------------------------------- 5: unsaved work
def test_edits_mark_the_title_and_quit_asks(window, qtbot, tmp_path, wait_idle):
    s = window.session
    assert not window.isWindowModified()
    window.table.apply_field("weight_bits", 4, [s.layers[0].name])
    assert window.isWindowModified() and window.unsaved.dirty
    wait_idle(window)
    window.autosave.flush()
    recovery = window.autosave.saver.path
    assert recovery is not None and recovery.exists()
    window.close()
    _answer(qtbot, window, QMessageBox.Cancel)
    assert window.isVisible() and recovery.exists()  # cancelled: nothing closed, nothing deleted
    window.close()
    window.session_path = str(tmp_path / "kept.qvs")
    _answer(qtbot, window, QMessageBox.Save)
    qtbot.waitUntil(lambda: not window.isVisible())
    assert (tmp_path / "kept.qvs").exists()
    assert not recovery.exists()  # saved, then a clean close removes the recovery file


def test_undo_back_to_the_saved_config_is_clean(window):
    s = window.session
    window.table.apply_field("weight_bits", 4, [s.layers[0].name])
    assert window.unsaved.dirty
    window.undo()
    assert not window.unsaved.dirty and not window.isWindowModified()


def test_open_asks_and_discard_opens(window, qtbot, wait_idle):
    s = window.session
    window.table.apply_field("weight_bits", 4, [s.layers[0].name])
    window.open_path("demo")
    _answer(qtbot, window, QMessageBox.Cancel)
    wait_idle(window)
    assert window.session is s
    window.open_path("demo")
    _answer(qtbot, window, QMessageBox.Discard)
    wait_idle(window)
    assert window.session is not s and not window.unsaved.dirty


def test_a_sensitivity_result_alone_is_unsaved_work(window, wait_idle):
    from quantviz.gui import analysis

    analysis.run_sensitivity(window, "local")
    wait_idle(window, 120000)
    assert window.unsaved.dirty and "sensitivity" in window.unsaved.describe()


# ---------------------------------------------------------------- 6: errors
def test_failed_open_is_a_dialog_with_the_name_once(window, tmp_path, wait_idle):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    window.open_model(str(bad))
    wait_idle(window)
    line = window.error_label.text()
    assert line.startswith("Could not open bad.pt: ") and line.count("bad.pt") == 1, line
    assert window._error_dialog is not None and window._error_dialog.isVisible()
    window._error_dialog.close()


def test_cli_gui_with_a_bad_model_prints_the_error(tmp_path):
    import os

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", QUANTVIZ_SMOKE_MS="4000",
               XDG_CONFIG_HOME=str(tmp_path / "cfg"), QUANTVIZ_DATA_DIR=str(tmp_path / "data"))
    r = subprocess.run([sys.executable, "-m", "quantviz", "gui", str(bad)], capture_output=True, text=True,
                       env=env, timeout=300)
    lines = [l for l in r.stderr.splitlines() if l.startswith("quantviz: error:")]
    assert lines and "bad.pt" in lines[0] and lines[0].count("bad.pt") == 1, r.stderr
