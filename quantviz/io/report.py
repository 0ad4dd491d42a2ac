"""A self-contained HTML report of a quantized model (charts as inline SVG, no Qt).

Sections: model summary; float vs quantized metrics and sizes (a re-check
result of the config); the per-layer config table; the sensitivity heatmap
and the search's Pareto plot when there are such results; the error trace
(accumulated vs local SQNR along depth) when one is given; the weight and
activation histograms, with clip range and grid, of the most sensitive layers.

It reports :class:`ReportFacts` (plain values the session gathers) and reads
histograms from the simulation; it computes no metrics itself.
"""
from __future__ import annotations

import math
import time
from html import escape
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..core.fmt import PERCENT_METRICS, fmt_bytes, fmt_drop, fmt_metric, metric_label, size_unit
from ..core.numerics.describe import activation_text, weight_text
from ..core.progress import Progress, null_progress
from . import svg


@dataclass
class ReportFacts:
    """What the report states about a model and its config (all plain values)."""

    name: str
    reference: str
    kind: str
    num_params: int
    eval_samples: int
    calib_samples: int
    result: dict  # a re-check: {"label", "metrics", "float_metrics", "size"}
    rows: list[dict]  # one per layer (Session.layer_row)
    sensitivity: dict = field(default_factory=dict)  # method -> sensitivity result
    scores: dict | None = None  # {"method", "bits", "metric", "scores": {layer: drop}} or None
    search: dict | None = None
    trace: dict | None = None  # an error trace of this config (TraceResult.to_dict())
    data_note: str = ""  # which samples the figures are on (DataSplit.describe())

CSS = """body{font-family:sans-serif;margin:24px;color:#222;max-width:1100px}
table{border-collapse:collapse;font-size:12px;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f0f0f0}td.l,th.l{text-align:left}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
.charts svg{margin:4px}.note{color:#666;font-size:12px}"""


def _num(v, digits=4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "-"
        return f"{v:.{digits}g}"
    return escape(str(v))


def _metric(name: str, v) -> str:
    return fmt_metric(name, v, missing="-")


def _bytes(n) -> str:
    return fmt_bytes(n, missing="-")


def _table(header: list[str] | None, rows: list[list[str]], left: int = 1) -> str:
    h = "".join(f'<th class="{"l" if i < left else ""}">{escape(c)}</th>' for i, c in enumerate(header or []))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(r)) + "</tr>"
                   for r in rows)
    return f"<table>{f'<tr>{h}</tr>' if header else ''}{body}</table>"


# ------------------------------------------------------- optional sections
def _sensitivity_cell(result: dict, cell: dict | None) -> float:
    """Metric drop (in points for accuracy-like metrics), else output noise (-SQNR dB)."""
    if not isinstance(cell, dict):
        return float("nan")
    metric = result.get("metric")
    drop = cell.get("drop") or {}
    if metric and drop.get(metric) is not None:
        return float(drop[metric]) * (100.0 if metric in ("accuracy", "top1_agreement") else 1.0)
    sq = (cell.get("metrics") or {}).get("sqnr_db")
    return -float(sq) if sq is not None else float("nan")


