"""Real quantized models, measured: size on disk, CPU latency and accuracy.

``benchmark(session)`` builds, next to the float model, the really quantized
models of the session's current config and measures each:

* ``torchao``: ``quantize_`` with per-layer configs (Linear kernels);
* ``pt2e``: torchao's pt2e flow lowered to oneDNN int8 kernels (convolutions
  and Linear layers with 8-bit weights and activations);
* ``onnxruntime``: the ONNX QDQ export in ONNX Runtime (and the float ONNX
  model as its baseline).

It is a plain long function (``progress``, ``cancel``) used by ``quantviz
benchmark`` and by the app's Run menu. The session lock is held while the
simulation's weights are read; timing runs on private copies.
"""
from __future__ import annotations

from typing import Callable

from ..core.backends.names import BACKENDS
from ..core.errors import Cancelled, QuantvizError
from ..core.progress import Progress, null_progress


def _acc(outputs, labels):
    from ..core.backends.onnxrt import accuracy

    return accuracy(outputs, labels)


def _interleaved_latency_ms(calls: dict, *, warmup: int = 3, repeats: int = 20) -> dict:
    """Median milliseconds per call of each ``calls[key]()``, timed round-robin.

    Interleaving puts every model under the same machine conditions (caches, clock
    boosts, other processes), so the ratios between them are fair in one run."""
    import statistics
    import time

    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times: dict = {k: [] for k in calls}
    for _ in range(repeats):
        for k, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t0) * 1000.0)
    return {k: float(statistics.median(v)) for k, v in times.items()}


class _Bench:
    """One benchmark run: the measured entries, and one timed call per model (timed together at the end)."""

    def __init__(self, session, batch: int):
        self.s = session
        self.specs = dict(session.specs)
        self.x = session.eval_data.subset(batch).x
        self.calls: dict = {}
        self.labels = None
        self.simulated_out = None

    def outputs(self, model):
        import torch

        from ..core.sim.fakequant import iterate_outputs

        outs, labels = [], []
        for _, o, y in iterate_outputs(model, self.s.eval_data, device="cpu", readout=self.s.sim.readout):
            outs.append(o)
            if y is not None:
                labels.append(y)
        return torch.cat(outs), (torch.cat(labels) if labels else None)

    def float_and_simulated(self, rep: dict) -> None:
        import torch

        from ..core.backends.torchao_backend import state_bytes
        from ..core.model.data import call_model

        fmodel, s = self.s.sim.float_model, self.s
        with torch.no_grad():
            fo, self.labels = self.outputs(fmodel)
            rep["float"] = {"size_bytes": state_bytes(fmodel.state_dict()), "accuracy": _acc(fo, self.labels)}
            self.calls["float"] = lambda: call_model(fmodel, self.x)
            with s.lock:
                s.sim.apply(self.specs)
                self.simulated_out, _ = self.outputs(s.sim.qmodel)
        rep["simulated"] = {"accuracy": _acc(self.simulated_out, self.labels)}

    def torchao(self) -> dict:
        import torch

        from ..core.backends import torchao_backend as tb
        from ..core.model.data import call_model
        from ..core.numerics.sqnr import tensor_sqnr_db

        with self.s.lock:
            model, plan = tb.build(self.s.sim, self.specs)
        with torch.no_grad():
            out, _ = self.outputs(model)
        self.calls["torchao"] = lambda: call_model(model, self.x)
        return {"size_bytes": tb.state_bytes(model.state_dict()), "accuracy": _acc(out, self.labels),
                "sqnr_db_vs_simulated": tensor_sqnr_db(self.simulated_out, out), "real_kernels": plan.to_dict()["kernels"],
                "simulated": plan.simulated}

    def pt2e(self) -> dict:
        import torch

        from ..core.backends import pt2e_backend as pb
        from ..core.backends.torchao_backend import state_bytes
        from ..core.numerics.sqnr import tensor_sqnr_db

        s, x = self.s, self.x
        if not isinstance(x, torch.Tensor):
            raise QuantvizError("pt2e: only models that take one tensor are supported (leave pt2e out of the backends)")
        calib = [xb for xb, _ in s.calib_data.batches(s.batch_size)]
        with s.lock:
            model, converted, plan = pb.build(s.sim, self.specs, calib, x)
        with torch.no_grad():
            xs = torch.cat([xb for xb, _ in s.eval_data.batches(s.batch_size)])
            out = pb.run_batched(model, xs, x.shape[0])
        self.calls["pt2e"] = lambda: model(x)
        return {"size_bytes": state_bytes(converted.state_dict()), "accuracy": _acc(out, self.labels),
                "sqnr_db_vs_simulated": tensor_sqnr_db(self.simulated_out, out), "real_kernels": list(plan.kernels),
                "simulated": plan.simulated}

    def onnxruntime(self, rep: dict) -> None:
        import torch

        from ..core.backends import onnxrt
        from ..core.numerics.sqnr import tensor_sqnr_db
        from ..io.onnx_export import build_qdq, export_float

        s = self.s
        with s.lock:
            ex = build_qdq(s.sim, self.specs, s.eval_data.first_input())
        qbytes = ex.model.SerializeToString()
        fproto, _, _ = export_float(s.sim.float_model, s.eval_data.first_input())
        fbytes = fproto.SerializeToString()
        from ..io.onnx_formats import ort_optimize_ok

        qs = onnxrt.make_session(qbytes, threads=torch.get_num_threads(), optimize=ort_optimize_ok(self.specs))
        fs = onnxrt.make_session(fbytes, threads=torch.get_num_threads())
        qo, _ = onnxrt.run_dataset(qs, s.eval_data)
        quantized = [n for n, sp in self.specs.items() if sp.weight.bits is not None or sp.activation.bits is not None]
        qf, ff = onnxrt.feeds(qs, self.x), onnxrt.feeds(fs, self.x)
        self.calls["onnxruntime"] = lambda: qs.run(None, qf)
        self.calls["onnxruntime_float"] = lambda: fs.run(None, ff)
        rep["onnxruntime"] = {"size_bytes": len(qbytes), "accuracy": _acc(qo, self.labels),
                              "sqnr_db_vs_simulated": tensor_sqnr_db(self.simulated_out, qo),
                              "qdq_layers": [n for n in quantized if n not in ex.unmapped], "unmapped": ex.unmapped}
        rep["onnxruntime_float"] = {"size_bytes": len(fbytes)}

    def time_all(self, rep: dict, repeats: int) -> None:
        import torch

        with torch.no_grad():
            for k, ms in _interleaved_latency_ms(self.calls, repeats=repeats).items():
                rep[k]["latency_ms"] = ms
        for k in BACKENDS:
            if k in rep and "error" not in rep[k]:
                base = rep["onnxruntime_float"] if k == "onnxruntime" else rep["float"]
                rep[k]["size_ratio"] = rep[k]["size_bytes"] / base["size_bytes"]
                rep[k]["speedup"] = base["latency_ms"] / rep[k]["latency_ms"] if rep[k]["latency_ms"] else None


