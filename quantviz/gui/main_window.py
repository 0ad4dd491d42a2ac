"""The main window: places the views, owns the job runner, starts re-checks.

* Views follow the session's events themselves (:class:`~.bridge.SessionFollower`);
  the window only places them and wires user intents (a clicked layer, a
  chosen config) to the session.
* Every config edit (table, histogram, presets, undo) is one
  :class:`~quantviz.session.session.ConfigChange`: the table, histogram and
  summary update from it, and the window cancels the stale re-check and asks
  the session for a new one after a short debounce. The session owns the
  generations: its ``result`` event is the one route a result takes to the
  views, which show it only when ``session.is_wanted(result.generation)``.
* Loading, calibration and re-checks run through one :class:`JobRunner`;
  errors come back on the GUI thread as queued signals. The GUI thread never
  takes the session lock: statistics come from caches filled by background jobs.
* A failed job leaves the previous session in place and shows a one-line
  message in the status bar, with details on request.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QByteArray, QSettings, QSize, Qt, QTimer
from PySide6.QtWidgets import QDialog, QDockWidget, QMainWindow, QMenu, QMessageBox, QPushButton

from . import dialogs, gcguard, menus, unsaved
from .bridge import SessionBridge
from .files import FilesMixin
from .views.jobs import JobsBar
from ..session.stats import layer_stats
from .elided import ElidedLabel
from .launch import make_settings
from .views.config_diff import ConfigDiffView
from .views.histogram import HistogramPanel
from .views.layer_table import LayerTablePanel
from .views.pareto import ParetoView
from .views.qat import QATView
from .views.sensitivity import SensitivityView
from .views.summary import SummaryPanel
from .views.trace import TraceView
from .workers import JobRunner

if TYPE_CHECKING:
    from ..session.session import Session

CHECK_DEBOUNCE_MS = 150
SETTINGS_VERSION = 2  # 2: summary beside the histogram under the table


class MainWindow(FilesMixin, QMainWindow):
    def __init__(self, settings=None, *, restore: bool = True):
        super().__init__()
        self.settings: QSettings = settings if settings is not None else make_settings()
        self.setWindowTitle("quantviz[*]")
        self.setObjectName("quantvizMain")
        self.setAcceptDrops(True)
        self.setDockNestingEnabled(True)
        # ---- the open work
        self.session: Session | None = None
        self.session_path: str | None = None
        self.last_error: tuple[str, str] | None = None  # (one line, details) of the newest failure
        self.echo_errors: bool = False  # also print failed opens on stderr (set when started from the CLI)
        self._busy_note: str = ""
        self._note_is_error: bool = False  # the status bar's note is an error (kept until the next one)
        self._close_confirmed: bool = False
        self._shown_once: bool = False
        self._sized: bool = False  # docks get their first sizes when the window is first shown
        # ---- dialogs and menus that other gui modules open and keep here (None until first shown)
        self._error_dialog: QDialog | None = None
        self._trust_box: QMessageBox | None = None  # files / safety
        self._data_box: QDialog | None = None  # files (File › Data…)
        self._unsaved_box: QMessageBox | None = None  # unsaved
        self._recovery_box: QMessageBox | None = None  # safety
        self._recipe_box: QMessageBox | None = None  # safety
        self._help_dialog: QDialog | None = None  # help
        self._search_dialog: QDialog | None = None  # analysis
        self.deploy_report: QDialog | None = None  # analysis
        self.recent_menu: QMenu | None = None  # menus
        self.metric_menu: QMenu | None = None  # analysis
        self._default_state: QByteArray | None = None  # menus: the layout View › Reset layout restores

        self.runner: JobRunner = JobRunner(self, max_threads=3)  # a big layer's histogram need not wait for calibration
        self.bridge: SessionBridge = SessionBridge(self)
        self.unsaved: unsaved.UnsavedWork = unsaved.UnsavedWork(self)  # title-bar mark; quit / open ask first
        self.table: LayerTablePanel = LayerTablePanel(settings=self.settings)
        self.table.model.request_stats = self._request_stats
        self.setCentralWidget(self.table)
        self.summary: SummaryPanel = SummaryPanel()
        self.docks: dict[str, QDockWidget] = {}
        self._add_dock("summary", "Summary", self.summary, Qt.BottomDockWidgetArea)
        # The table spans the width (it gives up height, never columns); below it the summary
        # stays in view beside the histogram, whose tabs hold the analysis panels.
        self.histogram: HistogramPanel = self._build_view("histogram", HistogramPanel(), "Histogram",
                                                          Qt.BottomDockWidgetArea)
        self.splitDockWidget(self.docks["summary"], self.docks["histogram"], Qt.Horizontal)
        self.sensitivity: SensitivityView = self._build_view("sensitivity", SensitivityView(), "Sensitivity",
                                                             Qt.BottomDockWidgetArea)
        self.pareto: ParetoView = self._build_view("pareto", ParetoView(), "Pareto search", Qt.BottomDockWidgetArea)
        self.config_diff: ConfigDiffView = self._build_view("config_diff", ConfigDiffView(), "Config diff",
                                                            Qt.BottomDockWidgetArea)
        self.trace: TraceView = self._build_view("trace", TraceView(), "Trace", Qt.BottomDockWidgetArea)
        self.qat: QATView = self._build_view("qat", QATView(), "QAT", Qt.BottomDockWidgetArea)
        for key in ("sensitivity", "pareto", "trace", "qat", "config_diff"):
            if key in self.docks:
                self.tabifyDockWidget(self.docks["histogram"], self.docks[key])
        for dock in ("summary", "histogram"):
            if dock in self.docks:
                self.docks[dock].raise_()

        self.model_label: ElidedLabel = ElidedLabel()  # the status bar (_build_status_bar places them)
        self.error_label: ElidedLabel = ElidedLabel()
        self.details_button: QPushButton = QPushButton("Details…")
        self.jobs: JobsBar = JobsBar(self.runner)
        self._build_status_bar()
        self.actions: dict = menus.build_menus(self)
        self._check_timer: QTimer = QTimer(self)
        self._check_timer.setSingleShot(True)
        self._check_timer.setInterval(CHECK_DEBOUNCE_MS)
        self._check_timer.timeout.connect(self.start_check)

        self.bridge.configChanged.connect(self._on_bridge_config_changed)
        self.bridge.analysisChanged.connect(self._on_bridge_analysis_changed)
        self.table.layerSelected.connect(self._on_table_layer_selected)
        self.table.layerSelected.connect(self.trace.show_layer)
        self.table.layerSelected.connect(self.qat.select_layer)
        self.table.message.connect(self.show_message)
        self.summary.resultClicked.connect(self._on_summary_result_clicked)
        self.resize(*self.default_size())  # within the screen's free area, title bar included (#22 item 12)
        if restore and self.restore_layout():
            self._sized = True
        self._auto_size: QSize = self.size()  # the size chosen here; one set by a caller before show is kept
        self._fitted: bool = False  # fitted into the screen at the first show (#22 item 12)
        self._update_status()
        from .safety import AutosaveController

        self.autosave: AutosaveController = AutosaveController(self)  # recovery file after edits, removed on a clean close

    # ------------------------------------------------------------ build
    def _add_dock(self, key: str, title: str, widget, area) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock_{key}")
        dock.setWidget(widget)
        dock.setFeatures(QDockWidget.DockWidgetMovable | QDockWidget.DockWidgetFloatable | QDockWidget.DockWidgetClosable)
        self.addDockWidget(area, dock)
        self.docks[key] = dock
        return dock

    def _build_view(self, key: str, widget, title: str, area):
        self._add_dock(key, title, widget, area)
        if hasattr(widget, "rangeCommitted"):
            widget.rangeCommitted.connect(self._on_histogram_range_committed)
        if hasattr(widget, "layerClicked"):
            widget.layerClicked.connect(self.table.select_layer)
        if hasattr(widget, "configChosen"):
            widget.configChosen.connect(self._on_view_config_chosen)
        if hasattr(widget, "set_runner"):
            widget.set_runner(self.runner)
        return widget

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        sb.setSizeGripEnabled(False)
        self.model_label.setToolTip("The open model, its quantizable layers, parameters and the device it runs on.")
        self.error_label.setObjectName("error")
        self.details_button.setToolTip("Show the full error, with the technical details.")
        self.details_button.clicked.connect(self.show_error_details)
        self.details_button.setVisible(False)
        sp = self.details_button.sizePolicy()
        sp.setRetainSizeWhenHidden(True)
        self.details_button.setSizePolicy(sp)
        sb.addWidget(self.model_label)
        sb.addWidget(self.error_label, 1)
        sb.addWidget(self.details_button)
        sb.addPermanentWidget(self.jobs)

    # ------------------------------------------------------------ views
    def views(self) -> list:
        return [w for w in (self.table, self.summary, self.histogram, self.sensitivity, self.pareto, self.config_diff,
                            self.trace, self.qat) if w is not None]

    def set_session(self, session, path: str | None = None) -> None:
        """Show ``session`` everywhere (the previous one's jobs are cancelled)."""
        if self.session is not None and session is not self.session:
            self.runner.cancel()
        self.session = session
        self.session_path = path
        self.bridge.set_session(session)
        for w in self.views():
            w.set_session(session)
        self._update_status()
        menus.update_undo_actions(self)
        if session is None:
            return
        # what is (not) simulated for this file: one line above the table (LayerTablePanel.set_note)
        gcguard.settle()  # the new model's objects are long-lived: later collections skip them
        self.setWindowTitle(f"quantviz — {session.name}[*]")
        if session.layers:
            self.table.select_layer(self.most_interesting_layer() or session.layers[0].name)
        self.request_check(immediately=True)

    def most_interesting_layer(self) -> str | None:
        """The layer with the lowest weight SQNR among those already computed."""
        best, best_v = None, None
        for l in self.session.layers:
            st = self.table.model.stats_of(l.name)
            v = st.get("weight_sqnr_db") if st else None
            if v is not None and (best_v is None or v < best_v):
                best, best_v = l.name, v
        return best

    def _update_status(self) -> None:
        s = self.session
        if s is None:
            self.model_label.setText("No model open — File › Open, or drop a file here")
            return
        self.model_label.setText(f"<b>{s.name}</b> · {len(s.layers)} layers · {s.num_params:,} parameters · {s.device}")

    # ------------------------------------------------------------ messages
    def show_message(self, message: str, details: str = "") -> None:
        """A one-line note in the status bar (an error when details are given)."""
        self.error_label.setText(message)
        self.error_label.setToolTip(message)
        # errors keep the theme's red; plain notes are shown in the normal text colour
        self.error_label.setStyleSheet("" if details else "color: palette(window-text);")
        self.details_button.setVisible(bool(details))
        self._note_is_error = bool(details)
        if details:
            self.last_error = (message, details)

    def show_error(self, message: str, details: str) -> None:
        self.show_message(message, details or message)

    def clear_message(self) -> None:
        self.error_label.clear()
        self.details_button.setVisible(False)

    def show_error_details(self) -> None:
        if self.last_error is None:
            return
        self._error_dialog = dialogs.ErrorDialog(*self.last_error, parent=self)
        self._error_dialog.open()

    # ------------------------------------------------------------ edits
    def undo(self) -> None:
        if self.session is not None:
            self.session.undo()

    def redo(self) -> None:
        if self.session is not None:
            self.session.redo()

    def _on_bridge_config_changed(self, change) -> None:
        menus.update_undo_actions(self)
        if not self._note_is_error:
            self.clear_message()  # "Opened demo" and such notes describe the past once the user edits
        self.runner.cancel("check")  # the running re-check is stale now
        self.request_check()

    def _on_bridge_analysis_changed(self, what: str, _payload) -> None:
        if what in ("sensitivity", "search", "trace", "deploy") and not self._note_is_error:
            self.clear_message()  # a new result makes "Opened demo" old news too

    def _on_histogram_range_committed(self, name: str, kind: str, lo: float, hi: float) -> None:
        from ..core.errors import QuantvizError

        try:
            self.session.set_range(name, kind, lo, hi)
        except QuantvizError as exc:
            self.show_message(str(exc))

    def _on_view_config_chosen(self, d: dict) -> None:
        from ..io.config import QuantConfig

        self.restore_config(QuantConfig.from_dict(d), "load Pareto point")

    def _on_summary_result_clicked(self, result) -> None:
        from ..io.config import QuantConfig

        self.restore_config(QuantConfig.from_dict(result.config), f"restore {result.label}")

    def restore_config(self, cfg, label: str) -> None:
        from ..core.errors import QuantvizError

        try:
            self.session.set_config(cfg, label)
        except QuantvizError as exc:
            self.show_message(str(exc))

    def _on_table_layer_selected(self, name: str) -> None:
        if self.histogram is not None:
            self.histogram.show_layer(name)

    # ------------------------------------------------------------ re-check
    def request_check(self, immediately: bool = False) -> None:
        if immediately:
            self._check_timer.stop()
            self.start_check()
        else:
            self._check_timer.start()

    def start_check(self) -> None:
        """Re-check the current config in the background (the session may know it already)."""
        s = self.session
        if s is None or not s.prepared:
            return
        req = s.request_check()
        if req is None:  # a known result, announced again by the session
            self.runner.cancel("check")
            return

        def job(progress, cancel):
            return s.check(request=req, progress=progress, cancel=cancel)

        def failed(message, details, exc):
            if s is self.session and s.is_wanted(req.generation):
                self.summary.show_failed(message)
                self.show_error(f"Re-check failed: {message}", details)

        self.runner.submit("check", job, label="Re-checking", on_error=failed)

    def _request_stats(self, session, items, done, failed) -> None:
        self.runner.submit("stats", lambda p, c: layer_stats(session, items, c), label="Layer statistics",
                           visible=False, on_done=done, on_error=lambda m, d, e: failed(m), on_cancel=failed)

    # ------------------------------------------------------------ layout
    def restore_layout(self) -> bool:
        """Window geometry and dock layout of the last run; False when there is none."""
        s = self.settings
        if int(s.value("layout/version", 0) or 0) != SETTINGS_VERSION:
            return False
        geo = s.value("window/geometry")
        state = s.value("window/state")
        ok = False
        if isinstance(geo, (QByteArray, bytes)):
            ok = self.restoreGeometry(QByteArray(geo))
        if isinstance(state, (QByteArray, bytes)):
            ok = self.restoreState(QByteArray(state), SETTINGS_VERSION) and ok
        return ok

    def raise_working_panels(self) -> None:
        """The histogram and the summary in front (a restart shows them, not the last analysis tab)."""
        for dock in ("histogram", "summary"):
            if dock in self.docks:
                self.docks[dock].raise_()

    def default_dock_sizes(self) -> None:
        """Summary and histogram share the lower ~60 % of the height (the table gives up height, not
        columns); the histogram gets about two thirds of the width."""
        w = self.width()
        left = max(430, int(w * 0.34))  # the summary's table, its plot beside it when wide enough
        self.resizeDocks([self.docks["summary"], self.docks["histogram"]], [left, w - left], Qt.Horizontal)
        self.resizeDocks([self.docks["summary"]], [max(300, int(self.height() * 0.62))], Qt.Vertical)

    DEFAULT_SIZE = (1280, 800)
    FRAME_GUESS = (16, 40)  # a window manager's borders and title bar, until the frame is known

    def _frame_extra(self) -> tuple[int, int]:
        """Width and height the window's frame adds (a guess before it is shown)."""
        fg, g = self.frameGeometry(), self.geometry()
        dw, dh = fg.width() - g.width(), fg.height() - g.height()
        if not self.isVisible() or (dw <= 0 and dh <= 0 and not self.windowHandle()):
            return self.FRAME_GUESS
        return max(0, dw), max(0, dh)

    def _available(self):
        from PySide6.QtGui import QGuiApplication

        screen = self.screen() or QGuiApplication.primaryScreen()
        return screen.availableGeometry() if screen is not None else None

    def default_size(self) -> tuple[int, int]:
        """1280 x 800, or less: the whole window, frame and title bar included, inside the screen's
        available area (on a 1280 x 800 screen the status bar stays on screen)."""
        w, h = self.DEFAULT_SIZE
        avail = self._available()
        if avail is None:
            return w, h
        dw, dh = self._frame_extra()
        return max(200, min(w, avail.width() - dw)), max(200, min(h, avail.height() - dh))

    def fit_on_screen(self) -> None:
        """Shrink and move the window so its frame lies inside the screen's available area."""
        avail = self._available()
        if avail is None:
            return
        dw, dh = self._frame_extra()
        w, h = min(self.width(), avail.width() - dw), min(self.height(), avail.height() - dh)
        if (w, h) != (self.width(), self.height()):
            self.resize(max(w, self.minimumWidth()), max(h, self.minimumHeight()))
        fg = self.frameGeometry()
        x = min(max(fg.x(), avail.x()), avail.x() + max(0, avail.width() - fg.width()))
        y = min(max(fg.y(), avail.y()), avail.y() + max(0, avail.height() - fg.height()))
        if (x, y) != (fg.x(), fg.y()):
            self.move(x, y)

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if not self._fitted:
            self._fitted = True
            if self.size() == self._auto_size:  # not a size the caller asked for (--size, screenshots)
                self.fit_on_screen()
        if not self._sized:
            self._sized = True
            self.default_dock_sizes()
        if not self._shown_once:
            self._shown_once = True
            self.raise_working_panels()
            QTimer.singleShot(0, self.raise_working_panels)  # after the restored tab bars exist

    def save_layout(self) -> None:
        s = self.settings
        s.setValue("layout/version", SETTINGS_VERSION)
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState(SETTINGS_VERSION))
        s.sync()

    def confirm_unsaved(self, action: str, proceed) -> None:
        """Run ``proceed`` now, or after Save / Discard when there is unsaved work (see :mod:`.unsaved`)."""
        unsaved.confirm(self, action, proceed)

    def closeEvent(self, event) -> None:
        if self.unsaved.dirty and not self._close_confirmed:
            event.ignore()  # ask first; closes again once saved or discarded

            def close_now():
                self._close_confirmed = True
                self.close()

            self.confirm_unsaved("quit", close_now)
            return
        self.autosave.close()  # saved or discarded: the recovery file is no longer needed
        self.save_layout()
        self.runner.shutdown()
        self.bridge.set_session(None)
        super().closeEvent(event)
