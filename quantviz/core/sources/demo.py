"""The bundled demo: DemoNet on the 8x8 digits data (see ``demo_model.py``)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..model.data import DataError
from ..errors import SourceError, one_line
from .base import ModelBundle
from .datafiles import load_npz
from .demo_model import DemoNet

DEMO_NAME = "digits-cnn (demo)"
WEIGHTS = "demo_cnn.pt"
CALIB = "digits_calib.npz"
EVAL = "digits_test.npz"
TRAIN = "digits_train.npz"  # optional: the training split, for quantization-aware training


def load_demo(folder: Path, reference: str = "demo") -> ModelBundle:
    """DemoNet with the shipped weights, calibration and evaluation data."""
    missing = [f for f in (WEIGHTS, CALIB, EVAL) if not (folder / f).is_file()]
    if missing:
        raise SourceError(
            f"demo: {', '.join(missing)} not found in {folder} (run resources/make_demo.py or set QUANTVIZ_RESOURCES)"
        )
    model = DemoNet()
    try:
        state = torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - a damaged install
        raise SourceError(f"{WEIGHTS}: the demo weights cannot be loaded ({one_line(exc)}); run resources/make_demo.py") from exc
    model.eval()
    try:
        calib = load_npz(folder / CALIB)
        evald = load_npz(folder / EVAL)
        train = load_npz(folder / TRAIN) if (folder / TRAIN).is_file() else None
    except DataError as exc:
        raise SourceError(f"demo: {one_line(exc)}") from exc
    meta: dict = {"path": str(folder)}
    meta_file = folder / "meta.json"
    if meta_file.is_file():
        try:
            meta.update(json.loads(meta_file.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            pass
    return ModelBundle(
        model=model,
        name=DEMO_NAME,
        kind="demo",
        reference=reference,
        calib=calib,
        eval=evald,
        train=train,
        meta=meta,
    )
