"""One ResNet-18-layout model as nn.Module (recipe), traced TorchScript and torch.export
programs (dynamic and fixed batch): same layers in inspect, same metrics in evaluate."""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from quantviz.cli.cmd_inspect import inspect_model
from quantviz.session import Session

from .fixtures import resnet18

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("formats")
    m = resnet18()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20, 3, 32, 32, generator=g)
    with torch.no_grad():
        y = m(x).argmax(1)
    np.savez(d / "data.npz", x=x.numpy(), y=y.numpy())
    recipe = d / "resnet_recipe.py"
    recipe.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(HERE)!r})
        from fixtures import resnet18
        NAME = "resnet18"
        def build_model():
            return resnet18()
    """))
    with torch.no_grad():
        torch.jit.save(torch.jit.trace(m, x[:4]), str(d / "dyn.ts"))
        torch.jit.save(torch.jit.trace(m, x[:1]), str(d / "one.ts"))
        torch.jit.save(torch.jit.script(m), str(d / "scripted.ts"))
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(m, (x[:4],), dynamic_shapes=({0: batch},)), str(d / "dyn.pt2"))
    torch.export.save(torch.export.export(m, (x[:1],)), str(d / "one.pt2"))
    return d


SOURCES = ["resnet_recipe.py", "dyn.ts", "one.ts", "dyn.pt2", "one.pt2"]


def test_inspect_gives_the_same_layers(files):
    data = str(files / "data.npz")
    infos = {s: inspect_model(str(files / s), data=data) for s in SOURCES + ["scripted.ts"]}
    ref = infos["resnet_recipe.py"]
    assert len(ref["layers"]) == 21  # 20 convolutions + fc
    assert len(ref["folded_batchnorm"]) == 20
    for s, info in infos.items():
        assert [l["name"] for l in info["layers"]] == [l["name"] for l in ref["layers"]], s
        assert [l["type"] for l in info["layers"]] == [l["type"] for l in ref["layers"]], s
        assert info["folded_batchnorm"] == ref["folded_batchnorm"], s
        for a, b in zip(info["layers"], ref["layers"]):  # folded weights: same statistics
            assert a["weight_std"] == pytest.approx(b["weight_std"], rel=1e-5), (s, a["name"])
    assert "fixed batch size of 1" in infos["one.pt2"]["note"]
    assert "converted" in infos["dyn.ts"]["note"] and "converted" in infos["scripted.ts"]["note"]
    # without data a TorchScript file still lists its layers (the script modules)
    bare = inspect_model(str(files / "dyn.ts"))
    assert [l["name"] for l in bare["layers"]] == [l["name"] for l in ref["layers"]]


def _metrics(path: Path, data: Path):
    s = Session.open(str(path), data=str(data), batch_size=8)
    out = {}
    for p in ("W8A8", "W4A8"):
        s.apply_preset(p)
        out[p] = s.check(label=p).metrics
    return s, out


def test_evaluate_gives_the_same_metrics(files):
    data = files / "data.npz"
    ref_s, ref = _metrics(files / "resnet_recipe.py", data)
    assert ref["W4A8"]["sqnr_db"] < ref["W8A8"]["sqnr_db"]
    for src in SOURCES[1:]:
        s, got = _metrics(files / src, data)
        assert s.layer_names == ref_s.layer_names
        for p in ("W8A8", "W4A8"):
            for k, v in ref[p].items():
                tol = 0.1 if k == "sqnr_db" else 2e-3  # float rounding (batch 1 vs 8 convolutions)
                assert got[p][k] == pytest.approx(v, abs=tol), (src, p, k)
        # a config written for the nn.Module applies unchanged
        s.set_config(ref_s.config)
        assert s.specs == ref_s.specs


def test_sensitivity_on_an_exported_graph(files):
    s = Session.open(str(files / "dyn.pt2"), data=str(files / "data.npz"), batch_size=8)
    s.apply_preset("W8")
    res = s.run_sensitivity("e2e", bits=(2,), act_bits=())
    assert len(res["layers"]) == 21
    local = s.run_sensitivity("local", bits=(2, 8))
    assert all(e["results"]["2"]["metrics"]["sqnr_db"] < e["results"]["8"]["metrics"]["sqnr_db"] for e in local["layers"])


def test_cli_evaluate_pt2_fixed_batch(files, cli):
    r = cli("evaluate", files / "one.pt2", "--data", files / "data.npz", "--preset", "W8A8", "--batch-size", "8")
    assert r.code == 0, r.err
    assert "sqnr_db" in r.out


class _Loopy(torch.nn.Module):
    """A scripted module torch's converter cannot take (a data-dependent loop)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(6, 8)
        self.fc2 = torch.nn.Linear(8, 3)

    def forward(self, x):
        y = self.fc(x)
        n = int(y.sum().item() > 0)
        for i in range(n + 1):
            y = torch.relu(y) + float(i)
        return self.fc2(y)


