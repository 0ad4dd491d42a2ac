"""Every config-bearing file quantviz writes is read back wherever a config is read (issue 13.1),
and files it writes get ordinary permissions (issue 13.2)."""
import json
import os
import stat

import pytest

from quantviz.cli.main import main
from quantviz.io import atomic
from quantviz.io.config import NeedsModel, QuantConfig, load_config, preset


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory):
    """An export, a session file and AIMET encodings of the demo with features.3 at 5 bits."""
    from quantviz.session import Session

    d = tmp_path_factory.mktemp("files")
    s = Session.open("demo", config=preset("W8"))
    s.edit_layers(["features.3"], {"weight": {"bits": 5}}, "5 bits")
    s.export("json", d / "export.json", force=True)
    s.export("aimet", d / "model.encodings", force=True)
    s.save(d / "work.qvs")
    return d


def _bits(cfg: QuantConfig, name="features.3"):
    from quantviz.session import Session

    s = Session.open("demo", config=cfg, prepare=False)
    return s.spec(name).weight.bits


@pytest.mark.parametrize("name", ["export.json", "work.qvs"])
def test_load_config_reads_the_embedded_config(demo_files, name):
    assert _bits(load_config(demo_files / name)) == 5


def test_aimet_encodings_need_the_model_and_then_load(demo_files):
    from quantviz.session import Session

    with pytest.raises(NeedsModel):
        load_config(demo_files / "model.encodings")
    s = Session.open("demo", prepare=False)
    assert s.load_config_file(demo_files / "model.encodings").resolve(s.layer("features.3")).weight.bits == 5


def test_unknown_format_names_what_is_accepted(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"format": "something-else"}')
    with pytest.raises(Exception) as exc:
        load_config(p)
    assert "quantviz-export" in str(exc.value) and "something-else" in str(exc.value)


@pytest.mark.parametrize("name", ["export.json", "work.qvs", "model.encodings"])
def test_cli_evaluate_accepts_every_file_quantviz_writes(demo_files, name, capsys):
    code = main(["evaluate", "demo", "--json", "--config", str(demo_files / name)])
    out, err = capsys.readouterr()
    assert code == 0, err
    rep = json.loads(out)
    assert rep["quantized"]["element_bits"] < 8  # the 5-bit layer came through


def test_atomic_files_get_the_umask_mode_and_keep_an_existing_mode(tmp_path):
    old = os.umask(0o022)
    try:
        new = atomic.write_text(tmp_path / "a.json", "{}")
        assert stat.S_IMODE(new.stat().st_mode) == 0o644
        os.umask(0o077)
        assert stat.S_IMODE(atomic.write_text(tmp_path / "b.json", "{}").stat().st_mode) == 0o600
        os.chmod(new, 0o640)
        atomic.write_text(new, "[]")
        assert stat.S_IMODE(new.stat().st_mode) == 0o640 and new.read_text() == "[]"
    finally:
        os.umask(old)


def test_cli_out_file_is_world_readable_under_umask_022(tmp_path, capsys):
    old = os.umask(0o022)
    try:
        out = tmp_path / "cfg.json"
        assert main(["export", "demo", "--preset", "W8", "--format", "json", "--out", str(out)]) == 0
        assert stat.S_IMODE(out.stat().st_mode) == 0o644
    finally:
        os.umask(old)
