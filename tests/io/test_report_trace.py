"""The error trace in the HTML report: a depth chart and its table, from narrow inputs."""
import math
import re

from quantviz.io import svg


def _trace(first_exact=True):
    layers = [{"name": "conv1", "type": "Conv2d", "accumulated_sqnr_db": None if first_exact else 30.0,
               "local_sqnr_db": None if first_exact else 30.0, "input_accumulated_sqnr_db": None,
               "input_local_sqnr_db": None, "input_clipped_fraction": None},
              {"name": "conv2", "type": "Conv2d", "accumulated_sqnr_db": 20.0, "local_sqnr_db": 20.0,
               "input_accumulated_sqnr_db": 40.0, "input_local_sqnr_db": 40.0, "input_clipped_fraction": 0.0125},
              {"name": "fc", "type": "Linear", "accumulated_sqnr_db": 12.5, "local_sqnr_db": 25.0,
               "input_accumulated_sqnr_db": 18.0, "input_local_sqnr_db": 45.0, "input_clipped_fraction": 0.0}]
    return {"layers": layers, "samples": 100, "tokens": None, "data": "test.npz", "label": "W4",
            "entry": "conv2", "biggest_drop": {"layer": "fc", "after": "conv2", "drop_db": 7.5}}


def test_depth_curves_marks_exact_points_entry_and_drop():
    out = svg.depth_curves(["a", "b", "c"], {"acc": [math.inf, 20.0, 12.5], "loc": [math.inf, 20.0, None]},
                           entry=1, drop=(1, 2, 7.5))
    assert out.startswith("<svg") and out.endswith("</svg>")
    assert out.count("<circle") == 5  # None is left out
    assert out.count('fill="white" stroke') == 2  # exact points are hollow, on the float line
    assert "float (no error)" in out and "error enters" in out and "biggest drop -7.5 dB" in out
    assert "a, acc: float (exact)" in out and "c, acc: 12.5 dB" in out


def test_report_section_from_a_trace_dict():
    from quantviz.io.report import _trace_section

    html = _trace_section(_trace())
    assert "<svg" in html and "SQNR along depth, W4" in html
    rows = re.findall(r"<tr>(.*?)</tr>", html)
    assert len(rows) == 4  # header + 3 layers
    assert "<td class=\"l\">conv1</td>" in rows[1] and "<td class=\"\">float</td>" in rows[1]
    assert "1.25" in rows[2]  # clipped %
    assert "test.npz (100 samples)" in html


def test_demo_report_has_the_trace(tmp_path):
    from quantviz.session import Session

    s = Session.open("demo")
    s.apply_preset("W3")
    p = tmp_path / "r.html"
    s.export("report", p)
    html = p.read_text()
    assert "Where the error enters" in html and "SQNR along depth" in html
    assert s.analysis.trace is not None and s.analysis.trace.config == s.config.to_dict()
    for name in s.layer_names:
        assert f"{name}, accumulated (quantized model vs float)" in html


def test_report_trace_ends_with_the_model_output_and_names_layers_that_do_not_feed_it():
    """#22: the report's trace table ends with the output the metrics read (the report's output SQNR),
    and a layer like a BERT's pooler is named as not feeding it."""
    from quantviz.io.report import _trace_section

    tr = _trace()
    tr["layers"][2]["feeds_output"] = False
    tr["output"] = {"sqnr_db": 21.5123, "signal": 1.0, "noise": 0.007}
    rows = re.findall(r"<tr>(.*?)</tr>", _trace_section(tr))
    assert len(rows) == 5 and "model output" in rows[-1] and "21.5" in rows[-1]
    assert "fc (does not feed the output)" in rows[3] and "does not feed" not in rows[2]
