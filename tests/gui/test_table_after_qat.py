"""Found walking the app on a tiny BERT (#22): after QAT the layer table's W SQNR column kept the
untrained weights' numbers (its statistics are cached per layer and spec, and QAT changes the weights,
not the specs), while the histogram, and the same session reopened, showed the trained weights'."""
from __future__ import annotations

import pytest


def test_weight_sqnr_column_follows_the_trained_weights_and_undo(window, qtbot, wait_idle):
    from quantviz.core.training.qat import QATOptions

    win = window
    s = win.session
    names = s.layer_names

    def shown():
        wait_idle(win)
        for n in names:  # the cells ask for what they show
            win.table.model.data(win.table.model.index(win.table.model.row_of(n), 0))
        win.table.model.refresh_column("weight_sqnr_db")
        qtbot.waitUntil(lambda: all((win.table.model.stats_of(n) or {}).get("weight_sqnr_db") is not None
                                    for n in names), timeout=30000)
        return {n: win.table.model.stats_of(n)["weight_sqnr_db"] for n in names}

    def truth():
        return {n: s.sim.quantize_weight(n, s.spec(n).weight).sqnr_db for n in names}

    s.apply_preset("W4")
    wait_idle(win)
    before = shown()
    assert before == pytest.approx(truth())
    s.run_qat(QATOptions(steps=3, lr=1e-2))
    after = shown()
    assert after == pytest.approx(truth())
    assert after != pytest.approx(before)  # the trained weights' numbers, not the cached untrained ones
    s.undo()
    assert shown() == pytest.approx(before)
