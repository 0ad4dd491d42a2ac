"""Property tests (hypothesis) for the config parser and the quantization math.

Config: any JSON value or text either parses or raises ConfigError (never
another exception); what parses round-trips and resolves to valid specs.
Math: for any finite tensor and any settings, ranges have lo <= hi, qparams
are finite with the zero point on the grid, dequantized values stay within
the clip range (widened to include 0, plus one step), and quantizing a
quantized tensor again changes nothing.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from quantviz.core.model.layers import LayerInfo
from quantviz.core.numerics.observers import HistogramObserver
from quantviz.core.numerics.qparams import EPS, MAX_BITS, MIN_BITS, compute_qparams, fake_quantize, quantize_int
from quantviz.core.numerics.ranges import activation_range, group_matrix, weight_range
from quantviz.core.numerics.spec import GRANULARITIES, RANGE_METHODS, RangeSpec
from quantviz.io.config import ConfigError, QuantConfig, parse_config_text

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(SETTINGS, max_examples=60)  # mse / kl searches take ~0.2 s per example
F32_MAX = float(np.finfo(np.float32).max)
BIG = float(np.float32(1e30))

# ------------------------------------------------------------------ configs
KEYS = ["format", "version", "default", "rules", "layers", "options", "name", "weight", "activation", "bits",
        "granularity", "group_size", "symmetric", "range", "method", "p", "lo", "hi", "match", "type", "pattern",
        "fold_bn", "fc1", "conv", "x"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-40, 40), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["quantviz-config", "per_channel", "per_group", "per_tensor", "minmax", "percentile", "mse",
                     "kl", "manual", "Linear", "Conv2d", "^fc", "(", "eight", ""]),
    st.text(max_size=6),
)
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)), max_leaves=25)

bits_values = st.one_of(st.none(), st.integers(-5, 20), st.sampled_from([8.0, 4.5, "8", True]))
range_dicts = st.fixed_dictionaries({}, optional={
    "method": st.sampled_from(list(RANGE_METHODS) + ["magic"]),
    "p": st.one_of(st.none(), st.floats(-10, 110), st.just(float("nan"))),
    "lo": st.one_of(st.none(), st.floats(-1e3, 1e3)), "hi": st.one_of(st.none(), st.floats(-1e3, 1e3))})
tensor_dicts = st.fixed_dictionaries({}, optional={
    "bits": bits_values, "granularity": st.sampled_from(list(GRANULARITIES) + ["per_atom"]),
    "group_size": st.one_of(st.none(), st.integers(-2, 70)), "symmetric": st.one_of(st.booleans(), st.just(1)),
    "range": range_dicts})
partials = st.fixed_dictionaries({}, optional={"weight": tensor_dicts, "activation": tensor_dicts})
structured = st.fixed_dictionaries(
    {"version": st.one_of(st.just(1), st.integers(-1, 3))},
    optional={"format": st.sampled_from(["quantviz-config", "other"]), "default": partials,
              "rules": st.lists(st.builds(lambda m, p: {"match": m, **p},
                                          st.fixed_dictionaries({}, optional={"type": st.sampled_from(["Linear", "Conv2d"]),
                                                                              "pattern": st.sampled_from(["fc", "^c", "(", "2$"])}),
                                          partials), max_size=3),
              "layers": st.dictionaries(st.sampled_from(["fc1", "conv", "emb"]), partials, max_size=3),
              "options": st.fixed_dictionaries({}, optional={"fold_bn": st.one_of(st.booleans(), st.just("yes"))}),
              "name": st.one_of(st.none(), st.text(max_size=5))})

@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: thread-pool hand-offs would dominate on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


LAYERS = [LayerInfo("fc1", "Linear", (16, 8), 144, 0, True, 0), LayerInfo("conv", "Conv2d", (4, 3, 3, 3), 112, 0, True, 1),
          LayerInfo("emb", "Embedding", (50, 8), 400, 0, False, 2)]


def _check_parsed(cfg: QuantConfig) -> None:
    assert QuantConfig.from_dict(cfg.to_dict()) == cfg  # round trip
    for spec in cfg.resolve_all(LAYERS).values():
        for t in (spec.weight, spec.activation):
            assert t.bits is None or MIN_BITS <= t.bits <= MAX_BITS
            if t.range.method == "manual":
                assert t.range.lo < t.range.hi
            if t.range.method == "percentile" and t.range.p is not None:
                assert 0 < t.range.p <= 100
        assert spec.weight.granularity in GRANULARITIES
        gs = spec.weight.effective_group_size()
        assert gs is None or gs >= 1


@SETTINGS
@given(st.one_of(json_values, structured))
def test_config_from_any_json_value(obj):
    try:
        cfg = QuantConfig.from_dict(obj)
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    _check_parsed(cfg)


@settings(max_examples=80, deadline=None)
@given(st.one_of(st.text(max_size=40), st.binary(max_size=40).map(lambda b: b.decode("latin-1"))))
def test_config_from_any_text(text):
    try:
        cfg = parse_config_text(text, "t.json")
    except ConfigError as exc:
        assert str(exc).startswith("t.json")
        return
    _check_parsed(cfg)


@SETTINGS
@given(structured, st.sampled_from(["fc1", "conv", "emb"]), partials)
def test_layer_edits_never_break_a_valid_config(obj, layer, patch):
    try:
        cfg = QuantConfig.from_dict(obj)
    except ConfigError:
        return
    try:
        cfg.set_layer(layer, patch)
    except ConfigError:
        assert cfg == QuantConfig.from_dict(cfg.to_dict())
        return
    _check_parsed(cfg)


# -------------------------------------------------------------------- math
finite = st.floats(-F32_MAX, F32_MAX, allow_nan=False, width=32)
anything = st.floats(allow_nan=True, allow_infinity=True, width=32)
bits = st.integers(MIN_BITS, MAX_BITS)


@SETTINGS
@given(anything, anything, bits, st.booleans())
@example(-F32_MAX, F32_MAX, 8, False)
@example(-F32_MAX, F32_MAX, 16, True)
@example(float("nan"), float("inf"), 2, False)
def test_qparams_are_finite_for_any_range(lo, hi, b, sym):
    qp = compute_qparams(lo, hi, b, sym)
    assert torch.isfinite(qp.scale).all() and (qp.scale > 0).all()
    assert (qp.zero_point >= qp.qmin).all() and (qp.zero_point <= qp.qmax).all()
    assert (qp.lo <= qp.hi).all()
    glo, ghi = qp.grid_range()
    assert torch.isfinite(glo).all() and torch.isfinite(ghi).all()
    x = torch.tensor([lo, hi, 0.0, -F32_MAX, F32_MAX]).nan_to_num(0.0)
    xq = fake_quantize(x, qp)
    assert torch.isfinite(xq).all() and torch.equal(fake_quantize(xq, qp), xq)


def _tensors(max_abs: float):
    elems = st.one_of(st.floats(-max_abs, max_abs, allow_nan=False, width=32), st.just(0.0))
    return st.tuples(st.integers(1, 6), st.integers(1, 24)).flatmap(
        lambda s: arrays(np.float32, s, elements=elems))


range_specs = st.one_of(
    st.builds(RangeSpec, st.sampled_from(["minmax", "mse", "kl"])),
    st.builds(lambda p: RangeSpec("percentile", p=p), st.floats(0.01, 100)),
    st.builds(lambda a, w: RangeSpec("manual", lo=a, hi=a + w), st.floats(-10, 10), st.floats(1e-3, 20)),
)


def _assert_within(x: torch.Tensor, xq: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, scale: torch.Tensor,
                   symmetric: bool) -> None:
    """Dequantized values lie in the clip range widened to hold 0 (+-amax when symmetric), plus one step."""
    lo_n, hi_p = torch.clamp(lo, max=0).view(-1, 1), torch.clamp(hi, min=0).view(-1, 1)
    if symmetric:
        hi_p = torch.maximum(-lo_n, hi_p)
        lo_n = -hi_p
    s = scale.view(-1, 1)
    assert torch.isfinite(xq).all()
    # within one step of the clip range, unless the range is narrower than the scale's floor
    # (EPS): then the grid, and what it represents, reaches beyond it
    floor = (s <= EPS * 1.0001)
    assert ((xq >= lo_n - s * 1.0001) | floor).all() and ((xq <= hi_p + s * 1.0001) | floor).all()


@SLOW
@given(st.one_of(_tensors(4.0), _tensors(BIG)), range_specs, bits, st.booleans(), st.sampled_from(GRANULARITIES),
       st.integers(1, 9))
@example(np.array([[0.5, 1.0]], dtype=np.float32), RangeSpec("kl"), 2, False, "per_group", 1)  # a row beyond KL's t
def test_weight_quantization_properties(w, rng, b, sym, gran, gs):
    w = torch.from_numpy(w)
    m = group_matrix(w, gran, 0, gs)
    lo, hi = weight_range(m, rng, b, sym)
    assert torch.isfinite(lo).all() and torch.isfinite(hi).all() and (lo <= hi).all()
    qp = compute_qparams(lo, hi, b, sym)
    assert torch.isfinite(qp.scale).all() and (qp.scale > 0).all()
    axis = None if gran == "per_tensor" else 0
    group = gs if gran == "per_group" else None
    wq = fake_quantize(w, qp, axis=axis, group_size=group)
    assert wq.shape == w.shape
    glo, ghi = qp.grid_range()
    mq = group_matrix(wq, gran, 0, gs)
    assert (mq >= glo.view(-1, 1)).all() and (mq <= ghi.view(-1, 1)).all()  # on the grid's span
    _assert_within(m, group_matrix(wq, gran, 0, gs), qp.lo, qp.hi, qp.scale, sym)
    again = fake_quantize(wq, qp, axis=axis, group_size=group)
    assert torch.equal(again, wq)  # quantizing twice changes nothing
    codes = quantize_int(w, qp, axis=axis, group_size=group)
    assert int(codes.min()) >= qp.qmin and int(codes.max()) <= qp.qmax


@SLOW
@given(st.lists(arrays(np.float32, st.integers(1, 200), elements=st.floats(-1e6, 1e6, width=32)), min_size=1, max_size=4),
       range_specs, bits, st.booleans())
def test_activation_range_properties(batches, rng, b, sym):
    obs = HistogramObserver(bins=256)
    for a in batches:
        obs.update(torch.from_numpy(a))
    lo, hi = activation_range(obs.histogram(), rng, b, sym)
    assert math.isfinite(lo) and math.isfinite(hi) and lo <= hi
    qp = compute_qparams(lo, hi, b, sym)
    x = torch.from_numpy(np.concatenate(batches))
    xq = fake_quantize(x, qp)
    _assert_within(x.view(1, -1), xq.view(1, -1), qp.lo, qp.hi, qp.scale, sym)
    assert torch.equal(fake_quantize(xq, qp), xq)
