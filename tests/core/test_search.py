import itertools

import numpy as np
import pytest

from quantviz.core.analysis.search import SearchError, solve, solve_dp, solve_milp, uniform_path

from sens_models import make_session, transformer_data, transformer_model


def _brute(costs, sizes, budget):
    best, arg = None, None
    for ch in itertools.product(*[range(len(r)) for r in costs]):
        s = sum(sizes[g][k] for g, k in enumerate(ch))
        c = sum(costs[g][k] for g, k in enumerate(ch))
        if s <= budget and (best is None or c < best - 1e-12):
            best, arg = c, list(ch)
    return best, arg


def test_known_optimum():
    # three layers, options (2, 4, 8) bits; layer 1 is very sensitive, layer 2 is huge
    sizes = [[20, 40, 80], [20, 40, 80], [200, 400, 800]]
    costs = [[5.0, 1.0, 0.1], [90.0, 30.0, 0.2], [3.0, 1.0, 0.5]]
    for fn in (solve_dp, solve_milp):
        # 320 bytes: the sensitive layer 1 gets 8 bits, the huge layer 2 gets 2, layer 0 gets 4
        assert fn(costs, sizes, 320) == [1, 2, 0]
        assert fn(costs, sizes, 319) == [0, 2, 0]
        assert fn(costs, sizes, 1000) == [2, 2, 2]


@pytest.mark.parametrize("seed", range(6))
def test_solvers_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    g, k = 5, 4
    sizes = [[int(v) for v in sorted(rng.integers(1, 50, k))] for _ in range(g)]
    costs = [sorted(rng.random(k).tolist(), reverse=True) for _ in range(g)]
    budget = int(rng.integers(min(sum(r[0] for r in sizes), 60), sum(r[-1] for r in sizes)))
    best, _ = _brute(costs, sizes, budget)
    for fn in (solve_dp, solve_milp):
        ch = fn(costs, sizes, budget)
        assert sum(sizes[i][c] for i, c in enumerate(ch)) <= budget
        assert sum(costs[i][c] for i, c in enumerate(ch)) == pytest.approx(best)
    assert solve(costs, sizes, 0) is None and solve_dp(costs, sizes, 0) is None


def test_uniform_path_stays_in_budget_and_improves():
    cost = np.array([[5.0, 1.0, 0.1], [9.0, 3.0, 0.2], [3.0, 1.0, 0.5]])
    size = np.array([[2, 4, 8], [2, 4, 8], [20, 40, 80]], float)
    path = uniform_path(cost, size, 48)
    assert path[0] == [1, 1, 1]
    costs = [sum(cost[g, k] for g, k in enumerate(ch)) for ch in path]
    assert all(b < a for a, b in zip(costs, costs[1:]))
    assert all(sum(size[g, k] for g, k in enumerate(ch)) <= 48 for ch in path)


@pytest.fixture(scope="module")
def tsession():
    m = transformer_model()
    return make_session(m, transformer_data(m))


def test_search_exploits_differences_and_ties(tsession):
    from quantviz.io.config import QuantConfig, preset

    w4 = tsession.check(config=preset("W4"), record=False)
    budget = w4.size["avg_bits"]  # W4's bits per weight, its scales included (as the budget counts them)
    assert 4 < budget < 5
    res = tsession.run_search(avg_bits=budget, bits=(2, 4, 8), pareto_steps=3)
    chosen = res["chosen"]
    assert chosen["avg_bits"] <= budget + 1e-9
    assert len(set(chosen["bits"].values())) > 1  # not uniform
    assert chosen["bits"]["emb"] == chosen["bits"]["head"]  # tied weights get one bit-width
    assert chosen["size_bytes"] <= w4.size["quantized_bytes"]
    assert chosen["metrics"]["sqnr_db"] > w4.metrics["sqnr_db"]
    # the stored config reproduces the measured metrics
    again = tsession.check(config=QuantConfig.from_dict(chosen["config"]), record=False)
    assert again.metrics == pytest.approx(chosen["metrics"])
    # the Pareto front is sorted by size and strictly improving
    sizes = [q["size_bytes"] for q in res["pareto"]]
    assert sizes == sorted(sizes) and len(res["pareto"]) >= 2
    assert tsession.analysis.search is res


def test_search_other_budgets(tsession):
    w4 = tsession.size({}).float_bytes
    res = tsession.run_search(size_bytes=w4 // 5, bits=(2, 4, 8), pareto_steps=3)
    assert res["chosen"]["size_bytes"] <= w4 // 5
    res = tsession.run_search(max_drop=0.05, bits=(2, 4, 8), pareto_steps=3)
    ref = tsession.reference.metrics["accuracy"]
    assert ref - res["chosen"]["metrics"]["accuracy"] <= 0.05 + 1e-12
    with pytest.raises(SearchError):
        tsession.run_search(avg_bits=1.5, bits=(2, 4, 8))
