"""Config files, importers and exporters."""
