"""A training run's energy before it starts: one counted step, a calibration, a step count.

:func:`plan_run` applies a calibration (the regression a hardware has learnt, from
``TOEnergy`` runs or from a study) to ``steps`` copies of one counted training step. The
static-power term needs the step's time: a calibration fitted on ``roofline_s`` takes it from
the roofline estimate of its hardware (nothing is timed, so a calibration made on an H100 plans
an H100 run anywhere); one fitted on measured ``duration_s`` needs ``step_time_s``.

Example::

    import torch
    from lightning_to_energy import CalibrationStore, plan_run, profile

    step = profile(model, torch.randn(64, 3, 32, 32), train=True, optimizer="adamw")
    calibration = CalibrationStore.from_path("h100.json").load()
    plan = plan_run(step, 10_000, calibration)
    print(plan.energy_j, plan.low_j, plan.high_j, plan.interval_basis)

The interval is measured only when the calibration holds windows of at least
``MIN_RUNS_FOR_INTERVAL`` (5) runs: each run's total is then predicted by a model fitted on the
other runs alone (leave-one-run-out), and the split-conformal quantile of those errors is the
interval's half width. Its ``interval`` is the coverage that quantile really has: 0.9, or less
with fewer runs than 0.9 needs (9: with 5 runs the widest held-out error bounds 5 of 6, 83 %).
With fewer than 5 runs there is no measured error to draw it from: the plan keeps the default
factor 1.5 either way, sets ``interval`` to None, and says so in ``interval_basis``.
"""

from __future__ import annotations

import math
import numbers
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lightning_to_energy.calibration.data import Calibration, CalibrationWindow
from lightning_to_energy.counting.profile import StepProfile
from lightning_to_energy.hardware.detect import spec_for
from lightning_to_energy.hardware.roofline import roofline_s
from lightning_to_energy.hardware.specs import HardwareSpec
from lightning_to_energy.model.regression import (
    DEFAULT_INTERVAL_FACTOR,
    MIN_WINDOWS_FOR_INTERVAL,
    SEED_WEIGHT,
    OnlineEnergyModel,
    log_interval_half_width,
)
from lightning_to_energy.tracking.steps import PROFILE_FEATURES

__all__ = [
    "DEFAULT_LIGHTNING_OVERHEAD_S",
    "MIN_RUNS_FOR_INTERVAL",
    "SAME_STEP_TOLERANCE",
    "STEP_TIME_BARE",
    "STEP_TIME_CALIBRATION",
    "STEP_TIME_GIVEN",
    "STEP_TIME_MODEL",
    "STEP_TIME_ROOFLINE",
    "ModulePlan",
    "RunPlan",
    "StepTime",
    "calibration_hardware",
    "calibration_step_time",
    "check_no_step_time",
    "choose_step_time",
    "model_step_time_s",
    "plan_run",
]

_TIME_FEATURES = ("duration_s", "roofline_s")
# Runs a calibration needs for a measured (leave-one-run-out) interval: as many held-out runs as
# the online model needs prequential errors before its own intervals stop being the default.
MIN_RUNS_FOR_INTERVAL = MIN_WINDOWS_FOR_INTERVAL
# Window fits the held-out runs may cost (folds x windows each refits on), about 0.2 s.
_HELD_OUT_WORK = 25_000
# Lightning's own time per training step on top of the model's (its loop, hooks, logging,
# progress bar, the data loader's collation; here with TOEnergy too). NB: a stated default, not
# a measurement of the user's machine: on the project's 2-core VM, heavily shared, a small MLP's
# Lightning step took 15 to 24 ms more than its bare step (benchmarks/predict_step_time.py,
# 2026-12-07, docs/benchmarks.md); a quiet or faster host spends less. `predict --step-overhead
# S` gives the user's own.
DEFAULT_LIGHTNING_OVERHEAD_S = 0.015
# How far a stored window's features may stray from a whole number of the planned step's
# (relative) and still count as steps of the same model and batch: the tracker counts the
# user's own loss and batch, predict a cross-entropy on random labels.
SAME_STEP_TOLERANCE = 0.1

