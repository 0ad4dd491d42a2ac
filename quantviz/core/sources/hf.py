"""Hugging Face ``transformers`` model folders (``save_pretrained`` output).

Loaded offline (``local_files_only=True``). The model class follows
``config.json``'s ``architectures``: ``*ForSequenceClassification`` ->
``AutoModelForSequenceClassification``, ``*ForCausalLM`` / ``*LMHeadModel`` ->
``AutoModelForCausalLM``, anything else -> ``AutoModel``. A folder whose
config names its own code (``auto_map``) needs ``trust``.

Text data (``.txt``), read with the folder's tokenizer:

* one sample per line; blank lines are skipped;
* for a sequence-classification model a line may be ``label<TAB>text``; the
  label is an integer class index or a name from ``config.label2id``. Either
  every line has a label or none does;
* tokens are padded to the longest line, at most ``MAX_TOKENS`` (128);
  inputs are ``{"input_ids", "attention_mask"}``.

Weights in safetensors files open memory-mapped (:func:`load_mapped`): the
module is built with its parameters on the meta device and each parameter
becomes a view of its bytes in the file, so opening reads only the headers and
a weight is read from disk when something first looks at it (a histogram, a
forward pass). Anything this path cannot place (another weight format, names
that do not match the module, custom code) loads through ``from_pretrained``.
``$QUANTVIZ_MMAP=0`` turns the mapped path off.

For a causal language model (``*ForCausalLM`` / ``*LMHeadModel``) a text file
is one running text instead: tokenized whole and cut into sequences of
``seq_len`` tokens (default ``DEFAULT_SEQ_LEN``, at most the model's context);
a last partial sequence is dropped. Its metrics include perplexity.
"""
from __future__ import annotations

import contextlib
import json
import mmap
import os
import struct
from pathlib import Path
from typing import Callable

import torch

from ..model.data import DataError, Dataset
from ..errors import Cancelled, SourceError, TrustRequired, one_line
from .base import ModelBundle
from .datafiles import load_file, make_dataset

MAX_TOKENS = 128
DEFAULT_SEQ_LEN = 512
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "tokenizer.model",
    "sentencepiece.bpe.model",
)


def is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def _read_config(folder: Path) -> dict:
    cfg_path = folder / "config.json"
    label = f"{folder.name}/config.json"
    try:
        text = cfg_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"{label}: cannot be read ({one_line(exc)})") from exc
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SourceError(f"{label}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    if not isinstance(cfg, dict):
        raise SourceError(f"{label}: expected a JSON object, found {type(cfg).__name__}")
    if "model_type" not in cfg and "auto_map" not in cfg:
        raise SourceError(f"{label}: has no 'model_type', so transformers cannot tell which model it describes")
    return cfg


def _auto_class_name(cfg: dict) -> str:
    archs = cfg.get("architectures") or []
    archs = [a for a in archs if isinstance(a, str)]
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return "AutoModelForSequenceClassification"
    if any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in archs):
        return "AutoModelForCausalLM"
    return "AutoModel"


@contextlib.contextmanager
def _quiet_transformers(transformers):
    logging = transformers.utils.logging
    level = logging.get_verbosity()
    bars = logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / f).is_file() for f in TOKENIZER_FILES)


def _parse_lines(lines: list[tuple[int, str]], name: str, label2id: dict | None, num_labels: int | None):
    """``lines`` holds (line number, text) pairs; returns texts and labels (or None)."""
    texts, labels = [], []
    for i, line in lines:
        if label2id is not None and "\t" in line:
            head, text = line.split("\t", 1)
            head = head.strip()
            if head.lstrip("-").isdigit():
                lab = int(head)
            elif head in label2id:
                lab = int(label2id[head])
            else:
                raise DataError(f"{name}: line {i}: unknown label {head!r} (use a class index or one of {sorted(label2id)})")
            if num_labels is not None and not 0 <= lab < num_labels:
                raise DataError(f"{name}: line {i}: label {lab} out of range (the model has {num_labels} classes)")
            labels.append(lab)
            texts.append(text)
        else:
            labels.append(None)
            texts.append(line)
    has = [lab is not None for lab in labels]
    if any(has) and not all(has):
        first = lines[has.index(False)][0]
        raise DataError(f"{name}: line {first} has no label; give every line as 'label<TAB>text' or none")
    return texts, (labels if all(has) else None)


