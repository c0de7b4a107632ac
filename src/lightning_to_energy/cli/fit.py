"""``lightning-to-energy fit``: fit the energy model offline on saved reports or study runs.

On ``energy_report.json`` files: collects their fitted windows, fits the same non-negative
relative-error model the callback uses, and scores it honestly: with two or more reports, each
report is predicted by a model fitted on the others (leave-one-run-out); with one, by the
prequential predictions (each window predicted before it is added). The calibration belongs to
the reports' hardware (all reports must share it), not to the machine that runs ``fit``. With
``--roofline`` the static-power term is fitted on each window's roofline seconds instead of
its measured duration, so that ``predict`` needs no timing: a calibration fitted on H100 runs
then plans H100 runs from a laptop.

On study runs (``*.run.json`` files or a study directory, see ``lightning-to-energy study``):
fits the scaling model on the runs' per-step features with the roofline time as its
static-power term (``scaling.fit_calibration_model``), scored leave-one-configuration-out and
leave-one-family-out, so that ``predict`` needs no timing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_to_energy._files import parse_json
from lightning_to_energy.calibration.data import MIN_PRECISION_PCT
from lightning_to_energy.cli._common import CliError
from lightning_to_energy.reporting.records import EnergyReport, fit_worthy
from lightning_to_energy.sensors.base import UNKNOWN_KIND, SensorKind, energy_label

if TYPE_CHECKING:
    from lightning_to_energy.calibration.data import Calibration
    from lightning_to_energy.hardware.identity import HardwareInfo
    from lightning_to_energy.model.regression import OnlineEnergyModel

__all__ = [
    "add_parser",
    "fit_windows",
    "reports_hardware",
    "run",
]

_HELP = "fit the energy model on saved reports or study runs, scored on held-out runs"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``fit`` subcommand and set its ``func``."""
    parser: argparse.ArgumentParser = subparsers.add_parser("fit", help=_HELP, description=_HELP)
    parser.add_argument(
        "reports",
        nargs="+",
        metavar="REPORT",
        help="energy_report.json files (or the run directories holding them), or study runs "
        "(*.run.json files or a study directory)",
    )
    parser.add_argument(
        "--features",
        default=None,
        help="comma-separated feature names (default: the features the reports' windows carry)",
    )
    parser.add_argument(
        "--roofline",
        action="store_true",
        help="reports: fit static power on the roofline time (roofline_s) instead of the "
        "measured duration, so predict needs no timing",
    )
    parser.add_argument("--out", default=None, metavar="FILE", help="write a calibration JSON")
    parser.add_argument(
        "--allow-estimates",
        action="store_true",
        help="let --out write a calibration from estimated (not measured) joules; it is "
        "labelled 'estimate' wherever it is used",
    )
    parser.add_argument(
        "--allow-imprecise",
        action="store_true",
        help=f"let --out write a calibration whose held-out precision is below "
        f"{MIN_PRECISION_PCT:g} %% (predict then warns)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON object instead")
    parser.set_defaults(func=run)
    return parser


def fit_windows(report: EnergyReport) -> list[tuple[dict[str, float], float]]:
    """The windows of ``report`` fit for training: measured, long enough, no fault."""
    return [
        (dict(w.features), float(w.measured_j))
        for w in report.windows
        if w.measured_j is not None and fit_worthy(w.measured_j, w.flags)
    ]


def _is_study(paths: Sequence[str]) -> bool:
    """True if ``paths`` name study runs (every one), False for reports (every one)."""
    from lightning_to_energy.study.runs import RUN_SUFFIX

    def study_like(path: str) -> bool:
        p = Path(path)
        if not p.is_dir():
            return str(p).endswith(RUN_SUFFIX)
        # A run's log directory holds energy_report.json (as `report DIR` accepts it); a
        # study directory holds *.run.json files.
        is_run_dir = (p / "energy_report.json").is_file()
        has_runs = any(q.is_file() for q in p.glob(f"*{RUN_SUFFIX}"))
        if not is_run_dir and not has_runs:
            _refuse_empty_directory(p)
        return not is_run_dir or has_runs

    kinds = {study_like(p) for p in paths}
    if len(kinds) > 1:
        raise CliError(
            f"expected either energy reports or study runs (*{RUN_SUFFIX} files or a study "
            f"directory), found both in {list(paths)}. Fix: fit them separately."
        )
    return kinds == {True}


