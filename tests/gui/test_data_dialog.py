"""#22 item 6: a model without data opens through a data dialog (evaluation data, calibration
data, sequence length), remembered per model and reachable later as File › Data…."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@pytest.fixture
def folder(tmp_path):
    from models.fixtures import tiny_gpt2, token_npz

    f = tiny_gpt2(tmp_path / "gpt2")
    return f, token_npz(tmp_path / "eval.npz", n=8, seq=16, seed=1), token_npz(tmp_path / "calib.npz", n=8, seq=16, seed=2)


def _dialog(win, qtbot):
    from PySide6.QtWidgets import QDialog

    def shown():
        return [d for d in win.findChildren(QDialog, "dataDialog") if d.isVisible()]

    qtbot.waitUntil(lambda: len(shown()) == 1, timeout=60000)
    return shown()[0]


def test_a_folder_without_data_asks_for_it_and_remembers(qtbot, folder, wait_idle):
    from PySide6.QtWidgets import QDialogButtonBox

    from quantviz.gui.main_window import MainWindow

    model, eval_npz, calib_npz = folder
    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    win.open_model(str(model))
    box = _dialog(win, qtbot)
    assert "carries no data" in box.intro.text()
    assert win.session is None and "no data" not in win.error_label.text()  # asked, not an error
    box.buttons.button(QDialogButtonBox.Ok).click()  # nothing chosen: said so, the dialog stays
    assert box.isVisible() and "Choose the evaluation data" in box.error.text()
    box.data.edit.setText(str(eval_npz))
    box.calib.edit.setText(str(calib_npz))
    box.seq_len.setValue(16)
    box.buttons.button(QDialogButtonBox.Ok).click()
    wait_idle(win, 120000)
    s = win.session
    assert s is not None, win.last_error
    assert s.data_ref == str(eval_npz) and s.calib_ref == str(calib_npz) and s.seq_len == 16
    assert "perplexity" in s.reference.metrics
    # File › Data… shows what is in use; choosing other data reopens the model with the config kept
    s.edit_layers([s.layer_names[0]], {"weight": {"bits": 4}})
    win.actions["data"].trigger()
    box2 = _dialog(win, qtbot)
    assert box2.data.edit.text() == str(eval_npz) and box2.seq_len.value() == 16
    box2.calib.edit.setText("")
    box2.buttons.button(QDialogButtonBox.Ok).click()
    from PySide6.QtWidgets import QMessageBox

    qtbot.waitUntil(lambda: win.findChild(QMessageBox, "unsavedDialog") is not None, timeout=5000)
    win.findChild(QMessageBox, "unsavedDialog").button(QMessageBox.Discard).click()
    qtbot.waitUntil(lambda: win.session is not s, timeout=60000)
    wait_idle(win, 120000)
    s2 = win.session
    assert s2.calib_ref is None and s2.spec(s2.layer_names[0]).weight.bits == 4  # config kept
    # a new window (next start) fills the dialog with what was chosen for this model
    other = MainWindow()
    qtbot.addWidget(other)
    other.open_model(str(model))
    box3 = _dialog(other, qtbot)
    assert box3.data.edit.text() == str(eval_npz) and box3.calib.edit.text() == ""
    box3.reject()
    for w in (win, other):
        w.unsaved.mark_clean()
        w.close()


def test_a_missing_data_file_is_named_in_the_dialog(qtbot, folder, tmp_path):
    from quantviz.gui.data_dialog import DataDialog

    model, eval_npz, _ = folder
    box = DataDialog(str(model))
    qtbot.addWidget(box)
    box.data.edit.setText(str(tmp_path / "missing.npz"))
    box._on_ok()
    assert "no such file or folder" in box.error.text() and "missing.npz" in box.error.text()
    assert box.result() == 0
