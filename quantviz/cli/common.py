"""Shared CLI plumbing: model options, opening a session, progress, output."""
from __future__ import annotations

from ..core import fmt as _fmt

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..core.errors import QuantvizError


class CLIError(QuantvizError):
    pass


def add_model_args(p: argparse.ArgumentParser, *, data: bool = True, config: bool = True) -> None:
    p.add_argument("model", metavar="MODEL",
                   help="demo | recipe.py | TorchScript .pt | torch.export .pt2 | ONNX .onnx | pickled module .pt (needs --trust) | Hugging Face folder")
    if data:
        p.add_argument("--data", metavar="D", help="evaluation data: .npz (x[, y]), .pt, image folder, or text file")
        p.add_argument("--calib", metavar="D", help="calibration data (default: the source's own, else the first "
                                                    "--calib-samples of --data, evaluating on the rest)")
        p.add_argument("--calib-samples", type=int, default=512, metavar="N",
                       help="samples used for calibration when taken from --data: the first N, at most half; "
                            "the rest are held out for evaluation (default 512)")
        p.add_argument("--no-holdout", action="store_true",
                       help="with --data alone, evaluate on all its samples, the calibration samples included "
                            "(figures then on calibration data, and the output says so)")
        p.add_argument("--batch-size", type=int, default=64, metavar="N", help="batch size for calibration and evaluation (default 64)")
        p.add_argument("--seq-len", type=int, metavar="N",
                       help="causal language models: tokens per sequence cut from a text file (default 512, at most the model's context)")
    if config:
        g = p.add_mutually_exclusive_group()
        g.add_argument("--config", metavar="CFG", help="quantviz config JSON")
        g.add_argument("--preset", metavar="NAME", help="a preset: float, W8A8, W8, W6, W4A8, W4, W4G32, W3, W2, ...; llama.cpp's mixes "
                       "Q4_K_M, Q5_K_M, Q6_K, Q8_0")
        p.add_argument("--algorithm", metavar="ALGO",
                       help="per-layer PTQ algorithm for every layer the config leaves at its default: "
                            "none, adaround, gptq, bias_correction, smoothquant, awq")
        p.add_argument("--cle", action="store_true",
                       help="cross-layer equalization of conv -> ReLU -> conv pairs before quantizing (options.cle)")
        p.add_argument("--grid", choices=["full", "torch", "restricted"],
                       help="symmetric grid of every symmetric tensor, replacing the config's: full [-2^(b-1), 2^(b-1)-1] "
                            "with both range ends on the grid (default), torch (torch observers' scale), "
                            "restricted [-(2^(b-1)-1), 2^(b-1)-1]; asymmetric tensors ignore it")


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust", action="store_true", help="allow loading pickled modules (unpickling runs code from the file)")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: all cores but one)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the model runs (default cpu); cuda: every forward pass (calibration, evaluation, re-check, sensitivity, search) on the GPU; "
                        "metrics and weight quantization math on the CPU (see docs/gpu.md)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--progress", action="store_true", help="show a progress bar even when stderr is not a terminal")


def add_scale_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-cache", action="store_true",
                   help="do not read or write the score cache ($QUANTVIZ_CACHE_DIR, else ~/.cache/quantviz/scores)")
    p.add_argument("--ray", metavar="ADDR",
                   help="run the work on Ray workers: 'auto' (the cluster of `ray start`), HOST:PORT, ray://HOST:PORT, "
                        "or local[:N] (a local cluster with N CPUs); needs pip install 'quantviz[ray]'")
    p.add_argument("--ray-workers", type=int, metavar="N", help="Ray workers (default: one per CPU of the cluster)")


def apply_scale_args(session, args) -> None:
    if getattr(args, "ray_workers", None) is not None and args.ray_workers < 1:
        raise CLIError(f"--ray-workers must be at least 1, got {args.ray_workers}")
    session.use_score_cache = not getattr(args, "no_cache", False)
    session.ray_address = getattr(args, "ray", None) or None
    session.ray_workers = getattr(args, "ray_workers", None)
    session.trust = bool(getattr(args, "trust", False))
    if session.ray_address:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise CLIError("--ray needs Ray: pip install 'quantviz[ray]'") from None


def setup_runtime(args) -> None:
    import torch

    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            raise CLIError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1) if (os.cpu_count() or 1) > 2 else (os.cpu_count() or 1))
    if getattr(args, "device", "cpu") == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda: CUDA is not available on this machine")


class ProgressBar:
    """A one-line progress bar on stderr (only on a terminal unless forced)."""

    def __init__(self, enabled: bool | None = None, width: int = 30):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.width = width
        self._last = 0.0
        self._shown = False

    def __call__(self, done: int, total: int, message: str = "") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if done < total and now - self._last < 0.1:
            return
        self._last = now
        frac = done / total if total else 1.0
        fill = int(round(self.width * frac))
        bar = "#" * fill + "-" * (self.width - fill)
        sys.stderr.write(f"\r[{bar}] {frac * 100:5.1f}% {message[:40]:<40}")
        sys.stderr.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            sys.stderr.write("\r" + " " * (self.width + 52) + "\r")
            sys.stderr.flush()
            self._shown = False


def load_config_arg(args):
    from ..io.config import load_config, preset

    cfg = None
    if getattr(args, "config", None):
        cfg = load_config(args.config)
    elif getattr(args, "preset", None):
        cfg = preset(args.preset)
    return with_algorithm(_with_grid_arg(args, cfg), getattr(args, "algorithm", None))


