"""Sensitivity cells, proxy parts and search candidates as Ray tasks.

:class:`RayExecutor` starts ``workers`` Ray actors; each builds the analysis
inputs (:class:`~.sensitivity.Parts`) once from a picklable ``factory`` (the
session ships its model and data through Ray's object store, or names the
``MODEL`` reference to load) and then answers calls:

* ``cell(method, kind, bits, group)`` / ``base_metrics(...)``: one ``e2e`` /
  ``loo`` measurement (:class:`.sensitivity.CellRunner`, the same code as the
  local sweep);
* ``local_totals(names, opts)``: the ``local`` proxy's sums for some layers;
* ``hessian_traces(batch_ids, opts)``: Hessian trace sums over some batches;
* ``evaluate(specs)``: one search candidate's metrics.

:meth:`RayExecutor.run` keeps every worker busy (two calls in flight each),
yields results as they finish, polls ``cancel`` and on cancel stops the
remote tasks (``ray.cancel``) and the workers. A worker that dies is
restarted by Ray and its call retried (``max_restarts`` /
``max_task_retries``); a call that still fails is sent to another worker, so
no point is lost. Ray is imported only here, and only when an executor is made.
"""
from __future__ import annotations

import os
from typing import Callable, Iterator

from ..errors import Cancelled, QuantvizError


class RayError(QuantvizError):
    pass


def _ray():
    try:
        import ray
    except ImportError:
        raise RayError("--ray needs Ray (pip install 'quantviz[ray]')") from None
    return ray


def _why(exc) -> str:
    """The root cause's line from a Ray error (e.g. 'ModuleNotFoundError: No module named ...')."""
    lines = [ln.strip() for ln in str(exc).splitlines() if "Error:" in ln and not ln.strip().startswith("ray.")]
    return lines[-1] if lines else type(exc).__name__


class Worker:
    """What one Ray actor holds: the analysis inputs, built once, and a cell runner per method."""

    def __init__(self, factory: Callable, threads: int | None = None):
        import torch

        if threads:
            torch.set_num_threads(int(threads))
        self.parts = factory()
        self._runners: dict = {}

    def ping(self) -> int:
        import os

        return os.getpid()

    def _runner(self, method):
        from .sensitivity import CellRunner

        if method not in self._runners:
            self._runners[method] = CellRunner(self.parts, method)
        return self._runners[method]

    def cell(self, method, kind, b, group):
        return self._runner(method).cell(kind, b, group)

    def base_metrics(self, method, kind, b, group=None):
        return self._runner(method).base_metrics(kind, b)

    def local_totals(self, names, opts):
        from .proxies import local_totals

        return local_totals(self.parts, names, **opts)

    def hessian_traces(self, batch_ids, opts):
        from .proxies import hessian_traces

        return hessian_traces(self.parts, batch_ids, **opts)

    def evaluate(self, specs):
        from ..sim.evaluate import evaluate_quantized

        p = self.parts
        self._runners.clear()  # the cached activations belong to another base
        p.sim.apply(specs)
        try:
            return evaluate_quantized(p.sim.qmodel, p.data, p.reference, device=p.device, evaluate_fn=p.evaluate_fn)
        finally:
            p.sim.apply(p.base_specs)


