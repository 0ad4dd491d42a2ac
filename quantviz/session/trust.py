"""Which recipe files the user agreed to run (no Qt).

A recipe is Python code: opening one runs it. The app asks before running a
recipe the first time and remembers a "yes" by the SHA-256 of the file's
bytes, so an edited file (a different hash) is asked about again. The store
is ``<data dir>/trusted_recipes.json``, written atomically; a damaged store
counts as empty (the user is asked again), it never stops the app.

Only the recipe file itself is hashed; modules it imports from its folder are
not covered, which the question says.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from ..core.errors import QuantvizError
from ..io import atomic
from .paths import data_dir, ensure_dir

STORE_NAME = "trusted_recipes.json"
STORE_VERSION = 1


def file_hash(path: str | Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError as exc:
        raise QuantvizError(f"{Path(path).name}: cannot be read ({exc.strerror or exc})") from None
    return h.hexdigest()


def is_recipe(reference: str) -> bool:
    p = Path(str(reference)).expanduser()
    return p.suffix.lower() == ".py" and p.is_file()


def question(path: str | Path) -> str:
    """The text the app shows before running a recipe it has not run before."""
    name = Path(path).name
    return (f"{name} is a Python recipe: opening it runs its code with your permissions, "
            f"including any modules it imports from its folder. Run it only if you trust where it came from.")


class TrustStore:
    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else data_dir() / STORE_NAME

    def _read(self) -> dict:
        try:
            obj = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return {}
        trusted = obj.get("trusted") if isinstance(obj, dict) else None
        return dict(trusted) if isinstance(trusted, dict) else {}

    def _write(self, trusted: dict) -> None:
        ensure_dir(self.path.parent)
        atomic.write_text(self.path, json.dumps({"version": STORE_VERSION, "trusted": trusted}, indent=1) + "\n")

    def is_trusted(self, path: str | Path) -> bool:
        try:
            digest = file_hash(path)
        except QuantvizError:
            return False
        return digest in self._read()

    def needs_confirmation(self, reference: str) -> bool:
        """True for a recipe file the user has not agreed to run in its current form."""
        return is_recipe(reference) and not self.is_trusted(reference)

    def trust(self, path: str | Path) -> str:
        """Remember that the user agreed to run this file's current content."""
        digest = file_hash(path)
        trusted = self._read()
        trusted[digest] = {"path": str(Path(path).resolve()), "time": time.time()}
        self._write(trusted)
        return digest

    def revoke(self, path: str | Path) -> None:
        trusted = self._read()
        try:
            digest = file_hash(path)
        except QuantvizError:
            return
        if trusted.pop(digest, None) is not None:
            self._write(trusted)


__all__ = ["TrustStore", "file_hash", "is_recipe", "question"]
