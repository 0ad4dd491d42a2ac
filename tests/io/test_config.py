"""The config file: the documented minimal form, validation, resolution, presets."""
import json
import re
from pathlib import Path

import pytest

from quantviz.core.model.layers import LayerInfo
from quantviz.io.config import PRESETS, ConfigError, QuantConfig, load_config, parse_config_text, preset, save_config

DATA = Path(__file__).resolve().parents[1] / "data"


def info(name, type_="Conv2d", act=True):
    return LayerInfo(name, type_, (8, 4, 3, 3), 296, 0, act, 0)


def test_minimal_form_loads_resolves_and_round_trips(tmp_path):
    cfg = load_config(DATA / "config_v1_minimal.json")
    s = cfg.resolve(info("features.3"))
    assert s.weight.bits == 4 and s.weight.range.method == "mse"
    assert s.weight.granularity == "per_channel" and s.weight.symmetric is True  # from default
    assert s.activation.bits is None
    assert cfg.resolve(info("classifier", "Linear")).weight.bits is None
    assert cfg.resolve(info("features.0")).weight.bits == 8
    out = tmp_path / "c.json"
    save_config(cfg, out)
    again = load_config(out)
    assert again == cfg
    original = json.loads((DATA / "config_v1_minimal.json").read_text())
    saved = json.loads(out.read_text())
    assert saved["version"] == 3  # saved in the current version ...
    for key in ("format", "layers"):
        assert saved[key] == original[key]
    # ... with the version-1 meaning spelled out: torch's symmetric grid for every tensor
    for kind in ("weight", "activation"):
        assert saved["default"][kind] == dict(original["default"][kind], grid="torch")


def test_version_1_files_keep_torch_grid_and_new_files_default_to_full():
    old = load_config(DATA / "config_v1_minimal.json")
    for name in ("features.0", "features.3"):
        s = old.resolve(info(name))
        assert s.weight.grid == "torch" and s.activation.grid == "torch"
    v1 = {"format": "quantviz-config", "version": 1, "rules": [{"match": {"type": "Linear"}, "weight": {"bits": 4}}],
          "layers": {"a": {"activation": {"bits": 8, "symmetric": True}}}}
    cfg = QuantConfig.from_dict(v1)
    assert cfg.resolve(info("x", "Linear")).weight.grid == "torch"
    assert cfg.resolve(info("a")).activation.grid == "torch"
    new = QuantConfig.from_dict({"format": "quantviz-config", "version": 2, "layers": {"a": {"weight": {"bits": 4}}}})
    assert new.resolve(info("a")).weight.grid == "full" and new.resolve(info("a")).activation.grid == "full"
    assert preset("W4").resolve(info("a")).weight.grid == "full"


def test_grid_in_defaults_rules_and_layers():
    cfg = QuantConfig.from_dict({
        "format": "quantviz-config", "version": 2,
        "default": {"weight": {"grid": "restricted"}, "activation": {"bits": 8, "symmetric": True, "grid": "torch"}},
        "rules": [{"match": {"type": "Linear"}, "weight": {"grid": "torch"}},
                  {"match": {"pattern": "^head"}, "weight": {"grid": "full"}}],
        "layers": {"body.fc": {"weight": {"grid": "restricted"}}},
    })
    assert cfg.resolve(info("conv")).weight.grid == "restricted"
    assert cfg.resolve(info("fc", "Linear")).weight.grid == "torch"
    assert cfg.resolve(info("head.fc", "Linear")).weight.grid == "full"
    assert cfg.resolve(info("body.fc", "Linear")).weight.grid == "restricted"
    assert cfg.resolve(info("conv")).activation.grid == "torch"
    again = QuantConfig.from_dict(json.loads(cfg.to_json()))
    assert again == cfg and again.resolve(info("body.fc", "Linear")) == cfg.resolve(info("body.fc", "Linear"))


@pytest.mark.parametrize("where,bad", [
    ("default.weight", "Full"), ("default.activation", 3), ("rules[0].weight", None), ("layers.a.b.weight", "narrow"),
])
def test_bad_grid_names_the_field(where, bad):
    obj = {"format": "quantviz-config", "version": 2, "default": {}, "rules": [{"match": {"type": "Linear"}}],
           "layers": {}}
    part = {"grid": bad}
    if where.startswith("default"):
        obj["default"][where.split(".")[1]] = part
    elif where.startswith("rules"):
        obj["rules"][0]["weight"] = part
    else:
        obj["layers"]["a.b"] = {"weight": part}
    with pytest.raises(ConfigError, match=re.escape(f"{where}.grid: unknown grid")) as e:
        QuantConfig.from_dict(obj)
    assert "\n" not in str(e.value) and "full, torch, restricted" in str(e.value)


