"""``quantviz`` command line: one module per subcommand (``cmd_<name>.py``).

Each command module defines ``register(subparsers)`` (adding its parser with
``set_defaults(func=run)``) and ``run(args) -> int``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..core.errors import Cancelled, QuantvizError, one_line

COMMANDS = ("inspect", "evaluate", "sensitivity", "search", "trace", "qat", "export", "benchmark", "gui")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="quantviz",
        description="Look inside a neural network's quantization and tune it per layer. "
                    "Without a command, opens the app on the bundled demo.",
    )
    p.add_argument("--version", action="version", version=f"quantviz {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"quantviz.cli.cmd_{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"quantviz.cli.cmd_{name}":
                continue
            raise
        mod.register(sub)
    return p


def _let_ctrl_c_through() -> None:
    """Ctrl-C reaches a long-running command whatever the parent left us: a blocked SIGINT (a thread
    pool, Ray or a test runner may have blocked it where it forked us) is unblocked, and an ignored
    one (a shell's background job, or a parent that ignored it: Python then installs no handler at
    all) gets Python's KeyboardInterrupt handler back. Either way Ctrl-C never reached the command."""
    import signal

    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    _let_ctrl_c_through()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        argv = ["gui"]
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    debug = getattr(args, "debug", False)
    from .quiet import quiet_third_party

    quiet_third_party(debug)
    try:
        from .common import setup_runtime

        from .jsonout import json_stdout

        setup_runtime(args)
        with json_stdout(bool(getattr(args, "json", False))):
            return int(args.func(args) or 0)
    except Cancelled:
        print("quantviz: cancelled", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("quantviz: interrupted", file=sys.stderr)
        return 130
    except QuantvizError as exc:
        if debug:
            raise
        print(f"quantviz: error: {one_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug or an unexpected library error: still one line
        if debug:
            raise
        print(f"quantviz: error: {one_line(exc)} (run with --debug for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
