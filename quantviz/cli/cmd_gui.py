"""``quantviz gui [MODEL]``: the desktop app (``quantviz`` alone opens the demo).

Qt is imported only inside :func:`run` (through :func:`quantviz.gui.start`), so the rest
of the CLI stays Qt-free.
"""
from __future__ import annotations

from .common import add_common_args


def register(sub) -> None:
    p = sub.add_parser("gui", help="open the desktop app (default: the bundled demo)",
                       description="Open the desktop app on MODEL (default: the bundled demo), loaded, "
                                   "calibrated and evaluated. With --screenshot, render the window to a PNG and exit.")
    p.add_argument("model", nargs="?", default="demo", metavar="MODEL",
                   help="demo | recipe.py | TorchScript .pt | torch.export .pt2 | pickled module .pt (needs --trust) "
                        "| Hugging Face folder")
    p.add_argument("--data", metavar="D", help="evaluation data: .npz (x[, y]), .pt, image folder, or text file")
    p.add_argument("--config", metavar="CFG", help="start from this quantviz config JSON")
    p.add_argument("--screenshot", metavar="PNG", help="load, compute, render the main window to PNG and exit")
    p.add_argument("--size", metavar="WxH", help="window size, e.g. 1280x800 (default) or 1920x1080")
    add_common_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import os

    if args.screenshot and not os.environ.get("QT_QPA_PLATFORM") and not os.environ.get("DISPLAY") \
            and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"  # a screenshot needs no display
    from ..gui import start

    return start(args.model, data=args.data, config=args.config, trust=args.trust,
                   screenshot_path=args.screenshot, size=args.size, threads=args.threads)
