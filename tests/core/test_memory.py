"""One model, no spare copies: the quantized view, the weight cache's budget and codes."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from quantviz.core.model.data import Dataset
from quantviz.core.sim.evaluate import evaluate_quantized, float_reference
from quantviz.core.sim.fakequant import QuantSim
from quantviz.core.numerics.spec import ActSpec, LayerSpec, RangeSpec, WeightSpec
from quantviz.core.sim.wcodes import encode


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)).eval()


def _specs(sim, act=8, **w):
    return {l.name: LayerSpec(WeightSpec(**w), ActSpec(bits=act)) for l in sim.layers}


def test_no_copy_of_a_model_without_batchnorm():
    m = _mlp()
    sim = QuantSim(m)
    assert sim.float_model is m
    assert sim.float_weight("0").data_ptr() == m[0].weight.data_ptr()  # a view, not a clone
    sim.close()


def test_budgeted_cache_gives_the_same_outputs():
    x = torch.randn(40, 32)
    data = Dataset(x, name="d")
    outs = []
    for budget in (1 << 30, 0, 20_000):  # everything kept / nothing kept / some kept, some as codes
        sim = QuantSim(_mlp(), weight_cache_bytes=budget)
        sim.calibrate(data, batch_size=16)
        ref = float_reference(sim.float_model, data, batch_size=16)
        for spec in (dict(bits=8), dict(bits=4, granularity="per_group", group_size=16)):
            sim.apply(_specs(sim, **spec))
            with torch.no_grad():
                outs.append((budget, str(spec), sim.qmodel(x)))
            m = evaluate_quantized(sim.qmodel, data, ref)
            assert m["sqnr_db"] < 200
        assert sim.cache_stats["bytes"] <= budget
        # the float model is untouched after quantized runs
        with torch.no_grad():
            assert torch.equal(sim.float_model(x), _mlp()(x))
        sim.close()
    by = {}
    for budget, spec, o in outs:
        by.setdefault(spec, []).append(o)
    for spec, os_ in by.items():
        assert all(torch.equal(o, os_[0]) for o in os_), spec


def test_codes_round_trip_exactly():
    sim = QuantSim(_mlp())
    for spec, axis in ((WeightSpec(bits=4, granularity="per_group", group_size=24), 0),
                       (WeightSpec(bits=8, granularity="per_tensor", symmetric=False), None),
                       (WeightSpec(bits=3), 0)):
        wq = sim.quantize_weight("2", spec)
        codes = encode(wq.tensor, wq.qparams, axis, spec.effective_group_size())
        assert codes is not None and codes.q.dtype in (torch.int8, torch.uint8)
        assert torch.equal(codes.decode(), wq.tensor)
    # a tensor off its grid is refused
    wq = sim.quantize_weight("2", WeightSpec(bits=8))
    assert encode(wq.tensor + 1e-3, wq.qparams, 0, None) is None
    sim.close()


def test_bf16_model_keeps_its_dtype():
    m = _mlp().to(torch.bfloat16)
    sim = QuantSim(m)
    sim.apply(_specs(sim, act=None, bits=8))
    wq = sim.quantize_weight("0", WeightSpec(bits=8))
    assert wq.tensor.dtype == torch.bfloat16 and sim.float_weight("0").dtype == torch.bfloat16
    x = torch.randn(4, 32, dtype=torch.bfloat16)
    with torch.no_grad():
        assert sim.qmodel(x).dtype == torch.bfloat16
    sim.close()


V = 3000


def _big_lm(dtype=torch.float32, vocab: int = V):
    """A token table and an output layer; tests make them "big" by lowering wcodes.BLOCK_ELEMS."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(vocab, 96), nn.Linear(96, 64), nn.ReLU(), nn.Linear(64, vocab)).to(dtype).eval()


@pytest.fixture
def small_blocks(monkeypatch):
    from quantviz.core.sim import wcodes

    monkeypatch.setattr(wcodes, "BLOCK_ELEMS", 1 << 14)  # blocks of a few hundred channels