def _matrix_from(sens) -> tuple[list[str], list[str], np.ndarray, str] | None:
    """Accept the common shapes of a sensitivity result; None if unrecognised."""
    if not isinstance(sens, dict):
        return None
    # quantviz.core.analysis.sensitivity: {method: {"layers": [{"name", "results": {bits: cell}}], "bits", "metric"}}
    for method in ("e2e", "loo", "local", "hessian"):
        r = sens.get(method)
        if isinstance(r, dict) and isinstance(r.get("layers"), list) and r.get("bits") and r["layers"]:
            try:
                bits = [str(b) for b in r["bits"]]
                names = [str(e["name"]) for e in r["layers"]]
                arr = np.array([[_sensitivity_cell(r, e.get("results", {}).get(b)) for b in bits] for e in r["layers"]])
            except (KeyError, TypeError, ValueError, AttributeError):
                continue
            metric = r.get("metric")
            label = (f"{method}: {metric} drop" + (", points" if metric in ("accuracy", "top1_agreement") else "")
                     if metric and method in ("e2e", "loo") else f"{method}: output noise, -SQNR dB")
            return names, bits, arr, label
    label = str(sens.get("metric", "sensitivity"))
    layers = sens.get("layers")
    cols = sens.get("bits") or sens.get("columns") or sens.get("settings")
    for key in ("matrix", "values", "scores", "drop", "delta", "grid"):
        mat = sens.get(key)
        if isinstance(mat, list) and isinstance(layers, list) and cols:
            try:
                arr = np.array([[np.nan if v is None else float(v) for v in row] for row in mat], dtype=float)
            except (TypeError, ValueError):
                continue
            if arr.shape == (len(layers), len(cols)):
                return [str(l) for l in layers], [str(c) for c in cols], arr, label
    table = sens.get("results") if isinstance(sens.get("results"), dict) else (layers if isinstance(layers, dict) else None)
    if isinstance(table, dict) and table and all(isinstance(v, dict) for v in table.values()):
        colset = sorted({str(k) for v in table.values() for k in v}, key=lambda c: (len(c), c))
        arr = np.array([[_as_float(v.get(c, v.get(_maybe_int(c)))) for c in colset] for v in table.values()])
        return list(table), colset, arr, label
    return None


def _maybe_int(c: str):
    try:
        return int(c)
    except ValueError:
        return c


def _as_float(v) -> float:
    if isinstance(v, dict):
        for k in ("drop", "delta", "value", "score", "metric"):
            if k in v:
                return _as_float(v[k])
        return float("nan")
    try:
        return float(v) if v is not None else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def _search_note(search: dict) -> str:
    """Which sensitivity ranked the layers and how many candidates were measured end to end."""
    how = {"e2e": "the end-to-end sensitivity sweep", "local": "the local (layer output SQNR) proxy",
           "hessian": "the Hessian (HAWQ) proxy"}.get(search.get("sensitivity", "e2e"), str(search.get("sensitivity")))
    n = search.get("candidates")
    measured = f"; {n} candidate configs measured end to end" if isinstance(n, int) else ""
    return f'<p class="note">Layers ranked by {escape(how)}{escape(measured)}.</p>'


def _points_from(search) -> tuple[list, list, str, str, tuple | None] | None:
    if not isinstance(search, dict):
        return None
    pts = next((v for v in (search.get(k) for k in ("points", "candidates", "evaluated")) if isinstance(v, list)), [])
    front = next((v for v in (search.get(k) for k in ("front", "pareto")) if isinstance(v, list)), [])
    metric = search.get("metric")

    def xy(p):
        if isinstance(p, dict) and metric and isinstance(p.get("metrics"), dict) and p.get("size_bytes") is not None \
                and p["metrics"].get(metric) is not None:
            return float(p["size_bytes"]), float(p["metrics"][metric])
        if isinstance(p, (list, tuple)) and len(p) >= 2:
            return float(p[0]), float(p[1])
        if isinstance(p, dict):
            x = next((p[k] for k in ("size_bytes", "quantized_bytes", "size", "avg_bits", "bits") if k in p), None)
            y = next((p[k] for k in ("metric", "accuracy", "score", "value", "sqnr_db") if k in p), None)
            if y is None and isinstance(p.get("metrics"), dict) and p["metrics"]:
                m = p["metrics"]
                y = m.get("accuracy", next(iter(m.values())))
            if x is None and isinstance(p.get("size"), dict):
                x = p["size"].get("quantized_bytes")
            if x is not None and y is not None:
                return float(x), float(y)
        return None

    P = [q for q in (xy(p) for p in pts) if q]
    F = [q for q in (xy(p) for p in front) if q]
    if not P and not F:
        return None
    chosen = xy(search["chosen"]) if isinstance(search.get("chosen"), dict) else None
    return P, F, str(search.get("x_label", "size (bytes)")), str(metric or "metric"), chosen


def _int_marks(qp) -> tuple[tuple | None, list | None]:
    """An integer grid's clip range and levels (the widest group's levels; the groups' envelope)."""
    g = int(np.argmax(np.asarray(qp.scale, dtype=float))) if qp.groups > 1 else 0
    s, z = float(qp.scale[g]), int(qp.zero_point[g])
    grid = [(q - z) * s for q in range(qp.qmin, qp.qmax + 1)] if qp.qmax - qp.qmin < 64 else None
    glo, ghi = qp.grid_range()
    return (float(glo.min()), float(ghi.max())), grid


