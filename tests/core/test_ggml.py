"""llama.cpp weight types (quantviz.core.numerics.ggml): exact sizes, codes bit-equal to the gguf package's
quantizers where it has one, dequantization bit-equal to its dequantizers for every type, and the
format plumbing (weight kernel, sizes, config). The K-quants' codes are checked against llama.cpp
itself in tests/models/test_llama_cpp.py."""
from __future__ import annotations

import math

import pytest
import torch

from quantviz.core.numerics.formats import FORMATS
from quantviz.core.numerics.ggml import GGML_TYPES, quantize_rows
from quantviz.core.model.layers import LayerInfo
from quantviz.core.numerics.quantize import quantize_weight_tensor
from quantviz.core.model.size import layer_weight_bytes
from quantviz.core.numerics.spec import LayerSpec, WeightSpec
from quantviz.io.config import ConfigError, QuantConfig

BPW = {"q8_0": 8.5, "q4_0": 4.5, "q4_1": 5.0, "q5_0": 5.5, "q5_1": 6.0, "q2_k": 2.625, "q3_k": 3.4375,
       "q4_k": 4.5, "q5_k": 5.5, "q6_k": 6.5625}
LEGACY = ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1")


def hard_rows(n: int = 512, seed: int = 0) -> torch.Tensor:
    """Rows that reach the quantizers' corner cases: zeros (+0 and -0), constant blocks, one-signed
    rows, exact ties of the rounding, a lone outlier, heavy tails, tiny magnitudes."""
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randn(n, generator=g) * 0.05 for _ in range(6)]
    rows.append(torch.zeros(n))
    rows.append(torch.where(torch.arange(n) % 3 == 0, -0.0, 0.0) * torch.ones(n))
    rows.append(torch.full((n,), 0.01))
    rows.append(torch.randn(n, generator=g).abs())
    rows.append(-torch.randn(n, generator=g).abs())
    rows.append(torch.round(torch.randn(n, generator=g) * 8) / 16)
    out = torch.randn(n, generator=g) * 0.01
    out[37] = 4.0
    rows.append(out)
    rows.append(torch.randn(n, generator=g) ** 3)
    rows.append(torch.randn(n, generator=g) * 1e-4)
    sparse = torch.randn(n, generator=g)
    sparse[torch.rand(n, generator=g) < 0.8] = 0.0
    rows.append(sparse)
    half = torch.randn(n, generator=g) * 0.05
    half[: n // 2] = 0.0
    rows.append(half)
    return torch.stack(rows).float()


def test_bits_per_weight_are_the_storage_sizes():
    assert set(GGML_TYPES) == set(BPW)
    for name, bpw in BPW.items():
        assert FORMATS[name].bits_per_element() == bpw
        t = GGML_TYPES[name]
        assert t.type_size * 8 == bpw * t.block


def test_weight_bytes_are_whole_blocks():
    info = LayerInfo("fc", "Linear", (64, 512), 64 * 512, 0, True, 0)
    for name, t in GGML_TYPES.items():
        spec = LayerSpec(weight=WeightSpec(bits=FORMATS[name].bits, format=name))
        assert layer_weight_bytes(info, spec) == 64 * (512 // t.block) * t.type_size
        assert layer_weight_bytes(info, spec) * 8 / (64 * 512) == BPW[name]


@pytest.mark.parametrize("name", LEGACY)
def test_legacy_codes_are_bit_equal_to_the_gguf_package(name):
    gguf = pytest.importorskip("gguf", reason="the gguf package is the reference (pip install 'quantviz[gguf]')")
    m = hard_rows()
    q = quantize_rows(m, name)
    ref = gguf.quants.quantize(m.numpy(), gguf.GGMLQuantizationType[name.upper()])
    assert ref.shape == tuple(q.packed.shape)
    same = (ref == q.packed.numpy()).all(axis=1)
    if name != "q8_0":
        # row 7 is signed zeros: llama.cpp's FP16 scale (or minimum) of such a block is the signed zero its
        # scan gives (Q4_0 / Q5_0: -0.0 = +0.0 / -8; Q4_1 / Q5_1: the first zero met), the gguf package's
        # numpy picks the other sign; quantviz follows llama.cpp (tests/models/test_llama_cpp.py checks it)
        assert not same[7]
        same[7] = True
    assert same.all()


@pytest.mark.parametrize("name", list(BPW))
def test_gguf_dequantizes_the_bytes_to_the_simulated_weights(name):
    gguf = pytest.importorskip("gguf", reason="the gguf package is the reference (pip install 'quantviz[gguf]')")
    m = hard_rows(seed=3)
    q = quantize_rows(m, name)
    deq = gguf.quants.dequantize(q.packed.numpy(), gguf.GGMLQuantizationType[name.upper()])
    assert deq.shape == tuple(m.shape)
    assert torch.equal(torch.from_numpy(deq.copy()).view(torch.int32), q.deq.view(torch.int32))  # bit for bit


@pytest.mark.parametrize("name", list(BPW))
def test_every_value_is_a_level_of_its_sub_block(name):
    m = hard_rows(seed=1)
    q = quantize_rows(m, name)
    t = q.type
    sc = q.scale.repeat_interleave(t.sub, dim=1)
    off = q.offset.repeat_interleave(t.sub, dim=1)
    safe = torch.where(sc != 0, sc, torch.ones_like(sc))
    k = torch.round((q.deq - off) / safe)
    live = sc != 0
    assert ((k[live] >= t.qmin) & (k[live] <= t.qmax)).all()
    assert torch.allclose((k * sc + off)[live], q.deq[live], rtol=1e-6, atol=1e-9)
    err = (q.deq - m).abs().amax(dim=1)
    assert float(err[6]) == 0.0  # an all-zero row stays zero


def test_more_bits_less_error():
    m = torch.randn(32, 1024, generator=torch.Generator().manual_seed(0)) * 0.02
    mse = {n: float(((quantize_rows(m, n).deq - m) ** 2).mean()) for n in BPW}
    assert mse["q2_k"] > mse["q3_k"] > mse["q4_k"] > mse["q5_k"] > mse["q6_k"] > mse["q8_0"]
    assert mse["q4_k"] < mse["q4_0"] and mse["q5_k"] < mse["q5_0"]


def test_weight_kernel_uses_the_rows_of_the_output_channel_axis():
    w = torch.randn(48, 256, generator=torch.Generator().manual_seed(2)) * 0.02
    t = quantize_weight_tensor(w, WeightSpec(bits=4, format="q4_k"), 0, "fc")
    assert torch.equal(t.tensor, quantize_rows(w, "q4_k").deq)
    t1 = quantize_weight_tensor(w.t().contiguous(), WeightSpec(bits=4, format="q4_k"), 1, "conv1d")  # GPT-2's Conv1D
    assert torch.equal(t1.tensor.t(), t.tensor)
    p = t.qparams
    assert p.groups == 48 * 256 // 32
    lv = p.levels(0)
    assert len(lv) == 16 and bool((lv[1:] > lv[:-1]).all())
    assert 10 < t.sqnr_db < 40


def test_activations_cannot_take_a_llama_cpp_type():
    with pytest.raises(ConfigError, match=r"default\.activation\.format: \"q4_k\" is a llama.cpp weight type"):
        QuantConfig.from_dict({"format": "quantviz-config", "version": 3,
                               "default": {"weight": {"bits": 4, "format": "q4_k"},
                                           "activation": {"bits": 8, "format": "q4_k"}}})
    cfg = QuantConfig.from_dict({"format": "quantviz-config", "version": 3,
                                 "default": {"weight": {"bits": 4, "format": "q6_k"}}})
    assert cfg.default["weight"]["format"] == "q6_k"
    assert not math.isnan(BPW["q6_k"])
