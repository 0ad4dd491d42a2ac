"""Bundled demo model: a small CNN for the scikit-learn 8x8 digits dataset.

Input: float32 tensor of shape (N, 1, 8, 8) with pixel values scaled to [0, 1]
(``load_digits().images / 16``). Output: logits of shape (N, 10).

Layer names (as seen by ``named_modules()``)::

    features.0   Conv2d(1, 4, 3, padding=1)     8x8
    features.1   BatchNorm2d(4)
    features.2   ReLU
    features.3   Conv2d(4, 32, 3, padding=1)    8x8
    features.4   BatchNorm2d(32)
    features.5   ReLU
    features.6   MaxPool2d(2)                   -> 4x4
    features.7   Conv2d(32, 64, 3, padding=1)   4x4
    features.8   BatchNorm2d(64)
    features.9   ReLU
    features.10  MaxPool2d(2)                   -> 2x2
    classifier.0 Flatten
    classifier.1 Linear(256, 64)
    classifier.2 ReLU
    classifier.3 Linear(64, 10)

Every BatchNorm2d directly follows a Conv2d, so conv+BN folding applies.

The first conv is deliberately narrow (4 channels, 9 weights per channel): it has
little redundancy, so it is by far the most quantization-sensitive layer, which
makes the demo show clear per-layer differences at low bit widths.

Trained weights ship as ``resources/demo/demo_cnn.pt`` (a state_dict), produced by
``resources/make_demo.py``.
"""

import torch
from torch import nn

__all__ = ["DemoNet", "build_demo_model", "INPUT_SHAPE", "NUM_CLASSES"]

INPUT_SHAPE = (1, 8, 8)
NUM_CLASSES = 10


class DemoNet(nn.Module):
    """Small conv net (~37k parameters) for 8x8 digit images."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, kernel_size=3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(inplace=False),
            nn.Conv2d(4, 32, kernel_size=3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=False),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=False),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 2 * 2, 64),
            nn.ReLU(inplace=False),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build_demo_model() -> DemoNet:
    """Return a freshly initialised (untrained) ``DemoNet``."""
    return DemoNet()
