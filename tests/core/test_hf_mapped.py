"""Hugging Face safetensors folders open memory-mapped (core.sources.hf.load_mapped)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from quantviz.core import sources
from quantviz.core.model.data import DataError

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mapped")
    cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                                   tie_word_embeddings=False)
    torch.manual_seed(0)
    transformers.utils.logging.set_verbosity_error()
    transformers.LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(str(tmp / "llama"))
    return tmp


def test_weights_are_views_of_the_file_and_equal_the_librarys_load(folder):
    b = sources.load_model(str(folder / "llama"))
    assert b.meta["weights"] == "memory-mapped safetensors"
    ref = transformers.AutoModelForCausalLM.from_pretrained(str(folder / "llama")).eval()
    got, want = b.model.state_dict(), ref.state_dict()
    assert list(got) == list(want)
    assert all(got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]) for k in got)
    ids = torch.randint(0, 97, (2, 12))
    with torch.no_grad():
        assert torch.equal(b.model(input_ids=ids).logits, ref(input_ids=ids).logits)
    # no copy: the parameter's bytes lie in this process's mapping of the file
    w = b.model.model.layers[0].mlp.down_proj.weight
    assert not w.requires_grad
    assert _mapped_file_of(w.data_ptr()) == str(folder / "llama" / "model.safetensors")


def _mapped_file_of(addr: int) -> str | None:
    from pathlib import Path

    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("needs /proc/self/maps")
    for line in maps.read_text().splitlines():
        parts = line.split()
        lo, hi = (int(v, 16) for v in parts[0].split("-"))
        if lo <= addr < hi:
            return parts[5] if len(parts) > 5 else None
    return None


def test_mapping_off_loads_through_the_library(folder, monkeypatch):
    monkeypatch.setenv("QUANTVIZ_MMAP", "0")
    assert sources.load_model(str(folder / "llama")).meta["weights"] == "loaded"


def test_token_ids_are_checked_without_running_the_model(folder, tmp_path):
    b = sources.load_model(str(folder / "llama"))
    ids = np.full((3, 8), 96)
    ids[1, 2] = 97  # one past the vocabulary
    np.savez(tmp_path / "bad.npz", input_ids=ids, attention_mask=np.ones_like(ids))
    with pytest.raises(DataError, match="outside model llama's vocabulary of 97"):
        sources.check_fits(b, sources.load_data(str(tmp_path / "bad.npz"), b))
    np.savez(tmp_path / "long.npz", input_ids=np.zeros((2, 40), dtype=np.int64))
    with pytest.raises(DataError, match="exceed model llama's context of 32"):
        sources.check_fits(b, sources.load_data(str(tmp_path / "long.npz"), b))
