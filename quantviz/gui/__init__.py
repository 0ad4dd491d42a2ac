"""The PySide6 + pyqtgraph desktop app (the only package that imports Qt).

:func:`start` is the one entry point the CLI uses (``quantviz gui``).
"""
from . import _compat  # noqa: F401  - binding work-arounds before any widget exists


def start(model: str | None = None, *, data=None, config=None, trust: bool = False, screenshot_path=None,
          size: str | None = None, threads: int | None = None) -> int:
    """Open the app on ``model`` (or render it to ``screenshot_path``); returns the exit status."""
    from .app import parse_size, run

    parse_size(size)  # a bad --size fails before anything loads
    return run(model, data=data, config=config, trust=trust, screenshot_path=screenshot_path, size=size,
               threads=threads)
