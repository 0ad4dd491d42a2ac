"""The one SQNR: its edge rules, and that no other engine module writes its own."""
import math
import re
from pathlib import Path

import pytest
import torch

from quantviz.core.numerics.sqnr import SQNR_CAP_DB, sqnr_db, tensor_sqnr_db


def test_plain_value_is_ten_log10_of_the_energy_ratio():
    assert sqnr_db(100.0, 1.0) == pytest.approx(20.0)
    assert sqnr_db(1.0, 10.0) == pytest.approx(-10.0)


@pytest.mark.parametrize("cap", [False, True])
def test_edge_rules(cap):
    top = SQNR_CAP_DB if cap else math.inf
    assert sqnr_db(5.0, 0.0, cap=cap) == top  # identical
    assert sqnr_db(0.0, 0.0, cap=cap) == top  # empty / all zero: nothing differs
    assert sqnr_db(0.0, 1.0, cap=cap) == -top  # noise but no signal
    assert sqnr_db(1e100, 1e-100, cap=cap) == (SQNR_CAP_DB if cap else pytest.approx(2000.0))


def test_tensor_form_matches_the_sums():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, generator=g)
    y = x + 0.1 * torch.randn(1000, generator=g)
    s, n = float((x.double() ** 2).sum()), float(((x - y).double() ** 2).sum())
    assert tensor_sqnr_db(x, y) == pytest.approx(10 * math.log10(s / n))
    assert tensor_sqnr_db(x, x) == math.inf
    assert tensor_sqnr_db(torch.zeros(0), torch.zeros(0)) == math.inf
    assert tensor_sqnr_db(x.reshape(10, 100), y.reshape(100, 10)) == pytest.approx(tensor_sqnr_db(x, y))


def test_no_engine_module_writes_its_own_decibels():
    core = Path(__file__).resolve().parents[2] / "quantviz" / "core"
    own = [f"{p.relative_to(core)}:{i}" for p in core.rglob("*.py") if p.name != "sqnr.py"
           for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
           if re.search(r"\b(math|torch|np|numpy)\.log10\(", line)]
    assert own == [], "SQNR in dB is computed only by quantviz.core.numerics.sqnr"
