"""``lightning-to-energy calibrate [--device cuda:0] [--budget-s 150] [--out FILE] [--json]``.

Measures the device's physical energy parameters with designed microbenchmarks (base power,
matmuls per format and size, memory-bound kernels, convolutions, launches, host dispatch),
fits them, prints every parameter with its unit, 95 % interval and the fit's residuals (with
``--json``: the record written beside the calibration, as one JSON object), and writes a
calibration file. Bad input (an unknown device, a budget too short to pin the parameters, an
unwritable path) is refused before anything is measured, and an earlier file at ``--out`` is
replaced only by a finished calibration.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path
from typing import Any

from lightning_to_energy._files import parse_json
from lightning_to_energy.cli._common import CliError

__all__ = [
    "add_parser",
    "run",
]

_HELP = "measure this GPU's (or RAPL CPU's) physical energy parameters in a few minutes"
_DEVICE = re.compile(r"cuda(:\d+)?|cpu")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``calibrate`` subcommand on ``subparsers`` and set its ``func``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "calibrate",
        help=_HELP,
        description=(
            "Run microbenchmarks that each pin a few parameters of the physical step model "
            "(base power, per-format matmul rates and energy per FLOP, bandwidth and energy "
            "per byte, launch and dispatch costs), fit them, and write a calibration file. "
            "Each measurement lasts 2 s or more (NVML's counter updates every 100 ms)."
        ),
    )
    parser.add_argument("--device", default="cuda:0", help="cuda, cuda:N or cpu (default cuda:0)")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=150.0,
        metavar="S",
        help="seconds for the measurements (default 150; the fit adds a few)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("calibration.json"),
        metavar="FILE",
        help="the calibration file to write (default calibration.json)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the calibration's record (every parameter's value, status, interval and "
        "source, the misfit windows, the measured seconds, the files written) as one JSON "
        "object; progress goes to stderr",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Calibrate, print the parameters, write the file. 0 on success."""
    from lightning_to_energy.calibrate import CalibrationError

    device = str(args.device).strip().lower()
    if not _DEVICE.fullmatch(device):
        raise CliError(
            f"expected --device cuda, cuda:N or cpu, found {args.device!r}. Fix: e.g. "
            "--device cuda:0."
        )
    if not (args.budget_s > 0 and math.isfinite(args.budget_s)):
        # before the device is opened; the schedule then says the least budget that fits
        raise CliError(
            f"expected --budget-s > 0 seconds (finite), found {args.budget_s}. Fix: e.g. "
            "--budget-s 150 (the default), or drop it."
        )
    try:
        from lightning_to_energy.calibrate.fit import check_writable

        check_writable(args.out)
        bench = _bench(device)
        try:
            calibration = _calibrate(bench, args.budget_s, to_stderr=args.json)
        finally:
            bench.close()
        from lightning_to_energy.calibrate import render, write_calibration

        if not args.json:
            print(render(calibration))
        saved, details = write_calibration(calibration, args.out)
    except CalibrationError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        # the record beside the calibration, as written (one schema: calibrate.fit owns it),
        # and where both files went
        record = parse_json(details.read_text(encoding="utf-8"))
        record["files"] = {"calibration": str(saved), "record": str(details)}
        print(json.dumps(record, indent=1, allow_nan=False))
        return 0
    print(f"\nWrote {saved} (use it with predict --calibration, plan_run, TOEnergy) and {details}")
    return 0


def _bench(device: str) -> Any:
    from lightning_to_energy.calibrate import CpuBench, CudaBench

    if device == "cpu":
        return CpuBench()
    return CudaBench(device)


def _calibrate(bench: Any, budget_s: float, *, to_stderr: bool = False) -> Any:
    """:func:`calibrate` under a rich progress bar (one step per workload), on stderr with
    ``to_stderr`` (``--json``: stdout holds the JSON alone)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from lightning_to_energy.calibrate import calibrate

    columns = (
        TextColumn("calibrate {task.description:<24}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
    console = Console(stderr=True) if to_stderr else None
    with Progress(*columns, transient=False, console=console) as bar:
        task = bar.add_task("planning", total=None)

        def progress(name: str, index: int, total: int) -> None:
            bar.update(task, description=name, completed=index, total=total)

        return calibrate(bench, budget_s, progress=progress)
