"""Suite-wide isolation: no test writes to the user's real settings, data or cache folders
(for the whole run, subprocesses included); garbage collection runs on the GUI thread in Qt
tests (as in the app) and normally elsewhere."""
import os
import shutil
import sys
import tempfile

import pytest

try:  # property tests draw the same examples on every run: CI fails only on what a local run also shows
    from hypothesis import settings as _hyp

    _hyp.register_profile("quantviz", derandomize=True, database=None, print_blob=True)
    _hyp.load_profile("quantviz")
except ImportError:  # pragma: no cover - hypothesis is a test extra
    pass


# Every per-user location quantviz or Qt could write, pointed into one temporary folder for the
# whole run. Set at import (before any test or subprocess starts), so a CLI or app started by a
# test inherits it: Qt's settings (window layout, File > Open recent) follow XDG_CONFIG_HOME.
USER_DIRS = {
    "XDG_CONFIG_HOME": "config",
    "XDG_DATA_HOME": "data",
    "XDG_CACHE_HOME": "cache",
    "XDG_STATE_HOME": "state",
    "QUANTVIZ_DATA_DIR": "data/quantviz",
    "QUANTVIZ_CACHE_DIR": "cache/quantviz/scores",
}
_RUN_HOME = tempfile.mkdtemp(prefix="quantviz-test-home-")
for _var, _sub in USER_DIRS.items():
    os.environ[_var] = os.path.join(_RUN_HOME, _sub)


def pytest_configure(config):
    """Under pytest-xdist (``make test`` runs ``-n auto``) each worker is one process among N on the
    machine's cores: it takes its share of the cores for torch's intra-op threads, so N workers
    never oversubscribe the machine (numerics do not depend on the thread count)."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(workers)))


def pytest_unconfigure(config):
    shutil.rmtree(_RUN_HOME, ignore_errors=True)


@pytest.fixture
def run_home() -> str:
    """The temporary folder that stands in for the user's per-user folders during this run."""
    return _RUN_HOME


@pytest.fixture(autouse=True)
def _private_data_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("QUANTVIZ_DATA_DIR", str(tmp_path_factory.mktemp("qv-data")))
    monkeypatch.setenv("QUANTVIZ_CACHE_DIR", str(tmp_path_factory.mktemp("qv-cache")))


@pytest.fixture(autouse=True)
def _gc_mode(request):
    """Qt tests (those using ``qapp``) collect garbage on the GUI thread, as the app does
    (quantviz.gui.gcguard); other tests give collection back to the interpreter, since no
    event loop runs to drive the GUI-thread collector."""
    if "qapp" in request.fixturenames:
        from quantviz.gui import gcguard
        from PySide6.QtWidgets import QApplication

        request.getfixturevalue("qapp")
        gcguard.install(QApplication.instance())
    elif "quantviz.gui.gcguard" in sys.modules:
        sys.modules["quantviz.gui.gcguard"].uninstall()
    yield


class CLIRun:
    """The outcome of a CLI run in this process: exit ``code``, captured ``out`` and ``err``."""

    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err

    @property
    def err_lines(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ln.strip()]


@pytest.fixture
def cli(capsys):
    """``cli(*argv)`` runs ``quantviz`` in this process (no interpreter start-up, no torch import per
    call). Tests whose subject is the process boundary (signals, exit codes of a real process,
    stderr noise of third-party imports) start a subprocess instead."""
    from quantviz.cli.main import main

    import torch

    def run(*argv) -> CLIRun:
        capsys.readouterr()
        threads = torch.get_num_threads()
        try:  # the CLI sizes torch's threads for a process of its own; the test process keeps its share
            code = main([str(a) for a in argv])
        finally:
            torch.set_num_threads(threads)
        cap = capsys.readouterr()
        return CLIRun(code, cap.out, cap.err)

    return run

