"""Incremental re-checks: the same numbers as a full re-check, on a chain CNN, a
residual network and a small transformer; the cache stays within its budget;
untraceable models fall back to full passes; calibration, reverts, undo and
cancellation never leave stale values behind."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from quantviz.core.model.data import Dataset
from quantviz.core.errors import Cancelled, QuantvizError
from quantviz.core.sources.base import ModelBundle
from quantviz.io.config import preset
from quantviz.session import Session
from quantviz.session.recheck import CACHE_ENV, chunk_bounds, default_budget, parse_bytes


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread (and a loaded machine does not thrash)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------ models
def chain_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(12 * 4 * 4, 24), nn.ReLU(), nn.Linear(24, 5))


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        self.relu = nn.ReLU(inplace=True)  # in-place ops: cached values must not be overwritten
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.short = nn.Conv2d(cin, cout, 1, stride=stride) if stride != 1 or cin != cout else None

    def forward(self, x):
        idt = x if self.short is None else self.short(x)
        out = self.conv2(self.relu(self.conv1(x)))
        out += idt
        return self.relu(out)


class ResNetLike(nn.Module):
    """Residual adds, a projection shortcut and a two-branch concatenation."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.b1 = Block(8, 8, 1)
        self.b2 = Block(8, 16, 2)
        self.left = nn.Conv2d(16, 8, 1)
        self.right = nn.Conv2d(16, 8, 3, padding=1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.b2(self.b1(torch.relu(self.stem(x))))
        x = torch.cat([self.left(x), torch.tanh(self.right(x))], dim=1)
        return self.fc(x.mean(dim=(2, 3)))


class TinyTransformer(nn.Module):
    """Embedding, one pre-norm attention block with an MLP, mean pooling, a head."""

    def __init__(self, vocab: int = 20, d: int = 16, classes: int = 5):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.ln1 = nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.ln2 = nn.LayerNorm(d)
        self.up = nn.Linear(d, 2 * d)
        self.down = nn.Linear(2 * d, d)
        self.head = nn.Linear(d, classes)
        self.scale = d ** -0.5

    def forward(self, ids):
        h = self.emb(ids)
        a = self.ln1(h)
        att = torch.softmax(self.q(a) @ self.k(a).transpose(1, 2) * self.scale, dim=-1)
        h = h + self.o(att @ self.v(a))
        h = h + self.down(torch.nn.functional.gelu(self.up(self.ln2(h))))
        return self.head(h.mean(dim=1))


class Untraceable(nn.Module):
    """Python control flow on a tensor value: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 8)
        self.b = nn.Linear(8, 4)

    def forward(self, x):
        h = self.a(x)
        if h.sum() > 0:
            h = torch.relu(h)
        return self.b(h)


def _session(model: nn.Module, x: torch.Tensor, *, classes: int = 5, cfg: str = "W8A8", **kw) -> Session:
    torch.manual_seed(0)
    model = model.eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    y = torch.randint(0, classes, (x.shape[0],), generator=torch.Generator().manual_seed(2))
    data = Dataset(x, y, name="test data")
    bundle = ModelBundle(model, "test-model", "recipe", "test-model", calib=data, eval=data)
    s = Session(bundle, eval_data=data, calib_data=data, config=preset(cfg), batch_size=16, **kw)
    s.prepare()
    return s


def _images(n=40, hw=8):
    return torch.randn(n, 3, hw, hw, generator=torch.Generator().manual_seed(1))


MODELS = {
    "chain": lambda: (_session(chain_cnn(), _images())),
    "residual": lambda: (_session(ResNetLike(), _images())),
    "transformer": lambda: _session(TinyTransformer(), torch.randint(0, 20, (40, 7), generator=torch.Generator().manual_seed(3))),
}


def _same(s: Session, **kw) -> dict:
    """Incremental and full re-check of the current config give identical metrics."""
    inc = s.check(record=False, **kw).metrics
    last = dict(s.recheck.last)
    full = s.check(record=False, incremental=False, **kw).metrics
    assert inc == full, (last, inc, full)
    return {"mode": last["mode"], "metrics": inc, "changed": last["changed"]}


# ------------------------------------------------------------------- tests
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_incremental_equals_full_for_every_single_layer_edit(kind):
    s = MODELS[kind]()
    first = _same(s)
    assert first["mode"] == "baseline" and s.recheck.runner.incremental, s.recheck.runner.reason
    assert _same(s)["mode"] == "cached"  # nothing changed: no model pass at all
    total = s.recheck.runner.nodes_total
    fewer = 0
    for name in s.layer_names:
        s.edit_layers([name], {"weight": {"bits": 3}})
        r = _same(s)
        assert r["mode"] == "suffix" and r["changed"] == [name]
        assert r["metrics"] != first["metrics"]  # the edit is visible in the numbers
        fewer += s.recheck.runner.affected_fraction([name]) < 1.0
        s.undo()
        assert _same(s)["metrics"] == first["metrics"]
    assert fewer >= len(s.layer_names) - 2  # only the first layer(s) need the whole graph
    # activation settings, ranges and several layers at once
    names = s.layer_names
    s.edit_layers(names[-2:], {"activation": {"bits": 4}})
    _same(s)
    s.set_range(names[-1], "weight", -0.05, 0.05)
    _same(s)
    s.apply_preset("W4")
    _same(s)
    assert total > 0


def test_suffix_run_recomputes_only_the_tail():
    s = MODELS["residual"]()
    s.check()
    runner = s.recheck.runner
    s.edit_layers(["fc"], {"weight": {"bits": 4}})
    s.check()
    per_batch = runner.last_nodes_run / len(s.recheck.bounds())
    assert per_batch < runner.nodes_total / 4
    s.edit_layers(["stem"], {"weight": {"bits": 4}})
    s.check()
    assert runner.last_nodes_run / len(s.recheck.bounds()) > per_batch


def test_cache_stays_within_a_small_budget_and_results_stay_exact():
    big = MODELS["residual"]()
    big.check()
    need = big.recheck.runner.peak_cache_bytes
    assert need > 0
    s = _session(ResNetLike(), _images(), cache_bytes=need // 3)
    base = _same(s)["metrics"]
    runner = s.recheck.runner
    assert runner.incremental and runner.cache_bytes <= need // 3
    for name in s.layer_names:
        s.edit_layers([name], {"weight": {"bits": 4}})
        _same(s)
    assert runner.peak_cache_bytes <= s.recheck.budget_bytes == need // 3
    s.apply_preset("W8A8")
    assert _same(s)["metrics"] == base


def test_untraceable_model_falls_back_to_full_passes_with_the_same_numbers():
    s = _session(Untraceable(), torch.randn(40, 6, generator=torch.Generator().manual_seed(4)), classes=4)
    base = _same(s)
    assert not s.recheck.runner.incremental and "trace" in s.recheck.runner.reason
    s.edit_layers(["b"], {"weight": {"bits": 2}})
    assert _same(s)["metrics"] != base["metrics"]
    s.undo()
    assert _same(s)["metrics"] == base["metrics"]


def test_recalibration_invalidates_the_cache():
    s = MODELS["chain"]()
    before = _same(s)["metrics"]
    other = Dataset(3.0 * _images(24), name="other calibration")
    s.calib_data = other
    s.prepare()  # new activation ranges: every cached activation is stale
    r = _same(s)
    assert r["mode"] == "baseline" and r["metrics"] != before


def test_revert_undo_and_foreign_config_checks_stay_exact():
    s = MODELS["residual"]()
    base = _same(s)["metrics"]
    s.edit_layers(["b2.conv2"], {"weight": {"bits": 2}})
    edited = _same(s)["metrics"]
    s.check(config=preset("W4"), record=False)  # a check of another config moves the cache
    assert _same(s)["metrics"] == edited
    s.undo()
    assert _same(s)["metrics"] == base
    s.redo()
    assert _same(s)["metrics"] == edited
    s.set_config(preset("W8A8"), "revert")
    assert _same(s)["metrics"] == base


def test_cancelled_recheck_leaves_a_consistent_cache():
    s = MODELS["chain"]()
    base = _same(s)["metrics"]
    s.edit_layers(["9"], {"weight": {"bits": 2}})
    seen = []

    def cancel_after_two():
        return len(seen) >= 2

    with pytest.raises(Cancelled):
        s.check(progress=lambda d, t, m="": seen.append(d), cancel=cancel_after_two)
    s.undo()  # chunks 0-1 hold the edited config, the rest the base one
    assert _same(s)["metrics"] == base
    s.redo()
    full = s.check(incremental=False, record=False).metrics
    assert full != base and _same(s)["metrics"] == full


def test_first_estimate_comes_after_a_small_first_chunk():
    s = MODELS["chain"]()
    s.check()
    s.edit_layers(["0"], {"weight": {"bits": 4}})
    snaps = []
    res = s.check(on_estimate=snaps.append)
    first = snaps[0]
    assert first["samples"] == s.recheck.bounds()[0][1] == 2 and first["batches"][0] == 1
    assert set(first["bands"]) >= {"accuracy", "sqnr_db"} and first["final"] is False
    assert [sn["samples"] for sn in snaps] == sorted(sn["samples"] for sn in snaps)
    assert snaps[-1]["samples"] < len(s.eval_data) and "accuracy" in res.metrics


def test_chunk_bounds_cover_the_data_within_reference_batches():
    for n, bs, first in [(597, 64, 8), (40, 16, 2), (5, 64, 8), (64, 64, 64), (130, 64, 100)]:
        b = chunk_bounds(n, bs, first)
        assert b[0][0] == 0 and b[-1][1] == n
        assert all(x[1] == y[0] for x, y in zip(b, b[1:]))
        assert all(a // bs == (e - 1) // bs for a, e in b)  # never straddles a reference batch
        assert b[0][1] - b[0][0] == min(first, bs, n)


def test_budget_from_env_and_parse(monkeypatch):
    assert parse_bytes("512M") == 512 << 20 and parse_bytes("2GiB") == 2 << 30 and parse_bytes("1000") == 1000
    monkeypatch.setenv(CACHE_ENV, "3m")
    assert default_budget() == 3 << 20
    monkeypatch.setenv(CACHE_ENV, "lots")
    with pytest.raises(QuantvizError, match=CACHE_ENV):
        default_budget()
    monkeypatch.delenv(CACHE_ENV)
    assert 0 < default_budget() <= 2 << 30


def test_budget_scales_down_with_a_big_model(monkeypatch):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    free = default_budget()
    assert default_budget(10 << 20) == min(free, 256 << 20)  # small models keep a useful floor
    assert default_budget(2 << 30) == min(free, (2 << 30) // 4)  # a 2 GB model: a quarter of its weights
    monkeypatch.setenv(CACHE_ENV, "3m")
    assert default_budget(2 << 30) == 3 << 20  # the user's setting wins
