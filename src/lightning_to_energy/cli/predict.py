"""``lightning-to-energy predict``: a run's energy before it starts.

Counts one training step of the model (TOs, bytes, kernels) and applies the calibration this
hardware has learnt from earlier runs (or a given file) to ``--steps`` steps. The static-power
term needs the step's duration: a calibration fitted on ``roofline_s`` (``lightning-to-energy
fit`` on study runs) takes it from the roofline estimate of the calibration's hardware, so
nothing is timed and an H100 calibration plans an H100 run from a laptop; one fitted on
measured ``duration_s`` (what ``TOEnergy`` saves) times a few uncounted steps here, or takes
``--step-time``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

from lightning_to_energy.cli._common import CliError

__all__ = [
    "add_parser",
    "run",
]

_HELP = "predict a training run's energy from one counted step and this hardware's calibration"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``predict`` subcommand and set its ``func``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "predict", help=_HELP, description=_HELP
    )
    parser.add_argument("target", metavar="MODULE:ATTR", help="model, as for `profile`")
    parser.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="SHAPE[:DTYPE[:HIGH]]",
        help="one forward input per positional argument, as for `profile`",
    )
    parser.add_argument("--steps", type=int, required=True, help="training steps the run will take")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--optimizer", default="adamw", choices=("sgd", "adam", "adamw"))
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument(
        "--step-time",
        type=float,
        default=None,
        metavar="S",
        help="seconds per step (calibrations on measured time); default: time 5 steps here",
    )
    parser.add_argument(
        "--hardware",
        "--target",
        dest="hardware",
        default=None,
        metavar="KEY",
        help=(
            "hardware the run is for (default: the calibration's), e.g. h100-sxm: the step is "
            "counted as it runs there, on meta tensors, and its roofline estimated there"
        ),
    )
    parser.add_argument(
        "--top", type=int, default=5, help="modules listed by predicted joules (default 5)"
    )
    parser.add_argument(
        "--calibration",
        default=None,
        metavar="FILE",
        help="calibration JSON (default: this hardware's entry in the user cache)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON object instead")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Count, time if needed, load the calibration and print the prediction."""
    from lightning_to_energy.calibration.store import CalibrationStore
    from lightning_to_energy.cli._common import cli_device, precision_context
    from lightning_to_energy.cli.profile import build_model_and_inputs, resolve_target_arg
    from lightning_to_energy.counting import profile
    from lightning_to_energy.counting.profile import random_label_loss
    from lightning_to_energy.hardware.identity import HardwareInfo, hardware_fingerprint
    from lightning_to_energy.planning import calibration_hardware, plan_run

    if args.steps < 1:
        raise CliError(f"expected --steps >= 1, found {args.steps}. Fix: e.g. --steps 1000.")
    if args.step_time is not None and not (args.step_time > 0 and math.isfinite(args.step_time)):
        raise CliError(
            f"expected --step-time > 0 seconds (finite), found {args.step_time}. Fix: the "
            "target machine's seconds per training step, e.g. --step-time 0.05."
        )
    if not args.input:
        raise CliError("expected at least one --input SHAPE (e.g. --input 64x1x8x8), found none.")
    if args.calibration:
        _check_calibration_path(Path(args.calibration))
    hardware = HardwareInfo.detect()
    fingerprint = hardware_fingerprint(hardware)
    store = CalibrationStore.from_path(args.calibration) if args.calibration else CalibrationStore()
    calibration = store.load(fingerprint)
    if calibration is None and args.calibration:
        # An explicit file of any hardware is used as given: it is missing or unreadable (the
        # store warned why), not "of another hardware".
        # (a directory was refused by _check_calibration_path already)
        found = (
            "a file it could not use (see the warning above)"
            if Path(args.calibration).exists()
            else "nothing at that path"
        )
        raise CliError(
            f"expected a calibration file at {args.calibration}, found {found}. Fix: pass "
            "--calibration FILE written by `lightning-to-energy fit --out FILE` or saved by "
            "TOEnergy, or drop --calibration to use this hardware's own."
        )
    if calibration is None:
        where = store.path_for(fingerprint)
        raise CliError(
            f"expected a calibration for this hardware ({hardware.label}) at {where}, found none. "
            "Fix: train once with TOEnergy() on this machine (it saves one when its sensors "
            "measure: an energy counter or integrated power; estimated energy saves none), or "
            "pass --calibration FILE written by `lightning-to-energy fit --out FILE` (e.g. "
            "`lightning-to-energy fit energy_report.json --out FILE` on a run's report)."
        )
    names = calibration.feature_names
    same_machine = calibration.fingerprint == fingerprint
    if "duration_s" in names and args.step_time is None and not same_machine:
        raise CliError(
            f"the calibration was made on {calibration.hardware.label} and its static-power term "
            f"uses measured step time; timing steps here ({hardware.label}) would measure the "
            "wrong machine. Fix: pass --step-time S for the target machine, or use a "
            "calibration fitted on roofline_s (`lightning-to-energy fit STUDY_DIR --out FILE`, "
            "or `fit REPORT... --roofline --out FILE` on that machine's reports)."
        )
    if args.hardware and "roofline_s" not in names:
        raise CliError(
            f"--hardware applies to calibrations fitted on roofline_s; this one "
            f"({calibration.hardware.label}) uses measured step time ({list(names)}), so "
            f"--hardware {args.hardware} would change nothing. Fix: drop --hardware (and pass "
            "--step-time S for the target machine), or use a roofline calibration "
            "(`lightning-to-energy fit REPORT... --roofline --out FILE`)."
        )
    spec = None
    if "roofline_s" in names:
        from lightning_to_energy.hardware.specs import find_hardware

        try:
            spec = (
                find_hardware(args.hardware)
                if args.hardware
                else calibration_hardware(calibration, same_machine=same_machine)
            )
        except ValueError as exc:
            raise CliError(f"{exc} (or pass --hardware KEY)") from None
    if args.hardware and "duration_s" in names and args.step_time is None:
        raise CliError(
            f"--hardware {args.hardware} counts the step on meta tensors, which cannot be timed, "
            "and this calibration uses measured step time. Fix: pass --step-time S for that "
            "hardware."
        )
    # --hardware / --target also decides what is counted: the step as that hardware runs it
    count_for = resolve_target_arg(args.hardware)
    device = cli_device(args.device, any_type=True)
    model, inputs, kwargs = build_model_and_inputs(
        args.target, args.input, device, hardware=args.hardware
    )
    precision, how = precision_context(args.dtype, device, model, inputs)
    try:
        with precision:
            # a classifier's step: cross-entropy on random labels (else the summed output)
            loss_fn, target = random_label_loss(model, *inputs, kwargs=kwargs)
            step = profile(
                model,
                *inputs,
                train=True,
                optimizer=args.optimizer,
                loss_fn=loss_fn,
                target=target,
                hardware=count_for,
                kwargs=kwargs,
                fallback="cpu",  # an op without a meta kernel: count on the CPU, warning
            )
            step_s = args.step_time
            if "duration_s" in names and step_s is None:
                step_s = _time_steps(model, inputs, args.optimizer, device, loss_fn, target)
    except (RuntimeError, TypeError, ValueError, IndexError) as exc:
        raise CliError(
            f"expected {args.target} to train on inputs {args.input}, found "
            f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            ". Fix: give --input shapes and dtypes that the model's forward accepts."
        ) from None
    try:
        plan = plan_run(
            step,
            args.steps,
            calibration,
            hardware=spec,
            step_time_s=step_s,
            same_machine=same_machine,
            top=args.top,
        )
    except ValueError as exc:
        raise CliError(str(exc)) from None
    planned = plan.to_dict()
    result = {
        "model": args.target,
        "precision": how,
        **planned,
        "hardware": hardware.label,  # this machine; the roofline's is roofline_hardware
        "roofline_hardware": planned["hardware"],
    }
    if args.json:
        # strict JSON: non-finite floats (an unbounded interval) as the report writes them
        from lightning_to_energy.reporting.codec import to_json_value

        print(json.dumps(to_json_value(result), indent=2, allow_nan=False))
        return 0
    from lightning_to_energy.reporting.format import format_si

    if plan.step_time_s is not None:
        timing = f"{format_si(plan.step_time_s, 's')} per step on {hardware.label}"
    else:
        assert spec is not None and plan.roofline_s_per_step is not None
        timing = f"{format_si(plan.roofline_s_per_step, 's')} roofline per step on {spec.name}"
    span = f"{format_si(plan.low_j, 'J')} .. {format_si(plan.high_j, 'J')}"
    # A coverage is claimed only for a measured interval; the default factor says what it is.
    # Rounded down: 7 runs cover 7 / 8 = 87.5 %, which "88 %" would overstate.
    interval = (
        f"{math.floor(100 * plan.interval + 1e-9)} % interval {span}, {plan.interval_basis}"
        if plan.interval is not None
        else f"range {span}: {plan.interval_basis}"
    )
    windows, runs = plan.calibration_windows, plan.calibration_runs
    print(
        f"{args.target}: {args.steps} steps x {format_si(plan.tos_per_step, 'TO')} and {timing}\n"
        f"predicted energy: {format_si(plan.energy_j, 'J')} ({interval}), "
        f"from {windows} calibration window{'' if windows == 1 else 's'} of {runs} "
        f"run{'' if runs == 1 else 's'} ({plan.calibration_hardware})"
    )
    if plan.top_modules:
        print("top modules by predicted joules (dynamic energy, TO share):")
        for m in plan.top_modules:
            print(f"  {m.name:<32} {format_si(m.energy_j, 'J'):>10}  {m.share:.1%}")
    return 0


