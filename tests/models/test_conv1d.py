"""transformers' Conv1D (GPT-2): inventory, per-channel axis, evaluate, exports."""
from __future__ import annotations

import json

import pytest
import torch

from quantviz.core.sim.fakequant import QuantSim
from quantviz.core.model.layers import inventory
from quantviz.core.numerics.spec import WeightSpec
from quantviz.session import Session

from .fixtures import tiny_gpt2, token_npz

pytest.importorskip("transformers")

PROJ = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    d = tmp_path_factory.mktemp("gpt2")
    folder = tiny_gpt2(d / "gpt2")
    data = token_npz(d / "ids.npz")
    return folder, data


def test_inventory_lists_every_projection(gpt2):
    import transformers

    model = transformers.GPT2LMHeadModel.from_pretrained(str(gpt2[0]))
    layers = {l.name: l for l in inventory(model)}
    for blk in range(2):
        for p in PROJ:
            info = layers[f"transformer.h.{blk}.{p}"]
            assert info.type == "Conv1D"
            assert info.channel_axis == 1  # weight stored (in, out)
            mod = model.get_submodule(info.name)
            assert info.channels == mod.nf


def test_per_channel_and_group_grids_run_along_output_columns(gpt2):
    import transformers

    model = transformers.GPT2LMHeadModel.from_pretrained(str(gpt2[0]))
    sim = QuantSim(model)
    name = "transformer.h.0.mlp.c_fc"
    w = sim.float_weight(name).float()
    wq = sim.quantize_weight(name, WeightSpec(bits=8, granularity="per_channel"))
    assert wq.qparams.scale.numel() == w.shape[1]  # one scale per output column
    # the same numbers as a Linear holding the transposed weight (output channels on axis 0)
    lin = torch.nn.Sequential(torch.nn.Linear(w.shape[0], w.shape[1], bias=False))
    with torch.no_grad():
        lin[0].weight.copy_(w.t())
    ref = QuantSim(lin)
    for spec in (WeightSpec(bits=8, granularity="per_channel"), WeightSpec(bits=4, granularity="per_group", group_size=16)):
        got = sim.quantize_weight(name, spec)
        exp = ref.quantize_weight("0", spec)
        assert torch.equal(got.tensor.float().t(), exp.tensor.float())
        assert torch.equal(got.qparams.scale, exp.qparams.scale)
    g = sim.quantize_weight(name, WeightSpec(bits=4, granularity="per_group", group_size=16))
    assert g.qparams.scale.numel() == w.shape[1] * (w.shape[0] // 16)
    ref.close()
    sim.close()


def test_evaluate_and_exports(gpt2, tmp_path):
    folder, data = gpt2
    s = Session.open(str(folder), data=str(data), batch_size=4)
    assert sum(1 for l in s.layers if l.type == "Conv1D") == 8
    s.apply_preset("W8A8")
    res = s.check(label="W8A8")
    assert 20 < res.metrics["sqnr_db"] < 200
    s.export("aimet", tmp_path / "m.encodings")
    doc = json.loads((tmp_path / "m.encodings").read_text())
    names = {e["name"] for e in doc["param_encodings"]}
    for p in PROJ:
        assert f"transformer.h.1.{p}.weight" in names
    enc = next(e for e in doc["param_encodings"] if e["name"] == "transformer.h.0.mlp.c_fc.weight")
    assert len(enc["scale"]) == 128  # per output column
    pytest.importorskip("onnx")
    s.export("onnx", tmp_path / "m.onnx")
    import onnx

    m = onnx.load(str(tmp_path / "m.onnx"))
    dq = {n.output[0] for n in m.graph.node if n.op_type == "DequantizeLinear"}
    for p in PROJ:
        assert f"transformer.h.0.{p}.weight" in dq


def test_torchao_export_runs_the_projections_on_real_kernels(gpt2, tmp_path):
    """Conv1D is x @ W + b: torchao's Linear kernels run it (as the nn.Linear holding W.T),
    in the export and in the generated script applied to the user's own model."""
    pytest.importorskip("torchao")
    import importlib.util

    import transformers

    from quantviz.core.numerics.sqnr import tensor_sqnr_db

    folder, data = gpt2
    s = Session.open(str(folder), data=str(data), batch_size=4)
    s.apply_preset("W4G32")
    res = s.export("torchao", tmp_path / "m.pt")
    for blk in range(2):
        for p in PROJ:
            assert f"transformer.h.{blk}.{p}" in res.details["kernels"]
    assert not any(".h." in n for n in res.details["simulated"])
    spec = importlib.util.spec_from_file_location("apply_torchao", tmp_path / "m_torchao.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = transformers.GPT2LMHeadModel.from_pretrained(str(folder)).eval()
    mod.apply(model)
    assert isinstance(model.transformer.h[0].mlp.c_fc, torch.nn.Linear)
    model.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=False)["state_dict"], assign=True)
    x = s.eval_data.x
    with torch.no_grad():
        got = model(**x).logits
        s.sim.apply(s.specs)
        ref = s.sim.qmodel(**x).logits
    assert tensor_sqnr_db(ref, got) > 80  # the same weights on torchao's int4 kernels


def test_onnx_export_runs_in_onnx_runtime_on_any_token_count(gpt2, tmp_path):
    """The ONNX model takes the data's inputs only (transformers' logits_to_keep once became a
    graph input that picked one token's logits), with dynamic batch and token axes, and
    ONNX Runtime computes what the simulation computes."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    folder, data = gpt2
    s = Session.open(str(folder), data=str(data), batch_size=4)
    s.apply_preset("W8A8")
    s.export("onnx", tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert sorted(i.name for i in sess.get_inputs()) == ["attention_mask", "input_ids"]
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(1, 97, (3, 21), generator=g)
    mask = torch.ones(3, 21, dtype=torch.long)
    mask[0, 13:] = 0
    got = torch.from_numpy(sess.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0])
    with torch.no_grad():
        s.sim.apply(s.specs)
        ref = s.sim.qmodel(input_ids=ids, attention_mask=mask).logits
    assert got.shape == ref.shape
    from quantviz.core.numerics.sqnr import tensor_sqnr_db

    assert tensor_sqnr_db(ref[mask.bool()], got[mask.bool()]) > 60


def test_an_exported_gpt2_program_lists_the_same_layers(gpt2, tmp_path):
    """A torch.export program of GPT-2 calls its Conv1D projections as aten.addmm and its
    tied wte / lm_head weight from two places; it loads (its ModelOutput type is transformers')
    and lists the folder's layers, with the folder's metrics."""
    import transformers

    folder, data = gpt2
    model = transformers.GPT2LMHeadModel.from_pretrained(str(folder)).eval()
    model.config.use_cache = False
    ids = torch.randint(1, 97, (2, 16))
    ep = torch.export.export(model, (), {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, strict=False)
    torch.export.save(ep, str(tmp_path / "gpt2.pt2"))
    a = Session.open(str(folder), data=str(data), batch_size=4)
    b = Session.open(str(tmp_path / "gpt2.pt2"), data=str(data), batch_size=4)
    assert [(l.name, l.type) for l in b.layers] == [(l.name, l.type) for l in a.layers]
    for s in (a, b):
        s.apply_preset("W8A8")
    ma, mb = a.check(label="W8A8").metrics, b.check(label="W8A8").metrics
    for k in ("sqnr_db", "cosine", "kl_div", "top1_agreement", "perplexity"):  # a causal LM's program
        assert mb[k] == pytest.approx(ma[k], rel=1e-5, abs=1e-9), k
