"""Data files: ``.npz``, ``.pt`` (tensor or ``{"x", "y"}``), image folders.

Every failure a user can cause raises :class:`~quantviz.core.model.data.DataError`
with a one-line message that names the file.

Formats
-------
``.npz``
    array ``x`` (required, sample axis first) and optional ``y`` (labels).
    A file without ``x`` but with ``input_ids`` (and optionally
    ``attention_mask`` / ``token_type_ids``) is read as tokenized text.
``.pt`` / ``.pth``
    ``torch.save`` of a tensor (inputs only) or of a dict ``{"x": ..., "y": ...}``;
    read with ``torch.load(weights_only=True)`` (never runs code).
folder of images
    class sub-folders (``cats/1.png``, ``dogs/2.png``: labels are the sorted
    folder names' indices) or images directly in the folder (no labels).
    All images are resized to the first image's size; grayscale when every
    image is grayscale, RGB otherwise; float32 in [0, 1], layout NCHW.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ..model.data import DataError, Dataset
from ..errors import one_line

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids")
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "P;gray"}


# --------------------------------------------------------------------------- helpers


def _as_tensor(value: Any, what: str, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    try:
        arr = np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - any conversion failure is the data's fault
        raise DataError(f"{name}: {what} cannot be read as an array ({one_line(exc)})") from exc
    if arr.dtype == object:
        raise DataError(f"{name}: {what} is not a numeric array (dtype object)")
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{name}: {what} is not a numeric array (dtype {arr.dtype})")
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr))


def _check_finite(x: Any, name: str) -> None:
    tensors = x.values() if isinstance(x, Mapping) else (x if isinstance(x, (tuple, list)) else (x,))
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise DataError(f"{name}: inputs hold {bad} non-finite values (NaN or inf)")


def make_dataset(x: Any, y: Any = None, name: str = "data", meta: dict | None = None) -> Dataset:
    """Build a checked :class:`Dataset` from arrays / tensors / dicts of them.

    ``x`` may be a tensor, a numpy array, a dict of those (keyword inputs) or a
    tuple of those (positional inputs). Non-finite inputs, empty data and label
    counts that do not match are rejected with a :class:`DataError`.
    """
    if isinstance(x, Mapping):
        if not x:
            raise DataError(f"{name}: inputs are an empty dict")
        xs: Any = {str(k): _as_tensor(v, f"input {k!r}", name) for k, v in x.items()}
        lens = {k: (int(v.shape[0]) if v.dim() else 0) for k, v in xs.items()}
        if len(set(lens.values())) > 1:
            raise DataError(f"{name}: inputs have different sample counts {lens}")
    elif isinstance(x, (tuple, list)) and x and not isinstance(x[0], (int, float)):
        xs = tuple(_as_tensor(v, f"input {i}", name) for i, v in enumerate(x))
    elif x is None:
        raise DataError(f"{name}: no inputs (x is None)")
    else:
        xs = _as_tensor(x, "x", name)
        if xs.dim() == 0:
            raise DataError(f"{name}: x is a single number, not an array of samples")
    yt = None
    if y is not None:
        yt = _as_tensor(y, "y", name)
        if yt.dim() == 0:
            raise DataError(f"{name}: y is a single number, not one label per sample")
    _check_finite(xs, name)
    return Dataset(xs, yt, name=name, meta=dict(meta or {}))


def coerce_dataset(value: Any, name: str) -> Dataset:
    """Turn what a recipe returns into a Dataset.

    Accepts a :class:`Dataset`, a tuple ``(x, y)`` or ``(x,)``, a dict
    ``{"x": ..., "y": ...}`` (``y`` optional) or a bare tensor / array.
    """
    if isinstance(value, Dataset):
        _check_finite(value.x, name)
        if value.name == "data":  # the default: say where it came from
            value.name = name
        return value
    if isinstance(value, Mapping):
        if "x" not in value:
            raise DataError(f"{name}: a data dict needs key 'x' (has {sorted(map(str, value))})")
        return make_dataset(value["x"], value.get("y"), name)
    if isinstance(value, (tuple, list)):
        if len(value) == 1:
            return make_dataset(value[0], None, name)
        if len(value) == 2:
            return make_dataset(value[0], value[1], name)
        raise DataError(f"{name}: expected (x, y) or (x,), got a {type(value).__name__} of {len(value)} items")
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return make_dataset(value, None, name)
    raise DataError(f"{name}: expected a Dataset, (x, y), (x,) or {{'x': ..., 'y': ...}}, got {type(value).__name__}")


# --------------------------------------------------------------------------- formats


def load_npz(path: Path) -> Dataset:
    name = path.name
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
            keys = list(npz.files)
            if "x" in keys:
                x: Any = npz["x"]
            elif "input_ids" in keys:
                x = {k: npz[k] for k in TOKEN_KEYS if k in keys}
            else:
                raise DataError(f"{name}: no array 'x' (the file has {keys or 'no arrays'}); save inputs as x=... and labels as y=...")
            y = npz["y"] if "y" in keys else None
    except DataError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise DataError(f"{name}: holds object (pickled) arrays, which are not loaded; save numeric arrays") from exc
        raise DataError(f"{name}: not a readable .npz file ({one_line(exc)})") from exc
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise DataError(f"{name}: not a readable .npz file ({one_line(exc)})") from exc
    return make_dataset(x, y, name)


def load_torch_data(path: Path) -> Dataset:
    name = path.name
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        if "weights only load failed" in str(exc).lower():
            raise DataError(
                f"{name}: holds pickled Python objects, which are not loaded (unpickling could run code from the file; "
                "torch.load(weights_only=True) refused it); save a tensor or a dict {'x': tensor, 'y': tensor}"
            ) from exc
        raise DataError(
            f"{name}: cannot be read as tensor data with torch.load(weights_only=True) ({one_line(exc)}); "
            "save a tensor or a dict {'x': tensor, 'y': tensor}"
        ) from exc
    if isinstance(obj, torch.Tensor):
        return make_dataset(obj, None, name)
    if isinstance(obj, Mapping):
        if "x" in obj:
            return make_dataset(obj["x"], obj.get("y"), name)
        if "input_ids" in obj:
            return make_dataset({k: obj[k] for k in TOKEN_KEYS if k in obj}, obj.get("y", obj.get("labels")), name)
        raise DataError(f"{name}: a data dict needs key 'x' (has {sorted(map(str, obj))[:10]})")
    if isinstance(obj, (tuple, list)) and obj and isinstance(obj[0], torch.Tensor):
        return coerce_dataset(tuple(obj), name)
    raise DataError(f"{name}: holds a {type(obj).__name__}; save a tensor or a dict {{'x': tensor, 'y': tensor}}")


def _image_files(folder: Path) -> tuple[list[Path], list[int] | None, list[str]]:
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    direct = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if subdirs:
        files, labels, classes = [], [], []
        for d in subdirs:
            imgs = sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not imgs:
                continue
            classes.append(d.name)
            files.extend(imgs)
            labels.extend([len(classes) - 1] * len(imgs))
        if files:
            return files, labels, classes
    return direct, None, []


def load_image_folder(folder: Path) -> Dataset:
    name = folder.name + "/"
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - pillow ships with the test env
        raise DataError(f"{name}: reading image folders needs Pillow: pip install quantviz[images]") from exc
    files, labels, classes = _image_files(folder)
    if not files:
        raise DataError(
            f"{name}: no images found (expected class sub-folders of {', '.join(sorted(IMAGE_SUFFIXES)[:5])}, ... files)"
        )
    images = []
    for f in files:
        try:
            with Image.open(f) as im:
                im.load()
                images.append(im.copy())
        except Exception as exc:  # noqa: BLE001 - PIL raises OSError, SyntaxError, DecompressionBombError, ...
            rel = f.relative_to(folder.parent)
            raise DataError(f"{rel}: not a readable image ({one_line(exc)})") from exc
    gray = all(im.mode in _GRAY_MODES for im in images)
    mode, channels = ("L", 1) if gray else ("RGB", 3)
    size = images[0].size  # (width, height)
    arrays = []
    for im in images:
        im = im.convert(mode)
        if im.size != size:
            im = im.resize(size, Image.BILINEAR)
        a = np.asarray(im, dtype=np.float32) / 255.0
        arrays.append(a[None] if channels == 1 else a.transpose(2, 0, 1))
    x = np.stack(arrays)
    y = np.asarray(labels, dtype=np.int64) if labels is not None else None
    meta = {"classes": classes, "files": [str(f) for f in files], "image_size": [size[1], size[0]], "mode": mode}
    return make_dataset(x, y, name, meta)


def load_file(path: str | Path) -> Dataset:
    """Load a data file or image folder (not text: that needs a tokenizer)."""
    p = Path(path).expanduser()
    name = p.name or str(p)
    if not p.exists():
        raise DataError(f"{name}: no such file or folder ({p})")
    if p.is_dir():
        return load_image_folder(p)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise DataError(f"{name}: cannot be read ({one_line(exc)})") from exc
    if size == 0:
        raise DataError(f"{name}: the file is empty")
    suffix = p.suffix.lower()
    if suffix == ".npz":
        return load_npz(p)
    if suffix == ".npy":
        try:
            with open(p, "rb") as fh:
                arr = np.load(fh, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"{name}: not a readable .npy file ({one_line(exc)})") from exc
        return make_dataset(arr, None, name)
    if suffix in (".pt", ".pth"):
        return load_torch_data(p)
    if suffix == ".txt":
        raise DataError(f"{name}: text data needs a model with a tokenizer (a Hugging Face model folder)")
    if suffix in IMAGE_SUFFIXES:
        raise DataError(f"{name}: a single image is not a data set; give the folder of images instead")
    raise DataError(f"{name}: unknown data format {suffix or '(no extension)'}; use .npz (x, y), .pt, or a folder of images")