# Where a plan's step time came from, best first (RunPlan.step_time_source, predict --json).
STEP_TIME_CALIBRATION = "calibration-runs"  # the calibration's measured runs of this step
STEP_TIME_MODEL = "step-model"  # the hardware model's step time plus Lightning's overhead
STEP_TIME_BARE = "bare-step"  # a few bare steps timed here, without Lightning's loop
STEP_TIME_GIVEN = "given"  # the caller's own figure (predict --step-time)
STEP_TIME_ROOFLINE = "roofline"  # a roofline calibration: its time term is roofline seconds


@dataclass(frozen=True)
class StepTime:
    """The seconds per training step a plan uses, and where they come from.

    Attributes:
        seconds: seconds per step.
        source: one of ``STEP_TIME_CALIBRATION``, ``STEP_TIME_MODEL``, ``STEP_TIME_BARE``,
            ``STEP_TIME_GIVEN``, ``STEP_TIME_ROOFLINE``.
        detail: where the figure comes from, in words (runs and windows, hardware, overhead).
        warning: a caveat the user must see (a bare step leaves Lightning's loop out), or None.
    """

    seconds: float
    source: str
    detail: str
    warning: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return dict(self.__dict__)


def model_step_time_s(step: StepProfile, spec: HardwareSpec) -> float:
    """The hardware model's seconds for one training ``step`` on ``spec``, Lightning excluded.

    The one place the physical step model plugs in: today the roofline estimate
    (:func:`roofline_s`: each kernel's slowest of compute, memory and launch time).

    Raises:
        ValueError: a profile without per-kernel costs (made by hand).
    """
    return roofline_s(step, spec)


def calibration_step_time(
    step: StepProfile, calibration: Calibration, tolerance: float = SAME_STEP_TOLERANCE
) -> tuple[float, int, int] | None:
    """Seconds per step measured by the calibration's own runs of the same model and batch.

    A stored window of ``n`` steps like ``step`` carries ``n`` times each of the step's
    profile features (TOs by unit, bytes, kernels); kernels per step do not grow with the
    batch, so another batch size of the same model does not match (windows without a
    ``kernels`` feature and another one never match). Its ``duration_s`` is the wall time of
    those steps with the training loop included. A run's first window (warm-up, counted
    steps) is left out when the run has later matching ones.

    Args:
        step: the planned step.
        calibration: the calibration whose windows are searched.
        tolerance: the relative spread allowed between a window's features and a whole
            number of the step's (see ``SAME_STEP_TOLERANCE``).

    Returns:
        ``(seconds per step, windows, runs)`` over the matching windows, or None when no
        stored window is of this step (or they carry no ``duration_s``).
    """
    per_step = {f: get(step) for f, get in PROFILE_FEATURES.items() if f != "steps"}
    matched: dict[str, list[tuple[float, float]]] = {}  # run -> (seconds, steps), newest first
    for w in calibration.windows:
        shared = [f for f in per_step if f in w.features]
        # Kernels tell the model and batch apart (they do not grow with the batch); without
        # them and another feature to compare, any window would look like this step's.
        if "duration_s" not in w.features or "kernels" not in shared or len(shared) < 2:
            continue
        if any((per_step[f] == 0) != (w.features[f] == 0) for f in shared):
            continue
        ratios = [w.features[f] / per_step[f] for f in shared if per_step[f] > 0]
        if not ratios:
            continue
        n = statistics.median(ratios)
        if n < 0.5 or any(abs(r / n - 1.0) > tolerance for r in ratios):
            continue
        matched.setdefault(w.run_id, []).append((w.features["duration_s"], n))
    # A run's first window holds its warm-up and its counted steps (each about twice a plain
    # step): left out where the run has later ones, as the study's measurements leave it out.
    kept = [row for rows in matched.values() for row in (rows[:-1] if len(rows) > 1 else rows)]
    total_s = math.fsum(d for d, _ in kept)
    total_steps = math.fsum(n for _, n in kept)
    windows = len(kept)
    runs = matched
    if not windows or total_s <= 0:
        return None
    return total_s / total_steps, windows, len(runs)


