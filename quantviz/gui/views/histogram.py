"""The histogram panel: a layer's weight / activation distribution and its clip range.

Each histogram tab shows the float distribution, the quantization levels and
the quantized histogram, with the clip range as a draggable band. While the
band is dragged the layer's quantized histogram, SQNR, MSE and clipped
fraction follow it (``quantviz.core.numerics.preview``; one tensor, no model pass,
throttled by a single-shot timer) and :attr:`HistogramPanel.rangePreview` is
emitted; on release :attr:`HistogramPanel.rangeCommitted` asks the main
window to store ``manual [lo, hi]`` and start a re-check. A third tab shows
every output channel's range (``channel_ranges.py``).

Run ``python -m quantviz.gui.views.histogram`` to open it alone on the demo.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QTabWidget, QVBoxLayout, QWidget

from ...core.errors import QuantvizError
from ...core.numerics.preview import channel_ranges, display_edges, preview_activation, preview_weight
from ..bridge import SessionFollower
from .channel_ranges import ChannelRangeView
from .hist_math import format_label, format_note, grid_note, weight_note
from .range_histogram import LOG_FLOOR, RangeHistogram  # noqa: F401 (LOG_FLOOR re-exported)

if TYPE_CHECKING:
    from ...session.session import Session

ASYNC_NUMEL = 4_000_000  # a layer with more weights is previewed on a worker (a second or more here)


class HistogramPanel(SessionFollower, QWidget):
    """Weight, per-channel and activation views of the selected layer."""

    rangePreview = Signal(str, str, float, float)  # layer, kind, lo, hi — while dragging
    rangeCommitted = Signal(str, str, float, float)  # layer, kind, lo, hi — on release

    def __init__(self, parent=None):
        super().__init__(parent)
        self.session: Session | None = None
        self.layer: str | None = None
        self.runner = None
        self._edges: dict[str, np.ndarray] = {}  # weight display bins per layer (stable while dragging)
        self._config_preview: dict[str, dict | None] = {}  # kind -> preview under the stored config
        self._weight_key: tuple | None = None  # what the weight tab shows: session, layer, setting, weight version
        self._channel_stats: dict[str, dict] = {}  # per-channel ranges per layer
        self.header = QLabel("No layer selected")
        self.header.setTextFormat(pg.QtCore.Qt.TextFormat.RichText)
        self.header.setWordWrap(True)
        self.header.setToolTip("The selected layer: its type, weight shape and current quantization settings.")
        self.log_box = QCheckBox("Log-scale counts")
        self.log_box.setToolTip("Show counts on a logarithmic axis, so rare outliers and long tails stay visible.")
        self.log_box.toggled.connect(self._on_log_toggled)
        top = QHBoxLayout()
        top.addWidget(self.header, 1)
        top.addWidget(self.log_box)
        self.weights = RangeHistogram("weight value", "weights per bin")
        self.channels = ChannelRangeView()
        self.acts = RangeHistogram("activation value (layer input, calibration data)", "values per bin")
        self.tabs = QTabWidget()
        self.tabs.addTab(self.weights, "Weights")
        self.tabs.addTab(self.channels, "Per-channel ranges")
        self.tabs.addTab(self.acts, "Activations")
        self.tabs.setTabToolTip(0, "Distribution of this layer's float weights, its quantization grid and the clip range.")
        self.tabs.setTabToolTip(1, "Range of every output channel's weights; outliers argue for per-channel quantization.")
        self.tabs.setTabToolTip(2, "Distribution of this layer's input on the calibration data, with its clip range.")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addLayout(top)
        lay.addWidget(self.tabs, 1)
        self.weights.dragged.connect(lambda lo, hi: self._on_drag("weight", lo, hi, False))
        self.weights.released.connect(lambda lo, hi: self._on_drag("weight", lo, hi, True))
        self.acts.dragged.connect(lambda lo, hi: self._on_drag("activation", lo, hi, False))
        self.acts.released.connect(lambda lo, hi: self._on_drag("activation", lo, hi, True))
        self.show_layer(None)

    # ------------------------------------------------------------ API
    def set_session(self, session) -> None:
        self.session = session
        self.follow(session)
        self._edges.clear()
        self._channel_stats.clear()
        self._weight_key = None
        self.show_layer(None)

    def show_layer(self, name: str | None) -> None:
        if self.session is None or name is None:
            self.layer = None
            self.header.setText("No layer selected" if self.session is not None else "No model open")
            self.weights.clear("Select a layer to see its weight histogram.")
            self.channels.clear("Select a layer to see its per-channel ranges.")
            self.acts.clear("Select a layer to see its input's histogram.")
            return
        self.session.layer(name)  # raises SessionError for an unknown name
        self.layer = name
        self.refresh()

    def _on_session_config_changed(self, change) -> None:
        if self.layer is not None and self.layer in change.changed:
            self.refresh()

    def _on_session_result(self, result) -> None:
        """A re-check ran the layers' algorithms: a weight preview that said "pending" shows the result."""
        p = self._config_preview.get("weight")
        if self.session is None or self.layer is None or p is None or "pending" not in str(p.get("algorithm_note", "")):
            return
        if not self.session.sim.algorithm_pending(self.layer, self.session.spec(self.layer).weight):
            self._weight_key = None
            self.refresh()

    def refresh(self) -> None:
        """Redraw the current layer from ``session.spec(name)`` (after a config change)."""
        if self.session is None or self.layer is None:
            return
        try:
            self._refresh_weight()
            self._refresh_activation()
        except QuantvizError as exc:
            self.weights.note.setText(f"<span style='color:#b00'>{exc}</span>")

    def stats_text(self, kind: str) -> str:
        """The live statistics line of the ``"weight"`` or ``"activation"`` tab (plain text)."""
        label = (self.weights if kind == "weight" else self.acts).stats
        return label.text().replace("<b>", "").replace("</b>", "")

    # ------------------------------------------------------------ build
    def _weight_edges(self) -> np.ndarray:
        e = self._edges.get(self.layer)
        if e is None:
            w = self.session.sim.float_weight(self.layer)
            e = self._edges[self.layer] = display_edges(float(w.min()), float(w.max()), w.numel())
        return e

    def _weights_only(self) -> bool:
        return bool(self.session.bundle.meta.get("weights_only"))

    def _header(self, spec) -> None:
        info = self.session.layer(self.layer)
        shape = "×".join(str(s) for s in info.weight_shape)
        w = spec.weight
        if w.bits is None:
            wtxt = "float (not quantized)"
        else:
            gran = w.granularity + (f" ({w.effective_group_size()})" if w.granularity == "per_group" else "")
            wtxt = f"{w.bits}-bit {gran} {f'symmetric ({w.grid} grid)' if w.symmetric else 'asymmetric'}, range {w.range.describe()}"
            if w.format != "int":
                wtxt = format_label(w.format) + (f" {gran}, range {w.range.describe()}" if w.format.startswith("fp8") else "")
            if w.algorithm != "none":
                wtxt += f", {w.algorithm}"
        a = spec.activation
        if self._weights_only():
            atxt = "not simulated (weights-only file)"
        elif not info.has_activation_input:
            atxt = "none (index input)"
        elif a.bits is None:
            atxt = "float"
        else:
            atxt = f"{a.bits}-bit {f'symmetric ({a.grid} grid)' if a.symmetric else 'asymmetric'}, range {a.range.describe()}"
            if a.format != "int":
                atxt = format_label(a.format) + (f", range {a.range.describe()}" if a.format.startswith("fp8") else "")
        self.header.setText(f"<b>{self.layer}</b> · {info.type} · weight {shape} ({info.weight_numel:,} values)"
                            f"<br>weights: {wtxt} · activations: {atxt}")

    def set_runner(self, runner) -> None:
        """Background jobs for big layers' previews (without one, every preview is computed at once)."""
        self.runner = runner

    def _refresh_weight(self, lo: float | None = None, hi: float | None = None, dragging: bool = False) -> dict | None:
        spec = self.session.spec(self.layer)
        if not dragging:
            self._header(spec)
        key = None
        if lo is None and hi is None and not dragging:
            # the same weight under the same setting is on screen already (e.g. the redraw when calibration
            # ends, which brings activation statistics only): a big layer's preview takes seconds
            w = self.session.sim.float_weight(self.layer)
            key = (id(self.session), self.layer, spec.weight, w.data_ptr(), w._version)
            if key == self._weight_key and self._config_preview.get("weight") is not None:
                return self._config_preview["weight"]
        self._weight_key = key  # a dragged or typed range is not the stored setting's preview
        numel = self.session.layer(self.layer).weight_numel
        if key is not None and self.runner is not None and numel > ASYNC_NUMEL:
            self._preview_in_background(spec, key, numel)
            return None
        p = preview_weight(self.session.sim, self.layer, spec.weight, lo, hi, edges=self._weight_edges())
        stats = None
        if not dragging:
            stats = self._channel_stats.get(self.layer)
            if stats is None:  # depends only on the float weight: once per layer
                stats = self._channel_stats[self.layer] = channel_ranges(self.session.sim, self.layer)
        self._show_weight(p, dragging, stats)
        return p

    def _show_weight(self, p: dict, dragging: bool, stats: dict | None) -> None:
        if not dragging:
            self._config_preview["weight"] = p
        base = self._config_preview.get("weight") if dragging else None
        self.weights.show_preview(p, move_region=not dragging, editable=not (p.get("float") or p.get("block")), baseline=base)
        self.weights.note.setText(weight_note(p))
        if not dragging:
            self.channels.set_channels(stats, p.get("channel_lo"), p.get("channel_hi"),
                                       None if p.get("float") else p["granularity"])
        else:
            self.channels.set_clip(p.get("channel_lo"), p.get("channel_hi"))

    def _preview_in_background(self, spec, key: tuple, numel: int) -> None:
        """A big layer's preview (its whole weight quantized, tens of millions of values) on a worker:
        the GUI stays live, and the plot appears when it is ready unless the user moved on."""
        s, name = self.session, self.layer
        edges, stats = self._edges.get(name), self._channel_stats.get(name)
        self._config_preview["weight"] = None
        self.weights.clear(f"Computing the histogram of {numel:,} weights…")

        def job(progress, cancel):
            w = s.sim.float_weight(name)
            e = edges if edges is not None else display_edges(float(w.min()), float(w.max()), w.numel())
            return e, preview_weight(s.sim, name, spec.weight, edges=e), stats or channel_ranges(s.sim, name)

        def done(result) -> None:
            if self.session is not s or self.layer != name or self._weight_key != key:
                return  # another layer, setting or session by now
            e, p, st = result
            self._edges[name], self._channel_stats[name] = e, st
            self._show_weight(p, False, st)

        def failed(message, details, exc) -> None:
            if self.session is s and self.layer == name:
                self._weight_key = None
                self.weights.note.setText(f"<span style='color:#b00'>{message}</span>")

        self.runner.submit("histogram", job, label=f"Histogram of {name}", visible=False, on_done=done, on_error=failed)

    def _refresh_activation(self, lo: float | None = None, hi: float | None = None, dragging: bool = False) -> dict | None:
        info = self.session.layer(self.layer)
        obs = self.session.sim.act_obs.get(self.layer)
        if self._weights_only():
            self.acts.clear("Activations cannot be simulated for this file: only its weights are quantized.")
            return None
        if not info.has_activation_input:
            self.acts.clear("This layer's input is indices (Embedding): there is no activation to quantize.")
            return None
        if obs is None or obs.count == 0:
            self.acts.clear("No calibration statistics for this layer's input (open the model with data).")
            return None
        aspec = self.session.spec(self.layer).activation
        p = preview_activation(obs.histogram(), aspec, lo, hi)
        if not dragging:
            self._config_preview["activation"] = p
        base = self._config_preview.get("activation") if dragging else None
        self.acts.show_preview(p, move_region=not dragging, editable=not (p.get("float") or p.get("block")), baseline=base)
        if p.get("float"):
            self.acts.note.setText("Activations stay float (bits = null): set activation bits (e.g. preset W8A8) "
                                   "to edit their clip range.")
        elif p.get("format"):
            self.acts.note.setText(f"{format_note(p)} · from {int(p['numel']):,} calibration values, observed "
                                   f"[{p['data_lo']:.4g}, {p['data_hi']:.4g}]")
        else:
            sym = f" · {grid_note(p)}" if p["symmetric"] else ""
            self.acts.note.setText(f"{p['levels_total']} levels (per-tensor) · from {int(p['numel']):,} "
                                   f"calibration values, observed [{p['data_lo']:.4g}, {p['data_hi']:.4g}]{sym}")
        return p

    # ----------------------------------------------------------- events
    def _on_drag(self, kind: str, lo: float, hi: float, final: bool) -> None:
        if self.session is None or self.layer is None or not hi > lo:
            return
        try:
            if kind == "weight":
                self._refresh_weight(lo, hi, dragging=True)
            else:
                self._refresh_activation(lo, hi, dragging=True)
        except QuantvizError as exc:
            (self.weights if kind == "weight" else self.acts).note.setText(f"<span style='color:#b00'>{exc}</span>")
            return
        (self.rangeCommitted if final else self.rangePreview).emit(self.layer, kind, lo, hi)

    def _on_log_toggled(self, on: bool) -> None:
        self.weights.set_log(on)
        self.acts.set_log(on)


