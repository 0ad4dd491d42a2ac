"""The main window's menus, shortcuts and recent-files list."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QAction, QKeySequence

from . import dialogs

MAX_RECENT = 8


def _action(win, text: str, slot, shortcut=None, tip: str = "") -> QAction:
    a = QAction(text, win)
    if shortcut is not None:
        a.setShortcuts(shortcut if isinstance(shortcut, list) else [QKeySequence(shortcut)])
    if tip:
        a.setToolTip(tip)
        a.setStatusTip(tip)
    a.triggered.connect(lambda _checked=False: slot())
    return a


def build_menus(win) -> dict[str, QAction]:
    """The menu bar; returns the actions by key (also added to the window, so shortcuts work anywhere)."""
    mb = win.menuBar()
    acts: dict[str, QAction] = {}
    for build in (_file_menu, _edit_menu, _view_menu, _run_menu, _help_menu):
        build(win, mb, acts)
    for a in acts.values():
        win.addAction(a)  # shortcuts work while any panel has focus
    win._default_state = win.saveState(1)
    update_undo_actions(win, acts)
    return acts


def _add(menu, acts: dict, key: str, action: QAction) -> QAction:
    acts[key] = action
    menu.addAction(action)
    return action


def _file_menu(win, mb, acts: dict) -> None:
    from ..io.export import FORMATS

    f = mb.addMenu("&File")
    _add(f, acts, "open", _action(win, "&Open model…", lambda: _open_model(win), QKeySequence.Open,
                                  "Open a recipe .py, TorchScript / pickled .pt, torch.export .pt2, an ONNX model or a quantviz session"))
    _add(f, acts, "open_folder", _action(win, "Open &folder…", lambda: _open_folder(win), None,
                                         "Open a Hugging Face model folder (save_pretrained output)"))
    _add(f, acts, "open_demo", _action(win, "Open &demo", lambda: win.confirm_unsaved("open the demo", lambda: win.open_model("demo")), None,
                                       "Open the bundled digits CNN with its data"))
    _add(f, acts, "data", _action(win, "&Data…", lambda: win.ask_data(), None,
                                  "Choose the evaluation data, calibration data and sequence length of the open "
                                  "model (it is reopened with them; the config is kept)"))
    win.recent_menu = f.addMenu("Open &recent")
    win.recent_menu.aboutToShow.connect(lambda: _fill_recent(win))
    f.addSeparator()
    _add(f, acts, "save", _action(win, "&Save session", lambda: _save(win, False), QKeySequence.Save,
                                  "Save the model reference, config, results and sensitivity as one .qvs file"))
    _add(f, acts, "save_as", _action(win, "Save session &as…", lambda: _save(win, True), QKeySequence.SaveAs))
    f.addSeparator()
    _add(f, acts, "import_config", _action(win, "&Import config…", lambda: _import_config(win), None,
                                           "Apply a config to the open model (undoable): a quantviz config, a JSON "
                                           "export, a session file or AIMET encodings"))
    _add(f, acts, "export_config", _action(win, "&Export config…", lambda: _export_config(win), "Ctrl+E",
                                           "Write the current per-layer config as quantviz config JSON"))
    from .help import EXPORT_HELP

    ex = f.addMenu("Export &as")
    ex.setToolTipsVisible(True)
    entries = [e for fmt in FORMATS for e in ([fmt, "onnx:tensorrt"] if fmt == "onnx" else [fmt])]
    for entry in entries:  # "onnx:tensorrt": format onnx, target tensorrt
        title, tip = EXPORT_HELP.get(entry, (entry, ""))
        fmt, _, target = entry.partition(":")
        key = f"export_{entry.replace(':', '_')}"
        _add(ex, acts, key, _action(win, f"{title}…", lambda fmt=fmt, target=target or "ort": _export_as(win, fmt, target),
                                    None, tip))
        acts[key].setData(entry)
    f.addSeparator()
    _add(f, acts, "quit", _action(win, "&Quit", win.close, QKeySequence.Quit))


def _edit_menu(win, mb, acts: dict) -> None:
    e = mb.addMenu("&Edit")
    _add(e, acts, "undo", _action(win, "&Undo", win.undo, [QKeySequence("Ctrl+Z")]))
    _add(e, acts, "redo", _action(win, "&Redo", win.redo, [QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")]))
    e.addSeparator()
    bulk = e.addMenu("Edit &selection")  # the table's "Edit selection" button, same entries
    bulk.aboutToShow.connect(lambda: win.table.fill_edit_menu(bulk))
    _add(e, acts, "filter", _action(win, "&Find layer", lambda: win.table.filter_edit.setFocus(), QKeySequence.Find,
                                    "Filter the layer table by name"))


def _view_menu(win, mb, acts: dict) -> None:
    v = mb.addMenu("&View")
    for dock in win.docks.values():
        v.addAction(dock.toggleViewAction())
    v.addSeparator()
    _add(v, acts, "reset_layout", _action(win, "Reset &layout", lambda: _reset_layout(win), None,
                                          "Put every panel back where it was at first start"))


def _run_menu(win, mb, acts: dict) -> None:
    from . import analysis, scale_menu
    from .views.qat import ask_and_start as ask_qat

    r = mb.addMenu("&Run")
    _add(r, acts, "recheck", _action(win, "&Re-check now", lambda: win.request_check(immediately=True), "F5",
                                     "Evaluate the current config against the float model"))
    _add(r, acts, "cancel", _action(win, "&Cancel job", win.jobs.cancel_current, "Ctrl+.", "Stop the running job"))
    r.addSeparator()
    for method, text in analysis.METHOD_LABELS.items():
        _add(r, acts, f"sensitivity_{method}",
             _action(win, f"Sensitivity: {text}", lambda _=False, m=method: analysis.run_sensitivity(win, m), None,
                     "Measure every layer at 2, 3, 4, 6 and 8 bits; results fill the Sensitivity panel and the "
                     "table's sensitivity column"))
    _add(r, acts, "search", _action(win, "&Search mixed precision...", lambda: analysis.ask_and_search(win), None,
                                    "Choose a bit-width per layer for a budget (average bits, size or largest drop) and trace the "
                                    "size/accuracy Pareto front"))
    _add(r, acts, "trace", _action(win, "&Trace error through layers", lambda: _trace(win), "Ctrl+T",
                                   "Where the error enters: accumulated vs local SQNR of every layer in execution "
                                   "order, in the Trace panel (it then follows every re-check)"))
    _add(r, acts, "qat", _action(win, "&Quantization-aware training...", lambda: ask_qat(win), None,
                                 "Fine-tune the current config with fake quantization and watch the quantizers "
                                 "learn in the QAT panel (undoable)"))
    analysis.add_metric_menu(win, r, acts)
    scale_menu.add_actions(win, r, acts)
    r.addSeparator()
    _add(r, acts, "benchmark", _action(win, "&Measure real quantized models...", lambda: analysis.run_benchmark(win),
                                       None, "Build the config with torchao, pt2e (oneDNN int8) and ONNX Runtime, and "
                                             "measure size on disk, CPU latency and accuracy against the float model"))


def _help_menu(win, mb, acts: dict) -> None:
    from . import help as help_mod

    h = mb.addMenu("&Help")
    _add(h, acts, "shortcuts", _action(win, "&Keyboard shortcuts", lambda: help_mod.show_shortcuts(win), "F1",
                                       "Every shortcut of the app"))
    _add(h, acts, "glossary", _action(win, "&Glossary of metrics and settings", lambda: help_mod.show_glossary(win),
                                      None, "What SQNR, top-1 agreement, KL, per-group, each range method and grid mean"))
    _add(h, acts, "readme", _action(win, "&README", lambda: help_mod.open_readme(win), None,
                                    "Open the README (the introduction; it links to the full documentation in docs/)"))
    h.addSeparator()
    h.addAction(_action(win, "&About quantviz", lambda: _about(win)))


def update_undo_actions(win, acts=None) -> None:
    acts = acts or getattr(win, "actions", None)
    if not isinstance(acts, dict):
        return
    h = win.session.history if win.session is not None else None
    acts["undo"].setEnabled(bool(h and h.can_undo))
    acts["redo"].setEnabled(bool(h and h.can_redo))
    acts["undo"].setText(f"&Undo {h.undo_label}" if h and h.can_undo else "&Undo")
    acts["redo"].setText(f"&Redo {h.redo_label}" if h and h.can_redo else "&Redo")
    for k in ("save", "save_as", "data", "import_config", "export_config", "recheck", "search", "trace", "qat",
              *[k for k in acts if k.startswith("export_")],
              *[k for k in acts if k.startswith("sensitivity_")]):
        acts[k].setEnabled(win.session is not None)


# ---------------------------------------------------------------- recent
def recent(win) -> list[str]:
    v = win.settings.value("recent", [])
    if isinstance(v, str):
        v = [v]
    return [str(x) for x in (v or []) if ":" in str(x)]


def add_recent(win, kind: str, ref: str) -> None:
    if kind != "session" and ref != "demo":
        ref = str(Path(ref).expanduser().resolve()) if Path(ref).exists() else ref
    entry = f"{kind}:{ref}"
    items = [entry] + [x for x in recent(win) if x != entry]
    win.settings.setValue("recent", items[:MAX_RECENT])


def _fill_recent(win) -> None:
    m = win.recent_menu
    m.clear()
    items = recent(win)
    if not items:
        m.addAction("(nothing yet)").setEnabled(False)
        return
    for entry in items:
        kind, ref = entry.split(":", 1)
        label = ("Session: " if kind == "session" else "") + (Path(ref).name or ref)
        a = m.addAction(label)
        a.setToolTip(ref)
        a.triggered.connect(lambda _c=False, k=kind, r=ref: win.confirm_unsaved(
            "open another model", lambda: win.open_session_file(r) if k == "session" else win.open_model(r)))


# ---------------------------------------------------------------- files
def _open_model(win) -> None:
    path = dialogs.choose_open(win, "Open model or session", dialogs.MODEL_FILTER)
    if path:
        win.open_path(path)


def _open_folder(win) -> None:
    path = dialogs.choose_folder(win, "Open a Hugging Face model folder")
    if path:
        win.confirm_unsaved("open another model", lambda: win.open_model(path))


def _save(win, ask: bool) -> None:
    path = win.session_path
    if ask or not path:
        path = dialogs.choose_save(win, "Save session", dialogs.SESSION_FILTER, path or "session.qvs")
    if path:
        win.save_session(path)


def _import_config(win) -> None:
    path = dialogs.choose_open(win, "Import config", dialogs.CONFIG_FILTER)
    if path:
        win.import_config(path)


def _export_config(win) -> None:
    path = dialogs.choose_save(win, "Export config", dialogs.CONFIG_FILTER, "quantviz-config.json")
    if path:
        win.export_config(path)


def _export_as(win, fmt: str, target: str = "ort") -> None:
    if win.session is None:
        return
    try:
        from ..io.export import SUFFIX
    except ImportError:
        SUFFIX = {}
    suffix = SUFFIX.get(fmt, "")
    filt = f"{fmt} (*{suffix});;All files (*)" if suffix else "All files (*)"
    tag = fmt if target == "ort" else f"{fmt}-{target}"
    path = dialogs.choose_save(win, f"Export {tag}", filt, f"{win.session.name.split()[0]}-{tag}{suffix}")
    if path:
        win.export_as(fmt, path, target=target)


def _trace(win) -> None:
    if win.session is None:
        return
    if "trace" in win.docks:
        win.docks["trace"].show()
        win.docks["trace"].raise_()
    win.trace.request(force=True)


def _reset_layout(win) -> None:
    state = getattr(win, "_default_state", None)
    if state is not None:
        win.restoreState(state, 1)
    for dock in win.docks.values():
        dock.setVisible(True)
    win.default_dock_sizes()


def _about(win) -> None:
    from PySide6.QtWidgets import QMessageBox

    from .. import __version__

    QMessageBox.about(win, "About quantviz", f"<b>quantviz {__version__}</b><br>Look inside a neural network's "
                      "quantization and tune it per layer.")
