"""Everything with everything (#22 §3): number formats x algorithms x states through every consumer.

Each consumer must read the same resolved state: the trace's last layer equals the
re-check's output SQNR, the description names the format and the algorithm that ran,
sizes agree, save / load, undo / redo and recovery give back the same numbers, and
every export either writes a file or refuses in one line. Nothing raises anything else."""
import json
import math

import pytest
import torch

from quantviz.core.analysis.candidates import parse_candidates
from quantviz.core.errors import QuantvizError
from quantviz.core.numerics.describe import describe_layer
from quantviz.io.config import ConfigError, QuantConfig
from quantviz.io.export import FORMATS as EXPORTS
from quantviz.session import Session

FAST = {"adaround": {"iterations": 40}, "gptq": {}}  # a short AdaRound: the combination is the point, not its optimum
GRIDS = {
    "int": {"format": "int", "bits": 4},
    "int_group": {"format": "int", "bits": 4, "granularity": "per_group", "group_size": 16},
    "fp8": {"format": "fp8_e4m3"},
    "mxfp4": {"format": "mxfp4"},
    "nvfp4": {"format": "nvfp4"},
    "q4_k": {"format": "q4_k"},  # llama.cpp's types: super-blocks of 256, rows zero-padded to them
    "q8_0": {"format": "q8_0"},
}
# (grid, algorithm): algorithms fit integer grids only (the refusal is tested below)
COMBOS = [("int", "none"), ("int", "adaround"), ("int", "gptq"), ("int_group", "none"), ("int_group", "gptq"),
          ("fp8", "none"), ("mxfp4", "none"), ("nvfp4", "none"), ("q4_k", "none"), ("q8_0", "none")]


ALL_EXPORTS = {("int", "gptq"), ("int_group", "none"), ("nvfp4", "none"), ("q4_k", "none")}


@pytest.fixture(scope="module")
def demo():
    return Session.open("demo", batch_size=128)


def config_of(s: Session, grid: str, algorithm: str) -> QuantConfig:
    """Every layer on ``grid`` with ``algorithm``, except the last one, kept on int8 (a mixed config)."""
    w = dict(GRIDS[grid])
    if algorithm != "none":
        w.update(algorithm=algorithm, algorithm_options=FAST[algorithm])
    cfg = QuantConfig(default={"weight": w}, name=f"{grid}+{algorithm}")
    cfg.layers[s.layer_names[-1]] = {"weight": {"format": "int", "bits": 8}}
    return cfg


def one_line(exc: BaseException) -> bool:
    return isinstance(exc, QuantvizError) and "\n" not in str(exc) and len(str(exc)) < 400


def assert_consistent(s: Session, cfg_name: str):
    """The re-check, the trace, the size and the description read one state."""
    res = s.check()
    sqnr = res.metrics["sqnr_db"]
    assert math.isfinite(sqnr)
    tr = s.run_trace()
    assert tr.output_sqnr_db == pytest.approx(sqnr, abs=1e-3), cfg_name  # the trace's last row
    assert tr.layers[-1].accumulated_sqnr_db == pytest.approx(sqnr, abs=1e-3), cfg_name  # the demo's fc is its output
    assert not tr.not_feeding
    assert res.size["quantized_bytes"] == s.size().quantized_bytes
    for name, spec in s.specs.items():
        text = describe_layer(spec, sep=" ")
        if spec.weight.format != "int":
            assert spec.weight.algorithm == "none"
        else:
            assert (spec.weight.algorithm in text) == (spec.weight.algorithm != "none"), (name, text)
    return res


