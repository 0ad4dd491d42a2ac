"""Sweeps, proxies and the search on a local Ray cluster (2 worker processes, loopback only)
give the local run's numbers; cancel stops the workers; a killed worker's points are recomputed."""
import math
import os
import signal

import pytest
import torch

ray = pytest.importorskip("ray")

from quantviz.core.errors import Cancelled  # noqa: E402
from quantviz.core.analysis.raysweep import RayExecutor  # noqa: E402
from quantviz.session.scale import parts_factory  # noqa: E402

from sens_models import ResNetish, make_session, residual_data  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    # the workers import quantviz and the test's model classes as the driver does
    env = {"PYTHONPATH": os.pathsep.join([root, here, os.environ.get("PYTHONPATH", "")])}
    os.environ.setdefault("RAY_worker_niceness", "0")  # as RayExecutor does: niced workers starve on a busy machine
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             _node_ip_address="127.0.0.1", runtime_env={"env_vars": env})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def session():
    torch.manual_seed(0)
    return make_session(ResNetish().eval(), residual_data(), "W8A8")


def _close(a, b, kinds=("results", "act_results"), rel=1e-9):
    for ea, eb in zip(a["layers"], b["layers"]):
        assert ea["name"] == eb["name"]
        for kind in kinds:
            assert set(ea.get(kind, {})) == set(eb.get(kind, {}))
            for k, cell in ea.get(kind, {}).items():
                for m, v in cell["metrics"].items():
                    assert math.isclose(v, eb[kind][k]["metrics"][m], rel_tol=rel, abs_tol=1e-12), (ea["name"], k, m)


def test_every_method_and_the_search_equal_the_local_run(cluster, session):
    for method in ("loo", "local", "hessian"):
        here = session.run_sensitivity(method, bits=(2, 4), act_bits=(4,), cache=False, force=True)
        there = session.run_sensitivity(method, bits=(2, 4), act_bits=(4,), cache=False, force=True, ray="cluster")
        # hessian sums its traces per worker share: the same terms added in another order
        _close(here, there, rel=1e-5 if method == "hessian" else 1e-9)
    a = session.run_search(avg_bits=4, bits=(2, 4, 8), cache=False)
    b = session.run_search(avg_bits=4, bits=(2, 4, 8), cache=False, ray="cluster")
    assert a["chosen"]["bits"] == b["chosen"]["bits"] and a["candidates"] == b["candidates"]
    assert [q["metrics"] for q in a["pareto"]] == [q["metrics"] for q in b["pareto"]]
    # ranked by the local proxy: its candidates are measured on the workers, with the same answer
    a = session.run_search(avg_bits=4, bits=(2, 4, 8), cache=False, sensitivity="local")
    b = session.run_search(avg_bits=4, bits=(2, 4, 8), cache=False, sensitivity="local", ray="cluster")
    assert a["sensitivity"] == b["sensitivity"] == "local"
    assert a["chosen"]["bits"] == b["chosen"]["bits"] and a["candidates"] == b["candidates"]
    assert [q["metrics"] for q in a["pareto"]] == [q["metrics"] for q in b["pareto"]]


def test_cancel_stops_the_workers_and_a_killed_worker_is_recomputed(cluster, session):
    here = session.run_sensitivity("e2e", bits=(2, 3, 4), act_bits=(), cache=False, force=True)
    ex = RayExecutor(parts_factory(session), workers=2)
    pids = ex.pids()
    assert len(set(pids)) == 2 and os.getpid() not in pids
    # not niced: Ray's default niceness (15) starves the workers beside any busy process
    assert [os.getpriority(os.PRIO_PROCESS, p) for p in pids] == [os.getpriority(os.PRIO_PROCESS, 0)] * 2
    groups = [[e["name"]] for e in here["layers"]]
    calls = [("cell", ("e2e", "w", b, g)) for b in (2, 3, 4) for g in groups]
    got = {}
    for i, m in ex.run(calls):
        if not got:
            os.kill(pids[0], signal.SIGKILL)  # a worker dies with calls in flight
        got[i] = m
    assert sorted(got) == list(range(len(calls)))
    for i, (_, (_, _, b, g)) in enumerate(calls):
        want = next(e for e in here["layers"] if e["name"] == g[0])["results"][str(b)]["metrics"]
        assert got[i]["sqnr_db"] == pytest.approx(want["sqnr_db"], rel=1e-9)
    assert set(ex.pids()) != set(pids)  # the dead worker was replaced
    seen = []
    with pytest.raises(Cancelled):
        for i, m in ex.run(calls, cancel=lambda: len(seen) >= 1):
            seen.append(i)
    assert ex.actors == [] and len(seen) < len(calls)
