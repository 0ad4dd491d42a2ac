"""Sensitivity and search over integer bit-widths on layers in a float / block format (issue 22 D).

A plain ``--bits`` sweep / search puts a layer on an integer grid of that many
bits, whatever its format was: the sweep's columns differ, and a search point's
label and size are those of the config it applies (no hidden ``bits`` left
under a format)."""
import pytest

from quantviz.io.config import QuantConfig
from quantviz.session import Session

FORMATS = {"features.7": "nvfp4", "classifier.1": "mxfp4"}


@pytest.fixture(scope="module")
def demo():
    s = Session.open("demo", batch_size=64)
    for name, fmt in FORMATS.items():
        s.edit_layers([name], {"weight": {"format": fmt, "bits": 4}})
    return s


def test_a_sweep_over_bits_changes_a_format_layer(demo):
    res = demo.run_sensitivity("local", bits=(2, 8), act_bits=())
    for e in res["layers"]:
        if e["name"] in FORMATS:
            lo, hi = (e["results"][b]["metrics"]["sqnr_db"] for b in ("2", "8"))
            assert hi > lo + 20, e["name"]  # int2 and int8, not the same NVFP4 / MXFP4 twice


def test_search_points_are_what_applying_them_gives(demo):
    res = demo.run_search(avg_bits=4, bits=(2, 4, 8), pareto_steps=2, sensitivity="local")
    points = [res["chosen"]] + res["pareto"]
    for q in points:
        cfg = QuantConfig.from_dict(q["config"])
        specs = cfg.resolve_all(demo.layers)
        for name in FORMATS:  # the searched width on an integer grid: no format left over it
            assert specs[name].weight.format == "int" and specs[name].weight.bits == q["bits"][name]
        size = demo.size(specs)
        assert size.quantized_bytes == q["size_bytes"]
        assert size.avg_bits == pytest.approx(q["avg_bits"])
        assert f"{size.avg_bits:.2f}" in q["name"]
    assert res["chosen"]["avg_bits"] <= 4 + 1e-9
    again = demo.check(config=QuantConfig.from_dict(res["chosen"]["config"]), record=False)
    assert again.size["quantized_bytes"] == res["chosen"]["size_bytes"]
    assert again.metrics == pytest.approx(res["chosen"]["metrics"])


def test_cli_says_format_layers_are_searched_on_int_grids(tmp_path, capsys):
    import json

    from quantviz.cli.main import main

    cfg = QuantConfig.from_dict({"version": 1, "default": {"weight": {"bits": 8}},
                                 "layers": {n: {"weight": {"format": f, "bits": 4}} for n, f in FORMATS.items()}})
    p = tmp_path / "cfg.json"
    p.write_text(json.dumps(cfg.to_dict()))
    assert main(["sensitivity", "demo", "--config", str(p), "--method", "local", "--bits", "2,8",
                 "--act-bits", "none", "--json"]) == 0
    out, err = capsys.readouterr()
    json.loads(out)
    note = next(l for l in err.splitlines() if "note:" in l)
    assert "features.7 (NVFP4)" in note and "classifier.1 (MXFP4)" in note and "int grids" in note
    from quantviz.core.analysis.candidates import format_note, parse_candidates

    specs = cfg.resolve_all(Session.open("demo", prepare=False).layers)
    assert format_note(specs, (2, 8)) == note.split("note: ", 1)[1]
    assert format_note(specs, parse_candidates("int2,nvfp4")) is None  # candidates name their own format
