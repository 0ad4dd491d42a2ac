"""Panels that stay true (issue 13): sensitivity units, config diff, Pareto, histogram at low bits,
plots on a Hugging Face model, Help menu, layout, status notes."""
from __future__ import annotations

import pytest

from quantviz.io.config import preset


# ---------------------------------------------------------------- 7: sensitivity unit
def test_sensitivity_column_names_unit_and_bits(window, qtbot, wait_idle):
    from quantviz.gui.views.layer_model import COL
    from PySide6.QtCore import Qt

    s = window.session
    s.run_sensitivity("e2e", bits=(2, 4))
    wait_idle(window)
    m = window.table.model
    header = m.headerData(COL["sensitivity"], Qt.Horizontal, Qt.DisplayRole)
    assert header == "Drop @2b (pt)"
    tip = m.headerData(COL["sensitivity"], Qt.Horizontal, Qt.ToolTipRole)
    assert "2 bits" in tip and "accuracy" in tip and "e2e" in tip
    cells = [window.table.proxy.index(r, COL["sensitivity"]).data() for r in range(window.table.proxy.rowCount())]
    assert all(c.endswith(" pt") for c in cells), cells
    top = max(s.analysis.scores.scores, key=s.analysis.scores.scores.get)
    assert f"{s.analysis.scores.scores[top] * 100:.2f} pt" in cells


def test_heatmap_rows_stay_readable_on_a_long_model(qtbot):
    import torch
    from torch import nn

    from quantviz.core.model.data import Dataset
    from quantviz.core.sources.base import ModelBundle
    from quantviz.gui.views.sensitivity import ROW_PX, SensitivityView
    from quantviz.session import Session

    torch.manual_seed(0)
    m = nn.Sequential(*[nn.Linear(8, 8) for _ in range(40)]).eval()
    x = torch.randn(32, 8)
    data = Dataset(x, None)
    s = Session(ModelBundle(model=m, name="deep", kind="recipe", reference="deep", eval=data, calib=data),
                eval_data=data, calib_data=data, config=preset("W8"), batch_size=16)
    s.prepare()
    s.run_sensitivity("local", bits=(2, 4))
    w = SensitivityView()
    qtbot.addWidget(w)
    w.resize(900, 300)
    w.set_session(s)
    w.show()
    qtbot.waitExposed(w)
    vb = w.heat.getPlotItem().vb
    assert vb.height() / 40 >= ROW_PX * 0.9  # ~20 px rows: the panel scrolls instead of squashing
    assert w.scroll.verticalScrollBar().maximum() > 0


# ---------------------------------------------------------------- 4: config diff
def test_config_diff_picks_any_two_and_follows_the_session(window, tmp_path, wait_idle):
    from quantviz.gui import analysis

    v = window.config_diff
    s = window.session
    keys = v.keys()
    assert {"current", "preset:float", "preset:W4"} <= set(keys)
    assert any(k.startswith("checked:") for k in keys)  # the history
    v.select("current", "preset:float")
    assert v.summary.text() == f"{len(s.layers)} of {len(s.layers)} layers differ"
    v.select("current", "preset:W8")
    assert v.summary.text().startswith("0 of")
    window.table.apply_field("weight_bits", 3, [s.layers[0].name])  # live: "current" follows the edit
    assert v.summary.text().startswith("1 of")
    assert v.pick_a.currentData() == "current" and v.pick_b.currentData() == "preset:W8"
    # a file, and a search result
    p = tmp_path / "x.json"
    s.export("json", p, force=True)
    key = v.add_file(str(p))
    v.select(key, "current")
    assert v.summary.text().startswith("0 of")
    wait_idle(window)
    analysis.run_search(window, avg_bits=4.0, bits=(2, 4, 8))
    wait_idle(window, 120000)
    assert "search:chosen" in v.keys() and any(k.startswith("search:pareto:") for k in v.keys())
    # columns are never cut: each column is as wide as its widest cell
    hh = v.table.horizontalHeader()
    fm = v.table.fontMetrics()
    for c in range(3):
        widest = max(fm.horizontalAdvance(line) for r in range(v.table.rowCount())
                     for line in v.table.item(r, c).text().splitlines())
        assert hh.sectionSize(c) >= widest


