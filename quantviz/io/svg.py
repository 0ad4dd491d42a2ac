"""Small inline-SVG charts in plain Python (no Qt, no matplotlib).

Used by the HTML report: a histogram with the quantization grid and clip
range drawn over it, grouped bars, a heatmap and a scatter plot with a
highlighted front. Every function returns one ``<svg>`` element as a string;
all text is XML-escaped.
"""
from __future__ import annotations

import math
from html import escape
from typing import Sequence

import numpy as np

FONT = 'font-family="sans-serif" font-size="11"'
PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")


def _fmt(v: float) -> str:
    if v == 0 or not math.isfinite(v):
        return "0" if v == 0 else str(v)
    a = abs(v)
    if a >= 1e4 or a < 1e-3:
        return f"{v:.2e}"
    return f"{v:.3g}"


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= n:
            step *= m
            break
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


class _Frame:
    """Maps data coordinates into a plot area with margins."""

    def __init__(self, w, h, x0, x1, y0, y1, left=52, right=12, top=24, bottom=36):
        self.w, self.h = w, h
        self.l, self.r, self.t, self.b = left, right, top, bottom
        self.x0, self.x1 = x0, (x1 if x1 > x0 else x0 + 1)
        self.y0, self.y1 = y0, (y1 if y1 > y0 else y0 + 1)

    def x(self, v):
        return self.l + (v - self.x0) / (self.x1 - self.x0) * (self.w - self.l - self.r)

    def y(self, v):
        return self.h - self.b - (v - self.y0) / (self.y1 - self.y0) * (self.h - self.t - self.b)

    def axes(self, title: str, xlabel: str, ylabel: str, yticks: bool = True, xticks: bool = True) -> list[str]:
        out = [f'<rect x="{self.l}" y="{self.t}" width="{self.w - self.l - self.r}" height="{self.h - self.t - self.b}" '
               f'fill="none" stroke="#888"/>',
               f'<text x="{self.w / 2:.1f}" y="15" text-anchor="middle" {FONT} font-weight="bold">{escape(title)}</text>',
               f'<text x="{self.w / 2:.1f}" y="{self.h - 4}" text-anchor="middle" {FONT}>{escape(xlabel)}</text>',
               f'<text x="12" y="{self.h / 2:.1f}" text-anchor="middle" {FONT} transform="rotate(-90 12 {self.h / 2:.1f})">{escape(ylabel)}</text>']
        if xticks:
            for t in _ticks(self.x0, self.x1):
                out.append(f'<text x="{self.x(t):.1f}" y="{self.h - self.b + 13}" text-anchor="middle" {FONT}>{_fmt(t)}</text>')
        if yticks:
            for t in _ticks(self.y0, self.y1):
                out.append(f'<text x="{self.l - 4}" y="{self.y(t) + 4:.1f}" text-anchor="end" {FONT}>{_fmt(t)}</text>')
        return out


def _svg(w: int, h: int, parts: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}">'
            f'<rect width="{w}" height="{h}" fill="white"/>' + "".join(parts) + "</svg>")