def _refuse_empty_directory(path: Path) -> None:
    """A directory holding neither a report nor study runs: say what it should hold, and name
    the reports one level down (``fit lightning_logs`` for ``lightning_logs/version_*``).

    Raises:
        CliError: always.
    """
    from lightning_to_energy.study.runs import RUN_SUFFIX

    below = sorted(str(q.parent) for q in path.glob("*/energy_report.json") if q.is_file())
    fix = (
        f"pass the run directories themselves: {' '.join(below[:8])}"
        + (f" (and {len(below) - 8} more)" if len(below) > 8 else "")
        if below
        else "pass a run's log directory (e.g. lightning_logs/version_0) or its "
        "energy_report.json, or a study's output directory (`lightning-to-energy study run "
        "DIR` writes one)"
    )
    raise CliError(
        f"expected a run directory holding energy_report.json or a study directory holding "
        f"*{RUN_SUFFIX} files, found neither in {path}. Fix: {fix}."
    )


def run(args: argparse.Namespace) -> int:
    """Load, fit, score, print, and optionally write the calibration."""
    if args.features is not None and not any(n.strip() for n in args.features.split(",")):
        # "" (an unset shell variable, say) would otherwise fit the default features silently
        raise CliError(
            f"expected --features as comma-separated feature names, found {args.features!r}. "
            "Fix: e.g. --features duration_s,tos_vector, or drop --features for the reports' own."
        )
    if args.out:
        _check_out(args.out)  # before any work: a bad path is not found after the fit
    shared = _shared_data_file(args.reports)
    if shared is not None:
        return _run_shared(args, shared)
    if _is_study(args.reports):
        return _run_study(args)
    from lightning_to_energy.model.regression import OnlineEnergyModel
    from lightning_to_energy.reporting.codec import ReportFormatError, load_report
    from lightning_to_energy.reporting.format import report_kind

    runs: list[list[tuple[dict[str, float], float]]] = []
    reports: list[EnergyReport] = []
    given: dict[Path, str] = {}  # the file each argument names (as load_report reads it)
    for path in args.reports:
        named = Path(path) / "energy_report.json" if Path(path).is_dir() else Path(path)
        first = given.setdefault(named.resolve(), path)
        if first != path or args.reports.count(path) > 1:
            raise CliError(
                f"expected each report once, found {named.resolve()} twice (as {first} and "
                f"{path}): its windows would be fitted twice, and a held-out copy predicted by "
                "a fit on the other. Fix: pass it once."
            )
        try:
            report = load_report(Path(path))
        except FileNotFoundError:
            raise CliError(
                f"cannot read report {path}: expected a file there, found none. Fix: pass the "
                "energy_report.json a run wrote (or its log directory), a study directory, or "
                "the shared H100 steps (h100-training-steps.json, in shared/data beside the "
                "repository)."
            ) from None
        except ReportFormatError as exc:  # its message starts with the file's path
            raise CliError(f"cannot read report {exc}") from None
        except OSError as exc:
            raise CliError(
                f"cannot read report {path}: {exc}. Fix: check the path and its permissions."
            ) from None
        reports.append(report)
        runs.append(fit_windows(report))
    _refuse_repeated_runs(reports, runs, args.reports)
    kind = _check_kind(
        args,
        [
            (path, report_kind(r))
            for path, r, w in zip(args.reports, reports, runs, strict=True)
            if w
        ],
    )
    windows = [w for run_ in runs for w in run_]
    if not windows:
        raise CliError(
            f"expected measured windows in {', '.join(args.reports)}, found none fit for "
            "fitting (all short, faulty or unmeasured). Fix: train longer, or with a sensor."
        )
    hardware = reports_hardware(reports, args.reports)
    names = _report_features(args, reports, windows)

    def fitted(data: Sequence[tuple[dict[str, float], float]]) -> OnlineEnergyModel:
        model = OnlineEnergyModel(names, history=max(len(data), 1))
        for features, energy in data:
            model.update(features, energy)
        return model

    model = fitted(windows)
    if len([r for r in runs if r]) >= 2:
        method = "leave-one-run-out"
        pairs: list[tuple[float, float]] = []
        for i, held in enumerate(runs):
            if not held:
                continue
            others = fitted([w for j, r in enumerate(runs) if j != i for w in r])
            for features, energy in held:
                pred = others.predict(features).energy_j
                if pred is not None:
                    pairs.append((pred, energy))
        from lightning_to_energy.model.scoring import score_pairs  # numpy: not for --help

        scores: Mapping[str, float | int | None] = score_pairs(pairs)
    else:
        method = "prequential"
        acc = model.accuracy()
        scores = {k: float(v) for k, v in acc.to_dict().items() if isinstance(v, (int, float))}
    result: dict[str, Any] = {
        "reports": list(args.reports),
        "windows": len(windows),
        "features": list(names),
        "coefficients": model.coefficients,
        "units": model.units(),
        "identifiable": bool(model.identifiable),
        "validation": method,
        "accuracy": scores,
        "sensor_kind": kind,
        "joules": energy_label(kind),
    }
    if args.out:
        precision = _figure(scores, "precision_pct")
        _check_precision(args, precision, method, _figure(scores, "r2"))
        # One run id per report, in the order its windows were fitted (the model's history).
        ids = [_report_run_id(r, w) for r, w in zip(reports, runs, strict=True) for _ in w]
        calibration = replace(
            _by_run(model, hardware, ids),
            sensor_kind=kind,
            precision_pct=precision if math.isfinite(precision) else None,
            validation=method,
        )
        result["calibration"] = _save(args.out, calibration)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    print(
        f"fitted {len(windows)} windows of {energy_label(kind)} joules from "
        f"{len(args.reports)} report(s) on {list(names)}"
    )
    _print_coefficients(model)
    if not model.identifiable:
        print("  (coefficients not separately identifiable from these windows; predictions are)")

    r2 = _figure(scores, "r2")
    print(
        f"precision ({method}): {_figure(scores, 'precision_pct'):.2f} %  "
        f"R^2 {'n/a' if math.isnan(r2) else f'{r2:.4f}'}  "
        f"median error {100 * _figure(scores, 'median_rel_err'):.2f} %  "
        f"worst {100 * _figure(scores, 'worst_rel_err'):.2f} %"
    )
    if args.out:
        print(f"calibration written to {result['calibration']}")
    return 0


