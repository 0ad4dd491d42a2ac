"""Quantization-aware training in core: the quantizers match the simulation's grids,
training improves a low-bit model, a resumed run repeats an uninterrupted one."""
import pytest
import torch
from torch import nn

from quantviz.core.model.data import Dataset
from quantviz.core.errors import Cancelled
from quantviz.core.sim.fakequant import QuantSim
from quantviz.core.training.qat import QATError, QATInputs, QATOptions, train_qat
from quantviz.core.training.qat_quant import ActQuantizer, WeightQuantizer, range_for_scale
from quantviz.core.numerics.qparams import compute_qparams
from quantviz.core.numerics.quantize import quantize_weight_tensor
from quantviz.core.numerics.spec import ActSpec, LayerSpec, RangeSpec, WeightSpec


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()


def _data(n=96, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=g)
    return Dataset(x, (x[:, :4].sum(1) > 0).long() + 2 * (x[:, 4] > 0).long(), name="toy")


def _inputs(sim, bits=2, act_bits=None, train=None):
    specs = {l.name: LayerSpec(WeightSpec(bits=bits), ActSpec(bits=act_bits)) for l in sim.layers}
    actqp = {}
    if act_bits:
        sim.calibrate(train or _data())
        actqp = {n: sim.activation_qparams(n, s.activation) for n, s in specs.items()}
    return QATInputs(sim.float_model, sim.layers, specs, actqp, train or _data())


@pytest.mark.parametrize("spec", [
    WeightSpec(bits=3, granularity="per_tensor"),
    WeightSpec(bits=3, granularity="per_channel"),
    WeightSpec(bits=4, granularity="per_group", group_size=5),
    WeightSpec(bits=3, granularity="per_channel", symmetric=False),
    WeightSpec(bits=3, granularity="per_channel", grid="torch"),
    WeightSpec(bits=4, granularity="per_channel", range=RangeSpec("mse")),
])
@pytest.mark.parametrize("lsq", [False, True])
def test_weight_quantizer_matches_the_simulation_and_passes_gradients(spec, lsq):
    w = torch.randn(6, 7, generator=torch.Generator().manual_seed(3))
    q = WeightQuantizer(w, spec, 0, lsq=lsq)
    ref = quantize_weight_tensor(w, spec, 0).tensor
    wp = w.clone().requires_grad_(True)
    out = q(wp)
    assert torch.allclose(out, ref, atol=1e-6)
    (out * torch.arange(out.numel()).reshape(out.shape)).sum().backward()
    assert wp.grad is not None and wp.grad.abs().sum() > 0
    if lsq:
        assert q.scale.grad is not None and q.scale.grad.abs().sum() > 0
    st = q.stats(w)
    assert st["changed"] == 0.0 and st["dist"] == 0.0


@pytest.mark.parametrize("sym,grid", [(True, "full"), (True, "torch"), (True, "restricted"), (False, "full")])
def test_learned_range_maps_back_to_the_learned_scale(sym, grid):
    qp = compute_qparams(-0.7, 1.3, 4, sym, grid)
    lo, hi = range_for_scale(float(qp.scale[0]), float(qp.zero_point[0]), qp.qmin, qp.qmax, sym, grid)
    back = compute_qparams(lo, hi, 4, sym, grid)
    assert torch.allclose(back.scale, qp.scale, rtol=1e-6) and torch.equal(back.zero_point, qp.zero_point)


def test_activation_quantizer_is_the_simulations_and_lsq_learns():
    x = torch.randn(64, 8) * 2
    qp = compute_qparams(float(x.min()), float(x.max()), 4, False)
    frozen = ActQuantizer(qp, ActSpec(bits=4))
    from quantviz.core.sim.fakequant import fake_quantize_tensor

    assert torch.equal(frozen(x), fake_quantize_tensor(x, qp))
    lsq = ActQuantizer(qp, ActSpec(bits=4), lsq=True)
    x.requires_grad_(True)
    lsq(x).pow(2).sum().backward()
    assert lsq.scale.grad is not None and float(lsq.scale.grad.abs()) > 0


