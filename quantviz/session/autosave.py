"""Crash recovery: the open session is autosaved to a recovery file (no Qt).

After edits (config changes, sensitivity / search results; not plain
re-check results, which are recomputed in seconds) the front end calls
:meth:`Autosaver.flush` (debounced by the caller, e.g. a single-shot timer a
second after the last edit). The recovery
file is an ordinary session file (``Session.load`` reads it) plus a
``"recovery"`` block with the owning process id, the save time and the undo
history, written atomically to ``<data dir>/recovery/session-<pid>.json``.

A clean exit calls :meth:`Autosaver.close`, which deletes the file. If the
process is killed, the file stays; on the next start :func:`find_recovery`
lists recovery files whose process is gone, and :func:`restore_session`
reopens the model with every edit up to the last autosave (and its undo
history). :func:`discard` deletes a file the user does not want back.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..core.progress import Progress, null_progress
from ..io import atomic
from .paths import data_dir, ensure_dir
from .session import Session, SessionError, _json_default, sanitize
from .undo import history_from_dict, history_to_dict

RECOVERY_FOLDER = "recovery"
# Session events that do not make the session worth recovering by themselves: a
# re-check's result or estimate (recomputed in seconds) and opening the model.
NOT_EDITS = ("result", "estimate", "loaded")


def recovery_dir() -> Path:
    return data_dir() / RECOVERY_FOLDER


def recovery_path(pid: int | None = None) -> Path:
    return recovery_dir() / f"session-{os.getpid() if pid is None else pid}.json"


@dataclass
class RecoveryInfo:
    """What the "recover your work?" question shows about one recovery file."""

    path: Path
    model: str
    pid: int
    saved_at: float
    edits: int
    last_edit: str | None

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.saved_at))
        what = f"{self.edits} edit(s), last: {self.last_edit}" if self.last_edit else f"{self.edits} edit(s)"
        return f"{self.model}: {what}, autosaved {when}"


def recovery_dict(session: Session) -> dict:
    d = session.to_dict()
    d["recovery"] = {"pid": os.getpid(), "saved_at": time.time(), "history": history_to_dict(session.history)}
    return d


def write_recovery(session: Session, path: Path | None = None) -> Path:
    """Write ``session`` (config, results, analysis, undo history) atomically."""
    path = Path(path) if path is not None else recovery_path()
    ensure_dir(path.parent)
    d = recovery_dict(session)
    session._save_weights(path, d)  # trained weights (quantization-aware training) next to it
    text = json.dumps(sanitize(d), default=_json_default, allow_nan=False)
    return atomic.write_text(path, text + "\n")


class Autosaver:
    """Marks the session dirty on every edit; :meth:`flush` writes the recovery file."""

    def __init__(self, session: Session, path: Path | None = None) -> None:
        self.session = session
        self.path = Path(path) if path is not None else recovery_path()
        self.dirty = False
        self.saves = 0
        self.last_error: str | None = None
        session.events.connect(self._on_session_event)

    def _on_session_event(self, kind: str, payload: dict) -> None:
        if kind not in NOT_EDITS:  # config edits, sensitivity / search results, ...
            self.dirty = True

    def flush(self) -> bool:
        """Write the recovery file if anything changed since the last write.

        Never raises: a full disk must not take the app down. The reason of a
        failed write is kept in :attr:`last_error` for the status bar.
        """
        if not self.dirty:
            return False
        try:
            write_recovery(self.session, self.path)
        except Exception as exc:  # noqa: BLE001 - autosave is best effort
            self.last_error = f"autosave to {self.path} failed: {exc}"
            return False
        self.dirty = False
        self.last_error = None
        self.saves += 1
        return True

    def close(self, *, keep: bool = False) -> None:
        """Stop watching; delete the recovery file (a clean exit) unless ``keep``."""
        self.session.events.disconnect(self._on_session_event)
        if not keep:
            _remove(self.path)


def _remove(path: Path) -> None:
    """Delete a recovery file and the trained weights written next to it."""
    with contextlib.suppress(OSError):
        path.unlink()
    for w in path.parent.glob(f"{path.stem}.qat-*.pt"):
        with contextlib.suppress(OSError):
            w.unlink()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def read_info(path: Path) -> RecoveryInfo | None:
    """Summary of one recovery file, or None when it is not a usable one."""
    try:
        obj = Session.read_file(path)
    except Exception:  # noqa: BLE001 - a damaged recovery file is skipped, not fatal
        return None
    rec = obj.get("recovery") if isinstance(obj.get("recovery"), dict) else {}
    hist = rec.get("history") if isinstance(rec.get("history"), dict) else {}
    done = hist.get("done") if isinstance(hist.get("done"), list) else []
    last = done[-1].get("label") if done and isinstance(done[-1], dict) else None
    try:
        pid = int(rec.get("pid", -1))
        saved = float(rec.get("saved_at", path.stat().st_mtime))
    except (TypeError, ValueError, OSError):
        return None
    return RecoveryInfo(path, str(obj.get("model")), pid, saved, len(done), last)


def find_recovery(*, include_live: bool = False) -> list[RecoveryInfo]:
    """Recovery files left by processes that are gone, newest first."""
    folder = recovery_dir()
    if not folder.is_dir():
        return []
    found = []
    for p in folder.glob("session-*.json"):
        info = read_info(p)
        if info is None:
            continue
        if not include_live and _alive(info.pid):
            continue
        found.append(info)
    return sorted(found, key=lambda i: i.saved_at, reverse=True)


def load_recovery(info: RecoveryInfo | Path | str) -> dict:
    """The recovery file's content (a session dict with a ``recovery`` block)."""
    path = info.path if isinstance(info, RecoveryInfo) else Path(info)
    return Session.read_file(path)


def restore_session(info: RecoveryInfo | Path | str, *, trust: bool = False, device: str = "cpu",
                    progress: Progress = null_progress, cancel: Callable[[], bool] = lambda: False) -> Session:
    """Reopen the model of a recovery file with its config, results and undo history."""
    obj = load_recovery(info)
    path = info.path if isinstance(info, RecoveryInfo) else Path(info)
    s = Session.load(path, trust=trust, device=device, progress=progress, cancel=cancel)
    hist = (obj.get("recovery") or {}).get("history")
    if isinstance(hist, dict):
        try:
            s.history = history_from_dict(hist)
        except (KeyError, TypeError, ValueError) as exc:
            raise SessionError(f"{path.name}: the undo history is damaged ({exc})") from None
    return s


def discard(info: RecoveryInfo | Path | str | None = None) -> None:
    """Delete one recovery file (or this process's own when ``info`` is None) and its trained weights."""
    _remove(recovery_path() if info is None else (info.path if isinstance(info, RecoveryInfo) else Path(info)))


__all__ = ["Autosaver", "RecoveryInfo", "find_recovery", "load_recovery", "restore_session", "discard",
           "write_recovery", "recovery_path", "recovery_dir"]
