"""The Qt-free engine: torch + numpy only."""
