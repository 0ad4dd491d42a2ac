"""The simulation's weight cache on its own: typed keys, budget, eviction, pins, materialisation."""
import pytest
import torch

from quantviz.core.numerics.quantize import quantize_weight_tensor
from quantviz.core.numerics.spec import WeightSpec
from quantviz.core.sim.fakequant import QuantSim
from quantviz.core.sim.weightcache import AlgorithmKey, RoundKey, WeightCache, WeightQuant, nbytes

W8 = WeightSpec(bits=8)


def _quant(seed: int = 0, spec: WeightSpec = W8) -> WeightQuant:
    w = torch.randn(64, 32, generator=torch.Generator().manual_seed(seed))
    t = quantize_weight_tensor(w, spec, 0, "w")
    return WeightQuant(t.tensor, t.qparams, t.sqnr_db, t.mse, t.clipped_fraction)


FLOAT_BYTES = 64 * 32 * 4  # one float32 weight
CODE_BYTES = 64 * 32  # its int8 codes


def test_keys_are_typed_and_compared_by_value():
    a, b = RoundKey("fc", W8), RoundKey("fc", WeightSpec(bits=8))
    assert a == b and hash(a) == hash(b)
    alg = AlgorithmKey("fc", W8, None)
    assert alg != a  # same layer and spec, another kind of result
    cache = WeightCache(1 << 20, FLOAT_BYTES)
    res = _quant()
    cache.store(a, res, 0)
    cache.store_algorithm(alg, _quant(1))
    assert len(cache) == 2 and b in cache and AlgorithmKey("fc", W8, 7) not in cache
    cache.drop_algorithms()  # new calibration: only algorithm results go
    assert alg not in cache and cache.get(a) is res


def test_small_model_keeps_tensors_whole_big_model_keeps_codes():
    res = _quant()
    small = WeightCache(1 << 20, FLOAT_BYTES)
    assert small.keeps_whole
    small.store(RoundKey("fc", W8), res, 0)
    assert small.get(RoundKey("fc", W8)) is res and small.bytes == nbytes(res.tensor)
    big = WeightCache(FLOAT_BYTES // 2, 10 * FLOAT_BYTES)  # the model's weights do not fit whole
    assert not big.keeps_whole
    big.store(RoundKey("fc", W8), res, 0)
    entry = big.get(RoundKey("fc", W8))
    assert entry.tensor is None and entry.packed is not None
    assert big.bytes == entry.packed.nbytes == CODE_BYTES
    assert big.stats == {"entries": 1, "tensors": 0, "codes": 1, "bytes": CODE_BYTES, "budget": FLOAT_BYTES // 2}


def test_budget_evicts_oldest_first_but_never_a_pinned_weight():
    cache = WeightCache(2 * CODE_BYTES, 10 * FLOAT_BYTES)  # room for two layers' codes
    keys = [RoundKey(f"l{i}", W8) for i in range(4)]
    cache.pin("l0", W8)  # l0 runs with W8: the applied config's weights stay
    for i, k in enumerate(keys):
        cache.store(k, _quant(i), 0)
        assert cache.bytes <= cache.budget
    held = [cache.get(k).held_bytes > 0 for k in keys]
    assert held == [True, False, False, True]  # l1 and l2 went, oldest first; l0 is pinned
    assert all(k in cache for k in keys)  # dropped tensors keep their entry (qparams, statistics)
    cache.pin("l0", None)
    cache.store(RoundKey("l4", W8), _quant(4), 0)
    assert cache.get(keys[0]).held_bytes == 0  # unpinned: now the oldest held


def test_materialisation_decodes_codes_or_recomputes_a_dropped_tensor():
    cache = WeightCache(CODE_BYTES, 10 * FLOAT_BYTES)  # room for one layer's codes
    a, b = RoundKey("a", W8), RoundKey("b", W8)
    ra, rb = _quant(0), _quant(1)
    cache.store(a, ra, 0)
    cache.store(b, rb, 0)  # evicts a's codes
    calls = []

    def recompute(res):
        def f():
            calls.append(res)
            return res
        return f

    got = cache.whole(b, recompute(rb))
    assert calls == [] and torch.equal(got.tensor, rb.tensor) and got.packed is None  # decoded from codes
    assert cache.get(b).tensor is None  # decoding does not store the tensor
    got = cache.whole(a, recompute(ra))
    assert calls == [ra] and got is ra  # nothing held: recomputed by the caller's function
    assert cache.whole(RoundKey("c", W8), recompute(ra)) is None and calls == [ra]


def test_entry_count_is_bounded_and_a_full_clear_bumps_the_generation():
    cache = WeightCache(1 << 30, FLOAT_BYTES, cap=1)  # at most 4 entries before trimming
    cache.pin("r0", W8)
    for i in range(3):
        cache.store_algorithm(AlgorithmKey(f"a{i}", W8, 0), _quant(i))
    for i in range(3):
        cache.store(RoundKey(f"r{i}", W8), _quant(i), 0)
    # r1 made five entries; r2's store trimmed the unpinned rounding results first
    assert RoundKey("r0", W8) in cache and RoundKey("r1", W8) not in cache
    assert all(AlgorithmKey(f"a{i}", W8, 0) in cache for i in range(3))
    gen = cache.generation
    for i in range(3, 10):
        cache.store_algorithm(AlgorithmKey(f"a{i}", W8, 0), _quant(i))
    assert cache.generation == gen + 1 and len(cache) < 8 and cache.bytes >= 0


def test_the_simulation_keeps_its_weights_in_the_cache_and_one_record_per_layer():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    sim = QuantSim(model)
    from quantviz.core.numerics.spec import LayerSpec

    assert set(sim.state) == {"0", "2"} and sim.state["0"].fmod is model[0]
    sim.apply({"0": LayerSpec(W8), "2": LayerSpec(W8)})
    assert sim.state["0"].wspec == W8 and RoundKey("0", W8) in sim.cache
    assert sim.cache.pinned(RoundKey("0", W8))
    sim.weight_cache_bytes = 123  # the budget is the cache's
    assert sim.cache.budget == 123 and sim.cache_stats["budget"] == 123
    sim.load_state(model.state_dict())  # new float weights: nothing cached, nothing applied
    assert len(sim.cache) == 0 and sim.state["0"].wspec is None and not sim.cache.pinned(RoundKey("0", W8))
    with pytest.raises(KeyError):
        sim.float_weight("nope")
    sim.close()


def test_the_default_budget_leaves_room_for_the_resident_weights():
    """A 7B bf16 model (13.5 GB) on a machine with 21 GB available: its int8 codes (6.7 GB) would
    not fit beside its weights, so the budget is what is left after them and the reserve."""
    from quantviz.core.sim.weightcache import RESERVE_BYTES, default_cache_bytes

    gb = 1 << 30
    numel = int(6.74e9)
    assert default_cache_bytes(2 * numel, numel) == numel  # no memory figure: one int8 copy
    assert default_cache_bytes(2 * numel, numel, available=21 * gb) == 21 * gb - 2 * numel - RESERVE_BYTES
    assert default_cache_bytes(2 * numel, numel, available=10 * gb) == 64 << 20  # at least 64 MiB
    small = 134_000_000
    assert default_cache_bytes(4 * small, small, available=21 * gb) == small  # room to spare: unchanged