def _format_marks(p) -> tuple[tuple | None, list | None, str]:
    """A float / block format's clip range (none for block formats: each block's scale follows its own
    maximum), the widest group's levels (up to 64 of them) and a note saying what is drawn."""
    fmt = p.fmt
    if not p.groups:  # a block-format activation: scales are computed per block at run time
        return None, None, f"{fmt.label}: block scales computed at run time, no clip range"
    g = int(np.argmax(p.scale.numpy())) if p.groups > 1 else 0
    lv = p.levels(g).tolist()
    grid = lv if len(lv) <= 64 else None
    if fmt.is_block:
        return None, grid, (f"{fmt.label}: each block of {fmt.block} has its own scale, so no clip range; "
                            + ("levels of the widest block" if grid else f"{len(lv)} levels, not drawn"))
    hi = float(p.hi.max())
    note = "" if p.groups == 1 else f"envelope of {p.groups} ranges"
    return (-hi, hi), grid, note


def _marks(qp, spec) -> tuple[tuple | None, list | None, str]:
    if qp is None:
        return None, None, "float (not quantized)"
    if getattr(qp, "format", "int") != "int":
        return _format_marks(qp)
    clip, grid = _int_marks(qp)
    note = "" if qp.groups == 1 else (f"{spec.granularity.replace('_', '-')}: envelope of {qp.groups} ranges, "
                                      "widest grid")
    return clip, grid, note


def _histograms(sim, specs: dict, names: list[str]) -> str:
    out = []
    for name in names:
        spec = specs[name]
        h = sim.weight_histogram(name, bins=128)
        wq = sim.quantize_weight(name, spec.weight)
        clip, grid, note = _marks(None if wq is None else wq.qparams, spec.weight)
        out.append(svg.histogram(h.edges, h.counts, title=f"{name} weights ({weight_text(spec.weight)})",
                                 clip=clip, grid=grid, note=note))
        obs = sim.act_obs.get(name)
        if obs is not None:
            ah = obs.histogram().rebinned(128)
            aclip, agrid, anote = _marks(sim.activation_qparams(name, spec.activation), spec.activation)
            out.append(svg.histogram(ah.edges, ah.counts,
                                     title=f"{name} input activations ({activation_text(spec.activation)})",
                                     clip=aclip, grid=agrid, note=anote))
    return '<div class="charts">' + "".join(out) + "</div>"


def most_sensitive(facts: ReportFacts, k: int = 4) -> tuple[list[str], str]:
    """The ``k`` layers to show, and what they were ranked by (for the section's title)."""
    names = {r["name"] for r in facts.rows}
    sc = facts.scores or {}
    score = {n: v for n, v in (sc.get("scores") or {}).items() if n in names}
    if score:
        ranked = sorted(score, key=lambda n: -_as_float(score[n]))
        metric = sc.get("metric") or "output noise"
        how = "only the layer is quantized" if sc.get("method", "e2e") == "e2e" else "every layer but it is quantized"
        return ranked[:k], (f"ranked by {sc.get('method', 'e2e')} sensitivity: the {metric} drop when {how} "
                            f"to {sc.get('bits')} bits")
    sens = _matrix_from(facts.sensitivity)
    if sens is not None:  # a proxy (local / hessian): rank by its lowest bit-width's column
        rws, cols, mat, label = sens
        col = np.nan_to_num(mat[:, 0], nan=-np.inf)
        ranked = [rws[i] for i in np.argsort(-col, kind="stable") if rws[i] in names]
        return ranked[:k], f"ranked by {label} at {cols[0]} bits (most sensitive first)"
    quant = [r for r in facts.rows if r["weight_sqnr_db"] is not None]
    return ([r["name"] for r in sorted(quant, key=lambda r: r["weight_sqnr_db"])[:k]],
            "ranked by weight SQNR under the current config (lowest first); run a sensitivity analysis "
            "(quantviz export --sensitivity e2e) to rank by the model's metric")