def _with_grid_arg(args, cfg):
    from ..io.config import with_grid

    grid = getattr(args, "grid", None)
    return with_grid(cfg, grid) if cfg is not None and grid else cfg


def with_algorithm(cfg, algorithm: str | None):
    """``cfg`` with ``algorithm`` as the default weight algorithm (``--algorithm``)."""
    if not algorithm:
        return cfg
    from ..io.config import ConfigError, QuantConfig, preset
    from ..core.numerics.spec import ALGORITHMS

    if algorithm not in ALGORITHMS:
        raise ConfigError(f"--algorithm: unknown algorithm {algorithm!r} (allowed: {', '.join(ALGORITHMS)})")
    cfg = (cfg or preset("W8")).copy()
    w = dict(cfg.default.get("weight", {}))
    w["algorithm"] = algorithm
    w.pop("algorithm_options", None)
    cfg.default = dict(cfg.default, weight=w)
    if cfg.name:
        cfg.name = f"{cfg.name}+{algorithm}"
    return QuantConfig.from_dict(cfg.to_dict())


def open_session(args, *, prepare: bool = True, default_preset: str = "W8"):
    from ..io.config import preset
    from ..session import Session

    from ..io.config import NeedsModel

    check_data_args(args)
    aimet = llama_preset = None
    try:
        cfg = load_config_arg(args)
    except NeedsModel as exc:  # AIMET encodings, a GGUF, a llama.cpp preset: read them once the model is open
        if exc.kind == "llama-preset":
            llama_preset, cfg = exc.preset, None
        else:
            aimet, cfg = exc.path, None
    explicit = cfg is not None or aimet is not None or llama_preset is not None or bool(getattr(args, "preset", None))
    cfg = cfg or with_algorithm(_with_grid_arg(args, preset(default_preset)), getattr(args, "algorithm", None))
    if getattr(args, "cle", False):
        cfg = cfg.copy()
        cfg.options["cle"] = True
    bar = ProgressBar(True if getattr(args, "progress", False) else None)
    try:
        s = Session.open(args.model, data=getattr(args, "data", None), calib=getattr(args, "calib", None),
                         trust=args.trust, config=cfg, device=args.device,
                         batch_size=getattr(args, "batch_size", 64), calib_samples=getattr(args, "calib_samples", 512),
                         prepare=prepare, progress=bar, seq_len=getattr(args, "seq_len", None),
                         holdout=not getattr(args, "no_holdout", False))
    finally:
        bar.close()
    if llama_preset is not None:
        s.apply_preset(llama_preset)
        if getattr(args, "algorithm", None) or getattr(args, "grid", None):
            s.set_config(with_algorithm(_with_grid_arg(args, s.config), getattr(args, "algorithm", None)),
                         f"preset {llama_preset}")
    if not explicit:  # a QDQ ONNX model opens with its own quantization
        from ..session.session import imported_config

        qdq = imported_config(s.bundle)
        if qdq is not None:
            s.set_config(qdq, f"import the Q/DQ of {Path(args.model).name}")
    if aimet is not None:
        s.set_config(with_algorithm(_with_grid_arg(args, s.load_config_file(aimet)), getattr(args, "algorithm", None)),
                     f"import {Path(aimet).name}")
    meta = s.bundle.meta
    if meta.get("note") and (meta.get("weights_only") or meta.get("fixed_batch")):
        print(f"quantviz: note: {meta['note']}", file=sys.stderr)  # what is (not) simulated, in one line
    return s


def check_data_args(args) -> None:
    n = getattr(args, "calib_samples", None)
    if n is not None and n < 1:
        raise CLIError(f"--calib-samples must be at least 1, got {n}")


def data_note(session) -> str:
    """Which samples the figures are on, for the CLI's text output."""
    return f"{session.name}: {session.split.describe()}"


def note_calibration_data(session) -> None:
    """On stderr, when every figure is on calibration data (so --json output, too, is never silent about it)."""
    if session.split.on_calibration_data:
        print(f"quantviz: note: {session.split.describe()}", file=sys.stderr)


def clean_json(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    return obj


def note_format_layers(session, options) -> None:
    """Say on stderr that a plain bit-width sweep / search puts float / block format layers on int grids."""
    from ..core.analysis.candidates import format_note

    note = format_note(session.specs, options)
    if note:
        print(f"quantviz: note: {note}", file=sys.stderr)


def print_json(obj: Any) -> None:
    from .jsonout import json_stream

    json_stream().write(json.dumps(clean_json(obj), indent=2) + "\n")


def table(rows: list[list[str]], header: list[str], align: str | None = None) -> str:
    """A plain-text table; ``align`` is a string of l / r per column."""
    cols = len(header)
    align = align or "l" * cols
    widths = [len(h) for h in header]
    for r in rows:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))

    def fmt(r):
        return "  ".join(c.rjust(widths[i]) if align[i] == "r" else c.ljust(widths[i]) for i, c in enumerate(r)).rstrip()

    lines = [fmt(header), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in rows]
    return "\n".join(lines)


def fmt_bytes(n: float | None) -> str:
    return _fmt.fmt_bytes(n, missing="-")


def fmt_metric(name: str, v: float | None) -> str:
    return _fmt.fmt_metric(name, v, missing="-")