def check_no_step_time(
    calibration: Calibration,
    given: Mapping[str, str | None],
    *,
    source: str = "this calibration",
    instead: str = "pass a calibration fitted on measured time (`lightning-to-energy fit "
    "energy_report.json --out FILE`)",
) -> None:
    """Refuse step-time figures given for a calibration that carries the physical step model.

    That model predicts each step's time itself: a figure given for it would be silently
    ignored, and the plan would not be the run the user described. The one check of
    :func:`plan_run` (``step_time_s``) and ``predict`` (``--step-time``, ``--step-overhead``).

    Args:
        calibration: the calibration the plan uses.
        given: each step-time argument's name (``"step_time_s"``, ``"--step-time"``) and how
            the user gave it (``"step_time_s=0.5"``), or None where it was not given.
        source: the calibration in the message (``"the built-in calibration"``).
        instead: the fix besides dropping them.

    Raises:
        ValueError: a physical calibration and at least one figure given.
    """
    found = [shown for shown in given.values() if shown is not None]
    if calibration.physical is None or not found:
        return
    dropped = [name for name, shown in given.items() if shown is not None]
    raise ValueError(
        f"expected no {' or '.join(given)} with {source}: it carries the physical step model of "
        f"{calibration.physical['target']}, which predicts each step's time itself; found "
        f"{' and '.join(found)}, which it would ignore. Fix: drop {' and '.join(dropped)}, or "
        f"{instead}."
    )


def choose_step_time(
    step: StepProfile,
    calibration: Calibration,
    *,
    spec: HardwareSpec | None,
    overhead_s: float | None = None,
    time_bare_step: Callable[[], float] | None = None,
) -> StepTime:
    """The step time a plan on a measured-time calibration uses, best source first.

    1. the calibration's own measured runs of the same model and batch
       (:func:`calibration_step_time`: Lightning's loop included);
    2. the hardware model's step time on ``spec`` (:func:`model_step_time_s`) plus
       Lightning's per-step overhead (``overhead_s``, else ``DEFAULT_LIGHTNING_OVERHEAD_S``);
    3. ``time_bare_step()``: bare steps timed here, with a warning (no Lightning loop).

    Args:
        step: the planned step.
        calibration: the calibration the plan applies.
        spec: the hardware the run is planned for (None: no step model).
        overhead_s: Lightning's seconds per step measured by the caller, or None.
        time_bare_step: times bare steps on the planned hardware (None: not possible).

    Raises:
        ValueError: no source is available (the message says the fix).
    """
    found = calibration_step_time(step, calibration)
    if found is not None:
        seconds, windows, runs = found
        return StepTime(
            seconds,
            STEP_TIME_CALIBRATION,
            f"measured by the calibration's {runs} run{'' if runs == 1 else 's'} of this model "
            f"and batch ({windows} window{'' if windows == 1 else 's'}, training loop "
            f"included) on {calibration.hardware.label}",
        )
    if spec is not None:
        try:
            model_s = model_step_time_s(step, spec)
        except ValueError:
            model_s = math.nan
        if math.isfinite(model_s) and model_s > 0:
            extra = DEFAULT_LIGHTNING_OVERHEAD_S if overhead_s is None else overhead_s
            how = (
                f"a stated default of {extra * 1e3:g} ms (--step-overhead S to give yours)"
                if overhead_s is None
                else f"{extra * 1e3:g} ms as given"
            )
            return StepTime(
                model_s + extra,
                STEP_TIME_MODEL,
                f"the roofline step time on {spec.name} ({model_s * 1e3:.3g} ms; the "
                f"calibration holds no run of this model and batch) plus Lightning's "
                f"per-step overhead, {how}",
            )
    if time_bare_step is not None:
        seconds = time_bare_step()
        return StepTime(
            seconds,
            STEP_TIME_BARE,
            "bare training steps timed here (forward, backward, optimizer; no Lightning loop)",
            warning=(
                "the step time is a bare step timed here: Lightning's loop, logging and data "
                "loading are left out, so a real run may take longer and use more energy. "
                "Fix: train this model once with TOEnergy(calibration=FILE) and predict with "
                "--calibration FILE, or pass --step-time S."
            ),
        )
    raise ValueError(
        f"step time: the calibration ({calibration.hardware.label}) uses measured step time, "
        "and none of its runs is of this model and batch, no step model knows the hardware, "
        "and no step can be timed. Fix: pass the target machine's seconds per step."
    )