def test_block_wise_codes_equal_the_whole_tensor_path(small_blocks):
    from quantviz.core.sim import wcodes

    vocab = 1000  # with small blocks both layers still split into several blocks, the last one partial;
    m = _big_lm(vocab=vocab)  # the MSE range's search costs in proportion to the rows, so fewer than V
    sim = QuantSim(m, weight_cache_bytes=1 << 30)  # everything fits whole: the reference path
    for spec in (WeightSpec(bits=8), WeightSpec(bits=4, granularity="per_group", group_size=48),
                 WeightSpec(bits=3, symmetric=False), WeightSpec(bits=4, range=RangeSpec(method="mse"))):
        for name in ("0", "3"):
            w = sim.float_weight(name)
            assert wcodes.blockable(spec, w.numel()) and w.numel() > 3 * wcodes.BLOCK_ELEMS
            whole = sim.quantize_weight(name, spec)
            got = wcodes.quantize_codes(w, spec, sim.by_name[name].channel_axis, name)
            assert got is not None
            codes, qp, sqnr, mse, clipped = got
            assert torch.equal(codes.decode(), whole.tensor)
            assert torch.equal(qp.scale, whole.qparams.scale) and torch.equal(qp.zero_point, whole.qparams.zero_point)
            assert abs(sqnr - whole.sqnr_db) < 1e-3 and abs(clipped - whole.clipped_fraction) < 1e-6
            ids = torch.tensor([[0, 5, vocab - 1], [17, 17, 3]])
            if name == "0":
                assert torch.equal(codes.take(ids), whole.tensor[ids])
    sim.close()


def test_model_kept_as_codes_runs_like_the_whole_tensors(small_blocks):
    x = torch.randint(0, V, (6, 5))
    data = Dataset(x, name="tokens")
    outs = {}
    for budget in (1 << 30, None):  # whole tensors / the default: codes (the model is above the budget)
        sim = QuantSim(_big_lm(), weight_cache_bytes=budget)
        if budget is None:
            sim.weight_cache_bytes = sim.float_weight_bytes // 4  # as for a big model: int8 codes only
        sim.calibrate(data, batch_size=3)
        sim.apply(_specs(sim, act=8, bits=8))
        with torch.no_grad():
            outs[budget] = sim.qmodel(x)
        if budget is None:
            st = sim.cache_stats
            assert st["codes"] == len(sim.layers) and st["tensors"] == 0 and st["bytes"] <= sim.weight_cache_bytes
            # the embedding looked up its rows: its float table is what the model holds
            assert sim.float_model[0].weight is sim.state["0"].float_param
        sim.close()
    assert torch.equal(outs[1 << 30], outs[None])


def test_default_cache_holds_one_int8_copy():
    for dtype in (torch.float32, torch.bfloat16):
        sim = QuantSim(_big_lm(dtype))
        numel = sum(sim.float_weight(l.name).numel() for l in sim.layers)
        assert sim.weight_cache_bytes == max(64 << 20, numel)
        sim.close()


def test_bf16_checkpoint_stays_bf16_through_calibration_and_evaluation(small_blocks):
    m = _big_lm(torch.bfloat16)
    x = torch.randint(0, V, (4, 5))
    data = Dataset(x, name="tokens")
    sim = QuantSim(m, weight_cache_bytes=1 << 20)  # codes path
    sim.calibrate(data, batch_size=2)
    ref = float_reference(sim.float_model, data, batch_size=2)
    sim.apply(_specs(sim, act=8, bits=4, granularity="per_group", group_size=32))
    assert all(p.dtype == torch.bfloat16 for p in sim.float_model.parameters())
    assert sim.quantize_weight("3", WeightSpec(bits=4, granularity="per_group", group_size=32)).tensor.dtype == torch.bfloat16
    metrics = evaluate_quantized(sim.qmodel, data, ref)
    assert 0 < metrics["sqnr_db"] < 200
    assert all(p.dtype == torch.bfloat16 for p in sim.float_model.parameters())
    sim.close()


