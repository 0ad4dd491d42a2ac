"""Streaming metrics on hand-made outputs, bands, and the evaluation loop."""
import copy
import math

import pytest
import torch
from torch import nn

from quantviz.core.model.data import Dataset
from quantviz.core.errors import ModelError
from quantviz.core.sim.evaluate import (SQNR_CAP_DB, MetricStream, evaluate_quantized, float_reference,
                                    higher_is_better, wilson)


def test_metrics_on_hand_made_outputs():
    f = torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 4.0]])
    q = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 0.0], [1.0, 1.0, 0.0], [0.0, 3.0, 0.0]])
    labels = torch.tensor([0, 1, 2, 2])
    s = MetricStream(4)
    s.update(f[:2], q[:2], labels[:2])
    s.update(f[2:], q[2:], labels[2:])
    m = s.snapshot()["metrics"]
    # signal 9 + 4 + 2 + 16 = 31; noise 1 + 0 + 0 + (9 + 16) = 26
    assert m["sqnr_db"] == pytest.approx(10 * math.log10(31 / 26))
    cos = [3 / math.sqrt(10), 1.0, 1.0, 0.0]
    assert m["cosine"] == pytest.approx(sum(cos) / 4)
    # argmax: float [0, 1, 0, 2], quantized [0, 1, 0, 1]
    assert m["top1_agreement"] == pytest.approx(3 / 4)
    assert m["accuracy"] == pytest.approx(2 / 4)  # quantized right on samples 0 and 1
    assert s.float_correct == 3  # float right on 0, 1, 3


def test_identical_outputs_are_capped_and_unlabelled_data_has_no_accuracy():
    f = torch.randn(5, 3)
    s = MetricStream()
    s.update(f, f.clone(), None)
    m = s.snapshot()["metrics"]
    assert m["sqnr_db"] == SQNR_CAP_DB and m["cosine"] == pytest.approx(1.0)
    assert "accuracy" not in m
    # regression outputs (one value per sample) have no class axis
    r = MetricStream()
    r.update(torch.randn(4, 1), torch.randn(4, 1), torch.tensor([0, 1, 0, 1]))
    assert "top1_agreement" not in r.snapshot()["metrics"] and "accuracy" not in r.snapshot()["metrics"]


def test_update_rejects_mismatched_or_nonfinite_outputs():
    s = MetricStream()
    with pytest.raises(ModelError, match="shape"):
        s.update(torch.zeros(2, 3), torch.zeros(2, 4), None)
    with pytest.raises(ModelError, match="NaN"):
        s.update(torch.zeros(2, 3), torch.tensor([[0.0, float("nan"), 0.0], [0.0, 0.0, 0.0]]), None)


def test_wilson_interval_contains_p_and_narrows_with_n():
    lo, hi = wilson(7, 10)
    assert lo < 0.7 < hi
    lo2, hi2 = wilson(700, 1000)
    assert lo < lo2 < 0.7 < hi2 < hi
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0


def test_bands_contain_the_final_value_and_tighten():
    g = torch.Generator().manual_seed(0)
    n, batch = 400, 40
    labels = torch.randint(0, 5, (n,), generator=g)
    f = torch.randn(n, 5, generator=g) + 3 * nn.functional.one_hot(labels, 5)
    q = f + 0.6 * torch.randn(n, 5, generator=g)
    s = MetricStream(n)
    snaps = []
    for i in range(0, n, batch):
        s.update(f[i:i + batch], q[i:i + batch], labels[i:i + batch])
        snaps.append(s.snapshot())
    final = snaps[-1]["metrics"]
    hits = total = 0
    for name in ("accuracy", "top1_agreement", "sqnr_db", "cosine"):
        widths = []
        for snap in snaps[1:]:
            lo, hi = snap["bands"][name]
            hits += lo <= final[name] <= hi
            total += 1
            widths.append(hi - lo)
        assert widths[-1] < 0.5 * widths[0], name
        assert widths[-1] == pytest.approx(0.0, abs=1e-9)  # all samples seen: the value is exact
    # 95 % bands: nearly every estimate's band holds the final value
    assert hits >= 0.85 * total, (hits, total)


def test_higher_is_better():
    assert higher_is_better("accuracy") and higher_is_better("sqnr_db")
    assert not higher_is_better("val_loss") and not higher_is_better("perplexity")


def _model_and_data():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.randn(50, 6)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:5] = (y[:5] + 1) % 3  # the float model is wrong on exactly 5 samples
    return model, Dataset(x, y, name="toy")


def test_float_reference_and_streamed_evaluation():
    model, data = _model_and_data()
    ref = float_reference(model, data, batch_size=16)
    assert len(ref.outputs) == 4 and ref.num_samples == 50
    assert ref.metrics["accuracy"] == pytest.approx(45 / 50)
    assert ref.metrics["sqnr_db"] == SQNR_CAP_DB and ref.metrics["top1_agreement"] == 1.0
    noisy = copy.deepcopy(model)
    with torch.no_grad():
        noisy[2].bias.add_(torch.tensor([0.3, -0.2, 0.1]))
    estimates = []
    m = evaluate_quantized(noisy, data, ref, on_estimate=estimates.append)
    assert [e["batches"] for e in estimates] == [(1, 4), (2, 4), (3, 4)]
    with torch.no_grad():
        fo, qo = model(data.x), noisy(data.x)
    assert m["sqnr_db"] == pytest.approx(10 * math.log10(float((fo**2).sum() / ((fo - qo) ** 2).sum())), rel=1e-6)
    assert m["accuracy"] == pytest.approx(float((qo.argmax(1) == data.y).float().mean()))
    assert m["top1_agreement"] == pytest.approx(float((qo.argmax(1) == fo.argmax(1)).float().mean()))
    assert m["cosine"] == pytest.approx(float(nn.functional.cosine_similarity(fo, qo).mean()), rel=1e-6)


def test_user_evaluate_function_metrics_and_errors():
    model, data = _model_and_data()
    ref = float_reference(model, data, evaluate_fn=lambda mdl, d: {"score": len(d)})
    assert ref.metrics["score"] == 50.0
    with pytest.raises(ModelError, match="expected a dict"):
        float_reference(model, data, evaluate_fn=lambda mdl, d: 3)
    with pytest.raises(ModelError, match="evaluate\\(\\) raised ZeroDivisionError"):
        evaluate_quantized(model, data, ref, evaluate_fn=lambda mdl, d: 1 / 0)
