"""No text widens the window (#22 items 1 and 13): a long hover line, a long "Last run" line, a
long status message or re-check state elide (with the whole text in the tooltip) instead of
pushing the window past the screen."""
from __future__ import annotations

LONG = "encoder.layer.11.attention.output.dense.with.a.very.long.module.path " * 6


def test_long_texts_elide_and_never_widen_the_window(window, qtbot):
    window.resize(1280, 800)
    qtbot.waitUntil(lambda: window.width() == 1280, timeout=5000)
    labels = {
        "sensitivity hover": window.sensitivity.info,
        "QAT last run": window.qat.status,
        "summary state": window.summary.state,
        "status bar message": window.error_label,
        "status bar model": window.model_label,
    }
    for name, label in labels.items():
        label.setText(f"{name}: {LONG}")
        qtbot.wait(10)  # process the layout request the text posted
        window.layout().activate()
        assert window.minimumSizeHint().width() <= 1280, name
        assert window.width() == 1280, name
        assert label.text() == f"{name}: {LONG}"  # the whole text is kept...
        if label.isVisible() and label.width() < label.fontMetrics().horizontalAdvance(label.text()):
            assert label.toolTip() == label.text()  # ...and shown on hover when it does not fit
            assert "…" in label.displayed_text(), (name, label.width(), label.displayed_text())


def test_an_elided_label_keeps_its_own_tooltip_when_the_text_fits(qtbot):
    from quantviz.gui.elided import ElidedLabel

    label = ElidedLabel("short")
    qtbot.addWidget(label)
    label.setToolTip("what this label shows")
    label.resize(400, 20)
    label.show()
    assert label.displayed_text() == "short" and label.toolTip() == "what this label shows"
    label.setText(LONG)
    assert label.displayed_text().endswith("…") and label.toolTip() == LONG
    label.setText("short again")
    assert label.toolTip() == "what this label shows"
    label.clear()
    assert label.text() == "" and label.displayed_text() == ""
    mid = ElidedLabel("transformer.h.11.attn.c_attn.some.long.tail.name", middle=True)
    qtbot.addWidget(mid)
    mid.resize(120, 20)
    mid.show()
    assert mid.displayed_text().startswith("tra") and mid.displayed_text().endswith("name")
    assert "…" in mid.displayed_text()


def test_transformer_layer_names_stay_apart_when_shortened():
    """#22 item 14: "…intermediate.dense" five times told the user nothing; a short name keeps the
    block index and the end of the name, so distinct layers stay distinct."""
    from quantviz.gui.elided import elide_layer_name

    names = [f"encoder.layer.{b}.{part}" for b in range(12) for part in (
        "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
        "intermediate.dense", "output.dense")]
    for room in (32, 24, 20):
        short = [elide_layer_name(n, lambda t, r=room: len(t) <= r) for n in names]
        assert all(len(t) <= room for t in short), room
        assert len(set(short)) == len(names), (room, [t for t in short if short.count(t) > 1][:4])
        assert all(f".{n.split('.')[2]}." in t or t.startswith(f"…{n.split('.')[2]}.") for n, t in zip(names, short))


def test_a_text_that_fits_is_shown_whole(window):
    """The status bar's model line has room: it is not cut (its padding counts in the size it asks for)."""
    label = window.model_label
    assert label.displayed_text() == label.text() and "parameters" in label.text() and "…" not in label.text()
