"""Atomic file writes: a temporary file in the target folder, then rename.

A reader (or a crash) sees either the old file or the complete new one,
never a partial file; a failed write leaves nothing behind.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from ..core.errors import QuantvizError


class OutputExists(QuantvizError):
    pass


def check_writable(path: str | os.PathLike, force: bool) -> Path:
    p = Path(path)
    if p.exists() and not force:
        raise OutputExists(f"{p}: already exists (pass --force to replace it)")
    if p.exists() and p.is_dir():
        raise QuantvizError(f"{p}: is a directory")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise QuantvizError(f"{p}: folder {parent} does not exist")
    return p


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, force: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it over ``path``."""
    target = check_writable(path, force)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=str(target.parent))
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        _give_mode(tmp_path, target)
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def check_writable_dir(path: str | os.PathLike, force: bool) -> Path:
    """A folder output (a Hugging Face folder): an existing one is replaced only with ``force``."""
    p = Path(path)
    if p.exists() and not force:
        raise OutputExists(f"{p}: already exists (pass --force to replace it)")
    if p.exists() and not p.is_dir():
        raise QuantvizError(f"{p}: is a file, not a folder")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise QuantvizError(f"{p}: folder {parent} does not exist")
    return p


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, force: bool = True) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; on success it replaces ``path``
    (an old folder is moved aside first and removed after), on failure it is removed."""
    import shutil

    target = check_writable_dir(path, force)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=str(target.parent)))
    try:
        yield tmp
        if os.name == "posix":  # mkdtemp makes the folder 0700; give it what mkdir would
            os.chmod(tmp, 0o777 & ~_umask())
            for f in tmp.iterdir():
                if f.is_file():
                    os.chmod(f, 0o666 & ~_umask())
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=str(target.parent)))
            os.replace(target, old / "d")
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    try:  # Linux says it without changing it (os.umask would, briefly, for every thread)
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _give_mode(tmp: Path, target: Path) -> None:
    """The mode ``open(target, "w")`` would give: the existing file's, else 0666 under the umask.

    ``mkstemp`` makes its file 0600; left so, every export would be private.
    """
    if os.name != "posix":
        return
    try:
        mode = target.stat().st_mode & 0o7777
    except OSError:
        mode = 0o666 & ~_umask()
    os.chmod(tmp, mode)


def write_bytes(path: str | os.PathLike, data: bytes, *, force: bool = True) -> Path:
    with atomic_path(path, force=force) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, *, force: bool = True) -> Path:
    return write_bytes(path, text.encode("utf-8"), force=force)


def write_with(path: str | os.PathLike, writer: Callable[[Path], None], *, force: bool = True) -> Path:
    """Call ``writer(tmp_path)`` and atomically move the result to ``path``."""
    with atomic_path(path, force=force) as tmp:
        writer(tmp)
    return Path(path)
