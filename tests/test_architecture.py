"""The headless packages load neither Qt nor CUDA (checked in a fresh interpreter)."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, sys
import quantviz.cli.main, quantviz.core, quantviz.session, quantviz.io
import quantviz.core.fakequant, quantviz.core.evaluate, quantviz.core.size, quantviz.core.sources
import quantviz.io.config, quantviz.session.session
quantviz.cli.main.build_parser()  # imports every command module
import torch
banned = ("PySide6", "shiboken6", "pyqtgraph", "PyQt5", "PyQt6")
print(json.dumps({
    "qt": sorted(m for m in sys.modules if m.split(".")[0] in banned),
    "cuda_initialized": torch.cuda.is_initialized(),
    "quantviz_gui": sorted(m for m in sys.modules if m.startswith("quantviz.gui")),
}))
"""


def test_headless_imports_load_no_qt_and_do_not_initialise_cuda():
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["qt"] == []
    assert res["quantviz_gui"] == []
    assert res["cuda_initialized"] is False


def test_the_probe_would_notice_qt():
    """Guards the test above: importing Qt in the same probe is detected."""
    probe = PROBE.replace("import torch\n", "import torch\nimport PySide6.QtCore\n", 1)
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={"QT_QPA_PLATFORM": "offscreen", **__import__("os").environ})
    assert out.returncode == 0, out.stderr
    assert "PySide6.QtCore" in json.loads(out.stdout.strip().splitlines()[-1])["qt"]
