"""Run menu entries for scaling analyses: the score cache and Ray workers.

Both are app preferences (kept in the settings file) that apply to every
sensitivity sweep and search started from the app; :func:`apply` hands them
to the session just before a job starts.
"""
from __future__ import annotations

from PySide6.QtGui import QAction
from PySide6.QtWidgets import QInputDialog

CACHE_KEY = "scale/score_cache"
RAY_KEY = "scale/ray_address"


def _bool(v, default: bool) -> bool:
    if v is None:
        return default
    return str(v).lower() in ("1", "true", "yes")


def ray_address(win) -> str:
    return str(win.settings.value(RAY_KEY, "") or "")


def _ray_label(win) -> str:
    addr = ray_address(win)
    return f"Run analyses on &Ray… ({addr})" if addr else "Run analyses on &Ray… (off: here)"


def add_actions(win, menu, acts: dict) -> None:
    cache = QAction("Use the &score cache", win)
    cache.setCheckable(True)
    cache.setChecked(_bool(win.settings.value(CACHE_KEY), True))
    cache.setStatusTip("Keep sensitivity results on disk per model, data and settings: a repeat is instant and an "
                       "interrupted sweep resumes")
    cache.toggled.connect(lambda on: win.settings.setValue(CACHE_KEY, bool(on)))
    acts["score_cache"] = cache
    menu.addAction(cache)
    ray = QAction(_ray_label(win), win)
    ray.setStatusTip("Send sensitivity cells and search candidates to Ray workers (needs pip install 'quantviz[ray]')")
    ray.triggered.connect(lambda _c=False: ask_ray_address(win, ray))
    acts["ray"] = ray
    menu.addAction(ray)


def ask_ray_address(win, action: QAction | None = None) -> None:
    text, ok = QInputDialog.getText(
        win, "Ray cluster", "Ray address: empty = run here, local[:N] = a local cluster, auto = the cluster of "
                            "`ray start`, or HOST:PORT", text=ray_address(win))
    if ok:
        set_ray_address(win, text.strip(), action)


def set_ray_address(win, address: str, action: QAction | None = None) -> None:
    win.settings.setValue(RAY_KEY, address)
    if action is not None:
        action.setText(_ray_label(win))


def apply(win, session) -> None:
    """Hand the app's preferences to ``session`` before a sweep or search."""
    session.use_score_cache = _bool(win.settings.value(CACHE_KEY), True)
    session.ray_address = ray_address(win) or None
