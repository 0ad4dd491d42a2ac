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


DRIVER = r"""
import runpy, sys, warnings
warnings.filterwarnings("ignore", message=".*found in sys.modules after import of package.*", category=RuntimeWarning)
modules, sys.argv = sys.argv[1:], sys.argv[:1]
# each module opens the demo itself; its calibration and float reference are copied from one
# calibrated demo (Session.prepare_like) instead of being computed again for every module
from quantviz.session import Session
_open, _calibrated = Session.open.__func__, Session.open("demo")
def _open_demo(cls, reference, **kw):
    if reference != "demo" or not kw.get("prepare", True) or kw.get("data") or kw.get("calib"):
        return _open(cls, reference, **kw)
    s = _open(cls, reference, **dict(kw, prepare=False))
    s.prepare_like(_calibrated)
    return s
Session.open = classmethod(_open_demo)
for m in modules:
    print("start", m, flush=True)
    try:
        runpy.run_module(f"quantviz.gui.views.{m}", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise SystemExit(f"{m}: exit {exc.code}")
    print("done", m, flush=True)
"""


def test_every_widget_module_runs_alone():
    """Each module's ``python -m`` entry opens its widget alone on the demo, runs its own event
    loop and exits cleanly. All run one after another in one subprocess (a module's event loop
    quits its application, which must not leak into the other tests), which pays for torch, Qt
    and the demo once instead of once per module."""
    env = dict(os.environ, QUANTVIZ_SMOKE_MS="300", QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run([sys.executable, "-c", DRIVER, *WIDGET_MODULES], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert [ln.split()[1] for ln in proc.stdout.splitlines() if ln.startswith("done ")] == WIDGET_MODULES
