"""GPTQ on a Hugging Face folder (a small BERT sentence encoder built here)."""
from __future__ import annotations

import random

import pytest
import torch

WORDS = "the a movie plot actor scene story music is was good bad great boring long funny sad very not and".split()


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("hf") / "tiny-bert"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    cfg = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.BertModel(cfg).eval().save_pretrained(str(folder))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    transformers.BertTokenizer(str(folder / "vocab.txt")).save_pretrained(str(folder))
    rnd = random.Random(0)
    text = folder.parent / "sentences.txt"
    text.write_text("\n".join(" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(3, 10))) for _ in range(96)) + "\n",
                    encoding="utf-8")
    from quantviz.session import Session

    return Session.open(str(folder), data=str(text), batch_size=32)


def test_gptq_on_a_bert_folder(bert):
    from quantviz.cli.common import with_algorithm
    from quantviz.io.config import preset

    s = bert
    rtn = s.check(config=preset("W4G32"), record=False).metrics
    cfg = with_algorithm(preset("W4G32"), "gptq")
    res = s.check(config=cfg, record=False).metrics
    specs = cfg.resolve_all(s.layers)
    linear = [l.name for l in s.layers if l.type == "Linear"]
    embed = [l.name for l in s.layers if l.type == "Embedding"]
    assert linear and embed
    for n in linear:
        info = s.sim.quantize_weight(n, specs[n].weight, compute=False).algorithm_info
        assert "skipped" not in info and info["output_sqnr_db"] >= info["output_sqnr_db_nearest"] - 0.5
    for n in embed:
        assert "Embedding" in s.sim.quantize_weight(n, specs[n].weight, compute=False).algorithm_info["skipped"]
    assert res["cosine"] >= rtn["cosine"] - 2e-3  # GPTQ does not make the encoder's output worse
    assert res["cosine"] > 0.9


def test_hessian_sensitivity_on_bert_scores_the_unread_pooler_zero(bert):
    """BERT's pooler does not feed the read output (last_hidden_state): the Hessian sweep failed
    ("differentiated Tensor ... not used in the graph"); now the pooler scores 0 and the rest are measured."""
    s = bert
    s.apply_preset("W4")
    res = s.run_sensitivity("hessian", bits=(4,))
    score = {e["name"]: e["results"]["4"]["metrics"]["hessian_score"] for e in res["layers"]}
    assert set(score) == set(s.layer_names)
    assert score["pooler.dense"] == 0
    assert all(v != 0 for n, v in score.items() if n.startswith("encoder."))  # measured (a noisy estimate)