@dataclass(frozen=True)
class ModulePlan:
    """A module's part of a planned run.

    Attributes:
        name: dotted module name (``"(other)"`` for ops outside every module).
        tos_per_step: the module's TOs in one step.
        share: its share of the step's TOs, 0..1.
        energy_j: its share of the run's predicted dynamic energy (static power is no layer's).
    """

    name: str
    tos_per_step: float
    share: float
    energy_j: float


@dataclass(frozen=True)
class RunPlan:
    """A run's predicted energy, and what it rests on.

    Attributes:
        steps: training steps planned.
        energy_j: predicted joules of the whole run.
        low_j: lower end of the prediction interval.
        high_j: upper end.
        interval: the interval's coverage when it is measured (leave-one-run-out over the
            calibration's runs): 0.9, or the lower ``k / (n + 1)`` that the widest held-out
            error of too few runs bounds (5 runs: 5 / 6); None when it is the default factor,
            which no measured error supports (fewer than ``MIN_RUNS_FOR_INTERVAL`` runs).
        tos_per_step: TOs of one step.
        flops_per_step: FLOPs of one step.
        step_time_s: the step time used for a measured-time calibration, else None.
        roofline_s_per_step: the roofline time of one step for a roofline calibration, else None.
        hardware: the roofline's hardware key, or None.
        calibration_hardware: the hardware the calibration was made on, in words.
        calibration_windows: the stored windows (or study runs) the plan's model was fitted
            on: those with the calibration's features, the most recent ``DEFAULT_HISTORY``.
        top_modules: the modules with the most TOs, with their share of the predicted energy.
        interval_basis: what the interval rests on, in words: ``"leave-one-run-out over 12
            runs"``, or the default factor and why.
        calibration_runs: the runs those windows came from.
        step_time_source: where ``step_time_s`` came from (a ``STEP_TIME_*`` value; ``""``
            when the caller gave it without saying, ``"roofline"`` for a roofline calibration).
        step_time_detail: the same in words.
        sensor_kind: the calibration's sensor kind (``Calibration.sensor_kind``): its joules
            are measured only for ``"counter"`` and ``"power-integration"``.
        energy_label: the words for its joules (``Calibration.energy_label``).
        calibration_precision_pct: the calibration's own cross-validated precision, or None.
        model: ``"physical"`` when the calibration's physical step model planned the run
            (``step_time_s`` is then its predicted step time), else ``"regression"``.
        bound: with the physical model, what bounds the step: ``"device"`` or ``"host"``.
        extrapolation: with the physical model, why the step lies outside the calibrated
            range (its interval is then widened); empty inside it.
    """

    steps: int
    energy_j: float
    low_j: float
    high_j: float
    interval: float | None
    tos_per_step: float
    flops_per_step: float
    step_time_s: float | None
    roofline_s_per_step: float | None
    hardware: str | None
    calibration_hardware: str
    calibration_windows: int
    top_modules: tuple[ModulePlan, ...] = ()
    interval_basis: str = ""
    calibration_runs: int = 0
    step_time_source: str = ""
    step_time_detail: str = ""
    sensor_kind: str = ""
    energy_label: str = ""
    calibration_precision_pct: float | None = None
    model: str = "regression"
    bound: str | None = None
    extrapolation: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        d = dict(self.__dict__)
        d["top_modules"] = [dict(m.__dict__) for m in self.top_modules]
        return d


def calibration_hardware(calibration: Calibration, *, same_machine: bool) -> HardwareSpec:
    """The roofline spec of the hardware ``calibration`` was made on (see
    :func:`~lightning_to_energy.hardware.detect.spec_for`).

    Raises:
        ValueError: a GPU the hardware table does not know.
    """
    return spec_for(calibration.hardware, same_machine=same_machine)


