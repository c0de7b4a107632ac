"""Command line: ``lightning-to-energy COMMAND``, one module per subcommand.

Commands: ``sensors``, ``record``, ``profile``, ``report``, ``fit``, ``predict``, ``study``,
``calibrate``.

Each subcommand lives in its own ``_cli_<name>`` module exposing ``add_parser(subparsers)``,
which registers its parser and sets ``func`` to a ``run(args) -> int``. Imports are lazy so that
``lightning-to-energy sensors`` never pays for importing torch's dispatch machinery or rich.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from lightning_to_energy import __version__

_SUBCOMMANDS = ("sensors", "record", "profile", "report", "fit", "predict", "study", "calibrate")


class CliError(Exception):
    """A user error the CLI reports in one line (what was expected, what was found, the fix)."""


def count_arg(text: str) -> int:
    """An argparse type for whole numbers written as ``1000``, ``10_000`` or ``1e3``.

    The sign is left to the command, which checks its own range with a one-line error that
    names the fix (``--steps >= 1``, ``--top >= 0``).

    Raises:
        argparse.ArgumentTypeError: not a number, or not a whole one (``1.5``, ``1e-3``).
    """
    try:
        return int(text.replace("_", ""))
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number == int(number)):
        raise argparse.ArgumentTypeError(
            f"expected a whole number such as 1000 or 1e3, found {text!r}"
        ) from None
    return int(number)


def check_output_path(target: Path, option: str, example: str) -> None:
    """Refuse, before any work, an output path that is not of its kind or not writable.

    Args:
        target: the path given.
        option: the option that named it (``"--csv"``).
        example: a file name of the right kind (``"energy_report.csv"``): its suffix is the
            kind required.

    Raises:
        CliError: a directory; a name without the kind's suffix (an existing ``precious.py``
            would be overwritten by a CSV); a folder that does not exist or cannot be written.
    """
    suffix = Path(example).suffix
    if target.is_dir():
        raise CliError(
            f"expected {option} to name a file, found the directory {target}. Fix: name a "
            f"file in it, e.g. {option} {target / example}."
        )
    if target.suffix.lower() != suffix:
        state = "an existing file that it would overwrite" if target.exists() else "that name"
        raise CliError(
            f"expected {option} to name a {suffix} file, found {target} ({state}). Fix: e.g. "
            f"{option} {target.with_suffix(suffix)}."
        )
    folder = target.parent
    if not folder.is_dir():
        raise CliError(
            f"expected {option} in an existing folder, found no folder {folder}. Fix: create "
            f"it, or name a file in an existing folder, e.g. {option} {example}."
        )
    if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        where = target if target.exists() else folder
        raise CliError(
            f"expected {option} to be writable, found {where} not writable. Fix: name a file "
            f"in a folder you can write, e.g. {option} {example}."
        )


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
        module = importlib.import_module(f"lightning_to_energy._cli_{name}")
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
