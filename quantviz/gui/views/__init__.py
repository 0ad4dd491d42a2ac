"""Views of the main window; each can be launched alone: python -m quantviz.gui.views.<name>."""
