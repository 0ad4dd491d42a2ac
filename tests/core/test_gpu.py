"""The GPU runs every analysis with results equal to the CPU's (skipped without CUDA);
the prepared GPU benchmark runs as a CPU dry run."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sens_models import ResNetish, residual_data

ROOT = Path(__file__).resolve().parents[2]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
def test_every_method_and_the_search_on_the_gpu_equal_the_cpu():
    from quantviz.core.sources.base import ModelBundle
    from quantviz.io.config import preset
    from quantviz.session import Session

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    model, data = ResNetish().eval(), residual_data()
    out = {}
    for dev in ("cpu", "cuda"):
        s = Session(ModelBundle(model=model, name="t", kind="recipe", reference="t", calib=data, eval=data),
                    eval_data=data, calib_data=data, config=preset("W8A8"), device=dev, batch_size=16)
        s.prepare()
        assert s.sim.qmodel.get_submodule("fc").weight.device.type == dev  # the model lives there once
        out[dev] = [s.run_sensitivity(m, bits=(2, 4), cache=False) for m in ("e2e", "loo", "local", "hessian")]
        out[dev].append(s.run_search(avg_bits=4, bits=(2, 4, 8), cache=False)["chosen"])
    for a, b in zip(out["cpu"][:4], out["cuda"][:4]):
        for ea, eb in zip(a["layers"], b["layers"]):
            for k, cell in ea["results"].items():
                for m, v in cell["metrics"].items():
                    assert math.isclose(v, eb["results"][k]["metrics"][m], rel_tol=1e-3, abs_tol=1e-6), (a["method"], m)
    assert out["cpu"][4]["bits"] == out["cuda"][4]["bits"]


@pytest.mark.slow
def test_gpu_benchmark_dry_run_on_the_cpu():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--device", "cpu", "--quick"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(res["models"]) == {"resnet18", "llama"} and res["equal"] is True
    for m in res["models"].values():
        assert m["cells"] > 0 and all(v > 0 for v in m["cpu"].values())
