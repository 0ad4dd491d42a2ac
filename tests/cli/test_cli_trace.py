import json
import math

import pytest

from quantviz.cli.main import main

RECIPE = '''
import torch
from torch import nn

def build_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 5))

def evaluation_data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(64, 8, generator=g)
'''

CONFIG = {"version": 1, "default": {"weight": {"bits": None}},
          "layers": {"2": {"weight": {"bits": 3}}}}


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    p = tmp_path_factory.mktemp("r") / "mlp.py"
    p.write_text(RECIPE)
    return str(p)


def test_trace_json_one_quantized_layer(recipe, tmp_path, capsys):
    cfg = tmp_path / "one.json"
    cfg.write_text(json.dumps(CONFIG))
    out = tmp_path / "trace.json"
    assert main(["trace", recipe, "--config", str(cfg), "--json", "--out", str(out), "--threads", "1"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [l["name"] for l in res["layers"]] == ["0", "2", "4"]
    first, mid, last = res["layers"]
    assert first["accumulated_sqnr_db"] is None and first["local_sqnr_db"] is None  # identical to float
    assert mid["weight_bits"] == 3 and math.isfinite(mid["accumulated_sqnr_db"])
    assert mid["local_sqnr_db"] == pytest.approx(mid["accumulated_sqnr_db"])
    assert last["local_sqnr_db"] is None and last["accumulated_sqnr_db"] is not None
    assert res["entry"] == "2" and res["samples"] == 32  # the recipe's 64 samples: 32 calibrate, 32 held out
    for l in res["layers"]:
        assert {"name", "type", "accumulated_sqnr_db", "local_sqnr_db", "input_clipped_fraction"} <= set(l)
    assert json.loads(out.read_text())["layers"] == res["layers"]


def test_trace_table_and_bad_input(recipe, capsys):
    assert main(["trace", recipe, "--preset", "W4A8", "--samples", "20", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert "20 samples" in lines[0]
    header = lines[1]
    for col in ("layer", "type", "accum dB", "local dB", "in clipped %"):
        assert col in header
    rows = [l.split() for l in lines[3:6]]
    assert [r[0] for r in rows] == ["0", "2", "4"]
    assert all(r[2] == "W4A8" for r in rows)
    assert "error enters" in lines[3]
    assert main(["trace", recipe, "--samples", "0"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--samples" in err
    assert main(["trace", recipe, "--preset", "W1"]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_trace_hf_text_model_counts_real_tokens(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    import torch

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "is", "good", "bad", "plot"]
    cfg = transformers.BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=64, num_labels=2)
    torch.manual_seed(0)
    folder = tmp_path / "bert"
    transformers.BertForSequenceClassification(cfg).save_pretrained(str(folder))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    transformers.BertTokenizer(str(folder / "vocab.txt")).save_pretrained(str(folder))
    txt = tmp_path / "reviews.txt"
    txt.write_text("1\tthe movie is good\n0\tbad\n0\tthe plot is bad bad bad bad\n", encoding="utf-8")
    assert main(["trace", str(folder), "--data", str(txt), "--preset", "W8A8", "--json", "--threads", "1"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["tokens"] == 6 + 3 + 9  # [CLS] ... [SEP] per line, padding left out
    names = [l["name"] for l in res["layers"]]
    assert names.index("bert.embeddings.word_embeddings") < names.index("bert.encoder.layer.0.attention.self.query")
    assert names[-1] == "classifier"
    assert all(l["accumulated_sqnr_db"] is not None for l in res["layers"] if l["weight_bits"])


@pytest.mark.parametrize("preset", ["W-FP8A-FP8", "MXFP4A-MXFP8"])
def test_trace_with_activations_in_a_float_or_block_format(recipe, preset, capsys):
    """Issue 22 A: the trace quantized every layer input on an integer grid and failed on FP8 / MX
    activations ('FormatParams' object has no attribute 'zero_point')."""
    assert main(["trace", recipe, "--preset", preset, "--json", "--threads", "1"]) == 0
    res = json.loads(capsys.readouterr().out)
    quant_in = [l for l in res["layers"] if l["input_local_sqnr_db"] is not None]
    assert len(quant_in) == 3
    assert all(0 < l["input_local_sqnr_db"] < 80 and l["input_clipped_fraction"] == 0.0 for l in quant_in)


def test_trace_of_a_bert_model_ends_with_the_model_output_row(tmp_path, capsys):
    """#22: a BertModel's last traced layer is its pooler, which the read output (last_hidden_state)
    does not depend on; the table and the JSON end with the model output's SQNR, the one `evaluate` reports."""
    transformers = pytest.importorskip("transformers")
    import numpy as np
    import torch

    cfg = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=32)
    torch.manual_seed(0)
    folder = tmp_path / "bert"
    transformers.BertModel(cfg).eval().save_pretrained(str(folder))
    ids = np.random.default_rng(0).integers(5, 40, size=(16, 10)).astype(np.int64)
    np.savez(tmp_path / "t.npz", input_ids=ids)
    args = [str(folder), "--data", str(tmp_path / "t.npz"), "--preset", "W4", "--threads", "1"]
    assert main(["trace", *args, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["not_feeding_output"] == ["pooler.dense"]
    assert main(["evaluate", *args, "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert res["output"]["sqnr_db"] == pytest.approx(ev["quantized"]["metrics"]["sqnr_db"], abs=1e-3)
    assert main(["trace", *args]) == 0
    lines = capsys.readouterr().out.splitlines()
    last = next(l for l in reversed(lines) if l.startswith("model output"))
    assert f"{res['output']['sqnr_db']:.1f}" in last
    assert "does not feed the output" in next(l for l in lines if l.startswith("pooler.dense"))
