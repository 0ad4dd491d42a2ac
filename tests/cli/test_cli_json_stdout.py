"""Every ``--json`` output is exactly one JSON document on stdout (issue 22 C).

The commands run in one fresh interpreter with real file descriptors, so output
that bypasses Python's ``sys.stdout`` reaches the same stdout the JSON does:
the search's MIP solver (HiGHS) writes its log from C. The probe makes the
solver write such a line from C-level fd 1 on every call (as HiGHS does on
some problems and versions), and a library's plain ``print`` too.
"""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = r"""
import json, os, sys, tempfile
import quantviz.core.analysis.search as search
from quantviz.cli.main import main

real_milp = search.solve_milp

def noisy_milp(*a, **k):
    os.write(1, b"Running HiGHS 1.x: Copyright (c) HiGHS under MIT licence terms\n")  # C-level stdout
    print("Presolving model")  # a library's print
    return real_milp(*a, **k)

search.solve_milp = noisy_milp
out_dir = tempfile.mkdtemp()
runs = json.loads(sys.argv[1])
results = {}
for name, argv in runs:
    argv = [a.replace("{tmp}", out_dir) for a in argv]
    with tempfile.TemporaryFile() as f:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(f.fileno(), 1)
        try:
            code = main(argv)
            sys.stdout.flush()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        f.seek(0)
        results[name] = [code, f.read().decode()]
print(json.dumps(results))
"""

SMALL = ["--threads", "1"]
RUNS = [
    ("inspect", ["inspect", "demo", "--json"]),
    ("evaluate", ["evaluate", "demo", "--preset", "W4", "--json"]),
    ("sensitivity", ["sensitivity", "demo", "--method", "local", "--bits", "4,8", "--json"]),
    ("search", ["search", "demo", "--avg-bits", "6", "--bits", "4,8", "--steps", "2", "--sensitivity", "local", "--json"]),
    ("search_all", ["search", "demo", "--avg-bits", "6", "--bits", "4,8", "--steps", "2", "--sensitivity", "local",
                    "--measure", "all", "--json"]),
    ("search_candidates", ["search", "demo", "--avg-bits", "6", "--candidates", "int8,mxfp4", "--steps", "2",
                           "--json"]),
    ("trace", ["trace", "demo", "--preset", "W4", "--json"]),
    ("export", ["export", "demo", "--preset", "W4", "--format", "json", "--out", "{tmp}/c.json", "--json"]),
    ("qat", ["qat", "demo", "--preset", "W4", "--steps", "2", "--json"]),
]


def test_every_json_output_is_one_json_document_on_stdout():
    runs = [(name, argv + SMALL) for name, argv in RUNS]
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(runs)], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(results) == {name for name, _ in RUNS}
    for name, (code, out) in results.items():
        assert code == 0, (name, proc.stderr[-2000:])
        try:
            doc = json.loads(out)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"{name}: stdout is not one JSON document ({exc}): {out[:300]!r}") from None
        assert isinstance(doc, dict) and doc, name
    assert "Running HiGHS" in proc.stderr  # the solver's log still reaches the user, on stderr
