"""BlockRunner (core.sim.blocks) on small stacks of blocks: restarts, budgets, fallbacks."""
from __future__ import annotations

import torch
from torch import nn

from quantviz.core.model.data import Dataset
from quantviz.core.sim.blocks import BlockRunner, find_blocks


class Stack(nn.Module):
    def __init__(self, n: int = 4, reverse: bool = False, skip: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(8, 8)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(8, 8), nn.Tanh()) for _ in range(n))
        self.head = nn.Linear(8, 3)
        self.reverse, self.skip = reverse, skip

    def forward(self, x):
        h = self.inp(x)
        first = None
        for b in (reversed(self.blocks) if self.reverse else self.blocks):
            h = b(h)
            first = h if first is None else first
        return self.head(h + first if self.skip else h)


def _data(n: int = 10) -> Dataset:
    return Dataset(torch.randn(n, 8, generator=torch.Generator().manual_seed(1)), None, name="x")


def test_an_edit_reruns_from_its_block_and_equals_a_full_pass():
    m, data = Stack(), _data()
    r = BlockRunner(m, data, batch_size=4)
    assert find_blocks(m)[0] == "blocks"
    r.baseline()
    assert r.incremental and r.checkpoints == [0, 1, 2, 3]
    with torch.no_grad():
        m.blocks[2][0].weight.mul_(0.5)
    outs = r.run(["blocks.2.0"])
    assert r.last_start == 2
    with torch.no_grad():
        assert all(torch.equal(o, m(x).float()) for o, (x, _) in zip(outs, data.batches(4)))
    r.run(["head"])
    assert r.last_start == 4  # the head runs after every block: no block recomputed
    r.run(["inp"])
    assert r.last_start == 0


def test_blocks_out_of_order_or_read_later_fall_back_to_full_passes():
    for m, why in ((Stack(reverse=True), "in order"), (Stack(skip=True), "reproduce")):
        data = _data()
        r = BlockRunner(m, data, batch_size=4)
        r.baseline()
        assert not r.incremental and why in r.reason
        with torch.no_grad():
            m.blocks[3][0].weight.mul_(0.5)
            want = [m(x) for x, _ in data.batches(4)]
        assert all(torch.equal(o, w) for o, w in zip(r.run(["blocks.3.0"]), want))


def test_a_budget_for_two_blocks_keeps_evenly_spaced_ones_and_the_last():
    m, data = Stack(n=6), _data()
    per_block = 10 * 8 * 4  # samples x width x float32
    r = BlockRunner(m, data, batch_size=4, budget_bytes=2 * per_block)
    r.baseline()
    assert r.checkpoints == [2, 5] and r.cache_bytes <= 2 * per_block
    with torch.no_grad():
        m.blocks[5][0].weight.mul_(0.5)
    outs = r.run(["blocks.5.0"])
    assert r.last_start == 3  # restarts after the kept block 2
    with torch.no_grad():
        assert all(torch.equal(o, m(x)) for o, (x, _) in zip(outs, data.batches(4)))