def test_hidden_config_diff_counts_now_and_fills_its_table_when_shown(window, qtbot):
    """A hidden Config diff follows every edit in its count but fills its table only when shown
    (no item churn on the GUI thread while a big model computes in the background)."""
    v = window.config_diff
    s = window.session
    window.docks["histogram"].raise_()
    qtbot.wait(20)
    assert not v.on_screen()
    v.select("current", "preset:W8")
    first = s.layers[0].name
    window.table.apply_field("weight_bits", 3, [first])
    assert v.summary.text().startswith("1 of")  # the count follows at once
    texts = {v.table.item(r, 0).text(): v.table.item(r, 1).text() for r in range(v.table.rowCount())}
    assert "INT3" not in texts[first]  # the table waits while hidden
    window.docks["config_diff"].raise_()
    qtbot.waitUntil(v.on_screen, timeout=2000)
    assert v.table.item(0, 0).text() == first and "INT3" in v.table.item(0, 1).text()  # differing row first, current


def test_loading_a_pareto_point_updates_diff_and_marks_it(window, qtbot, wait_idle):
    from quantviz.gui import analysis
    from quantviz.io.config import QuantConfig

    analysis.run_search(window, avg_bits=4.0, bits=(2, 4, 8))
    qtbot.waitUntil(lambda: window.session.analysis.search is not None, timeout=120000)
    wait_idle(window)
    window.config_diff.select("current", "search:pareto:0")
    window.docks["pareto"].raise_()
    spots = window.pareto.front_item.scatter.points()
    window.pareto._on_points_clicked([spots[0]])
    wait_idle(window)
    assert window.config_diff.summary.text().startswith("0 of")  # current == that point now
    cur = window.pareto.current_item.points()
    assert len(cur) == 1 and QuantConfig.from_dict(cur[0].data()["config"]) == window.session.config
    # hover: details of the point under the mouse
    vb = window.pareto.plot.getPlotItem().vb
    q = window.pareto.point_near(vb.mapViewToScene(spots[0].pos()))
    assert q is spots[0].data()
    text = window.pareto.describe(q)
    assert "bits/weight" in text and "accuracy" in text and "vs float" in text
    # the legend is not drawn over the plot
    assert window.pareto.plot.getPlotItem().legend is None
    assert "current config" in window.pareto.legend.text()


# ---------------------------------------------------------------- 9: search dialog
def test_search_dialog_budgets_and_what_it_keeps(window, qtbot, wait_idle):
    from quantviz.gui import analysis

    s = window.session
    s.set_range(s.layers[0].name, "weight", -0.2, 0.2)
    wait_idle(window)
    analysis.ask_and_search(window)
    dlg = window._search_dialog
    assert set(dlg.radios) == {"avg_bits", "size_bytes", "max_drop"}
    assert "1 manual clip range" in dlg.keeps.text() and "quantviz search" in dlg.keeps.text()
    dlg.radios["max_drop"].setChecked(True)
    dlg.max_drop.setValue(1.0)
    req = dlg.request()
    assert req["budget"] == {"max_drop": pytest.approx(0.01)} and req["start"] is None
    dlg.radios["size_bytes"].setChecked(True)
    assert "size_bytes" in dlg.request()["budget"]
    dlg.start.setCurrentIndex(dlg.start.findData("W8"))
    assert "replaced" in dlg.keeps.text()
    dlg.radios["avg_bits"].setChecked(True)
    dlg.avg_bits.setValue(4.0)
    for b in (3, 6):
        dlg.bit_boxes[b].setChecked(False)
    dlg.extras.setChecked(False)  # the checked bit-widths only (with it: per-group / GPTQ too, test_search_dialog)
    dlg._accept()
    qtbot.waitUntil(lambda: s.analysis.search is not None, timeout=120000)
    wait_idle(window)
    assert s.analysis.search["budget"]["avg_bits"] == 4.0 and s.analysis.search["bits"] == [2, 4, 8]
    assert s.spec(s.layers[0].name).weight.range.method == "minmax"  # started from W8, as the CLI


# ---------------------------------------------------------------- 8: histogram
def test_low_bit_levels_are_marked_and_range_can_be_typed(window, qtbot, wait_idle):
    s = window.session
    name = "features.7"
    s.edit_layers([name], {"weight": {"bits": 2, "granularity": "per_tensor"}})
    window.table.select_layer(name)
    wait_idle(window)
    h = window.histogram.weights
    xs, _ys = h.markers.dots.getData()
    assert len(xs) >= 3 and abs(sum(h.markers.shares) - 1.0) < 1e-6
    assert all(t.isVisible() for t in h.markers.labels[:len(xs)])
    h.editor.lo.setValue(-0.1)
    h.editor.hi.setValue(0.12)
    h.editor.apply_button.click()
    wait_idle(window)
    r = s.spec(name).weight.range
    assert r.method == "manual" and r.lo == pytest.approx(-0.1) and r.hi == pytest.approx(0.12)
    h.editor.lo.setValue(0.5)
    h.editor.hi.setValue(0.1)
    h.editor.apply_button.click()
    assert "below" in h.editor.error.text()
    # 8 bits: too many levels to mark one by one
    s.edit_layers([name], {"weight": {"bits": 8}})
    wait_idle(window)
    assert len(h.markers.dots.getData()[0] if h.markers.dots.getData()[0] is not None else []) == 0