def test_rules_by_type_and_pattern_and_field_by_field_override():
    cfg = QuantConfig.from_dict({
        "format": "quantviz-config", "version": 1,
        "default": {"weight": {"bits": 8}, "activation": {"bits": 8}},
        "rules": [{"match": {"type": "Linear"}, "weight": {"bits": 4, "granularity": "per_group", "group_size": 16}},
                  {"match": {"pattern": r"^head"}, "activation": {"bits": None}}],
        "layers": {"head.fc": {"weight": {"symmetric": False}}},
    })
    s = cfg.resolve(info("head.fc", "Linear"))
    assert (s.weight.bits, s.weight.granularity, s.weight.group_size, s.weight.symmetric) == (4, "per_group", 16, False)
    assert s.activation.bits is None
    s = cfg.resolve(info("body.conv"))
    assert s.weight.bits == 8 and s.activation.bits == 8
    emb = cfg.resolve(info("emb", "Embedding", act=False))
    assert emb.activation.bits is None  # embeddings take indices


@pytest.mark.parametrize("bits", [0, 1, 17, -3, "eight", True, 4.5])
def test_bad_bits_name_the_field(bits):
    obj = {"format": "quantviz-config", "version": 1, "default": {}, "layers": {"a.b": {"weight": {"bits": bits}}}}
    with pytest.raises(ConfigError, match=r"layers\.a\.b\.weight\.bits"):
        QuantConfig.from_dict(obj)


@pytest.mark.parametrize("rng,needle", [
    ({"method": "percentile", "p": 0}, "outside"),
    ({"method": "percentile", "p": 101}, "outside"),
    ({"method": "manual", "lo": 1.0, "hi": 1.0}, "smaller"),
    ({"method": "manual", "lo": 2.0, "hi": -1.0}, "smaller"),
    ({"method": "manual", "lo": 0.0}, "both"),
    ({"method": "magic"}, "unknown method"),
])
def test_bad_ranges(rng, needle):
    obj = {"format": "quantviz-config", "version": 1, "default": {"weight": {"range": rng}}}
    with pytest.raises(ConfigError, match=needle) as e:
        QuantConfig.from_dict(obj)
    assert "default.weight.range" in str(e.value)


def test_malformed_json_unknown_version_and_unknown_layer(tmp_path):
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse_config_text("{nope")
    with pytest.raises(ConfigError, match="newer"):
        QuantConfig.from_dict({"format": "quantviz-config", "version": 99})
    with pytest.raises(ConfigError, match="missing \"version\""):
        QuantConfig.from_dict({"format": "quantviz-config"})
    with pytest.raises(ConfigError, match="format"):
        QuantConfig.from_dict({"format": "something-else", "version": 1})
    p = tmp_path / "empty.json"
    p.write_text("")
    with pytest.raises(ConfigError, match="empty.json: empty file"):
        load_config(p)
    cfg = QuantConfig.from_dict({"format": "quantviz-config", "version": 1, "layers": {"features.30": {"weight": {"bits": 4}}}})
    with pytest.raises(ConfigError, match="did you mean features.3"):
        cfg.check_layers(["features.0", "features.3"])


def test_messages_are_one_line():
    for bad in ["[1, 2]", '{"version": 1, "default": 5}', '{"version": 1, "layers": {"x": {"weight": {"bits": 99}}}}']:
        with pytest.raises(ConfigError) as e:
            parse_config_text(bad, "cfg.json")
        assert "\n" not in str(e.value) and str(e.value).startswith("cfg.json")


def test_presets_documented_settings():
    assert {"float", "W8A8", "W8", "W6", "W4A8", "W4", "W3", "W2"} <= set(PRESETS)
    s = preset("W4A8").resolve(info("x"))
    assert (s.weight.bits, s.weight.granularity, s.weight.symmetric, s.weight.range.method) == (4, "per_channel", True, "minmax")
    assert (s.activation.bits, s.activation.symmetric) == (8, False)
    assert preset("w8").resolve(info("x")).activation.bits is None
    assert preset("float").resolve(info("x")).weight.bits is None
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("W9")


def test_unknown_top_level_keys_survive_round_trip():
    obj = {"format": "quantviz-config", "version": 1, "default": {}, "layers": {}, "qparams": {"a": 1}}
    assert QuantConfig.from_dict(obj).to_dict()["qparams"] == {"a": 1}
