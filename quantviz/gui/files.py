"""The main window's file handling: open (models, sessions, dropped paths), save, import, export.

Loading runs as a background job; a model that needs trust asks in a
non-blocking dialog and retries; failures leave the open session untouched.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..core.errors import TrustRequired
from . import dialogs, menus


class FilesMixin:
    """Mixed into :class:`~quantviz.gui.main_window.MainWindow` (uses its runner, session and messages)."""

    # ------------------------------------------------------------ opening
    def open_model(self, reference: str, *, data: str | None = None, config: str | None = None,
                   trust: bool = False, calib: str | None = None, seq_len: int | None = None,
                   keep_config=None) -> None:
        """Load, calibrate and evaluate a model in the background.

        A model without data of its own opens the data dialog (:mod:`.data_dialog`) and is opened
        again with what the user chose; ``keep_config`` (a QuantConfig) is applied once it is open."""
        from ..io.config import load_config
        from ..core.errors import QuantvizError
        from ..session import Session
        from ..session.session import NeedsData
        from . import safety

        again = dict(data=data, config=config, calib=calib, seq_len=seq_len, keep_config=keep_config)
        if not trust and safety.needs_recipe_question(reference):
            # a recipe is code: say so and ask before running it the first time
            self._trust_box = safety.ask_recipe(self, reference, lambda: self.open_model(reference, **again))
            return
        from ..io.config import NeedsModel

        try:
            cfg = load_config(config) if config else None
        except NeedsModel:
            cfg = None  # AIMET encodings: matched against the model once it is open
        except QuantvizError as exc:
            self.show_error(str(exc), str(exc))
            return

        def job(progress, cancel):
            # the table and the weight histograms need no forward pass: the model is shown at once,
            # calibration and the float reference follow as their own job (prepare_session)
            s = Session.open(reference, data=data, calib=calib, seq_len=seq_len, config=keep_config or cfg,
                             trust=trust, progress=progress, cancel=cancel, prepare=False)
            if config and cfg is None:
                s.set_config(s.load_config_file(config), f"import {Path(config).name}")
            return s

        def failed(message, details, exc):
            if isinstance(exc, TrustRequired) and not trust:
                self._trust_box = dialogs.ask_trust(
                    self, message, lambda: self.open_model(reference, **dict(again, trust=True)))
            if isinstance(exc, NeedsData):
                self.ask_data(reference, reason=f"{Path(str(reference)).name or reference} carries no data of its "
                                                "own: choose what to evaluate and calibrate it on.", trust=trust)
                return
            self.show_open_error(reference, message, details)

        def opened(s) -> None:
            if data:
                from .data_dialog import DataChoice, remember

                remember(self.settings, reference, DataChoice(data, calib or "", int(seq_len or 0)))
            self._on_opened(s, reference)

        self.clear_message()
        self.runner.submit("load", job, label=f"Opening {Path(reference).name or reference}",
                           on_done=opened, on_error=failed)

    def ask_data(self, reference: str | None = None, *, reason: str = "", trust: bool = False) -> None:
        """The data dialog for ``reference`` (default: the open model, reopened with the new data and its
        config kept); non-blocking, found by its object name ``dataDialog``."""
        from .data_dialog import DataChoice, DataDialog, remembered

        s = self.session
        current = reference is None
        if current:
            if s is None:
                return
            reference = s.bundle.reference
        initial = remembered(self.settings, reference)
        if current and s.data_ref:
            initial = DataChoice(str(s.data_ref), str(s.calib_ref or ""), int(getattr(s, "seq_len", 0) or 0))
        box = DataDialog(reference, initial, reason, parent=self)

        def accepted() -> None:
            c = box.choice()
            keep = s.config if current else None
            go = lambda: self.open_model(reference, data=c.data, calib=c.calib or None, seq_len=c.seq,  # noqa: E731
                                         trust=trust or current, keep_config=keep)  # open already: trusted
            if current:
                self.confirm_unsaved("reopen the model with other data", go)
            else:
                go()

        box.accepted.connect(accepted)
        box.open()
        self._data_box = box

    def _on_opened(self, session, reference) -> None:
        previous, previous_path = self.session, self.session_path
        self._on_loaded(session, None, reference)

        def failed(message, details) -> None:  # bad data shows in calibration: the open failed
            if self.session is session and previous is not None:
                self.set_session(previous, previous_path)
            self.show_open_error(reference, message, details)

        self.prepare_session(session, on_failed=failed)

    def prepare_session(self, session, on_failed=None) -> None:
        """Calibrate and compute the float reference in the background; then re-check."""
        if session.prepared:
            return

        def job(progress, cancel):
            session.prepare(progress=progress, cancel=cancel)
            return session

        def done(s) -> None:
            if s is not self.session:
                return
            self.table.model.specs_changed(dict(s.specs))  # activation statistics are there now
            for w in self.views():  # the float reference's metrics are known now (summary rows, choices)
                if w is not None and w is not self.table and w is not self.histogram:
                    w.set_session(s)
            if self.histogram is not None:
                self.histogram.refresh()
            self.request_check(immediately=True)

        def error(message, details, exc) -> None:
            if on_failed is not None:
                on_failed(message, details)
            else:
                self.show_error(f"Calibration failed: {message}", details)

        self.runner.submit("prepare", job, label="Calibrating", on_done=done, on_error=error)

    def open_session_file(self, path: str, *, trust: bool = False, recovered: bool = False) -> None:
        """Open a saved session, or (``recovered``) a recovery file a killed app left: its work is
        unsaved work here, and the recovery file is neither the session's file nor a recent file."""
        from ..session import Session
        from . import safety

        if not trust and safety.needs_recipe_question(path):
            self._trust_box = safety.ask_recipe(self, path, lambda: self.open_session_file(path, recovered=recovered))
            return

        def job(progress, cancel):
            if recovered:  # with its undo history
                from ..session.autosave import restore_session

                return restore_session(path, trust=trust, progress=progress, cancel=cancel)
            return Session.load(path, trust=trust, progress=progress, cancel=cancel)

        def failed(message, details, exc):
            if isinstance(exc, TrustRequired) and not trust:
                self._trust_box = dialogs.ask_trust(
                    self, message, lambda: self.open_session_file(path, trust=True, recovered=recovered))
            self.show_open_error(path, message, details)

        self.clear_message()
        kind = "recovered" if recovered else "session"
        self.runner.submit("load", job, label=f"Opening {Path(path).name}",
                           on_done=lambda s: self._on_loaded(s, path, path, kind=kind), on_error=failed)

    def show_open_error(self, reference: str, message: str, details: str) -> None:
        """A failed open: one line in the status bar and a dialog (message + details), the name once."""
        import sys

        name = Path(str(reference)).name or str(reference)
        for prefix in (f"{reference}: ", f"{name}: "):
            if message.startswith(prefix):
                message = message[len(prefix):]
                break
        line = f"Could not open {name}: {message}"
        self.show_error(line, details)
        if self.echo_errors:
            sys.stderr.write(f"quantviz: error: {line}\n")
            sys.stderr.flush()
        if not self.isVisible():
            return
        if self._error_dialog is not None:
            self._error_dialog.close()
        self.show_error_details()

    def _on_loaded(self, session, path, reference, kind: str = "model") -> None:
        if kind == "recovered":
            self.set_session(session, None)  # Save asks where: the recovery file is not the user's file
            self.unsaved.mark_recovered()
            self.show_message(f"Recovered unsaved work on {session.name}: save the session to keep it")
            return
        self.set_session(session, path)
        menus.add_recent(self, kind, reference)
        self.show_message(f"Opened {reference}")

    def open_path(self, path: str) -> None:
        """Open a dropped / chosen path: a session, a config (applied), or a model (asking first if work is unsaved)."""
        from ..io.config import is_aimet_encodings

        p = Path(path)
        kind = None
        if p.suffix.lower() == ".qvs":
            kind = "quantviz-session"
        elif p.suffix.lower() == ".json" and p.is_file():
            try:
                obj = json.loads(p.read_text(encoding="utf-8"))
                kind = "aimet" if is_aimet_encodings(obj) else obj.get("format")
            except (OSError, ValueError, AttributeError):
                kind = None
        if kind in ("quantviz-config", "quantviz-export", "aimet") and self.session is not None:
            self.import_config(path)  # applied to the open model (undoable): nothing is lost
        elif kind == "quantviz-session":
            self.confirm_unsaved("open another session", lambda: self.open_session_file(path))
        else:
            self.confirm_unsaved("open another model", lambda: self.open_model(path))

    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        urls = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if urls:
            event.acceptProposedAction()
            self.open_path(urls[0])

    # ------------------------------------------------------------ files
    def save_session(self, path: str) -> bool:
        from ..core.errors import QuantvizError

        if self.session is None:
            return False
        try:
            self.session.save(path)
        except (QuantvizError, OSError) as exc:
            self.show_error(f"Could not save {path}: {exc}", str(exc))
            return False
        self.session_path = path
        self.unsaved.mark_clean()
        menus.add_recent(self, "session", path)
        self.show_message(f"Saved session to {path}")
        return True

    def export_config(self, path: str) -> bool:
        from ..core.errors import QuantvizError
        from ..io.config import save_config

        try:
            save_config(self.session.config, path)
        except (QuantvizError, OSError) as exc:
            self.show_error(f"Could not export the config: {exc}", str(exc))
            return False
        self.show_message(f"Exported config to {path}")
        return True

    def import_config(self, path: str) -> bool:
        """Apply a config file to the open model (undoable)."""
        from ..core.errors import QuantvizError
        if self.session is None:
            self.show_message("Open a model before importing a config")
            return False
        try:
            self.session.set_config(self.session.load_config_file(path), f"import {Path(path).name}")
        except QuantvizError as exc:
            self.show_error(f"Could not import the config: {exc}", str(exc))
            return False
        self.show_message(f"Applied config {Path(path).name}")
        return True

    def export_as(self, fmt: str, path: str, target: str = "ort") -> None:
        session = self.session
        what = fmt if target == "ort" else f"{fmt} for {target}"
        self.runner.submit("export", lambda p, c: session.export(fmt, path, force=True, progress=p, cancel=c,
                                                                 target=target),
                           label=f"Exporting {what}", on_done=lambda _r: self.show_message(f"Exported {what} to {path}"),
                           on_error=lambda m, d, e: self.show_error(f"Export failed: {m}", d))