def main(argv: list[str] | None = None) -> int:
    """Open the panel alone on the demo; ``--png`` renders it offscreen instead."""
    import argparse
    import sys

    from ...session.session import Session
    from ..launch import create_app, smoke_quit

    ap = argparse.ArgumentParser(prog="python -m quantviz.gui.views.histogram")
    ap.add_argument("--model", default="demo")
    ap.add_argument("--layer", default="features.3")
    ap.add_argument("--bits", type=int, help="set the layer's weight bits first")
    ap.add_argument("--granularity", choices=["per_tensor", "per_channel", "per_group"])
    ap.add_argument("--drag", nargs=2, type=float, metavar=("LO", "HI"),
                    help="drag the weight clip range to [LO, HI] (shown mid-drag, not released)")
    ap.add_argument("--preset", help="apply a preset (e.g. W8A8) first")
    ap.add_argument("--act-drag", nargs=2, type=float, metavar=("LO", "HI"), help="drag the activation clip range")
    ap.add_argument("--tab", type=int, default=0, help="tab to show: 0 weights, 1 per-channel, 2 activations")
    ap.add_argument("--log", action="store_true", help="start with log-scale counts")
    ap.add_argument("--size", nargs=2, type=int, default=(900, 600), metavar=("W", "H"))
    ap.add_argument("--png", help="render to this PNG (offscreen) and exit")
    args = ap.parse_args(argv)
    app = create_app(sys.argv[:1])
    session = Session.open(args.model)
    if args.preset:
        session.apply_preset(args.preset)
    patch = {k: v for k, v in (("bits", args.bits), ("granularity", args.granularity)) if v is not None}
    if patch:
        session.edit_layers([args.layer], {"weight": patch})
    panel = HistogramPanel()
    panel.set_session(session)
    panel.show_layer(args.layer)
    panel.log_box.setChecked(args.log)

    def commit(layer, kind, lo, hi):
        session.set_range(layer, kind, lo, hi)
        panel.refresh()

    panel.rangeCommitted.connect(commit)
    panel.resize(*args.size)
    panel.tabs.setCurrentIndex(args.tab)
    for view, rng in ((panel.weights, args.drag), (panel.acts, args.act_drag)):
        if rng:
            view.region.blockSignals(True)  # setRegion would also "release" (commit) the range
            view.region.setRegion(tuple(rng))
            view.region.blockSignals(False)
            view.region.sigRegionChanged.emit(view.region)
            view._emit_dragged()
    if args.png:
        app.processEvents()
        panel.grab().save(args.png)
        return 0
    panel.show()
    smoke_quit(app)
    return app.exec()


if __name__ == "__main__":
    raise SystemExit(main())