def _check_calibration_path(path: Path) -> None:
    """Refuse, before the store reads it, a --calibration that is a directory or a report.

    The store would warn that such a "calibration file" is unusable and suggest deleting it:
    the wrong fix for a run's log directory or its energy report.

    Raises:
        CliError: ``path`` is a directory, an energy report or a study run.
    """
    from lightning_to_energy.calibration.store import foreign_file

    if path.is_dir():
        raise CliError(
            f"expected a calibration file at {path}, found a directory. Fix: pass "
            "--calibration FILE written by `lightning-to-energy fit --out FILE` or saved by "
            "TOEnergy, or drop --calibration to use this hardware's own."
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return  # missing or unreadable: the store's own checks say so
    foreign = foreign_file(data, path)
    if foreign is not None:
        found, source = foreign
        raise CliError(
            f"expected a calibration file at {path}, found {found}. Fix: fit a "
            f"calibration on it first (`lightning-to-energy fit {source} --out cal.json`), "
            "then pass --calibration cal.json."
        )


def _time_steps(
    model: Any,
    inputs: list[Any],
    optimizer: str,
    device: Any,
    loss_fn: Any,
    target: Any,
    n: int = 5,
) -> float:
    """Median seconds of ``n`` uncounted training steps (after one warm-up step)."""
    import torch

    # The same optimizer and loss as the counted step in ``profile()``.
    from lightning_to_energy.counting.profile import make_optimizer, step_loss

    opt = make_optimizer(optimizer, model)
    times = []
    for i in range(n + 1):
        start = time.perf_counter()
        step_loss(model(*inputs), loss_fn, target).backward()
        opt.step()
        opt.zero_grad()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)
