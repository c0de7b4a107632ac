"""``lightning-to-energy report run.json [--plot out.png] [--csv out.csv]``: re-render a report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from lightning_to_energy.cli._common import CliError, check_output_path

__all__ = [
    "add_parser",
    "run",
]

_HELP = "re-render a saved energy report (the energy_report.json a run wrote)"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``report`` subcommand on ``subparsers`` and set its ``func``.

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers()``.

    Returns:
        The new subparser.
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "report",
        help=_HELP,
        description=(
            "Print a saved energy report: sensors and their kinds, totals per loop and domain, "
            "prediction accuracy, fitted coefficients, TOs by class/format/phase, top modules, "
            "forecast and warnings. Optionally write its plot and its per-window CSV again."
        ),
    )
    parser.add_argument(
        "path",
        type=Path,
        help="the report JSON (or a directory holding energy_report.json)",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="OUT.png",
        help="also draw predicted vs measured joules to this PNG (needs the 'plot' extra)",
    )
    parser.add_argument(
        "--csv",
        type=Path,
        metavar="OUT.csv",
        help="also write the per-window CSV to this file",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the report as JSON instead of tables"
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Load, render and optionally re-export a report.

    Raises:
        CliError: the file is missing, unreadable, not an energy report, or a requested plot
            cannot be drawn; the message says what was expected, what was found and the fix.
    """
    from lightning_to_energy.reporting.codec import ReportFormatError, load_report, report_to_dict
    from lightning_to_energy.reporting.console import render_report
    from lightning_to_energy.reporting.files import write_csv
    from lightning_to_energy.reporting.plot import MissingExtraError, save_plot

    path: Path = args.path
    if path.suffix.lower() == ".csv" and path.is_file():
        # The per-window CSV sits beside the JSON; only the JSON holds the whole report.
        raise CliError(
            f"expected the JSON energy report, found the per-window CSV {path}. Fix: pass "
            f"{path.with_suffix('.json')}, written beside it."
        )
    try:
        report = load_report(path)
    except (FileNotFoundError, IsADirectoryError):
        if path.is_dir():
            raise CliError(
                f"expected a report file or a directory holding energy_report.json, found a "
                f"directory without it: {path}. Fix: pass the report's JSON file itself, or "
                "the run's log directory (e.g. lightning_logs/version_0/)."
            ) from None
        raise CliError(
            f"expected a saved energy report at {path}, found no such file. Fix: pass the "
            "energy_report.json from the run's log directory (e.g. lightning_logs/version_0/)."
        ) from None
    except ReportFormatError as exc:  # a binary file included: load_report says so
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(
            f"expected a readable report at {path}, found an error reading it ({exc}). "
            "Fix: check the path and its permissions."
        ) from None

    outputs = ((args.csv, "--csv", "energy_report.csv"), (args.plot, "--plot", "energy_report.png"))
    for target, option, example in outputs:
        if target is not None:
            # Checked before printing, so the error is not lost below the whole report.
            check_output_path(target, option, example)
    if args.json:
        import json

        print(json.dumps(report_to_dict(report), indent=2, allow_nan=False))
    else:
        render_report(report)
    written: list[str] = []
    try:
        if args.csv is not None:
            written.append(str(write_csv(report, args.csv)))
        if args.plot is not None:
            written.append(str(save_plot(report, args.plot)))
    except MissingExtraError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(
            f"expected to write the requested file, found an error ({exc}). "
            "Fix: choose a writable output path."
        ) from None
    for item in written:
        # on stderr under --json, so that stdout stays one JSON document
        print(f"wrote {item}", file=sys.stderr if args.json else sys.stdout)
    return 0
