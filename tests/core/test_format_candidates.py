"""Format candidates for sensitivity and search: parsing, sizes with scales, and a searched mixed-format config."""
import pytest

from quantviz.core.analysis.candidates import Candidate, CandidateError, parse_candidates
from quantviz.core.numerics.spec import WeightSpec


def test_parse_candidates_formats_and_integers():
    c = parse_candidates("int8,int4g32,mxfp4,nvfp4,fp8")
    assert [str(x) for x in c] == ["mxfp4", "nvfp4", "int4g32", "fp8_e4m3", "int8"]  # by bits per weight
    assert parse_candidates("4,8") == (4, 8)  # plain bit-widths stay integers
    w = c[0].apply(WeightSpec())
    assert (w.format, w.bits) == ("mxfp4", 4)
    assert c[2].apply(WeightSpec()).effective_group_size() == 32
    # a format has no integer grid for an algorithm: its patch sets none
    assert Candidate(4, format="nvfp4").patch() == {"weight": {"bits": 4, "format": "nvfp4", "algorithm": "none"}}
    with pytest.raises(CandidateError, match="cannot read 'fp5'"):
        parse_candidates("int8,fp5")


def test_cli_search_with_format_candidates(capsys):
    import json

    from quantviz.cli.main import main

    assert main(["search", "demo", "--avg-bits", "5", "--candidates", "int8,mxfp4,nvfp4", "--steps", "2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["bits"] == ["mxfp4", "nvfp4", "int8"]
    assert set(res["chosen"]["bits"].values()) <= {"mxfp4", "nvfp4", "int8"}
    assert res["chosen"]["avg_bits"] <= 5 + 1e-9
    assert all(":" in p["name"] and "formats" in p for p in res["pareto"])  # labelled by format
    cfg = res["chosen"]["config"]["layers"]
    assert {v["weight"].get("format", "int") for v in cfg.values()} <= {"mxfp4", "nvfp4", "int"}


def test_cli_bad_candidate_is_one_line(capsys):
    from quantviz.cli.main import main

    assert main(["sensitivity", "demo", "--candidates", "int8,mxfp3"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mxfp3" in err[0]
