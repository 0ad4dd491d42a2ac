"""The app's whole workflow, end to end (#22 §3), on the test platform and under a real X server.

One test drives what a user does in one sitting: open a model that carries no data through the
data dialog, then the demo; edit bits, a number format and an algorithm; run sensitivity and a
search and apply a Pareto point; train (QAT); trace; export every format; save; recover work a
killed app left behind; quit through the unsaved-work question. At the end the window is
grabbed to a PNG and its frame must fit the screen.

Where Xvfb is installed (``make test`` installs it when it can: ``scripts/setup_xvfb.sh``) the
test runs in a child process under a real X server (``xvfb-run``, platform ``xcb``) at 1280x800;
elsewhere it runs in the test process on the offscreen platform. (Not both: the X run drives the
same code through a real window system, so the offscreen run would add time and no coverage.)
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _scripted_model(tmp_path: Path) -> tuple[Path, Path]:
    """A TorchScript classifier and its data: a model that carries no data of its own."""
    import numpy as np

    torch.manual_seed(0)
    model = torch.jit.script(nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval())
    path = tmp_path / "mlp.pt"
    torch.jit.save(model, str(path))
    g = np.random.default_rng(0)
    x = g.standard_normal((96, 16)).astype("float32")
    y = model(torch.from_numpy(x)).argmax(1).numpy()
    data = tmp_path / "mlp.npz"
    np.savez(data, x=x, y=y)
    return path, data


_HAVE_X = shutil.which("xvfb-run") is not None


@pytest.mark.skipif(_HAVE_X and os.environ.get("QT_QPA_PLATFORM") != "xcb",
                    reason="runs under the real X server instead (test_whole_workflow_under_a_real_x_server)")
def test_whole_workflow(qtbot, tmp_path, wait_idle):
    from PySide6.QtWidgets import QApplication, QDialog, QDialogButtonBox, QMessageBox

    from quantviz.core.training.qat import QATOptions
    from quantviz.gui import analysis, safety
    from quantviz.gui.main_window import MainWindow
    from quantviz.io.config import QuantConfig
    from quantviz.io.export import FORMATS
    from quantviz.session import Session, autosave

    win = MainWindow(restore=False)
    qtbot.addWidget(win)
    win.show()

    # 1. a model without data opens through the data dialog
    model, data = _scripted_model(tmp_path)
    win.open_model(str(model))
    qtbot.waitUntil(lambda: any(d.isVisible() for d in win.findChildren(QDialog, "dataDialog")), timeout=60000)
    box = next(d for d in win.findChildren(QDialog, "dataDialog") if d.isVisible())
    box.data.edit.setText(str(data))
    box.buttons.button(QDialogButtonBox.Ok).click()
    wait_idle(win, 120000)
    assert win.session is not None and win.session.data_ref == str(data), win.last_error
    assert win.table.proxy.rowCount() == 2

    # 2. the demo; edit bits, a format and an algorithm
    win.open_model("demo")
    wait_idle(win, 120000)
    s = win.session
    assert s is not None and s.bundle.reference == "demo", win.last_error
    a, b, c = s.layer_names[1], s.layer_names[2], s.layer_names[3]
    win.table.apply_field("weight_bits", 5, [a])
    win.table.apply_field("format", "nvfp4", [b])
    win.table.apply_field("algorithm", "gptq", [c])
    wait_idle(win, 120000)
    assert (s.spec(a).weight.bits, s.spec(b).weight.format, s.spec(c).weight.algorithm) == (5, "nvfp4", "gptq")
    assert s.results and s.results[-1].config == s.config.to_dict()

    # 3. sensitivity, a search, a Pareto point applied
    win.actions["sensitivity_e2e"].trigger()
    qtbot.waitUntil(lambda: "e2e" in s.analysis.sensitivity, timeout=120000)
    wait_idle(win, 120000)
    analysis.run_search(win, avg_bits=5.0)
    qtbot.waitUntil(lambda: s.analysis.search is not None, timeout=180000)
    wait_idle(win, 120000)
    spots = win.pareto.front_item.scatter.points()
    assert len(spots) > 0
    pick = spots[-1].data()
    win.pareto._on_points_clicked([spots[-1]])
    wait_idle(win, 120000)
    assert s.config == QuantConfig.from_dict(pick["config"])

    # 4. QAT, then the trace agrees with the summary
    win.qat.start(QATOptions(steps=10, lr=1e-3, eval_every=10))
    qtbot.waitUntil(lambda: s.weights_tag is not None and not win.runner.busy(), timeout=180000)
    wait_idle(win, 120000)
    win.actions["trace"].trigger()
    wait_idle(win, 120000)
    tr = s.analysis.trace
    assert tr is not None and tr.output_sqnr_db == pytest.approx(s.results[-1].metrics["sqnr_db"], abs=1e-3)
    assert win.trace.out_item.getData()[1][0] == pytest.approx(s.results[-1].metrics["sqnr_db"], abs=1e-3)

    # 5. every export, then save
    for fmt in FORMATS:
        out = tmp_path / f"out.{fmt}"
        win.last_error = None
        win.export_as(fmt, str(out))
        wait_idle(win, 120000)
        assert out.is_file() or (win.last_error and "\n" not in win.last_error[0]), (fmt, win.last_error)
    saved = tmp_path / "work.qvs"
    assert win.save_session(str(saved)), win.last_error
    assert not win.isWindowModified()

    # 6. work a killed app left behind is offered and comes back as unsaved work
    s.edit_layers([a], {"weight": {"bits": 3}})
    dead = _dead_pid()
    left = autosave.write_recovery(s, autosave.recovery_path(dead))
    doc = json.loads(left.read_text())
    doc["recovery"]["pid"] = dead  # as the killed process wrote it
    left.write_text(json.dumps(doc))
    win.unsaved.mark_clean()
    win.open_model("demo")
    wait_idle(win, 120000)
    rbox = safety.offer_recovery(win)
    assert rbox is not None
    rbox.button(QMessageBox.Yes).click()
    wait_idle(win, 120000)
    assert win.session.spec(a).weight.bits == 3 and win.unsaved.dirty and win.isWindowModified()
    assert not left.exists()

    # 7. the window fits the screen; a screenshot for the eye
    QApplication.processEvents()
    avail, frame = win.screen().availableGeometry(), win.frameGeometry()
    assert frame.height() <= avail.height()
    if avail.width() >= 1024:  # the docks need ~960 px: a narrower screen (offscreen's 800 px) cannot hold them
        assert frame.width() <= avail.width() and avail.contains(frame)
    shot = Path(os.environ.get("QUANTVIZ_WORKFLOW_SHOT", tmp_path / "workflow.png"))
    assert win.grab().save(str(shot)) and shot.stat().st_size > 0

    # 8. quit asks first; Discard closes
    win.close()
    qtbot.waitUntil(lambda: win.findChild(QMessageBox, "unsavedDialog") is not None, timeout=10000)
    assert win.isVisible()
    win.findChild(QMessageBox, "unsavedDialog").button(QMessageBox.Discard).click()
    qtbot.waitUntil(lambda: not win.isVisible(), timeout=10000)
    assert Session.load(saved).check().metrics  # the saved file is whole


@pytest.mark.skipif(not _HAVE_X, reason="Xvfb is not installed (scripts/setup_xvfb.sh)")
@pytest.mark.timeout(1800)
def test_whole_workflow_under_a_real_x_server(tmp_path):
    env = dict(os.environ, QT_QPA_PLATFORM="xcb", PYTHONPATH=str(ROOT), QUANTVIZ_WORKFLOW_SHOT=str(tmp_path / "x.png"))
    env.pop("DISPLAY", None)
    cmd = ["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           f"{Path(__file__)}::test_whole_workflow"]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1700)
    assert r.returncode == 0, (r.stdout[-4000:], r.stderr[-2000:])
    assert (tmp_path / "x.png").stat().st_size > 0
