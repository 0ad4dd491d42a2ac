"""With ``--json``, stdout carries exactly one JSON document and nothing else.

Libraries write to the process's stdout behind quantviz's back: the search's
MIP solver (HiGHS) logs from C straight to file descriptor 1, and a model's
own code may ``print``. While a ``--json`` command runs, :func:`json_stdout`
points descriptor 1 at stderr (so those lines still reach the user, where a
pipe into a JSON parser does not see them) and keeps the real stdout for
:func:`json_stream`, which the command's JSON is written to.

When ``sys.stdout`` is not on descriptor 1 (a test capturing it, an embedding
application), nothing C-level can reach it and nothing is redirected.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
from typing import IO, Iterator

_stream: IO[str] | None = None


def json_stream() -> IO[str]:
    """Where a command writes its JSON: the real stdout."""
    return _stream if _stream is not None else sys.stdout


def _on_fd1() -> bool:
    try:
        return sys.stdout.fileno() == 1
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False


@contextlib.contextmanager
def json_stdout(active: bool = True) -> Iterator[None]:
    global _stream
    if not active or _stream is not None or not _on_fd1():
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    _stream = os.fdopen(saved, "w", encoding="utf-8", closefd=False)
    try:
        yield
    finally:
        _stream.flush()
        sys.stdout.flush()  # what others wrote through Python goes to stderr, before fd 1 is restored
        _stream = None
        os.dup2(saved, 1)
        os.close(saved)


__all__ = ["json_stdout", "json_stream"]
