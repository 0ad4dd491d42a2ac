"""Layer inventory, per-type quantization and BatchNorm folding."""
import pytest
import torch
from torch import nn

from quantviz.core.sim.fakequant import QuantSim
from quantviz.core.model.layers import conv_bn_pairs, fold_batchnorm, inventory
from quantviz.core.numerics.spec import ActSpec, LayerSpec, WeightSpec


def _randomise_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(torch.randn(c, generator=g) * 0.2)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.3)
                m.running_var.copy_(0.2 + torch.rand(c, generator=g))
    return model.eval()


# one module of every quantizable type, with an input that suits it
CASES = [
    (nn.Linear(12, 5), torch.randn(3, 12), 0),
    (nn.Conv1d(3, 6, 3), torch.randn(2, 3, 10), 0),
    (nn.Conv2d(3, 6, 3), torch.randn(2, 3, 8, 8), 0),
    (nn.Conv3d(2, 4, 3), torch.randn(2, 2, 5, 5, 5), 0),
    (nn.ConvTranspose1d(3, 7, 3), torch.randn(2, 3, 6), 1),
    (nn.ConvTranspose2d(3, 7, 3), torch.randn(2, 3, 5, 5), 1),
    (nn.Embedding(20, 6), torch.randint(0, 20, (2, 7)), 0),
]


@pytest.mark.parametrize("module,x,axis", CASES, ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else "")
def test_every_layer_type_quantizes_per_channel_on_its_output_axis(module, x, axis):
    torch.manual_seed(0)
    model = nn.Sequential(module).eval()
    sim = QuantSim(model)
    (info,) = sim.layers
    assert info.type == type(module).__name__
    assert info.channel_axis == axis
    assert info.has_activation_input == (not isinstance(module, nn.Embedding))
    spec = LayerSpec(WeightSpec(bits=3, granularity="per_channel"),
                     ActSpec(bits=8) if info.has_activation_input else ActSpec(bits=None))
    if info.has_activation_input:
        sim.calibrate(_dataset(x))
    assert sim.apply({info.name: spec}) == [info.name]
    wq = sim.applied_weight(info.name)
    w = sim.float_weight(info.name)
    wqp = sim.quantize_weight(info.name, spec.weight)
    assert wqp.qparams.groups == w.shape[axis]
    assert not torch.equal(wq, w)
    # a 3-bit symmetric grid has at most 8 levels per output channel
    for c in range(w.shape[axis]):
        assert torch.unique(wq.select(axis, c)).numel() <= 8
    # ... and reconstructs each channel to within half a step
    scale = wqp.qparams.scale.view([-1 if d == axis else 1 for d in range(w.dim())])
    assert torch.all((wq - w).abs() <= scale / 2 + 1e-6)
    with torch.no_grad():
        out_q, out_f = sim.qmodel(x), sim.float_model(x)
    assert out_q.shape == out_f.shape and not torch.equal(out_q, out_f)


def _dataset(x):
    from quantviz.core.model.data import Dataset

    return Dataset(x, None, name="t")


def test_embedding_input_is_never_activation_quantized():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Embedding(30, 8), nn.Flatten(), nn.Linear(8 * 4, 3)).eval()
    ids = torch.randint(0, 30, (16, 4))
    sim = QuantSim(model)
    sim.calibrate(_dataset(ids))
    assert "0" not in sim.act_obs and "2" in sim.act_obs  # no statistics of the indices
    spec = LayerSpec(WeightSpec(bits=8), ActSpec(bits=8))
    sim.apply({"0": spec, "2": spec})
    seen = {}
    sim.qmodel.get_submodule("0").register_forward_hook(lambda m, a, o: seen.update(ids=a[0], out=o))
    with torch.no_grad():
        sim.qmodel(ids)
    assert torch.equal(seen["ids"], ids)  # integer indices pass untouched
    wq = sim.quantize_weight("0", spec.weight).tensor
    assert torch.equal(seen["out"], wq[ids])


def test_inventory_lists_shared_modules_once_and_skips_non_quantizable():
    lin = nn.Linear(4, 4)
    model = nn.Sequential(lin, nn.ReLU(), lin, nn.LayerNorm(4), nn.Conv1d(1, 1, 1))
    names = [l.name for l in inventory(model)]
    assert names == ["0", "4"]
    assert [l.index for l in inventory(model)] == [0, 1]


def _fold_case(dim):
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dim]
    bn = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dim]
    model = nn.Sequential(conv(3, 8, 3, padding=1, bias=False), bn(8), nn.ReLU(),
                          conv(8, 4, 3, padding=1), bn(4))
    x = torch.randn(2, 3, *([6] * dim))
    return _randomise_bn(model, dim), x


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_batchnorm_folding_keeps_the_float_function(dim):
    model, x = _fold_case(dim)
    folded, pairs = fold_batchnorm(model)
    assert pairs == [("0", "1"), ("3", "4")]
    assert isinstance(folded[1], nn.Identity) and isinstance(folded[4], nn.Identity)
    assert isinstance(model[1], nn.modules.batchnorm._BatchNorm)  # the original is untouched
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)
    sim = QuantSim(model)
    assert sim.folded_pairs == pairs
    with torch.no_grad():
        torch.testing.assert_close(sim.float_model(x), model(x), atol=1e-5, rtol=1e-5)
        # quantizing the folded weights: the folded conv's weights are what is quantized
        assert not torch.equal(sim.float_weight("0"), model[0].weight)


def test_fold_bn_false_keeps_batchnorm_and_weights():
    model, x = _fold_case(2)
    sim = QuantSim(model, fold_bn=False)
    assert sim.folded_pairs == []
    assert isinstance(sim.float_model[1], nn.BatchNorm2d) and isinstance(sim.qmodel.get_submodule("4"), nn.BatchNorm2d)
    assert torch.equal(sim.float_weight("0"), model[0].weight)
    with torch.no_grad():
        assert torch.equal(sim.float_model(x), model(x))


class _Branchy(nn.Module):
    """conv1 -> bn1 (foldable, found by tracing); conv2's output also feeds a skip (not foldable)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        z = self.conv2(y)
        return self.bn2(z) + z


def test_folding_follows_the_graph_not_the_registration_order():
    model = _randomise_bn(_Branchy(), 5)
    assert conv_bn_pairs(model) == [("conv1", "bn1")]
    x = torch.randn(2, 3, 6, 6)
    folded, pairs = fold_batchnorm(model)
    assert pairs == [("conv1", "bn1")] and isinstance(folded.bn2, nn.BatchNorm2d)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)


class _SharedConv(nn.Module):
    """One conv called twice, each call followed by its own BatchNorm: folding would be wrong."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn_a, self.bn_b = nn.BatchNorm2d(4), nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn_a(self.conv(x)) + self.bn_b(self.conv(x * 2))


class _SharedBN(nn.Module):
    """One BatchNorm applied after two different convs: it can be folded into neither alone."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.c1(x)) + self.bn(self.c2(x))


@pytest.mark.parametrize("cls", [_SharedConv, _SharedBN])
def test_shared_modules_are_not_folded(cls):
    model = _randomise_bn(cls(), 7)
    x = torch.randn(2, 3, 5, 5)
    folded, pairs = fold_batchnorm(model)
    assert pairs == []
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)
