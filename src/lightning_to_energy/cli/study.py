"""``lightning-to-energy study``: run the energy scaling study, then evaluate it.

``study run OUT_DIR`` trains the grid (resumable: run it again to go on where it stopped) and
``study eval OUT_DIR`` fits and scores the scaling models on the run JSONs it wrote.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import re
import sys
import warnings
from pathlib import Path
from typing import Any

from lightning_to_energy._files import atomic_write_text, parse_json
from lightning_to_energy.cli._common import (
    CliError,
    check_hardware_arg,
    check_output_path,
    cli_device,
    count_arg,
)

__all__ = [
    "add_parser",
    "evaluate_dir",
    "run",
    "run_grid",
    "select_configs",
    "update_markdown",
]

_HELP = "run the energy scaling study over a grid of models, or evaluate it"
_RUN_HELP = "train the grid's configurations and write one run JSON each (resumable)"
_EVAL_HELP = "fit and score the scaling models on a study's run JSONs"

# The section of docs/results.md that one hardware's evaluation owns (replaced on a re-run).
_BEGIN = "<!-- study-results: {key} -->"
_END = "<!-- /study-results: {key} -->"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``study`` subcommand (``run`` and ``eval``) and set its ``func``."""
    parser: argparse.ArgumentParser = subparsers.add_parser("study", help=_HELP, description=_HELP)
    sub = parser.add_subparsers(dest="study_command", metavar="ACTION")
    sub.required = True

    run_p = sub.add_parser("run", help=_RUN_HELP, description=_RUN_HELP)
    run_p.add_argument("out_dir", metavar="OUT_DIR", help="where the run JSONs go (created)")
    run_p.add_argument(
        "--grid", default="full", help="full (GPU, 86 configs), small (CPU, 13) or tiny (4)"
    )
    run_p.add_argument("--only", default=None, metavar="REGEX", help="configuration ids to run")
    run_p.add_argument(
        "--device", default=None, help="cuda, cuda:N or cpu (default: cuda when available)"
    )
    run_p.add_argument(
        "--min-seconds",
        type=float,
        default=None,
        metavar="S",
        help="training time per configuration at least (default 8)",
    )
    run_p.add_argument(
        "--windows", type=count_arg, default=None, help="fit-worthy windows per configuration (3)"
    )
    run_p.add_argument(
        "--hardware", default=None, metavar="KEY", help="roofline hardware key (default: detect)"
    )
    run_p.add_argument(
        "--budget-min",
        type=float,
        default=None,
        metavar="M",
        help="start no configuration that would end after M minutes (resume later)",
    )
    run_p.add_argument("--list", action="store_true", help="list the configurations and stop")

    eval_p = sub.add_parser("eval", help=_EVAL_HELP, description=_EVAL_HELP)
    eval_p.add_argument("out_dir", metavar="OUT_DIR", help="the study's output directory")
    eval_p.add_argument(
        "--results-md",
        default=None,
        metavar="FILE",
        help="add (or replace) this hardware's section in a Markdown file, e.g. docs/results.md",
    )
    eval_p.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Dispatch to ``study run`` or ``study eval``."""
    if args.study_command == "run":
        return run_grid(args)
    if args.results_md is not None:
        # before any work: the results section never lands in a file of another kind
        check_output_path(Path(args.results_md), "--results-md", "results.md")
    return evaluate_dir(Path(args.out_dir), results_md=args.results_md, as_json=args.json)


# --- study run ------------------------------------------------------------------------------


def select_configs(grid: str, only: str | None) -> list[Any]:
    """The grid's configurations whose id matches ``only`` (a regular expression).

    Raises:
        CliError: an unknown grid, a malformed regex, or one that matches nothing.
    """
    from lightning_to_energy.study.grid import GRIDS, default_grid

    if grid not in GRIDS:
        raise CliError(
            f"expected --grid in {', '.join(GRIDS)}, found {grid!r}. Fix: --grid small on a "
            "CPU, --grid full on a GPU."
        )
    configs = default_grid(grid)
    if only is None:
        return configs
    try:
        pattern = re.compile(only)
    except re.error as exc:
        raise CliError(
            f"expected --only to be a regular expression, found {only!r} ({exc}). "
            "Fix: e.g. --only '^mlp-.*-fp32'."
        ) from None
    chosen = [c for c in configs if pattern.search(c.id)]
    if not chosen:
        raise CliError(
            f"expected --only {only!r} to match some of the {len(configs)} ids of grid "
            f"{grid!r}, found none. Fix: list them with `lightning-to-energy study run "
            f"OUT_DIR --grid {grid} --list`."
        )
    return chosen


def run_grid(args: argparse.Namespace) -> int:
    """``study run``: train the selected configurations; 1 when some failed or are left."""
    from lightning_to_energy.study.runner import DEFAULT_MIN_SECONDS, DEFAULT_WINDOWS, run_study

    configs = select_configs(args.grid, args.only)
    if args.list:
        for c in configs:
            print(c.id)
        return 0
    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise CliError(
            f"expected OUT_DIR to be a directory, found a file at {out}. Fix: pick another path."
        )
    device = cli_device(args.device)
    min_seconds = DEFAULT_MIN_SECONDS if args.min_seconds is None else args.min_seconds
    windows = DEFAULT_WINDOWS if args.windows is None else args.windows
    if not min_seconds >= 0:  # NaN too
        raise CliError(
            f"expected --min-seconds >= 0, found {min_seconds}. Fix: e.g. --min-seconds 8 "
            "(the default), or drop it."
        )
    if windows < 1:
        raise CliError(
            f"expected --windows >= 1, found {windows}. Fix: e.g. --windows 3 (the default), "
            "or drop it."
        )
    hardware = None
    if args.hardware is not None:
        from lightning_to_energy.hardware.specs import find_hardware

        check_hardware_arg(args.hardware, "--hardware", local_cuda=False)  # one line
        hardware = find_hardware(args.hardware)
    budget_s = None
    if args.budget_min is not None:
        if not args.budget_min > 0:
            raise CliError(
                f"expected --budget-min > 0 minutes, found {args.budget_min}. Fix: e.g. "
                "--budget-min 9, or drop it to run every configuration."
            )
        budget_s = 60.0 * args.budget_min
    try:
        done = run_study(
            configs,
            out,
            device=device,
            min_seconds=min_seconds,
            windows=windows,
            hardware=hardware,
            budget_s=budget_s,
        )
    except ValueError as exc:  # checked before any configuration runs
        raise CliError(str(exc)) from None
    return 0 if len(done) == len(configs) else 1


# --- study eval -----------------------------------------------------------------------------


def _machine(out_dir: Path, keys: set[str]) -> str:
    """The measured devices in words, from the run JSONs' ``hardware`` sections."""
    names: dict[str, None] = {}
    for path in sorted(out_dir.glob("*.run.json")):
        try:
            data = parse_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        hw = data.get("hardware") if isinstance(data, dict) else None
        if isinstance(hw, dict) and hw.get("key") in keys:
            label = f"{hw.get('name') or hw.get('key')}"
            driver = (hw.get("fingerprint") or {}).get("driver_version")
            names[label + (f", driver {driver}" if driver else "")] = None
    return "; ".join(names) or ", ".join(sorted(keys))


