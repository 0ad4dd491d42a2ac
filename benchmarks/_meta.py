"""Where a benchmark figure comes from: the ``meta`` record every result JSON carries.

Each benchmark prints one JSON object as its last line, and with ``--out
FILE`` also writes it to ``FILE`` (the figures in the docs come from
``benchmarks/results/*.json``, see ``scripts/docs_tables.py``). Both carry a
``meta`` record made here::

    {"commit": "<git HEAD>", "dirty": false, "date": "2026-12-07 20:15 UTC",
     "machine": "2-core CPU (AMD EPYC ...), 24 GB RAM", "load_avg_start": [0.4, 0.3, 0.2],
     "command": "python benchmarks/engine.py --threads 1 --out benchmarks/results/engine.json"}

``dirty`` says whether ``quantviz/`` or ``benchmarks/`` (results aside) had uncommitted changes
when the run started (then ``commit`` is only the base the code was changed from).
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _git(*args: str) -> str:
    try:
        r = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return r.stdout.strip() if r.returncode == 0 else ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _ram_gb() -> int | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9)
    except (ValueError, OSError, AttributeError):
        return None


def machine() -> str:
    """e.g. ``2-core CPU (AMD EPYC 7B13), 24 GB RAM``."""
    ram = _ram_gb()
    return f"{os.cpu_count()}-core CPU ({_cpu_model()})" + (f", {ram} GB RAM" if ram else "")


def command(argv: list[str] | None = None) -> str:
    """The command line that produced the result, relative to the repository root."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve() if argv else None
    try:
        first = str(script.relative_to(ROOT)) if script else "?"
    except ValueError:
        first = argv[0]
    return " ".join(["python", shlex.quote(first), *map(shlex.quote, argv[1:])])


def meta(argv: list[str] | None = None) -> dict:
    """The ``meta`` record of a run that starts now."""
    return {
        "commit": _git("rev-parse", "HEAD") or "unknown",
        "dirty": bool(_git("status", "--porcelain", "--", "quantviz", "benchmarks", ":!benchmarks/results")),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "load_avg_start": [round(v, 2) for v in os.getloadavg()],
        "command": command(argv),
    }


def add_out_argument(parser) -> None:
    """``--out FILE``: also write the JSON there (the docs read ``benchmarks/results/NAME.json``)."""
    parser.add_argument("--out", metavar="FILE",
                        help="also write the JSON (with its meta record) here, e.g. benchmarks/results/NAME.json")


def finish(result: dict, out: str | None, started: dict, *, indent: int | None = None) -> dict:
    """Put ``started`` (a :func:`meta` record taken when the run began) first in ``result``,
    write it to ``out`` when given, and print it as the last line(s) of stdout."""
    doc = {"meta": started, **{k: v for k, v in result.items() if k != "meta"}}
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    print(json.dumps(doc, indent=indent), flush=True)
    return doc


__all__ = ["RESULTS", "machine", "command", "meta", "add_out_argument", "finish"]