class RayExecutor:
    """A pool of Ray actors that each hold the model once (see module doc).

    ``address``: ``None`` uses the Ray already initialised in this process (else
    starts a local one), ``"local"`` or ``"local:N"`` starts a local cluster with N
    CPUs, ``"auto"`` joins the cluster started with ``ray start``, anything else is
    a cluster address (``HOST:6379`` or ``ray://HOST:10001``)."""

    def __init__(self, factory: Callable, *, address: str | None = None, workers: int | None = None,
                 cpus_per_worker: float = 1, gpus_per_worker: float = 0, max_restarts: int = 2):
        ray = _ray()
        self.ray = ray
        self._started = False
        if not ray.is_initialized():
            # Ray starts its workers at niceness 15: beside any busy process they starve (a sweep
            # that takes 20 s quiet did not finish in 5 minutes beside two busy loops)
            os.environ.setdefault("RAY_worker_niceness", "0")
            kw = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
            try:
                if address is None or str(address).startswith("local"):
                    n = int(str(address).split(":")[1]) if address and ":" in str(address) else None
                    ray.init(num_cpus=n, **kw)
                else:
                    ray.init(address=address, **kw)
            except Exception as exc:  # noqa: BLE001 - Ray raises many kinds
                raise RayError(f"--ray {address}: cannot connect ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
            self._started = True
        total = int(ray.cluster_resources().get("CPU", 1))
        self.size = max(1, int(workers or max(1, total // max(cpus_per_worker, 1))))
        self._factory_ref = ray.put(factory)
        if gpus_per_worker:
            if ray.cluster_resources().get("GPU", 0) < gpus_per_worker:
                raise RayError("--device cuda with --ray: the Ray cluster has no GPU")
            self.size = max(1, min(self.size, int(ray.cluster_resources().get("GPU", 0) // gpus_per_worker)))
        cls = ray.remote(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_restarts=max_restarts, max_task_retries=max_restarts)(Worker)
        threads = max(1, int(cpus_per_worker))
        self.actors = [cls.remote(self._factory_ref, threads) for _ in range(self.size)]
        self.retries = 0
        self.failures: list[str] = []

    def pids(self) -> list[int]:
        return self.ray.get([a.ping.remote() for a in self.actors])

    def run(self, calls: list, *, cancel: Callable[[], bool] = lambda: False, per_worker: int = 2,
            poll_s: float = 0.1) -> Iterator[tuple[int, object]]:
        """Run ``calls`` (``(method name, args)``) on the actors; yield ``(index, result)`` as they finish."""
        ray = self.ray
        queue = list(range(len(calls)))[::-1]
        pending: dict = {}  # ref -> (index, actor slot)
        load = [0] * len(self.actors)
        tries = [0] * len(calls)

        def submit(i):
            slot = min(range(len(self.actors)), key=lambda k: load[k])
            name, args = calls[i]
            ref = getattr(self.actors[slot], name).remote(*args)
            pending[ref] = (i, slot)
            load[slot] += 1

        try:
            while queue or pending:
                while queue and len(pending) < per_worker * len(self.actors):
                    submit(queue.pop())
                if cancel():
                    raise Cancelled("cancelled")
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=poll_s)
                for ref in ready:
                    i, slot = pending.pop(ref)
                    load[slot] -= 1
                    try:
                        value = ray.get(ref)
                    except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                            ray.exceptions.ObjectLostError) as exc:
                        tries[i] += 1
                        self.failures.append(type(exc).__name__)
                        if tries[i] > 3:
                            raise RayError(f"a Ray worker failed {tries[i]} times on one task: {_why(exc)}") from None
                        self.retries += 1
                        queue.append(i)  # measure it again, on whichever worker is free
                        continue
                    except ray.exceptions.RayTaskError as exc:
                        cause = exc.as_instanceof_cause() if hasattr(exc, "as_instanceof_cause") else exc
                        if isinstance(cause, QuantvizError):
                            raise cause from None
                        raise RayError(f"a Ray task failed: {str(exc).strip().splitlines()[-1]}") from None
                    yield i, value
        except GeneratorExit:  # the caller stopped reading: drop what is still running, keep the workers
            self._cancel(pending)
            raise
        except BaseException:  # cancelled or failed: stop the remote tasks and the workers
            self._cancel(pending)
            self.close()
            raise

    def _cancel(self, refs) -> None:
        for ref in list(refs):
            try:
                self.ray.cancel(ref, force=False)
            except Exception:  # noqa: BLE001 - already finished or gone
                pass

    def close(self) -> None:
        """Stop the workers (and the local Ray this executor started)."""
        for a in self.actors:
            try:
                self.ray.kill(a)
            except Exception:  # noqa: BLE001
                pass
        self.actors = []
        if self._started:
            self.ray.shutdown()
            self._started = False


__all__ = ["RayExecutor", "RayError", "Worker"]
