"""The mixed-precision search dialog: one budget (average bits, size or largest drop),
the metric it compares by, the candidate bit-widths, what ranks the layers, and what
the search starts from.

The search changes only each layer's weight bit-width; every other setting
(granularity, range method and manual ranges, grid, activation bits) comes
from the start config. ``quantviz search`` starts from a preset (W8 unless
``--preset``/``--config`` say otherwise); the app starts from the current
config by default, and the dialog says so and lets the user pick a preset
instead, so the app can answer exactly as the CLI does.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QButtonGroup, QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox,
                               QFormLayout, QGridLayout, QHBoxLayout, QLabel, QRadioButton, QVBoxLayout, QWidget)

from ..core.fmt import METRIC_LABELS, PERCENT_METRICS, fmt_bytes, size_unit

if TYPE_CHECKING:
    from ..session.session import Session

CANDIDATE_BITS = (2, 3, 4, 6, 8)
RANKINGS = (("e2e", "End-to-end sensitivity (one evaluation per layer and bit-width)"),
            ("local", "Local SQNR (one calibration pass; for large models)"),
            ("hessian", "Hessian trace (HAWQ)"))


class SearchDialog(QDialog):
    """Non-blocking (``open()``); :meth:`request` gives ``run_search`` keywords plus ``start`` and ``metric``."""

    def __init__(self, session: Session, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("searchDialog")
        self.setWindowTitle("Mixed-precision search")
        self.session: Session = session
        size = session.size()
        self.metric_key = session.analysis_metric or _primary(session.reference.metrics)
        self._unit, self._div = size_unit(size.float_bytes)
        self.metric_combo = QComboBox()
        primary = _primary(session.reference.metrics)
        from .views.sensitivity import metric_choices

        for k in metric_choices(session.reference.metrics):
            self.metric_combo.addItem(METRIC_LABELS.get(k, k) + (" (primary)" if k == primary else ""), k)
        self.metric_combo.setCurrentIndex(max(0, self.metric_combo.findData(self.metric_key)))
        self.metric_combo.setToolTip("What the search compares configs by (and the sensitivity sweep it starts "
                                     "with ranks layers by); as quantviz search --metric")
        self.metric_combo.currentIndexChanged.connect(self._on_metric_changed)

        self.kind = QButtonGroup(self)
        grid = QGridLayout()
        self.avg_bits = QDoubleSpinBox(decimals=2, minimum=1.0, maximum=16.0, singleStep=0.25,
                                       value=min(4.0, size.avg_bits))
        self.avg_bits.setSuffix(" bits")
        self.size = QDoubleSpinBox(decimals=2, minimum=0.01, maximum=1e9)
        self.size.setSuffix(f" {self._unit}")
        self.size.setValue(round(size.float_bytes / 8 / self._div, 2))
        self.max_drop = QDoubleSpinBox(decimals=4)
        rows = [("avg_bits", "Average bits per weight", self.avg_bits,
                 f"now {size.avg_bits:.2f} bits/weight"),
                ("size_bytes", "Model size at most", self.size, f"float {fmt_bytes(size.float_bytes)}, "
                                                               f"now {fmt_bytes(size.quantized_bytes)}"),
                ("max_drop", "", self.max_drop, "")]
        self.radios: dict[str, QRadioButton] = {}
        for r, (key, text, spin, hint) in enumerate(rows):
            rb = QRadioButton(text)
            self.kind.addButton(rb, r)
            self.radios[key] = rb
            grid.addWidget(rb, r, 0)
            grid.addWidget(spin, r, 1)
            note = QLabel(hint)
            note.setObjectName("muted")
            grid.addWidget(note, r, 2)
            if key == "max_drop":
                self._drop_note = note
            rb.toggled.connect(lambda on, s=spin: s.setEnabled(on))
            spin.setEnabled(False)
        self.radios["avg_bits"].setChecked(True)

        bits_row = QHBoxLayout()
        self.bit_boxes = {}
        for b in CANDIDATE_BITS:
            cb = QCheckBox(f"{b}")
            cb.setChecked(True)
            self.bit_boxes[b] = cb
            bits_row.addWidget(cb)
        bits_row.addStretch(1)
        extra = [str(c) for c in session.default_search_candidates() if not isinstance(c, int) and not c.label[3:].isdigit()]
        self.extras = QCheckBox("Also " + (", ".join(extra) if extra else "per-group and GPTQ settings"))
        self.extras.setChecked(bool(extra))  # as quantviz search does without --bits / --candidates
        self.extras.setEnabled(bool(extra))
        self.extras.setToolTip("Per-group grids and GPTQ where they apply to this model, beside the bit-widths "
                               "(quantviz search's default). Off: the checked bit-widths only (as --bits)."
                               if extra else "Neither per-group grids nor GPTQ apply to this model's layers.")

        self.rank = QComboBox()
        for key, text in RANKINGS:
            self.rank.addItem(text, key)
        self.rank.setToolTip("What ranks the layers before the candidate configs are measured end to end "
                             "(as quantviz search --sensitivity). Local and Hessian need one calibration pass "
                             "instead of one evaluation per layer and bit-width: use them for large models.")

        self.measure = QComboBox()
        self.measure.addItem("screen first, then end to end what can win", "less")
        self.measure.addItem("every candidate end to end (exhaustive)", "all")
        self.measure.setToolTip("Screen first: the candidates within the budget are measured on a quarter of the "
                                "evaluation samples, and only those that can still be the best (at most 3) end to "
                                "end (as quantviz search --measure less). Exhaustive: every candidate end to end "
                                "(--measure all).")

        self.start = QComboBox()
        self.start.addItem("the current config", None)
        for name in ("W8", "W8A8", "W4"):
            self.start.addItem(f"preset {name}" + (" (as quantviz search does by default)" if name == "W8" else ""),
                               name)
        self.start.currentIndexChanged.connect(self._explain)
        self.keeps = QLabel()
        self.keeps.setWordWrap(True)
        self.keeps.setTextFormat(Qt.RichText)

        form = QFormLayout()
        form.addRow("Candidate weight bits:", _wrap(bits_row))
        form.addRow("", self.extras)
        form.addRow("Rank layers by:", self.rank)
        form.addRow("Measure:", self.measure)
        form.addRow("Start from:", self.start)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.button(QDialogButtonBox.Ok).setText("Search")
        buttons.accepted.connect(self._accept)
        buttons.rejected.connect(self.reject)
        self.error = QLabel()
        self.error.setObjectName("error")
        lay = QVBoxLayout(self)
        top = QFormLayout()
        top.addRow("Compare configs by:", self.metric_combo)
        lay.addLayout(top)
        lay.addWidget(QLabel("<b>Budget</b> (one of):"))
        lay.addLayout(grid)
        lay.addLayout(form)
        lay.addWidget(self.keeps)
        lay.addWidget(self.error)
        lay.addWidget(buttons)
        self._on_metric_changed()
        self._explain()

    def _on_metric_changed(self, *_a) -> None:
        """The largest-drop budget speaks the chosen metric's unit."""
        from ..core.sim.evaluate import higher_is_better

        self.metric_key = self.metric_combo.currentData() or self.metric_key
        pct = self.metric_key in PERCENT_METRICS
        word = "drop" if higher_is_better(self.metric_key) else "increase"
        self.radios["max_drop"].setText(f"Largest {METRIC_LABELS.get(self.metric_key, self.metric_key)} {word}")
        self.max_drop.setDecimals(2 if pct else 4)
        self.max_drop.setRange(0.0, 100.0 if pct else 1e6)
        self.max_drop.setSingleStep(0.5 if pct else 0.01)
        self.max_drop.setValue(1.0 if pct else 0.01)
        self.max_drop.setSuffix(" pt" if pct else "")
        self._drop_note.setText("against the float model" + (" (percentage points)" if pct else ""))

    def _explain(self, *_a) -> None:
        manual = sum(1 for sp in self.session.specs.values()
                     for t in (sp.weight, sp.activation) if t.bits and t.range.method == "manual")
        act = sum(1 for sp in self.session.specs.values() if sp.activation.bits)
        start = self.start.currentData()
        if start is None:
            kept = (f"The search changes only each layer's <b>weight bit-width</b>. It keeps every other setting of "
                    f"the current config: granularity, range methods ({manual} manual clip range(s)), grid and "
                    f"activation bits ({act} layer(s) with quantized activations). "
                    "<code>quantviz search</code> starts from preset W8 instead: pick it to get the CLI's answer.")
        else:
            kept = (f"The config is first set to preset <b>{start}</b> (one undoable edit; your {manual} manual "
                    "range(s) are replaced), then the search changes only each layer's weight bit-width, "
                    f"as <code>quantviz search --preset {start}</code> does.")
        self.keeps.setText(kept)

    def bits(self) -> tuple[int, ...]:
        return tuple(b for b, cb in self.bit_boxes.items() if cb.isChecked())

    def candidates(self) -> tuple:
        """What the search chooses among: the checked bit-widths, plus the per-group and GPTQ
        settings that apply when "Also ..." is checked (:meth:`Session.default_search_candidates`)."""
        if self.extras.isChecked():
            return self.session.default_search_candidates(self.bits())
        return self.bits()

    def request(self) -> dict:
        """``{"budget": {key: value}, "bits": (...), "start": preset name or None, "metric": key,
        "sensitivity": "e2e" | "local" | "hessian", "measure": "less" | "all"}``."""
        key = next(k for k, rb in self.radios.items() if rb.isChecked())
        if key == "avg_bits":
            value = float(self.avg_bits.value())
        elif key == "size_bytes":
            value = int(self.size.value() * self._div)
        else:
            value = float(self.max_drop.value()) / (100.0 if self.metric_key in PERCENT_METRICS else 1.0)
        return {"budget": {key: value}, "bits": self.candidates(), "start": self.start.currentData(),
                "metric": self.metric_key, "sensitivity": self.rank.currentData(),
                "measure": self.measure.currentData()}

    def _accept(self) -> None:
        if len(self.bits()) < 2:
            self.error.setText("Choose at least two candidate bit-widths.")
            return
        self.accept()


def _primary(metrics: dict) -> str:
    from ..core.sim.evaluate import primary_metric

    return primary_metric(metrics)


def _wrap(layout) -> QWidget:
    w = QWidget()
    layout.setContentsMargins(0, 0, 0, 0)
    w.setLayout(layout)
    return w


def main() -> int:  # pragma: no cover - a look at the dialog alone
    from .launch import standalone

    return standalone(lambda session: SearchDialog(session))


if __name__ == "__main__":
    raise SystemExit(main())
