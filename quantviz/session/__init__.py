"""Session state: model, data, config, undo history, results, events (no Qt)."""
from .session import CheckResult, Session, SessionError

__all__ = ["Session", "SessionError", "CheckResult"]
