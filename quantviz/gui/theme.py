"""The app's look: a light Qt style sheet plus matching pyqtgraph defaults."""
from __future__ import annotations

from pathlib import Path

# pyqtgraph colours that match resources/style/light.qss
BACKGROUND = "#ffffff"
FOREGROUND = "#3a4048"
ACCENT = "#3b7ddd"
ACCENT_SOFT = (59, 125, 221, 60)
HIGHLIGHT = "#e8590c"
MUTED = "#9aa1ab"


def style_path() -> Path:
    from ..core.sources import resources_dir

    return resources_dir() / "style" / "light.qss"


def style_sheet() -> str:
    """The style sheet text ("" when the resources folder lacks it)."""
    for p in (style_path(), Path(__file__).resolve().parents[2] / "resources" / "style" / "light.qss"):
        if p.is_file():
            return p.read_text(encoding="utf-8")
    return ""


def apply_theme(app) -> None:
    """Fusion style, the light style sheet and pyqtgraph's colours."""
    import pyqtgraph as pg

    app.setStyle("Fusion")
    app.setStyleSheet(style_sheet())
    pg.setConfigOptions(background=BACKGROUND, foreground=FOREGROUND, antialias=True)