def update_markdown(path: Path, key: str, section: str) -> None:
    """Put ``section`` into ``path`` between markers for ``key``: replaced if there, else
    appended (the file is created with a title when missing)."""
    begin, end = _BEGIN.format(key=key), _END.format(key=key)
    block = f"{begin}\n{section.rstrip()}\n{end}\n"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Results\n"
    if begin in text and end in text[text.index(begin) :]:
        start = text.index(begin)
        stop = text.index(end, start) + len(end)
        if text[stop : stop + 1] == "\n":
            stop += 1
        text = text[:start] + block + text[stop:]
    else:
        text = text.rstrip("\n") + "\n\n" + block
    atomic_write_text(path, text)


def evaluate_dir(out_dir: Path, *, results_md: str | None = None, as_json: bool = False) -> int:
    """``study eval``: load the runs, evaluate, print, save ``results.json`` and the rest.

    Raises:
        CliError: a missing directory, one without run JSONs, malformed runs, or runs that
            cannot be evaluated together.
    """
    from lightning_to_energy.study.evaluation import evaluate
    from lightning_to_energy.study.rendering import render_results, results_markdown, save_results
    from lightning_to_energy.study.runs import load_runs

    if not out_dir.is_dir():
        raise CliError(
            f"expected OUT_DIR to be a study directory, found "
            f"{'a file' if out_dir.exists() else 'nothing'} at {out_dir}. Fix: run "
            f"`lightning-to-energy study run {out_dir}` first, or check the path."
        )
    if not any(out_dir.glob("*.run.json")):
        raise CliError(
            f"expected *.run.json files in {out_dir}, found none. Fix: run "
            f"`lightning-to-energy study run {out_dir}` first (errors, if any, are in "
            "*.error.json there)."
        )
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            runs = load_runs([out_dir])
            results = evaluate(runs)
    except (OSError, ValueError) as exc:
        raise CliError(str(exc)) from None
    saved = save_results(results, out_dir)
    if as_json:
        # stdout is the JSON; a skipped run must still be said, on stderr
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
        print(json.dumps(results.to_dict(), indent=2, allow_nan=False))
    else:
        for w in caught:
            print(f"warning: {w.message}")
        render_results(results)
        print("written: " + ", ".join(str(p) for p in saved.values()))
    if results_md is not None:
        machine = _machine(out_dir, {results.hardware})
        date = _dt.date.today().isoformat()
        md = Path(results_md)
        try:
            update_markdown(md, results.hardware, results_markdown(results, machine, date))
        except OSError as exc:
            raise CliError(f"could not write {md}: {exc}. Fix: check the path.") from None
        if not as_json:
            print(f"section for {results.hardware} written to {md}")
    return 0
