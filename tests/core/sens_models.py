"""Small models for the sensitivity / search / incremental tests."""
from __future__ import annotations

import torch
from torch import nn

from quantviz.core.model.data import Dataset
from quantviz.core.sources.base import ModelBundle
from quantviz.io.config import preset
from quantviz.session import Session


class ResNetish(nn.Module):
    """Residual adds, an in-place ReLU and an in-place add: not a chain."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 6)

    def forward(self, x):
        y = self.relu(self.bn(self.stem(x)))
        z = self.a(y)
        z += y
        z = torch.relu(self.b(z)) + y
        return self.fc(z.mean((2, 3)))


class TinyTransformer(nn.Module):
    """Embedding, two pre-norm blocks (attention + MLP), a head tied to the embedding."""

    def __init__(self, vocab=32, dim=32, blocks=2, tie=True):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList()
        for _ in range(blocks):
            blk = nn.Module()
            blk.ln1, blk.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            blk.qkv = nn.Linear(dim, 3 * dim)
            blk.proj = nn.Linear(dim, dim)
            blk.up, blk.down = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)
            self.blocks.append(blk)
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        if tie:
            self.head.weight = self.emb.weight

    def forward(self, idx):
        h = self.emb(idx)
        for blk in self.blocks:
            q, k, v = blk.qkv(blk.ln1(h)).chunk(3, dim=-1)
            att = torch.softmax(q @ k.transpose(-2, -1) / 5.0, dim=-1)
            h = h + blk.proj(att @ v)
            h = h + blk.down(torch.relu(blk.up(blk.ln2(h))))
        return self.head(self.ln(h))


def residual_data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Dataset(torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 6, (n,), generator=g), name="res")


def transformer_model(seed=0, tie=True):
    torch.manual_seed(seed)
    m = TinyTransformer(tie=tie).eval()
    with torch.no_grad():  # make the layers really differ: heavy outliers in a few weights
        w = m.blocks[1].up.weight
        w[:, :3] *= 25.0
        m.blocks[0].qkv.weight[0, :] *= 15.0
    return m


def transformer_data(model, n=48, seq=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 32, (n, seq), generator=g)
    with torch.no_grad():
        y = model(x).argmax(-1)
    flip = torch.rand(y.shape, generator=g) < 0.1
    y = torch.where(flip, torch.randint(0, 32, y.shape, generator=g), y)
    return Dataset(x, y, name="tokens")


def make_session(model, data, preset_name="W8", batch_size=16):
    bundle = ModelBundle(model=model, name="test", kind="recipe", reference="test", calib=data, eval=data)
    s = Session(bundle, eval_data=data, calib_data=data, config=preset(preset_name), batch_size=batch_size)
    s.prepare()
    return s
