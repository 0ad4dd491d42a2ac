"""Progress reporting and cooperative cancellation for long jobs.

Long work is a plain function ``fn(..., progress=..., cancel=...)``:
``progress(done, total, message)`` reports; ``cancel()`` returns True when the
caller wants the job to stop, and the job then raises
:class:`~quantviz.core.errors.Cancelled` at its next batch / layer boundary.
"""
from __future__ import annotations

import threading
from typing import Callable, Protocol


class Progress(Protocol):
    def __call__(self, done: int, total: int, message: str = "") -> None: ...


def null_progress(done: int, total: int, message: str = "") -> None:
    return None


def never() -> bool:
    return False


class CancelToken:
    """A thread-safe flag; call the token to ask whether to stop."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def __call__(self) -> bool:
        return self._event.is_set()


def scaled(progress: Progress, start: float, stop: float, total: int = 1000) -> Progress:
    """A progress callback mapping a sub-job's fraction onto [start, stop]."""

    def inner(done: int, sub_total: int, message: str = "") -> None:
        frac = done / sub_total if sub_total else 1.0
        progress(int(total * (start + (stop - start) * frac)), total, message)

    return inner


CancelFn = Callable[[], bool]
