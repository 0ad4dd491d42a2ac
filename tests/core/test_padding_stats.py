"""Padding never reaches the calibration statistics of the per-layer algorithms (GPTQ,
SmoothQuant, AWQ, bias correction, AdaRound) nor the local / Hessian sensitivity proxies:
a padded batch gives what the same real tokens give without padding."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from quantviz.core.analysis import proxies
from quantviz.core.algorithms.stats import capture_input_stats
from quantviz.core.model.data import Dataset
from quantviz.core.sim.fakequant import QuantSim
from quantviz.core.sources.base import ModelBundle
from quantviz.core.numerics.spec import ActSpec, LayerSpec, WeightSpec
from quantviz.session import Session

VOCAB, DIM = 29, 12
LENGTHS = (10, 7, 5, 3)


class TokenNet(nn.Module):
    """Embedding + per-token MLP + head: a real token's output does not depend on padding."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, DIM)
        self.fc1 = nn.Linear(DIM, 24)
        self.fc2 = nn.Linear(24, DIM)
        self.head = nn.Linear(DIM, VOCAB)

    def forward(self, input_ids, attention_mask=None):
        h = self.emb(input_ids)
        h = h + self.fc2(torch.relu(self.fc1(h)))
        return self.head(h)


def _model() -> TokenNet:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return TokenNet().eval()


def _data():
    """(padded, unpadded, padded without its mask): the same real tokens."""
    g = torch.Generator().manual_seed(1)
    t = max(LENGTHS)
    ids = torch.randint(1, VOCAB, (len(LENGTHS), t), generator=g)  # padded positions hold junk tokens
    mask = torch.zeros(len(LENGTHS), t, dtype=torch.long)
    for i, n in enumerate(LENGTHS):
        mask[i, :n] = 1
    real = ids[mask.bool()][None]  # every real token in one unpadded sequence
    padded = Dataset({"input_ids": ids, "attention_mask": mask}, name="padded")
    flat = Dataset({"input_ids": real, "attention_mask": torch.ones_like(real)}, name="unpadded")
    nomask = Dataset({"input_ids": ids}, name="padded, no mask")
    return padded, flat, nomask


def _close(a, b, tol=1e-5):
    return torch.allclose(a.double(), b.double(), rtol=tol, atol=tol)


def test_layer_input_statistics_see_real_tokens_only():
    padded, flat, nomask = _data()
    model = _model()
    got = {}
    for ds in (padded, flat, nomask):
        got[ds.name] = capture_input_stats(model, model.fc1, None, None, ds, batch_size=8)
    p, u, old = got["padded"], got["unpadded"], got["padded, no mask"]
    assert p.columns == u.columns == sum(LENGTHS)
    for field in ("gram", "cross", "float_gram", "mean", "float_mean", "absmax", "absmean", "cmin", "cmax"):
        assert _close(getattr(p, field), getattr(u, field)), field
    # what the statistics were before padding was masked: every position counted
    assert old.columns == len(LENGTHS) * max(LENGTHS)
    assert not _close(old.gram, u.gram)


ALGOS = [("gptq", {}), ("smoothquant", {}), ("awq", {"grid": 5}), ("bias_correction", {}),
         ("adaround", {"iterations": 50})]  # 50 steps already move ~8 % of the codes off rounding to nearest


@pytest.mark.parametrize("algo,opts", ALGOS, ids=[a for a, _ in ALGOS])
def test_algorithms_on_padded_data_equal_unpadded(algo, opts):
    padded, flat, nomask = _data()
    spec = LayerSpec(weight=WeightSpec(bits=3, algorithm=algo, algorithm_options=tuple(sorted(opts.items()))),
                     activation=ActSpec(bits=8))
    names = ("fc1", "fc2", "head")
    out = {}
    for ds in (padded, flat, nomask):
        sim = QuantSim(copy.deepcopy(_model()), fold_bn=False)
        sim.calibrate(ds, batch_size=8)
        specs = {n: spec for n in names}
        sim.apply(specs)
        out[ds.name] = {n: sim.quantize_weight(n, spec.weight) for n in names}
    for n in names:
        p, u, old = out["padded"][n], out["unpadded"][n], out["padded, no mask"][n]
        assert "skipped" not in p.algorithm_info, p.algorithm_info
        assert p.algorithm_info["calib_columns"] == u.algorithm_info["calib_columns"] == sum(LENGTHS)
        assert old.algorithm_info["calib_columns"] == len(LENGTHS) * max(LENGTHS)
        if algo == "adaround":  # an optimisation: its inputs, and its result up to a rare flipped code
            assert (p.codes != u.codes).float().mean() <= 0.01, n
        else:
            assert torch.equal(p.codes, u.codes), n
            assert _close(p.tensor, u.tensor), n
        if p.bias is not None:
            assert _close(p.bias, u.bias), n
        if p.input_scale is not None:
            assert _close(p.input_scale, u.input_scale), n
            assert p.input_range == pytest.approx(u.input_range, rel=1e-5)
    # the old behaviour (padding counted) gives other statistics: the algorithm's inputs changed
    p, old = out["padded"]["fc1"], out["padded, no mask"]["fc1"]
    assert p.algorithm_info["output_sqnr_db"] != pytest.approx(old.algorithm_info["output_sqnr_db"], abs=1e-6)


def _session(ds: Dataset) -> Session:
    bundle = ModelBundle(model=copy.deepcopy(_model()), name="tokennet", kind="recipe", reference="tokennet")
    s = Session(bundle, eval_data=ds, calib_data=ds, batch_size=8)
    s.prepare()
    return s


def test_local_and_hessian_proxies_count_real_tokens_only():
    padded, flat, nomask = _data()
    res = {}
    for ds in (padded, flat, nomask):
        parts = _session(ds).parts()
        loc = proxies.local(parts, bits=(3, 4), sketch=False)
        hes = proxies.hessian(parts, bits=(3, 4), iters=2)
        res[ds.name] = (loc, hes)

    def cells(r, metric):
        return {(l["name"], b): l["results"][b]["metrics"][metric] for l in r["layers"] for b in l["results"]}

    for k, metric in ((0, "sqnr_db"), (1, "hessian_score")):
        p, u, old = (cells(res[name][k], metric) for name in ("padded", "unpadded", "padded, no mask"))
        assert p == pytest.approx(u, rel=1e-4), metric
        assert p != pytest.approx(old, rel=1e-4), metric


def test_qat_distillation_counts_real_tokens_only():
    from quantviz.core.training.qat import loss_value

    g = torch.Generator().manual_seed(2)
    out, teacher = torch.randn(3, 5, 7, generator=g), torch.randn(3, 5, 7, generator=g)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[0, 2:] = False
    mask[2, 4:] = False
    for kind in ("kl", "mse"):
        base = loss_value(kind, None, out, teacher, None, None, 1.0, mask)
        junk_o, junk_t = out.clone(), teacher.clone()
        junk_o[~mask], junk_t[~mask] = 50.0, -50.0  # whatever padding holds, the loss is the same
        assert torch.allclose(loss_value(kind, None, junk_o, junk_t, None, None, 1.0, mask), base), kind
        full = torch.ones_like(mask)  # nothing padded: the loss as without a mask
        assert torch.equal(loss_value(kind, None, out, teacher, None, None, 1.0, full),
                           loss_value(kind, None, out, teacher, None, None, 1.0)), kind
    real = out[mask], teacher[mask]
    assert torch.allclose(loss_value("mse", None, out, teacher, None, None, 1.0, mask),
                          torch.nn.functional.mse_loss(*real))
