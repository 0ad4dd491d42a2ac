"""The session keeps the newest error trace, says so, reuses it after an edit and saves it."""
import sys
from pathlib import Path

import pytest

from quantviz.session.analysis import Analysis

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from sens_models import ResNetish, make_session, residual_data  # noqa: E402


def test_run_trace_stores_emits_and_reuses():
    import torch

    torch.manual_seed(0)
    s = make_session(ResNetish().eval(), residual_data(), "W4A8")
    seen = []
    s.events.connect(lambda kind, p: seen.append((kind, p.get("what"))))
    r0 = s.run_trace()
    assert s.analysis.trace is r0 and ("analysis_changed", "trace") in seen
    assert r0.recomputed == {"local": 4, "accumulated": 4}
    s.edit_layers(["fc"], {"weight": {"bits": 2}})
    r1 = s.run_trace()
    assert r1.recomputed == {"local": 1, "accumulated": 1}  # the last layer only
    full = s.run_trace(incremental=False)
    for a, b in zip(r1.layers, full.layers):
        assert a.acc_noise == pytest.approx(b.acc_noise, rel=1e-5)
        assert a.local_noise == pytest.approx(b.local_noise, rel=1e-5)
    assert r1.layer("fc").local_sqnr_db < r0.layer("fc").local_sqnr_db
    assert s.run_trace() is full  # nothing changed since: the kept trace is returned as is
    s.prepare()  # new calibration: the kept trace cannot be reused
    assert s.run_trace().recomputed["local"] == 4
    back = Analysis.from_dict(s.analysis.to_dict())
    assert back.trace.names == s.analysis.trace.names
    assert back.trace.layer("fc").local_noise == s.analysis.trace.layer("fc").local_noise


def test_samples_subset():
    import torch

    torch.manual_seed(0)
    s = make_session(ResNetish().eval(), residual_data(), "W8")
    assert s.run_trace(samples=10).samples == 10
    from quantviz.core.errors import QuantvizError

    with pytest.raises(QuantvizError):
        s.run_trace(samples=0)


def test_demo_w3_last_layer_equals_the_model_output_sqnr():
    """The demo's last layer makes the logits: its accumulated SQNR is the re-check's output SQNR."""
    from quantviz.session import Session

    s = Session.open("demo")
    s.apply_preset("W3")
    r = s.run_trace()
    assert [l.name for l in r.layers] == s.layer_names
    assert r.layers[-1].accumulated_sqnr_db == pytest.approx(s.check().metrics["sqnr_db"], abs=0.01)
    assert r.entry == 0  # every layer is quantized: the error enters at the first one
    first = r.layers[0]
    assert first.accumulated_sqnr_db == first.local_sqnr_db  # the model's input is exact
    assert all(l.local_sqnr_db > l.accumulated_sqnr_db for l in r.layers[1:])


@pytest.mark.parametrize("preset", ["W3", "NVFP4"])
def test_the_traces_last_layer_equals_the_recheck_after_qat(preset):
    """#22 item 4: after QAT the trace compared trained-and-quantized outputs with the trained float
    model, so its last layer disagreed with the summary. Both now compare with the untrained float
    model, before and after training, and after going back to the original weights (undo)."""
    from quantviz.core.training.qat import QATOptions
    from quantviz.session import Session

    s = Session.open("demo")
    s.apply_preset(preset)
    before = s.check().metrics["sqnr_db"]
    assert s.run_trace().layers[-1].accumulated_sqnr_db == pytest.approx(before, abs=1e-3)
    s.run_qat(QATOptions(steps=20, lr=1e-3, eval_every=20))  # held-out metric at the start and the end only:
    # the curve is not under test here, and each of its points is a pass over the whole evaluation set
    after = s.check().metrics["sqnr_db"]
    assert after != pytest.approx(before, abs=1e-3)  # the training changed what the summary shows
    assert s.run_trace().layers[-1].accumulated_sqnr_db == pytest.approx(after, abs=1e-3)
    s.undo()  # back to the original weights
    again = s.check().metrics["sqnr_db"]
    assert again == pytest.approx(before, abs=1e-3)
    assert s.run_trace().layers[-1].accumulated_sqnr_db == pytest.approx(again, abs=1e-3)
