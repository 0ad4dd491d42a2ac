"""``--format executorch`` (issue 27 §3): a .pte that ExecuTorch's Python runtime runs with the
simulation's accuracy, its 8-bit layers on XNNPACK int8 kernels. Skipped without ExecuTorch."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("executorch")

from quantviz.core.backends import executorch_backend as eb  # noqa: E402
from quantviz.core.errors import QuantvizError  # noqa: E402
from quantviz.core.sim.fakequant import iterate_outputs  # noqa: E402
from quantviz.core.numerics.sqnr import tensor_sqnr_db  # noqa: E402


def test_demo_w8a8_runs_in_executorch_with_the_simulations_accuracy(demo, tmp_path):
    demo.apply_preset("W8A8")
    sim_acc = demo.check(record=False).metrics["accuracy"]
    path = tmp_path / "demo.pte"
    res = demo.export("executorch", path)
    assert res.details["kernels"] == demo.layer_names  # every layer on XNNPACK int8 kernels
    # int8 weights in the program: XNNPACK's quantizer once left every Conv2d that a ReLU follows
    # as a float convolution (float weights; 105 KB for the demo's 147 KB of float weights)
    float_bytes = sum(p.numel() * 4 for n, p in demo.bundle.model.named_parameters() if n.endswith("weight"))
    assert path.stat().st_size < 0.5 * float_bytes
    fn = eb.load(path)
    x, y = demo.eval_data.x, demo.eval_data.y
    out = eb.run(fn, x, res.details["batch"] or 64, not res.details["dynamic_batch"])
    with demo.lock:
        demo.sim.apply(demo.specs)
        sim_out = torch.cat([o for _, o, _ in iterate_outputs(demo.sim.qmodel, demo.eval_data, device="cpu")])
    assert abs(float((out.argmax(-1) == y).float().mean()) - sim_acc) <= 0.005
    assert tensor_sqnr_db(sim_out, out) > 30.0


def test_executorch_refuses_targets(demo, tmp_path):
    with pytest.raises(QuantvizError, match="is for --format onnx"):
        demo.export("executorch", tmp_path / "x.pte", target="tensorrt")
