"""``lightning-to-energy sensors [--json]``: which energy sensors this machine offers, and why not.

Lists every sensor found (domain, kind, update period, minimum window, source) and, for each
backend that is not available, the reason and the fix. The exit code is 0 even when nothing is
available: an empty answer is still an answer.
"""

from __future__ import annotations

import argparse
import json
import textwrap
import warnings
from pathlib import Path
from typing import Any

from lightning_to_energy.sensors.base import update_period_shown

__all__ = [
    "add_parser",
    "render",
    "run",
]

_HELP = "list the energy sensors found on this machine, and why the others are not available"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``sensors`` subcommand on ``subparsers`` and set its ``func``.

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers()``.

    Returns:
        The new subparser.
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "sensors",
        help=_HELP,
        description=(
            "Probe NVML (NVIDIA GPUs), RAPL (CPU package and DRAM through the Linux powercap "
            "tree) and, when no CPU counter is readable, the CPU-time estimate. Print what was "
            "found and, for each backend not available, the reason and the fix."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--powercap-root",
        type=Path,
        metavar="DIR",
        help="the powercap tree to scan (default $LTE_POWERCAP_ROOT, else /sys/class/powercap)",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Discover the sensors and print them. Always returns 0."""
    from lightning_to_energy.sensors import EnergyEstimateWarning, discover, sensor_info

    with warnings.catch_warnings():
        # The listing itself says which sensors are estimates; no warning on top.
        warnings.simplefilter("ignore", EnergyEstimateWarning)
        # No background threads: the sensors are only listed, never read over time.
        found = discover("auto", powercap_root=args.powercap_root, background=False)
    try:
        infos = [sensor_info(s) for s in found.sensors]
    finally:
        found.close()
    if args.json:
        payload = {"sensors": infos, "skipped": dict(found.skipped), "notes": list(found.notes)}
        print(json.dumps(payload, indent=2))
        return 0
    print(render(infos, dict(found.skipped), list(found.notes)))
    return 0


def render(infos: list[dict[str, object]], skipped: dict[str, str], notes: list[str]) -> str:
    """The plain-text listing: sensors found, backends not available, notes."""
    lines: list[str] = []
    if infos:
        lines.append(f"Energy sensors found ({len(infos)}):")
        header = ("domain", "kind", "update", "min window", "source")
        rows = [
            (
                str(i["domain"]),
                str(i["kind"]),
                _seconds(update_period_shown(str(i["kind"]), float(str(i["update_period_s"])))),
                _seconds(i["min_window_s"]),
                str(i["source"]) + ("  [host-wide: local rank 0 only]" if i["host_wide"] else ""),
            )
            for i in infos
        ]
        widths = [max(len(r[c]) for r in [header, *rows]) for c in range(4)]
        for row in [header, *rows]:
            cells = [row[c].ljust(widths[c]) for c in range(4)]
            lines.append("  " + "  ".join([*cells, row[4]]))
    else:
        lines.append("No energy sensors found.")
    if skipped:
        lines.append("")
        lines.append("Not available:")
        for backend, text in skipped.items():
            lines.append(f"  {backend}:")
            lines.extend(textwrap.wrap(text, 96, initial_indent="    ", subsequent_indent="    "))
    if notes:
        lines.append("")
        lines.append("Notes:")
        for note in notes:
            lines.extend(textwrap.wrap(note, 96, initial_indent="  - ", subsequent_indent="    "))
    return "\n".join(lines)


def _seconds(value: object) -> str:
    if value is None:
        return "-"  # nothing to show (an estimate's update period)
    seconds = float(str(value))
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if seconds == 0 or seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"
