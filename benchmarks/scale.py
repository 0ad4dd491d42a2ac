"""Scale: a synthetic model with 2,000 quantizable layers.

Measures, in one run, what a user waits for when the model is big: the layer
inventory (QuantSim build), resolving the config for every layer, a bulk edit
of all layers (with its undo / redo), selecting layers by type or pattern, a
per-layer table row, and, when the GUI's layer table model is importable, the
Qt model's rowCount / data for every row / sort / filter (offscreen). Times are
also given as ratios to one float forward pass of the same model on one batch
(the machine-independent figure). Memory: peak RSS, and the RSS growth over
20 bulk edits (undo history) to show it stays bounded.

Prints one JSON object as the last line.
    python benchmarks/scale.py [--layers 2000] [--out FILE]
"""
from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import quantviz  # noqa: E402,F401  (first: it makes OpenMP wait passively before torch loads it)
import torch  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks._meta import add_out_argument, finish, meta  # noqa: E402
from quantviz.core.model.data import Dataset  # noqa: E402
from quantviz.core.sources.base import ModelBundle  # noqa: E402
from quantviz.io.config import preset  # noqa: E402
from quantviz.session import Session  # noqa: E402

WIDTH = 16


def build_model(n_layers: int) -> nn.Module:
    """Blocks of Linear -> ReLU, every fourth a Conv1d, so types are mixed."""
    torch.manual_seed(0)
    blocks = []
    for i in range(n_layers):
        if i % 4 == 3:
            blocks.append(_ConvBlock())
        else:
            blocks.append(nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.ReLU()))
    return nn.Sequential(*blocks)


class _ConvBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x.unsqueeze(1)).squeeze(1))


def rss_mb() -> float:
    """Current resident set size (Linux /proc), in MB."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, repeat: int = 1) -> float:
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def qt_table(session) -> dict | None:
    try:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        from PySide6.QtCore import Qt
        from PySide6.QtWidgets import QApplication

        from quantviz.gui.views.layer_model import COL, LayerFilterProxy, LayerTableModel
    except ImportError:
        return None
    app = QApplication.instance() or QApplication([])
    model = LayerTableModel()
    proxy = LayerFilterProxy()
    proxy.setSourceModel(model)
    out = {"set_session_s": timed(lambda: model.set_session(session))}
    rows, cols = model.rowCount(), model.columnCount()
    cheap = [c for k, c in COL.items() if k not in ("weight_sqnr_db", "act_sqnr_db")]

    def all_cells():
        for r in range(rows):
            for c in cheap:
                model.data(model.index(r, c), Qt.DisplayRole)

    out["data_all_rows_s"] = timed(all_cells)
    out["cells"] = rows * len(cheap)
    out["sort_by_params_s"] = timed(lambda: proxy.sort(COL["params"], Qt.DescendingOrder))
    out["filter_text_s"] = timed(lambda: proxy.set_text("7"))
    out["filter_rows"] = proxy.rowCount()
    proxy.set_text("")
    out["filter_type_s"] = timed(lambda: proxy.set_type("Conv1d"))
    out["filter_type_rows"] = proxy.rowCount()
    proxy.set_type("")
    changed = {n: session.specs[n] for n in session.layer_names}  # what an edit of every layer hands the table
    out["edit_signal_all_s"] = timed(lambda: model.specs_changed(changed))
    app.processEvents()
    del cols
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    add_out_argument(ap)
    args = ap.parse_args()
    started = meta()
    torch.set_num_threads(args.threads)
    rss0 = rss_mb()
    model = build_model(args.layers)
    x = torch.randn(64, WIDTH)
    data = Dataset(x, name="random")
    with torch.no_grad():
        model(x)
        forward_s = timed(lambda: model(x), repeat=3)

    bundle = ModelBundle(model=model, name="scale", kind="recipe", reference="scale")
    res: dict = {"layers": args.layers, "params": sum(p.numel() for p in model.parameters()),
                 "float_forward_s": forward_s}
    t0 = time.perf_counter()
    s = Session(bundle, eval_data=data, calib_data=data, config=preset("W8"))
    res["session_build_s"] = time.perf_counter() - t0  # QuantSim: copies, BN folding, inventory
    assert len(s.layers) == args.layers, len(s.layers)
    res["prepare_s"] = timed(lambda: s.prepare())
    res["resolve_all_s"] = timed(lambda: s.specs)
    names = s.layer_names
    res["select_by_type_s"] = timed(lambda: s.layers_of_type("Conv1d"))
    res["select_by_pattern_s"] = timed(lambda: s.layers_matching(r"^1\d\d\."))
    res["bulk_edit_all_s"] = timed(lambda: s.edit_layers(names, {"weight": {"bits": 4}}))
    res["undo_s"] = timed(s.undo)
    res["redo_s"] = timed(s.redo)
    res["layer_row_s"] = timed(lambda: s.layer_row(names[len(names) // 2]), repeat=5)
    res["check_all_layers_s"] = timed(lambda: s.check(record=False))

    gc.collect()
    rss_before = rss_mb()
    for i in range(20):
        s.edit_layers(names, {"weight": {"bits": 2 + i % 7}})
    gc.collect()
    res["rss_growth_20_bulk_edits_mb"] = rss_mb() - rss_before
    res["qt_table"] = qt_table(s)
    res["ratios_to_forward"] = {k[:-2]: v / forward_s for k, v in res.items()
                                if k.endswith("_s") and k != "float_forward_s" and isinstance(v, float)}
    if res["qt_table"]:
        res["ratios_to_forward"].update({f"qt_{k[:-2]}": v / forward_s for k, v in res["qt_table"].items()
                                         if k.endswith("_s")})
    res["rss_start_mb"] = rss0
    res["peak_rss_mb"] = peak_rss_mb()
    finish(res, args.out, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
