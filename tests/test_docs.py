"""The docs cannot go stale quietly: generated tables match their benchmark results, every result
says where it comes from, the README stays a short introduction, and the architecture page's module
tree is the package's. Plain file reads, no torch: each test takes milliseconds."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


@pytest.fixture(scope="module")
def dt():
    """scripts/docs_tables.py, imported from its file (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("docs_tables", ROOT / "scripts" / "docs_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ------------------------------------------------------------------ generated tables
def test_every_table_in_the_docs_matches_its_benchmark_json(dt):
    stale = dt.check()
    assert stale == [], ("tables that differ from their JSON (run: python scripts/docs_tables.py --write):\n"
                         + "\n".join(stale))


def test_the_check_names_a_stale_table_and_write_fixes_it(dt, tmp_path):
    page = tmp_path / "page.md"
    page.write_text("Intro.\n\n<!-- table: presets -->\n| a hand-edited | table |\n<!-- /table -->\n\nMore.\n")
    assert dt.check([page]) == [f"{page}: table 'presets'"]
    assert dt.main(["--check", str(page)]) == 1
    dt.write([page])
    assert dt.check([page]) == []
    text = page.read_text()
    assert text.startswith("Intro.\n") and text.endswith("\n\nMore.\n")
    assert "benchmarks/results/grids.json" in text  # the line that names the source


def test_a_wrong_marker_is_an_error_not_a_pass(dt, tmp_path):
    unknown = tmp_path / "unknown.md"
    unknown.write_text("<!-- table: no-such-table -->\n<!-- /table -->\n")
    with pytest.raises(dt.DocsTableError, match="unknown table 'no-such-table'"):
        dt.check([unknown])
    unclosed = tmp_path / "unclosed.md"
    unclosed.write_text("<!-- table: presets -->\n| x |\n")
    with pytest.raises(dt.DocsTableError, match="no '<!-- /table -->'"):
        dt.check([unclosed])
    assert dt.main(["--check", str(unclosed)]) == 2


def test_every_table_renderer_is_used_by_a_page(dt):
    used = {m.group("spec").split()[0] for p in dt.pages() for m in dt.MARKER.finditer(p.read_text(encoding="utf-8"))}
    assert set(dt.RENDERERS) - used == set()


# ------------------------------------------------------------------ provenance
def test_every_benchmark_result_records_commit_date_machine_and_command():
    files = sorted(RESULTS.glob("*.json"))
    assert files, "benchmarks/results/ holds no result"
    for f in files:
        meta = json.loads(f.read_text(encoding="utf-8")).get("meta")
        assert isinstance(meta, dict), f"{f.name}: no meta record"
        for key in ("commit", "date", "machine", "command"):
            assert isinstance(meta.get(key), str) and meta[key].strip(), f"{f.name}: meta.{key} missing or empty"
        assert re.fullmatch(r"[0-9a-f]{7,40}", meta["commit"]), f"{f.name}: meta.commit is not a commit id"
        assert re.match(r"\d{4}-\d{2}-\d{2}", meta["date"]), f"{f.name}: meta.date is not a date"
        assert meta["command"].startswith("python benchmarks/"), f"{f.name}: meta.command is not a benchmark run"


def test_no_result_file_is_left_outside_results():
    assert sorted(p.name for p in (ROOT / "benchmarks").glob("*.json")) == []


# ------------------------------------------------------------------ README
def test_readme_is_short_and_points_to_the_docs():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) < 260
    assert "](docs/index.md)" in text and "make docs" in text
    assert "](docs/architecture.md)" in text
    for target in re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", text):  # every relative link resolves
        if "://" not in target:
            assert (ROOT / target).exists(), f"README.md links to {target}, which does not exist"


def test_readme_keeps_the_two_setup_commands_of_the_makefile():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    make = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in ("app", "test", "docs"):
        assert re.search(rf"^{target}:", make, re.M), f"the Makefile has no {target} target"
    assert re.search(r"^make app +# ", readme, re.M) and re.search(r"^make test +# ", readme, re.M)


def test_every_docs_page_is_in_the_nav_and_every_nav_entry_exists():
    nav = set(re.findall(r":\s*([\w./-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(encoding="utf-8"), re.M))
    pages = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert nav == pages


# ------------------------------------------------------------------ architecture
def documented_modules(text: str) -> set[str]:
    """The modules the architecture page's module tree names (``core/algorithms/  adaround gptq ...``)."""
    block = text.split("<!-- module-tree -->", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    mods, pkg = set(), None
    for line in block.splitlines():
        if line.startswith("quantviz/"):
            continue
        if line and not line.startswith(" "):
            break  # resources/, tests/, ...: the package's tree has ended
        words = re.sub(r"\([^)]*\)", " ", line).split()  # words in parentheses are notes
        if words and words[0].endswith("/"):
            pkg, words = words[0].rstrip("/").replace("/", "."), words[1:]
        mods |= {f"{pkg}.{w}" for w in words}
    return mods


def package_modules() -> set[str]:
    pkg = ROOT / "quantviz"
    return {".".join(p.relative_to(pkg).with_suffix("").parts) for p in pkg.rglob("*.py")
            if not p.name.startswith("__") and "__pycache__" not in p.parts}


def test_the_architecture_page_lists_every_module_and_no_other():
    listed = documented_modules((ROOT / "docs" / "architecture.md").read_text(encoding="utf-8"))
    actual = package_modules()
    assert sorted(actual - listed) == [], "modules missing from docs/architecture.md's module tree"
    assert sorted(listed - actual) == [], "docs/architecture.md names modules that do not exist"
