"""Model sources (demo, recipe, TorchScript, export, pickle, HF) and data files."""
from __future__ import annotations

import importlib
import json
import os
import pickle
import sys
import textwrap
import threading
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from quantviz.core.model.data import DataError, Dataset
from quantviz.core.errors import Cancelled, ModelError, SourceError, TrustRequired
from quantviz.core.sources import check_fits, load_data, load_model, resources_dir
from quantviz.core.sources.base import ModelBundle

REPO = Path(__file__).resolve().parents[2]


def assert_one_line(err: pytest.ExceptionInfo | BaseException, name: str) -> str:
    exc = err.value if isinstance(err, pytest.ExceptionInfo) else err
    msg = str(exc)
    assert "\n" not in msg, msg
    assert name in msg, msg
    return msg


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def save_scripted(model: nn.Module, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated upstream
        torch.jit.save(torch.jit.script(model), str(path))


def bundle_for(model: nn.Module, name: str = "tiny", kind: str = "recipe") -> ModelBundle:
    return ModelBundle(model=model.eval(), name=name, kind=kind, reference=name)


# --------------------------------------------------------------------------- resources / demo


def test_resources_dir_default_and_env(monkeypatch, tmp_path):
    monkeypatch.delenv("QUANTVIZ_RESOURCES", raising=False)
    assert resources_dir() == REPO / "resources"
    monkeypatch.setenv("QUANTVIZ_RESOURCES", str(tmp_path))
    assert resources_dir() == tmp_path


DEMO_READY = all((REPO / "resources" / "demo" / f).is_file() for f in ("demo_cnn.pt", "digits_calib.npz", "digits_test.npz"))


@pytest.mark.skipif(not DEMO_READY, reason="demo resources not generated yet (resources/make_demo.py)")
def test_demo_loads(monkeypatch):
    monkeypatch.delenv("QUANTVIZ_RESOURCES", raising=False)
    b = load_model("demo")
    assert b.kind == "demo" and b.name == "digits-cnn (demo)" and b.reference == "demo"
    assert not b.model.training
    assert b.calib is not None and b.eval is not None and b.eval.has_labels
    assert tuple(b.calib.x.shape[1:]) == (1, 8, 8) and b.calib.x.dtype == torch.float32
    check_fits(b, b.eval)
    with torch.no_grad():
        acc = (b.model(b.eval.x).argmax(1) == b.eval.y).float().mean().item()
    assert acc > 0.8


def test_demo_loader_with_stand_in_resources(monkeypatch, tmp_path):
    from quantviz.core.sources.demo_model import DemoNet

    demo = tmp_path / "demo"
    demo.mkdir()
    torch.save(DemoNet().state_dict(), demo / "demo_cnn.pt")
    rng = np.random.default_rng(0)
    for name, n in (("digits_calib.npz", 16), ("digits_test.npz", 20)):
        np.savez(demo / name, x=rng.random((n, 1, 8, 8), dtype=np.float32), y=np.arange(n) % 10)
    (demo / "meta.json").write_text(json.dumps({"float_accuracy": 0.97}))
    monkeypatch.setenv("QUANTVIZ_RESOURCES", str(tmp_path))
    b = load_model("demo")
    assert b.kind == "demo" and b.name == "digits-cnn (demo)"
    assert len(b.calib) == 16 and len(b.eval) == 20 and b.meta["float_accuracy"] == 0.97
    assert not b.model.training
    check_fits(b, b.eval)
    (demo / "demo_cnn.pt").write_bytes(b"garbage")
    with pytest.raises(SourceError) as err:
        load_model("demo")
    assert_one_line(err, "demo_cnn.pt")


def test_demo_missing_files(monkeypatch, tmp_path):
    monkeypatch.setenv("QUANTVIZ_RESOURCES", str(tmp_path))
    with pytest.raises(SourceError) as err:
        load_model("demo")
    assert_one_line(err, "demo_cnn.pt")


# --------------------------------------------------------------------------- recipes


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_recipe_template_is_a_working_recipe():
    b = load_model(str(REPO / "resources" / "recipe_template.py"))
    assert b.kind == "recipe" and b.name == "tiny-mlp (template)"
    assert len(b.calib) == 256 and not b.calib.has_labels
    assert len(b.eval) == 512 and b.eval.has_labels
    check_fits(b, b.eval)
    # labels come from the float model, so its accuracy is 100 %
    with torch.no_grad():
        assert bool((b.model(b.eval.x).argmax(1) == b.eval.y).all())
    metrics = b.evaluate_fn(b.model, b.eval)
    assert set(metrics) == {"true_class_prob"} and 0 < metrics["true_class_prob"] <= 1
    # deterministic: the same data on a second load
    b2 = load_model(str(REPO / "resources" / "recipe_template.py"))
    assert torch.equal(b.eval.x, b2.eval.x)


def test_recipe_eval_only_gives_calib_subset_and_imports_neighbours(tmp_path):
    write(tmp_path / "helper_net_qv.py", """
        from torch import nn
        def make():
            return nn.Sequential(nn.Linear(4, 3))
    """)
    r = write(tmp_path / "recipe.py", """
        import numpy as np
        from helper_net_qv import make
        def build_model():
            return make()
        def evaluation_data():
            rng = np.random.default_rng(0)
            return rng.normal(size=(300, 4)).astype("float32"), np.arange(300) % 3
    """)
    b = load_model(str(r))
    assert b.kind == "recipe" and b.name == "recipe"
    assert len(b.eval) == 300 and b.calib is None  # the session splits it: calibrate on some, measure the rest
    assert b.evaluate_fn is None
    assert str(tmp_path) not in sys.path  # folder importable only while it runs
    sys.modules.pop("helper_net_qv", None)


def test_recipe_data_forms(tmp_path):
    r = write(tmp_path / "forms.py", """
        import torch
        from torch import nn
        from quantviz.core.model.data import Dataset
        def build_model():
            return nn.Linear(4, 2)
        def calibration_data():
            return Dataset(torch.zeros(5, 4), name="mine")
        def evaluation_data():
            return {"x": torch.ones(7, 4)}
        def evaluate(model, data):
            return {"score": torch.tensor(0.5)}
    """)
    b = load_model(str(r))
    assert b.calib.name == "mine" and len(b.calib) == 5
    assert len(b.eval) == 7 and not b.eval.has_labels
    assert b.evaluate_fn(b.model, b.eval) == {"score": 0.5}


def test_recipe_syntax_error_names_line(tmp_path):
    r = write(tmp_path / "broken.py", "def build_model():\n    return (\n\nx = 1 +\n")
    with pytest.raises(SourceError) as err:
        load_model(str(r))
    msg = assert_one_line(err, "broken.py:")
    assert "syntax" in msg


def test_recipe_function_raises(tmp_path):
    r = write(tmp_path / "recipe.py", """
        def build_model():
            raise ValueError("no weights here\\nsecond line")
    """)
    with pytest.raises(SourceError) as err:
        load_model(str(r))
    msg = assert_one_line(err, "recipe.py")
    assert "build_model() raised ValueError: no weights here" in msg
    assert isinstance(err.value.__cause__, ValueError)


def test_recipe_module_body_raises(tmp_path):
    r = write(tmp_path / "body.py", "import torch\n\nraise RuntimeError('boom')\n")
    with pytest.raises(SourceError) as err:
        load_model(str(r))
    msg = assert_one_line(err, "body.py:3")
    assert "RuntimeError: boom" in msg


@pytest.mark.parametrize(
    "body, expect",
    [
        ("x = 1\n", "build_model()"),
        ("def build_model():\n    return 42\n", "not a torch.nn.Module"),
        ("from torch import nn\ndef build_model():\n    return nn.Linear(2, 2)\n"
         "def evaluation_data():\n    return 'oops'\n", "evaluation_data()"),
        ("import torch\nfrom torch import nn\ndef build_model():\n    return nn.Linear(2, 2)\n"
         "def calibration_data():\n    return {'y': torch.zeros(3)}\n", "needs key 'x'"),
        ("import torch\nfrom torch import nn\ndef build_model():\n    return nn.Linear(2, 2)\n"
         "def calibration_data():\n    return torch.full((3, 2), float('nan')),\n", "non-finite"),
        ("import torch\nfrom torch import nn\ndef build_model():\n    return nn.Linear(2, 2)\n"
         "def calibration_data():\n    return torch.zeros(3, 2), torch.zeros(4)\n", "3 inputs but 4 labels"),
    ],
)
def test_recipe_contract_errors(tmp_path, body, expect):
    r = write(tmp_path / "rec.py", body)
    with pytest.raises(SourceError) as err:
        load_model(str(r))
    msg = assert_one_line(err, "rec.py")
    assert expect in msg


def test_recipe_evaluate_errors_become_model_errors(tmp_path):
    r = write(tmp_path / "ev.py", """
        from torch import nn
        def build_model():
            return nn.Linear(2, 2)
        def evaluate(model, data):
            raise KeyError("metric")
    """)
    b = load_model(str(r))
    with pytest.raises(ModelError) as err:
        b.evaluate_fn(b.model, Dataset(torch.zeros(2, 2)))
    assert_one_line(err, "ev.py")


def _cancel_after(delay: float, flag: threading.Event) -> threading.Thread:
    t = threading.Thread(target=lambda: (time.sleep(delay), flag.set()), daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("where", ["build_model", "module"])
def test_recipe_stuck_in_loop_can_be_cancelled(tmp_path, where):
    if where == "build_model":
        body = "def build_model():\n    while True:\n        pass\n"
    else:
        body = "while True:\n    pass\n"
    r = write(tmp_path / "stuck.py", body)
    flag = threading.Event()
    before = sys.gettrace()
    canceller = _cancel_after(0.3, flag)
    result: dict = {}

    def run():
        try:
            load_model(str(r), cancel=flag.is_set)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            result["exc"] = exc
        result["trace"] = sys.gettrace()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=120)  # a hang guard, not a time bound
    canceller.join()
    assert not worker.is_alive(), "the recipe was not cancelled"
    assert isinstance(result.get("exc"), Cancelled), result
    assert result["trace"] is None  # the worker thread's trace hook was restored
    assert sys.gettrace() is before


def test_cancel_hook_restores_previous_tracer(tmp_path):
    r = write(tmp_path / "ok.py", "from torch import nn\ndef build_model():\n    return nn.Linear(2, 2)\n")
    calls = []

    def outer(frame, event, arg):
        calls.append(event)
        return None

    old = sys.gettrace()
    sys.settrace(outer)
    try:
        b = load_model(str(r), cancel=lambda: False)
        assert sys.gettrace() is outer
    finally:
        sys.settrace(old)
    assert b.kind == "recipe"


# --------------------------------------------------------------------------- torch files


@pytest.fixture
def net_module(tmp_path):
    """A module file defining Net next to the model files (importable for pickles)."""
    modname = f"qv_tmp_net_{os.getpid()}"
    write(tmp_path / f"{modname}.py", """
        import torch
        from torch import nn
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 3)
            def forward(self, x):
                return self.fc(x)
    """)
    sys.path.insert(0, str(tmp_path))
    try:
        mod = importlib.import_module(modname)
    finally:
        sys.path.remove(str(tmp_path))
    yield mod
    sys.modules.pop(modname, None)


@pytest.mark.parametrize("fname", ["scripted.pt", "model.ts", "weird.bin"])
def test_torchscript_loads(tmp_path, fname):
    m = TinyNet().eval()
    path = tmp_path / fname
    save_scripted(m, path)
    b = load_model(str(path))
    assert b.kind == "torchscript" and b.name == fname
    assert "torch.export graph" in b.meta["note"]
    x = torch.randn(2, 4)
    assert torch.allclose(b.model(x), m(x))
    check_fits(b, Dataset(torch.randn(3, 4)))
    with pytest.raises(DataError) as err:
        check_fits(b, Dataset(torch.randn(3, 5), name="wide.npz"))
    assert_one_line(err, "wide.npz")


def _export(tmp_path: Path, name: str = "prog.pt2") -> tuple[Path, nn.Module]:
    m = TinyNet().eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    ep = torch.export.export(m, (torch.randn(2, 4),), dynamic_shapes=({0: batch},))
    path = tmp_path / name
    torch.export.save(ep, str(path))
    return path, m


def test_export_loads(tmp_path):
    path, m = _export(tmp_path)
    b = load_model(str(path))
    assert b.kind == "export"
    x = torch.randn(5, 4)
    assert torch.allclose(b.model(x), m(x), atol=1e-6)
    check_fits(b, Dataset(x))


def test_export_wrong_version_and_corrupt(tmp_path):
    path, _ = _export(tmp_path)
    bad = tmp_path / "future.pt2"
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.namelist():
            data = zin.read(item)
            if item.endswith("/archive_version"):
                data = b"99"
            zout.writestr(item, data)
    with pytest.raises(SourceError) as err:
        load_model(str(bad))
    assert "version" in assert_one_line(err, "future.pt2")

    junk = tmp_path / "junk.pt2"
    junk.write_bytes(os.urandom(300))
    with pytest.raises(SourceError) as err:
        load_model(str(junk))
    assert_one_line(err, "junk.pt2")

    sd = tmp_path / "weights.pt2"
    torch.save(TinyNet().state_dict(), sd)
    with pytest.raises(SourceError) as err:
        load_model(str(sd))
    assert_one_line(err, "weights.pt2")

    data = path.read_bytes()
    cut = tmp_path / "cut.pt2"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError) as err:
        load_model(str(cut))
    assert_one_line(err, "cut.pt2")


