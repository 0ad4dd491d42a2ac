"""Tie-free exports: whatever a consumer does with .5 ties, it gets the simulation's codes.

The model's weights sit exactly on rounding ties of their own grid (k + 0.5 steps,
with a power-of-two step, so every number is exact in float32). quantviz rounds
half to even; a consumer may round half away from zero. Re-quantizing the float
weights with the exported encodings then disagrees between the two rules, while
the exported on-grid weights give the same codes under both, and they are the
simulation's.
"""
from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch

from quantviz.core.numerics.qparams import quantize_int
from quantviz.io.export import aimet_model_path
from quantviz.session import Session

STEP = 1.0 / 16  # the 4-bit full grid's step of every row below: max 7 steps, min >= -8 steps
ROWS = [[7, -8, 2.5, -1.5, 0.5, -0.5, 3.5, -6.5],
        [7, -3.5, 1.5, -2.5, 4.5, -4.5, 5.5, 0.0],
        [-8, 6.5, -7.5, 2.5, 0.5, -1.5, 1.0, -0.5]]

RECIPE = textwrap.dedent(f"""
    import torch
    from torch import nn

    ROWS = {ROWS!r}

    def build_model():
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(8, 3), nn.ReLU(), nn.Linear(3, 2))
        with torch.no_grad():
            m[0].weight.copy_(torch.tensor(ROWS) * {STEP!r})
        return m.eval()

    def evaluation_data():
        g = torch.Generator().manual_seed(1)
        return torch.randn(64, 8, generator=g), torch.randint(0, 2, (64,), generator=g)
""")


def round_half_even(x: np.ndarray) -> np.ndarray:
    f = np.floor(x)
    frac = x - f
    up = (frac > 0.5) | ((frac == 0.5) & (np.mod(f, 2) == 1))
    return f + up


def round_half_away(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


RULES = {"half-even": round_half_even, "half-away": round_half_away}


def aimet_codes(w: np.ndarray, enc: dict, rnd) -> np.ndarray:
    """A consumer of AIMET encodings: unsigned q = clamp(round(w / scale) - offset, 0, 2^bw - 1), per output row."""
    scale = np.asarray(enc["scale"], dtype=np.float32).reshape(-1, 1)
    offset = np.asarray(enc["offset"], dtype=np.float64).reshape(-1, 1)
    q = np.clip(rnd((w.astype(np.float32) / scale).astype(np.float64)) - offset, 0, 2 ** enc["bw"] - 1)
    return (q + offset).astype(np.int64)  # back to signed codes


@pytest.fixture(scope="module")
def tied(tmp_path_factory):
    path = tmp_path_factory.mktemp("ties") / "tied.py"
    path.write_text(RECIPE)
    s = Session.open(str(path))
    s.apply_preset("W4")
    return s


def test_the_weights_really_sit_on_ties(tied):
    w = tied.sim.float_weight("0").numpy() / STEP
    assert np.array_equal(w, np.array(ROWS, dtype=np.float32))
    assert not np.array_equal(round_half_even(w), round_half_away(w))
    qp = tied.sim.quantize_weight("0", tied.specs["0"].weight).qparams
    assert torch.equal(qp.scale, torch.full((3,), STEP))  # full grid: max(hi / 7, lo / -8) = 1/16


def test_aimet_export_is_tie_free(tied, tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    path = tmp_path / "m.encodings"
    res = tied.export("aimet", path)
    model_path = aimet_model_path(path)
    assert res.paths == [path, model_path]
    enc = {e["name"]: e for e in json.loads(path.read_text())["param_encodings"]}["0.weight"]
    assert enc["is_sym"] and enc["bw"] == 4 and enc["offset"] == [-8, -8, -8]
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(model_path)).graph.initializer}
    ongrid = inits["0.weight"]
    sim_codes = quantize_int(tied.sim.float_weight("0"), tied.sim.quantize_weight("0", tied.specs["0"].weight).qparams,
                             axis=0).numpy()
    sim_weight = tied.sim.quantize_weight("0", tied.specs["0"].weight).tensor.numpy()
    assert np.array_equal(ongrid, sim_weight)  # the float weights written are the simulated ones
    float_w = tied.sim.float_weight("0").numpy()
    from_float = {k: aimet_codes(float_w, enc, r) for k, r in RULES.items()}
    from_grid = {k: aimet_codes(ongrid, enc, r) for k, r in RULES.items()}
    # the float weights: the consumer's tie rule decides, and half-away is not the simulation
    assert np.array_equal(from_float["half-even"], sim_codes)
    assert not np.array_equal(from_float["half-away"], sim_codes)
    # the on-grid weights: both rules give the simulation's codes
    for rule, codes in from_grid.items():
        assert np.array_equal(codes, sim_codes), rule
    assert np.array_equal(inits["2.weight"], tied.sim.quantize_weight("2", tied.specs["2"].weight).tensor.numpy())


