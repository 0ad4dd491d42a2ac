"""Float / block number formats against independent references: torch's float8 casts, hand-written
value tables, and torchao's MX / NVFP4 reference quantizers (bit for bit where they run)."""
import math

import pytest
import torch

from quantviz.core.numerics.formats import (E2M1, E2M3, E3M2, E4M3, E5M2, FORMATS, INT8, quantize_activation, quantize_blocks,
                                   round_element)
from quantviz.core.model.layers import LayerInfo
from quantviz.core.numerics.quantize import quantize_weight_tensor
from quantviz.core.model.size import layer_weight_bytes
from quantviz.core.numerics.spec import LayerSpec, WeightSpec

# hand-written tables (OCP MX v1.0, tables for FP4 / FP6)
E2M1_TABLE = [0, 0.5, 1, 1.5, 2, 3, 4, 6]
E2M3_TABLE = [0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1, 1.125, 1.25, 1.375, 1.5, 1.625, 1.75, 1.875,
              2, 2.25, 2.5, 2.75, 3, 3.25, 3.5, 3.75, 4, 4.5, 5, 5.5, 6, 6.5, 7, 7.5]
E3M2_TABLE = [0, 0.0625, 0.125, 0.1875, 0.25, 0.3125, 0.375, 0.4375, 0.5, 0.625, 0.75, 0.875, 1, 1.25, 1.5, 1.75,
              2, 2.5, 3, 3.5, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28]


def _wide(n=200_000, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g) * torch.exp(torch.randn(n, generator=g) * 3)


def _rne_reference(x: torch.Tensor, table) -> torch.Tensor:
    """Nearest table value by brute force, ties to the value with the even code, saturating."""
    mags = torch.tensor(table, dtype=torch.float64)
    a = x.double().abs().clamp(max=float(mags[-1]))
    d = (a.view(-1, 1) - mags.view(1, -1)).abs()
    best = d.min(dim=1, keepdim=True).values
    tied = d == best
    codes = torch.arange(len(table)).expand_as(d)
    # among the nearest, prefer the even code (its last mantissa bit is 0)
    pick = torch.where(tied & (codes % 2 == 0), codes, torch.full_like(codes, 10**6)).min(dim=1).values
    pick = torch.where(pick == 10**6, torch.where(tied, codes, torch.full_like(codes, 10**6)).min(dim=1).values, pick)
    return (mags[pick] * torch.sign(x.double())).float()


@pytest.mark.parametrize("el,table", [(E2M1, E2M1_TABLE), (E2M3, E2M3_TABLE), (E3M2, E3M2_TABLE)])
def test_small_element_value_sets_and_rounding_match_hand_tables(el, table):
    assert el.magnitudes().tolist() == table
    mags = torch.tensor(table, dtype=torch.float32)
    mids = (mags[1:] + mags[:-1]) / 2  # exact ties
    x = torch.cat([_wide() / 10, mags, -mags, mids, -mids, torch.tensor([el.max * 3, -1e9])])
    assert torch.equal(round_element(x, el), _rne_reference(x, table))
    # ties go to the even code: 0.25 -> 0 and 0.75 -> 1 in E2M1; 5 -> 4, 2.5 -> 2
    if el is E2M1:
        assert round_element(torch.tensor([0.25, 0.75, 2.5, 3.5, 5.0, 7.0]), el).tolist() == [0, 1, 2, 4, 4, 6]


@pytest.mark.parametrize("el,dtype", [(E4M3, torch.float8_e4m3fn), (E5M2, torch.float8_e5m2)])
def test_fp8_rounding_equals_torch_casts_and_saturates(el, dtype):
    x = _wide().clamp(-el.max, el.max)
    assert torch.equal(round_element(x, el), x.to(dtype).float())
    assert round_element(torch.tensor([1e6, -1e6, el.max * 1.01]), el).tolist() == [el.max, -el.max, el.max]
    assert el.max == float(torch.finfo(dtype).max)


def test_mxint8_elements_are_fixed_point_sixty_fourths():
    x = torch.tensor([0.0, 1 / 128, 3 / 128, 1.0, 5.0, -5.0])
    assert round_element(x, INT8).tolist() == [0.0, 0.0, 4 / 128, 1.0, 127 / 64, -127 / 64]


def test_mx_shared_exponent_is_the_ocp_rule():
    # one block of 32: amax 5.0 -> floor(log2 5) = 2, minus E2M1's emax 2 -> scale 2^0
    b = torch.zeros(1, 32)
    b[0, 0], b[0, 1] = 5.0, 0.3
    q, p = quantize_blocks(b, FORMATS["mxfp4"])
    assert p.codes.tolist() == [127] and p.scale.tolist() == [1.0]
    assert q[0, 0] == 4.0 and q[0, 1] == 0.5  # 5 -> 4 (tie to even), 0.3 -> 0.5
    # amax 7.9 under the same scale saturates at 6 (the OCP floor rule clips the top of the block)
    b[0, 0] = 7.9
    q, p = quantize_blocks(b, FORMATS["mxfp4"])
    assert p.scale.tolist() == [1.0] and q[0, 0] == 6.0
    # MXFP8 E4M3: emax 8, so amax 1000 -> 2^(9-8)
    _, p8 = quantize_blocks(torch.full((1, 32), 1000.0), FORMATS["mxfp8_e4m3"])
    assert p8.scale.tolist() == [2.0]


