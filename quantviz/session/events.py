"""A tiny synchronous event emitter (no Qt).

The GUI's bridge subscribes and re-emits events as queued Qt signals, so a
handler may run on a worker thread: handlers must not touch widgets directly.
"""
from __future__ import annotations

import threading
from typing import Any, Callable

Handler = Callable[[str, dict], None]


class Events:
    def __init__(self) -> None:
        self._handlers: list[Handler] = []
        self._lock = threading.Lock()

    def connect(self, handler: Handler) -> None:
        with self._lock:
            self._handlers.append(handler)

    def disconnect(self, handler: Handler) -> None:
        with self._lock:
            if handler in self._handlers:
                self._handlers.remove(handler)

    def emit(self, kind: str, **payload: Any) -> None:
        with self._lock:
            handlers = list(self._handlers)
        for h in handlers:
            h(kind, payload)
