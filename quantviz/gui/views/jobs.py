"""The jobs bar (in the status bar): what runs now, its progress, and Cancel.

It follows a :class:`~quantviz.gui.workers.JobRunner` and shows the most
recently started visible job; the Cancel button asks that job to stop at its
next batch / layer boundary (cooperative cancellation).

Run alone for a look: ``python -m quantviz.gui.views.jobs``.
"""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QWidget


class JobsBar(QWidget):
    def __init__(self, runner=None, parent=None):
        super().__init__(parent)
        self.runner = None
        self._jobs: list = []  # visible running jobs, oldest first
        self.label = QLabel("Ready")
        self.label.setObjectName("muted")
        self.label.setFixedWidth(200)  # a fixed size: progress never relayouts the status bar (elided, whole in the tooltip)
        self.bar = QProgressBar()
        self.bar.setFixedWidth(110)  # the status bar leaves the model line room in a window on a 1024 px screen
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(False)
        self.bar.setToolTip("Progress of the running job.")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the running job at its next step; the app keeps the previous state.")
        self.cancel_button.clicked.connect(self.cancel_current)
        for w in (self.bar, self.cancel_button):  # showing them must not relayout the window
            sp = w.sizePolicy()
            sp.setRetainSizeWhenHidden(True)
            w.setSizePolicy(sp)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 4, 0)
        lay.setSpacing(6)
        lay.addWidget(self.label)
        lay.addWidget(self.bar)
        lay.addWidget(self.cancel_button)
        if runner is not None:
            self.set_runner(runner)
        self._update()

    def set_runner(self, runner) -> None:
        self.runner = runner
        runner.jobStarted.connect(self._on_runner_started)
        runner.jobProgress.connect(self._on_runner_progress)
        runner.jobEnded.connect(self._on_runner_ended)

    @property
    def current(self):
        return self._jobs[-1] if self._jobs else None

    def cancel_current(self) -> None:
        job = self.current
        if job is not None:
            job.cancel()
            self.label.setText(f"Cancelling {job.label}…")

    def _on_runner_started(self, job) -> None:
        if job.visible:
            self._jobs.append(job)
            self._update()

    def _on_runner_progress(self, job, done: int, total: int, message: str) -> None:
        if job is self.current:
            self._update()

    def _on_runner_ended(self, job, how: str) -> None:
        if job in self._jobs:
            self._jobs.remove(job)
            self._update()

    def _update(self) -> None:
        job = self.current
        busy = job is not None
        self.bar.setVisible(busy)
        self.cancel_button.setVisible(busy)
        if not busy:
            self.label.setText("Ready")
            return
        done, total, message = job.progress
        self.bar.setValue(int(1000 * done / total) if total else 0)
        text = f"{job.label}: {message}" if message else f"{job.label}…"
        self.label.setText(self.label.fontMetrics().elidedText(text, Qt.ElideRight, self.label.width()))
        self.label.setToolTip(text)


def main() -> int:  # pragma: no cover - a look at the widget alone
    import time

    from ..launch import create_app, smoke_quit
    from ..workers import JobRunner

    app = create_app()
    runner = JobRunner()
    w = JobsBar(runner)

    def slow(progress, cancel):
        for i in range(100):
            if cancel():
                from ...core.errors import Cancelled

                raise Cancelled()
            progress(i, 100, "counting")
            time.sleep(0.05)

    runner.submit("demo", slow, label="Demo job")
    w.resize(480, 40)
    w.show()
    smoke_quit(app)
    app.exec()
    runner.shutdown()
    w.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
