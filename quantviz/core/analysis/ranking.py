"""Comparing sensitivity results: rank agreement of proxies with the measured
e2e drop, and one score per layer for the layer table."""
from __future__ import annotations

import numpy as np


def spearman(a, b) -> float | None:
    """Spearman rank correlation (average ranks for ties); None when undefined."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if a.size < 2:
        return None

    def ranks(x):
        order = np.argsort(x, kind="mergesort")
        r = np.empty(x.size)
        r[order] = np.arange(x.size, dtype=float)
        for v in np.unique(x):  # average ranks over ties
            m = x == v
            if m.sum() > 1:
                r[m] = r[m].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    sa, sb = ra.std(), rb.std()
    if sa == 0 or sb == 0:
        return None
    return float(((ra - ra.mean()) * (rb - rb.mean())).mean() / (sa * sb))


# ------------------------------------------------ proxy vs measured
def predicted(result: dict, name: str, b: str, kind: str = "results") -> float | None:
    """A method's sensitivity for one cell, higher = more sensitive."""
    entry = next((e for e in result["layers"] if e["name"] == name), None)
    cell = (entry or {}).get(kind, {}).get(b)
    if cell is None:
        return None
    m = cell["metrics"]
    if result["method"] == "hessian":
        return m.get("hessian_score")
    if result["method"] == "local" or "drop" not in cell:
        return -m["sqnr_db"] if m.get("sqnr_db") is not None else None
    metric = result.get("metric")
    if result["method"] == "loo":
        return cell["drop"].get("sqnr_db", cell["drop"].get(metric))
    return -m["sqnr_db"] if m.get("sqnr_db") is not None else cell["drop"].get(metric)


def rank_agreement(e2e: dict, proxy: dict) -> dict:
    """Spearman correlation of a proxy's ranking of layers with the measured e2e drop."""
    out: dict = {"vs": "e2e", "per_bits": {}}
    metric = e2e.get("metric")
    names = [e["name"] for e in e2e["layers"]]
    for b in proxy["bits"]:
        key = str(b)
        if str(b) not in e2e["layers"][0]["results"]:
            continue
        pred = [predicted(proxy, n, key) for n in names]
        fid = [predicted(e2e, n, key) for n in names]
        row = {"sqnr_db": spearman([np.nan if v is None else v for v in pred], [np.nan if v is None else v for v in fid])}
        if metric:
            dm = [next(e for e in e2e["layers"] if e["name"] == n)["results"][key]["drop"].get(metric, np.nan) for n in names]
            row[metric] = spearman([np.nan if v is None else v for v in pred], dm)
        out["per_bits"][key] = row
    mean = {}
    for k in ("sqnr_db", metric):
        vals = [r.get(k) for r in out["per_bits"].values() if r.get(k) is not None]
        if k and vals:
            mean[k] = float(np.mean(vals))
    out["mean"] = mean
    return out


def layer_scores(result: dict) -> dict[str, float]:
    """One number per layer for the layer table: the drop at the lowest tested bits."""
    b = str(result["bits"][0]) if result["bits"] else None  # sorted: the smallest bit-width / candidate
    metric = result.get("metric")
    scores = {}
    for e in result["layers"]:
        cell = e["results"].get(b) if b else None
        if cell is None:
            continue
        d = cell.get("drop", {})
        if metric in d:
            scores[e["name"]] = float(d[metric])
        elif "sqnr_db" in d:
            scores[e["name"]] = float(d["sqnr_db"])
        elif cell["metrics"].get("sqnr_db") is not None:
            scores[e["name"]] = -float(cell["metrics"]["sqnr_db"])  # noise-to-signal ratio in dB
    return scores


__all__ = ["spearman", "predicted", "rank_agreement", "layer_scores"]