def test_qat_improves_a_2_bit_model_and_reports_curves():
    sim = QuantSim(_mlp())
    data = _data(256)
    inp = _inputs(sim, bits=2, act_bits=8, train=data)
    steps = []
    res = train_qat(inp, QATOptions(steps=40, lr=3e-3, batch_size=32, log_every=5),
                    on_step=steps.append, watch=lambda: {"0"})
    assert res.loss == "ce" and len(res.curves["loss"]) == 40
    first, last = sum(res.curves["loss"][:5]) / 5, sum(res.curves["loss"][-5:]) / 5
    assert last < first
    logged = [s for s in steps if "layers" in s]
    assert logged and set(logged[-1]["layers"]) == {"0", "2"} and "0" in logged[-1]["weights"]
    lay = res.curves["layers"]["0"]
    assert len(lay["w_scale"]) == len(res.curves["log_step"]) and lay["w_changed"][-1] > 0
    # the trained state is what the simulation quantizes: the trained twin beats the untrained one
    before = QuantSim(_mlp())
    after = QuantSim(_mlp())
    after.load_state(res.state)
    specs = inp.specs
    for s in (before, after):
        s.calibrate(data)
        s.apply(specs)
    y = data.y
    acc = lambda s: float((s.qmodel(data.x).argmax(1) == y).float().mean())  # noqa: E731
    assert acc(after) > acc(before) + 0.05


def test_distillation_without_labels():
    sim = QuantSim(_mlp())
    unlabelled = Dataset(_data().x, None, name="nolabels")
    res = train_qat(_inputs(sim, train=unlabelled), QATOptions(steps=10, lr=1e-3))
    assert res.loss == "kl"
    with pytest.raises(QATError, match="labels"):
        train_qat(_inputs(sim, train=unlabelled), QATOptions(steps=2, loss="ce"))


def test_resume_from_a_checkpoint_repeats_the_uninterrupted_run(tmp_path):
    torch.set_num_threads(1)
    sim = QuantSim(_mlp())
    opt = QATOptions(steps=12, lr=2e-3, batch_size=16, lsq=True, checkpoint_every=5)
    full = train_qat(_inputs(sim), opt)
    ck = tmp_path / "run.ckpt"
    seen = []

    def cancel():
        return len(seen) >= 7

    with pytest.raises(Cancelled):
        train_qat(_inputs(sim), opt, checkpoint=ck, on_step=lambda i: seen.append(i["step"]), cancel=cancel)
    assert ck.is_file()
    resumed_from = []
    res = train_qat(_inputs(sim), opt, checkpoint=ck, on_step=lambda i: resumed_from.append(i["step"]))
    assert resumed_from[0] == 6  # steps 1..5 came from the checkpoint
    assert res.curves["loss"] == full.curves["loss"]
    for k, v in full.state.items():
        assert torch.equal(v, res.state[k]), k
    # a checkpoint of other settings is not used
    other = train_qat(_inputs(sim), QATOptions(steps=12, lr=1e-3, batch_size=16, lsq=True), checkpoint=ck)
    assert other.curves["loss"][0] == full.curves["loss"][0] and other.curves["loss"][-1] != full.curves["loss"][-1]


def test_kept_batchnorm_is_reestimated():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4)).eval()
    sim = QuantSim(model, fold_bn=False)
    res = train_qat(_inputs(sim, bits=4), QATOptions(steps=4, lr=1e-3))
    assert not torch.equal(res.state["1.running_mean"], model[1].running_mean)


def test_bad_options_are_named():
    for kw, msg in (({"steps": 0}, "steps"), ({"lr": 0}, "learning rate"), ({"loss": "hinge"}, "loss")):
        with pytest.raises(QATError, match=msg):
            QATOptions(**kw).check()


def test_trains_even_when_the_caller_disabled_gradients():
    sim = QuantSim(_mlp())
    with torch.no_grad():
        res = train_qat(_inputs(sim), QATOptions(steps=3, lr=1e-3))
    assert len(res.curves["loss"]) == 3