torchao_mx = pytest.importorskip("torchao.prototype.mx_formats.mx_tensor", reason="torchao MX reference not installed")


@pytest.mark.parametrize("name", ["mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp4"])
def test_mx_bit_equal_to_torchao_reference(name):
    from torchao.prototype.mx_formats.constants import DTYPE_FP6_E2M3, DTYPE_FP6_E3M2

    dt = {"mxfp8_e4m3": torch.float8_e4m3fn, "mxfp8_e5m2": torch.float8_e5m2, "mxfp6_e2m3": DTYPE_FP6_E2M3,
          "mxfp6_e3m2": DTYPE_FP6_E3M2, "mxfp4": torch.float4_e2m1fn_x2}[name]
    g = torch.Generator().manual_seed(1)
    w = torch.randn(128, 256, generator=g) * torch.exp(torch.randn(128, 1, generator=g) * 2)
    scale, data = torchao_mx.to_mx(w, dt, 32)
    ref = torchao_mx.to_dtype(data, scale, dt, 32, torch.float32)
    q, p = quantize_blocks(w, FORMATS[name])
    assert torch.equal(q, ref)
    assert torch.equal(p.codes, scale.view(torch.uint8).flatten())


def test_nvfp4_bit_equal_to_torchao_reference():
    from torchao.prototype.mx_formats.nvfp4_tensor import NVFP4Tensor, per_tensor_amax_to_scale

    g = torch.Generator().manual_seed(2)
    w = torch.randn(64, 256, generator=g) * torch.exp(torch.randn(64, 1, generator=g))
    t = NVFP4Tensor.to_nvfp4(w, per_tensor_scale=per_tensor_amax_to_scale(w.abs().max()))
    q, p = quantize_blocks(w, FORMATS["nvfp4"])
    assert torch.equal(q, t.dequantize(torch.float32))
    assert p.tensor_scale == pytest.approx(float(w.abs().max()) / (448 * 6), rel=1e-7)
    assert torch.equal(p.codes, p.codes.to(torch.float8_e4m3fn).float())  # block scales are E4M3 values


def test_partial_last_block_gets_its_own_scale_from_its_own_values():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(4, 40, generator=g)  # 32 + a partial block of 8
    w[:, 32:] *= 100
    q, p = quantize_blocks(w, FORMATS["mxfp4"])
    assert q.shape == w.shape and p.groups == 8
    whole, _ = quantize_blocks(w[:, 32:].contiguous(), FORMATS["mxfp4"])
    assert torch.equal(q[:, 32:], whole)  # zero padding changes nothing


def test_weight_kernel_and_size_for_formats():
    g = torch.Generator().manual_seed(4)
    w = torch.randn(16, 8, 3, 3, generator=g)  # 72 inputs per channel: 2 full blocks + 8
    info = LayerInfo("c", "Conv2d", tuple(w.shape), w.numel(), 0, True, 0)
    for name in FORMATS:
        spec = WeightSpec(bits=FORMATS[name].bits, format=name)
        t = quantize_weight_tensor(w, spec, 0, "c")
        assert t.tensor.shape == w.shape and math.isfinite(t.sqnr_db) and t.sqnr_db > 5
    mx = quantize_weight_tensor(w, WeightSpec(bits=4, format="mxfp4"), 0, "c")
    assert mx.qparams.groups == 16 * 3
    # MXFP4: 4 bits per element + one byte per block; 64 inputs per channel -> exactly 4.25 bits
    lin = LayerInfo("l", "Linear", (10, 64), 640, 0, True, 1)
    assert layer_weight_bytes(lin, LayerSpec(weight=WeightSpec(bits=4, format="mxfp4"))) * 8 / 640 == 4.25
    assert layer_weight_bytes(lin, LayerSpec(weight=WeightSpec(bits=4, format="nvfp4"))) == 320 + 40 + 4
    assert layer_weight_bytes(lin, LayerSpec(weight=WeightSpec(bits=8, format="fp8_e4m3"))) == 640 + 10 * 4
    assert layer_weight_bytes(info, LayerSpec(weight=WeightSpec(bits=4, format="mxfp4"))) == 16 * 72 // 2 + 16 * 3


def test_activation_blocks_follow_the_channel_axis():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 64, 3, 3, generator=g)
    q = quantize_activation(x, FORMATS["mxfp8_e4m3"], axis=1)
    ref, _ = quantize_blocks(x.movedim(1, -1).reshape(-1, 64), FORMATS["mxfp8_e4m3"])
    assert torch.equal(q, ref.reshape(2, 3, 3, 64).movedim(-1, 1))
    fp8 = quantize_activation(x, FORMATS["fp8_e4m3"], scale=0.01)
    assert torch.equal(fp8, (x / 0.01).clamp(-448, 448).to(torch.float8_e4m3fn).float() * 0.01)
