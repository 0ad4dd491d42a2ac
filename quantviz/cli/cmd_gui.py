"""``quantviz gui [MODEL]``: the desktop app (placeholder until the app lands)."""
from __future__ import annotations

from .common import add_common_args


def register(sub) -> None:
    p = sub.add_parser("gui", help="open the desktop app (default: the bundled demo)")
    p.add_argument("model", nargs="?", default="demo", metavar="MODEL")
    p.add_argument("--data")
    p.add_argument("--config")
    p.add_argument("--screenshot", metavar="PNG")
    add_common_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from . import cmd_evaluate
    import argparse

    ns = argparse.Namespace(**vars(args))
    ns.preset = "W8A8" if not args.config else None
    ns.calib = None
    ns.calib_samples = 512
    ns.batch_size = 64
    ns.stream = False
    print("The desktop app is not built yet; showing the evaluation instead.")
    return cmd_evaluate.run(ns)