def _report_features(
    args: argparse.Namespace,
    reports: Sequence[EnergyReport],
    windows: Sequence[tuple[dict[str, float], float]],
) -> tuple[str, ...]:
    """The model's features: ``--features``, else the reports' own model (its coefficients),
    with ``roofline_s`` for ``duration_s`` under ``--roofline``; checked against the windows."""
    if args.features:
        names = tuple(n.strip() for n in args.features.split(",") if n.strip())
    else:
        fitted = next((tuple(r.coefficients) for r in reports if r.coefficients), ())
        # NB: a report without a fitted model names its features only through its windows;
        # roofline_s rides in every window as a column, not as one of the model's features.
        names = fitted or tuple(
            n for n in windows[0][0] if n != "roofline_s" and all(n in f for f, _ in windows)
        )
    if args.roofline:
        names = tuple("roofline_s" if n == "duration_s" else n for n in names)
    time_terms = [n for n in names if n in ("duration_s", "roofline_s")]
    absent = [n for n in names if any(n not in f for f, _ in windows)]
    if "roofline_s" in absent:
        raise CliError(
            "expected a roofline_s column in every fitted window, found windows without one "
            "(reports written by an earlier version, or a device missing from the hardware "
            "table: see the report's warnings). Fix: fit on measured time (drop --roofline), "
            "or add the device to the hardware table (docs/roofline.md) and train again."
        )
    if absent or len(time_terms) != 1:
        # The fix names what every window does carry (reports fitted on other features mix).
        common = [n for n in windows[0][0] if all(n in f for f, _ in windows)]
        carried = ",".join(n for n in common if n != "roofline_s")
        fix = (
            f"--features {carried} (the names every window carries), with one time term"
            if "duration_s" in common
            else "fit the reports separately (their windows share no time term)"
        )
        raise CliError(
            f"expected features present in every window, with one time term (duration_s, or "
            f"roofline_s), found {list(names)} (missing in some windows: {absent}). Fix: {fix}"
        )
    return names


