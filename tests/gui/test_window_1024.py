"""#22 §2: the docks needed about 1200 px (summary beside the analysis tabs, whose QAT panel asked
for 690 px), so on a 1024 x 768 screen the window's frame could not fit. Its minimum size (with a
model open and every analysis tab filled) fits 1024 x 768, frame included, and it opens inside it."""
from __future__ import annotations

from PySide6.QtCore import QRect

from quantviz.gui.main_window import MainWindow

SCREEN = (1024, 768)


def _fits(win) -> bool:
    dw, dh = MainWindow.FRAME_GUESS  # a window manager's borders and title bar
    hint = win.minimumSizeHint().expandedTo(win.minimumSize())
    return hint.width() + dw <= SCREEN[0] and hint.height() + dh <= SCREEN[1]


def test_the_minimum_size_fits_a_1024x768_screen(window, qtbot, wait_idle):
    win = window
    assert _fits(win), win.minimumSizeHint()
    for dock in win.docks.values():  # every tab raised once: its contents count in the minimum
        dock.raise_()
        qtbot.wait(1)
        win.layout().activate()
        assert _fits(win), (dock.objectName(), win.minimumSizeHint())
    win.raise_working_panels()


def test_the_window_opens_inside_a_1024x768_screen(qtbot, monkeypatch):
    monkeypatch.setattr(MainWindow, "_available", lambda self: QRect(0, 0, *SCREEN))
    win = MainWindow(restore=False)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    frame, avail = win.frameGeometry(), QRect(0, 0, *SCREEN)
    assert avail.contains(frame), (avail, frame)
    assert win.width() >= win.minimumSizeHint().width()  # not squeezed below what its docks need
    win.close()