def test_bf16_hugging_face_folder_opens_in_bf16(tmp_path):
    """A bf16 checkpoint stays bf16 on the CPU (float model and quantized weights); the metrics come out."""
    transformers = pytest.importorskip("transformers")
    import numpy as np

    from quantviz.session import Session

    cfg = transformers.LlamaConfig(vocab_size=211, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   tie_word_embeddings=False)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(str(tmp_path / "llama"))
    ids = torch.randint(0, 211, (6, 16)).numpy()
    np.savez(tmp_path / "tok.npz", input_ids=ids, attention_mask=np.ones_like(ids))
    s = Session.open(str(tmp_path / "llama"), data=str(tmp_path / "tok.npz"), batch_size=3)
    assert {p.dtype for p in s.sim.float_model.parameters()} == {torch.bfloat16}
    res = s.check(incremental=False)
    assert {p.dtype for p in s.sim.float_model.parameters()} == {torch.bfloat16}
    name = s.layers[0].name
    assert s.sim.applied_weight(name).dtype == torch.bfloat16
    assert "perplexity" in res.metrics and 0 < res.metrics["sqnr_db"] < 200
    s.sim.close()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_proxies_leave_a_big_models_weight_cache_alone(dtype):
    """The local and Hessian proxies quantize every layer at each bit-width once: on a model whose
    cache holds codes in a budget (a big model) those one-off results are not kept (on the 1.1B
    model they filled the budget on top of the applied config's), and the scores are the same."""
    from quantviz.core.analysis import proxies
    from quantviz.core.sources.base import ModelBundle
    from quantviz.io.config import preset
    from quantviz.session import Session

    def session(budget_quarter: bool):
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8)).to(dtype).eval()
        x = torch.randn(48, 16).to(dtype)
        data = Dataset(x, None)
        s = Session(ModelBundle(model=m, name="mlp", kind="recipe", reference="mlp", eval=data, calib=data),
                    eval_data=data, calib_data=data, config=preset("W8"), batch_size=16)
        s.prepare()
        if budget_quarter:  # as for a big model: every weight as int8 codes, not whole
            s.sim.weight_cache_bytes = s.sim.float_weight_bytes // 4 if dtype == torch.float32 else s.sim.float_weight_bytes // 2
        s.check(label="W8")
        return s

    results = {}
    for big in (False, True):
        s = session(big)
        assert s.sim.keeps_whole is (not big)
        before = dict(s.sim.cache_stats)
        parts = s.parts()
        loc = proxies.local(parts, bits=(3, 4, 6))
        hes = proxies.hessian(parts, bits=(3, 4, 6), iters=1)
        after = s.sim.cache_stats
        if big:
            assert after == before  # nothing new held
        else:
            assert after["entries"] > before["entries"]  # a small model keeps them (cheap, reused later)
        results[big] = [(l["name"], b, round(l["results"][b]["metrics"][m], 6)) for r, m in ((loc, "sqnr_db"), (hes, "hessian_score"))
                        for l in r["layers"] for b in l["results"]]
    assert results[True] == results[False]


@pytest.mark.parametrize("spec,axis", [(WeightSpec(bits=8), 0), (WeightSpec(bits=4, granularity="per_group", group_size=24), 0),
                                       (WeightSpec(bits=8, granularity="per_tensor", symmetric=False), None)])
def test_encode_in_blocks_gives_the_whole_tensors_codes(monkeypatch, spec, axis):
    """encode works a block of rows (per tensor: of columns) at a time, so a 65M-weight embedding
    is not copied to float32 whole (a 400 MB spike of the 1.1B search); the codes are the same."""
    from quantviz.core.sim import wcodes

    sim = QuantSim(_mlp())
    wq = sim.quantize_weight("2", spec)
    whole = encode(wq.tensor, wq.qparams, axis, spec.effective_group_size())
    monkeypatch.setattr(wcodes, "BLOCK_ELEMS", 100)  # many blocks
    blocked = wcodes.encode(wq.tensor, wq.qparams, axis, spec.effective_group_size())
    assert whole is not None and blocked is not None
    assert torch.equal(blocked.q, whole.q) and torch.equal(blocked.decode(), wq.tensor)
    sim.close()