def reports_hardware(reports: Sequence[EnergyReport], paths: Sequence[str]) -> HardwareInfo:
    """The hardware the reports were measured on: one for all, else a CliError.

    A report that names no hardware (written by hand, or where detection failed) counts as
    this machine's.
    """
    from lightning_to_energy.hardware.identity import (
        HardwareInfo,
        hardware_fingerprint,
        hardware_from_section,
    )

    found: dict[str, tuple[HardwareInfo, str]] = {}
    here: HardwareInfo | None = None  # this machine, detected once if a report needs it
    for report, path in zip(reports, paths, strict=True):
        try:
            info = hardware_from_section(report.hardware)
            if info is None:
                info = here = here or HardwareInfo.detect()
        except ValueError as exc:
            raise CliError(
                f"cannot read the hardware of report {path}: {exc}. Fix: correct the report's "
                "hardware section, or delete it to fit the report as this machine's."
            ) from None
        found.setdefault(hardware_fingerprint(info), (info, path))
    if len(found) > 1:
        listed = "; ".join(f"{info.label} ({path})" for info, path in found.values())
        raise CliError(
            f"expected reports from one hardware (a calibration is per hardware), found "
            f"{len(found)}: {listed}. Fix: fit each hardware's reports separately."
        )
    return next(iter(found.values()))[0]


def _run_study(args: argparse.Namespace) -> int:
    """``fit`` on study runs: the scaling model, scored on held-out configurations."""
    from lightning_to_energy.hardware.identity import HardwareInfo
    from lightning_to_energy.study.baselines import fit_calibration_model
    from lightning_to_energy.study.evaluation import evaluate
    from lightning_to_energy.study.runs import load_runs

    if args.features:
        raise CliError(
            "expected no --features with study runs (their model is fixed: roofline_s, TOs by "
            "unit and format, bytes, kernels), found --features. Fix: drop it."
        )
    try:
        runs = load_runs(args.reports)
        if not runs:
            raise ValueError(f"expected measured runs in {args.reports}, found none")
        model = fit_calibration_model(runs)
        results = evaluate(runs, models=["ours"], splits=("config", "family"), in_sample=False)
        first = Path(str(runs[0].path))
        data = parse_json(first.read_text(encoding="utf-8"))
        # load_runs checked the file is an object with a 'hardware' object
        hardware = HardwareInfo.from_dict(
            data["hardware"].get("fingerprint"), where=f"{first}: hardware.fingerprint"
        )
        run_kinds = [(str(r.path), _study_run_kind(Path(str(r.path)))) for r in runs]
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot fit the study runs: {exc}") from None
    scores: dict[str, dict[str, Any]] = {
        s.split: {
            "n": s.n,
            "precision_pct": s.precision_pct,
            "r2": s.r2,
            "median_rel_err": s.median_rel_err,
            "worst_rel_err": s.worst_rel_err,
        }
        if s.evaluable
        else {"not_evaluable": s.reason}
        for s in results.scores
    }
    kind = _check_kind(args, run_kinds)
    result: dict[str, Any] = {
        "runs": len(runs),
        "hardware": results.hardware,
        "features": list(model.feature_names),
        "coefficients": model.coefficients,
        "units": model.units(),
        "identifiable": bool(model.identifiable),
        "validation": "leave-one-configuration-out and leave-one-family-out",
        "accuracy": scores,
        "sensor_kind": kind,
        "joules": energy_label(kind),
    }
    if args.out:
        held = scores.get("config", {})
        precision = float(held.get("precision_pct", math.nan))
        _check_precision(args, precision, "leave-one-configuration-out", held.get("r2", math.nan))
        # Each window is one configuration: its own run, so that predict's leave-one-run-out
        # interval holds out one configuration at a time.
        calibration = replace(
            _by_run(model, hardware, [r.id for r in runs]),
            sensor_kind=kind,
            precision_pct=precision if math.isfinite(precision) else None,
            validation="leave-one-configuration-out",
        )
        result["calibration"] = _save(args.out, calibration)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    print(
        f"fitted {len(runs)} study runs of {energy_label(kind)} joules on {results.hardware} "
        f"({hardware.label})"
    )
    _print_coefficients(model)
    for split, figures in scores.items():
        if "not_evaluable" in figures:
            print(f"held out by {split}: not evaluable ({figures['not_evaluable']})")
            continue
        print(
            f"held out by {split}: precision {figures['precision_pct']:.2f} %  "
            f"median error {100 * figures['median_rel_err']:.2f} %  "
            f"worst {100 * figures['worst_rel_err']:.2f} %  ({figures['n']} runs)"
        )
    if args.out:
        print(f"calibration written to {result['calibration']}")
    return 0


