"""Rebuild tests/data/sklearn_mlp_digits.onnx: a model exported by another framework than torch.

scikit-learn's MLP classifier (behind its StandardScaler) trained on the first 1200 of
scikit-learn's bundled 8x8 digits, exported by skl2onnx (``ai.onnx.ml`` Scaler and
ArrayFeatureExtractor around MatMul / Add / Relu / Softmax; outputs ``label`` and
``probabilities``). The other 597 digits are written beside it as held-out data. quantviz does
not depend on either package; run this in a separate environment:

    python -m venv /tmp/skl && /tmp/skl/bin/pip install scikit-learn skl2onnx
    /tmp/skl/bin/python scripts/make_sklearn_onnx.py [--out tests/data]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from sklearn.datasets import load_digits
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skl2onnx import to_onnx


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "tests" / "data"))
    out = Path(ap.parse_args().out)
    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    clf = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=400, random_state=0))
    clf.fit(x[:1200], y[:1200])
    model = to_onnx(clf, x[:1], options={MLPClassifier: {"zipmap": False}}, target_opset=17)
    onnx.save(model, str(out / "sklearn_mlp_digits.onnx"))
    np.savez_compressed(out / "sklearn_digits_heldout.npz", x=x[1200:], y=y[1200:].astype(np.int64))
    print(f"held-out accuracy (scikit-learn): {clf.score(x[1200:], y[1200:]):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
