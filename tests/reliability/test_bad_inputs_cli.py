"""Every input of the bad-input corpus through the CLI.

For each broken input: exit status 1, exactly one line on stderr that names
the file and the problem, no traceback, nothing on stdout, nothing written
(not next to the inputs, not in the working folder, not in the data folder),
and no code from the file ran. Legal-but-awkward inputs must work.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corpus import snapshot
from quantviz.cli.main import main

REPO = Path(__file__).resolve().parents[2]


def _check_failure(case, rc, out, err) -> list[str]:
    problems = []
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if rc == 0:
        return [f"exit status 0, expected an error (stdout {out[:200]!r})"]
    if rc != 1:
        problems.append(f"exit status {rc}")
    if len(lines) != 1:
        return problems + [f"{len(lines)} lines on stderr: {err[:600]!r}"]
    line = lines[0]
    low = line.lower()
    if not line.startswith("quantviz: error: "):
        problems.append(f"not an error line: {line!r}")
    if "traceback" in low or "--debug" in line:
        problems.append(f"an unexpected exception leaked: {line!r}")
    if "\x1b" in line:
        problems.append(f"terminal escape codes in the message: {line!r}")
    if case.names and not any(n in line for n in case.names):
        problems.append(f"does not name {case.names}: {line!r}")
    missing = [e for e in case.expect if e.lower() not in low]
    if missing:
        problems.append(f"does not say {missing}: {line!r}")
    if out.strip():
        problems.append(f"stdout not empty: {out[:200]!r}")
    return problems


def _finite_numbers(obj) -> bool:
    """No NaN / inf anywhere (strict JSON would not even allow them)."""
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(_finite_numbers(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_finite_numbers(v) for v in obj)
    return True


def _check_success(case, rc, out, err) -> list[str]:
    if rc != 0:
        return [f"exit status {rc}: {err.strip()[:300]!r}"]
    rep = json.loads(out)
    q = rep["quantized"]["metrics"]
    if not q or any(v is None or not math.isfinite(v) for v in q.values()):
        return [f"non-finite metrics {q}"]
    if not _finite_numbers(rep):
        return ["non-finite numbers in the report"]
    return []


def test_every_bad_input_gives_one_clear_line(corpus, tmp_path, monkeypatch, capsys):
    root, cases = corpus
    assert len(cases) >= 70
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # a recipe must not leave __pycache__ behind
    data_dir = Path(os.environ["QUANTVIZ_DATA_DIR"])
    failures = {}
    runs = 0
    for case in cases:
        for command in {case.command} | ({"inspect"} if "inspect" in case.tags else set()):
            case_run = case if command == case.command else type(case)(**{**case.__dict__, "command": command})
            before, before_cwd = snapshot(root), snapshot(work)
            rc = main(case_run.argv())
            out, err = capsys.readouterr()
            runs += 1
            problems = (_check_success if case.ok else _check_failure)(case_run, rc, out, err)
            if case.marker is not None and case.marker.exists():
                problems.append("CODE FROM THE FILE RAN (marker file created)")
                case.marker.unlink()
            if snapshot(root) != before:
                changed = set(snapshot(root).items()) ^ set(before.items())
                problems.append(f"files written next to the inputs: {sorted(changed)[:5]}")
            if snapshot(work) != before_cwd or (data_dir.exists() and any(data_dir.iterdir())):
                problems.append("files written in the working or data folder")
            if problems:
                failures[f"{case.id} ({command})"] = problems
    assert not failures, "\n".join(f"{k}: {'; '.join(v)}" for k, v in failures.items())
    assert runs > len(cases)


def _cli(*args, timeout=300, **kw):
    env = dict(os.environ, PYTHONPATH=str(REPO), QT_QPA_PLATFORM="offscreen")
    return subprocess.run([sys.executable, "-m", "quantviz", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, **kw)


@pytest.mark.parametrize("case_id", ["evil-pickle-zip"])
def test_subprocess_exits_nonzero_without_traceback(corpus, case_id):
    root, cases = corpus
    case = next(c for c in cases if c.id == case_id)
    res = _cli(*case.argv())
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("quantviz: error: ")]
    assert len(errors) == 1 and any(n in errors[0] for n in case.names), res.stderr
    assert res.stdout == ""
    if case.marker is not None:
        assert not case.marker.exists()


def _deaf_to_ctrl_c():
    """What a parent may leave its children: SIGINT blocked (a thread's mask where it forked) and
    ignored (a shell's background job; the full suite's pytest process once did, and the child hung)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_recipe_that_never_returns_can_be_interrupted(tmp_path):
    """A recipe stuck in ``while True`` gives way to Ctrl-C: exit 130, one line, nothing written."""
    started = tmp_path / "started"
    recipe = tmp_path / "forever.py"
    recipe.write_text(f"from pathlib import Path\nPath({str(started)!r}).touch()\n"
                      "def build_model():\n    while True:\n        pass\n", encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    # started with SIGINT blocked and ignored, as a parent may leave it: Ctrl-C still works
    proc = subprocess.Popen([sys.executable, "-m", "quantviz", "inspect", str(recipe)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=_deaf_to_ctrl_c)
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert started.exists(), proc.communicate(timeout=5)
        time.sleep(0.3)  # well inside the loop now
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)  # a hang guard, not a time bound: a busy machine is slow
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert "Traceback" not in err and err.strip().splitlines() == ["quantviz: interrupted"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["forever.py", "started"]
