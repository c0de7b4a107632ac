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
import warnings
from pathlib import Path
from typing import Any

from lightning_to_energy._files import describe_not_json, parse_json
from lightning_to_energy.cli._common import CliError, check_hardware_arg, count_arg
from lightning_to_energy.cli.profile import PRECISIONS, TRACEBACK_HINT, add_traceback_flag

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
    parser.add_argument(
        "--steps", type=count_arg, required=True, help="training steps the run will take (1e4 ok)"
    )
    parser.add_argument(
        "--dtype",
        default="fp32",
        choices=PRECISIONS,
        help="compute format, as for `profile` (fp8 and int8 are counted where a model uses them)",
    )
    parser.add_argument(
        "--optimizer",
        default="adamw",
        choices=("sgd", "adam", "adamw"),
        help="optimizer of the counted step (default: adamw)",
    )
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument(
        "--step-time",
        type=float,
        default=None,
        metavar="S",
        help="seconds per step (calibrations on measured time); default: the calibration's "
        "runs of this model, else the roofline plus --step-overhead, else 5 bare steps timed here",
    )
    parser.add_argument(
        "--step-overhead",
        type=float,
        default=None,
        metavar="S",
        help="Lightning's seconds per step on top of the model's, for the roofline step time "
        "(default: a stated figure, planning.DEFAULT_LIGHTNING_OVERHEAD_S)",
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
        "--top", type=count_arg, default=5, help="modules listed by predicted joules (default 5)"
    )
    parser.add_argument(
        "--calibration",
        default=None,
        metavar="FILE",
        help="calibration JSON (default: this hardware's entry in the user cache)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON object instead")
    add_traceback_flag(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Count, time if needed, load the calibration and print the prediction."""
    from lightning_to_energy.calibration.store import CalibrationStore, CalibrationWarning
    from lightning_to_energy.cli._common import cli_device, precision_context
    from lightning_to_energy.cli.profile import build_model_and_inputs, resolve_target_arg
    from lightning_to_energy.counting import profile
    from lightning_to_energy.counting.step import random_label_loss
    from lightning_to_energy.hardware.identity import HardwareInfo, hardware_fingerprint
    from lightning_to_energy.planning import (
        StepTime,
        calibration_hardware,
        check_no_step_time,
        plan_run,
    )

    if args.steps < 1:
        raise CliError(f"expected --steps >= 1, found {args.steps}. Fix: e.g. --steps 1000.")
    if args.step_time is not None and not (args.step_time > 0 and math.isfinite(args.step_time)):
        raise CliError(
            f"expected --step-time > 0 seconds (finite), found {args.step_time}. Fix: the "
            "target machine's seconds per training step, e.g. --step-time 0.05."
        )
    if args.step_overhead is not None and not (
        args.step_overhead >= 0 and math.isfinite(args.step_overhead)
    ):
        raise CliError(
            f"expected --step-overhead >= 0 seconds (finite), found {args.step_overhead}. Fix: "
            "Lightning's seconds per step on top of the model's, e.g. --step-overhead 0.002."
        )
    if args.top < 0:
        raise CliError(
            f"expected --top as a number of modules >= 0, found {args.top}. Fix: e.g. --top 5."
        )
    if not args.input:
        raise CliError(
            "expected at least one --input SHAPE (e.g. --input 64x1x8x8), found none. Fix: "
            "pass one --input per positional argument of the model's forward."
        )
    check_hardware_arg(args.hardware, "--target/--hardware")
    if args.calibration:
        _check_calibration_path(Path(args.calibration))
    hardware = HardwareInfo.detect()
    fingerprint = hardware_fingerprint(hardware)
    store = CalibrationStore.from_path(args.calibration) if args.calibration else CalibrationStore()
    builtin_key, builtin = _builtin_for(args, hardware)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CalibrationWarning)
        # --target of other hardware than this machine, with a shipped calibration: that one,
        # not this machine's cached calibration (which measured this machine)
        calibration = builtin if builtin is not None and builtin_key else store.load(fingerprint)
    if calibration is None and builtin is not None:  # nothing cached for this GPU
        calibration = builtin
    from_builtin = builtin is not None and calibration is builtin
    # A physical model plans its own target from any machine (the output names the hardware
    # it was made on): "made on other hardware; drop it" is its use, not news. A regression's
    # windows measured that machine only, so for one of those the store's warning stands.
    if calibration is not None and calibration.physical is None:
        for w in caught:  # a usable file of other hardware: a note, not a fault
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    unusable = "; ".join(str(w.message) for w in caught)
    if calibration is None and args.calibration:
        # An explicit file of any hardware is used as given: it is missing or unreadable, not
        # "of another hardware". One message for the fault: the store's reason is folded in.
        # (a directory was refused by _check_calibration_path already)
        found = (
            f"a file it could not use: {unusable or 'unreadable'}"
            if Path(args.calibration).exists()
            else "nothing at that path"
        )
        raise CliError(
            f"expected a calibration file at {args.calibration}, found {found}. Fix: pass "
            "--calibration FILE written by `lightning-to-energy fit --out FILE` or saved by "
            "TOEnergy, or drop --calibration to use this hardware's own."
        )
    if calibration is None and args.hardware:
        _refuse_target_without_calibration(args.hardware, hardware)
    if calibration is None:
        where = store.path_for(fingerprint)
        found = f"one it could not use: {unusable}" if unusable else "none"
        raise CliError(
            f"expected a calibration for this hardware ({hardware.label}) at {where}, found "
            f"{found}. "
            "Fix: train once with TOEnergy() on this machine (it saves one when its sensors "
            "measure: an energy counter or integrated power; estimated energy saves none), or "
            "pass --calibration FILE written by `lightning-to-energy fit --out FILE` (e.g. "
            "`lightning-to-energy fit energy_report.json --out FILE` on a run's report)."
        )
    names = calibration.feature_names
    same_machine = calibration.fingerprint == fingerprint
    # A calibration carrying the physical step model plans with it, for its own hardware
    # unless --target / --hardware names another: the step is counted as that hardware runs it.
    physical = calibration.physical is not None
    given = {
        option: None if value is None else f"{option} {value:g}"
        for option, value in (
            ("--step-time", args.step_time),
            ("--step-overhead", args.step_overhead),
        )
    }
    try:
        check_no_step_time(
            calibration,
            given,
            source="the built-in calibration" if from_builtin else "this calibration",
            instead="pass --calibration FILE fitted on measured time (`lightning-to-energy fit "
            "energy_report.json --out FILE`)",
        )
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if calibration.physical is not None and not args.hardware:
        args.hardware = str(calibration.physical["target"])
    if args.hardware and "roofline_s" not in names and not physical:
        from lightning_to_energy.calibration.builtin import builtin_keys

        shipped = ", ".join(builtin_keys())
        raise CliError(
            f"expected, with --target/--hardware {args.hardware}, a calibration that can plan "
            f"other hardware (a physical step model, or one fitted on roofline_s); found "
            f"{calibration.hardware.label}'s, on its own measured step time ({list(names)}). "
            "Fix: drop --target and pass --step-time S for that machine; or pass a calibration "
            "of the target (`lightning-to-energy calibrate --out FILE` on it, or `fit REPORT... "
            f"--roofline --out FILE`); or, for {shipped}, drop --calibration to use the "
            "built-in one."
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
            raise CliError(f"{exc} (or pass --target KEY)") from None
    if args.hardware and "duration_s" in names and args.step_time is None:
        raise CliError(
            f"--target/--hardware {args.hardware} counts the step on meta tensors, which cannot "
            "be timed, and this calibration uses measured step time. Fix: pass --step-time S "
            "for that hardware."
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
            step_s: StepTime | None = None
            if "duration_s" in names:
                step_s = _step_time(
                    args, step, calibration, same_machine, hardware.label, model, inputs, device,
                    loss_fn, target,
                )  # fmt: skip
    except (RuntimeError, TypeError, ValueError, IndexError) as exc:
        raise CliError(
            f"expected {args.target} to train on inputs [{', '.join(args.input)}], found "
            f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            ". Fix: give --input shapes and dtypes that the model's forward accepts"
            + TRACEBACK_HINT
        ) from exc
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
    notes = _notes(args, calibration, spec, same_machine, hardware.label)
    if from_builtin and calibration.physical is not None:
        from lightning_to_energy.calibration.builtin import builtin_note

        notes.insert(0, builtin_note(str(calibration.physical["target"]), calibration))
    if step_s is not None and step_s.warning:
        notes.insert(0, step_s.warning)
    if args.json:
        result = _json_result(args.target, how, planned, calibration.measured, hardware.label)
        result["notes"] = notes
        # strict JSON: non-finite floats (an unbounded interval) as the report writes them
        from lightning_to_energy.reporting.codec import to_json_value

        print(json.dumps(to_json_value(result), indent=2, allow_nan=False))
        return 0
    from lightning_to_energy.reporting.format import format_si

    if plan.model == "physical":
        timing = (
            f"{format_si(plan.step_time_s or 0.0, 's')} per step predicted on {plan.hardware} "
            f"({plan.bound}-bound)"
        )
    elif plan.step_time_s is not None:
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
    scored = (
        f", held-out precision {plan.calibration_precision_pct:.1f} %"
        if plan.calibration_precision_pct is not None
        else ""
    )
    if plan.model == "physical":
        print(
            f"{args.target}: {args.steps} steps x {format_si(plan.tos_per_step, 'TO')} and "
            f"{timing}\npredicted energy: {format_si(plan.energy_j, 'J')} ({interval}), from the "
            f"physical step model of {plan.calibration_hardware} (joules {plan.energy_label}"
            f"{scored})"
        )
        for note in notes:
            print(f"note: {note}")
        _print_top_modules(plan.top_modules)
        return 0
    print(
        f"{args.target}: {args.steps} steps x {format_si(plan.tos_per_step, 'TO')} and {timing}\n"
        f"step time: {plan.step_time_detail}\n"
        f"predicted energy: {format_si(plan.energy_j, 'J')} ({interval}), "
        f"from {windows} calibration window{'' if windows == 1 else 's'} of {runs} "
        f"run{'' if runs == 1 else 's'} ({plan.calibration_hardware}; joules "
        f"{plan.energy_label}{scored})"
    )
    for note in notes:
        print(f"note: {note}")
    _print_top_modules(plan.top_modules)
    return 0


# Keys that a machine reader must see beside the figure they qualify: whether the joules are
# measured next to the joules, where the step time came from next to the step time.
_ENERGY_KEYS = ("energy_j", "low_j", "high_j", "sensor_kind", "energy_label")
_STEP_TIME_KEYS = ("step_time_s", "step_time_source", "step_time_detail")


def _json_result(
    counted: str, precision: str, planned: dict[str, Any], measured: bool, here: str
) -> dict[str, Any]:
    """``predict --json``'s object: the plan's keys, each label beside the figure it qualifies.

    ``energy_measured`` (a bool) says whether the calibration's joules were measured by
    hardware (``sensor_kind`` counter or power-integration), so that a reader need not parse
    ``energy_label`` to tell an estimate-based prediction from a measured one. ``model`` is the
    plan's (``"physical"`` or ``"regression"``); ``counted_model`` the ``MODULE:ATTR`` counted.
    ``hardware`` is this machine; the plan's hardware key is ``roofline_hardware``.
    """
    rest = {k: v for k, v in planned.items() if k not in (*_ENERGY_KEYS, *_STEP_TIME_KEYS)}
    return {
        "counted_model": counted,
        "model": rest.pop("model"),
        "precision": precision,
        "steps": rest.pop("steps"),
        **{k: planned[k] for k in _ENERGY_KEYS},
        "energy_measured": measured,
        **{k: planned[k] for k in _STEP_TIME_KEYS},
        **rest,
        "hardware": here,
        "roofline_hardware": planned["hardware"],
    }


def _print_top_modules(modules: Any) -> None:
    """The plan's modules by predicted joules (nothing when there are none)."""
    from lightning_to_energy.reporting.format import format_si

    if modules:
        print("top modules by predicted joules (dynamic energy, TO share):")
        for m in modules:
            print(f"  {m.name:<32} {format_si(m.energy_j, 'J'):>10}  {m.share:.1%}")


def _step_time(
    args: argparse.Namespace,
    step: Any,
    calibration: Any,
    same_machine: bool,
    here: str,
    model: Any,
    inputs: list[Any],
    device: Any,
    loss_fn: Any,
    target: Any,
) -> Any:
    """The :class:`~lightning_to_energy.planning.StepTime` of a measured-time calibration.

    ``--step-time`` when given; else :func:`~lightning_to_energy.planning.choose_step_time`:
    the calibration's runs of this step, the step model plus Lightning's overhead, or bare
    steps timed here (only on the calibration's own machine).
    """
    from lightning_to_energy.planning import (
        STEP_TIME_GIVEN,
        StepTime,
        calibration_hardware,
        choose_step_time,
    )

    if args.step_time is not None:
        return StepTime(args.step_time, STEP_TIME_GIVEN, f"--step-time {args.step_time:g} s")
    try:
        spec = calibration_hardware(calibration, same_machine=same_machine)
    except ValueError:
        spec = None  # a GPU the hardware table does not know: no step model
    # NB: a spec named from another machine's CPU (name and core count only) is too rough a
    # step model: another machine's plan needs its runs or --step-time.
    if not same_machine and not calibration.hardware.gpus:
        spec = None
    timer = None
    if same_machine:

        def timer() -> float:
            return _time_steps(model, inputs, args.optimizer, device, loss_fn, target)

    try:
        return choose_step_time(
            step, calibration, spec=spec, overhead_s=args.step_overhead, time_bare_step=timer
        )
    except ValueError:
        raise CliError(
            f"the calibration was made on {calibration.hardware.label} and its static-power term "
            f"uses measured step time, but it holds no run of this model and batch and timing "
            f"steps here ({here}) would measure the wrong machine. Fix: pass --step-time S for "
            "the target machine, or use a calibration fitted on roofline_s "
            "(`lightning-to-energy fit STUDY_DIR --out FILE`, or `fit REPORT... --roofline "
            "--out FILE` on that machine's reports)."
        ) from None


def _notes(
    args: argparse.Namespace, calibration: Any, spec: Any, same_machine: bool, here: str
) -> list[str]:
    """What the user must know about the calibration behind the figure, one line each."""
    from lightning_to_energy.calibration import MIN_PRECISION_PCT

    notes: list[str] = []
    if not calibration.measured:
        notes.append(
            f"the calibration's joules are {calibration.energy_label}: this prediction is an "
            "estimate of the estimate, not of the hardware's energy."
        )
    precision = calibration.precision_pct
    if precision is not None and precision < MIN_PRECISION_PCT:
        notes.append(
            f"the calibration's own held-out precision is {precision:.1f} % "
            f"({calibration.validation}), below {MIN_PRECISION_PCT:g} %: its predictions "
            "miss held-out runs by more than the interval suggests. Fix: refit it on more runs."
        )
    made_on = calibration.hardware.label
    if spec is not None and args.hardware and not _same_hardware(spec, calibration):
        # A roofline calibration may be moved: only its time term follows the new hardware.
        notes.append(
            f"--target/--hardware {args.hardware}: the calibration was measured on {made_on}; for "
            f"{spec.name} only its roofline time term changes, its coefficients (joules per TO, "
            f"watts) remain {made_on}'s. Fix: fit a calibration on {spec.name}'s own runs."
        )
    elif args.step_time is not None and not same_machine:
        notes.append(
            f"the calibration was measured on {made_on}, not on this machine ({here}): the "
            "figure is for that hardware, at the --step-time given."
        )
    return notes


def _builtin_for(args: argparse.Namespace, here: Any) -> tuple[str, Any]:
    """The shipped calibration a prediction may fall back on, and how it was chosen.

    Returns:
        (key, calibration): with ``--target KEY`` naming other hardware than this machine, KEY
        and its shipped calibration (used before this machine's cache); else ``""`` and the
        shipped calibration of this machine's GPU (used when the cache has none); a None
        calibration where nothing ships or ``--calibration`` was given.
    """
    from lightning_to_energy.calibration.builtin import builtin_calibration
    from lightning_to_energy.hardware.specs import find_hardware

    if args.calibration:
        return "", None
    try:
        here_key = find_hardware(here.gpus[0]).key if here.gpus else None
    except ValueError:  # a GPU the datasheet table does not know: nothing ships for it
        here_key = None
    try:
        target_key = find_hardware(args.hardware).key if args.hardware else None
    except ValueError:
        target_key = None  # an unknown --target is refused below, naming the known keys
    try:
        if target_key is not None and target_key != here_key:
            return target_key, builtin_calibration(target_key)
        return "", builtin_calibration(here_key) if here_key else None
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _refuse_target_without_calibration(target: str, here: Any) -> None:
    """With no calibration at all, a ``--target`` of other hardware than this machine (or one
    the table lacks) is refused for what it is: training here would not calibrate it."""
    from lightning_to_energy.calibration.builtin import builtin_keys
    from lightning_to_energy.hardware.specs import find_hardware

    try:
        spec = find_hardware(target)
    except ValueError as exc:  # names the table's keys
        raise CliError(str(exc)) from None
    try:
        here_key = find_hardware(here.gpus[0]).key if here.gpus else None
    except ValueError:
        here_key = None
    key = spec.key
    if spec.kind != "gpu" or key == here_key:
        return  # a CPU, or this machine's own GPU: training here would calibrate it
    shipped = builtin_keys()
    raise CliError(
        f"expected a calibration for --target {key}, found none: none was given and none "
        f"ships for it (the package ships {', '.join(shipped) or 'none'}). Fix: on that GPU run "
        "`lightning-to-energy calibrate --out FILE` and pass --calibration FILE"
        + (f", or plan for --target {shipped[0]}." if shipped else ".")
    )


def _same_hardware(spec: Any, calibration: Any) -> bool:
    """True when roofline ``spec`` is the hardware ``calibration`` was measured on."""
    hw = calibration.hardware
    if hw.gpus:
        names = {g.lower() for g in hw.gpus}
        return spec.kind == "gpu" and any(m in n for m in spec.match for n in names)
    return bool(spec.kind == "cpu")


def _check_calibration_path(path: Path) -> None:
    """Refuse, before the store reads it, a --calibration that is a directory, a report or no
    calibration at all.

    The store would warn that such a "calibration file" is unusable and suggest deleting it:
    the wrong fix for a run's log directory or its energy report.

    Raises:
        CliError: ``path`` is a directory, unreadable, not JSON, an energy report or a study
            run, or JSON that is not a calibration.
    """
    from lightning_to_energy.calibration.data import Calibration
    from lightning_to_energy.calibration.store import foreign_file

    if path.is_dir():
        raise CliError(
            f"expected a calibration file at {path}, found a directory. {_CALIBRATION_FIX}"
        )

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return  # run() names the missing file, with the fix
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(
            f"expected a readable calibration file at {path}, found an error reading it "
            f"({exc}). {_CALIBRATION_FIX}"
        ) from None
    try:
        data = parse_json(text)
    except ValueError as exc:
        kind = describe_not_json(path, text)
        found = f"{kind}, not JSON" if kind else f"a file that is not valid JSON ({exc})"
        raise CliError(
            f"expected a calibration file (JSON) at {path}, found {found}. {_CALIBRATION_FIX}"
        ) from None
    foreign = foreign_file(data, path)
    if foreign is not None:
        found, source = foreign
        raise CliError(
            f"expected a calibration file at {path}, found {found}. Fix: fit a "
            f"calibration on it first (`lightning-to-energy fit {source} --out cal.json`), "
            "then pass --calibration cal.json."
        )
    # The store would say the same wrapped in its advice for TOEnergy(calibration=...): "left
    # untouched", "a path that does not exist yet": a second fix, wrong for a read.
    try:
        Calibration.from_dict(data)
    except ValueError as exc:
        raise CliError(
            f"expected a calibration file at {path}, found JSON that is not one ({exc}). "
            f"{_CALIBRATION_FIX}"
        ) from None


_CALIBRATION_FIX = (
    "Fix: pass --calibration FILE written by `lightning-to-energy fit --out FILE` or saved by "
    "TOEnergy, or drop --calibration to use this hardware's own."
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
    from lightning_to_energy.counting.step import make_optimizer, step_loss

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
