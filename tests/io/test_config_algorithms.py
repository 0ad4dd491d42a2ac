"""The per-layer ``algorithm`` setting in config files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from quantviz.core.model.layers import LayerInfo
from quantviz.io.config import ConfigError, QuantConfig, load_config, preset


def _info(name, typ="Conv2d"):
    return LayerInfo(name, typ, (4, 1, 3, 3), 40, 0, True, 0)


def test_default_rule_and_layer_override_resolve_with_options():
    cfg = QuantConfig.from_dict({
        "version": 1,
        "default": {"weight": {"bits": 4, "algorithm": "adaround", "algorithm_options": {"iterations": 200}}},
        "rules": [{"match": {"type": "Linear"}, "weight": {"algorithm": "gptq", "algorithm_options": {"act_order": True}}}],
        "layers": {"features.0": {"weight": {"algorithm": "none"}}},
    })
    a = cfg.resolve(_info("features.3")).weight
    assert a.algorithm == "adaround" and a.options_dict() == {"iterations": 200}
    b = cfg.resolve(_info("fc", "Linear")).weight
    assert b.algorithm == "gptq" and b.options_dict() == {"act_order": True}  # adaround's options do not carry over
    c = cfg.resolve(_info("features.0")).weight
    assert c.algorithm == "none" and c.algorithm_options == ()
    # a round trip keeps every layer's meaning
    again = QuantConfig.from_dict(json.loads(cfg.to_json()))
    assert again.resolve(_info("fc", "Linear")) == cfg.resolve(_info("fc", "Linear"))


def test_default_options_do_not_change_the_spec():
    cfg = QuantConfig.from_dict({"version": 1, "default": {"weight": {"algorithm": "gptq",
                                                                     "algorithm_options": {"damp": 0.01}}}})
    assert cfg.resolve(_info("x")).weight.algorithm_options == ()  # 0.01 is the default: same cache key


@pytest.mark.parametrize("weight,field", [
    ({"algorithm": "adarond"}, "default.weight.algorithm"),
    ({"algorithm": 3}, "default.weight.algorithm"),
    ({"algorithm": "gptq", "algorithm_options": {"iterations": 5}}, "default.weight.algorithm_options.iterations"),
    ({"algorithm": "adaround", "algorithm_options": {"iterations": 1.5}}, "default.weight.algorithm_options.iterations"),
    ({"algorithm": "gptq", "algorithm_options": {"act_order": "yes"}}, "default.weight.algorithm_options.act_order"),
    ({"algorithm": "smoothquant", "algorithm_options": {"alpha": 2}}, "default.weight.algorithm_options.alpha"),
    ({"algorithm": "gptq", "algorithm_options": []}, "default.weight.algorithm_options"),
])
def test_bad_algorithm_settings_are_one_line_errors_naming_the_field(weight, field):
    with pytest.raises(ConfigError) as e:
        QuantConfig.from_dict({"version": 1, "default": {"weight": weight}})
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"config.{field}:")


def test_an_old_file_without_algorithms_still_loads():
    p = Path(__file__).resolve().parents[1] / "data" / "config_v1_minimal.json"
    cfg = load_config(p)
    assert all(s.weight.algorithm == "none" for s in [cfg.resolve(_info("features.0"))])


def test_preset_with_algorithm_from_the_cli_helper():
    from quantviz.cli.common import with_algorithm

    cfg = with_algorithm(preset("W3"), "adaround")
    assert cfg.resolve(_info("a")).weight.algorithm == "adaround" and cfg.resolve(_info("a")).weight.bits == 3
    with pytest.raises(ConfigError, match="--algorithm: unknown algorithm"):
        with_algorithm(preset("W3"), "magic")