@pytest.mark.parametrize("grid,algorithm", COMBOS, ids=[f"{g}+{a}" for g, a in COMBOS])
def test_every_consumer_reads_the_same_state(demo, grid, algorithm, tmp_path):
    s = demo
    s.set_config(config_of(s, grid, algorithm), f"{grid}+{algorithm}")
    res = assert_consistent(s, f"{grid}+{algorithm}")
    specs = dict(s.specs)

    # undo / redo come back to the same resolved state and the same numbers
    assert s.undo() and s.redo()
    assert dict(s.specs) == specs
    assert s.check().metrics == pytest.approx(res.metrics)

    # a saved session reopens on the same specs and numbers
    path = s.save(tmp_path / "s.qvz.json")
    s2 = Session.load(path)
    assert dict(s2.specs) == specs
    assert s2.check().metrics == pytest.approx(res.metrics, abs=1e-4)

    # the recovery file restores it too
    from quantviz.session.autosave import load_recovery, write_recovery

    rec = load_recovery(write_recovery(s, tmp_path / "rec.json"))
    assert QuantConfig.from_dict(rec["config"]).resolve_all(s.layers) == specs

    # every export writes its file or refuses in one line; the JSON names what the table shows
    # (all of them for one combination per kind of grid, the quick ones for the rest)
    for fmt in EXPORTS if (grid, algorithm) in ALL_EXPORTS else ("json", "onnx"):
        out = tmp_path / f"m.{fmt}"
        try:
            r = s.export(fmt, out)
        except Exception as exc:  # noqa: BLE001 - the assertion is on what kind of failure it is
            assert one_line(exc), f"{fmt}: {type(exc).__name__}: {exc}"
            continue
        assert all(p.is_file() and p.stat().st_size > 0 for p in r.paths), fmt
        if fmt == "json":
            doc = json.loads(out.read_text())
            back = QuantConfig.from_dict(doc["config"] if "config" in doc else doc).resolve_all(s.layers)
            assert back == specs


@pytest.mark.parametrize("grid", ["int", "nvfp4"])
def test_after_qat_every_consumer_reads_the_trained_state(demo, grid, tmp_path):
    from quantviz.core.training.qat import QATOptions

    s = demo
    s.set_config(config_of(s, grid, "none"), f"{grid} before QAT")
    before = s.check().metrics["sqnr_db"]
    s.run_qat(QATOptions(steps=10, lr=1e-3))
    assert s.weights_tag is not None
    res = assert_consistent(s, f"{grid} after QAT")
    assert res.metrics["sqnr_db"] != pytest.approx(before, abs=1e-4)
    path = s.save(tmp_path / "q.qvz.json")
    s2 = Session.load(path)
    assert s2.weights_tag == s.weights_tag
    assert s2.check().metrics == pytest.approx(res.metrics, abs=1e-4)
    r = s.export("report", tmp_path / "q.html")
    assert "QAT" in r.paths[0].read_text() or "qat" in r.paths[0].read_text()
    assert s.undo()  # back to the untrained weights
    assert s.check().metrics["sqnr_db"] == pytest.approx(before, abs=1e-4)


def test_sensitivity_methods_and_search_on_a_mixed_format_config(demo):
    """Every method sweeps a config mixing int, per-group, MXFP4 and NVFP4 layers; a search over
    format and algorithm candidates picks a point whose size and metrics are those of applying it."""
    s = demo
    names = s.layer_names
    cfg = QuantConfig(default={"weight": {"format": "int", "bits": 8}}, name="mixed")
    cfg.layers[names[0]] = {"weight": {"format": "nvfp4"}}
    cfg.layers[names[1]] = {"weight": {"format": "mxfp4"}}
    cfg.layers[names[2]] = {"weight": {"format": "int", "bits": 4, "granularity": "per_group", "group_size": 16}}
    s.set_config(cfg, "mixed formats")
    for method in ("e2e", "loo", "local", "hessian"):
        r = s.run_sensitivity(method, bits=(2, 8))
        assert {e["name"] for e in r["layers"]} >= set(names[:3]), method
    res = s.run_search(avg_bits=5, bits=parse_candidates("int4,int8,nvfp4,mxfp4,int4+gptq"), pareto_steps=2)
    for q in [res["chosen"]] + res["pareto"]:
        specs = QuantConfig.from_dict(q["config"]).resolve_all(s.layers)
        for spec in specs.values():
            assert spec.weight.format == "int" or spec.weight.algorithm == "none"
        assert s.size(specs).quantized_bytes == q["size_bytes"]
    again = s.check(config=QuantConfig.from_dict(res["chosen"]["config"]), record=False)
    assert again.metrics == pytest.approx(res["chosen"]["metrics"], abs=1e-4)