def test_pickled_module_needs_trust(tmp_path, net_module):
    m = net_module.Net().eval()
    path = tmp_path / "model.pt"
    torch.save(m, path)
    with pytest.raises(TrustRequired) as err:
        load_model(str(path))
    msg = assert_one_line(err, "model.pt")
    assert "--trust" in msg
    # trusted: the class is found next to the file even when not imported yet
    sys.modules.pop(net_module.__name__, None)
    b = load_model(str(path), trust=True)
    assert b.kind == "pickle" and b.name == "model.pt"
    x = torch.randn(2, 4)
    assert torch.allclose(b.model(x), m(x))
    assert not b.model.training


def test_pickled_module_legacy_format_needs_trust(tmp_path, net_module):
    path = tmp_path / "old.pth"
    torch.save(net_module.Net(), path, _use_new_zipfile_serialization=False)
    with pytest.raises(TrustRequired) as err:
        load_model(str(path))
    assert_one_line(err, "old.pth")
    assert load_model(str(path), trust=True).kind == "pickle"


def test_trusted_pickle_with_missing_class(tmp_path, net_module):
    path = tmp_path / "gone.pt"
    torch.save(net_module.Net(), path)
    # the class's module disappears (as when a pickle travels without its code)
    Path(net_module.__file__).unlink()
    sys.modules.pop(net_module.__name__, None)
    importlib.invalidate_caches()
    with pytest.raises(SourceError) as err:
        load_model(str(path), trust=True)
    msg = assert_one_line(err, "gone.pt")
    assert "recipe" in msg and net_module.__name__ in msg


