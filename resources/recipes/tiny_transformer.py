"""A quantviz recipe: a small Linear-heavy transformer classifier (random weights).

Open it with ``quantviz resources/recipes/tiny_transformer.py``. It follows the
contract of ``resources/recipe_template.py``: a token-sequence classifier
(embedding, two pre-norm encoder blocks written with plain ``nn.Linear``
layers so every projection is a quantizable layer, mean pooling, a linear
head) on random token sequences, labelled by the float model itself (float
accuracy is 100 %, quantization shows as a drop). Weights come from a fixed
seed; nothing is downloaded. Most of its parameters and time sit in Linear
layers, which makes it the counterpart of the conv-heavy demo for measuring
real int8 / int4 kernels (``quantviz benchmark``).
"""
import math

import torch
from torch import nn

NAME = "tiny-transformer"
SEED = 0
VOCAB = 256
SEQ = 32
DIM = 128
HEADS = 4
FF = 512
LAYERS = 2
NUM_CLASSES = 8


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.heads

        def split(y):
            return y.reshape(b, t, h, d // h).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // h), dim=-1)
        return self.o((att @ v).transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, ff: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ff)
        self.fc2 = nn.Linear(ff, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm2(x))))


class TinyTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, DIM)
        self.pos = nn.Parameter(torch.randn(SEQ, DIM) * 0.02)
        self.blocks = nn.ModuleList(Block(DIM, HEADS, FF) for _ in range(LAYERS))
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, NUM_CLASSES)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.pos[: tokens.shape[1]]
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x).mean(dim=1))


def build_model() -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        return TinyTransformer()


def _samples(offset: int, n: int):
    gen = torch.Generator().manual_seed(SEED + 1 + offset)
    x = torch.randint(0, VOCAB, (n, SEQ), generator=gen)
    with torch.no_grad():
        y = build_model().eval()(x).argmax(dim=1)
    return x, y


def calibration_data():
    x, _ = _samples(0, 128)
    return (x,)


def evaluation_data():
    x, y = _samples(1, 256)
    return {"x": x, "y": y}


def training_data():
    """For quantization-aware training: fresh random sequences, labelled by the float model."""
    x, y = _samples(2, 1024)
    return {"x": x, "y": y}
