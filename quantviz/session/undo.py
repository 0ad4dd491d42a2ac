"""Undo / redo of config edits as snapshots (configs are small)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Edit:
    label: str
    before: dict
    after: dict


class UndoHistory:
    def __init__(self, limit: int = 500) -> None:
        self.limit = limit
        self._done: list[Edit] = []
        self._undone: list[Edit] = []

    def push(self, edit: Edit) -> None:
        if edit.before == edit.after:
            return
        self._done.append(edit)
        if len(self._done) > self.limit:
            del self._done[0]
        self._undone.clear()

    def undo(self) -> Edit | None:
        if not self._done:
            return None
        e = self._done.pop()
        self._undone.append(e)
        return e

    def redo(self) -> Edit | None:
        if not self._undone:
            return None
        e = self._undone.pop()
        self._done.append(e)
        return e

    @property
    def can_undo(self) -> bool:
        return bool(self._done)

    @property
    def can_redo(self) -> bool:
        return bool(self._undone)

    @property
    def undo_label(self) -> str | None:
        return self._done[-1].label if self._done else None

    @property
    def redo_label(self) -> str | None:
        return self._undone[-1].label if self._undone else None

    def clear(self) -> None:
        self._done.clear()
        self._undone.clear()
