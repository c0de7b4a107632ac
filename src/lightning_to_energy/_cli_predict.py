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
import statistics
import time
from typing import Any

from lightning_to_energy.cli import CliError

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
        default=None,
        metavar="KEY",
        help="hardware for the roofline estimate (default: the calibration's), e.g. h100-sxm",
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
    """Count, time, load the calibration and print the prediction."""
    from lightning_to_energy._cli_profile import (
        _device,
        _make_input,
        _precision,
        load_module,
        parse_input,
    )
    from lightning_to_energy.calibration import CalibrationStore, HardwareInfo, hardware_fingerprint
    from lightning_to_energy.counting import profile
    from lightning_to_energy.tracker import PROFILE_FEATURES

    if args.steps < 1:
        raise CliError(f"expected --steps >= 1, found {args.steps}. Fix: e.g. --steps 1000.")
    if args.step_time is not None and not args.step_time > 0:
        raise CliError(f"expected --step-time > 0 seconds, found {args.step_time}.")
    if not args.input:
        raise CliError("expected at least one --input SHAPE (e.g. --input 64x1x8x8), found none.")
    hardware = HardwareInfo.detect()
    fingerprint = hardware_fingerprint(hardware)
    store = CalibrationStore.from_path(args.calibration) if args.calibration else CalibrationStore()
    calibration = store.load(fingerprint)
    if calibration is None:
        where = args.calibration or store.path_for(fingerprint)
        raise CliError(
            f"expected a calibration for this hardware ({hardware.label}) at {where}, found none. "
            "Fix: train once with TOEnergy() on this machine (it saves one), or pass "
            "--calibration FILE written by `lightning-to-energy fit --out FILE`."
        )
    energy_model = calibration.to_model()
    names = energy_model.feature_names
    other_machine = calibration.fingerprint != fingerprint
    if "duration_s" in names and args.step_time is None and other_machine:
        raise CliError(
            f"the calibration was made on {calibration.hardware.label} and its static-power term "
            f"uses measured step time; timing steps here ({hardware.label}) would measure the "
            "wrong machine. Fix: pass --step-time S for the target machine, or use a "
            "calibration fitted on roofline_s (`lightning-to-energy fit STUDY_DIR --out FILE`)."
        )
    spec = (
        _roofline_spec(args.hardware, calibration, other_machine) if "roofline_s" in names else None
    )
    device = _device(args.device)
    model = load_module(args.target).to(device)
    inputs = [_make_input(s, d, h, device) for s, d, h in (parse_input(t) for t in args.input)]
    precision, how = _precision(args.dtype, device, model, inputs)
    try:
        with precision:
            step = profile(model, *inputs, train=True, optimizer=args.optimizer)
            step_s = None
            if "duration_s" in names:
                step_s = args.step_time or _time_steps(model, inputs, args.optimizer, device)
    except (RuntimeError, TypeError, ValueError, IndexError) as exc:
        raise CliError(
            f"expected {args.target} to train on inputs {args.input}, found "
            f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            ". Fix: give --input shapes and dtypes that the model's forward accepts."
        ) from None
    per_step = {f: get(step) for f, get in PROFILE_FEATURES.items()}
    if step_s is not None:
        per_step["duration_s"] = step_s
    if spec is not None:
        from lightning_to_energy.roofline import roofline_s

        per_step["roofline_s"] = roofline_s(step, spec)
    missing = [f for f in names if f not in per_step]
    if missing:
        raise CliError(
            f"expected a calibration on features `predict` can compute "
            f"({sorted([*PROFILE_FEATURES, 'duration_s', 'roofline_s'])}), found {missing}. "
            "Fix: refit it with `lightning-to-energy fit --features ...`."
        )
    features = {f: per_step[f] * args.steps for f in names}
    prediction = energy_model.predict(features)
    if prediction.energy_j is None:
        raise CliError("the calibration holds no fitted windows yet; train longer with TOEnergy.")
    modules = _top_modules(step, energy_model, per_step, args.steps, max(args.top, 0))
    result = {
        "model": args.target,
        "steps": args.steps,
        "precision": how,
        "step_time_s": step_s,
        "roofline_s_per_step": per_step.get("roofline_s"),
        "roofline_hardware": spec.key if spec is not None else None,
        "tos_per_step": float(step.tos),
        "flops_per_step": float(step.flops),
        "energy_j": prediction.energy_j,
        "low_j": prediction.low_j,
        "high_j": prediction.high_j,
        "interval": energy_model.interval,
        "hardware": hardware.label,
        "calibration_windows": len(calibration.windows),
        "calibration_hardware": calibration.hardware.label,
        "top_modules": modules,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        from lightning_to_energy.report import format_si

        if step_s is not None:
            timing = f"{format_si(step_s, 's')} per step on {hardware.label}"
        else:
            assert spec is not None
            timing = f"{format_si(per_step['roofline_s'], 's')} roofline per step on {spec.name}"
        print(
            f"{args.target}: {args.steps} steps x {format_si(step.tos, 'TO')} and {timing}\n"
            f"predicted energy: {format_si(prediction.energy_j, 'J')} "
            f"({round(100 * energy_model.interval)} % interval "
            f"{format_si(prediction.low_j or 0.0, 'J')} .. "
            f"{format_si(prediction.high_j or 0.0, 'J')}), "
            f"from {len(calibration.windows)} calibration windows "
            f"({calibration.hardware.label})"
        )
        if modules:
            print("top modules by predicted joules (dynamic energy, TO share):")
            for m in modules:
                print(f"  {m['name']:<32} {format_si(m['energy_j'], 'J'):>10}  {m['share']:.1%}")
    return 0


def _time_steps(model: Any, inputs: list[Any], optimizer: str, device: Any, n: int = 5) -> float:
    """Median seconds of ``n`` uncounted training steps (after one warm-up step)."""
    import torch

    # The same optimizer and default loss as the counted step in ``profile()``.
    from lightning_to_energy.counting.profile import _loss, _make_optimizer

    opt = _make_optimizer(optimizer, model)
    times = []
    for i in range(n + 1):
        start = time.perf_counter()
        _loss(model(*inputs), None, None).backward()
        opt.step()
        opt.zero_grad()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _roofline_spec(key: str | None, calibration: Any, other_machine: bool) -> Any:
    """The hardware whose peaks give ``roofline_s``: ``--hardware``, else the calibration's."""
    from lightning_to_energy import roofline

    hw = calibration.hardware
    try:
        if key:
            return roofline.find_hardware(key)
        if hw.gpus:
            return roofline.find_hardware(hw.gpus[0])
    except ValueError as exc:
        raise CliError(f"{exc} (or pass --hardware KEY)") from None
    if not other_machine:
        return roofline.detect_hardware("cpu")
    # NB: another machine's CPU, known by name and count only: default clock and SIMD width.
    return roofline.cpu_spec(max(int(hw.cpu_count), 1), name=hw.cpu)


def _top_modules(
    step: Any, model: Any, per_step: dict[str, float], steps: int, top: int
) -> list[dict[str, Any]]:
    """The modules with the most predicted joules over the run.

    NB: as in the end-of-run report, a module's joules are its share of the step's TOs times
    the step's predicted dynamic energy (static power is no layer's doing).
    """
    if top == 0 or not step.tos:
        return []
    static = {"duration_s", "roofline_s"}
    dynamic = {f: (0.0 if f in static else per_step[f] * steps) for f in model.feature_names}
    energy = model.predict(dynamic).energy_j or 0.0
    ranked = sorted(step.by_module.items(), key=lambda kv: kv[1].tos, reverse=True)[:top]
    return [
        {
            "name": name,
            "tos_per_step": t.tos,
            "share": t.tos / step.tos,
            "energy_j": energy * t.tos / step.tos,
        }
        for name, t in ranked
    ]
