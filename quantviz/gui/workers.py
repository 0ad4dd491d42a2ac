"""The one worker runner of the app: background jobs with progress and cancel.

A job is a plain callable ``fn(progress, cancel) -> result`` (the engine's
long functions already take both). :class:`JobRunner` runs it on a
``QThreadPool`` thread and reports back through *queued* signals, so the
callbacks (``on_done`` / ``on_error``) always run on the GUI thread and jobs
never touch widgets.

One job per *kind* at a time (Orange3's ``concurrent.py`` idea): submitting a
new ``check`` cancels the running one; its result, if it still arrives, is
dropped because the job is no longer the current one of its kind.
"""
from __future__ import annotations

import time
import traceback
import weakref
from dataclasses import dataclass, field
from threading import Event
from typing import Any, Callable

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Qt, Signal, Slot

from ..core.errors import Cancelled, one_line
from ..core.progress import CancelToken

PROGRESS_INTERVAL_S = 0.1  # at most ~10 progress signals a second per job

_RUNNERS: "weakref.WeakSet[JobRunner]" = weakref.WeakSet()


def all_runners() -> list["JobRunner"]:
    """Every live runner (tests use this to find jobs left running)."""
    import shiboken6

    return [r for r in list(_RUNNERS) if shiboken6.isValid(r) and shiboken6.isValid(r.pool)]


@dataclass(eq=False)
class Job:
    kind: str
    label: str
    fn: Callable[..., Any]
    on_done: Callable[[Any], None] | None = None
    on_error: Callable[[str, str, BaseException], None] | None = None  # (message, details, exception)
    on_cancel: Callable[[], None] | None = None
    visible: bool = True  # shown in the jobs bar (stats jobs are not)
    token: CancelToken = field(default_factory=CancelToken)
    done: Event = field(default_factory=Event)
    progress: tuple[int, int, str] = (0, 0, "")

    def cancel(self) -> None:
        self.token.cancel()

    @property
    def cancelled(self) -> bool:
        return self.token.cancelled


class _Signals(QObject):
    """Carries one job's news from its pool thread to the GUI thread."""

    progress = Signal(object, int, int, str)
    finished = Signal(object, object)
    failed = Signal(object, str, str, object)
    cancelled = Signal(object)


class _Runnable(QRunnable):
    def __init__(self, job: Job, signals: _Signals):
        super().__init__()
        self.setAutoDelete(True)
        self.job = job
        self.signals = signals
        self._last = 0.0

    def _progress(self, done: int, total: int, message: str = "") -> None:
        now = time.monotonic()
        if done < total and now - self._last < PROGRESS_INTERVAL_S:
            return
        self._last = now
        self.signals.progress.emit(self.job, int(done), int(total), str(message))

    def run(self) -> None:  # runs on a pool thread: no widgets here
        job = self.job
        try:
            if job.cancelled:
                raise Cancelled()
            result = job.fn(self._progress, job.token)
        except Cancelled:
            self.signals.cancelled.emit(job)
        except BaseException as exc:  # noqa: BLE001 - every failure becomes a message
            self.signals.failed.emit(job, one_line(exc), traceback.format_exc(), exc)
        else:
            if job.cancelled:
                self.signals.cancelled.emit(job)
            else:
                self.signals.finished.emit(job, result)
        finally:
            job.done.set()


class JobRunner(QObject):
    """Runs jobs in the background; one current job per kind."""

    jobStarted = Signal(object)
    jobProgress = Signal(object, int, int, str)
    jobEnded = Signal(object, str)  # job, "done" | "failed" | "cancelled"

    def __init__(self, parent: QObject | None = None, max_threads: int = 2):
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(max_threads)
        self._current: dict[str, Job] = {}
        self._running: set[Job] = set()
        self._signals: dict[Job, _Signals] = {}
        _RUNNERS.add(self)

    # ------------------------------------------------------------ public
    def submit(self, kind: str, fn: Callable[..., Any], *, label: str = "", on_done=None, on_error=None,
               on_cancel=None, visible: bool = True) -> Job:
        """Start ``fn(progress, cancel)``; cancels the running job of the same kind."""
        old = self._current.get(kind)
        if old is not None:
            old.cancel()
        job = Job(kind, label or kind, fn, on_done, on_error, on_cancel, visible)
        # lives on the GUI thread and belongs to the runner, so it is deleted there (never by the
        # pool thread dropping its last Python reference)
        sig = _Signals(self)
        sig.progress.connect(self._on_job_progress, Qt.QueuedConnection)
        sig.finished.connect(self._on_job_finished, Qt.QueuedConnection)
        sig.failed.connect(self._on_job_failed, Qt.QueuedConnection)
        sig.cancelled.connect(self._on_job_cancelled, Qt.QueuedConnection)
        self._signals[job] = sig
        self._current[kind] = job
        self._running.add(job)
        self.jobStarted.emit(job)
        self.pool.start(_Runnable(job, sig))
        return job

    def current(self, kind: str) -> Job | None:
        return self._current.get(kind)

    def is_current(self, job: Job) -> bool:
        return self._current.get(job.kind) is job and not job.cancelled

    def running(self) -> list[Job]:
        return [j for j in self._running if not j.done.is_set()]

    def busy(self, kind: str | None = None) -> bool:
        return any(kind is None or j.kind == kind for j in self._running)

    def cancel(self, kind: str | None = None) -> None:
        for j in list(self._running):
            if kind is None or j.kind == kind:
                j.cancel()

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        """Cancel everything and wait for the pool threads (used on close)."""
        self.cancel()
        return self.pool.waitForDone(timeout_ms)

    # ----------------------------------------------------- from workers
    def _end(self, job: Job, how: str) -> None:
        self._running.discard(job)
        sig = self._signals.pop(job, None)
        if sig is not None:
            sig.deleteLater()
        if self._current.get(job.kind) is job:
            del self._current[job.kind]
        self.jobEnded.emit(job, how)

    @Slot(object, int, int, str)
    def _on_job_progress(self, job: Job, done: int, total: int, message: str) -> None:
        if job.cancelled:
            return
        job.progress = (done, total, message)
        self.jobProgress.emit(job, done, total, message)

    @Slot(object, object)
    def _on_job_finished(self, job: Job, result: object) -> None:
        stale = not self.is_current(job)
        self._end(job, "cancelled" if stale else "done")
        if not stale and job.on_done is not None:
            job.on_done(result)

    @Slot(object, str, str, object)
    def _on_job_failed(self, job: Job, message: str, details: str, exc: object) -> None:
        stale = not self.is_current(job)
        self._end(job, "cancelled" if stale else "failed")
        if not stale and job.on_error is not None:
            job.on_error(message, details, exc)

    @Slot(object)
    def _on_job_cancelled(self, job: Job) -> None:
        self._end(job, "cancelled")
        if job.on_cancel is not None:
            job.on_cancel()
