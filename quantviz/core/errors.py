"""Exceptions that carry a one-line, user-facing message.

Every error a user can cause (bad file, bad data, bad config, a model that
raises) is raised as a :class:`QuantvizError`; front ends print ``str(err)``
on one line, without a traceback.
"""
from __future__ import annotations

import re


class QuantvizError(Exception):
    """Base class: ``str(err)`` is a complete one-line message."""


class SourceError(QuantvizError):
    """A model file or folder that cannot be loaded."""


class TrustRequired(SourceError):
    """Loading would run code from the file (unpickling); the user must opt in."""


class ModelError(QuantvizError):
    """The model raised while running, or produced unusable output."""


class Cancelled(QuantvizError):
    """A job was cancelled by the user."""

    def __init__(self, message: str = "cancelled"):
        super().__init__(message)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def one_line(exc: BaseException) -> str:
    """A single line describing ``exc`` (type name added for foreign errors).

    Terminal escape codes that some libraries put in messages are removed.
    """
    msg = _ANSI.sub("", str(exc)).strip().splitlines()
    text = msg[0] if msg else ""
    if isinstance(exc, QuantvizError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
