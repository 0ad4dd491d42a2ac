"""A corpus of broken inputs, generated into a folder (nothing is checked in).

:func:`build_corpus` writes every bad input the reliability tests feed to the
CLI and to the app's loading path, next to a few *good* files the bad ones are
combined with (a working recipe, its data, a TorchScript twin). Each
:class:`Case` says which model / data / config to open, which file the error
message must name, which words it must contain, and (for malicious pickles)
a marker file whose appearance would prove that code from the file ran.

Cases whose ``ok`` is True are awkward but legal inputs (a layer whose
weights are all zero): they must *work*, with finite numbers.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import textwrap
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

IN, HID, OUT = 8, 16, 4
N_SAMPLES = 48


class MLP(nn.Module):
    """The model every good file holds: fc1 -> ReLU -> fc2."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(IN, HID)
        self.fc2 = nn.Linear(HID, OUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


class Evil:
    """Unpickling this creates ``marker`` (a stand-in for arbitrary code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@dataclass
class Case:
    id: str
    model: str
    data: str | None = None
    calib: str | None = None
    config: str | None = None
    names: tuple[str, ...] = ()  # the message must contain one of these
    expect: tuple[str, ...] = ()  # ... and all of these (case-insensitive)
    ok: bool = False  # a legal input that must work
    marker: Path | None = None  # must never appear
    command: str = "evaluate"
    trust: bool = False
    tags: set = field(default_factory=set)

    def argv(self) -> list[str]:
        a = [self.command, self.model]
        if self.command != "inspect":
            if self.data:
                a += ["--data", self.data]
            if self.calib:
                a += ["--calib", self.calib]
            if self.config:
                a += ["--config", self.config]
        if self.trust:
            a.append("--trust")
        return a + ["--json", "--threads", "1"]


# ------------------------------------------------------------------ recipes
RECIPE = '''
import torch
from torch import nn

NAME = {name!r}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear({IN}, {HID})
        self.fc2 = nn.Linear({HID}, {OUT})

    def forward(self, x):
{forward}
        return self.fc2(torch.relu(self.fc1(x)))


def build_model():
    torch.manual_seed(0)
    m = Net()
    with torch.no_grad():
{init}
        pass
    return m


def evaluation_data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn({N}, {IN}, generator=g)
    return x, x[:, :{OUT}].argmax(1)
'''


def write_recipe(path: Path, *, forward: str = "", init: str = "") -> Path:
    def ind(code: str) -> str:
        return textwrap.indent(textwrap.dedent(code).strip("\n"), " " * 8) if code.strip() else ""

    path.write_text(RECIPE.format(name=path.stem, IN=IN, HID=HID, OUT=OUT, N=N_SAMPLES,
                                  forward=ind(forward), init=ind(init)), encoding="utf-8")
    return path


def good_data(path: Path, n: int = N_SAMPLES, width: int = IN, scale: float = 1.0) -> Path:
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((n, width)) * scale).astype(np.float32)
    np.savez(path, x=x, y=(np.arange(n) % OUT).astype(np.int64))
    return path


def scripted(path: Path) -> Path:
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(MLP().eval()), str(path))
    return path


def exported(path: Path) -> Path:
    torch.manual_seed(0)
    batch = torch.export.Dim("batch", min=1, max=4096)
    ep = torch.export.export(MLP().eval(), (torch.randn(2, IN),), dynamic_shapes=({0: batch},))
    torch.export.save(ep, str(path))
    return path


def _tiny_bert(folder: Path) -> Path | None:
    try:
        import transformers
    except ImportError:  # pragma: no cover - transformers ships with the test env
        return None
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "movie"]
    cfg = transformers.BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=64, num_labels=2)
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(cfg).save_pretrained(str(folder))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    transformers.BertTokenizer(str(folder / "vocab.txt")).save_pretrained(str(folder))
    return folder


# -------------------------------------------------------------------- corpus
def build_corpus(root: Path, *, hf: bool = True) -> list[Case]:
    """Write every bad input under ``root``; return the cases (good files first)."""
    root.mkdir(parents=True, exist_ok=True)
    r = lambda name: root / name  # noqa: E731
    cases: list[Case] = []
    add = cases.append

    good = write_recipe(r("good.py"))
    gdata = good_data(r("good.npz"))
    ts = scripted(r("scripted.pt"))
    pt2 = exported(r("program.pt2"))
    G, D = str(good), str(gdata)

    # --- model files
    r("empty.pt").write_bytes(b"")
    add(Case("empty-model", str(r("empty.pt")), D, names=("empty.pt",), expect=("empty",)))
    blob = ts.read_bytes()
    r("truncated.pt").write_bytes(blob[: len(blob) // 2])
    add(Case("truncated-pt", str(r("truncated.pt")), D, names=("truncated.pt",), expect=("truncated",)))
    with zipfile.ZipFile(r("notorch.pt"), "w") as zf:
        zf.writestr("readme.txt", "hello")
        zf.writestr("folder/notes.txt", "not a model")
    add(Case("zip-not-torch", str(r("notorch.pt")), D, names=("notorch.pt",), expect=("not a pytorch",)))
    for ext in ("pt", "pth", "pt2", "ts", "bin"):
        r(f"random.{ext}").write_bytes(np.random.default_rng(3).bytes(4096))
        add(Case(f"random-bytes-{ext}", str(r(f"random.{ext}")), D, names=(f"random.{ext}",), tags={"inspect"}))
    r("text.pth").write_text("just some text\n", encoding="utf-8")
    add(Case("text-as-model", str(r("text.pth")), D, names=("text.pth",)))

    # --- code that must never run
    marker = r("PWNED")
    torch.save({"model": Evil(marker)}, r("evil.pt"))
    add(Case("evil-pickle-zip", str(r("evil.pt")), D, names=("evil.pt",), expect=("--trust",), marker=marker,
             tags={"inspect"}))
    torch.save({"model": Evil(marker)}, r("evil_legacy.pth"), _use_new_zipfile_serialization=False)
    add(Case("evil-pickle-legacy", str(r("evil_legacy.pth")), D, names=("evil_legacy.pth",), expect=("--trust",),
             marker=marker))
    r("evil.pkl").write_bytes(pickle.dumps(Evil(marker)))
    add(Case("evil-plain-pickle", str(r("evil.pkl")), D, names=("evil.pkl",), expect=("pickle",), marker=marker))
    add(Case("evil-pickle-as-data", G, str(r("evil.pt")), names=("evil.pt",), expect=("weights_only",), marker=marker))
    np.savez(r("evil_calib.npz"), x=np.array([Evil(marker)], dtype=object))
    add(Case("evil-object-npz", G, D, calib=str(r("evil_calib.npz")), names=("evil_calib.npz",), expect=("pickled",),
             marker=marker))

    # --- not a model
    torch.manual_seed(0)
    torch.save(MLP().state_dict(), r("weights.pt"))
    add(Case("state-dict", str(r("weights.pt")), D, names=("weights.pt",), expect=("state_dict", "recipe")))
    torch.save(MLP().state_dict(), r("weights.pt2"))
    add(Case("state-dict-as-pt2", str(r("weights.pt2")), D, names=("weights.pt2",)))

    # --- TorchScript / export that reject the data
    wide = good_data(r("wide.npz"), width=IN + 3)
    add(Case("torchscript-shape", str(ts), str(wide), names=("wide.npz",), expect=("do not fit",)))
    add(Case("export-shape", str(pt2), str(wide), names=("wide.npz",), expect=("do not fit",)))
    add(Case("recipe-shape", G, str(wide), names=("wide.npz",), expect=("do not fit",)))
    add(Case("calib-shape", G, D, calib=str(wide), names=("wide.npz",), expect=("do not fit",)))

    # --- torch.export programs from elsewhere
    with zipfile.ZipFile(pt2) as zin, zipfile.ZipFile(r("future.pt2"), "w") as zout:
        for item in zin.namelist():
            data = zin.read(item)
            if item.endswith("/archive_version"):
                data = b"99"
            zout.writestr(item, data)
    add(Case("pt2-other-version", str(r("future.pt2")), D, names=("future.pt2",), expect=("version",)))
    pblob = pt2.read_bytes()
    r("cut.pt2").write_bytes(pblob[: len(pblob) // 2])
    add(Case("pt2-truncated", str(r("cut.pt2")), D, names=("cut.pt2",)))
    flipped = bytearray(pblob)
    for i in range(len(flipped) // 3, len(flipped) // 3 + 64):
        flipped[i] ^= 0xFF
    r("flipped.pt2").write_bytes(bytes(flipped))
    add(Case("pt2-corrupted", str(r("flipped.pt2")), D, names=("flipped.pt2",)))

    # --- Hugging Face folders
    if hf:
        bert = _tiny_bert(r("tiny-bert"))
        if bert is not None:
            nw = r("noweights")
            shutil.copytree(bert, nw)
            for f in nw.glob("*.safetensors"):
                f.unlink()
            add(Case("hf-missing-weights", str(nw), None, names=("noweights",), expect=("weights",), command="inspect"))
            bc = r("badconfig")
            shutil.copytree(bert, bc)
            (bc / "config.json").write_text('{"model_type": "bert", ', encoding="utf-8")
            add(Case("hf-broken-config", str(bc), None, names=("config.json",), expect=("json",), command="inspect"))
            nt = r("notype")
            shutil.copytree(bert, nt)
            (nt / "config.json").write_text('{"hidden_size": 16}', encoding="utf-8")
            add(Case("hf-config-without-type", str(nt), None, names=("config.json",), command="inspect"))
            r("empty.txt").write_text("", encoding="utf-8")
            add(Case("hf-empty-text", str(bert), str(r("empty.txt")), names=("empty.txt",), expect=("empty",)))
    r("blank.txt").write_text("", encoding="utf-8")
    add(Case("empty-text", G, str(r("blank.txt")), names=("blank.txt",)))

    # --- data files
    from PIL import Image

    imgs = r("images_corrupt")
    (imgs / "cats").mkdir(parents=True)
    Image.new("L", (8, 8), 10).save(imgs / "cats" / "a.png")
    (imgs / "cats" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    add(Case("image-folder-corrupt", G, str(imgs), names=("b.png",), expect=("image",)))
    noimg = r("images_none")
    (noimg / "dogs").mkdir(parents=True)
    (noimg / "dogs" / "notes.txt").write_text("no pictures here")
    add(Case("image-folder-empty", G, str(noimg), names=("images_none",), expect=("no images",)))
    np.savez(r("nox.npz"), inputs=np.zeros((4, IN), np.float32))
    add(Case("npz-without-x", G, str(r("nox.npz")), names=("nox.npz",), expect=("'x'",)))
    r("empty.npz").write_bytes(b"")
    add(Case("npz-empty", G, str(r("empty.npz")), names=("empty.npz",), expect=("empty",)))
    np.savez(r("nan.npz"), x=np.full((4, IN), np.nan, np.float32))
    add(Case("npz-nan-inputs", G, str(r("nan.npz")), names=("nan.npz",), expect=("non-finite",)))
    np.savez(r("zero.npz"), x=np.zeros((0, IN), np.float32))
    add(Case("npz-no-samples", G, str(r("zero.npz")), names=("zero.npz",), expect=("no samples",)))
    np.savez(r("labels.npz"), x=np.zeros((4, IN), np.float32), y=np.zeros(7, np.int64))
    add(Case("npz-label-count", G, str(r("labels.npz")), names=("labels.npz",), expect=("labels",)))
    r("missing_data.npz")  # never created
    add(Case("data-missing", G, str(r("missing_data.npz")), names=("missing_data.npz",), expect=("no such",)))
    r("data.csv").write_text("1,2,3\n")
    add(Case("data-unknown-format", G, str(r("data.csv")), names=("data.csv",), expect=("format",)))

    # --- models that misbehave
    write_recipe(r("raises.py"), forward='raise RuntimeError("forward failed on purpose")')
    add(Case("forward-raises", str(r("raises.py")), None, names=("raises",), expect=("forward failed on purpose",)))
    write_recipe(r("nan_weights.py"), init="m.fc1.weight[0, 0] = float('nan')")
    add(Case("nan-weights", str(r("nan_weights.py")), None, names=("nan_weights",), expect=("nan",)))
    write_recipe(r("inf_weights.py"), init="m.fc2.weight[1, 3] = float('inf')")
    add(Case("inf-weights", str(r("inf_weights.py")), None, names=("inf_weights",), expect=("inf",)))
    write_recipe(r("nan_hidden.py"), forward="x = x * 0 + float('nan') if x.shape[0] > 2 else x")
    add(Case("nan-after-first-samples", str(r("nan_hidden.py")), None, names=("nan_hidden",), expect=("nan",)))
    write_recipe(r("zero_layer.py"), init="m.fc1.weight.zero_()\nm.fc1.bias.zero_()")
    add(Case("zero-range-layer", str(r("zero_layer.py")), None, ok=True))
    # a model defined only for positive inputs: data with negatives yields NaN
    write_recipe(r("sqrt_net.py"), forward="x = torch.sqrt(x)")
    pos = r("positive.npz")
    np.savez(pos, x=np.abs(np.load(gdata)["x"]) + 0.1, y=np.load(gdata)["y"])
    add(Case("calib-yields-nan", str(r("sqrt_net.py")), str(pos), calib=D, names=("good.npz",), expect=("nan",)))
    add(Case("eval-yields-nan", str(r("sqrt_net.py")), D, names=("good.npz",), expect=("nan",)))
    np.savez(r("huge.npz"), x=np.full((4, IN), 3e38, np.float32))
    add(Case("huge-inputs", G, str(r("huge.npz")), ok=True))

    # --- recipes that are broken as code
    r("syntax.py").write_text("def build_model(:\n    return 1\n", encoding="utf-8")
    add(Case("recipe-syntax-error", str(r("syntax.py")), None, names=("syntax.py",), expect=("syntax error",)))
    r("boom.py").write_text("def build_model():\n    raise ValueError('boom at build')\n", encoding="utf-8")
    add(Case("recipe-raises", str(r("boom.py")), None, names=("boom.py",), expect=("boom at build",)))
    r("toplevel.py").write_text("import torch\n1 / 0\n", encoding="utf-8")
    add(Case("recipe-body-raises", str(r("toplevel.py")), None, names=("toplevel.py",), expect=("zerodivision",)))
    r("nobuild.py").write_text("X = 1\n", encoding="utf-8")
    add(Case("recipe-without-build", str(r("nobuild.py")), None, names=("nobuild.py",), expect=("build_model",)))
    r("notmodule.py").write_text("def build_model():\n    return 42\n", encoding="utf-8")
    add(Case("recipe-returns-int", str(r("notmodule.py")), None, names=("notmodule.py",), expect=("nn.module",)))
    add(Case("no-data", str(ts), None, names=("scripted.pt",), expect=("--data",)))

    # --- configs
    def cfg(name: str, obj) -> str:
        p = r(name)
        p.write_text(obj if isinstance(obj, str) else json.dumps(obj), encoding="utf-8")
        return str(p)

    base = {"format": "quantviz-config", "version": 1}
    bad_cfgs = {
        "cfg_notjson.json": ("{'version': 1,", ("valid json",)),
        "cfg_empty.json": ("", ("empty",)),
        "cfg_list.json": ([1, 2], ("object",)),
        "cfg_unknown_layer.json": ({**base, "layers": {"fc9": {"weight": {"bits": 4}}}}, ("fc9",)),
        "cfg_unknown_key.json": ({**base, "default": {"wieght": {"bits": 4}}}, ("wieght",)),
        "cfg_bits0.json": ({**base, "default": {"weight": {"bits": 0}}}, ("bits",)),
        "cfg_bits1.json": ({**base, "default": {"weight": {"bits": 1}}}, ("bits",)),
        "cfg_bits17.json": ({**base, "layers": {"fc1": {"weight": {"bits": 17}}}}, ("bits",)),
        "cfg_bits-3.json": ({**base, "default": {"activation": {"bits": -3}}}, ("bits",)),
        "cfg_bits_eight.json": ({**base, "default": {"weight": {"bits": "eight"}}}, ("eight",)),
        "cfg_bits_float.json": ({**base, "default": {"weight": {"bits": 4.5}}}, ("bits",)),
        "cfg_p0.json": ({**base, "default": {"weight": {"range": {"method": "percentile", "p": 0}}}}, ("percentile",)),
        "cfg_p101.json": ({**base, "default": {"weight": {"range": {"method": "percentile", "p": 101}}}}, ("percentile",)),
        "cfg_lo_hi.json": ({**base, "layers": {"fc1": {"weight": {"range": {"method": "manual", "lo": 1, "hi": -1}}}}},
                           ("lo",)),
        "cfg_lo_eq_hi.json": ({**base, "layers": {"fc2": {"activation": {"range": {"method": "manual", "lo": 0.5,
                                                                                   "hi": 0.5}}}}}, ("lo",)),
        "cfg_version99.json": ({**base, "version": 99}, ("version",)),
        "cfg_version0.json": ({**base, "version": 0}, ("version",)),
        "cfg_noversion.json": ({"default": {}}, ("version",)),
        "cfg_method.json": ({**base, "default": {"weight": {"range": {"method": "magic"}}}}, ("magic",)),
        "cfg_granularity.json": ({**base, "default": {"weight": {"granularity": "per_atom"}}}, ("per_atom",)),
        "cfg_bad_pattern.json": ({**base, "rules": [{"match": {"pattern": "("}, "weight": {"bits": 4}}]}, ("pattern",)),
        "cfg_nan.json": ('{"format": "quantviz-config", "version": 1, "layers": {"fc1": {"weight": {"range": '
                         '{"method": "manual", "lo": NaN, "hi": 1}}}}}', ("finite",)),
    }
    r("cfg_binary.json").write_bytes(b"\xff\xfe\x00\x01garbage")
    add(Case("config-binary", G, None, config=str(r("cfg_binary.json")), names=("cfg_binary.json",)))
    for fname, (obj, expect) in bad_cfgs.items():
        add(Case(f"config-{Path(fname).stem[4:]}", G, None, config=cfg(fname, obj), names=(fname,), expect=expect))
    return cases


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and mtime (to prove nothing was written)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for f in filenames:
            p = Path(dirpath, f)
            st = p.stat()
            out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns)
        for d in dirnames:
            out[str(Path(dirpath, d).relative_to(folder)) + "/"] = (0, 0)
    return out