def test_plot_does_not_move_when_the_stats_line_grows(window, wait_idle):
    h = window.histogram.weights
    before = h.plot.geometry()
    h.stats.setText("<b>" + "SQNR 12.3 dB (config minmax: 11.1 dB) · MSE 1e-3 · clipped 2.00% " * 2 + "</b>")
    h.note.setText("a much longer note " * 12)
    h.layout().activate()
    assert h.plot.geometry() == before


# ---------------------------------------------------------------- 12: a Hugging Face model
@pytest.fixture(scope="module")
def hf_session(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    import torch

    from quantviz.session import Session

    d = tmp_path_factory.mktemp("hf")
    folder = d / "bert-small"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(2000)]
    cfg = transformers.BertConfig(vocab_size=len(vocab), hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=1024, max_position_embeddings=64, num_labels=2)
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(cfg).save_pretrained(str(folder))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    transformers.BertTokenizer(str(folder / "vocab.txt")).save_pretrained(str(folder))
    text = d / "plain.txt"
    text.write_text("\n".join(" ".join(f"w{(i * 7 + j) % 2000}" for j in range(12)) for i in range(24)) + "\n")
    s = Session.open(str(folder), data=str(text), config=preset("W8"))
    s.check(label="W8")
    s.check(config=preset("float"), label="float")
    s.check(config=preset("W4"), label="W4")
    return s


def test_summary_plot_on_a_real_model_has_units_and_no_200db_squash(qtbot, hf_session):
    from quantviz.gui.views.summary import SummaryPanel

    s = hf_session
    w = SummaryPanel()
    qtbot.addWidget(w)
    w.set_session(s)
    w.show_result(s.results[0])
    pi = w.plot.getPlotItem()
    assert "MB" in pi.getAxis("bottom").labelText
    left = pi.getAxis("left").labelText
    assert "_" not in left and left in ("output SQNR (dB)", "top-1 agreement (%)", "accuracy (%)")
    ys = [p.pos().y() for p in w.scatter.points()] + [p.pos().y() for p in w.float_point.points()]
    assert max(ys) < 150  # the float / identical point is not drawn at the 200 dB cap
    xs = [p.pos().x() for p in w.float_point.points()]
    assert 1 < xs[0] < 1024  # MB, not KB


def test_params_column_is_not_cut_on_a_real_model(qtbot, hf_session):
    from quantviz.gui.views.layer_model import COL
    from quantviz.gui.views.layer_table import LayerTablePanel

    w = LayerTablePanel()
    qtbot.addWidget(w)
    w.resize(1400, 400)  # room for every column (a narrow panel hides Params before the ranges)
    w.set_session(hf_session)
    w.show()
    qtbot.waitExposed(w)
    c = COL["params"]
    qtbot.waitUntil(lambda: not w.view.isColumnHidden(c))
    fm = w.view.fontMetrics()
    widest = max(fm.horizontalAdvance(w.proxy.index(r, c).data()) for r in range(w.proxy.rowCount()))
    assert w.view.columnWidth(c) >= widest + 6


# ---------------------------------------------------------------- 11: Help menu
def test_help_menu_shortcuts_glossary_readme_and_export_descriptions(window):
    from quantviz.core.fmt import METRIC_LABELS
    from quantviz.core.numerics.spec import GRANULARITIES, RANGE_METHODS, SYMMETRIC_GRIDS
    from quantviz.gui import help as help_mod

    for key in ("shortcuts", "glossary", "readme"):
        assert key in window.actions
    window.actions["shortcuts"].trigger()
    assert window._help_dialog.isVisible() and "Ctrl+Z" in window._help_dialog.text.toPlainText()
    window._help_dialog.close()
    window.actions["glossary"].trigger()
    text = window._help_dialog.text.toPlainText()
    for k in list(METRIC_LABELS) + list(RANGE_METHODS) + list(GRANULARITIES) + list(SYMMETRIC_GRIDS):
        assert k in help_mod.GLOSSARY, k
    for term in ("SQNR", "Top-1 agreement", "KL divergence", "per-group", "Range: kl", "Range: percentile"):
        assert term in text
    window._help_dialog.close()
    assert help_mod.readme_path() is not None
    for fmt in ("json", "onnx", "aimet", "torchao", "report"):
        a = window.actions[f"export_{fmt}"]
        assert a.toolTip() and a.text() != fmt
    edit_menu = [m for m in window.menuBar().actions() if m.text() == "&Edit"][0].menu()
    assert "Edit selection" in [a.text().replace("&", "") for a in edit_menu.actions()]