def plan_run(
    step: StepProfile,
    steps: int,
    calibration: Calibration,
    *,
    hardware: HardwareSpec | None = None,
    step_time_s: float | StepTime | None = None,
    same_machine: bool = False,
    top: int = 5,
) -> RunPlan:
    """Predict the energy of ``steps`` training steps like ``step`` with ``calibration``.

    Args:
        step: one counted training step (``profile(model, x, train=True, optimizer=...)``).
        steps: how many such steps the run takes (>= 1).
        calibration: the hardware's calibration (``CalibrationStore(...).load()``).
        hardware: the roofline's hardware for a roofline calibration (default: the
            calibration's own, see :func:`calibration_hardware`).
        step_time_s: seconds per step, needed by a calibration on measured ``duration_s``; a
            :class:`StepTime` (:func:`choose_step_time`) also names its source in the plan.
        same_machine: the calibration was made on this machine (its CPU spec is then read here).
        top: how many modules to list.

    Returns:
        The :class:`RunPlan`. Its interval is measured (leave-one-run-out, see the module
        docstring) when the calibration's windows come from at least ``MIN_RUNS_FOR_INTERVAL``
        runs, else the default factor 1.5 with ``interval=None``; ``interval_basis`` says which.

    Raises:
        ValueError: ``steps`` below 1, a missing or non-positive ``step_time_s`` for a
            measured-time calibration, a ``step_time_s`` for a calibration with the physical
            step model (:func:`check_no_step_time`), a calibration with features this
            function cannot compute or without fitted windows, or an unknown GPU (each
            message says the fix).
    """
    # Any integer type (a NumPy int from a computed length, say), but not a bool or a float.
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"steps: expected an int >= 1, found {steps!r}; fix: e.g. steps=1000.")
    steps = int(steps)
    if not isinstance(calibration, Calibration):
        raise ValueError(
            f"calibration: expected a Calibration, found {calibration!r}. "
            + (
                "CalibrationStore(...).load() returns None when there is no calibration file "
                "at its path (silently) or when the file cannot be read (with a "
                "CalibrationWarning). "
                if calibration is None
                else ""
            )
            + "Fix: check the path (`lightning-to-energy fit --out FILE` writes one), "
            "load it with CalibrationStore.from_path(path).load(), or train once with TOEnergy "
            "on that hardware."
        )
    if calibration.physical is not None:
        shown = step_time_s.seconds if isinstance(step_time_s, StepTime) else step_time_s
        check_no_step_time(
            calibration, {"step_time_s": None if shown is None else f"step_time_s={shown!r}"}
        )
        return _plan_physical(step, steps, calibration, max(top, 0))
    if not calibration.windows:
        # NB: without windows the model is its stored coefficients alone, with no measured
        # error behind its interval: a calibration saved before any fit plans 0 J, "exactly".
        raise ValueError(
            f"calibration ({calibration.hardware.label}): expected fitted windows, found none. "
            "Fix: train longer with TOEnergy on that hardware (windows of about 2 s or more), "
            "or fit one with `lightning-to-energy fit REPORT... --out FILE`."
        )
    model = calibration.to_model()
    names = model.feature_names
    seed = calibration.model_windows(names)  # the windows to_model() fitted
    per_step = {f: get(step) for f, get in PROFILE_FEATURES.items()}
    spec: HardwareSpec | None = None
    timing = step_time_s if isinstance(step_time_s, StepTime) else None
    if timing is not None:
        step_time_s = timing.seconds
    if "duration_s" in names:
        if step_time_s is None or not (step_time_s > 0 and math.isfinite(step_time_s)):
            raise ValueError(
                f"step_time_s: the calibration ({calibration.hardware.label}) uses measured step "
                f"time; expected finite seconds per step > 0, found {step_time_s!r}. Fix: pass the "
                "target machine's step time, or use a calibration fitted on roofline_s "
                "(`lightning-to-energy fit STUDY_DIR --out FILE`, or `fit REPORT... --roofline "
                "--out FILE`)."
            )
        per_step["duration_s"] = float(step_time_s)
    if "roofline_s" in names:
        spec = hardware or calibration_hardware(calibration, same_machine=same_machine)
        per_step["roofline_s"] = roofline_s(step, spec)
    missing = [f for f in names if f not in per_step]
    if missing:
        known = sorted([*PROFILE_FEATURES, *_TIME_FEATURES])
        raise ValueError(
            f"calibration features: expected names among {known}, found {missing}. Fix: refit "
            "the calibration with `lightning-to-energy fit --features ...`."
        )
    try:
        totals = {f: per_step[f] * float(steps) for f in names}
        finite = all(math.isfinite(v) for v in totals.values())
    except OverflowError:  # an int beyond any float
        finite = False
    if not finite:
        shown = f"{steps:.3g}" if steps < 1e300 else f"a {len(str(steps))}-digit number of"
        raise ValueError(
            f"steps: expected a count whose run totals are finite numbers, found {shown} "
            f"steps of {per_step['tos']:.3g} TOs each. Fix: plan fewer steps."
        )
    prediction = model.predict(totals)
    # a calibration's model always has its coefficients as prior: predictions have numbers
    assert prediction.energy_j is not None
    energy_j = prediction.energy_j
    q, coverage, basis = _interval(seed, names, model.interval)
    return RunPlan(
        steps=steps,
        energy_j=energy_j,
        low_j=energy_j * math.exp(-q) if math.isfinite(q) else 0.0,
        high_j=energy_j * math.exp(q) if math.isfinite(q) else math.inf,
        interval=coverage,
        tos_per_step=float(step.tos),
        flops_per_step=float(step.flops),
        step_time_s=per_step.get("duration_s"),
        roofline_s_per_step=per_step.get("roofline_s"),
        hardware=spec.key if spec is not None else None,
        calibration_hardware=calibration.hardware.label,
        calibration_windows=len(seed),
        top_modules=_top_modules(step, model, per_step, steps, max(top, 0)),
        interval_basis=basis,
        calibration_runs=len({w.run_id for w in seed}),
        step_time_source=(
            timing.source
            if timing is not None
            else (STEP_TIME_ROOFLINE if spec is not None else "")
        ),
        step_time_detail=(
            timing.detail
            if timing is not None
            else (f"roofline estimate on {spec.name}" if spec is not None else "")
        ),
        sensor_kind=calibration.sensor_kind,
        energy_label=calibration.energy_label,
        calibration_precision_pct=calibration.precision_pct,
    )


