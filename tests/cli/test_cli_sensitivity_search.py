import json

import pytest

from quantviz.cli.main import main

RECIPE = '''
import torch
from torch import nn

def build_model():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 5))
    with torch.no_grad():
        m[2].weight[:, :2] *= 20.0  # one layer with outliers: really more sensitive
    return m

def evaluation_data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(96, 8, generator=g)
    with torch.no_grad():
        y = build_model()(x).argmax(1)
    return x, y
'''


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    p = tmp_path_factory.mktemp("r") / "mlp.py"
    p.write_text(RECIPE)
    return str(p)


def _json(capsys):
    out = capsys.readouterr().out
    return json.loads(out)


def test_sensitivity_json_and_out(recipe, capsys, tmp_path):
    out = tmp_path / "sens.json"
    assert main(["sensitivity", recipe, "--bits", "2,4", "--json", "--out", str(out), "--threads", "1"]) == 0
    res = _json(capsys)
    assert res["method"] == "e2e" and res["bits"] == [2, 4]
    assert "accuracy" in res["baseline"]["metrics"]
    assert [e["name"] for e in res["layers"]] == ["0", "2", "4"]
    for e in res["layers"]:
        assert set(e["results"]) == {"2", "4"}
        assert {"accuracy", "sqnr_db"} <= set(e["results"]["2"]["metrics"])
    assert json.loads(out.read_text())["layers"] == res["layers"]
    assert main(["sensitivity", recipe, "--bits", "2,4", "--method", "local", "--compare", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "Spearman" in text and "W2" in text


def test_local_exact_flag_turns_the_sketch_off(recipe, capsys):
    assert main(["sensitivity", recipe, "--bits", "2", "--method", "local", "--json", "--threads", "1"]) == 0
    sketched = _json(capsys)
    assert sketched["sketch"] is True and sketched["sketch_ratio"] == 16
    assert main(["sensitivity", recipe, "--bits", "2", "--method", "local", "--exact", "--json", "--threads", "1"]) == 0
    exact = _json(capsys)
    assert exact["sketch"] is False and exact["options"] == {"sketch": False}
    for a, b in zip(sketched["layers"], exact["layers"]):
        assert abs(a["results"]["2"]["metrics"]["sqnr_db"] - b["results"]["2"]["metrics"]["sqnr_db"]) < 6.0


def test_search_out_config_reproduces_metrics(recipe, capsys, tmp_path):
    cfg = tmp_path / "cfg.json"
    assert main(["search", recipe, "--avg-bits", "4.5", "--bits", "2,4", "--steps", "2", "--out", str(cfg),
                 "--json", "--threads", "1"]) == 0
    res = _json(capsys)
    c = res["chosen"]
    assert c["avg_bits"] <= 4.5 + 1e-9 and c["size_bytes"] > 0
    assert all({"size_bytes", "avg_bits", "metrics"} <= set(q) for q in res["pareto"])
    assert main(["evaluate", recipe, "--config", str(cfg), "--json", "--threads", "1"]) == 0
    ev = _json(capsys)
    assert ev["quantized"]["metrics"] == pytest.approx(c["metrics"])
    assert ev["quantized"]["size_bytes"] == c["size_bytes"]


def test_bad_arguments_are_one_line_errors(recipe, capsys):
    assert main(["search", recipe, "--avg-bits", "1", "--bits", "2,4", "--threads", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("quantviz: error:") and len(err.strip().splitlines()) == 1
    assert main(["sensitivity", recipe, "--bits", "two", "--threads", "1"]) == 1
    assert "--bits" in capsys.readouterr().err


def test_score_cache_flags(recipe, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTVIZ_CACHE_DIR", str(tmp_path / "cache"))
    args = ["sensitivity", recipe, "--method", "e2e", "--bits", "4"]
    assert main(args + ["--no-cache"]) == 0
    assert not (tmp_path / "cache").exists()
    assert main(args) == 0
    assert "from the score cache" not in capsys.readouterr().out
    assert main(args) == 0
    assert "from the score cache" in capsys.readouterr().out
    assert main(args + ["--ray-workers", "0", "--ray", "local"]) != 0
    assert "--ray-workers must be at least 1" in capsys.readouterr().err


def test_search_ranked_by_a_cached_local_sweep(recipe, capsys, tmp_path, monkeypatch):
    """``search --sensitivity local`` ranks the layers by the local proxy and reuses the sweep that
    ``sensitivity --method local`` left in the score cache (no second sweep, no e2e sweep)."""
    from quantviz.core.analysis import proxies, sensitivity

    monkeypatch.setenv("QUANTVIZ_CACHE_DIR", str(tmp_path / "cache"))
    calls = {"local": 0, "e2e": 0}
    real_local, real_sweep = proxies.local_totals, sensitivity.sweep

    def local_spy(*a, **k):
        calls["local"] += 1
        return real_local(*a, **k)

    def sweep_spy(*a, **k):
        calls["e2e"] += 1
        return real_sweep(*a, **k)

    monkeypatch.setattr(proxies, "local_totals", local_spy)
    monkeypatch.setattr("quantviz.core.analysis.methods.sweep", sweep_spy)
    assert main(["sensitivity", recipe, "--method", "local", "--bits", "2,4", "--act-bits", "none", "--threads", "1"]) == 0
    capsys.readouterr()
    assert calls == {"local": 1, "e2e": 0}
    assert main(["search", recipe, "--avg-bits", "4.5", "--bits", "2,4", "--steps", "2", "--sensitivity", "local",
                 "--json", "--threads", "1"]) == 0
    res = _json(capsys)
    assert calls == {"local": 1, "e2e": 0}
    assert res["sensitivity"] == "local" and res["sensitivity_from_cache"] is True
    assert res["chosen"]["avg_bits"] <= 4.5 + 1e-9 and "accuracy" in res["chosen"]["metrics"]
    assert main(["search", recipe, "--avg-bits", "4.5", "--bits", "2,4", "--steps", "2", "--sensitivity", "local",
                 "--threads", "1"]) == 0
    assert "layers ranked by local sensitivity, from the score cache" in capsys.readouterr().out


def test_search_sensitivity_bad_value_is_one_line(recipe, capsys):
    assert main(["search", recipe, "--avg-bits", "4.5", "--bits", "2,4", "--sensitivity", "loo", "--threads", "1"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("quantviz: error: --sensitivity: unknown method 'loo' (choose from e2e, local, hessian)")


def test_search_measures_less_and_says_how_many(recipe, capsys):
    """#25 §4: the default search screens candidates and measures few end to end; --measure all
    measures every one; both say how many (text and JSON)."""
    base = ["search", recipe, "--avg-bits", "5", "--bits", "2,4,8", "--steps", "4", "--threads", "1"]
    assert main(base + ["--json"]) == 0
    less = _json(capsys)
    assert main(base + ["--measure", "all", "--json"]) == 0
    full = _json(capsys)
    assert less["measure"] == "less" and full["measure"] == "all"
    assert full["full_evaluations"] == full["candidates"] == less["candidates"]
    assert 1 <= less["full_evaluations"] < less["candidates"]
    assert less["chosen"]["bits"] == full["chosen"]["bits"]
    assert main(base) == 0
    out = capsys.readouterr().out
    assert (f"{less['candidates']} candidates, {less['screened']} screened on {less['screen_samples']} of "
            f"{less['eval_samples']} samples, {less['full_evaluations']} measured end to end") in out
    assert main(base + ["--measure", "all"]) == 0
    assert f"{full['candidates']} candidates, all {full['candidates']} measured end to end" in capsys.readouterr().out
