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

from ..core.errors import Cancelled, QuantvizError
from ..core.progress import Progress, null_progress

BACKENDS = ("torchao", "pt2e", "onnxruntime")


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


def _pt2e_entry(session, specs, x, simulated_out, labels, calls: dict) -> dict:
    import torch

    from ..core.backends import pt2e_backend as pb
    from ..core.backends.torchao_backend import state_bytes
    from ..core.qparams import sqnr_db

    if not isinstance(x, torch.Tensor):
        raise QuantvizError("pt2e: only models that take one tensor are supported (leave pt2e out of the backends)")
    calib = [xb for xb, _ in session.calib_data.batches(session.batch_size)]
    with session.lock:
        model, converted, plan = pb.build(session.sim, specs, calib, x)
    with torch.no_grad():
        xs = torch.cat([xb for xb, _ in session.eval_data.batches(session.batch_size)])
        out = pb.run_batched(model, xs, x.shape[0])
    calls["pt2e"] = lambda: model(x)
    return {"size_bytes": state_bytes(converted.state_dict()), "accuracy": _acc(out, labels),
            "sqnr_db_vs_simulated": sqnr_db(simulated_out, out), "real_kernels": list(plan.kernels),
            "simulated": plan.simulated}


def benchmark(session, *, batch: int = 32, repeats: int = 20, backends=BACKENDS,
              progress: Progress = null_progress, cancel: Callable[[], bool] = lambda: False) -> dict:
    """The report: ``float``, ``simulated`` and one entry per backend (size_bytes, latency_ms, accuracy, ...)."""
    import torch

    from ..core.backends.torchao_backend import state_bytes
    from ..core.data import call_model
    from ..core.fakequant import iterate_outputs
    from ..core.qparams import sqnr_db

    bad = [b for b in backends if b not in BACKENDS]
    if bad:
        raise QuantvizError(f"unknown backend {bad[0]!r} (choose from {', '.join(BACKENDS)})")
    if batch < 1 or repeats < 1:
        raise QuantvizError("batch and repeats must be at least 1")
    if not session.prepared:
        raise QuantvizError("the session is not calibrated yet; open the model with its data first")
    steps = 3 + len(backends)
    done = [0]

    def step(what: str) -> None:
        if cancel():
            raise Cancelled("benchmark cancelled")
        progress(done[0], steps, what)
        done[0] += 1

    specs = dict(session.specs)
    x = session.eval_data.subset(batch).x
    fmodel = session.sim.float_model

    def torch_outputs(model):
        outs, labels = [], []
        for _, o, y in iterate_outputs(model, session.eval_data, device="cpu"):
            outs.append(o)
            if y is not None:
                labels.append(y)
        return torch.cat(outs), (torch.cat(labels) if labels else None)

    calls: dict = {}  # key -> one timed call; timed together at the end
    step("float model")
    with torch.no_grad():
        fo, labels = torch_outputs(fmodel)
        rep = {"model": session.name, "config": session.config.to_dict(), "batch": batch, "repeats": repeats,
               "threads": torch.get_num_threads(),
               "float": {"size_bytes": state_bytes(fmodel.state_dict()), "accuracy": _acc(fo, labels)}}
        calls["float"] = lambda: call_model(fmodel, x)
        step("simulated model")
        with session.lock:
            session.sim.apply(specs)
            so, _ = torch_outputs(session.sim.qmodel)
        rep["simulated"] = {"accuracy": _acc(so, labels)}
    if "torchao" in backends:
        step("torchao (quantize_)")
        from ..core.backends import torchao_backend as tb

        with session.lock:
            model, plan = tb.build(session.sim, specs)
        with torch.no_grad():
            to, _ = torch_outputs(model)
            calls["torchao"] = lambda: call_model(model, x)
            rep["torchao"] = {"size_bytes": state_bytes(model.state_dict()),
                              "accuracy": _acc(to, labels), "sqnr_db_vs_simulated": sqnr_db(so, to),
                              "real_kernels": plan.to_dict()["kernels"], "simulated": plan.simulated}
    if "pt2e" in backends:
        step("pt2e (oneDNN int8)")
        try:
            rep["pt2e"] = _pt2e_entry(session, specs, x, so, labels, calls)
        except QuantvizError as exc:  # a model torch.export cannot take: the other backends still report
            rep["pt2e"] = {"error": str(exc)}
    if "onnxruntime" in backends:
        step("ONNX Runtime")
        from ..core.backends import onnxrt
        from ..io.onnx_export import build_qdq, export_float

        with session.lock:
            ex = build_qdq(session.sim, specs, session.eval_data.first_input())
        qbytes = ex.model.SerializeToString()
        fproto, _, _ = export_float(fmodel, session.eval_data.first_input())
        fbytes = fproto.SerializeToString()
        threads = torch.get_num_threads()
        qs = onnxrt.make_session(qbytes, threads=threads)
        fs = onnxrt.make_session(fbytes, threads=threads)
        qo, _ = onnxrt.run_dataset(qs, session.eval_data)
        quantized = [n for n, s in specs.items() if s.weight.bits is not None or s.activation.bits is not None]
        qf, ff = onnxrt.feeds(qs, x), onnxrt.feeds(fs, x)
        calls["onnxruntime"] = lambda: qs.run(None, qf)
        calls["onnxruntime_float"] = lambda: fs.run(None, ff)
        rep["onnxruntime"] = {"size_bytes": len(qbytes), "accuracy": _acc(qo, labels), "sqnr_db_vs_simulated": sqnr_db(so, qo),
                              "qdq_layers": [n for n in quantized if n not in ex.unmapped], "unmapped": ex.unmapped}
        rep["onnxruntime_float"] = {"size_bytes": len(fbytes)}
    step("timing")
    with torch.no_grad():
        for k, ms in _interleaved_latency_ms(calls, repeats=repeats).items():
            rep[k]["latency_ms"] = ms
    for k in BACKENDS:
        if k in rep and "error" not in rep[k]:
            base = rep["onnxruntime_float"] if k == "onnxruntime" else rep["float"]
            rep[k]["size_ratio"] = rep[k]["size_bytes"] / base["size_bytes"]
            rep[k]["speedup"] = base["latency_ms"] / rep[k]["latency_ms"] if rep[k]["latency_ms"] else None
    progress(steps, steps, "done")
    return rep


__all__ = ["benchmark", "BACKENDS"]
