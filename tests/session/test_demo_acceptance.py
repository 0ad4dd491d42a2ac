"""The issue's acceptance figures on the shipped demo (not on a stand-in)."""
import pytest

from quantviz.io.config import QuantConfig, preset, with_grid
from quantviz.session import Session


@pytest.fixture(scope="module")
def demo():
    return Session.open("demo")


def _check(session, preset_name):
    session.apply_preset(preset_name)
    return session.check(record=False)


def test_uniform_presets_show_what_quantization_costs(demo):
    flt = _check(demo, "float").float_metrics["accuracy"]
    w8a8 = _check(demo, "W8A8")
    assert abs(w8a8.metrics["accuracy"] - flt) <= 0.005
    assert 3.5 <= w8a8.size["compression"] <= 4.1
    w4 = _check(demo, "W4")
    w3 = _check(demo, "W3")
    w2 = _check(demo, "W2")
    assert w3.metrics["sqnr_db"] < w4.metrics["sqnr_db"] - 3  # each bit less costs fidelity
    assert flt - w2.metrics["accuracy"] >= 0.15  # 2-bit loses a lot
    # torch's grid rule clips the top of every channel whose extreme is positive: at 3 bits that
    # costs real accuracy, and the full grid (the default, AIMET's rule) wins most of it back
    demo.set_config(with_grid(preset("W3"), "torch"))
    w3_torch = demo.check(record=False)
    assert flt - w3_torch.metrics["accuracy"] >= 0.02
    assert w3.metrics["accuracy"] - w3_torch.metrics["accuracy"] >= 0.02
    assert w3.metrics["sqnr_db"] > w3_torch.metrics["sqnr_db"] + 3
    assert w3.size["quantized_bytes"] == w3_torch.size["quantized_bytes"]


@pytest.mark.parametrize("preset_name", ["W4", "W3"])
def test_search_beats_the_uniform_preset_at_the_same_budget(demo, preset_name):
    uniform = _check(demo, preset_name)
    res = demo.run_search(avg_bits=uniform.size["avg_bits"])  # its bits per weight, scales included
    chosen = res["chosen"]
    assert chosen["size_bytes"] <= uniform.size["quantized_bytes"]
    assert chosen["metrics"]["accuracy"] >= uniform.metrics["accuracy"]
    assert chosen["metrics"]["sqnr_db"] > uniform.metrics["sqnr_db"]
    # the chosen config reproduces its metrics when evaluated again
    again = demo.check(config=QuantConfig.from_dict(chosen["config"]), record=False)
    assert again.metrics["accuracy"] == pytest.approx(chosen["metrics"]["accuracy"])
    assert again.metrics["sqnr_db"] == pytest.approx(chosen["metrics"]["sqnr_db"], rel=1e-6)
    assert len({tuple(sorted(p["bits"].items())) for p in res["pareto"]}) == len(res["pareto"])
