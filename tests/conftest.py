"""Suite-wide isolation: no test writes to the user's real data folder."""
import pytest


@pytest.fixture(autouse=True)
def _private_data_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("QUANTVIZ_DATA_DIR", str(tmp_path_factory.mktemp("qv-data")))
