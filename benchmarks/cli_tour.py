"""The command-line tour of the docs, run for real on the bundled demo.

    python benchmarks/cli_tour.py [--out benchmarks/results/cli_tour.json] [--only ID,ID]

Runs each command of the tour (``COMMANDS``) as its own process
(``python -m quantviz ...``) in a temporary folder, with a fresh score cache so
that no earlier run is read back, and records what it printed on stdout, its
exit status and its wall time. The README's and the docs' example sessions
(``<!-- table: cli ID ... -->`` blocks) are generated from this file by
``scripts/docs_tables.py``, so they always show what the code printed.
``benchmark`` times real quantized models: its latencies are one run's, on the
machine in ``meta``.

The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._meta import add_out_argument, finish, meta  # noqa: E402

# id -> the arguments after ``quantviz``; run in this order (``evaluate-mixed`` reads search-4's file)
COMMANDS = {
    "inspect": "inspect demo",
    "evaluate-w8a8": "evaluate demo --preset W8A8",
    "sensitivity": "sensitivity demo --bits 2,3,4",
    "compare-hessian": "sensitivity demo --method hessian --compare",
    "compare-local": "sensitivity demo --method local --compare",
    "trace-w3": "trace demo --preset W3",
    "search-4": "search demo --avg-bits 4 --out mixed.json",
    "evaluate-mixed": "evaluate demo --config mixed.json",
    "search-3": "search demo --avg-bits 3",
    "benchmark-w8a8": "benchmark demo --preset W8A8 --threads 1 --repeats 100",
}


def run(args: str, cwd: Path, env: dict) -> dict:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "quantviz", *shlex.split(args)], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=1800)
    return {"command": f"quantviz {args}", "exit": r.returncode, "seconds": round(time.perf_counter() - t, 2),
            "stdout": r.stdout, "stderr_last": (r.stderr.strip().splitlines() or [""])[-1] if r.returncode else ""}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated ids of COMMANDS (default: all)")
    add_out_argument(ap)
    args = ap.parse_args(argv)
    started = meta()
    wanted = args.only.split(",") if args.only else list(COMMANDS)
    unknown = set(wanted) - set(COMMANDS)
    if unknown:
        ap.error(f"--only: unknown id(s) {', '.join(sorted(unknown))}; choose from {', '.join(COMMANDS)}")
    out: dict = {"benchmark": "cli_tour", "model": "demo", "commands": {}}
    with tempfile.TemporaryDirectory(prefix="qv-tour-") as tmp:
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   QUANTVIZ_CACHE_DIR=str(Path(tmp) / "cache"), QUANTVIZ_DATA_DIR=str(Path(tmp) / "data"),
                   COLUMNS="120")
        for key in COMMANDS:
            if key not in wanted and not (key == "search-4" and "evaluate-mixed" in wanted):
                continue
            out["commands"][key] = res = run(COMMANDS[key], Path(tmp), env)
            print(f"{key}: exit {res['exit']}, {res['seconds']} s", file=sys.stderr)
    out["ok"] = all(c["exit"] == 0 for c in out["commands"].values())
    finish(out, args.out, started)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
