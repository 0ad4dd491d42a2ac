"""Memory stays bounded: the undo history has a size budget and shares snapshots."""
from __future__ import annotations

from quantviz.session.undo import Edit, UndoHistory


def _cfg(bits: int, n: int) -> dict:
    return {"version": 1, "layers": {f"l{i}": {"weight": {"bits": bits}} for i in range(n)}}


def test_bulk_edits_of_many_layers_keep_the_history_bounded():
    h = UndoHistory(limit=500, max_entries=50_000)
    prev = _cfg(8, 2000)
    for i in range(40):
        nxt = _cfg(2 + i % 7, 2000)
        h.push(Edit(f"edit {i}", dict(prev), nxt))  # a fresh (equal) dict, as Session.set_config makes
        prev = nxt
    kept = len(h._done)
    assert 1 <= kept < 40  # the budget dropped the oldest edits
    assert sum(len(e.before["layers"]) + len(e.after["layers"]) for e in h._done) <= 50_000
    assert all(a.after is b.before for a, b in zip(h._done, h._done[1:]))  # snapshots are shared
    labels = []
    while (e := h.undo()) is not None:
        labels.append(e.label)
    assert labels == [f"edit {i}" for i in range(39, 39 - kept, -1)]  # the newest edits survive, in order


def test_small_configs_keep_the_edit_limit():
    h = UndoHistory(limit=5)
    for i in range(9):
        h.push(Edit(str(i), {"n": i}, {"n": i + 1}))
    assert [e.label for e in h._done] == ["4", "5", "6", "7", "8"]
