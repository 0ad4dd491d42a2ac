"""Exact model size for a hand-computed config."""
import math

import pytest
import torch
from torch import nn

from quantviz.core.sim.fakequant import QuantSim
from quantviz.core.model.layers import inventory
from quantviz.core.model.size import float_model_bytes, layer_weight_bytes, model_size, num_groups
from quantviz.core.numerics.spec import LayerSpec, WeightSpec


def _model():
    return nn.Sequential(
        nn.Linear(10, 6),                  # "0": 60 weights + 6 bias
        nn.Conv2d(3, 4, 3, bias=False),    # "1": 108 weights
        nn.BatchNorm1d(5),                 # "2": 10 params + 10 float buffers (+ int counter, not counted)
        nn.Linear(10, 3),                  # "3": 30 weights + 3 bias
        nn.Linear(5, 2, bias=False),       # "4": 10 weights, stays float
        nn.ConvTranspose2d(2, 5, 2),       # "5": weight (2, 5, 2, 2) = 40, bias 5
    ).eval()


SPECS = {
    "0": LayerSpec(WeightSpec(bits=8, granularity="per_tensor", symmetric=True)),
    "1": LayerSpec(WeightSpec(bits=4, granularity="per_channel", symmetric=False)),
    "3": LayerSpec(WeightSpec(bits=3, granularity="per_group", group_size=4, symmetric=False)),
    "4": LayerSpec(WeightSpec(bits=None)),
    "5": LayerSpec(WeightSpec(bits=5, granularity="per_channel", symmetric=True)),
}


def test_size_matches_a_hand_computation():
    model = _model()
    layers = inventory(model)
    rep = model_size(model, layers, SPECS)
    other = 4 * (6 + 3 + 5) + 4 * (5 + 5) + 4 * (5 + 5)  # biases, BN affine, BN running stats
    expected_layers = {
        "0": 60 + 4,                           # 60 bytes + one float32 scale
        "1": math.ceil(108 * 4 / 8) + 4 * (4 + 1),   # 54 bytes + per channel scale and 1-byte zero point
        "3": math.ceil(30 * 3 / 8) + 9 * (4 + 1),    # 12 bytes + 3 rows x ceil(10/4) groups
        "4": 10 * 4,                           # float
        "5": math.ceil(40 * 5 / 8) + 5 * 4,    # 25 bytes + one scale per output channel (axis 1)
    }
    assert rep.per_layer == expected_layers
    assert other == 136
    assert rep.quantized_bytes == other + sum(expected_layers.values()) == 136 + 64 + 74 + 57 + 40 + 45
    assert rep.float_bytes == other + 4 * (60 + 108 + 30 + 10 + 40) == float_model_bytes(model)
    assert rep.compression == pytest.approx(rep.float_bytes / rep.quantized_bytes)
    assert rep.element_bits == pytest.approx((60 * 8 + 108 * 4 + 30 * 3 + 10 * 32 + 40 * 5) / 248)
    d = rep.to_dict()
    assert set(d) == {"float_bytes", "quantized_bytes", "compression", "avg_bits", "element_bits", "float_avg_bits"}
    assert d["avg_bits"] == pytest.approx(8 * sum(rep.per_layer.values()) / 248)


def test_layer_without_spec_counts_as_float_and_group_counts_match_the_engine():
    model = _model()
    layers = {l.name: l for l in inventory(model)}
    assert layer_weight_bytes(layers["0"], None) == 240
    sim = QuantSim(model)
    for name, spec in SPECS.items():
        q = sim.quantize_weight(name, spec.weight)
        if q is not None:
            assert q.qparams.groups == num_groups(layers[name], spec)


def test_eight_bit_weights_are_about_four_times_smaller():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 256), nn.Linear(256, 10)).eval()
    layers = inventory(model)
    rep = model_size(model, layers, {l.name: LayerSpec(WeightSpec(bits=8)) for l in layers})
    assert 3.8 < rep.compression < 4.0 and rep.element_bits == 8 and 8 < rep.avg_bits < 8.2


class _Tied(nn.Module):
    """A language-model head tied to its embedding (GPT-2 style)."""

    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(50, 16)
        self.mid = nn.Linear(16, 16)
        self.head = nn.Linear(16, 50, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, ids):
        return self.head(self.mid(self.wte(ids)))


def test_a_tied_weight_is_counted_once():
    m = _Tied()
    layers = inventory(m)
    assert {"wte", "head"} <= {l.name for l in layers}
    float_rep = model_size(m, layers, {})
    assert float_rep.float_bytes == float_model_bytes(m)  # 50x16 stored once, not twice
    w8 = LayerSpec(weight=WeightSpec(bits=8))
    same = model_size(m, layers, {"wte": w8, "head": w8, "mid": w8})
    w4 = LayerSpec(weight=WeightSpec(bits=4))
    differ = model_size(m, layers, {"wte": w8, "head": w4, "mid": w8})
    tied_w8 = same.per_layer["wte"]
    # one 8-bit copy when both uses share a setting; a second (4-bit) copy when they differ
    assert differ.quantized_bytes == same.quantized_bytes + differ.per_layer["head"]
    assert same.quantized_bytes == float_rep.float_bytes - 4 * (50 * 16 + 16 * 16) + tied_w8 + same.per_layer["mid"]


def test_float_bits_per_weight_follow_the_checkpoint_dtype():
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 8)).eval()
    layers = inventory(model)
    assert model_size(model, layers, {}).to_dict()["float_avg_bits"] == 32.0
    half = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 8)).to(torch.bfloat16).eval()
    layers = inventory(half)
    rep = model_size(half, layers, {l.name: LayerSpec(WeightSpec(bits=8)) for l in layers})
    assert rep.to_dict()["float_avg_bits"] == 16.0 and rep.element_bits == 8
    assert rep.to_dict()["compression"] < 2.1  # 16 -> 8 bits (plus scales), not 32 -> 8


def test_avg_bits_count_every_scale_and_element_bits_do_not():
    """Issue 22 B: bits per weight include the scales (the size's own bytes); element bits do not."""
    model = _model()
    layers = inventory(model)
    specs = dict(SPECS, **{"0": LayerSpec(WeightSpec(bits=4, format="mxfp4")),
                           "3": LayerSpec(WeightSpec(bits=4, format="nvfp4"))})
    rep = model_size(model, layers, specs)
    assert rep.avg_bits == pytest.approx(8 * sum(rep.per_layer.values()) / 248)
    assert rep.element_bits == pytest.approx((60 * 4 + 108 * 4 + 30 * 4 + 10 * 32 + 40 * 5) / 248)
    d = rep.to_dict()
    assert d["avg_bits"] == rep.avg_bits and d["element_bits"] == rep.element_bits
