"""Number formats in the app: the table's Format column and editor, the histogram's format levels."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

from quantviz.core.numerics.formats import FORMATS
from quantviz.core.numerics.preview import preview_weight
from quantviz.gui.views.layer_model import COL, apply_field
from quantviz.gui.views.layer_table import LayerTablePanel, choices


@pytest.fixture
def panel(qtbot, demo_session):
    p = LayerTablePanel()
    qtbot.addWidget(p)
    p.set_session(demo_session)
    p.resize(1200, 400)
    p.show()
    return p


def test_format_column_edits_the_config_and_size(panel, demo_session):
    s = demo_session
    name = s.layers[0].name
    row = [l.name for l in s.layers].index(name)
    cell = lambda: panel.proxy.index(row, COL["format"]).data(Qt.DisplayRole)  # noqa: E731
    assert cell() == "int"
    before = s.size().quantized_bytes
    apply_field(s, "format", "mxfp4", [name])
    assert cell() == "MXFP4"
    spec = s.spec(name)
    assert spec.weight.format == "mxfp4" and spec.weight.bits == 4
    assert s.size().quantized_bytes < before
    assert [v for _l, v, _t in choices("format")] == ["int"] + list(FORMATS)
    s.undo()
    assert cell() == "int" and s.spec(name).weight.format == "int"


def test_histogram_preview_draws_the_format_levels(demo_session):
    s = demo_session
    name = s.layers[1].name
    s.edit_layers([name], {"weight": {"format": "mxfp4", "bits": 4}})
    p = preview_weight(s.sim, name, s.spec(name).weight)
    lv = np.asarray(p["levels"])
    scale = lv.max() / 6.0
    # E2M1's 15 values under the widest block's scale: denser near zero
    assert p["levels_total"] == 15 and p["block"]
    assert np.allclose(np.sort(np.abs(lv))[::2] / scale, [0, 0.5, 1, 1.5, 2, 3, 4, 6])
    assert p["sqnr_db"] == pytest.approx(s.sim.quantize_weight(name, s.spec(name).weight).sqnr_db)
    assert len(p["channel_hi"]) == s.layer(name).channels
