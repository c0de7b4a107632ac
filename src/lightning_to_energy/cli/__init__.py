"""Command line: ``lightning-to-energy COMMAND``, one module per subcommand.

Commands: ``sensors``, ``record``, ``profile``, ``report``, ``fit``, ``predict``, ``study``,
``calibrate``.

Each subcommand lives in its own ``cli/<name>.py`` module exposing ``add_parser(subparsers)``,
which registers its parser and sets ``func`` to a ``run(args) -> int``. Imports are lazy so that
``lightning-to-energy sensors`` never pays for importing torch's dispatch machinery or rich.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import traceback
from collections.abc import Sequence

from lightning_to_energy import __version__
from lightning_to_energy.cli._common import CliError, check_output_path, cli_device, count_arg

__all__ = ["CliError", "build_parser", "check_output_path", "cli_device", "count_arg", "main"]

_SUBCOMMANDS = ("sensors", "record", "profile", "report", "fit", "predict", "study", "calibrate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-to-energy",
        description="Count transistor operations, measure and predict training energy.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="print the version"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _SUBCOMMANDS:
        module = importlib.import_module(f"lightning_to_energy.cli.{name}")
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except CliError as exc:
        cause = exc.__cause__
        if getattr(args, "traceback", False) and cause is not None:
            # --traceback: where the user's own code failed, then the one-line error.
            traceback.print_exception(type(cause), cause, cause.__traceback__, file=sys.stderr)
        print(f"lightning-to-energy {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`lightning-to-energy profile ... | head`): stop quietly, and
        # point stdout at devnull so that the interpreter's final flush raises nothing either.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a process killed by it


if __name__ == "__main__":  # pragma: no cover
    # Run through the imported module, so that CliError is the one the subcommands raise.
    from lightning_to_energy.cli import main as _main

    sys.exit(_main())
