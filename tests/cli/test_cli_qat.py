"""``quantviz qat``: JSON report (before / after / curves / time), the saved session, bad input."""
import json

from quantviz.cli.main import main
from quantviz.session.session import Session


def test_qat_json_and_saved_session(tmp_path, capsys):
    out = tmp_path / "t.qvs"
    rc = main(["qat", "demo", "--preset", "W2", "--steps", "20", "--threads", "1", "--json", "--out", str(out)])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["metric"] == "accuracy" and rep["after"] > rep["before"] + 0.1 and rep["float"] > rep["after"]
    assert rep["settings"]["steps"] == 20 and rep["settings"]["lsq"] is False and rep["loss"] == "ce"
    assert len(rep["curves"]["loss"]) == 20 and rep["seconds_training"] > 0
    assert not (tmp_path / "t.qvs.ckpt").exists()  # finished runs leave no checkpoint
    s = Session.load(out)
    assert s.weights_tag == "qat-1"
    assert abs(s.check().metrics["accuracy"] - rep["after"]) < 1e-9


def test_epochs_and_bad_input(tmp_path, capsys):
    assert main(["qat", "demo", "--preset", "W2", "--steps", "0"]) == 1
    assert "--steps must be at least 1" in capsys.readouterr().err
    assert main(["qat", "demo", "--preset", "W2", "--lr", "-1"]) == 1
    assert "--lr must be positive" in capsys.readouterr().err
    assert main(["qat", "demo", "--preset", "W2", "--train", str(tmp_path / "nope.npz")]) == 1
    assert "nope.npz" in capsys.readouterr().err
    rc = main(["qat", "demo", "--preset", "W2", "--epochs", "0.02", "--threads", "1", "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["settings"]["steps"] == 1
