"""Scaling a session's analyses: the score cache and Ray workers.

* :func:`score_store` gives the per-sweep store of the on-disk score cache
  (:mod:`quantviz.io.score_cache`) for one method and the session's current
  model, data and settings.
* :func:`ray_executor` starts Ray actors that each rebuild this session's
  analysis inputs once: the model and data are shipped through Ray's object
  store (any model that pickles: the demo, recipes, Hugging Face folders,
  in-memory sessions); a model that does not pickle is loaded on each worker
  from the same ``MODEL`` reference, which must then be readable there.
"""
from __future__ import annotations

import functools

from ..core.analysis import sensitivity as sens
from ..core.model.fingerprint import data_fingerprint, model_fingerprint
from ..io.score_cache import ScoreCache


def fingerprints(session) -> dict:
    """Model and data fingerprints, computed once per session (the weights do not change)."""
    fp = session._scale_fps
    if fp is None or fp[0] is not session.eval_data or fp[1] is not session.calib_data:
        fps = {"model": model_fingerprint(session.sim.float_model), "eval": data_fingerprint(session.eval_data),
               "calib": data_fingerprint(session.calib_data)}
        fp = (session.eval_data, session.calib_data, fps)
        session._scale_fps = fp
    return dict(fp[2])


def score_store(session, parts: sens.Parts, method: str, options: dict, root=None):
    """The cache store for ``method`` on ``parts`` (a new folder per distinct input)."""
    fn = session.bundle.evaluate_fn
    meta = dict(fingerprints(session), method=method, settings=sens.fingerprint(parts), options=dict(options),
                device=str(parts.device).split(":")[0], model_name=session.name,
                evaluate_fn=getattr(fn, "__qualname__", None) if fn else None)
    readout = session.sim.readout.key()
    if readout is not None:  # a recipe's OUTPUT / MASK: other outputs or tokens, other scores
        meta["readout"] = readout
    return ScoreCache(root).sweep(meta)


def build_parts(payload: dict) -> sens.Parts:
    """Rebuild a session's analysis inputs on a worker (see module doc)."""
    from ..io.config import QuantConfig

    Session = payload["session_cls"]  # passed in: this module must not import the session (no import cycle)
    cfg = QuantConfig.from_dict(payload["config"])
    if payload.get("bundle") is not None:
        s = Session(payload["bundle"], eval_data=payload["eval_data"], calib_data=payload["calib_data"], config=cfg,
                    device=payload["device"], batch_size=payload["batch_size"])
        s.prepare()
    else:
        s = Session.open(payload["reference"], data=payload["data_ref"], calib=payload["calib_ref"],
                         trust=payload["trust"], config=cfg, device=payload["device"],
                         batch_size=payload["batch_size"], seq_len=payload.get("seq_len"))
    p = s.parts(payload["ties"], payload.get("metric"))
    p.base_specs = dict(payload["base_specs"])
    p._session = s  # keep the session (and its hooks) alive with the parts
    return p


def parts_factory(session, ties=(), *, trust: bool = False, metric: str | None = None):
    """A picklable zero-argument callable that rebuilds ``session.parts(ties, metric)`` elsewhere."""
    payload = {"session_cls": type(session), "config": session.config.to_dict(), "device": session.device, "batch_size": session.batch_size,
               "eval_data": session.eval_data, "calib_data": session.calib_data, "base_specs": dict(session.specs),
               "ties": tuple(tuple(t) for t in ties), "reference": session.bundle.reference,
               "data_ref": session.data_ref, "calib_ref": session.calib_ref, "trust": trust, "bundle": session.bundle,
               "metric": metric, "seq_len": getattr(session, "seq_len", None)}
    try:
        from ray import cloudpickle

        cloudpickle.dumps(session.bundle)
    except Exception:  # noqa: BLE001 - a model that does not pickle is loaded by reference
        payload["bundle"] = None
    return functools.partial(build_parts, payload)


def ray_executor(session, address, ties=(), *, workers: int | None = None, trust: bool = False,
                 metric: str | None = None):
    from ..core.analysis.raysweep import RayExecutor

    gpus = 1 if str(session.device).startswith("cuda") else 0
    return RayExecutor(parts_factory(session, ties, trust=trust, metric=metric), address=None if address in (None, "") else address,
                       workers=workers, gpus_per_worker=gpus)


__all__ = ["fingerprints", "score_store", "build_parts", "parts_factory", "ray_executor"]