def _plan_physical(
    step: StepProfile, steps: int, calibration: Calibration, top: int = 5
) -> RunPlan:
    """The run planned with the calibration's physical step model and its measured interval.

    A step's model error is systematic (the same step repeats), so the run's interval is the
    step's interval times ``steps``. The ``top`` modules share the run's dynamic energy (all
    but base power x time, as in the regression's plan) by their TOs.
    """
    from lightning_to_energy.model import PhysicalModel

    assert calibration.physical is not None
    model = PhysicalModel.from_dict(calibration.physical)
    planned = model.plan(step)
    pred = planned.prediction
    return RunPlan(
        steps=steps,
        energy_j=pred.energy_j * steps,
        low_j=planned.energy_low_j * steps,
        high_j=planned.energy_high_j * steps,
        interval=planned.level,
        tos_per_step=float(step.tos),
        flops_per_step=float(step.flops),
        step_time_s=pred.time_s,
        roofline_s_per_step=None,
        hardware=model.target,
        calibration_hardware=calibration.hardware.label,
        calibration_windows=0,
        top_modules=_rank_modules(step, (pred.energy_j - pred.static_j) * steps, top),
        interval_basis=planned.basis,
        calibration_runs=calibration.n_runs,
        step_time_source=STEP_TIME_MODEL,
        step_time_detail=(
            f"the physical step model of {model.target} ({pred.bound}-bound), "
            "Lightning's loop not included"
        ),
        sensor_kind=calibration.sensor_kind,
        energy_label=calibration.energy_label,
        calibration_precision_pct=calibration.precision_pct,
        model="physical",
        bound=pred.bound,
        extrapolation=planned.extrapolation,
    )


