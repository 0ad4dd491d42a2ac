"""The recipe trust store: agreement remembered per file hash, never crashing on a damaged store."""
from __future__ import annotations

from quantviz.session.paths import data_dir
from quantviz.session.trust import TrustStore, file_hash, question


def test_trust_is_per_content_hash(tmp_path):
    recipe = tmp_path / "r.py"
    recipe.write_text("def build_model():\n    pass\n")
    store = TrustStore()
    assert store.path.parent == data_dir() and not store.path.exists()
    assert store.needs_confirmation(str(recipe))
    assert not store.path.exists()  # asking writes nothing
    store.trust(recipe)
    assert store.is_trusted(recipe) and not store.needs_confirmation(str(recipe))
    copy = tmp_path / "copy.py"
    copy.write_bytes(recipe.read_bytes())
    assert TrustStore().is_trusted(copy)  # same bytes, same answer; a new store reads the file
    recipe.write_text("def build_model():\n    import os\n")
    assert store.needs_confirmation(str(recipe))  # edited: ask again
    assert file_hash(copy) != file_hash(recipe)
    store.revoke(copy)
    assert not store.is_trusted(copy)
    assert not store.needs_confirmation("demo") and not store.needs_confirmation(str(tmp_path / "m.pt"))
    assert "r.py" in question(recipe) and "runs its code" in question(recipe)


def test_damaged_store_counts_as_empty(tmp_path):
    recipe = tmp_path / "r.py"
    recipe.write_text("X = 1\n")
    store = TrustStore(tmp_path / "store.json")
    store.path.write_bytes(b"\x00garbage{")
    assert not store.is_trusted(recipe)
    store.trust(recipe)
    assert store.is_trusted(recipe)
    assert not store.is_trusted(tmp_path / "missing.py")


def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("QUANTVIZ_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert data_dir() == tmp_path / "xdg" / "quantviz"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_dir() == tmp_path / "home" / ".local" / "share" / "quantviz"
