"""Train the bundled quantviz demo model (DemoNet on scikit-learn 8x8 digits).

Reproducible: fixed seed for numpy (data split) and torch (init + shuffling),
single-process data handling, deterministic torch algorithms, 2 CPU threads.

Data: ``sklearn.datasets.load_digits()`` (1797 images, 8x8, values 0..16), scaled
to [0, 1] float32 and reshaped to (N, 1, 8, 8). A ``numpy.random.RandomState(SEED)``
permutation splits it into

* train: the first ``TRAIN_SAMPLES`` (1200) permuted samples,
* test:  the remaining 597 samples (the evaluation split, never seen in training).

The calibration split (256 samples) is a fixed random subset of the *train* part
(drawn with the same RandomState), i.e. training-distribution data as it would be
available for post-training quantization calibration; it is disjoint from test.

Outputs (in ``--out``, default: the ``demo`` folder next to this script):

* ``demo_cnn.pt``        state_dict of the trained DemoNet (``torch.load(..., weights_only=True)``)
* ``digits_test.npz``    ``x`` float32 (N,1,8,8), ``y`` int64 -- evaluation split
* ``digits_calib.npz``   ``x`` float32 (256,1,8,8), ``y`` int64 -- calibration split
* ``digits_train.npz``   ``x`` float32 (1200,1,8,8), ``y`` int64 -- the training split
  (for quantization-aware training)
* ``meta.json``          name, float accuracy, sample counts, seed, torch version

Usage::

    python resources/make_demo.py [--out DIR] [--epochs N]
    python resources/make_demo.py --splits-only   # write the .npz splits, keep the weights
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent

SEED = 0
TRAIN_SAMPLES = 1200
CALIB_SAMPLES = 256
EPOCHS = 60
BATCH_SIZE = 32
LR = 2e-3


def _load_demonet():
    """Import DemoNet; fall back to loading the module file directly."""
    try:
        sys.path.insert(0, str(REPO_ROOT))
        from quantviz.core.sources.demo_model import DemoNet  # noqa: WPS433

        return DemoNet
    except ImportError:
        path = REPO_ROOT / "quantviz" / "core" / "sources" / "demo_model.py"
        spec = importlib.util.spec_from_file_location("_quantviz_demo_model", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.DemoNet


def load_splits(seed: int = SEED):
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    rng = np.random.RandomState(seed)
    perm = rng.permutation(len(x))
    train_idx, test_idx = perm[:TRAIN_SAMPLES], perm[TRAIN_SAMPLES:]
    calib_idx = np.sort(rng.choice(train_idx, size=CALIB_SAMPLES, replace=False))
    return (x[train_idx], y[train_idx]), (x[calib_idx], y[calib_idx]), (x[test_idx], y[test_idx])


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    pred = model(torch.from_numpy(x)).argmax(dim=1).numpy()
    return float((pred == y).mean())


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), BATCH_SIZE):
            idx = order[i : i + BATCH_SIZE]
            opt.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        if (epoch + 1) % 10 == 0 or epoch == 0:
            print(f"epoch {epoch + 1:3d}/{epochs}  loss {total / len(xt):.4f}")


def write_splits(out: Path, train, calib, test) -> None:
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "digits_test.npz", x=test[0], y=test[1])
    np.savez_compressed(out / "digits_calib.npz", x=calib[0], y=calib[1])
    np.savez_compressed(out / "digits_train.npz", x=train[0], y=train[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "demo", help="output directory")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--splits-only", action="store_true", help="write the data splits only (no training)")
    args = parser.parse_args(argv)
    if args.splits_only:
        write_splits(args.out, *load_splits(SEED))
        print(f"wrote the data splits to {args.out}")
        return 0

    torch.set_num_threads(2)
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    torch.use_deterministic_algorithms(True)

    (x_tr, y_tr), (x_ca, y_ca), (x_te, y_te) = load_splits(SEED)
    model = _load_demonet()()

    t0 = time.perf_counter()
    train(model, x_tr, y_tr, args.epochs, SEED)
    elapsed = time.perf_counter() - t0
    model.eval()
    acc = accuracy(model, x_te, y_te)

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "demo_cnn.pt")
    write_splits(out, (x_tr, y_tr), (x_ca, y_ca), (x_te, y_te))
    meta = {
        "name": "digits-cnn",
        "float_accuracy": round(acc, 6),
        "train_samples": int(len(x_tr)),
        "test_samples": int(len(x_te)),
        "calib_samples": int(len(x_ca)),
        "seed": SEED,
        "epochs": args.epochs,
        "torch_version": torch.__version__,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"training time: {elapsed:.1f} s")
    print(f"test accuracy: {acc:.4f} ({len(x_te)} samples)")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