def _check_args(session, backends, batch: int, repeats: int) -> None:
    bad = [b for b in backends if b not in BACKENDS]
    if bad:
        raise QuantvizError(f"unknown backend {bad[0]!r} (choose from {', '.join(BACKENDS)})")
    if batch < 1 or repeats < 1:
        raise QuantvizError("batch and repeats must be at least 1")
    if not session.prepared:
        raise QuantvizError("the session is not calibrated yet; open the model with its data first")


def benchmark(session, *, batch: int = 32, repeats: int = 20, backends=BACKENDS,
              progress: Progress = null_progress, cancel: Callable[[], bool] = lambda: False) -> dict:
    """The report: ``float``, ``simulated`` and one entry per backend (size_bytes, latency_ms, accuracy, ...).

    It returns the report; ``Session.run_benchmark`` also keeps it in the session."""
    import torch

    _check_args(session, backends, batch, repeats)
    steps = 2 + len(backends)
    done = [0]

    def step(what: str) -> None:
        if cancel():
            raise Cancelled("benchmark cancelled")
        progress(done[0], steps, what)
        done[0] += 1

    bench = _Bench(session, batch)
    rep = {"model": session.name, "config": session.config.to_dict(), "batch": batch, "repeats": repeats,
           "threads": torch.get_num_threads()}
    step("float and simulated models")
    bench.float_and_simulated(rep)
    if "torchao" in backends:
        step("torchao (quantize_)")
        rep["torchao"] = bench.torchao()
    if "pt2e" in backends:
        step("pt2e (oneDNN int8)")
        try:
            rep["pt2e"] = bench.pt2e()
        except QuantvizError as exc:  # a model torch.export cannot take: the other backends still report
            rep["pt2e"] = {"error": str(exc)}
    if "onnxruntime" in backends:
        step("ONNX Runtime")
        bench.onnxruntime(rep)
    step("timing")
    bench.time_all(rep, repeats)
    progress(steps, steps, "done")
    return rep


__all__ = ["benchmark", "BACKENDS"]