class _EvilSystem:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class _EvilOpen:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("evil", [_EvilSystem, _EvilOpen])
def test_malicious_pickle_is_never_unpickled_without_trust(tmp_path, evil, legacy):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": evil(marker)}, path, _use_new_zipfile_serialization=not legacy)
    assert not marker.exists()
    with pytest.raises(TrustRequired) as err:
        load_model(str(path))
    assert_one_line(err, "evil.pt")
    assert not marker.exists()


def test_state_dict_needs_a_recipe(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(TinyNet().state_dict(), path)
    with pytest.raises(SourceError) as err:
        load_model(str(path))
    msg = assert_one_line(err, "weights.pt")
    assert "state_dict" in msg and "recipe_template.py" in msg
    assert not isinstance(err.value, TrustRequired)
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "model_state": TinyNet().state_dict()}, ckpt)
    with pytest.raises(SourceError) as err:
        load_model(str(ckpt))
    assert "state_dict" in assert_one_line(err, "ckpt.pt")


@pytest.mark.parametrize("obj, expect", [(torch.zeros(3, 4), "tensor of shape (3, 4)"), ([1, 2, 3], "list of 3 items")])
def test_torch_file_without_a_model(tmp_path, obj, expect):
    path = tmp_path / "thing.pt"
    torch.save(obj, path)
    with pytest.raises(SourceError) as err:
        load_model(str(path))
    assert expect in assert_one_line(err, "thing.pt")


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    files = {}
    files["empty.pt"] = tmp_path / "empty.pt"
    files["empty.pt"].write_bytes(b"")
    files["random.pt"] = tmp_path / "random.pt"
    files["random.pt"].write_bytes(np.random.default_rng(0).bytes(500))
    files["notorch.pt"] = tmp_path / "notorch.pt"
    with zipfile.ZipFile(files["notorch.pt"], "w") as zf:
        zf.writestr("readme.txt", "hello")
        zf.writestr("dir/file.txt", "hello")
    buf = tmp_path / "full.pt"
    torch.save(TinyNet().state_dict(), buf)
    data = buf.read_bytes()
    files["truncated.pt"] = tmp_path / "truncated.pt"
    files["truncated.pt"].write_bytes(data[: len(data) // 2])
    files["plain.pkl"] = tmp_path / "plain.pkl"
    files["plain.pkl"].write_bytes(pickle.dumps({"a": 1}))
    files["text.pth"] = tmp_path / "text.pth"
    files["text.pth"].write_text("just some text\n")
    return files


def test_bad_model_files_give_one_line_source_errors(tmp_path):
    for name, path in _bad_files(tmp_path).items():
        with pytest.raises(SourceError) as err:
            load_model(str(path))
        assert not isinstance(err.value, TrustRequired), name
        assert_one_line(err, name)


def test_missing_path_and_plain_folder(tmp_path):
    with pytest.raises(SourceError) as err:
        load_model(str(tmp_path / "nope.pt"))
    assert_one_line(err, "nope.pt")
    folder = tmp_path / "stuff"
    folder.mkdir()
    with pytest.raises(SourceError) as err:
        load_model(str(folder))
    assert "config.json" in assert_one_line(err, "stuff")
    with pytest.raises(SourceError):
        load_model("")


def test_cancel_before_loading(tmp_path):
    path = tmp_path / "m.pt"
    save_scripted(TinyNet(), path)
    with pytest.raises(Cancelled):
        load_model(str(path), cancel=lambda: True)


# --------------------------------------------------------------------------- Hugging Face

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "is", "good", "bad", "great", "a", "plot"]


def _tiny_bert(folder: Path, head: str = "cls", tokenizer: bool = True) -> Path:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(
        vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=160, num_labels=2,
        id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1},
    )
    torch.manual_seed(0)
    cls = transformers.BertForSequenceClassification if head == "cls" else transformers.BertModel
    cls(cfg).save_pretrained(str(folder))
    if tokenizer:
        vocab = folder / "vocab.txt"
        vocab.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
        transformers.BertTokenizer(str(vocab)).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return _tiny_bert(tmp_path_factory.mktemp("hf") / "tiny-bert")