def _trace_section(tr: dict) -> str:
    """The error trace: accumulated and local SQNR along depth, with its table."""
    layers = tr["layers"]
    names = [l["name"] for l in layers]

    def db(v):  # JSON None = identical to float
        return math.inf if v is None else float(v)

    acc = [db(l.get("accumulated_sqnr_db")) for l in layers]
    loc = [db(l.get("local_sqnr_db")) for l in layers]
    entry = names.index(tr["entry"]) if tr.get("entry") in names else None
    drop = None
    bd = tr.get("biggest_drop")
    if bd and bd.get("layer") in names and bd.get("after") in names:
        drop = (names.index(bd["after"]), names.index(bd["layer"]), float(bd["drop_db"]))
    what = f"{tr.get('samples', 0)} samples" + (f", {tr['tokens']} real tokens" if tr.get("tokens") is not None else "")
    chart = svg.depth_curves(names, {"accumulated (quantized model vs float)": acc, "local (only this layer quantized)": loc},
                             title=f"SQNR along depth, {tr.get('label', '')}", ylabel="SQNR (dB)", entry=entry, drop=drop)

    def cell(v):
        return "float" if v is None else f"{v:.1f}"

    rows = [[escape(l["name"]), escape(l["type"]), cell(l.get("accumulated_sqnr_db")), cell(l.get("local_sqnr_db")),
             "-" if l.get("input_local_sqnr_db") is None else cell(l.get("input_accumulated_sqnr_db")),
             "-" if l.get("input_local_sqnr_db") is None else cell(l.get("input_local_sqnr_db")),
             "-" if l.get("input_clipped_fraction") is None else f"{l['input_clipped_fraction'] * 100:.3g}"]
            for l in layers]
    for r, l in zip(rows, layers):
        if l.get("feeds_output") is False:
            r[0] += " (does not feed the output)"
    out = tr.get("output") or {}
    if "sqnr_db" in out:  # the last row: the output the metrics read, the summary's output SQNR
        rows.append(["model output", "", cell(out["sqnr_db"]), "", "", "", ""])
    note = (f'<p class="note">On {escape(str(tr.get("data", "")))} ({what}), layers in execution order. Accumulated: '
            "the layer's output in the fully quantized model against the float model; local: only this layer's own "
            "quantization (weights and input quantizer), on the float model's input; \"float\": identical to the "
            "float model; model output: the output the metrics read (the output SQNR above).</p>")
    return note + chart + _table(["layer", "type", "accum dB", "local dB", "input accum dB", "input local dB",
                                  "input clipped %"], rows, left=2)