def _study_run_kind(path: Path) -> str:
    """The sensor kind a study run's measurement names (``"unknown"`` when it names none)."""
    data = parse_json(path.read_text(encoding="utf-8"))
    measured = data.get("measured") if isinstance(data, dict) else None
    kind = measured.get("kind") if isinstance(measured, dict) else None
    return kind if isinstance(kind, str) and kind else UNKNOWN_KIND


def _check_kind(args: argparse.Namespace, kinds: Sequence[tuple[str, str]]) -> str:
    """The weakest of the fitted inputs' sensor kinds; refuses estimates for ``--out``.

    Args:
        args: the parsed arguments (``out``, ``allow_estimates``).
        kinds: ``(path, sensor kind)`` of each fitted report or study run.

    Raises:
        CliError: ``--out`` without ``--allow-estimates`` on joules not all measured.
    """
    from lightning_to_energy.sensors.base import MEASURED_KINDS, weakest_kind

    kind = weakest_kind({k for _, k in kinds}) if kinds else UNKNOWN_KIND
    if args.out and not args.allow_estimates and kind not in MEASURED_KINDS:
        named = ", ".join(f"{p} ({k})" for p, k in kinds if k not in MEASURED_KINDS)
        raise CliError(
            f"expected measured joules (a counter or integrated power) to write a calibration, "
            f"found joules that are not measured: {named}. A calibration of estimates teaches "
            "predict the estimate, not the hardware. Fix: fit reports of runs where an energy "
            "counter is readable (`lightning-to-energy sensors` says what is missing), or pass "
            "--allow-estimates to write it anyway, labelled 'estimate' wherever it is used."
        )
    return kind


def _figure(scores: Mapping[str, float | int | None], key: str) -> float:
    """A score as a float: NaN where it is missing or undefined (an R^2 of constant joules)."""
    value = scores.get(key)
    return math.nan if value is None else float(value)


def _check_precision(args: argparse.Namespace, precision: float, method: str, r2: Any) -> None:
    """Refuse to write a calibration whose held-out precision is below ``MIN_PRECISION_PCT``.

    Raises:
        CliError: precision below the floor (or not scored) without ``--allow-imprecise``.
    """
    if args.allow_imprecise or precision >= MIN_PRECISION_PCT:
        return
    r2 = math.nan if r2 is None else r2
    found = (
        f"{precision:.1f} % ({method}, R^2 {float(r2):.3g})"
        if math.isfinite(precision)
        else f"no score ({method} could not score it)"
    )
    raise CliError(
        f"expected a calibration whose held-out precision is at least {MIN_PRECISION_PCT:g} %, "
        f"found {found}; not written to {args.out}. Fix: fit on more runs or on measured time "
        "(drop --roofline), or pass --allow-imprecise to write it anyway (predict then warns)."
    )


