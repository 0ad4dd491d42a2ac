import math

import numpy as np
import pytest
import torch

from quantviz.core.analysis import proxies as P
from quantviz.core.analysis import ranking as R
from quantviz.core.analysis import sensitivity as S
from quantviz.core.errors import Cancelled
from quantviz.core.progress import CancelToken

from sens_models import ResNetish, make_session, residual_data, transformer_data, transformer_model


@pytest.fixture(scope="module")
def res_session():
    torch.manual_seed(0)
    return make_session(ResNetish().eval(), residual_data(), "W8A8")


def _same(a, b):
    for ea, eb in zip(a["layers"], b["layers"]):
        assert ea["name"] == eb["name"]
        for kind in ("results", "act_results"):
            for k, cell in ea.get(kind, {}).items():
                for m, v in cell["metrics"].items():
                    assert math.isclose(v, eb[kind][k]["metrics"][m], rel_tol=1e-9, abs_tol=1e-9), (ea["name"], k, m)


@pytest.mark.parametrize("method", ["e2e", "loo"])
def test_sweep_equals_naive_sweep(res_session, method):
    p = res_session.parts()
    fast = S.sweep(p, method, bits=(2, 4), act_bits=(4,))
    slow = S.sweep(p, method, bits=(2, 4), act_bits=(4,), naive=True)
    assert fast["incremental"] and not slow["incremental"]
    _same(fast, slow)
    assert {e["name"] for e in fast["layers"]} == {"stem", "a", "b", "fc"}
    e = fast["layers"][0]
    assert set(e["results"]) == {"2", "4"} and set(e["act_results"]) == {"4"}
    # fewer bits hurt more (fidelity), for every layer
    for e in fast["layers"]:
        if method == "e2e":
            assert e["results"]["2"]["metrics"]["sqnr_db"] < e["results"]["4"]["metrics"]["sqnr_db"]


def test_local_exact_matches_direct_computation(res_session):
    p = res_session.parts()
    exact = P.local(p, bits=(3,), sketch=False)
    sim = res_session.sim
    fc = sim.float_model.get_submodule("fc")
    wq = sim.quantize_weight("fc", S.weight_setting(p.base_specs["fc"], 3).weight).tensor
    sig = noise = 0.0
    feats = []
    h = fc.register_forward_hook(lambda m, a, o: feats.append(a[0]))
    with torch.no_grad():
        for x, _ in p.calib.batches(p.batch_size):
            sim.float_model(x)
    h.remove()
    for f in feats:
        y = fc(f)
        sig += float((y.double() ** 2).sum())
        noise += float(((torch.nn.functional.linear(f, wq, fc.bias) - y).double() ** 2).sum())
    got = next(e for e in exact["layers"] if e["name"] == "fc")["results"]["3"]["metrics"]["sqnr_db"]
    assert got == pytest.approx(10 * math.log10(sig / noise), abs=1e-3)
    sketched = P.local(p, bits=(3,), sketch=True, sketch_ratio=4)
    for ea, eb in zip(exact["layers"], sketched["layers"]):
        assert abs(ea["results"]["3"]["metrics"]["sqnr_db"] - eb["results"]["3"]["metrics"]["sqnr_db"]) < 3.0


def test_hessian_scores_grow_as_bits_shrink(res_session):
    r = P.hessian(res_session.parts(), bits=(2, 8), iters=1, max_samples=16)
    assert r["loss"] == "cross_entropy"
    for e in r["layers"]:
        s2, s8 = e["results"]["2"]["metrics"]["hessian_score"], e["results"]["8"]["metrics"]["hessian_score"]
        assert abs(s2) > abs(s8) > 0 and (s2 > 0) == (s8 > 0) == (e["trace_mean"] > 0)


def test_spearman_matches_scipy_with_ties():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, 30).astype(float)
    b = a + rng.normal(0, 2, 30)
    assert R.spearman(a, b) == pytest.approx(spearmanr(a, b).statistic)
    assert R.spearman([1, 1, 1], [1, 2, 3]) is None


def test_session_keeps_results_and_reports_rank_agreement(res_session):
    calls = []
    r1 = res_session.run_sensitivity("e2e", bits=(2, 4), act_bits=(), progress=lambda *a: calls.append(a))
    n = len(calls)
    assert n > 0
    assert res_session.run_sensitivity("e2e", bits=(2, 4), act_bits=()) is r1  # cached, no recompute
    assert len(calls) == n
    loc = res_session.run_sensitivity("local", bits=(2, 4), act_bits=())
    assert -1.0 <= loc["spearman"]["mean"]["sqnr_db"] <= 1.0
    assert set(res_session.analysis.sensitivity) >= {"e2e", "local"}
    assert set(res_session.analysis.scores.scores) == {"stem", "a", "b", "fc"}
    # the extras survive JSON (what a saved session holds)
    import json

    from quantviz.io.jsonsafe import sanitize

    json.dumps(sanitize(res_session.analysis.to_dict()), allow_nan=False)


def test_cancel_stops_the_sweep(res_session):
    tok = CancelToken()
    seen = []

    def progress(done, total, msg=""):
        seen.append(done)
        if done >= 2:
            tok.cancel()

    with pytest.raises(Cancelled):
        S.sweep(res_session.parts(), "e2e", bits=(2, 3, 4), progress=progress, cancel=tok)
    assert max(seen) < 3 * 4


def test_tied_layers_are_measured_as_one():
    m = transformer_model()
    s = make_session(m, transformer_data(m))
    groups = S.tie_groups(s.sim)
    assert ["emb", "head"] in groups
    r = S.sweep(s.parts(), "e2e", bits=(3,))
    by = {e["name"]: e for e in r["layers"]}
    assert by["emb"]["group"] == ["emb", "head"]
    assert by["emb"]["results"] == by["head"]["results"]


def test_local_sketch_in_blocks_equals_one_product(res_session, monkeypatch):
    """Big (or bf16) weights are sketched a block of output channels at a time, in float32: the same
    random signs and the same estimate as one product of the whole matrices."""
    p = res_session.parts()
    whole = P.local(p, bits=(2, 4), sketch=True, sketch_ratio=4)
    monkeypatch.setattr(P, "_BLOCK_ELEMS", 64)  # every sketched layer in blocks of a few channels
    blocked = P.local(p, bits=(2, 4), sketch=True, sketch_ratio=4)
    for ea, eb in zip(whole["layers"], blocked["layers"]):
        for k in ("2", "4"):
            assert ea["results"][k]["metrics"]["sqnr_db"] == pytest.approx(eb["results"][k]["metrics"]["sqnr_db"], abs=1e-3)
