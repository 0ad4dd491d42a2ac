"""The drag preview must reproduce QuantSim's own numbers for the same settings."""
# Tolerances: QuantSim reduces in float32, so identical inputs agree to ~1e-7 relative.
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from quantviz.core.sim.fakequant import QuantSim
from quantviz.core.numerics.observers import histogram_of
from quantviz.core.numerics.preview import (MAX_LEVELS_DRAWN, cell_density, channel_ranges, grid_levels,
                                   preview_activation, preview_weight)
from quantviz.core.numerics.qparams import compute_qparams
from quantviz.core.numerics.spec import ActSpec, RangeSpec, WeightSpec


@pytest.fixture(scope="module")
def sim():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    with torch.no_grad():
        model[0].weight[5] *= 8.0  # an outlier channel
    s = QuantSim(model)
    from quantviz.core.model.data import Dataset

    s.calibrate(Dataset(torch.randn(64, 3, 8, 8), None, name="rand"), batch_size=32)
    return s


SPECS = [
    WeightSpec(bits=4, granularity="per_tensor", symmetric=True),
    WeightSpec(bits=4, granularity="per_tensor", symmetric=False),
    WeightSpec(bits=3, granularity="per_channel", symmetric=True),
    WeightSpec(bits=6, granularity="per_channel", symmetric=False),
    WeightSpec(bits=4, granularity="per_group", group_size=16, symmetric=True),
]


@pytest.mark.parametrize("wspec", SPECS, ids=lambda w: f"{w.granularity}-{w.bits}-{'sym' if w.symmetric else 'asym'}")
@pytest.mark.parametrize("layer", ["0", "3"])
def test_manual_minmax_reproduces_engine(sim, wspec, layer):
    w = sim.float_weight(layer)
    ref = sim.quantize_weight(layer, wspec)  # minmax
    p = preview_weight(sim, layer, wspec, float(w.min()), float(w.max()))
    assert p["sqnr_db"] == pytest.approx(ref.sqnr_db, rel=1e-6)
    assert p["mse"] == pytest.approx(ref.mse, rel=1e-5)
    assert p["clipped"] == pytest.approx(ref.clipped_fraction, abs=1e-12)
    # the quantized histogram keeps all the mass (the edges are padded past the data)
    assert p["quant_counts"].sum() == pytest.approx(w.numel(), rel=0.02)
    assert p["float_counts"].sum() == w.numel()


@pytest.mark.parametrize("wspec", SPECS, ids=lambda w: f"{w.granularity}-{w.bits}")
def test_narrowed_range_matches_engine_manual(sim, wspec):
    w = sim.float_weight("0")
    lo, hi = 0.4 * float(w.min()), 0.3 * float(w.max())
    p = preview_weight(sim, "0", wspec, lo, hi)
    ref = sim.quantize_weight("0", WeightSpec(**{**wspec.__dict__, "range": RangeSpec("manual", lo=lo, hi=hi)}))
    assert p["sqnr_db"] == pytest.approx(ref.sqnr_db, rel=1e-6)
    assert p["clipped"] == pytest.approx(ref.clipped_fraction, abs=1e-12)
    full = preview_weight(sim, "0", wspec)
    assert p["clipped"] > full["clipped"]
    assert p["lo"] == lo and p["hi"] == hi
    # per-channel groups are clipped to the intersection of their own range and [lo, hi]
    if wspec.granularity != "per_tensor" and not wspec.symmetric:
        assert np.all(p["channel_lo"] >= lo - 1e-7) and np.all(p["channel_hi"] <= hi + 1e-7)


def test_spec_range_used_when_no_manual(sim):
    wspec = WeightSpec(bits=4, granularity="per_channel", range=RangeSpec("percentile", p=99.0))
    p = preview_weight(sim, "3", wspec)
    assert p["sqnr_db"] == pytest.approx(sim.quantize_weight("3", wspec).sqnr_db, rel=1e-6)
    assert p["range"].startswith("percentile")


