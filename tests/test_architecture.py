"""The headless packages load neither Qt nor CUDA (checked in a fresh interpreter)."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, sys
import quantviz.cli.main, quantviz.core, quantviz.session, quantviz.io
import quantviz.core.sim.fakequant, quantviz.core.sim.evaluate, quantviz.core.model.size, quantviz.core.sources
import quantviz.io.config, quantviz.session.session
quantviz.cli.main.build_parser()  # imports every command module
import torch
banned = ("PySide6", "shiboken6", "pyqtgraph", "PyQt5", "PyQt6")
print(json.dumps({
    "qt": sorted(m for m in sys.modules if m.split(".")[0] in banned),
    "cuda_initialized": torch.cuda.is_initialized(),
    "quantviz_gui": sorted(m for m in sys.modules if m.startswith("quantviz.gui")),
}))
"""


def test_headless_imports_load_no_qt_and_do_not_initialise_cuda():
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["qt"] == []
    assert res["quantviz_gui"] == []
    assert res["cuda_initialized"] is False


def test_the_probe_would_notice_qt():
    """Guards the test above: importing Qt in the same probe is detected."""
    probe = PROBE.replace("import torch\n", "import torch\nimport PySide6.QtCore\n", 1)
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={"QT_QPA_PLATFORM": "offscreen", **__import__("os").environ})
    assert out.returncode == 0, out.stderr
    assert "PySide6.QtCore" in json.loads(out.stdout.strip().splitlines()[-1])["qt"]



CLI_HELP_PROBE = r"""
import contextlib, io, sys
from quantviz.cli.main import COMMANDS, main
for argv in (["--help"], ["--version"], *([c, "--help"] for c in COMMANDS)):
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main(list(argv))
        except SystemExit as exc:
            assert exc.code == 0, (argv, exc.code)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "numpy", "PySide6", "pyqtgraph"))
print(",".join(heavy) or "none")
"""