def test_onnx_stores_the_simulated_integer_codes(tied):
    pytest.importorskip("onnx")
    from onnx import numpy_helper

    from quantviz.io.onnx_export import build_qdq

    ex = build_qdq(tied.sim, tied.specs, tied.eval_data.first_input())
    inits = {i.name: numpy_helper.to_array(i) for i in ex.model.graph.initializer}
    codes = inits["0.weight_quantized"].astype(np.int64)
    sim_codes = quantize_int(tied.sim.float_weight("0"), tied.sim.quantize_weight("0", tied.specs["0"].weight).qparams,
                             axis=0).numpy()
    assert np.array_equal(codes, sim_codes)  # nothing left for a consumer to round


def test_torchao_gets_on_grid_weights_and_reproduces_the_codes(tied):
    pytest.importorskip("torchao")
    from quantviz.core.backends import torchao_backend as tb

    qp = tied.sim.quantize_weight("0", tied.specs["0"].weight).qparams
    sim_codes = quantize_int(tied.sim.float_weight("0"), qp, axis=0).numpy()
    fed = tb.grid_model(tied.sim, tied.specs).get_submodule("0").weight.detach().numpy()
    for rule, rnd in RULES.items():  # whatever torchao's rounding, the weights it is given round to the codes
        assert np.array_equal(rnd(fed / STEP).astype(np.int64), sim_codes), rule
    model, plan = tb.build(tied.sim, tied.specs)
    assert "0" in plan.kernels and "SYMMETRIC_NO_CLIPPING_ERR" in plan.kernels["0"].source()
    got = model.get_submodule("0").weight.dequantize().float()
    assert torch.equal(got, tied.sim.quantize_weight("0", tied.specs["0"].weight).tensor)


def test_torchao_falls_back_to_simulated_when_it_cannot_reproduce_the_codes(tied):
    pytest.importorskip("torchao")
    from quantviz.core.backends import torchao_backend as tb

    tied.edit_layers(["0"], {"weight": {"grid": "restricted"}})
    try:
        model, plan = tb.build(tied.sim, tied.specs)
        assert "0" not in plan.kernels and "restricted" in plan.simulated["0"]
        assert torch.equal(model.get_submodule("0").weight, tied.sim.quantize_weight("0", tied.specs["0"].weight).tensor)
    finally:
        tied.apply_preset("W4")


def test_torchao_layers_whose_codes_differ_stay_simulated(tied, monkeypatch):
    pytest.importorskip("torchao")
    from quantviz.core.backends import torchao_backend as tb

    def symmetric_mapping(info, spec):  # torchao's SYMMETRIC rule reads max|w| as 7.5 steps: another scale
        k, why = choose(info, spec)
        if k is not None:
            k.kwargs["mapping_type"] = "MappingType.SYMMETRIC"
        return k, why

    choose = tb.choose_kernel
    monkeypatch.setattr(tb, "choose_kernel", symmetric_mapping)
    model, plan = tb.build(tied.sim, tied.specs)
    assert "0" not in plan.kernels and "codes would differ" in plan.simulated["0"]
    assert torch.equal(model.get_submodule("0").weight, tied.sim.quantize_weight("0", tied.specs["0"].weight).tensor)
