"""Models built on the fly for the format/LM tests: a tiny GPT-2 folder and a
ResNet-18-layout network (random weights; no downloads, no torchvision)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]  # the repository: the model is the benchmarks' (benchmarks/models.py)


def tiny_gpt2(folder: Path, *, seed: int = 0, n_positions: int = 64, vocab: int = 97) -> Path:
    transformers = __import__("pytest").importorskip("transformers")
    cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=vocab, n_positions=n_positions,
                                  bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    transformers.utils.logging.set_verbosity_error()
    model.save_pretrained(str(folder))
    return folder


def token_npz(path: Path, n: int = 8, seq: int = 16, vocab: int = 97, pad_from: int | None = None, seed: int = 0) -> Path:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (n, seq), generator=g)
    mask = torch.ones(n, seq, dtype=torch.long)
    if pad_from is not None:  # right padding on every other sample
        mask[::2, pad_from:] = 0
        ids[::2, pad_from:] = 0
    np.savez(path, input_ids=ids.numpy(), attention_mask=mask.numpy())
    return path


def resnet18(seed: int = 0) -> nn.Module:
    """The benchmarks' ResNet-18 (torchvision's layout), narrow for speed: width 8."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks.models import ResNet18

    torch.manual_seed(seed)
    m = ResNet18(num_classes=10, width=8).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.1, 0.1)
    return m


def add_word_tokenizer(folder: Path, vocab: int = 97) -> None:
    """A word-level tokenizer (built offline) saved into a model folder."""
    tokenizers = __import__("pytest").importorskip("tokenizers")
    import transformers

    words = {"<eos>": 0, "<unk>": 1}
    for i in range(2, vocab):
        words[f"w{i}"] = i
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="<unk>")
    fast.save_pretrained(str(folder))


def word_text(n_words: int, vocab: int = 97, seed: int = 0) -> str:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, vocab, (n_words,), generator=g).tolist()
    return " ".join(f"w{i}" for i in ids)


WORDS = ("the cat sat on a mat and the dog ran to the red barn while birds sang over green hills "
         "under a quiet sky where rivers flow past old stone bridges").split()


def plain_text(n_words: int, seed: int = 0) -> str:
    """Deterministic English-looking text (random words from a small list)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(WORDS), (n_words,), generator=g).tolist()
    return " ".join(WORDS[i] for i in idx) + "\n"


def tiny_llama(folder: Path, *, seed: int = 0, hidden: int = 256, layers: int = 2, intermediate: int = 512,
               heads: int = 4, kv_heads: int = 2, context: int = 128) -> Path:
    """A random Llama-layout causal LM with a byte-level BPE tokenizer trained on :func:`plain_text`
    (widths multiples of 256, so every projection's rows are whole K-quant super-blocks)."""
    transformers = __import__("pytest").importorskip("transformers")
    vocab = add_bpe_tokenizer(folder)
    cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                                   num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                                   max_position_embeddings=context, rms_norm_eps=1e-5, tie_word_embeddings=False,
                                   bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    transformers.utils.logging.set_verbosity_error()
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # norms away from 1, so a permutation or a swapped tensor shows
        for n, p in model.named_parameters():
            if "norm" in n:
                p.uniform_(0.5, 1.5)
    model.save_pretrained(str(folder))
    return folder


def add_bpe_tokenizer(folder: Path) -> int:
    """A byte-level BPE tokenizer trained on :func:`plain_text`, saved into ``folder``; its vocabulary size."""
    pytest = __import__("pytest")
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=320, special_tokens=["<|eos|>"], show_progress=False,
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([plain_text(4000, seed=123)], trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|eos|>")
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(folder))
    return tok.get_vocab_size()
