"""Re-checks of a language model restart from the first changed decoder block (core.sim.blocks)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from quantviz.io.config import preset
from quantviz.session import Session

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lmrecheck")
    cfg = transformers.LlamaConfig(vocab_size=211, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   tie_word_embeddings=False)
    torch.manual_seed(0)
    transformers.utils.logging.set_verbosity_error()
    transformers.LlamaForCausalLM(cfg).save_pretrained(str(tmp / "llama"))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 211, (12, 16), generator=g).numpy()
    np.savez(tmp / "tok.npz", input_ids=ids, attention_mask=np.ones_like(ids))
    return tmp


def _open(folder, **kw) -> Session:
    return Session.open(str(folder / "llama"), data=str(folder / "tok.npz"), config=preset("W8A8"), batch_size=4, **kw)


def _blocks_run(s: Session) -> list[int]:
    """Which decoder blocks actually computed during the next re-check (forward pre-hooks on their
    attention, which a short-cut block never reaches)."""
    ran: list[int] = []
    for i, blk in enumerate(s.sim.float_model.model.layers):
        h = blk.self_attn.register_forward_pre_hook(lambda m, a, _i=i: ran.append(_i))
        s._hooks_for_test = getattr(s, "_hooks_for_test", []) + [h]
    return ran


def _unhook(s: Session) -> None:
    for h in getattr(s, "_hooks_for_test", []):
        h.remove()
    s._hooks_for_test = []


def test_an_edit_in_the_last_block_reruns_only_that_block_and_matches_a_full_evaluation(llama_folder):
    s = _open(llama_folder)
    s.check()  # the baseline: fills the block cache
    assert s.recheck.runner.incremental, s.recheck.runner.reason
    s.edit_layers(["model.layers.2.mlp.down_proj"], {"weight": {"bits": 4}})
    ran = _blocks_run(s)
    inc = s.check(record=False)
    _unhook(s)
    assert s.recheck.last["mode"] == "suffix"
    assert sorted(set(ran)) == [2]  # the blocks before the edit were not computed
    assert s.recheck.last["affected_fraction"] == pytest.approx(1 / 3)
    full = s.check(incremental=False, record=False)
    assert inc.metrics == full.metrics  # exactly the same numbers
    s.sim.close()


def test_an_edit_in_the_middle_block_reruns_the_blocks_after_it(llama_folder):
    s = _open(llama_folder)
    s.check()
    s.edit_layers(["model.layers.1.self_attn.q_proj"], {"weight": {"bits": 3}, "activation": {"bits": 6}})
    ran = _blocks_run(s)
    inc = s.check(record=False)
    _unhook(s)
    assert sorted(set(ran)) == [1, 2]
    assert inc.metrics == s.check(incremental=False, record=False).metrics
    # the cache follows the config: undo re-runs from block 1 again and equals a full pass
    s.undo()
    assert s.check(record=False).metrics == s.check(incremental=False, record=False).metrics
    s.sim.close()


def test_an_edit_of_the_output_layer_runs_no_block_and_one_of_the_embedding_runs_all(llama_folder):
    s = _open(llama_folder)
    s.check()
    s.edit_layers(["lm_head"], {"weight": {"bits": 4}})
    ran = _blocks_run(s)
    inc = s.check(record=False)
    _unhook(s)
    assert ran == []
    assert inc.metrics == s.check(incremental=False, record=False).metrics
    s.edit_layers(["model.embed_tokens"], {"weight": {"bits": 4}})
    ran = _blocks_run(s)
    inc = s.check(record=False)
    _unhook(s)
    assert sorted(set(ran)) == [0, 1, 2]
    assert inc.metrics == s.check(incremental=False, record=False).metrics
    s.sim.close()


def test_a_recheck_requantizes_only_the_edited_weight(llama_folder):
    s = _open(llama_folder)
    s.check()
    before = dict(s.sim.cache.computed)
    s.edit_layers(["model.layers.2.mlp.up_proj"], {"weight": {"bits": 4}})
    s.check(record=False)
    again = {n: c - before.get(n, 0) for n, c in s.sim.cache.computed.items() if c != before.get(n, 0)}
    assert again == {"model.layers.2.mlp.up_proj": 1}
    s.sim.close()


def test_a_small_budget_keeps_fewer_blocks_and_stays_exact(llama_folder):
    s = _open(llama_folder, cache_bytes=1)  # not even one block's output fits: full passes
    s.check()
    assert not s.recheck.runner.incremental and "budget" in s.recheck.runner.reason
    s.edit_layers(["model.layers.2.mlp.down_proj"], {"weight": {"bits": 4}})
    assert s.check(record=False).metrics == s.check(incremental=False, record=False).metrics
    s.sim.close()
    # room for about two of the three blocks' outputs: the last block is always kept
    per_block = 6 * 16 * 32 * 4  # evaluated samples (12 split in halves) x tokens x hidden x float32
    s = _open(llama_folder, cache_bytes=int(2.2 * per_block))
    s.check()
    r = s.recheck.runner
    assert r.incremental and 2 in r.checkpoints and len(r.checkpoints) < 3
    assert r.cache_bytes <= 2.2 * per_block
    s.edit_layers(["model.layers.1.mlp.down_proj"], {"weight": {"bits": 4}})
    assert s.check(record=False).metrics == s.check(incremental=False, record=False).metrics
    s.sim.close()


def test_an_e2e_sensitivity_sweep_of_a_language_model_runs_suffixes_with_the_naive_numbers(llama_folder):
    from quantviz.core.analysis import sensitivity as sens

    s = _open(llama_folder)
    blocks = tuple(tuple(n for n in s.layer_names if n.startswith(f"model.layers.{i}.")) for i in range(3))
    p = s.parts(ties=blocks)  # one cell per block (cheap), plus the embedding and the output layer
    inc = sens.sweep(p, "e2e", bits=(4,))
    naive = sens.sweep(p, "e2e", bits=(4,), naive=True)
    assert inc["incremental"] and not naive["incremental"]
    assert [l["results"] for l in inc["layers"]] == [l["results"] for l in naive["layers"]]
    s.sim.close()
