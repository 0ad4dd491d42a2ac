"""Cross-layer equalization: which pairs, function preserved, ranges equalized, session option."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from quantviz.core.algorithms.cle import equalize, find_pairs


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 6, 3, padding=1)
        self.b = nn.Conv2d(6, 4, 3, padding=1)
        self.c = nn.Conv2d(4, 4, 1, groups=2)  # grouped: not equalized
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        y = torch.relu(self.b(nn.functional.max_pool2d(torch.relu(self.a(x)), 2)))
        y = self.c(y)  # no ReLU between b and c
        return self.fc(y.mean((2, 3)))


def test_pairs_function_and_ranges():
    torch.manual_seed(0)
    m = Net().eval()
    with torch.no_grad():
        m.a.weight[0] *= 20  # one channel with a much wider range
    assert find_pairs(m) == [("a", "b")]
    for p in m.parameters():
        p.requires_grad_(False)
    x = torch.randn(5, 3, 8, 8)
    y0 = m(x)
    r1 = m.a.weight.reshape(6, -1).abs().amax(1)
    spread0 = float(r1.max() / r1.min())
    rep = equalize(m)
    assert rep["pairs"][0]["first"] == "a"
    assert torch.allclose(m(x), y0, atol=1e-5)
    r1 = m.a.weight.reshape(6, -1).abs().amax(1)
    r2 = m.b.weight.transpose(0, 1).reshape(6, -1).abs().amax(1)
    assert torch.allclose(r1, r2, rtol=1e-5)  # both sides of each channel now span the same range
    assert float(r1.max() / r1.min()) < spread0


def test_session_option_cle():
    from quantviz.core.errors import SourceError
    from quantviz.io.config import ConfigError, QuantConfig, preset
    from quantviz.session import Session

    cfg = preset("W4")
    cfg.options["cle"] = True
    try:
        s = Session.open("demo", config=QuantConfig.from_dict(cfg.to_dict()))
    except SourceError as exc:
        pytest.skip(str(exc))
    assert [p["first"] for p in s.sim.cle_report["pairs"]] == ["features.0", "features.3", "classifier.1"]
    assert s.reference.metrics["accuracy"] == pytest.approx(0.98995, abs=1e-4)  # equalization keeps the float model
    with pytest.raises(ConfigError, match="options.cle differs"):
        s.set_config(preset("W4"))
    with pytest.raises(ConfigError, match="options.cle"):
        QuantConfig.from_dict({"version": 1, "options": {"cle": "yes"}})