def histogram(edges: Sequence[float], counts: Sequence[float], *, title: str = "", xlabel: str = "value",
              clip: tuple[float, float] | None = None, grid: Sequence[float] | None = None,
              log: bool = True, width: int = 420, height: int = 220, note: str = "") -> str:
    """A step histogram; ``clip`` draws the clip range (dashed red lines), ``grid`` the grid
    points (dark ticks under the axis, when 64 or fewer). A legend inside the chart names only
    what is drawn; ``note`` (e.g. why no clip range is drawn) goes in its place otherwise."""
    edges = np.asarray(edges, dtype=float)
    counts = np.asarray(counts, dtype=float)
    vals = np.log10(counts + 1) if log else counts
    lo, hi = float(edges[0]), float(edges[-1])
    if clip is not None:
        lo, hi = min(lo, clip[0]), max(hi, clip[1])
    pad = (hi - lo) * 0.04 or 1.0  # clip lines never sit on the frame
    f = _Frame(width, height, lo - pad, hi + pad, 0.0, (float(vals.max()) if vals.size and vals.max() > 0 else 1.0) * 1.3)
    parts = f.axes(title, xlabel, "log10(count+1)" if log else "count", yticks=True)
    pts = [f"{f.x(edges[0]):.1f},{f.y(0):.1f}"]
    for i, v in enumerate(vals):
        pts.append(f"{f.x(edges[i]):.1f},{f.y(v):.1f}")
        pts.append(f"{f.x(edges[i + 1]):.1f},{f.y(v):.1f}")
    pts.append(f"{f.x(edges[-1]):.1f},{f.y(0):.1f}")
    parts.append(f'<polygon points="{" ".join(pts)}" fill="{PALETTE[0]}" fill-opacity="0.45" stroke="{PALETTE[0]}"/>')
    legend = []
    base = f.h - f.b
    if grid is not None and 0 < len(grid) <= 64:
        for g in grid:
            parts.append(f'<line x1="{f.x(g):.1f}" y1="{base - 10}" x2="{f.x(g):.1f}" y2="{base}" stroke="#333" '
                         'stroke-width="1.5"/>')
        legend.append(("#333", f"grid points ({len(grid)})", ""))
    if clip is not None:
        for c in clip:
            parts.append(f'<line x1="{f.x(c):.1f}" y1="{f.t}" x2="{f.x(c):.1f}" y2="{base}" stroke="{PALETTE[3]}" '
                         'stroke-width="2" stroke-dasharray="5,3"/>')
        legend.append((PALETTE[3], "clip range", ' stroke-dasharray="5,3"'))
    x = f.l + 6
    for color, text, dash in legend:
        parts.append(f'<line x1="{x}" y1="{f.t + 9}" x2="{x + 16}" y2="{f.t + 9}" stroke="{color}" stroke-width="2"{dash}/>'
                     f'<text x="{x + 20}" y="{f.t + 13}" {FONT}>{escape(text)}</text>')
        x += 30 + 7 * len(text)
    if note:  # its own line under the legend (or in its place)
        parts.append(f'<text x="{f.l + 6}" y="{f.t + (27 if legend else 13)}" {FONT} fill="#666">{escape(note)}</text>')
    return _svg(width, height, parts)


def change_bars(labels: Sequence[str], values: Sequence[float], *, title: str = "", ylabel: str = "",
                fmt=None, width: int = 420, height: int = 220) -> str:
    """One bar per label from a zero line (negative bars point down): a change against a reference."""
    vals = [float(v) for v in values]
    lo, hi = min(vals + [0.0]), max(vals + [0.0])
    span = (hi - lo) or 1.0
    f = _Frame(width, height, 0, len(labels), lo - 0.15 * span, hi + 0.15 * span, top=28, bottom=40)
    parts = f.axes(title, "", ylabel, xticks=False)
    parts.append(f'<line x1="{f.l}" y1="{f.y(0):.1f}" x2="{f.w - f.r}" y2="{f.y(0):.1f}" stroke="#333"/>')
    slot = f.x(1) - f.x(0)
    for i, (lab, v) in enumerate(zip(labels, vals)):
        x0 = f.x(i) + slot * 0.25
        y0, y1 = sorted((f.y(0), f.y(v)))
        color = PALETTE[3] if v < 0 else PALETTE[2]
        text = fmt(v) if fmt else _fmt(v)
        parts.append(f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{slot * 0.5:.1f}" height="{max(y1 - y0, 1.0):.1f}" '
                     f'fill="{color}"><title>{escape(lab)}: {escape(text)}</title></rect>')
        ty = f.y(v) - 4 if v >= 0 else f.y(v) + 13
        parts.append(f'<text x="{x0 + slot * 0.25:.1f}" y="{ty:.1f}" text-anchor="middle" {FONT}>{escape(text)}</text>')
        parts.append(f'<text x="{x0 + slot * 0.25:.1f}" y="{f.h - f.b + 13}" text-anchor="middle" {FONT}>{escape(lab)}</text>')
    return _svg(width, height, parts)


def bars(labels: Sequence[str], series: dict[str, Sequence[float]], *, title: str = "", ylabel: str = "",
         width: int = 420, height: int = 220) -> str:
    """Grouped vertical bars: one group per label, one bar per series."""
    names = list(series)
    top = max([float(v) for s in series.values() for v in s] + [0.0]) or 1.0
    f = _Frame(width, height, 0, len(labels), 0.0, top * 1.1, top=40, bottom=40)
    parts = f.axes(title, "", ylabel, xticks=False)
    gw = (f.x(1) - f.x(0)) * 0.8
    bw = gw / max(len(names), 1)
    for i, lab in enumerate(labels):
        x0 = f.x(i) + (f.x(1) - f.x(0)) * 0.1
        for j, n in enumerate(names):
            v = float(series[n][i])
            y = f.y(v)
            parts.append(f'<rect x="{x0 + j * bw:.1f}" y="{y:.1f}" width="{bw * 0.95:.1f}" height="{f.y(0) - y:.1f}" '
                         f'fill="{PALETTE[j % len(PALETTE)]}"><title>{escape(n)}: {_fmt(v)}</title></rect>')
            parts.append(f'<text x="{x0 + (j + 0.5) * bw:.1f}" y="{y - 3:.1f}" text-anchor="middle" {FONT}>{_fmt(v)}</text>')
        parts.append(f'<text x="{x0 + gw / 2:.1f}" y="{f.h - f.b + 13}" text-anchor="middle" {FONT}>{escape(lab)}</text>')
    for j, n in enumerate(names):
        parts.append(f'<rect x="{f.l + 6 + j * 90}" y="{f.t - 16}" width="10" height="10" fill="{PALETTE[j % len(PALETTE)]}"/>'
                     f'<text x="{f.l + 20 + j * 90}" y="{f.t - 7}" {FONT}>{escape(n)}</text>')
    return _svg(width, height, parts)


