"""The score cache: sensitivity results on disk, cell by cell.

Layout (one folder per sweep; the sweep key hashes the model fingerprint, the
evaluation and calibration data fingerprints, the method, the base settings
and the method's options)::

    <root>/<sweep key>/meta.json           what the key stands for (for people)
    <root>/<sweep key>/cells/<cell>.json   one (layer group, bit-width) measurement
    <root>/<sweep key>/result-<bits>.json  a finished result for those bit-widths

Every file is written atomically (:mod:`.atomic`), so a sweep killed at any
moment leaves only whole cells; the next run with the same inputs reads them
and measures the rest. The root is ``$QUANTVIZ_CACHE_DIR``, else
``$XDG_CACHE_HOME/quantviz/scores``, else ``~/.cache/quantviz/scores``.
A cell is about 0.5-1 KB of JSON.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path

from . import atomic

CACHE_VERSION = 1


def default_root() -> Path:
    env = os.environ.get("QUANTVIZ_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "quantviz" / "scores"


def _digest(text: str, n: int = 24) -> str:
    return hashlib.blake2b(text.encode(), digest_size=n // 2).hexdigest()


def _clean(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


class SweepStore:
    """``get(key)`` / ``put(key, value)`` for the cells of one sweep (what the core sweep takes)."""

    def __init__(self, folder: Path, meta: dict):
        self.folder = Path(folder)
        self.meta = meta
        self.read = True  # False: write only (a forced re-run)
        self._ready = False

    def _ensure(self) -> None:
        if not self._ready:
            (self.folder / "cells").mkdir(parents=True, exist_ok=True)
            meta = self.folder / "meta.json"
            if not meta.exists():
                atomic.write_text(meta, json.dumps(_clean(self.meta), indent=1, sort_keys=True) + "\n")
            self._ready = True

    def _path(self, key: str) -> Path:
        return self.folder / "cells" / f"{_digest(key)}.json"

    def _read(self, path: Path):
        if not self.read:
            return None
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError):
            return None  # missing or unreadable: measure again
        return d.get("value") if isinstance(d, dict) else None

    def get(self, key: str):
        return self._read(self._path(key))

    def put(self, key: str, value) -> None:
        self._ensure()
        atomic.write_text(self._path(key), json.dumps({"key": key, "value": _clean(value)}))

    def _result_path(self, tag: str) -> Path:
        return self.folder / f"result-{_digest(tag, 16)}.json"

    def get_result(self, tag: str):
        return self._read(self._result_path(tag))

    def put_result(self, tag: str, value) -> None:
        self._ensure()
        atomic.write_text(self._result_path(tag), json.dumps({"key": tag, "value": _clean(value)}))

    def cell_count(self) -> int:
        d = self.folder / "cells"
        return len(list(d.glob("*.json"))) if d.exists() else 0


class ScoreCache:
    """The cache folder; :meth:`sweep` gives the store of one sweep."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_root()

    def sweep(self, meta: dict) -> SweepStore:
        meta = dict(meta, cache_version=CACHE_VERSION)
        key = _digest(json.dumps(_clean(meta), sort_keys=True, default=str), 32)
        return SweepStore(self.root / key, meta)

    def size_bytes(self) -> int:
        if not self.root.exists():
            return 0
        return sum(f.stat().st_size for f in self.root.rglob("*") if f.is_file())

    def clear(self) -> None:
        if self.root.exists():
            shutil.rmtree(self.root)


__all__ = ["ScoreCache", "SweepStore", "default_root", "CACHE_VERSION"]