def _interval(
    seed: Sequence[CalibrationWindow], names: tuple[str, ...], interval: float
) -> tuple[float, float | None, str]:
    """The plan's log half width, its coverage (None when not measured) and its basis in words.

    The stored windows seed the plan's model without prequential errors, so its own interval
    would be the default factor whatever the data. The error of a planned *run* is measured
    instead by leaving each run out: a fresh model (no prior: the stored coefficients were
    fitted on that run too) fitted on the other runs' windows predicts the run's total, scored
    as ``|ln(measured / predicted)|``; :func:`log_interval_half_width` turns the scores into the
    split-conformal half width, applied around the plan's prediction as a factor.

    Args:
        seed: the windows the plan's model was seeded with (:meth:`Calibration.model_windows`), most
            recent first.
        names: the model's features.
        interval: the target coverage.
    """
    runs: dict[str, list[tuple[tuple[float, ...], float]]] = {}
    for w in seed:  # most recent first
        runs.setdefault(w.run_id, []).append((tuple(w.features[n] for n in names), w.energy_j))
    if len(runs) < MIN_RUNS_FOR_INTERVAL:
        found = f"{len(runs)} run{'' if len(runs) == 1 else 's'}"
        basis = (
            f"default factor {DEFAULT_INTERVAL_FACTOR:g}, no measured error: the calibration "
            f"holds windows of {found}, leave-one-run-out needs {MIN_RUNS_FOR_INTERVAL}"
        )
        return log_interval_half_width([], interval), None, basis
    ids = list(runs)  # most recent first
    # Each fold refits on every window outside it, at about 8 us a window (seed()'s checks) on
    # a busy 2-core machine: 52 runs of 512 windows took 0.38 s and 512 one-window runs 2 s one
    # by one. Past _HELD_OUT_WORK window fits, runs are held out in groups (run i in group
    # i mod k): still no run is predicted by a model that saw it, at a fraction of the fits.
    n_windows = sum(len(r) for r in runs.values())
    groups = min(len(ids), max(MIN_RUNS_FOR_INTERVAL, _HELD_OUT_WORK // n_windows))
    scores: list[float] = []
    for g in range(groups):
        held = set(ids[g::groups])
        others = [row for run_id in ids if run_id not in held for row in runs[run_id]]
        fold = OnlineEnergyModel(names, history=max(len(others), 1))
        fold.seed(others, weight=SEED_WEIGHT)
        for run_id in ids[g::groups]:
            rows = runs[run_id]
            total = [math.fsum(x[i] for x, _ in rows) for i in range(len(names))]
            predicted = fold.predict(total).energy_j
            measured = math.fsum(e for _, e in rows)
            # NB: a fold whose refit failed (it warned) or that predicts 0 J bounds nothing.
            if predicted is None or predicted <= 0:
                scores.append(math.inf)
            else:
                scores.append(abs(math.log(measured / predicted)))
    q = log_interval_half_width(scores, interval)
    coverage, short = _coverage(len(scores), interval)
    if groups == len(ids):
        basis = f"leave-one-run-out over {len(ids)} runs"
    else:
        basis = f"leave-runs-out over {len(ids)} runs, held out in {groups} groups"
    return q, coverage, basis + short


def _coverage(n: int, interval: float) -> tuple[float, str]:
    """The coverage of :func:`log_interval_half_width` over ``n`` scores, and what it lacks.

    The half width is the k-th smallest of n held-out scores, ``k = min(ceil((n + 1) x
    interval), n)``: a new run's score exceeds it with probability at most ``1 - k / (n + 1)``
    (split conformal). Below ``interval / (1 - interval)`` scores (9 for 0.9) k is capped at n,
    so the interval covers only ``n / (n + 1)``: that is its coverage, not the target.

    Returns:
        ``(coverage, note)``: the coverage, and ``""`` or e.g. ``"; 90 % needs 9 runs"``.
    """
    # the same rank as log_interval_half_width, 1e-9 included
    k = min(math.ceil((n + 1) * interval - 1e-9), n)
    if k / (n + 1) >= interval:
        return interval, ""
    needed = math.ceil(interval / (1.0 - interval) - 1e-9)
    return k / (n + 1), f"; {round(100 * interval)} % needs {needed} runs"


def _top_modules(
    step: StepProfile, model: Any, per_step: dict[str, float], steps: int, top: int
) -> tuple[ModulePlan, ...]:
    # NB: as in the end-of-run report, a module's joules are its share of the step's TOs times
    # the run's predicted dynamic energy (static power is no layer's doing).
    if top == 0 or not step.tos:
        return ()
    dynamic = {
        f: (0.0 if f in _TIME_FEATURES else per_step[f] * steps) for f in model.feature_names
    }
    return _rank_modules(step, model.predict(dynamic).energy_j or 0.0, top)


def _rank_modules(step: StepProfile, energy: float, top: int) -> tuple[ModulePlan, ...]:
    """The ``top`` modules by TOs, each with its TO share of the run's dynamic ``energy``."""
    if top <= 0 or not step.tos:
        return ()
    ranked = sorted(step.by_module.items(), key=lambda kv: kv[1].tos, reverse=True)[:top]
    return tuple(
        ModulePlan(name, float(t.tos), t.tos / step.tos, energy * t.tos / step.tos)
        for name, t in ranked
    )
