"""``lightning-to-energy record --seconds N --out trace.csv``: sample the sensors into a trace.

The trace has one row per sample and domain with the columns ``time_s, domain, energy_j, kind,
source`` (seconds and cumulative joules since the recording began). ``ReplaySensor.from_csv``
plays it back, so a measured run can drive tests on a machine without the hardware.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from lightning_to_energy.cli._common import CliError, check_output_path

__all__ = [
    "add_parser",
    "run",
]

_HELP = "sample the available energy sensors into a CSV trace (replayable with ReplaySensor)"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``record`` subcommand on ``subparsers`` and set its ``func``.

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers()``.

    Returns:
        The new subparser.
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "record",
        help=_HELP,
        description=(
            "Read the energy sensors every --interval seconds for --seconds seconds and write "
            "the cumulative joules of each domain to a CSV trace with the columns time_s, "
            "domain, energy_j, kind, source."
        ),
    )
    parser.add_argument(
        "--seconds", type=float, required=True, metavar="N", help="how long to record"
    )
    parser.add_argument("--out", type=Path, required=True, metavar="TRACE.csv", help="output CSV")
    parser.add_argument(
        "--interval",
        type=float,
        default=0.1,
        metavar="S",
        help="seconds between samples (default 0.1, the NVML counter's update period)",
    )
    parser.add_argument(
        "--sensors",
        default="auto",
        metavar="LIST",
        help="'auto' (default) or a comma-separated list of nvml, rapl, estimate, fake",
    )
    parser.add_argument(
        "--powercap-root",
        type=Path,
        metavar="DIR",
        help="the powercap tree to read (default $LTE_POWERCAP_ROOT, else /sys/class/powercap)",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Record the trace.

    Raises:
        CliError: bad durations, unknown or unusable requested sensors, no sensor at all, or an
            output file that cannot be written.
    """
    from lightning_to_energy.sensors import (
        TRACE_COLUMNS,
        CpuTimeEstimateSensor,
        EnergyEstimateWarning,
        SensorError,
        SensorUnavailable,
        discover,
    )
    from lightning_to_energy.sensors.discover import BACKENDS

    for option, value in (("--seconds", args.seconds), ("--interval", args.interval)):
        if not value > 0:  # NaN too
            raise CliError(
                f"expected {option} > 0 seconds, found {value}. Fix: e.g. --seconds 60 "
                "--interval 0.1."
            )
    names = [n.strip() for n in args.sensors.split(",")]
    if names != ["auto"] and (not all(names) or any(n not in BACKENDS for n in names)):
        raise CliError(
            f"expected --sensors auto or a comma-separated list of {', '.join(BACKENDS)}, found "
            f"{args.sensors!r}. Fix: e.g. --sensors nvml,rapl, or drop --sensors for auto."
        )
    # before any recording: a trace never replaces a file of another kind
    check_output_path(args.out, "--out", "trace.csv")
    try:
        with warnings.catch_warnings():
            # The trace and the summary label estimates in their kind column; no warning on top.
            warnings.simplefilter("ignore", EnergyEstimateWarning)
            found = discover(args.sensors, powercap_root=args.powercap_root)
    except SensorUnavailable as exc:
        # a backend named in --sensors: where the backend knows no fix, the command line's
        fix = exc.fix or (
            "drop it from --sensors, or record what this machine has with --sensors auto "
            "(`lightning-to-energy sensors` lists it)."
        )
        raise CliError(f"{exc.reason} Fix: {fix}") from exc
    except (ValueError, SensorError) as exc:
        raise CliError(str(exc)) from exc
    try:
        if not found.sensors:
            reasons = "; ".join(f"{k}: {v}" for k, v in found.skipped.items())
            raise CliError(
                f"no energy sensor to record ({reasons}). Run `lightning-to-energy sensors`."
            )
        try:
            fh = args.out.open("w", newline="")
        except OSError as exc:
            raise CliError(
                f"cannot write the trace to {args.out}: {exc}. Fix: --out a writable file "
                "path, e.g. --out trace.csv."
            ) from exc
        with fh:
            writer = csv.writer(fh)
            writer.writerow(TRACE_COLUMNS)
            samples, totals_j = _record(found.sensors, writer, args.seconds, args.interval)
    finally:
        found.close()
    print(f"recorded {samples} samples over {args.seconds:g} s to {args.out}")
    for sensor in found.sensors:
        energy_j = totals_j.get(sensor.domain)
        shown = "no reading" if energy_j is None else f"{energy_j:.3f} J"
        print(f"  {sensor.domain} ({sensor.kind.value}): {shown}")
    for sensor in found.sensors:
        if isinstance(sensor, CpuTimeEstimateSensor):
            # The estimate counts its own process: here the recorder, which mostly sleeps.
            print(
                f"note: {sensor.domain} is estimated from the CPU time of this recording "
                "process alone, not measured: the trace shows nothing of other programs "
                "(a training run included). Fix: record on a machine with a readable RAPL or "
                "NVML counter (`lightning-to-energy sensors` says why there is none here).",
                file=sys.stderr,
            )
    return 0


def _record(
    sensors: Any, writer: Any, seconds: float, interval_s: float
) -> tuple[int, dict[str, float]]:
    """Sample until ``seconds`` have passed; return the sample count and joules by domain."""
    base_j: dict[str, float] = {}
    last_j: dict[str, float] = {}
    reported: set[str] = set()
    t0_s = now_s = time.perf_counter()  # the first sample defines time 0
    samples = 0
    while True:
        for sensor in sensors:
            try:
                value_j = sensor.read_j()
            except Exception as exc:
                if sensor.domain not in reported:  # say it once per domain, then carry on
                    reported.add(sensor.domain)
                    print(f"warning: {sensor.domain}: {exc}", file=sys.stderr)
                continue
            base_j.setdefault(sensor.domain, value_j)
            last_j[sensor.domain] = value_j - base_j[sensor.domain]
            writer.writerow(
                (
                    f"{now_s - t0_s:.6f}",
                    sensor.domain,
                    f"{last_j[sensor.domain]:.6f}",
                    sensor.kind.value,
                    sensor.source,
                )
            )
        samples += 1
        if now_s - t0_s >= seconds:
            return samples, last_j
        # Sleep to the next tick of a fixed grid, so slow reads do not stretch the interval.
        next_s = t0_s + min(seconds, (int((now_s - t0_s) / interval_s) + 1) * interval_s)
        time.sleep(max(0.0, next_s - time.perf_counter()))
        now_s = time.perf_counter()
