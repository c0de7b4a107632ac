"""The paper's study in one command: train the grid under TOEnergy, then evaluate it.

On a GPU machine (an estimated 15 to 20 minutes for the 86 configurations on an H100)::

    PYTHONPATH=src python benchmarks/paper_study.py --out study-h100

On a CPU (13 small configurations, a few minutes)::

    PYTHONPATH=src python benchmarks/paper_study.py --out study-cpu --grid small --device cpu

Resumable: configurations whose run JSON exists are skipped, so the same command can be run
several times, e.g. in calls limited to 10 minutes each with ``--budget-min 9``: each call starts
no configuration it could not finish in time, and the evaluation (``results.json``,
``predictions.csv``, ``predicted_vs_measured.png`` in ``--out`` and a section of
``docs/results.md``) runs once every configuration is done. Exit status: 0 when the study is
complete and evaluated, 3 when configurations are left for a next call, 1 when some failed
(see ``<id>.error.json``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lightning_to_energy.cli import CliError, cli_device
from lightning_to_energy.cli.study import evaluate_dir, select_configs
from lightning_to_energy.study.runner import (
    DEFAULT_MIN_SECONDS,
    DEFAULT_WINDOWS,
    ERROR_SUFFIX,
    first_config_guess_s,
    is_complete,
    run_path,
    run_study,
)

EXIT_LEFT = 3


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (``tests/test_benchmarks.py`` checks
    ``benchmarks/gpu_session.sh`` against it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the study directory (created)")
    parser.add_argument("--grid", default="full", help="full (default), small or tiny")
    parser.add_argument("--only", default=None, metavar="REGEX", help="configuration ids to run")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--min-seconds", type=float, default=DEFAULT_MIN_SECONDS)
    parser.add_argument("--windows", type=int, default=DEFAULT_WINDOWS)
    parser.add_argument("--hardware", default=None, metavar="KEY", help="default: detect")
    parser.add_argument(
        "--budget-min",
        type=float,
        default=None,
        metavar="M",
        help="wall-time budget of this call in minutes, evaluation included",
    )
    parser.add_argument("--results-md", default="docs/results.md", metavar="FILE")
    parser.add_argument("--no-eval", action="store_true", help="train only")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the study (within the budget) and, once complete, its evaluation."""
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    try:
        configs = select_configs(args.grid, args.only)
        device = cli_device(args.device)
        hardware = None
        if args.hardware is not None:
            from lightning_to_energy.hardware.specs import find_hardware

            hardware = find_hardware(args.hardware)
        # keep a minute for the evaluation (a few seconds) and the interpreter's exit
        budget_s = None if args.budget_min is None else 60.0 * args.budget_min - 60.0
        first_s = first_config_guess_s(args.min_seconds)
        if budget_s is not None and not budget_s >= first_s:
            # a shorter budget starts nothing, and "run it again" would never get further
            raise ValueError(
                f"expected --budget-min of at least {(first_s + 60.0) / 60.0:.2f} (one "
                f"configuration is expected to take {first_s:.0f} s before one has run, plus "
                f"a minute kept for the evaluation), found {args.budget_min}. Fix: raise "
                "--budget-min, or lower --min-seconds."
            )
        out = Path(args.out)
        run_study(
            configs,
            out,
            device=device,
            min_seconds=args.min_seconds,
            windows=args.windows,
            hardware=hardware,
            budget_s=budget_s,
        )
        left = [c for c in configs if not is_complete(run_path(out, c), c)]
        failed = [c for c in left if (out / f"{c.id}{ERROR_SUFFIX}").exists()]
        if len(left) > len(failed):
            print(
                f"{len(left) - len(failed)} configuration(s) left after "
                f"{time.monotonic() - started:.0f} s: run the same command again to resume."
            )
            return EXIT_LEFT
        if not args.no_eval:
            evaluate_dir(out, results_md=args.results_md)
        return 1 if failed else 0
    except (CliError, ValueError) as exc:
        print(f"paper_study: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
