"""Killing a process while it writes a file leaves the old file or none, never a partial one.

A child process rewrites a target in a loop through ``quantviz.io.atomic``
(a multi-megabyte export, and a config through ``save_config``); the test
kills it with SIGKILL at random moments and checks that the target is always
absent (nothing had been written yet) or one complete version.
"""
from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SIZE = 3 * 1024 * 1024

WRITER = textwrap.dedent("""
    import hashlib, sys
    from quantviz.io import atomic
    target, size = sys.argv[1], int(sys.argv[2])
    print("ready", flush=True)
    v = 1
    while True:
        body = hashlib.sha256(str(v).encode()).digest() * (size // 32)
        atomic.write_bytes(target, b"V%08d" % v + body + b"END")
        if v == 1:
            print("wrote", flush=True)
        v += 1
""")

def _valid_blob(data: bytes) -> bool:
    if not (data.startswith(b"V") and data.endswith(b"END")):
        return False
    v = int(data[1:9])
    body = hashlib.sha256(str(v).encode()).digest() * (SIZE // 32)
    return data == b"V%08d" % v + body + b"END"


def _kill_during_writes(script: str, target: Path, delays: list[float], extra: list[str],
                        after_first: int = 3) -> list[bytes | None]:
    """Kill a writer at each delay; from the ``after_first``-th kill on, only after it reported
    its first complete write (so those kills must find a file: no sleep stands in for that)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    seen = []
    for i, delay in enumerate(delays):
        proc = subprocess.Popen([sys.executable, "-c", script, str(target), *extra], stdout=subprocess.PIPE, env=env)
        try:
            assert proc.stdout.readline().strip() == b"ready"
            if i >= after_first:
                assert proc.stdout.readline().strip() == b"wrote"
            time.sleep(delay)  # a random moment of the write loop, not a synchronisation
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == -signal.SIGKILL
        seen.append(target.read_bytes() if target.exists() else None)
    return seen


def test_sigkill_during_big_export_leaves_old_or_new(tmp_path):
    target = tmp_path / "export.bin"
    rng = random.Random(0)
    delays = [0.0, 0.002, 0.01] + [rng.uniform(0.02, 0.4) for _ in range(9)]
    seen = _kill_during_writes(WRITER, target, delays, [str(SIZE)])
    assert all(s is None or _valid_blob(s) for s in seen)
    assert all(s is not None for s in seen[3:])  # killed after a complete write: that write is there
    versions = {int(s[1:9]) for s in seen if s is not None}
    assert len(versions) >= 1
    # leftovers of interrupted writes are hidden temporaries only, never the target's name
    assert {p.name for p in tmp_path.iterdir()} - {"export.bin"} <= {
        p.name for p in tmp_path.iterdir() if p.name.startswith(".export.bin.") and p.name.endswith(".tmp")}


def test_failed_config_and_session_writes_keep_the_old_file(tmp_path, monkeypatch):
    """save_config / Session-style writes go through the atomic path: a crash mid-write keeps the old file."""
    import pytest

    from quantviz.io import atomic
    from quantviz.io.config import QuantConfig, load_config, save_config

    target = tmp_path / "cfg.json"
    save_config(QuantConfig(default={"weight": {"bits": 4}}, name="old"), target)
    old = target.read_bytes()

    def crash(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", crash)
    big = QuantConfig(default={"weight": {"bits": 8}}, name="new", layers={f"l{i}": {} for i in range(3000)})
    with pytest.raises(OSError):
        save_config(big, target)
    assert target.read_bytes() == old and load_config(target).name == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["cfg.json"]  # no temporary left behind