def _check_out(path: str) -> None:
    """Refuse an ``--out`` that cannot become a calibration file, before anything is fitted.

    Raises:
        CliError: see :func:`lightning_to_energy.calibration.store.output_problem`.
    """
    from lightning_to_energy.calibration.store import output_problem

    problem = output_problem(Path(path))
    if problem is not None:
        raise CliError(problem)


def _shared_data_file(paths: Sequence[str]) -> Path | None:
    """The shared training-step data set (``h100-training-steps.json``) if ``paths`` is it."""
    from lightning_to_energy.study.shared_data import is_shared_data

    if len(paths) != 1 or not str(paths[0]).endswith(".json") or not Path(paths[0]).is_file():
        return None
    try:
        raw = parse_json(Path(paths[0]).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None  # not readable as JSON: the report path says why
    return Path(paths[0]) if is_shared_data(raw) else None


def _run_shared(args: argparse.Namespace, path: Path) -> int:
    """``fit`` on the shared measured steps: the physical model, intervals by held-out shape."""
    from datetime import datetime, timezone

    from lightning_to_energy.calibration import (
        Calibration,
        HardwareInfo,
    )
    from lightning_to_energy.study.physical_eval import (
        fit_shared,
        params_table,
        unused_priors_line,
    )

    if args.features or args.roofline:
        raise CliError(
            "expected no --features or --roofline with the shared training-step data (its model "
            "is the physical step model), found one. Fix: drop them."
        )
    try:
        raw = parse_json(path.read_text(encoding="utf-8"))
        # minutes on a laptop (4 min on the 2-core VM): say what it is doing, on stderr so
        # that --json's stdout stays one JSON document
        shared = fit_shared(path, progress=_progress)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CliError(f"cannot fit the shared data {path}: {exc}") from None
    hw = raw.get("hardware", {})
    info = HardwareInfo(gpus=(str(hw.get("gpu", "unknown GPU")),), driver_version=hw.get("driver"))
    model = shared.model
    result: dict[str, Any] = {
        "data": str(path),
        "configurations": len(shared.ids),
        "target": model.target,
        "validation": "leave one shape out (family x depth x width)",
        "accuracy": shared.scores,
        "interval": {
            "level": model.level,
            "time_log_halfwidth": model.time_log_halfwidth,
            "energy_log_halfwidth": model.energy_log_halfwidth,
            "basis": model.basis,
            # outside the calibrated range (plan()'s extrapolations), half widths x these
            "time_widening": model.time_widening,
            "energy_widening": model.energy_widening,
            "widening_basis": model.widening_basis,
        },
        "parameters": params_table(shared.fit),
        # kept in the calibration file for steps that run them (an extrapolation here)
        "unused_priors": shared.fit.unused(),
    }
    if args.out:
        when = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        run_id = "shared-" + hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        calibration = Calibration.of_physical(
            model.to_dict(),
            info,
            run_id=run_id,
            date=when,
            # the shared steps were read from NVML's energy counter (the data's "method")
            sensor_kind=SensorKind.COUNTER.value,
            precision_pct=float(shared.scores["energy"]["precision_pct"]),
            validation="leave one shape out (family x depth x width), energy per step",
        )
        result["calibration"] = _save(args.out, calibration)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    print(f"fitted the physical step model on {len(shared.ids)} steps of {path} ({info.label})")
    for name, s in result["parameters"].items():
        how = (
            f"fitted, 95 % CI {s['ci95'][0]:.3g} .. {s['ci95'][1]:.3g}"
            if s["ci95"]
            else s["source"]
        )
        unit = "" if s["unit"] == "1" else f" {s['unit']}"  # "1": dimensionless (SI)
        print(f"  {name:>28}: {s['value']:.4g}{unit}  ({how})")
    print(unused_priors_line(len(result["unused_priors"])))
    for target, sc in shared.scores.items():
        print(
            f"held out by shape, {target}: precision {sc['precision_pct']:.2f} %  "
            f"median error {100 * sc['median_rel_err']:.2f} %  "
            f"worst {100 * sc['worst_rel_err']:.2f} %"
        )
    if args.out:
        print(f"calibration written to {result['calibration']}")
    return 0


def _progress(message: str) -> None:
    """One line of ``fit``'s progress through a long stage, on stderr."""
    print(f"fit: {message}", file=sys.stderr, flush=True)


def _refuse_repeated_runs(
    reports: Sequence[EnergyReport],
    runs: Sequence[Sequence[tuple[dict[str, float], float]]],
    paths: Sequence[str],
) -> None:
    """Refuse two reports of one run (a copy of a report, or a resumed run's earlier report).

    Their windows overlap: fitted twice, and each held out against a fit on its own copy.

    Raises:
        CliError: two reports with fitted windows share a run id.
    """
    seen: dict[str, str] = {}
    for report, windows, path in zip(reports, runs, paths, strict=True):
        if not windows:
            continue  # nothing of it is fitted
        first = seen.setdefault(_report_run_id(report, windows), path)
        if first != path:
            raise CliError(
                f"expected reports of distinct runs, found {first} and {path} of the same run "
                f"(run id {_report_run_id(report, windows)}): a copy of one report, or a resumed "
                "run's reports, the later of which holds the earlier one's windows. Fix: pass "
                "one of them (a resumed run's last report)."
            )


def _report_run_id(report: EnergyReport, windows: Sequence[tuple[dict[str, float], float]]) -> str:
    """A run id for ``report``'s windows, the same whenever the same report is fitted.

    A fixed id lets ``fit --out`` into an existing file replace the report's windows instead of
    adding a second copy under a new id (which a leave-one-run-out would then train on while
    holding out the first). The run's own id where the report has one: the id its tracker
    saved the run's calibration under, so fitting into that calibration file replaces them too.
    """
    if report.run_id:
        return report.run_id
    text = json.dumps([report.created, windows], sort_keys=True)
    return "report-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def _by_run(
    model: OnlineEnergyModel, hardware: HardwareInfo, run_ids: Sequence[str]
) -> Calibration:
    """``Calibration.from_model``, with each window under its own run's id.

    Args:
        model: the fitted model; its own windows, oldest first, are those of ``run_ids``.
        hardware: the runs' hardware.
        run_ids: one id per window of the model's history, oldest first.
    """
    from lightning_to_energy.calibration.data import (
        MAX_RUNS_LISTED,
        Calibration,
        CalibrationRun,
        CalibrationWindow,
    )

    calibration = Calibration.from_model(model, hardware)
    own = model.history_windows(include_seeded=False)  # oldest first, one per run id
    windows = tuple(
        CalibrationWindow(f, e, rid)
        for (f, e), rid in zip(reversed(own), reversed(run_ids), strict=True)
    )
    counts = Counter(run_ids)  # insertion order: oldest first, as Calibration.runs
    runs = tuple(CalibrationRun(rid, calibration.updated, n) for rid, n in counts.items())
    return replace(calibration, windows=windows, runs=runs[-MAX_RUNS_LISTED:], n_runs=len(counts))


def _save(path: str, calibration: Any) -> str:
    """Write ``calibration`` to ``path``; a CliError with the store's reason when it refused."""
    import warnings

    from lightning_to_energy.calibration import CalibrationStore, CalibrationWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CalibrationWarning)
        saved = CalibrationStore.from_path(path).save(calibration)
    if saved is None:
        # one message for the fault: the store's reason, not a warning and an error
        reason = "; ".join(str(w.message) for w in caught) or "the store refused it"
        raise CliError(f"calibration not written to {path}: {reason}")
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return str(saved)


def _print_coefficients(model: Any) -> None:
    from lightning_to_energy.reporting.format import format_si

    units = model.units()
    for name, value in model.coefficients.items():
        print(f"  {name:>20}: {format_si(value, units[name])}")