def _color(t: float) -> str:
    """White (0) to dark red (1)."""
    t = min(max(t, 0.0), 1.0)
    r, g, b = 255, int(255 - 200 * t), int(255 - 220 * t)
    return f"rgb({r},{g},{b})"


def heatmap(rows: Sequence[str], cols: Sequence[str], values, *, title: str = "", value_label: str = "",
            cell: int = 34, row_h: int = 16) -> str:
    """A rows x cols grid coloured by value (NaN cells grey), values printed in cells."""
    v = np.asarray(values, dtype=float)
    finite = v[np.isfinite(v)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    label_w = min(220, 8 + 6 * max((len(r) for r in rows), default=4))
    width = max(label_w + cell * len(cols) + 20, 8 * len(title) + 20, label_w + 7 * len(value_label) + 150)
    height = 40 + row_h * len(rows) + 24
    parts = [f'<text x="{width / 2:.1f}" y="15" text-anchor="middle" {FONT} font-weight="bold">{escape(title)}</text>']
    for j, c in enumerate(cols):
        parts.append(f'<text x="{label_w + cell * (j + 0.5):.1f}" y="34" text-anchor="middle" {FONT}>{escape(str(c))}</text>')
    for i, r in enumerate(rows):
        y = 40 + row_h * i
        parts.append(f'<text x="{label_w - 4}" y="{y + row_h - 4}" text-anchor="end" {FONT}>{escape(str(r))}</text>')
        for j in range(len(cols)):
            x = v[i, j]
            fill = _color((x - lo) / (hi - lo) if hi > lo else 0.0) if math.isfinite(x) else "#ddd"
            parts.append(f'<rect x="{label_w + cell * j}" y="{y}" width="{cell - 1}" height="{row_h - 1}" fill="{fill}">'
                         f'<title>{escape(str(r))} / {escape(str(cols[j]))}: {_fmt(x)}</title></rect>')
            if math.isfinite(x):
                parts.append(f'<text x="{label_w + cell * (j + 0.5):.1f}" y="{y + row_h - 4}" text-anchor="middle" '
                             f'font-family="sans-serif" font-size="9">{_fmt(x)}</text>')
    parts.append(f'<text x="{label_w}" y="{height - 6}" {FONT}>{escape(value_label)} (darker = larger)</text>')
    return _svg(width, height, parts)


def scatter(points: Sequence[tuple[float, float]], *, front: Sequence[tuple[float, float]] = (),
            chosen: tuple[float, float] | None = None, title: str = "", xlabel: str = "", ylabel: str = "",
            width: int = 420, height: int = 260) -> str:
    """Points, a highlighted front (joined by a line) and an optional chosen point."""
    allp = list(points) + list(front) + ([chosen] if chosen else [])
    xs = [p[0] for p in allp] or [0.0, 1.0]
    ys = [p[1] for p in allp] or [0.0, 1.0]
    padx = (max(xs) - min(xs)) * 0.05 or 1.0
    pady = (max(ys) - min(ys)) * 0.05 or 0.01
    f = _Frame(width, height, min(xs) - padx, max(xs) + padx, min(ys) - pady, max(ys) + pady)
    parts = f.axes(title, xlabel, ylabel)
    for x, y in points:
        parts.append(f'<circle cx="{f.x(x):.1f}" cy="{f.y(y):.1f}" r="2.5" fill="#999"/>')
    if front:
        fr = sorted(front)
        pts = " ".join(f"{f.x(x):.1f},{f.y(y):.1f}" for x, y in fr)
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{PALETTE[1]}" stroke-width="1.5"/>')
        for x, y in fr:
            parts.append(f'<circle cx="{f.x(x):.1f}" cy="{f.y(y):.1f}" r="3.5" fill="{PALETTE[1]}"/>')
    if chosen:
        parts.append(f'<circle cx="{f.x(chosen[0]):.1f}" cy="{f.y(chosen[1]):.1f}" r="6" fill="none" stroke="{PALETTE[3]}" stroke-width="2"/>')
    return _svg(width, height, parts)


def depth_curves(names: Sequence[str], series: dict[str, Sequence[float | None]], *, title: str = "",
                 ylabel: str = "dB", entry: int | None = None, drop: tuple[int, int, float] | None = None,
                 width: int = 760, height: int = 300) -> str:
    """Curves over layers in order (x labelled by name). ``inf`` sits on a dashed "float" line
    at the top (hollow markers), ``None`` is left out. ``entry`` marks a layer with a dotted
    line; ``drop = (i, j, dB)`` draws a thick segment of the first series from i to j."""
    finite = [float(v) for vs in series.values() for v in vs if v is not None and math.isfinite(v)]
    top, low = (max(finite), min(finite)) if finite else (40.0, 0.0)
    ceil = top + max(6.0, 0.12 * (top - low))
    label_h = min(110, 4 * max((len(n) for n in names), default=4) + 12)  # names are rotated by 40 degrees
    n = max(len(names), 1)
    f = _Frame(width, height + label_h, -0.5, n - 0.5, min(low, 0.0) - 2, ceil + 4, top=46, bottom=label_h + 22)
    parts = f.axes(title, "layers in execution order", ylabel, xticks=False)
    for i, name in enumerate(names):
        x, y = f.x(i), f.h - f.b + 10
        parts.append(f'<text x="{x:.1f}" y="{y}" text-anchor="end" {FONT} transform="rotate(-40 {x:.1f} {y})">'
                     f'{escape(str(name))}</text>')
    parts.append(f'<line x1="{f.l}" y1="{f.y(ceil):.1f}" x2="{f.w - f.r}" y2="{f.y(ceil):.1f}" stroke="#999" '
                 f'stroke-dasharray="4 3"/><text x="{f.l + 4}" y="{f.y(ceil) - 4:.1f}" {FONT} fill="#777">float (no error)</text>')
    if entry is not None:
        parts.append(f'<line x1="{f.x(entry):.1f}" y1="{f.t}" x2="{f.x(entry):.1f}" y2="{f.h - f.b}" stroke="{PALETTE[3]}" '
                     f'stroke-dasharray="2 3"/><text x="{f.x(entry) + 4:.1f}" y="{f.h - f.b - 6}" {FONT} '
                     f'fill="{PALETTE[3]}">error enters</text>')
    first = next(iter(series.values()), [])
    if drop is not None and first:
        i, j, d = drop
        parts.append(f'<line x1="{f.x(i):.1f}" y1="{f.y(first[i]):.1f}" x2="{f.x(j):.1f}" y2="{f.y(first[j]):.1f}" '
                     f'stroke="{PALETTE[3]}" stroke-width="6" stroke-opacity="0.6"/>'
                     f'<text x="{f.x(j) + 6:.1f}" y="{f.y(first[j]) + 4:.1f}" {FONT} fill="{PALETTE[3]}">'
                     f'biggest drop -{d:.1f} dB</text>')
    legend_x = f.l + 8
    for k, (label, vals) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        pts = [(i, ceil if math.isinf(v) else float(v), math.isinf(v)) for i, v in enumerate(vals) if v is not None]
        if len(pts) > 1:
            poly = " ".join(f"{f.x(i):.1f},{f.y(y):.1f}" for i, y, _ in pts)
            parts.append(f'<polyline points="{poly}" fill="none" stroke="{color}" stroke-width="2"/>')
        for i, y, exact in pts:
            value = "float (exact)" if exact else f"{y:.1f} dB"
            parts.append(f'<circle cx="{f.x(i):.1f}" cy="{f.y(y):.1f}" r="3.5" fill="{"white" if exact else color}" '
                         f'stroke="{color}"><title>{escape(str(names[i]))}, {escape(label)}: {value}</title></circle>')
        parts.append(f'<rect x="{legend_x}" y="{f.t - 18}" width="10" height="10" fill="{color}"/>'
                     f'<text x="{legend_x + 14}" y="{f.t - 9}" {FONT}>{escape(label)}</text>')
        legend_x += 14 + 7 * len(label) + 16
    for t in _ticks(f.y0, top):
        parts.append(f'<text x="{f.l - 4}" y="{f.y(t) + 4:.1f}" text-anchor="end" {FONT}>{_fmt(t)}</text>')
    return _svg(width, int(f.h), parts)


__all__ = ["histogram", "bars", "change_bars", "heatmap", "scatter", "depth_curves"]
