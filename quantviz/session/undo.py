"""Undo / redo of config edits as snapshots (configs are small; the history has a size budget)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Edit:
    label: str
    before: dict
    after: dict


def _entries(edit: Edit) -> int:
    """A size measure of an edit's snapshots: their per-layer entries and rules."""
    return sum(len(d.get("layers", ())) + len(d.get("rules", ())) + 1 for d in (edit.before, edit.after))


class UndoHistory:
    """At most ``limit`` edits, and at most ``max_entries`` snapshot entries in all (the
    oldest edits go first), so that bulk edits of thousands of layers keep memory bounded."""

    def __init__(self, limit: int = 500, max_entries: int = 400_000) -> None:
        self.limit = limit
        self.max_entries = max_entries
        self._done: list[Edit] = []
        self._undone: list[Edit] = []
        self._size = 0

    def push(self, edit: Edit) -> None:
        if edit.before == edit.after:
            return
        if self._done and self._done[-1].after == edit.before:
            edit = Edit(edit.label, self._done[-1].after, edit.after)  # share the snapshot: half the memory
        self._done.append(edit)
        self._size = sum(_entries(e) for e in self._done)
        while len(self._done) > 1 and (len(self._done) > self.limit or self._size > self.max_entries):
            self._size -= _entries(self._done.pop(0))
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


def history_to_dict(history: UndoHistory) -> dict:
    """Plain-JSON form of an undo history (for recovery files)."""
    as_list = lambda edits: [{"label": e.label, "before": e.before, "after": e.after} for e in edits]  # noqa: E731
    return {"done": as_list(history._done), "undone": as_list(history._undone)}


def history_from_dict(d: dict, limit: int = 500) -> UndoHistory:
    h = UndoHistory(limit)
    h._done = [Edit(str(e["label"]), dict(e["before"]), dict(e["after"])) for e in d.get("done", [])]
    h._undone = [Edit(str(e["label"]), dict(e["before"]), dict(e["after"])) for e in d.get("undone", [])]
    return h