# -------------------------------------------------------------------- main
def render_report(facts: ReportFacts, sim, specs: dict, *, progress: Progress = null_progress,
                  cancel: Callable[[], bool] = lambda: False) -> str:
    progress(0, 4, "summary")
    res = facts.result
    rows = facts.rows
    parts = [f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>quantviz report: {escape(facts.name)}</title>"
             f"<style>{CSS}</style></head><body>",
             f"<h1>quantviz report: {escape(facts.name)}</h1>",
             f'<p class="note">Generated {time.strftime("%Y-%m-%d %H:%M")} from {escape(str(facts.reference))}.</p>',
             "<h2>Model</h2>",
             _table(None, [["source", escape(facts.kind)], ["parameters", f"{facts.num_params:,}"],
                               ["quantizable layers", str(len(rows))],
                               ["evaluation samples", str(facts.eval_samples)],
                               ["calibration samples", str(facts.calib_samples)],
                               *([["figures", escape(facts.data_note)]] if facts.data_note else []),
                               ["config", escape(res["label"])]])]
    fm, qm, size = res["float_metrics"], res["metrics"], res["size"]
    names = [n for n in ("accuracy", "top1_agreement", "sqnr_db", "cosine") if n in qm] + sorted(
        set(qm) - {"accuracy", "top1_agreement", "sqnr_db", "cosine"})
    def change(n):
        f, q = fm.get(n), qm.get(n)
        if f is None or q is None or n == "sqnr_db":
            return "-"
        return escape(fmt_drop(n, q - f))

    mrows = [[escape(metric_label(n)), _metric(n, fm.get(n)), _metric(n, qm.get(n)), change(n)] for n in names]
    fb, qb = size.get("float_bytes"), size.get("quantized_bytes")
    mrows.append(["size", _bytes(fb), _bytes(qb), f"-{(1 - qb / fb) * 100:.0f}%" if fb and qb is not None else "-"])
    mrows.append(["compression", "1.00x", f"{size.get('compression', 0):.2f}x", ""])
    fbits = f"{size.get('float_avg_bits', 32.0):.0f}"
    mrows.append(["bits per weight (with scales)", fbits, f"{size.get('avg_bits', 0):.2f}", ""])
    if size.get("element_bits") is not None:
        mrows.append(["element bits", fbits, f"{size['element_bits']:.2f}", ""])
    parts += ["<h2>Float vs quantized</h2>", _table(["metric", "float", "quantized", "change"], mrows)]
    unit, div = size_unit(max(fb or 0, qb or 0))
    charts = [svg.bars([f"size ({unit})"], {"float": [(fb or 0) / div], "quantized": [(qb or 0) / div]},
                       title="Model size", ylabel=unit, width=260)]
    pct = [n for n in PERCENT_METRICS if n in qm and n in fm]
    if pct:  # the change, not the values: 98.99% next to 98.93% shows nothing at this size
        charts.append(svg.change_bars([metric_label(n).replace(" (%)", "") for n in pct],
                                      [(qm[n] - fm[n]) * 100.0 for n in pct], title="Change against float",
                                      ylabel="percentage points", fmt=lambda v: f"{v:+.2f} pt"))
    parts.append('<div class="charts">' + "".join(charts) + "</div>")
    progress(2, 4, "config table")
    trows = [[escape(r["name"]), escape(r["type"]), f"{r['params']:,}", escape(weight_text(specs[r["name"]].weight)),
              escape(activation_text(specs[r["name"]].activation)) if r["act_bits"] else "float",
              _num(r["weight_sqnr_db"], 3), _num(r["act_sqnr_db"], 3), _bytes(r["size_bytes"])] for r in rows]
    parts += ["<h2>Per-layer config</h2>",
              '<p class="note">Weights and activations: the number format (INT<i>n</i> for an integer grid), its '
              'granularity or block size, the range method where it applies, and the PTQ algorithm if any.</p>',
              _table(["layer", "type", "params", "weights", "activations", "w SQNR dB", "a SQNR dB", "size"],
                     trows, left=2)]
    sens = _matrix_from(facts.sensitivity)
    if sens is not None:
        rws, cols, mat, label = sens
        parts += [f"<h2>Sensitivity ({escape(label)})</h2>",
                  '<p class="note">Each cell: how much worse the model gets with only that layer at that many '
                  'bits (darker = more sensitive).</p>',
                  svg.heatmap(rws, cols, mat, title="Sensitivity per layer and weight bits", value_label=label,
                              cell=52, row_h=22)]
    search = _points_from(facts.search)
    if search is not None:
        P, F, xl, yl, chosen = search
        parts += ["<h2>Mixed-precision search</h2>", _search_note(facts.search),
                  svg.scatter(P, front=F, chosen=chosen, title="Pareto front", xlabel=xl, ylabel=yl)]
    if facts.trace and facts.trace.get("layers"):
        parts += ["<h2>Where the error enters</h2>", _trace_section(facts.trace)]
    progress(3, 4, "histograms")
    top, ranked_by = most_sensitive(facts)
    if top:
        title = ("Most sensitive layers" if not ranked_by.startswith("ranked by weight SQNR")
                 else "Layers with the lowest weight SQNR")
        parts += [f"<h2>{title}</h2>",
                  f'<p class="note">{escape(ranked_by[0].upper() + ranked_by[1:])}. Each chart names what it draws: '
                  'the clip range (dashed lines; for per-channel weights the envelope of the channels\' ranges) '
                  'and the grid points (ticks on the axis, for grids of up to 64 levels).</p>',
                  _histograms(sim, specs, top)]
    parts.append("</body></html>\n")
    progress(4, 4, "done")
    return "\n".join(parts)


__all__ = ["render_report", "most_sensitive", "ReportFacts"]