def test_unconvertible_torchscript_is_weights_only(tmp_path, cli):
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(_Loopy().eval()), str(tmp_path / "loopy.ts"))
    x = torch.randn(16, 6)
    np.savez(tmp_path / "d.npz", x=x.numpy())
    r = cli("evaluate", tmp_path / "loopy.ts", "--data", tmp_path / "d.npz", "--preset", "W4A8", "--json")
    assert r.code == 0, r.err
    lines = r.err_lines
    assert len(lines) == 1 and "activations cannot be simulated" in lines[0] and "prim::Loop" in lines[0]
    import json

    rep = json.loads(r.out)
    assert 5 < rep["quantized"]["metrics"]["sqnr_db"] < 60  # the weights are quantized
    s = Session.open(str(tmp_path / "loopy.ts"), data=str(tmp_path / "d.npz"))
    s.apply_preset("W8")
    w8 = s.check(label="W8").metrics["sqnr_db"]
    s.apply_preset("W8A8")
    assert s.check(label="W8A8").metrics["sqnr_db"] == pytest.approx(w8)  # activations: not simulated
    assert torch.equal(s.sim.float_weight("fc"), s.sim.float_model.fc.weight.detach())


def _one_line_error(cli, *args):
    r = cli(*args)
    assert r.code != 0 and len(r.err_lines) == 1 and "Traceback" not in r.err, r.err
    return r.err_lines[0]


@pytest.mark.parametrize("src", ["dyn.pt2", "dyn.ts"])
def test_a_damaged_archive_is_refused_not_loaded_with_wrong_weights(files, tmp_path, src, cli):
    """torch's reader skips the records' CRC: bytes flipped inside a weight loaded silently."""
    raw = bytearray((files / src).read_bytes())
    mid = len(raw) // 3
    raw[mid:mid + 512] = bytes(b ^ 0x55 for b in raw[mid:mid + 512])
    bad = tmp_path / f"flipped{Path(src).suffix}"
    bad.write_bytes(bytes(raw))
    if src.endswith(".ts"):  # the same check, in process
        from quantviz.core.sources import SourceError, load_model

        with pytest.raises(SourceError, match="fails its CRC check"):
            load_model(str(bad))
        return
    out = tmp_path / "out.json"
    line = _one_line_error(cli, "export", str(bad), "--data", str(files / "data.npz"), "--preset", "W8",
                           "--format", "json", "--out", str(out))
    assert "damaged" in line and "CRC" in line and bad.name in line
    assert not out.exists()  # nothing written


def test_a_shape_guard_names_the_fixed_dimension(files, tmp_path, cli):
    small = tmp_path / "small.npz"
    np.savez(small, x=np.zeros((4, 3, 16, 16), np.float32))
    line = _one_line_error(cli, "evaluate", str(files / "dyn.pt2"), "--data", str(small))
    assert "dimension 2 fixed at 32" in line and "fixed batch" not in line


@pytest.mark.parametrize("src", ["dyn.pt2", "one.pt2"])
def test_torchao_export_gives_the_convolutions_int8_kernels(files, tmp_path, src):
    """ResNet calls one ReLU module twice per block (a non-strict export names both calls
    alike, which made the x86 quantizer give up); a fixed-batch program is calibrated and
    exported at its batch size. Either way every convolution gets a pt2e int8 kernel."""
    pytest.importorskip("torchao")
    import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401 - registers the Q/DQ ops for loading

    from quantviz.core.model.data import call_model
    from quantviz.core.numerics.sqnr import tensor_sqnr_db

    s = Session.open(str(files / src), data=str(files / "data.npz"), batch_size=8)
    s.apply_preset("W8A8")
    res = s.export("torchao", tmp_path / "m.pt")
    assert not any("could not be exported" in n for n in res.notes), res.notes
    assert any(n.startswith("pt2e int8 program for conv1, layer1.0.conv1,") for n in res.notes), res.notes
    program = torch.export.load(str(tmp_path / "m_pt2e.pt2")).module()
    x = s.eval_data.x[:4]
    with torch.no_grad():
        s.sim.apply(s.specs)
        ref = call_model(s.sim.qmodel, x)
        got = torch.cat([program(x[i:i + 1]) for i in range(len(x))])
    assert tensor_sqnr_db(ref, got) > 45  # the int8 program computes what the simulation does
