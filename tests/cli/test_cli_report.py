"""`quantviz export --format report` from the CLI (issue 13.14): sensitivity on request, rankings titled
by what they rank, the change against float, legends that match what is drawn."""
import re

import pytest

from quantviz.cli.main import main


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    d = tmp_path_factory.mktemp("rep")
    plain, sens = d / "plain.html", d / "sens.html"
    assert main(["export", "demo", "--preset", "W4", "--format", "report", "--out", str(plain)]) == 0
    assert main(["export", "demo", "--preset", "W4", "--format", "report", "--sensitivity", "e2e",
                 "--sensitivity", "e2e", "--out", str(sens)]) == 0
    return plain.read_text(), sens.read_text()


def _section(html, title_start):
    m = re.search(r"<h2>(%s[^<]*)</h2>" % re.escape(title_start), html)
    return m.group(1) if m else None


def test_without_sensitivity_the_ranking_says_it_is_weight_sqnr(reports):
    plain, _ = reports
    assert _section(plain, "Most sensitive") is None
    assert _section(plain, "Layers with the lowest weight SQNR") is not None
    assert "ranked by weight SQNR" in plain.lower() or "Ranked by weight SQNR" in plain
    assert "<h2>Sensitivity" not in plain


def test_with_sensitivity_the_heatmap_is_there_and_ranks_the_layers(reports):
    _, sens = reports
    assert _section(sens, "Sensitivity (e2e") is not None
    assert _section(sens, "Most sensitive layers") is not None
    assert "Ranked by e2e sensitivity: the accuracy drop" in sens
    # the first histogram shown is the layer every sensitivity method puts first on the demo
    first = re.search(r"Most sensitive layers</h2>.*?<svg.*?font-weight=\"bold\">([\w.]+) weights", sens, re.S)
    assert first and first.group(1) == "features.0"


def test_metrics_chart_shows_the_change_against_float(reports):
    plain, _ = reports
    assert "Change against float" in plain and "percentage points" in plain
    assert re.search(r">[+-]\d+\.\d\d pt<", plain)
    assert "<th>change</th>" in plain or 'change</th>' in plain


def test_histogram_legends_only_name_what_is_drawn(reports):
    plain, _ = reports
    charts = re.findall(r"<svg.*?</svg>", plain, re.S)
    hists = [c for c in charts if "log10(count+1)" in c]
    assert hists
    for c in hists:
        if ">clip range<" in c:
            assert 'stroke-dasharray="5,3"' in c
        if "grid points" in c:
            assert 'stroke="#333"' in c
    assert "Red lines" not in plain  # no legend for lines that cannot be seen


def test_sensitivity_flag_is_for_reports_only(tmp_path, capsys):
    code = main(["export", "demo", "--preset", "W4", "--format", "json", "--sensitivity", "e2e",
                 "--out", str(tmp_path / "x.json")])
    assert code != 0 and "--sensitivity" in capsys.readouterr().err


@pytest.mark.parametrize("name, label", [("FP8", "FP8 E4M3"), ("W-FP8A-FP8", "FP8 E4M3"), ("MXFP4", "MXFP4"),
                                         ("NVFP4", "NVFP4"), ("MXFP4A-MXFP8", "MXFP4")])
def test_report_renders_for_every_float_and_block_format(tmp_path, name, label):
    """Issue 22 A: the report rendered only integer grids; a float / block format failed with
    'FormatParams' object has no attribute 'zero_point'. Each layer's row and histogram name the format."""
    out = tmp_path / "r.html"
    assert main(["export", "demo", "--preset", name, "--format", "report", "--out", str(out)]) == 0
    html = out.read_text()
    table = html.split("<h2>Per-layer config</h2>", 1)[1].split("<h2>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", table)[1:]
    assert rows and all(label in r for r in rows)  # every layer names its format
    hists = [c for c in re.findall(r"<svg.*?</svg>", html, re.S) if "log10(count+1)" in c]
    assert hists and all(label in c for c in hists if " weights (" in c)
    if FORMATS_BLOCK[label]:  # no single clip range to draw: the legend must not claim one
        assert not any(">clip range<" in c for c in hists if " weights (" in c)
    else:
        assert any(">clip range<" in c for c in hists if " weights (" in c)


FORMATS_BLOCK = {"FP8 E4M3": False, "MXFP4": True, "NVFP4": True}
