"""AIMET encodings: export 1.0.0, import 1.0.0 and 0.6.1 back into a config."""
from __future__ import annotations

import json

import pytest
import torch

from quantviz.io.aimet import AimetError


def _qparams(s):
    out = {}
    for info in s.layers:
        spec = s.specs[info.name]
        wq = s.sim.quantize_weight(info.name, spec.weight)
        aq = s.sim.activation_qparams(info.name, spec.activation)
        out[info.name] = (wq.qparams if wq else None, aq)
    return out


def _same(a, b):
    if a is None or b is None:
        return a is None and b is None
    return (a.bits == b.bits and a.qmin == b.qmin and torch.equal(a.zero_point, b.zero_point)
            and torch.allclose(a.scale, b.scale, rtol=1e-6, atol=0))


@pytest.mark.parametrize("setup", ["W8A8", "mixed", "grids"])
def test_round_trip_gives_same_config_and_qparams(demo, tmp_path, setup):
    demo.apply_preset("W8A8")
    if setup == "grids":  # the three symmetric grid rules, on weights and on activations
        demo.edit_layers(["features.3"], {"weight": {"bits": 4, "grid": "torch"}})
        demo.edit_layers(["features.7"], {"weight": {"grid": "restricted"},
                                          "activation": {"symmetric": True, "grid": "restricted"}})
        demo.edit_layers(["classifier.1"], {"activation": {"symmetric": True, "grid": "torch"}})
    if setup == "mixed":
        demo.apply_preset("W4G32", ["classifier.1"])
        demo.edit_layers(["features.3"], {"weight": {"bits": 5, "range": {"method": "mse"}},
                                          "activation": {"bits": 6, "range": {"method": "percentile", "p": 99.9}}})
        demo.edit_layers(["classifier.3"], {"weight": {"bits": None}, "activation": {"bits": None}})
        demo.set_range("features.7", "activation", 0.0, 3.0)
    path = tmp_path / "model.encodings"
    res = demo.export("aimet", path)
    doc = json.loads(path.read_text())
    if setup == "grids":  # AIMET's layout cannot say "restricted": written as the int8 grid, with a note
        assert any("restricted grid" in n for n in res.notes)
        f7 = next(p for p in doc["param_encodings"] if p["name"] == "features.7.weight")
        assert f7["is_sym"] and set(f7["offset"]) == {-128}
    assert doc["version"] == "1.0.0"
    p0 = doc["param_encodings"][0]
    assert {"name", "enc_type", "dtype", "bw", "is_sym", "scale", "offset"} <= set(p0)
    assert p0["name"] == "features.0.weight"
    before_specs, before_qp = demo.specs, _qparams(demo)
    cfg = demo.import_aimet(path)
    after_specs = cfg.resolve_all(demo.layers)
    assert after_specs == before_specs
    demo.set_config(cfg)
    after_qp = _qparams(demo)
    for name in before_qp:
        assert _same(before_qp[name][0], after_qp[name][0]), name
        assert _same(before_qp[name][1], after_qp[name][1]), name


def test_import_061_per_tensor_manual_range(demo):
    demo.apply_preset("W8")
    enc = {"version": "0.6.1",
           "param_encodings": {"classifier.3.weight": [{"bitwidth": 4, "dtype": "int", "is_symmetric": "True",
                                                         "scale": 0.05, "offset": -8, "min": -0.4, "max": 0.35}]},
           "activation_encodings": {}}
    notes = []
    cfg = demo.import_aimet(enc, tensors={}, notes=notes)
    spec = cfg.resolve(demo.layer("classifier.3"))
    assert spec.weight.bits == 4 and spec.weight.granularity == "per_tensor" and spec.weight.symmetric
    qp = demo.sim.quantize_weight("classifier.3", spec.weight).qparams
    assert abs(float(qp.scale[0]) - 0.05) < 1e-7 and int(qp.zero_point[0]) == 0
    assert cfg.resolve(demo.layer("features.0")).weight.bits is None  # not in the file: float


def test_import_rejects_bad_files(demo, tmp_path):
    bad = tmp_path / "x.encodings"
    bad.write_text("{nope")
    with pytest.raises(AimetError, match="x.encodings"):
        demo.import_aimet(bad, tensors={})
    with pytest.raises(AimetError, match="version"):
        demo.import_aimet({"version": "9.9", "param_encodings": []}, tensors={})
    notes = []
    demo.import_aimet({"version": "1.0.0", "param_encodings": [{"name": "nope.weight", "bw": 8, "scale": [1.0], "offset": [0]}],
                       "activation_encodings": []}, tensors={}, notes=notes)
    assert any("nope.weight" in n for n in notes)
