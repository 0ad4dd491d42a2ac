"""The PySide6 + pyqtgraph desktop app (the only package that imports Qt)."""
from . import _compat  # noqa: F401  - binding work-arounds before any widget exists
