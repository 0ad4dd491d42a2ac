"""Run menu jobs: sensitivity sweeps, the mixed-precision search, and measuring
the real quantized models.

All run through the window's job runner (progress bar, Cancel). The session
stores each result and emits ``analysis_changed``; the views that show them
follow that event, so this module only starts jobs and reports how they ended.
"""
from __future__ import annotations

from PySide6.QtGui import QAction, QActionGroup

from ..core.fmt import METRIC_LABELS, fmt_metric, metric_label
from . import scale_menu

METHOD_LABELS = {
    "e2e": "End to end (only this layer quantized)",
    "loo": "Leave one out (all but this layer quantized)",
    "local": "Local proxy (the layer's own output SQNR)",
    "hessian": "Hessian proxy (HAWQ trace x perturbation)",
}


def refresh_analysis_views(win) -> None:
    s = win.session
    if s is None:
        return
    for w in (win.sensitivity, win.pareto, win.config_diff):
        if w is not None:
            w.set_session(s)
    win.table.model.refresh_column("sensitivity")


def run_sensitivity(win, method: str) -> None:
    s = win.session
    if s is None:
        return

    scale_menu.apply(win, s)

    def job(progress, cancel):
        return s.run_sensitivity(method, progress=progress, cancel=cancel)

    def done(_result):
        if s is win.session:
            if "sensitivity" in win.docks:
                win.docks["sensitivity"].raise_()
            win.show_message(f"Sensitivity ({method}) computed for {len(s.layers)} layers")

    def failed(message, details, exc):
        win.show_error(f"Sensitivity failed: {message}", details)

    win.runner.submit("sensitivity", job, label=f"Sensitivity ({method})", on_done=done, on_error=failed)


def ask_and_search(win) -> None:
    """Open the search dialog (budget, candidate bits, start config); Search runs the job."""
    from .search_dialog import SearchDialog

    s = win.session
    if s is None or s.reference is None:
        return
    dlg = SearchDialog(s, win)

    def accepted():
        req = dlg.request()
        if s is not win.session:
            return
        if req["start"]:
            s.apply_preset(req["start"])  # one undoable edit, as the dialog says
        s.set_analysis_metric(req["metric"])  # the session keeps it: the next sweep ranks by it too
        run_search(win, bits=req["bits"], sensitivity=req["sensitivity"], measure=req["measure"], **req["budget"])

    dlg.accepted.connect(accepted)
    dlg.open()
    win._search_dialog = dlg


def run_search(win, **budget) -> None:
    s = win.session
    if s is None:
        return

    scale_menu.apply(win, s)

    def job(progress, cancel):
        return s.run_search(progress=progress, cancel=cancel, **budget)

    def done(result):
        if s is not win.session:
            return
        if "pareto" in win.docks:
            win.docks["pareto"].raise_()
        chosen = result.get("chosen") or {}
        m = chosen.get("metrics", {})
        metric = result.get("metric") or s.analysis_metric
        val = f", {metric_label(metric)} {fmt_metric(metric, m[metric])}" if metric in m else ""
        n, full = result.get("candidates", 0), result.get("full_evaluations", result.get("candidates", 0))
        win.show_message(f"Search: {chosen.get('avg_bits', 0):.2f} bits/weight{val} ({full} of {n} candidates "
                         "measured end to end); click a Pareto point to use it")

    def failed(message, details, exc):
        win.show_error(f"Search failed: {message}", details)

    win.runner.submit("search", job, label="Searching mixed precision", on_done=done, on_error=failed)


def add_metric_menu(win, menu, acts: dict) -> None:
    """Run › Rank by metric: what sensitivity and search rank by (the session keeps the choice)."""
    sub = menu.addMenu("Rank by &metric")
    sub.setToolTipsVisible(True)
    win.metric_menu = sub
    sub.menuAction().setStatusTip("The metric sensitivity sweeps and the search rank by (quantviz --metric)")
    sub.aboutToShow.connect(lambda: fill_metric_menu(win, sub))


def fill_metric_menu(win, sub) -> None:
    from ..core.errors import QuantvizError
    from ..core.sim.evaluate import primary_metric
    from .views.sensitivity import metric_choices

    sub.clear()
    s = win.session
    ref = getattr(s, "reference", None) if s is not None else None
    if ref is None or not ref.metrics:
        sub.addAction("No model open").setEnabled(False)
        return
    group = QActionGroup(sub)
    primary = primary_metric(ref.metrics)
    for k in metric_choices(ref.metrics):
        a = QAction(METRIC_LABELS.get(k, k) + (" (primary)" if k == primary else ""), sub)
        a.setCheckable(True)
        a.setChecked(k == s.analysis_metric)
        a.setData(k)
        group.addAction(a)
        sub.addAction(a)

        def choose(_c=False, k=k):
            try:
                s.set_analysis_metric(k)
                win.show_message(f"Sensitivity and search now rank by {METRIC_LABELS.get(k, k)}")
            except QuantvizError as exc:
                win.show_error(str(exc), "")
        a.triggered.connect(choose)


def run_benchmark(win) -> None:
    """Build and time the real quantized models of the current config (a job; the report opens when done)."""
    from ..session.deploy import BACKENDS

    s = win.session
    if s is None:
        return
    backends = tuple(b for b in BACKENDS if _available(b))

    def job(progress, cancel):
        return s.run_benchmark(backends=backends, progress=progress, cancel=cancel)

    def done(rep):
        if s is not win.session:
            return
        from .views.deploy import DeployReport

        dlg = getattr(win, "deploy_report", None)
        if dlg is None:
            dlg = win.deploy_report = DeployReport(win)
        dlg.set_report(rep)
        dlg.show()
        dlg.raise_()
        win.show_message("Real quantized models measured")

    def failed(message, details, exc):
        win.show_error(f"Measuring the real models failed: {message}", details)

    win.runner.submit("benchmark", job, label="Measuring real quantized models", on_done=done, on_error=failed)


def _available(backend: str) -> bool:
    import importlib.util

    module = {"torchao": "torchao", "pt2e": "torchao", "onnxruntime": "onnxruntime"}[backend]
    return importlib.util.find_spec(module) is not None
