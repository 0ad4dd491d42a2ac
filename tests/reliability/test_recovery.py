"""Autosave and crash recovery (Qt-free): a process killed with SIGKILL loses no autosaved edit."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from corpus import good_data, write_recipe
from quantviz.session import Session
from quantviz.session import autosave
from quantviz.session.autosave import Autosaver, discard, find_recovery, restore_session

REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import sys, time
    from quantviz.session import Session
    from quantviz.session.autosave import Autosaver
    s = Session.open(sys.argv[1], data=sys.argv[2])
    saver = Autosaver(s)
    names = s.layer_names
    for i, bits in enumerate([6, 4, 3, 5]):
        s.edit_layers([names[i % len(names)]], {"weight": {"bits": bits}})
        saver.flush()
        print("saved", i + 1, flush=True)
    s.set_range(names[0], "weight", -0.25, 0.25)  # an edit after the last autosave: may be lost
    print("unsaved edit", flush=True)
    time.sleep(120)
""")


@pytest.fixture
def model(tmp_path):
    return str(write_recipe(tmp_path / "mlp.py")), str(good_data(tmp_path / "mlp.npz"))


def test_sigkill_then_recover_every_autosaved_edit(model, tmp_path):
    recipe, data = model
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, recipe, data], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.strip())
            if line.startswith("unsaved"):
                break
        assert lines[-1] == "unsaved edit", (lines, proc.stderr.read() if proc.poll() is not None else "")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    found = find_recovery()
    assert len(found) == 1 and found[0].pid == proc.pid and found[0].edits == 4
    assert "mlp.py" in found[0].describe()
    s = restore_session(found[0])
    names = s.layer_names
    assert [s.spec(n).weight.bits for n in names] == [3, 5]  # fc1: 6 -> 3, fc2: 4 -> 5
    assert s.spec(names[0]).weight.range.method == "minmax"  # the unsaved edit is not there
    for expect in ([3, 4], [6, 4], [6, 8], [8, 8]):  # the undo history came back too
        assert s.undo()
        assert [s.spec(n).weight.bits for n in names] == expect
    assert not s.undo()
    discard(found[0])
    assert find_recovery() == []


def test_autosave_only_after_edits_and_clean_close_removes_file(model):
    recipe, data = model
    s = Session.open(recipe, data=data)
    saver = Autosaver(s)
    assert not saver.flush() and not saver.path.exists()  # nothing to save, nothing written
    s.apply_preset("W4")
    assert saver.flush() and saver.path.exists()
    assert not saver.flush()  # not dirty any more
    assert find_recovery() == []  # our own, live process: not offered
    assert [i.path for i in find_recovery(include_live=True)] == [saver.path]
    saver.close()
    assert not saver.path.exists()
    s.apply_preset("W8")  # after close: no more writes
    assert not saver.path.exists()


def test_damaged_recovery_files_are_skipped_and_write_failures_do_not_raise(model, tmp_path):
    folder = autosave.recovery_dir()
    folder.mkdir(parents=True)
    (folder / "session-999999.json").write_text("{not json", encoding="utf-8")
    (folder / "session-999998.json").write_text(json.dumps({"format": "quantviz-session", "version": 1,
                                                            "model": "x", "config": {"bits": 3}}))
    assert find_recovery() == []
    recipe, data = model
    s = Session.open(recipe, data=data)
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("x")
    saver = Autosaver(s, path=blocker / "session.json")
    s.apply_preset("W4")
    assert saver.flush() is False and "failed" in saver.last_error
    assert saver.dirty  # tried again at the next flush


def test_discarding_a_recovery_file_takes_its_trained_weights_along(tmp_path):
    """A recovered or declined recovery file leaves no orphan ``session-*.qat-N.pt`` behind."""
    from quantviz.session import autosave

    path = autosave.recovery_path(999_999)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")
    for name in (f"{path.stem}.qat-1.pt", f"{path.stem}.qat-2.pt", "session-1.qat-1.pt"):
        (path.parent / name).write_bytes(b"w")
    autosave.discard(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["session-1.qat-1.pt"]  # another file's stays
