"""A one-line label whose text never widens its window.

A plain ``QLabel`` asks its layout for the width of its whole text, so a long
hover line or status message pushes a main window past the screen. An
:class:`ElidedLabel` asks for little, draws as much as fits with an ellipsis
(at the end, or in the middle for names whose start and end both matter),
and puts the whole text in its tooltip while it is cut. ``text()`` is always
the whole text.
"""
from __future__ import annotations

import re

from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import QLabel, QSizePolicy

_TAG = re.compile(r"<[^>]+>")


class ElidedLabel(QLabel):
    """A single-line label that elides instead of growing (plain text; simple tags are dropped)."""

    def __init__(self, text: str = "", parent=None, *, middle: bool = False):
        super().__init__(parent)
        self._full = ""
        self._own_tip = ""
        self._mode = Qt.TextElideMode.ElideMiddle if middle else Qt.TextElideMode.ElideRight
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setWordWrap(False)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)  # shrinks to minimumSizeHint
        self.setText(text)

    # the whole text, whatever is shown
    def text(self) -> str:  # noqa: D401 - Qt naming
        return self._full

    def setText(self, text: str) -> None:  # noqa: N802 - Qt naming
        self._full = _TAG.sub("", str(text or "")).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
        self._refresh()

    def clear(self) -> None:
        self.setText("")

    def displayed_text(self) -> str:
        """What is drawn now (the text, or its elided form)."""
        return super().text()

    def setToolTip(self, tip: str) -> None:  # noqa: N802 - Qt naming
        self._own_tip = tip or ""
        self._refresh()

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt naming
        h = super().minimumSizeHint().height()
        return QSize(self.fontMetrics().horizontalAdvance("M…M"), h)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt naming
        h = super().sizeHint().height()
        m = self.contentsMargins()  # a style sheet's padding lives here
        frame = m.left() + m.right() + 2 * max(0, self.margin()) + 4
        return QSize(min(self.fontMetrics().horizontalAdvance(self._full) + frame, 480 + frame), h)

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt naming
        super().resizeEvent(event)
        self._refresh()

    def _refresh(self) -> None:
        room = max(0, self.contentsRect().width() - 2 * max(0, self.margin()))
        shown = self.fontMetrics().elidedText(self._full, self._mode, room) if self._full else ""
        if shown != super().text():
            QLabel.setText(self, shown)
        QLabel.setToolTip(self, self._full if shown != self._full else self._own_tip)


__all__ = ["ElidedLabel"]


def elide_layer_name(name: str, fits) -> str:
    """The shortest honest form of a dotted layer name that ``fits(text) -> bool``.

    Module paths repeat their tails across blocks (``…intermediate.dense`` five times in a
    transformer), so the last number (the block index) is kept while the parts before it go
    from the left: ``encoder.layer.3.intermediate.dense`` becomes ``…layer.3.intermediate.dense``,
    then ``…3.intermediate.dense``; then the tail after the number loses characters in its
    middle (``…3.interm…e.dense``), keeping its end.
    """
    if fits(name):
        return name
    parts = name.split(".")
    nums = [i for i, p in enumerate(parts) if p.isdigit()]
    last_num = nums[-1] if nums else 0
    for k in range(1, min(last_num, len(parts) - 1) + 1):
        text = "…" + ".".join(parts[k:])
        if fits(text):
            return text
    head = "…" + (parts[last_num] + "." if nums else "")
    tail = ".".join(parts[last_num + 1:]) if nums else name
    for keep in range(len(tail) - 1, 1, -1):
        back = max(1, (keep * 3) // 5)  # the end of a name says more than its start
        text = head + tail[:keep - back] + "…" + tail[len(tail) - back:]
        if fits(text):
            return text
    return head + "…" + tail[-2:]