def test_hf_classifier_with_text_data(bert_dir, tmp_path):
    b = load_model(str(bert_dir))
    assert b.kind == "hf" and b.name == "tiny-bert"
    assert type(b.model).__name__ == "BertForSequenceClassification"
    assert b.meta["auto_class"] == "AutoModelForSequenceClassification"
    assert not b.model.training and b.load_data is not None
    txt = tmp_path / "reviews.txt"
    txt.write_text("pos\tthe movie is good\n1\tgreat\n\nneg\tthe plot is bad bad bad\n", encoding="utf-8")
    ds = load_data(str(txt), b)
    assert set(ds.x) == {"input_ids", "attention_mask"}
    assert ds.x["input_ids"].shape == (3, 8)  # [CLS] + 6 words + [SEP], padded to the longest
    assert ds.y.tolist() == [1, 1, 0]
    check_fits(b, ds)
    # unlabelled text
    plain = tmp_path / "plain.txt"
    plain.write_text("the movie\n" + "good " * 300 + "\n", encoding="utf-8")
    ds2 = load_data(str(plain), b)
    assert ds2.y is None and ds2.x["input_ids"].shape == (2, 128)
    # other formats still work through the bundle
    npz = tmp_path / "tok.npz"
    np.savez(npz, input_ids=ds.x["input_ids"].numpy(), attention_mask=ds.x["attention_mask"].numpy())
    assert set(load_data(str(npz), b).x) == {"input_ids", "attention_mask"}