def test_an_algorithm_on_a_format_without_an_integer_grid_is_refused_in_one_line(demo):
    """An algorithm fits an integer grid; on NVFP4 it once ran INT4 AdaRound and reported its number
    under the NVFP4 size (28.01 dB for 'NVFP4 + AdaRound', exactly int4's)."""
    s = demo
    name = s.layer_names[0]
    s.set_config(QuantConfig(default={"weight": {"format": "int", "bits": 4}}), "int4")
    with pytest.raises(ConfigError, match="fits integer grids") as e:
        s.edit_layers([name], {"weight": {"format": "nvfp4", "algorithm": "adaround"}})
    assert one_line(e.value)
    s.edit_layers([name], {"weight": {"algorithm": "gptq"}})
    s.edit_layers([name], {"weight": {"format": "nvfp4"}})  # choosing the format drops the algorithm
    assert s.spec(name).weight.algorithm == "none" and s.spec(name).weight.format == "nvfp4"
    with pytest.raises(ConfigError, match=f"layers.{name}.*fits integer grids"):
        s.edit_layers([name], {"weight": {"algorithm": "gptq"}})
    with pytest.raises(ConfigError, match="must be a name"):
        s.edit_layers([name], {"weight": {"algorithm": None}})
    from quantviz.core.algorithms import run_algorithm
    from quantviz.core.numerics.spec import WeightSpec

    with pytest.raises(QuantvizError, match="fits integer grids"):  # the engine's own guard
        run_algorithm(torch.randn(4, 8), WeightSpec(bits=4, format="nvfp4", algorithm="gptq"), None)


def _bert_folder(tmp_path):
    """A tiny random ``BertModel`` (output ``last_hidden_state``, a pooler that does not feed it) and token data."""
    transformers = pytest.importorskip("transformers")
    import numpy as np

    cfg = transformers.BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=32)
    torch.manual_seed(0)
    folder = tmp_path / "bert"
    transformers.BertModel(cfg).eval().save_pretrained(str(folder))
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 40, size=(24, 12)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[::3, 8:] = 0  # some padding: real tokens only count
    np.savez(tmp_path / "tokens.npz", input_ids=ids, attention_mask=mask)
    return folder, tmp_path / "tokens.npz"


@pytest.mark.parametrize("grid", ["int", "nvfp4"])
def test_trace_model_output_row_is_the_recheck_output_sqnr_on_bert(tmp_path, grid):
    """#22: on a BertModel the trace's last layer is the pooler, which does not feed the output the
    metrics read (last_hidden_state): its row read 18.46 dB where the output SQNR read 21.51. The
    trace's model-output row is the re-check's output SQNR, and the pooler is marked as not feeding it."""
    folder, data = _bert_folder(tmp_path)
    s = Session.open(str(folder), data=str(data), batch_size=16)
    s.set_config(config_of(s, grid, "none"), grid)
    sqnr = s.check().metrics["sqnr_db"]
    tr = s.run_trace()
    assert tr.output_sqnr_db == pytest.approx(sqnr, abs=1e-3)
    assert tr.layers[-1].name == "pooler.dense" and tr.layers[-1].accumulated_sqnr_db != pytest.approx(sqnr, abs=0.01)
    assert tr.not_feeding == ["pooler.dense"]
    assert all(l.feeds_output for l in tr.layers[:-1])
    back = type(tr).from_dict(json.loads(json.dumps(tr.to_dict())))
    assert back.output_sqnr_db == pytest.approx(tr.output_sqnr_db) and back.not_feeding == ["pooler.dense"]
    s.edit_layers([s.layer_names[0]], {"weight": {"format": "int", "bits": 3}})  # incremental trace: same rule
    assert s.run_trace().output_sqnr_db == pytest.approx(s.check().metrics["sqnr_db"], abs=1e-3)
