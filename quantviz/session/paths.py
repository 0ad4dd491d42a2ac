"""Where quantviz keeps per-user state (recovery files, the recipe trust store).

``$QUANTVIZ_DATA_DIR`` wins; otherwise ``$XDG_DATA_HOME/quantviz``, else
``~/.local/share/quantviz``. The folder is created on first write, never on
read, so merely starting quantviz writes nothing.
"""
from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    env = os.environ.get("QUANTVIZ_DATA_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "quantviz"


def ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
