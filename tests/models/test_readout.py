"""A recipe's OUTPUT and MASK: the output the metrics read and the tokens they count."""
from __future__ import annotations

import math
import textwrap

import pytest
import torch
import torch.nn.functional as F

from quantviz.core.errors import QuantvizError, SourceError
from quantviz.core.sources import load_model
from quantviz.session import Session

RECIPE = '''
import torch
from torch import nn

TASK = "causal_lm"
{attrs}
VOCAB, DIM = 31, 16


class TokenLM(nn.Module):
    """Per-token: a real token's logits never depend on padding."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, DIM)
        self.fc1 = nn.Linear(DIM, 32)
        self.fc2 = nn.Linear(32, DIM)
        self.head = nn.Linear(DIM, VOCAB)

    def forward(self, input_ids, pad_mask=None):
        h = self.emb(input_ids)
        h = h + self.fc2(torch.relu(self.fc1(h)))
        logits = self.head(h)
        return {ret}


def build_model():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return TokenLM()


def evaluation_data():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, VOCAB, (8, 12), generator=g)
    m = torch.ones(8, 12, dtype=torch.long)
    for i in range(8):
        m[i, 4 + i:] = 0  # 4 .. 11 real tokens; the padded positions keep junk ids
    return {{"x": {{"input_ids": ids, "pad_mask": m}}}}
'''

DICT_OUT = '{"hidden": h, "scores": logits}'  # the metric output is neither first nor "logits"
TUPLE_OUT = "(h, logits)"


def _recipe(tmp_path, attrs: str, ret: str = DICT_OUT, name: str = "lm_recipe.py"):
    p = tmp_path / name
    p.write_text(RECIPE.format(attrs=textwrap.dedent(attrs), ret=ret))
    return p


def _by_hand(s: Session, pick, specs=None) -> dict:
    """SQNR, cosine, KL, agreement and perplexity of ``specs`` (default: the session's) over the real tokens."""
    x = s.eval_data.x
    ids, real = x["input_ids"], x["pad_mask"].bool()
    s.sim.apply(specs or s.specs)
    with torch.no_grad():
        f = pick(s.sim.float_model(**x)).double()
        q = pick(s.sim.qmodel(**x)).double()
    fr, qr = f[real], q[real]
    sqnr = 10 * math.log10(float((fr ** 2).sum()) / float(((fr - qr) ** 2).sum()))
    fm, qm = f * real[..., None], q * real[..., None]  # per sample over its real tokens
    cos = F.cosine_similarity(fm.flatten(1), qm.flatten(1), dim=1).mean().item()
    lf, lq = fr.log_softmax(-1), qr.log_softmax(-1)
    kl = (lf.exp() * (lf - lq)).sum(-1).mean().item()
    agree = (fr.argmax(-1) == qr.argmax(-1)).double().mean().item()
    valid = real[:, :-1] & real[:, 1:]
    ppl = math.exp(F.cross_entropy(q[:, :-1][valid], ids[:, 1:][valid]).item())
    fppl = math.exp(F.cross_entropy(f[:, :-1][valid], ids[:, 1:][valid]).item())
    return {"sqnr_db": sqnr, "cosine": cos, "kl_div": kl, "top1_agreement": agree, "perplexity": ppl,
            "float_perplexity": fppl}


