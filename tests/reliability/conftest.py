"""Shared fixtures: the bad-input corpus (built once per test session)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import build_corpus  # noqa: E402


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return root, build_corpus(root)


@pytest.fixture(autouse=True)
def _private_data_dir(tmp_path, monkeypatch):
    """Never touch the real user's data folder (recovery files, trust store)."""
    monkeypatch.setenv("QUANTVIZ_DATA_DIR", str(tmp_path / "qv-data"))