def context_length(config) -> int | None:
    for key in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length"):
        v = getattr(config, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def causal_sequences(tokenizer, raw: str, name: str, seq_len: int | None, context: int | None) -> Dataset:
    """One running text -> ``(n, seq_len)`` token sequences (all real: the mask is all ones)."""
    want = int(seq_len) if seq_len else DEFAULT_SEQ_LEN
    if want < 2:
        raise DataError(f"{name}: --seq-len must be at least 2 tokens, got {want}")
    if context:
        want = min(want, context)
    try:
        ids = tokenizer(raw, return_attention_mask=False, verbose=False)["input_ids"]
    except Exception as exc:  # noqa: BLE001 - tokenizer failures are data problems
        raise DataError(f"{name}: the tokenizer failed ({one_line(exc)})") from exc
    n = len(ids) // want
    if n == 0:
        raise DataError(f"{name}: the text has {len(ids)} tokens, too short for one sequence of {want} tokens "
                        "(give more text or a smaller --seq-len)")
    x = torch.tensor(ids[: n * want], dtype=torch.long).reshape(n, want)
    meta = {"tokens": n * want, "seq_len": want, "dropped_tokens": len(ids) - n * want}
    return make_dataset({"input_ids": x, "attention_mask": torch.ones_like(x)}, None, name, meta)


def make_text_loader(tokenizer, config, is_classifier: bool, is_causal: bool = False) -> Callable[..., Dataset]:
    """A ``load_data`` that tokenizes ``.txt`` files and reads other formats as usual."""

    def load_data(path: str, seq_len: int | None = None) -> Dataset:
        p = Path(path).expanduser()
        if p.suffix.lower() != ".txt" or not p.is_file():
            return load_file(p)
        name = p.name
        try:
            raw = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{name}: cannot be read as UTF-8 text ({one_line(exc)})") from exc
        if is_causal:
            if not raw.strip():
                raise DataError(f"{name}: the file is empty")
            return causal_sequences(tokenizer, raw, name, seq_len, context_length(config))
        lines = [(i, ln.rstrip("\r")) for i, ln in enumerate(raw.split("\n"), start=1) if ln.strip()]
        if not lines:
            raise DataError(f"{name}: the file is empty (expected one text sample per line)")
        label2id = None
        num_labels = None
        if is_classifier:
            label2id = dict(getattr(config, "label2id", None) or {})
            num_labels = getattr(config, "num_labels", None)
        texts, labels = _parse_lines(lines, name, label2id, num_labels)
        if getattr(tokenizer, "pad_token", None) is None:
            eos = getattr(tokenizer, "eos_token", None)
            if eos is None:
                raise DataError(f"{name}: the tokenizer has no padding token, so lines of different length cannot be batched")
            tokenizer.pad_token = eos
        try:
            enc = tokenizer(texts, padding="longest", truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        except Exception as exc:  # noqa: BLE001 - tokenizer failures are data problems
            raise DataError(f"{name}: the tokenizer failed ({one_line(exc)})") from exc
        x = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        y = torch.tensor(labels, dtype=torch.long) if labels is not None else None
        meta = {"texts": len(texts), "max_tokens": MAX_TOKENS}
        return make_dataset(x, y, name, meta)

    return load_data


_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


def _weight_files(folder: Path) -> list[Path] | None:
    """The folder's safetensors files (from the index when there is one); None when its weights
    are in another format."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            wmap = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return [folder / f for f in sorted(set(wmap.values()))]
    if (folder / "model.safetensors").is_file():
        return [folder / "model.safetensors"]
    return None


def map_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file as a view of a private, read-on-demand mapping of it
    (nothing is read but the header; writing to a tensor never reaches the file)."""
    with open(path, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        header = json.loads(fh.read(n))
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)
    base = 8 + n
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        dtype = _DTYPES[info["dtype"]]
        a, b = info["data_offsets"]
        numel = 1
        for d in info["shape"]:
            numel *= int(d)
        if numel == 0:
            out[key] = torch.empty(info["shape"], dtype=dtype)
            continue
        if (base + a) % torch.empty((), dtype=dtype).element_size() or b - a != numel * torch.empty((), dtype=dtype).element_size():
            raise ValueError(f"{path.name}: {key} is not aligned")
        out[key] = torch.frombuffer(mm, dtype=dtype, count=numel, offset=base + a).view(info["shape"])
    return out


@contextlib.contextmanager
def _parameters_on_meta():
    """Parameters created inside go to the meta device (no memory, no initialisation); buffers
    (position tables) are computed as usual."""
    from torch import nn

    orig = nn.Module.register_parameter

    def register(self, name, param):
        orig(self, name, param)
        if param is not None and param.device.type != "meta":
            self._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = register
    try:
        yield
    finally:
        nn.Module.register_parameter = orig


def load_mapped(folder: Path, auto_cls):
    """The model with every parameter a memory-mapped view of its safetensors bytes, or None when
    this folder cannot be opened that way (then ``from_pretrained`` loads it)."""
    if os.environ.get("QUANTVIZ_MMAP", "1").strip().lower() in ("0", "false", "off", "no"):
        return None
    files = _weight_files(folder)
    if not files or not all(f.is_file() for f in files):
        return None
    try:
        import transformers
        from torch import nn

        config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
        tensors: dict = {}
        for f in files:
            tensors.update(map_safetensors(f))
        with _parameters_on_meta():
            model = auto_cls.from_config(config)
        params = dict(model.named_parameters(remove_duplicate=False))
        prefix = getattr(model, "base_model_prefix", "")
        placed = set()
        for key, t in tensors.items():
            name = key if key in params else (f"{prefix}.{key}" if f"{prefix}.{key}" in params else None)
            if name is None:
                if key.endswith("rotary_emb.inv_freq"):
                    continue  # kept by old checkpoints; computed by the module
                return None
            p = params[name]
            if tuple(p.shape) != tuple(t.shape):
                return None
            mod_name, _, pname = name.rpartition(".")
            mod = model.get_submodule(mod_name) if mod_name else model
            mod._parameters[pname] = nn.Parameter(t, requires_grad=False)
            placed.add(name)
        if getattr(config, "tie_word_embeddings", False) or any(p.device.type == "meta" for p in model.parameters()):
            model.tie_weights()
        if any(p.device.type == "meta" for p in model.parameters()):
            return None
        if any(b.device.type == "meta" for b in model.buffers()):
            return None
        return model.eval()
    except Exception:  # noqa: BLE001 - anything unusual: the library's own loader decides
        return None


def check_token_ids(bundle: ModelBundle, dataset: Dataset) -> bool:
    """A causal LM's token-id data checked against its config without running it (True: checked;
    False: not token ids, run the model instead). Raises DataError when it does not fit."""
    x = dataset.x
    if not isinstance(x, dict) or "input_ids" not in x or not isinstance(x["input_ids"], torch.Tensor):
        return False
    ids = x["input_ids"]
    config = getattr(bundle.model, "config", None)
    vocab = getattr(config, "vocab_size", None)
    if ids.dtype.is_floating_point or ids.dim() != 2 or not isinstance(vocab, int):
        return False
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
        raise DataError(f"{dataset.name}: token ids run from {int(ids.min())} to {int(ids.max())}, "
                        f"outside model {bundle.name}'s vocabulary of {vocab}")
    ctx = context_length(config)
    if ctx and ids.shape[1] > ctx:
        raise DataError(f"{dataset.name}: sequences of {ids.shape[1]} tokens exceed model {bundle.name}'s "
                        f"context of {ctx} (give a smaller --seq-len)")
    return True


def load_hf_folder(folder: Path, reference: str, *, trust: bool = False, cancel=None) -> ModelBundle:
    name = folder.name
    cfg = _read_config(folder)
    if not any((folder / f).is_file() for f in WEIGHT_FILES) and not any(folder.glob("*.safetensors")):
        raise SourceError(
            f"{name}: a Hugging Face folder without model weights (model.safetensors or pytorch_model.bin missing)"
        )
    if cfg.get("auto_map") and not trust:
        raise TrustRequired(
            f"{name}/config.json names custom model code (auto_map): loading it runs code from the folder. "
            "Pass --trust (CLI) or confirm in the app only if you trust its origin."
        )
    try:
        import transformers
    except ImportError as exc:
        raise SourceError(f"{name}: loading Hugging Face models needs transformers: pip install quantviz[hf]") from exc
    if cancel is not None and cancel():
        raise Cancelled()
    auto_name = _auto_class_name(cfg)
    auto_cls = getattr(transformers, auto_name)
    with _quiet_transformers(transformers):
        model = None if cfg.get("auto_map") else load_mapped(folder, auto_cls)
        mapped = model is not None
        try:
            if model is None:
                model = auto_cls.from_pretrained(str(folder), local_files_only=True, trust_remote_code=bool(trust))
        except Exception as exc:  # noqa: BLE001 - transformers raises OSError/ValueError/KeyError/...
            raise SourceError(f"{name}: cannot load the Hugging Face model with {auto_name} ({one_line(exc)})") from exc
        if cancel is not None and cancel():
            raise Cancelled()
        tokenizer = None
        tok_error = None
        if _has_tokenizer(folder):
            try:
                tokenizer = transformers.AutoTokenizer.from_pretrained(
                    str(folder), local_files_only=True, trust_remote_code=bool(trust)
                )
            except Exception as exc:  # noqa: BLE001
                tok_error = one_line(exc)
    model.eval()
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "use_cache", None):
        config.use_cache = False  # no key/value caches while measuring
    is_classifier = auto_name == "AutoModelForSequenceClassification"
    is_causal = auto_name == "AutoModelForCausalLM"
    meta: dict = {
        "path": str(folder),
        "auto_class": auto_name,
        "architectures": cfg.get("architectures"),
        "model_type": cfg.get("model_type"),
        "tokenizer": type(tokenizer).__name__ if tokenizer is not None else None,
        "text_format": ("running text cut into --seq-len token sequences" if is_causal else
                        "one sample per line" + ("; 'label<TAB>text' for labels" if is_classifier else "")),
        "task": "causal_lm" if is_causal else ("logits" if is_classifier else "hidden"),
        "weights": "memory-mapped safetensors" if mapped else "loaded",
    }
    if tok_error:
        meta["note"] = f"tokenizer could not be loaded ({tok_error}); give tokenized data (.npz with input_ids)"
    elif tokenizer is None:
        meta["note"] = "no tokenizer in the folder; give tokenized data (.npz with input_ids, attention_mask)"
    load_data = make_text_loader(tokenizer, config, is_classifier, is_causal) if tokenizer is not None else None
    return ModelBundle(model=model, name=name, kind="hf", reference=reference, load_data=load_data, meta=meta)
