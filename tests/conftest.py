"""Suite-wide isolation: no test writes to the user's real data folder; garbage
collection runs on the GUI thread in Qt tests (as in the app) and normally elsewhere."""
import sys

import pytest

try:  # property tests draw the same examples on every run: CI fails only on what a local run also shows
    from hypothesis import settings as _hyp

    _hyp.register_profile("quantviz", derandomize=True, database=None, print_blob=True)
    _hyp.load_profile("quantviz")
except ImportError:  # pragma: no cover - hypothesis is a test extra
    pass


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
