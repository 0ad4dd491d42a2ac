"""Every widget module runs alone for a look (``python -m quantviz.gui.views.<name>``)."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

VIEWS = Path(__file__).resolve().parents[2] / "quantviz" / "gui" / "views"


def _defines(path: Path) -> tuple[bool, bool]:
    """(defines a Qt widget class, defines main())."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    widget = any(isinstance(n, ast.ClassDef) and any(
        isinstance(b, (ast.Name, ast.Attribute)) and (getattr(b, "id", None) or getattr(b, "attr", "")).startswith("Q")
        and (getattr(b, "id", None) or getattr(b, "attr", "")) not in ("QAbstractTableModel", "QSortFilterProxyModel",
                                                                        "QStyledItemDelegate", "QObject")
        for b in n.bases) for n in tree.body)
    main = any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)
    return widget, main


WIDGET_MODULES = sorted(p.stem for p in VIEWS.glob("*.py") if _defines(p)[0])


def test_every_widget_module_has_a_main():
    assert len(WIDGET_MODULES) >= 9
    missing = [m for m in WIDGET_MODULES if not _defines(VIEWS / f"{m}.py")[1]]
    assert missing == []


def _run_alone(module: str) -> str | None:
    env = dict(os.environ, QUANTVIZ_SMOKE_MS="300", QT_QPA_PLATFORM="offscreen")
    try:
        proc = subprocess.run([sys.executable, "-m", f"quantviz.gui.views.{module}"], env=env, capture_output=True,
                              text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return f"{module}: still running after 300 s"
    if proc.returncode != 0 or "Traceback" in proc.stderr:
        return f"{module}: exit {proc.returncode}\n{proc.stderr[-2000:]}"
    return None


def test_every_widget_module_runs_alone():
    """Each opens its widget alone on the demo and exits cleanly: in subprocesses (a module's own
    event loop quits its application, which must not leak into the other tests'), three at a time."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=3) as pool:
        failures = [f for f in pool.map(_run_alone, WIDGET_MODULES) if f]
    assert failures == []