def test_float_layer_has_only_float_histogram(sim):
    p = preview_weight(sim, "0", WeightSpec(bits=None))
    assert p["float"] is True and "sqnr_db" not in p
    assert p["float_counts"].sum() == sim.float_weight("0").numel()


def test_levels_are_the_grid_of_the_widest_group(sim):
    wspec = WeightSpec(bits=3, granularity="per_channel", symmetric=True)
    p = preview_weight(sim, "0", wspec)
    assert p["levels_total"] == 8 and len(p["levels"]) == 8
    # channel 5 was scaled up, so its grid is the widest
    assert p["levels_group"] == 5
    step = np.diff(p["levels"])
    assert np.allclose(step, step[0])
    assert p["levels"].max() == pytest.approx(p["grid_hi"])


def test_dense_grids_are_subsampled_for_drawing():
    qp = compute_qparams(-1.0, 1.0, 16, True)
    levels, step = grid_levels(qp)
    assert len(levels) <= MAX_LEVELS_DRAWN + 1 and step > 1
    assert levels[0] == pytest.approx(float(qp.grid_range()[0][0]))
    assert levels[-1] == pytest.approx(float(qp.grid_range()[1][0]))
    small, step4 = grid_levels(compute_qparams(-1.0, 1.0, 4, True))
    assert len(small) == 16 and step4 == 1


def test_activation_minmax_matches_engine(sim):
    name = "3"
    hist = sim.act_obs[name].histogram()
    for aspec in (ActSpec(bits=8), ActSpec(bits=4, symmetric=True)):
        p = preview_activation(hist, aspec)
        assert p["sqnr_db"] == pytest.approx(sim.activation_sqnr(name, aspec), rel=1e-6)
        m = preview_activation(hist, aspec, hist.min, hist.max)
        assert m["sqnr_db"] == pytest.approx(p["sqnr_db"], rel=1e-6)
        if aspec.bits == 8:  # fine cells: the padded display keeps (almost) all quantized mass
            assert m["quant_counts"].sum() == pytest.approx(hist.total, rel=0.02)


def test_activation_manual_range_matches_engine(sim):
    name = "3"
    hist = sim.act_obs[name].histogram()
    lo, hi = 0.0, 0.5 * hist.max
    p = preview_activation(hist, ActSpec(bits=8), lo, hi)
    manual = ActSpec(bits=8, range=RangeSpec("manual", lo=lo, hi=hi))
    assert p["sqnr_db"] == pytest.approx(sim.activation_sqnr(name, manual), rel=1e-6)
    assert 0.0 < p["clipped"] < 1.0
    assert preview_activation(hist, ActSpec(bits=None))["float"] is True


def test_channel_ranges_flags_outlier(sim):
    st_ = channel_ranges(sim, "0")
    assert list(st_["outliers"]) == [5]
    assert st_["spread"] > 3
    w = sim.float_weight("0")
    assert np.allclose(st_["max"], w.reshape(8, -1).max(dim=1).values.numpy())
    assert np.all(st_["p01"] >= st_["min"]) and np.all(st_["p99"] <= st_["max"])


def test_cell_density_spreads_each_value_over_its_cell():
    edges = np.linspace(0.0, 4.0, 9)  # bins of 0.5
    d = cell_density(np.array([1.0]), np.array([1.0]), edges, weights=np.array([6.0]))
    assert np.allclose(d, [0, 3, 3, 0, 0, 0, 0, 0])  # [0.5, 1.5] split over two bins


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=30), st.floats(0.01, 1.0))
def test_cell_density_conserves_mass(values, scale):
    edges = np.linspace(-6.0, 6.0, 97)
    d = cell_density(np.array(values), np.full(len(values), scale), edges)
    assert d.sum() == pytest.approx(len(values), rel=1e-6)
    assert np.all(d >= 0)


def test_histogram_of_a_single_value_has_finite_preview():
    h = histogram_of(torch.full((100,), 2.0))
    p = preview_activation(h, ActSpec(bits=8))
    assert math.isfinite(p["mse"]) and p["clipped"] >= 0.0
