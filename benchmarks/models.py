"""Model and data builders shared by the benchmarks (plain torch, no torchvision).

* :func:`build_resnet18` -- the classic BasicBlock ResNet-18 (11.2 M
  parameters for 1000 classes, ~11.2 M for 10) with random weights and
  randomised BatchNorm statistics, so that folding and quantization see
  realistic, non-trivial tensors.
  ``width`` narrows it (the tests' fixture uses 8).
* :func:`random_dataset` -- a :class:`quantviz.core.model.data.Dataset` of
  standard-normal inputs with integer labels, reproducible from a seed.
* :func:`build_llama` -- a Llama-layout causal LM with random weights saved as a
  Hugging Face folder, and random token ids as an ``.npz`` (``LLAMA_134M``: the
  ~134M-parameter layout of the memory and GPU benchmarks).
"""
from __future__ import annotations

from pathlib import Path

import quantviz  # noqa: F401  (first: it makes OpenMP wait passively before torch loads it)
import torch
from torch import nn

from quantviz.core.model.data import Dataset


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
    """BasicBlock ResNet-18 ([2, 2, 2, 2] blocks, widths ``width`` x 1, 2, 4, 8: 64..512 by default)."""

    def __init__(self, num_classes: int = 10, width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        layers, cin = [], width
        for i, c in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(BasicBlock(cin, c, stride), BasicBlock(c, c)))
            cin = c
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

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


LLAMA_134M = dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                  num_key_value_heads=12, vocab_size=32000)


def build_llama(folder: Path, data: Path, *, size: dict, seqs: int, tokens: int, max_positions: int) -> int:
    """Save a ``LlamaForCausalLM`` of ``size`` (seed 0, untied embeddings) to ``folder`` and
    ``seqs`` random sequences of ``tokens`` ids (all real) to ``data``; returns its parameter count."""
    import numpy as np
    import transformers

    transformers.utils.logging.set_verbosity_error()
    cfg = transformers.LlamaConfig(max_position_embeddings=max_positions, tie_word_embeddings=False, **size)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    model.save_pretrained(str(folder))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (seqs, tokens), generator=g)
    np.savez(data, input_ids=ids.numpy(), attention_mask=np.ones_like(ids.numpy()))
    return sum(p.numel() for p in model.parameters())


__all__ = ["BasicBlock", "ResNet18", "build_resnet18", "random_dataset", "build_llama", "LLAMA_134M"]