# ---------------------------------------------------------------- 10 / 13: layout and status
def _shown(win, key) -> bool:
    """On screen: not a hidden tab (tabbed docks all report isVisible() offscreen)."""
    return not win.docks[key].visibleRegion().isEmpty()


def test_summary_stays_visible_beside_analysis_tabs(window, qtbot):
    for key in ("pareto", "sensitivity"):
        window.docks[key].raise_()
        qtbot.wait(50)
        assert _shown(window, key) and _shown(window, "summary") and not _shown(window, "histogram")


def test_layout_fits_the_window_and_the_table_gives_up_height(window, qtbot, wait_idle):
    from PySide6.QtCore import Qt

    from quantviz.gui.views.columns import COL, TABLE
    from quantviz.gui.views.layer_table import header_text_width

    window.session.run_sensitivity("e2e", bits=(2, 4))  # the widest Sensitivity header ("Drop @2b (pt)")
    wait_idle(window)
    v = window.table.view
    for w, h in ((1280, 800), (1600, 1000)):
        window.resize(w, h)
        window.default_dock_sizes()
        qtbot.wait(100)
        assert window.width() <= w  # no dock's minimum width pushes the window past the screen
        assert window.histogram.weights.plot.height() >= 200
        assert window.docks["summary"].height() > v.height()  # the table gave up height
        shown = [c for c in range(len(TABLE)) if not v.isColumnHidden(c)]
        # every column that shows is in view: no sideways scrolling
        assert sum(v.columnWidth(c) for c in shown) <= v.viewport().width() + 2, (w, window.table.columns.hidden)
        assert v.horizontalScrollBar().maximum() == 0
        for key in ("name", "weight_bits", "act_bits", "weight_sqnr_db", "range", "act_range", "size_bytes",
                    "sensitivity"):
            assert COL[key] in shown, (w, key)
        for c in shown:  # and no header is cut off (headers are drawn bold)
            text = v.model().headerData(c, Qt.Horizontal)
            assert v.columnWidth(c) >= header_text_width(v.horizontalHeader(), text) + 12, (w, TABLE[c].key)
    assert window.table.columns.hidden == []  # at 1600 px every column is in view


def test_opened_note_goes_on_edit_and_summary_is_never_stale(window):
    assert window.error_label.text().startswith("Opened")
    s = window.session
    window.table.apply_field("weight_bits", 5, [s.layers[0].name])
    assert window.error_label.text() == ""
    assert not window.summary.state.text().startswith("Up to date")


def test_opened_note_goes_when_an_analysis_result_arrives(window, wait_idle):
    assert window.error_label.text().startswith("Opened")
    window.session.run_sensitivity("local", bits=(4,))
    wait_idle(window)
    assert window.error_label.text() == ""
    window.show_message("bad.pt: not a model", "details")  # an error stays until the user acts on it
    window.session.run_sensitivity("local", bits=(3,))
    wait_idle(window)
    assert window.error_label.text() == "bad.pt: not a model"


def test_restart_shows_the_histogram_tab(qtbot, window):
    from quantviz.gui.main_window import MainWindow

    window.docks["config_diff"].raise_()
    qtbot.wait(50)
    assert _shown(window, "config_diff")
    window.save_layout()
    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    qtbot.wait(50)
    assert _shown(win, "histogram") and not _shown(win, "config_diff")
    win.close()


def test_bits_editor_shows_its_whole_text_in_a_narrow_column(window, qtbot):
    from PySide6.QtWidgets import QComboBox

    from quantviz.gui.views.layer_model import COL

    v = window.table.view
    idx = window.table.proxy.index(0, COL["weight_bits"])
    v.setCurrentIndex(idx)
    v.edit(idx)
    qtbot.waitUntil(lambda: v.findChild(QComboBox) is not None and v.findChild(QComboBox).isVisible())
    box = v.findChild(QComboBox)
    fm = box.fontMetrics()
    assert box.width() >= fm.horizontalAdvance(box.currentText()) + 20
    assert box.width() > v.columnWidth(COL["weight_bits"])
    v.closePersistentEditor(idx)
    v.setFocus()