CASES = {
    "key_and_input_name": ('OUTPUT = "scores"\nMASK = "pad_mask"\n', DICT_OUT, lambda o: o["scores"]),
    "index_and_function": ('OUTPUT = 1\nMASK = lambda inputs: inputs["pad_mask"] > 0\n', TUPLE_OUT, lambda o: o[1]),
    "function_output": ('OUTPUT = lambda out: out["scores"]\nMASK = "pad_mask"\n', DICT_OUT, lambda o: o["scores"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_metrics_read_the_chosen_output_over_the_masked_tokens(tmp_path, case):
    attrs, ret, pick = CASES[case]
    s = Session.open(str(_recipe(tmp_path, attrs, ret)), batch_size=4)
    assert s.reference.metrics["perplexity"] == pytest.approx(_by_hand(s, pick)["float_perplexity"], rel=1e-5)
    s.apply_preset("W4A8")
    got = s.check(label="W4A8").metrics
    want = _by_hand(s, pick)
    for k in ("sqnr_db", "cosine", "kl_div", "top1_agreement", "perplexity"):
        assert got[k] == pytest.approx(want[k], rel=1e-4, abs=1e-6), k
    # the plain evaluation (no incremental re-check) reads the same output and mask
    from quantviz.core.sim.evaluate import evaluate_quantized

    plain = evaluate_quantized(s.sim.qmodel, s.eval_data, s.reference)
    assert plain["sqnr_db"] == pytest.approx(want["sqnr_db"], rel=1e-6)


def test_without_readout_the_metrics_differ(tmp_path):
    """The recipe attributes matter: without them the first output (hidden states) over every
    position (no attention_mask in these inputs) is read."""
    a = Session.open(str(_recipe(tmp_path, 'OUTPUT = "scores"\nMASK = "pad_mask"\n', name="a.py")), batch_size=4)
    b = Session.open(str(_recipe(tmp_path, "TASK = None\n", name="b.py")), batch_size=4)
    for s in (a, b):
        s.apply_preset("W4A8")
    ma, mb = a.check(label="x").metrics, b.check(label="x").metrics
    assert "perplexity" in ma and "perplexity" not in mb
    assert ma["sqnr_db"] != pytest.approx(mb["sqnr_db"], abs=1e-3)


def test_sensitivity_search_and_trace_use_the_readout(tmp_path):
    s = Session.open(str(_recipe(tmp_path, 'OUTPUT = "scores"\nMASK = "pad_mask"\n')), batch_size=4)
    s.apply_preset("W8")
    res = s.run_sensitivity("e2e", bits=(3,), act_bits=(), cache=False)
    cell = next(l for l in res["layers"] if l["name"] == "fc1")["results"]["3"]["metrics"]
    # the e2e cell: only fc1 at 3 bits (the config's other weight settings), everything else float
    from quantviz.core.analysis.sensitivity import weight_setting
    from quantviz.core.numerics.spec import FLOAT_SPEC

    specs = {n: FLOAT_SPEC for n in s.layer_names}
    specs["fc1"] = weight_setting(s.specs["fc1"], 3)
    want = _by_hand(s, lambda o: o["scores"], specs)
    for k in ("sqnr_db", "kl_div", "perplexity"):  # (KL of near-equal float32 distributions: 1e-3)
        assert cell[k] == pytest.approx(want[k], rel=1e-3), k
    found = s.run_search(avg_bits=5.0, bits=(3, 8), metric="perplexity", pareto_steps=2, cache=False)
    chosen = found["chosen"]
    from quantviz.io.config import QuantConfig

    specs = QuantConfig.from_dict(chosen["config"]).resolve_all(s.layers)
    assert chosen["metrics"]["perplexity"] == pytest.approx(_by_hand(s, lambda o: o["scores"], specs)["perplexity"],
                                                            rel=1e-4)
    # calibration counted the MASK's tokens only: one row of 16 features per real token of fc1's input
    h = s.sim.act_obs["fc1"].histogram()
    assert int(torch.as_tensor(h.counts).sum()) == int(s.calib_data.x["pad_mask"].sum()) * 16
    tr = s.run_trace()
    assert tr.tokens == int(s.eval_data.x["pad_mask"].sum())  # the trace counts the MASK's tokens


BAD = [
    ('OUTPUT = "nope"\n', "OUTPUT 'nope' is not in the model's output (it has: hidden, scores)"),
    ("OUTPUT = 5\n", "OUTPUT = 5 is out of range"),
    ('MASK = "missing"\n', "MASK 'missing' is not among the inputs (they are: input_ids, pad_mask)"),
    ("MASK = lambda inputs: 1 / 0\n", "MASK(inputs) raised ZeroDivisionError"),
    ('MASK = lambda inputs: inputs["pad_mask"][:, 0]\n', "MASK gives (2,): expected a (batch, tokens) tensor"),
    ('MASK = lambda inputs: inputs["pad_mask"][:, :5]\n', "MASK gives (2, 5) but the output the metrics read"),
    ('OUTPUT = lambda out: out["hidden"].sum()\n', "OUTPUT gives shape (): expected the batch axis"),
    ('OUTPUT = "hidden"\n', "token ids reach 30 but the output read has 16 classes"),
]


@pytest.mark.parametrize("attrs,message", BAD, ids=[b[0].split("=")[0].strip() + str(i) for i, b in enumerate(BAD)])
def test_bad_output_or_mask_is_one_line_naming_the_attribute(tmp_path, attrs, message):
    with pytest.raises(QuantvizError) as e:
        Session.open(str(_recipe(tmp_path, attrs)), batch_size=4)
    text = str(e.value)
    assert "\n" not in text and text.startswith("lm_recipe.py: ") and message in text, text


def test_wrong_kind_of_value_is_refused_at_load(tmp_path):
    with pytest.raises(SourceError, match=r"lm_recipe.py: OUTPUT must be .* got a list"):
        load_model(str(_recipe(tmp_path, "OUTPUT = [1]\n")))
    with pytest.raises(SourceError, match=r"lm_recipe.py: MASK must be .* got a int"):
        load_model(str(_recipe(tmp_path, "MASK = 3\n")))


def test_cli_error_is_one_line(tmp_path, cli):
    p = _recipe(tmp_path, 'OUTPUT = "nope"\n')
    r = cli("evaluate", p, "--preset", "W8")
    assert r.code != 0 and len(r.err_lines) == 1 and "OUTPUT 'nope'" in r.err_lines[0], r.err


def test_score_cache_keys_tell_readouts_apart(tmp_path):
    from quantviz.session.scale import score_store

    stores = []
    for i, mask in enumerate(("", 'MASK = "pad_mask"\n', "MASK = lambda inputs: inputs['pad_mask'] > 0\n",
                              "MASK = lambda inputs: inputs['input_ids'] > 3\n")):
        attrs = 'OUTPUT = "scores"\n' + mask
        d = tmp_path / f"r{i}"
        d.mkdir()
        s = Session.open(str(_recipe(d, attrs)), batch_size=4)  # same name, same weights, same data
        stores.append(score_store(s, s.parts(), "local", {}, root=tmp_path / "cache").folder)
    assert len(set(stores)) == 4
