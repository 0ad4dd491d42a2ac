"""Model and data builders shared by the benchmarks (plain torch, no torchvision).

* :func:`build_resnet18` -- the classic BasicBlock ResNet-18 (11.2 M
  parameters for 1000 classes, ~11.2 M for 10) with random weights and
  randomised BatchNorm statistics, so that folding and quantization see
  realistic, non-trivial tensors.
* :func:`random_dataset` -- a :class:`quantviz.core.data.Dataset` of
  standard-normal inputs with integer labels, reproducible from a seed.
"""
from __future__ import annotations

import torch
from torch import nn

from quantviz.core.data import Dataset


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN pairs with an identity (or 1x1 conv-BN) shortcut."""

    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """BasicBlock ResNet-18 ([2, 2, 2, 2] blocks, widths 64..512)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        layers, cin = [], 64
        for i, width in enumerate((64, 128, 256, 512)):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(BasicBlock(cin, width, stride), BasicBlock(width, width)))
            cin = width
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build_resnet18(num_classes: int = 10, seed: int = 0) -> nn.Module:
    """A ResNet-18 in eval mode with random weights and random BN statistics."""
    g = torch.Generator().manual_seed(seed)
    model = ResNet18(num_classes)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=g)
            elif isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.1 * torch.randn(c, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
    return model.eval()


def random_dataset(n: int, shape: tuple[int, ...], num_classes: int = 10, seed: int = 0,
                   name: str = "random") -> Dataset:
    """``n`` standard-normal samples of ``shape`` with uniform integer labels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((int(n), *shape), generator=g)
    y = torch.randint(0, num_classes, (int(n),), generator=g)
    return Dataset(x, y, name=name)


__all__ = ["BasicBlock", "ResNet18", "build_resnet18", "random_dataset"]
