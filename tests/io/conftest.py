"""The exporters' tests share one fixture: the bundled demo, opened once per test module."""
import pytest


@pytest.fixture(scope="module")
def demo():
    from quantviz.core.errors import SourceError
    from quantviz.session import Session

    try:
        return Session.open("demo")
    except SourceError as exc:
        pytest.skip(f"demo not available: {exc}")