@pytest.mark.parametrize(
    "content, expect",
    [("", "empty"), ("pos\tgood\n\nbad movie\n", "line 3 has no label"), ("meh\tgood\n", "unknown label"),
     ("7\tgood\n", "out of range")],
)
def test_hf_text_errors(bert_dir, tmp_path, content, expect):
    b = load_model(str(bert_dir))
    txt = tmp_path / "bad.txt"
    txt.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_data(str(txt), b)
    assert expect in assert_one_line(err, "bad.txt")


def test_hf_base_model_without_tokenizer(tmp_path):
    folder = _tiny_bert(tmp_path / "base", head="base", tokenizer=False)
    b = load_model(str(folder))
    assert b.kind == "hf" and b.meta["auto_class"] == "AutoModel" and b.load_data is None
    txt = tmp_path / "t.txt"
    txt.write_text("the movie\n")
    with pytest.raises(DataError) as err:
        load_data(str(txt), b)
    assert "tokenizer" in assert_one_line(err, "t.txt")


def test_hf_causal_lm_class(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(vocab_size=50, n_positions=32, n_embd=16, n_layer=1, n_head=2)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(str(tmp_path / "gpt"))
    b = load_model(str(tmp_path / "gpt"))
    assert b.meta["auto_class"] == "AutoModelForCausalLM"
    check_fits(b, Dataset({"input_ids": torch.randint(0, 50, (2, 6)), "attention_mask": torch.ones(2, 6, dtype=torch.long)}))


def test_hf_folder_errors(bert_dir, tmp_path, monkeypatch):
    import shutil

    noweights = tmp_path / "noweights"
    shutil.copytree(bert_dir, noweights)
    (noweights / "model.safetensors").unlink()
    with pytest.raises(SourceError) as err:
        load_model(str(noweights))
    assert "weights" in assert_one_line(err, "noweights")

    broken = tmp_path / "broken"
    shutil.copytree(bert_dir, broken)
    (broken / "config.json").write_text('{"model_type": "bert", ', encoding="utf-8")
    with pytest.raises(SourceError) as err:
        load_model(str(broken))
    assert "JSON" in assert_one_line(err, "config.json")

    custom = tmp_path / "custom"
    shutil.copytree(bert_dir, custom)
    cfg = json.loads((custom / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (custom / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(TrustRequired) as err:
        load_model(str(custom))
    assert_one_line(err, "custom")

    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(SourceError) as err:
        load_model(str(bert_dir))
    assert "pip install quantviz[hf]" in assert_one_line(err, "tiny-bert")


# --------------------------------------------------------------------------- data files


def test_npz_data(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x=np.random.rand(10, 4), y=np.arange(10) % 3)
    ds = load_data(str(path))
    assert ds.name == "data.npz" and len(ds) == 10 and ds.x.dtype == torch.float32 and ds.has_labels
    np.savez(tmp_path / "nolabels.npz", x=np.zeros((3, 4), np.float32))
    assert load_data(str(tmp_path / "nolabels.npz")).y is None


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "keys.npz", inputs=np.zeros(3), labels=np.zeros(3))
    with pytest.raises(DataError) as err:
        load_data(str(tmp_path / "keys.npz"))
    msg = assert_one_line(err, "keys.npz")
    assert "inputs" in msg and "labels" in msg
    np.savez(tmp_path / "nan.npz", x=np.array([[1.0, np.nan]]))
    with pytest.raises(DataError) as err:
        load_data(str(tmp_path / "nan.npz"))
    assert "non-finite" in assert_one_line(err, "nan.npz")
    np.savez(tmp_path / "none.npz", x=np.zeros((0, 4)))
    with pytest.raises(DataError) as err:
        load_data(str(tmp_path / "none.npz"))
    assert_one_line(err, "none.npz")
    np.savez(tmp_path / "mismatch.npz", x=np.zeros((3, 4)), y=np.zeros(5))
    with pytest.raises(DataError) as err:
        load_data(str(tmp_path / "mismatch.npz"))
    assert_one_line(err, "mismatch.npz")
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DataError) as err:
        load_data(str(tmp_path / "corrupt.npz"))
    assert_one_line(err, "corrupt.npz")


@pytest.mark.parametrize("name", ["empty.npz", "empty.pt", "empty.txt"])
def test_empty_data_file(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(DataError) as err:
        load_data(str(tmp_path / name))
    assert_one_line(err, name)


def test_pt_data(tmp_path):
    torch.save({"x": torch.randn(6, 4), "y": torch.arange(6)}, tmp_path / "d.pt")
    ds = load_data(str(tmp_path / "d.pt"))
    assert len(ds) == 6 and ds.has_labels
    torch.save(torch.randn(5, 4), tmp_path / "t.pt")
    assert len(load_data(str(tmp_path / "t.pt"))) == 5
    torch.save({"inputs": torch.zeros(2)}, tmp_path / "k.pt")
    with pytest.raises(DataError) as err:
        load_data(str(tmp_path / "k.pt"))
    assert_one_line(err, "k.pt")
    (tmp_path / "r.pt").write_bytes(os.urandom(100))
    with pytest.raises(DataError) as err:
        load_data(str(tmp_path / "r.pt"))
    assert_one_line(err, "r.pt")


def test_pt_data_never_unpickles_code(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"x": _EvilOpen(marker)}, tmp_path / "evil.pt")
    with pytest.raises(DataError) as err:
        load_data(str(tmp_path / "evil.pt"))
    assert_one_line(err, "evil.pt")
    assert not marker.exists()


def _save_image(path: Path, mode: str, size: tuple[int, int], value: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, 0, 255 - value)
    Image.new(mode, size, color).save(path)


def test_image_folder(tmp_path):
    root = tmp_path / "imgs"
    _save_image(root / "cat" / "a.png", "L", (6, 4), 255)
    _save_image(root / "cat" / "b.png", "L", (6, 4), 0)
    _save_image(root / "dog" / "c.png", "L", (12, 8), 51)
    ds = load_data(str(root))
    assert ds.x.shape == (3, 1, 4, 6) and ds.x.dtype == torch.float32
    assert ds.y.tolist() == [0, 0, 1] and ds.meta["classes"] == ["cat", "dog"]
    assert float(ds.x.max()) == 1.0 and float(ds.x.min()) == 0.0
    _save_image(root / "dog" / "d.jpg", "RGB", (6, 4), 200)
    ds = load_data(str(root))
    assert ds.x.shape == (4, 3, 4, 6)


def test_image_folder_errors(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    with pytest.raises(DataError) as err:
        load_data(str(root))
    assert "no images" in assert_one_line(err, "imgs")
    _save_image(root / "cls" / "ok.png", "L", (4, 4), 10)
    (root / "cls" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DataError) as err:
        load_data(str(root))
    assert_one_line(err, "broken.png")


def test_text_needs_tokenizer_and_unknown_format(tmp_path):
    (tmp_path / "t.txt").write_text("hello\n")
    with pytest.raises(DataError) as err:
        load_data(str(tmp_path / "t.txt"))
    assert "tokenizer" in assert_one_line(err, "t.txt")
    (tmp_path / "d.csv").write_text("1,2\n")
    with pytest.raises(DataError) as err:
        load_data(str(tmp_path / "d.csv"))
    assert_one_line(err, "d.csv")
    with pytest.raises(DataError) as err:
        load_data(str(tmp_path / "missing.npz"))
    assert_one_line(err, "missing.npz")


# --------------------------------------------------------------------------- check_fits


class _Raises(nn.Module):
    def forward(self, x):
        raise ZeroDivisionError("division by zero in layer 3")


class _NaN(nn.Module):
    def forward(self, x):
        return x * float("nan")


def test_check_fits(tmp_path):
    b = bundle_for(TinyNet(), name="digits-cnn")
    check_fits(b, Dataset(torch.randn(5, 4), name="ok.npz"))
    with pytest.raises(DataError) as err:
        check_fits(b, Dataset(torch.randn(5, 3, 32, 32), name="data.npz"))
    msg = assert_one_line(err, "data.npz")
    assert msg.startswith("data.npz: inputs of shape (2, 3, 32, 32) do not fit model digits-cnn: ")
    with pytest.raises(DataError) as err:
        check_fits(b, Dataset({"input_ids": torch.zeros(3, 4)}, name="kw.npz"))
    assert "input_ids (2, 4)" in assert_one_line(err, "kw.npz")
    with pytest.raises(ModelError) as err:
        check_fits(bundle_for(_Raises(), "bad-model"), Dataset(torch.randn(3, 4), name="d.npz"))
    assert "ZeroDivisionError" in assert_one_line(err, "d.npz")
    with pytest.raises(ModelError) as err:
        check_fits(bundle_for(_NaN(), "nan-model"), Dataset(torch.randn(3, 4), name="d.npz"))
    assert assert_one_line(err, "d.npz") == "model nan-model produces NaN outputs on d.npz"


def test_static_export_runs_at_its_batch_size(tmp_path):
    m = TinyNet().eval()
    ep = torch.export.export(m, (torch.randn(1, 4),))
    torch.export.save(ep, str(tmp_path / "static.pt2"))
    b = load_model(str(tmp_path / "static.pt2"))
    assert "fixed batch size of 1" in b.meta["note"] and "\n" not in b.meta["note"]
    x = torch.randn(5, 4)
    check_fits(b, Dataset(x, name="d.npz"))
    from quantviz.core.model.data import call_model

    with torch.no_grad():
        assert torch.allclose(call_model(b.model, x), m(x), atol=1e-6)