def test_cli_help_and_version_import_no_torch():
    """``quantviz --help``, ``--version`` and every ``COMMAND --help`` answer without importing torch (fast)."""
    out = subprocess.run([sys.executable, "-c", CLI_HELP_PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "none"


# ---------------------------------------------------------------- layering
import ast  # noqa: E402

PKG = ROOT / "quantviz"
QT = ("PySide6", "shiboken6", "pyqtgraph", "PyQt5", "PyQt6")
# what each layer may import from quantviz (besides itself); cli reaches the app only through quantviz.gui.start
ALLOWED = {
    "core": {"core"},
    "io": {"core", "io"},
    "session": {"core", "io", "session"},
    "cli": {"core", "io", "session", "cli", "gui:entry"},
    "gui": {"core", "io", "session", "gui"},
}


def _modules(root: Path = PKG) -> dict[str, Path]:
    out = {}
    for p in root.rglob("*.py"):
        parts = list(p.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(mod: str, path: Path, known: dict) -> list[tuple[str, int]]:
    """Every import in the file (top level and inside functions), resolved to module names."""
    found = []
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            for a in node.names:
                cand = f"{prefix}.{a.name}"
                found.append((cand if cand in known else prefix, node.lineno))
    return found


def _owner(name: str, known: dict) -> str:
    while name not in known and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def layering_violations(root: Path = PKG) -> list[str]:
    known = _modules(root)
    bad = []
    for mod, path in sorted(known.items()):
        parts = mod.split(".")
        layer = parts[1] if len(parts) > 1 and parts[1] in ALLOWED else None
        for name, line in _imports(mod, path, known):
            top = name.split(".")[0]
            where = f"{path.relative_to(root.parent)}:{line}"
            if top in QT and layer != "gui":
                bad.append(f"{where}: {mod} imports {name} (only quantviz.gui may import Qt)")
            if top != "quantviz" or layer is None:
                continue
            target = name.split(".")
            tlayer = target[1] if len(target) > 1 else None
            if tlayer is None or tlayer == layer:
                continue
            allowed = ALLOWED[layer]
            if tlayer == "gui" and "gui:entry" in allowed and _owner(name, known) == "quantviz.gui":
                continue
            if tlayer not in allowed:
                bad.append(f"{where}: {mod} imports {name} ({layer} may import only {', '.join(sorted(allowed))})")
    return bad


def import_cycles(root: Path = PKG) -> list[list[str]]:
    known = _modules(root)
    graph = {m: {_owner(n, known) for n, _ in _imports(m, p, known) if n.startswith("quantviz")} - {m}
             for m, p in known.items()}
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_every_layer_imports_only_the_layers_below_it():
    assert layering_violations() == []


def test_no_import_cycle_in_the_package():
    assert import_cycles() == []


def test_the_contract_checks_would_catch_a_breach(tmp_path):
    """A core module importing the session, io importing Qt, and a two-module circle are all named."""
    pkg = tmp_path / "quantviz"
    for sub in ("core", "io", "session"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "core" / "a.py").write_text("from ..session import s\nfrom . import b\n")
    (pkg / "core" / "b.py").write_text("def f():\n    from .a import g\n")
    (pkg / "io" / "x.py").write_text("import PySide6.QtCore\n")
    (pkg / "session" / "s.py").write_text("")
    bad = layering_violations(pkg)
    assert any("quantviz/core/a.py:1: quantviz.core.a imports quantviz.session.s" in b for b in bad)
    assert any("quantviz.io.x imports PySide6.QtCore" in b for b in bad)
    assert import_cycles(pkg) == [["quantviz.core.a", "quantviz.core.b"]]


def test_openmp_waits_passively_unless_the_user_chose():
    """Spinning OpenMP workers steal a busy machine's cores: quantviz sets a passive wait policy
    before torch loads its OpenMP runtime, and leaves a policy the user set alone."""
    import os

    probe = "import os, quantviz, torch; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0 and out.stdout.split() == ["PASSIVE"], out.stderr
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env=dict(env, OMP_WAIT_POLICY="ACTIVE"))
    assert out.stdout.split() == ["ACTIVE"], out.stderr


def _torch_before_quantviz(source: str) -> int | None:
    """The line of a module-level torch import that comes before any quantviz import, else None."""
    for node in ast.parse(source).body:
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        tops = {n.split(".")[0] for n in names}
        if "quantviz" in tops:
            return None
        if "torch" in tops:
            return node.lineno
    return None


def test_benchmarks_import_quantviz_before_torch():
    """A benchmark that loads torch first gets OpenMP's spinning default and times what no quantviz
    entry point does (a busy machine's figures collapse): each script imports quantviz first."""
    late = [f"{p.name}:{line}" for p in sorted((ROOT / "benchmarks").glob("*.py"))
            if (line := _torch_before_quantviz(p.read_text(encoding="utf-8")))]
    assert late == []
    assert _torch_before_quantviz("import torch\nimport quantviz\n") == 1  # the check sees a breach


# ---------------------------------------------------------------- rooms of core
CORE = PKG / "core"
SHARED = {"errors", "progress", "fmt"}  # beside the rooms, used by all of them


def rooms(core: Path = CORE) -> dict[str, set[str]]:
    """Each room of ``quantviz.core`` and the rooms its docstring's ``Imports:`` line allows."""
    out = {}
    for init in sorted(core.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        line = [ln for ln in doc.splitlines() if ln.startswith("Imports:")]
        assert line, f"{init.relative_to(ROOT)}: the docstring names no 'Imports:' rule"
        names = line[-1][len("Imports:"):].strip().rstrip(".")
        out[init.parent.name] = set() if names.startswith("nothing") else {n.strip() for n in names.split(",")}
    return out


def room_violations(root: Path = PKG) -> list[str]:
    core = root / "core"
    allowed = rooms(core)
    known = _modules(root)
    bad = []
    for mod, path in sorted(known.items()):
        parts = mod.split(".")
        if parts[:2] != ["quantviz", "core"] or len(parts) < 3:
            continue
        room = parts[2]
        if room not in allowed:
            if room not in SHARED:
                bad.append(f"{path.relative_to(root.parent)}: a core module outside every room "
                           f"(put it in one of {', '.join(sorted(allowed))})")
                continue
            may = set()
        else:
            may = allowed[room]
        for name, line in _imports(mod, path, known):
            t = name.split(".")
            if t[:2] != ["quantviz", "core"] or len(t) < 3 or t[2] == room or t[2] in SHARED:
                continue
            if t[2] not in may:
                bad.append(f"{path.relative_to(root.parent)}:{line}: {mod} imports {name} "
                           f"(core.{room} may import only {', '.join(sorted(may)) or 'the shared modules'})")
    return bad


def test_each_room_of_core_imports_only_the_rooms_its_docstring_names():
    assert set(rooms()) >= {"numerics", "model", "sim", "analysis", "training", "sources", "algorithms", "backends"}
    assert room_violations() == []


def test_the_room_rules_would_catch_a_breach(tmp_path):
    pkg = tmp_path / "quantviz"
    for sub, doc in (("core/numerics", "Grids.\n\nImports: nothing but the shared modules."),
                     ("core/sim", "Simulation.\n\nImports: numerics.")):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text(f'"""{doc}"""\n')
    (pkg / "__init__.py").write_text("")
    (pkg / "core" / "__init__.py").write_text("")
    (pkg / "core" / "errors.py").write_text("")
    (pkg / "core" / "numerics" / "grid.py").write_text("from ..sim import run\nfrom ..errors import E\n")
    (pkg / "core" / "sim" / "run.py").write_text("from ..numerics import grid\n")
    (pkg / "core" / "stray.py").write_text("")
    bad = room_violations(pkg)
    assert any("quantviz.core.numerics.grid imports quantviz.core.sim.run" in b for b in bad), bad
    assert any("core/stray.py: a core module outside every room" in b for b in bad), bad
    assert not any("sim/run.py" in b or "errors" in b for b in bad), bad


# ---------------------------------------------------------------- declared state
def _attribute_writes(tree: ast.AST, owner_names: tuple[str, ...]) -> set[str]:
    """Attributes written as ``<owner>.X = ...`` (also annotated and augmented assignments)."""
    out = set()
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
        for t in targets:
            for sub in ast.walk(t):
                if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id in owner_names:
                    out.add(sub.attr)
    return out


def _class(path: Path, name: str) -> ast.ClassDef:
    return next(n for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                if isinstance(n, ast.ClassDef) and n.name == name)


def _declared(cls: ast.ClassDef) -> tuple[set[str], set[str]]:
    """(attributes created in ``__init__`` with a type annotation, all attributes created there)."""
    init = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    typed = {n.target.attr for n in ast.walk(init) if isinstance(n, ast.AnnAssign)
             and isinstance(n.target, ast.Attribute) and isinstance(n.target.value, ast.Name) and n.target.value.id == "self"}
    return typed, _attribute_writes(init, ("self",))


def _class_members(classes: list[ast.ClassDef]) -> set[str]:
    """Methods and properties: writing one of these is a setter or a patch, not new state."""
    return {n.name for c in classes for n in c.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def undeclared_state(owner: tuple[Path, str], helpers: list[tuple[Path, str]], package: Path,
                     handles: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Attributes of ``owner`` created outside its ``__init__``, and ones created there without a type."""
    main = _class(*owner)
    typed, created = _declared(main)
    classes = [main] + [_class(p, n) for p, n in helpers]
    members = _class_members(classes)
    writes = set()
    for c in classes:
        writes |= _attribute_writes(c, ("self",))
    for p in package.rglob("*.py"):
        writes |= _attribute_writes(ast.parse(p.read_text(encoding="utf-8")), handles)
    outside = sorted(writes - created - members)
    untyped = sorted(created - typed)
    return outside, untyped


def test_session_declares_all_its_state_in_init_with_types():
    s = PKG / "session"
    outside, untyped = undeclared_state((s / "session.py", "Session"),
                                        [(s / "analysis.py", "AnalysisMixin"), (s / "exports.py", "ExportsMixin"),
                                         (s / "qat.py", "QATMixin")], PKG, ("session",))
    assert outside == [], "Session attributes created outside Session.__init__"
    assert untyped == [], "Session attributes created in __init__ without a type"


def test_main_window_declares_all_its_state_in_init_with_types():
    g = PKG / "gui"
    outside, untyped = undeclared_state((g / "main_window.py", "MainWindow"), [(g / "files.py", "FilesMixin")],
                                        g, ("win", "window"))
    assert outside == [], "MainWindow attributes created outside MainWindow.__init__"
    assert untyped == [], "MainWindow attributes created in __init__ without a type"


def test_the_declared_state_check_would_catch_a_breach(tmp_path):
    (tmp_path / "a.py").write_text("class A:\n    def __init__(self):\n        self.x: int = 0\n        self.y = 1\n"
                                   "    def go(self):\n        self.z = 2\n    def p(self): ...\n")
    (tmp_path / "b.py").write_text("def f(obj):\n    obj.w = 3\n    obj.p = 4\n")
    outside, untyped = undeclared_state((tmp_path / "a.py", "A"), [], tmp_path, ("obj",))
    assert outside == ["w", "z"] and untyped == ["y"]
