"""Language-model metrics: perplexity, KL divergence, masking of padded tokens, text data."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from quantviz.core.errors import QuantvizError
from quantviz.core.sim.evaluate import MetricStream, primary_metric
from quantviz.core.model.lmmetrics import batch_aux
from quantviz.session import Session

from .fixtures import add_word_tokenizer, tiny_gpt2, token_npz, word_text

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    d = tmp_path_factory.mktemp("lm")
    folder = tiny_gpt2(d / "gpt2")
    return d, folder


def _manual_sqnr(f, q):
    return 10 * math.log10(float((f.double() ** 2).sum()) / float(((f - q).double() ** 2).sum()))


def test_padding_never_enters_a_metric():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(4, 6, 11, generator=g)
    q = f + 0.05 * torch.randn(4, 6, 11, generator=g)
    mask = torch.ones(4, 6, dtype=torch.long)
    mask[1, 3:] = 0
    mask[3, 2:] = 0
    ids = torch.randint(0, 11, (4, 6), generator=g)
    aux = batch_aux({"input_ids": ids, "attention_mask": mask}, "causal_lm")
    snaps = []
    for junk in (0.0, 1e3):  # whatever the padded positions hold, nothing changes
        f2, q2 = f.clone(), q.clone()
        pad = ~mask.bool()
        f2[pad] = junk
        q2[pad] = -junk
        st = MetricStream(4, task="causal_lm")
        st.update(f2, q2, None, aux)
        snaps.append(st.snapshot()["metrics"])
    assert snaps[0] == pytest.approx(snaps[1], rel=1e-9)
    real = mask.bool()
    m = snaps[0]
    assert m["sqnr_db"] == pytest.approx(_manual_sqnr(f[real], q[real]), abs=1e-6)
    agree = (f[real].argmax(-1) == q[real].argmax(-1)).float().mean().item()
    assert m["top1_agreement"] == pytest.approx(agree)
    lf, lq = f[real].log_softmax(-1), q[real].log_softmax(-1)
    kl = (lf.exp() * (lf - lq)).sum(-1).mean().item()
    assert m["kl_div"] == pytest.approx(kl, rel=1e-5)
    valid = real[:, :-1] & real[:, 1:]
    ce = torch.nn.functional.cross_entropy(q[:, :-1][valid], ids[:, 1:][valid])
    assert m["perplexity"] == pytest.approx(math.exp(ce.item()), rel=1e-5)


def test_hidden_states_get_no_agreement_or_kl():
    f = torch.randn(2, 5, 8)
    st = MetricStream(2, task="hidden")
    st.update(f, f + 0.01, None)
    assert set(st.snapshot()["metrics"]) == {"sqnr_db", "cosine"}


def test_float_perplexity_matches_transformers_loss(lm, tmp_path):
    import transformers

    d, folder = lm
    data = token_npz(tmp_path / "ids.npz", n=6, seq=20)
    s = Session.open(str(folder), data=str(data), batch_size=4)
    assert primary_metric(s.reference.metrics) == "perplexity"
    model = transformers.GPT2LMHeadModel.from_pretrained(str(folder)).eval()
    ids = s.eval_data.x["input_ids"]
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss
    assert s.reference.metrics["perplexity"] == pytest.approx(math.exp(loss.item()), rel=1e-4)
    assert s.reference.metrics["kl_div"] == 0.0
    s.apply_preset("W4")
    res = s.check(label="W4")
    assert res.metrics["perplexity"] != s.reference.metrics["perplexity"]
    assert res.metrics["kl_div"] > 0
    res2 = s.check(label="W4 again")  # the incremental re-check streams the same metrics
    assert res2.metrics["perplexity"] == pytest.approx(res.metrics["perplexity"], rel=1e-6)
    sens = s.run_sensitivity("e2e", bits=(4,), act_bits=(), metric="kl_div")
    assert sens["metric"] == "kl_div"
    assert all(e["results"]["4"]["drop"]["kl_div"] >= 0 for e in sens["layers"])
    with pytest.raises(QuantvizError, match="not measured"):
        s.run_sensitivity("e2e", bits=(4,), act_bits=(), metric="accuracy")


def test_padded_batches_match_unpadded(lm, tmp_path):
    """Right padding changes no real token of a causal LM: metrics of a padded set equal
    those of the same real tokens without padding."""
    d, folder = lm
    padded = token_npz(tmp_path / "pad.npz", n=4, seq=16, pad_from=8, seed=3)
    s = Session.open(str(folder), data=str(padded), batch_size=4)
    s.apply_preset("W4")
    mp = s.check(label="W4").metrics
    import numpy as np

    z = np.load(padded)
    ids, mask = z["input_ids"], z["attention_mask"]
    short = tmp_path / "short.npz"
    np.savez(short, input_ids=ids[::2, :8], attention_mask=mask[::2, :8])
    full = tmp_path / "full.npz"
    np.savez(full, input_ids=ids[1::2], attention_mask=mask[1::2])
    # the perplexity of the padded set pools the tokens of both halves
    ce = []
    for path in (short, full):
        t = Session.open(str(folder), data=str(path), batch_size=4)
        t.apply_preset("W4")
        m = t.check(label="W4").metrics
        n = t.eval_data.x["input_ids"].shape[0] * (t.eval_data.x["input_ids"].shape[1] - 1)
        ce.append((math.log(m["perplexity"]), n))
    pooled = math.exp(sum(c * n for c, n in ce) / sum(n for _, n in ce))
    assert mp["perplexity"] == pytest.approx(pooled, rel=1e-4)


def test_text_file_is_cut_into_sequences(lm, tmp_path):
    d, folder = lm
    add_word_tokenizer(folder)
    txt = tmp_path / "corpus.txt"
    txt.write_text(word_text(130) + "\n" + word_text(70, seed=1) + "\n")
    s = Session.open(str(folder), data=str(txt), seq_len=32, batch_size=4)
    x = s.eval_data.x
    assert tuple(x["input_ids"].shape) == (200 // 32, 32)
    assert "perplexity" in s.reference.metrics
    s2 = Session.open(str(folder), data=str(txt), seq_len=1000, batch_size=4)  # capped by n_positions (64)
    assert s2.eval_data.x["input_ids"].shape[1] == 64


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "quantviz", *args], capture_output=True, text=True, timeout=300)


def _cli_in_process(capsys, *args) -> tuple[int, str]:
    """Run the CLI in this process (the one-line error path is the same as a subprocess's)."""
    from quantviz.cli.main import main

    capsys.readouterr()
    code = main(list(args))
    return code, capsys.readouterr().err


def test_bad_text_inputs_are_one_line(lm, tmp_path, capsys):
    d, folder = lm
    add_word_tokenizer(folder)
    short = tmp_path / "short.txt"
    short.write_text("w5 w6 w7\n")
    code, err = _cli_in_process(capsys, "evaluate", str(folder), "--data", str(short), "--seq-len", "16")
    assert code != 0
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "too short for one sequence of 16 tokens" in lines[0]
    bare = tiny_gpt2(tmp_path / "bare")
    code, err = _cli_in_process(capsys, "evaluate", str(bare), "--data", str(short))
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code != 0 and len(lines) == 1 and "tokenizer" in lines[0]


@pytest.mark.timeout(1200)  # four fresh interpreters importing torch and transformers: slow on a busy machine
def test_cli_stderr_is_quiet_unless_debug(lm, tmp_path):
    d, folder = lm  # evaluate loads the folder as inspect does, and runs the model too
    add_word_tokenizer(folder)
    txt = tmp_path / "t.txt"
    txt.write_text(word_text(400))  # enough sequences to hold half out (fewer: a note says the figures are on
    r = _cli("evaluate", str(folder), "--data", str(txt), "--seq-len", "16", "--preset", "W8A8")  # calibration data)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == ""
    assert "held-out samples" in r.stdout
    # what the libraries print on import here shows again with --debug
    noise = subprocess.run([sys.executable, "-c", "import torchao.quantization, transformers"], capture_output=True,
                           text=True, timeout=300).stderr.strip()
    r = _cli("inspect", str(folder), "--debug")
    assert r.returncode == 0, r.stderr
    if noise:
        assert noise.splitlines()[0][:40] in r.stderr


def test_padding_never_enters_calibration(lm, tmp_path):
    """Activation ranges come from the real tokens only: whatever the padded positions
    hold, a W8A8 evaluation gives the same metrics and the same activation histograms."""
    import numpy as np

    d, folder = lm
    padded = token_npz(tmp_path / "pad.npz", n=4, seq=16, pad_from=6, seed=4)
    z = np.load(padded)
    ids, mask = z["input_ids"].copy(), z["attention_mask"]
    g = np.random.default_rng(0)
    ids[mask == 0] = g.integers(1, 97, int((mask == 0).sum()))
    junk = tmp_path / "junk.npz"
    np.savez(junk, input_ids=ids, attention_mask=mask)
    out = []
    for path in (padded, junk):
        s = Session.open(str(folder), data=str(path), batch_size=4)
        s.apply_preset("W8A8")
        h = s.sim.act_obs["transformer.h.0.mlp.c_fc"].histogram()
        out.append((s.check(label="W8A8").metrics, h.min, h.max, int(np.asarray(h.counts).sum())))
    (m0, lo0, hi0, n0), (m1, lo1, hi1, n1) = out
    assert (lo0, hi0) == (lo1, hi1)
    assert n0 == n1 == int(mask.sum()) * 32  # one row of n_embd values per real token
    assert m0 == pytest.approx(m1, rel=1e-9)


def test_cli_sensitivity_and_search_in_lm_metrics(lm, tmp_path, capsys):
    from quantviz.cli.main import main

    d, folder = lm
    data = token_npz(tmp_path / "ids.npz", n=4, seq=12)
    assert main(["sensitivity", str(folder), "--data", str(data), "--bits", "4", "--metric", "perplexity",
                 "--batch-size", "4", "--no-cache"]) == 0
    out = capsys.readouterr().out
    assert "perplexity rise (positive = worse)" in out and "points" not in out
    assert main(["search", str(folder), "--data", str(data), "--bits", "4,8", "--metric", "kl_div",
                 "--max-drop", "1e-5", "--steps", "3", "--batch-size", "4", "--no-cache", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["metric"] == "kl_div"
    assert res["chosen"]["metrics"]["kl_div"] <= 1e-5


def test_causal_lm_ids_under_x_give_perplexity_like_input_ids(lm, tmp_path):
    """#22 item 7: the task comes from the model, not from the data's key name: token ids stored
    under ``x`` (the generic data convention) give the same perplexity as under ``input_ids``."""
    import numpy as np

    d, folder = lm
    ids = np.random.default_rng(3).integers(1, 97, (4, 16)).astype(np.int64)
    np.savez(tmp_path / "x.npz", x=ids)
    np.savez(tmp_path / "ids.npz", input_ids=ids)
    got = {}
    for name in ("x", "ids"):
        s = Session.open(str(folder), data=str(tmp_path / f"{name}.npz"), batch_size=4)
        got[name] = s.reference.metrics
    assert "perplexity" in got["x"], got["x"]
    assert got["x"]["perplexity"] == pytest.approx(got["ids"]["perplexity"], rel=1e-6)


def test_every_sensitivity_method_and_a_proxy_search_run_on_gpt2(lm):
    """A walk of the LM workflow found two methods failing on GPT-2: local SQNR recursed forever
    (Conv1D runs through its own module, which fired the observing hook again) and the Hessian
    trace hit the fused attention kernel, which has no second derivative."""
    from quantviz.session import Session

    d, folder = lm
    s = Session.open(str(folder), data=str(token_npz(d / "walk.npz", n=8, seq=16)))
    s.apply_preset("W4")
    names = set(s.layer_names)
    for method in ("local", "hessian"):
        res = s.run_sensitivity(method, bits=(4, 8))
        assert {e["name"] for e in res["layers"]} == names, method
    local = {e["name"]: e["results"] for e in s.run_sensitivity("local", bits=(4, 8))["layers"]}
    conv1d = next(n for n in names if n.endswith("attn.c_attn"))
    w4, w8 = (local[conv1d][b]["metrics"]["sqnr_db"] for b in ("4", "8"))
    assert w8 > w4 + 12  # four more bits: about 24 dB of weight noise less at the layer's output
    res = s.run_search(avg_bits=6, bits=(4, 8), pareto_steps=2, sensitivity="local")
    assert res["chosen"]["avg_bits"] <= 6 + 1e-9
