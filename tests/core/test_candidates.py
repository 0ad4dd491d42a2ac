"""Candidates (bits + granularity + range + algorithm) in sensitivity and search."""
from __future__ import annotations


import pytest

from quantviz.core.analysis.candidates import Candidate, CandidateError, from_key, normalize, parse_candidate, parse_candidates
from quantviz.core.numerics.spec import WeightSpec

from sens_models import make_session, transformer_data, transformer_model


def test_parse_and_apply():
    c = parse_candidate("int4g32+gptq")
    assert (c.bits, c.granularity, c.group_size, c.algorithm) == (4, "per_group", 32, "gptq")
    assert str(c) == "int4g32+gptq" and from_key("int4g32+gptq") == c and from_key("4") == 4
    w = c.apply(WeightSpec(bits=8, granularity="per_channel", algorithm="adaround", algorithm_options=(("iterations", 9),)))
    assert (w.bits, w.granularity, w.effective_group_size(), w.algorithm, w.algorithm_options) == (4, "per_group", 32, "gptq", ())
    m = parse_candidate("w3pc+mse+adaround")
    assert m.range_method == "mse" and m.algorithm == "adaround" and m.granularity == "per_channel"
    assert m.patch() == {"weight": {"bits": 3, "format": "int", "granularity": "per_channel", "range": {"method": "mse"},
                                    "algorithm": "adaround"}}  # the format too: int3 on an NVFP4 layer is int3
    # plain bit-widths stay ints (results keyed "4" as before); anything richer becomes candidates
    assert parse_candidates("8,int4,4") == (4, 8)
    got = parse_candidates("int8,int4g32,int4,int3+adaround")
    assert [str(c) for c in got] == ["int3+adaround", "int4", "int4g32", "int8"]  # by effective bits
    assert all(isinstance(c, Candidate) for c in normalize([4, parse_candidate("int4+gptq")]))


@pytest.mark.parametrize("text", ["int4x", "int1", "int4+magic", "int4+gptq+adaround", "", "int4g0"])
def test_bad_candidates_are_one_line_errors(text):
    with pytest.raises(CandidateError) as e:
        parse_candidates(text)
    assert "\n" not in str(e.value) and str(e.value).startswith("--candidates:")


@pytest.fixture(scope="module")
def tsession():
    m = transformer_model(tie=False)
    return make_session(m, transformer_data(m))


def test_sensitivity_and_search_over_candidates(tsession):
    cands = parse_candidates("int2,int2+gptq,int4g16,int8")
    sens = tsession.run_sensitivity("e2e", bits=cands, act_bits=())
    assert sens["bits"] == ["int2", "int2+gptq", "int4g16", "int8"]
    cells = {e["name"]: e["results"] for e in sens["layers"]}
    # GPTQ's compensation shows in the sweep: better output SQNR than plain 2-bit on most layers
    better = [n for n, c in cells.items() if c["int2+gptq"]["metrics"]["sqnr_db"] > c["int2"]["metrics"]["sqnr_db"]]
    assert len(better) >= len(cells) // 2
    res = tsession.run_search(avg_bits=4.5, bits=cands, pareto_steps=3)
    chosen = res["chosen"]
    assert chosen["avg_bits"] <= 4.5 + 1e-9  # the budget pays for the per-group scales
    assert set(chosen["bits"].values()) <= {"int2", "int2+gptq", "int4g16", "int8"}
    from quantviz.io.config import QuantConfig

    cfg = QuantConfig.from_dict(chosen["config"])
    specs = cfg.resolve_all(tsession.layers)
    for n, label in chosen["bits"].items():
        assert specs[n].weight == parse_candidate(label).apply(tsession.specs[n].weight)
    again = tsession.check(config=cfg, record=False)  # the stored config reproduces the measurement
    assert again.metrics["sqnr_db"] == pytest.approx(chosen["metrics"]["sqnr_db"], rel=1e-6)
    assert again.size["quantized_bytes"] == chosen["size_bytes"]


def test_proxies_refuse_candidates(tsession):
    from quantviz.core.analysis.sensitivity import SensitivityError

    with pytest.raises(SensitivityError, match="need method e2e or loo"):
        tsession.run_sensitivity("local", bits=parse_candidates("int4+gptq,int8"), act_bits=())


def test_cli_rejects_a_bad_candidate_in_one_line(cli):
    r = cli("search", "demo", "--avg-bits", "4", "--candidates", "int4,int3+magic")
    assert r.code != 0
    assert "int3+magic" in r.err and "Traceback" not in r.err and len(r.err_lines) == 1
