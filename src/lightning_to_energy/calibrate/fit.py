"""From measured workloads to physical parameters, and the calibration file.

Base power is measured directly: the idle windows' joules over their seconds (their duration
is a host sleep, which the time model does not describe, so they enter no fit). Every other
window becomes a :class:`~lightning_to_energy.model.physical.Sample` (its iteration's counted
profile, joules and seconds) and :func:`~lightning_to_energy.model.physical.fit_physical`
fits the parameters the workloads are designed to pin; every other parameter keeps its prior.
A parameter whose workloads are missing (a format the device lacks, a budget too short, a
class of measurements removed) is reported as not identifiable, with its prior.
A fitted parameter whose windows the fitted model misses by more than their noise
(:func:`misfits`) is reported as ``"misfit"``, not fitted, with the windows and an interval
widened by the misfit.

The calibration file is in the calibration store's format with a ``physical`` section (a
:class:`~lightning_to_energy.model.physical.PhysicalModel`), so ``predict --calibration``,
``plan_run`` and ``TOEnergy(calibration=...)`` use it. Beside it, ``<name>.calibrate.json``
records the plan, every window measured, every parameter's status and the fit's residuals.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import statistics
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import chi2

from lightning_to_energy._files import atomic_write_text
from lightning_to_energy.calibration import HardwareInfo
from lightning_to_energy.counting.cost_model import Unit
from lightning_to_energy.model.physical import (
    CONV_KEYED,
    ENERGY_PREFIXES,
    TIME_PREFIXES,
    PhysicalModel,
    PhysicalParams,
    StepDesign,
    parse_key,
    prefix_of,
)
from lightning_to_energy.model.physical_fit import ParamStatus, PhysicalFit, Sample, fit_physical

from .bench import CalibrationError
from .schedule import Measured, Plan
from .workloads import Workload, param

__all__ = [
    "CALIBRATION_KIND",
    "ENERGY_NOISE_REL",
    "IDENTIFIED_REL",
    "LOADING_MIN",
    "MISFIT",
    "MISFIT_LIST_SIGMAS",
    "MISFIT_P",
    "MISFIT_SIGMAS",
    "PIN_SLOPE",
    "PRIOR_REL",
    "TIME_NOISE_REL",
    "Calibrated",
    "Misfit",
    "base_power",
    "check_writable",
    "designed_pins",
    "details_path",
    "fit_measurements",
    "identify",
    "interval_widths",
    "load_params",
    "misfits",
    "noise_scale",
    "physical_model",
    "render",
    "repeat_noise",
    "samples_of",
    "starting_values",
    "write_calibration",
]

CALIBRATION_KIND = "lightning-to-energy/physical-calibration"
"""The ``calibration.kind`` of a file written by ``lightning-to-energy calibrate``."""
MISFIT = "misfit"
"""The ``source`` of a parameter fitted on windows the fitted model misses beyond their noise:
its value is the fit's, its interval widened by the misfit (:func:`misfits`)."""

_BASE = param("base_w")


def designed_pins(workloads: Collection[Workload]) -> set[str]:
    """Every parameter some workload is designed to pin."""
    return {p for w in workloads for p in w.pins}


def samples_of(measured: Sequence[Measured]) -> list[Sample]:
    """The fit's samples, per iteration: the energy-only ones (idle) enter the energy fit only."""
    return [
        Sample(m.profile, m.energy_j, m.time_s, m.workload.name, m.workload.energy_only)
        for m in measured
    ]


def base_power(measured: Sequence[Measured]) -> tuple[float, tuple[float, float]] | None:
    """Base power from the idle windows: (watts, 95 % interval); None without one.

    The interval combines the windows' spread with the counter's resolution (one 100 ms
    update at each edge is at most 2 x 0.1 s x P of a window's joules).
    """
    idle = [m for m in measured if m.workload.energy_only and m.window_s > 0]
    if not idle:
        return None
    powers = [m.power_w for m in idle]
    mean_w = math.fsum(m.power_w * m.window_s for m in idle) / math.fsum(m.window_s for m in idle)
    spread = statistics.stdev(powers) / math.sqrt(len(powers)) if len(powers) > 1 else 0.0
    resolution = mean_w * 0.1 / math.fsum(m.window_s for m in idle)
    half = 1.96 * math.hypot(spread, resolution)
    return mean_w, (mean_w - half, mean_w + half)


def fit_measurements(
    measured: Sequence[Measured],
    prior: PhysicalParams,
    pins: Collection[str],
) -> PhysicalFit:
    """Fit the parameters in ``pins`` to ``measured``; the others keep ``prior``.

    A designed parameter is reported fitted only where the windows pin it: its 95 %
    interval, counting the held parameters' uncertainty (:func:`identify`), is within
    +/-:data:`IDENTIFIED_REL` and it has no large loading on a direction the windows leave
    looser than that. Any other is held at its start value (the prior, or a direct reading
    such as the fastest matmul's rate), its reason stated, and the rest refitted, until every
    fitted parameter passes.

    Then each fitted parameter whose windows misfit (:func:`misfits`) gets source
    :data:`MISFIT`, a reason naming the windows and the misfit against the noise, and its
    interval's log half width multiplied by :attr:`Misfit.widening`.

    Args:
        measured: the windows (:func:`~lightning_to_energy.calibrate.schedule.run_plan`).
        prior: starting values, ranges and notes (``prior_for(spec)``).
        pins: the parameters the workloads are designed to pin (:func:`designed_pins` of
            every workload, measured or not: the ones nothing measured pins are reported so).

    Raises:
        CalibrationError: fewer than two windows to fit.
    """
    samples = samples_of(measured)
    if sum(not s.energy_only for s in samples) < 2:
        raise CalibrationError(
            f"expected at least 2 measured workloads besides the idle ones, found "
            f"{sum(not s.energy_only for s in samples)}. Fix: raise --budget-s."
        )
    start = prior.with_values(starting_values(measured, prior))
    free = set(pins)
    weak: dict[str, str] = {}
    fit = fit_physical(samples, start, free=sorted(free))
    for _ in range(len(free) + 1):
        widths, why = identify(samples, fit, free)
        new = {n: r for n, r in why.items() if n in free and n not in weak}
        if not new:
            break
        # a value the windows do not pin is no calibration: hold it, refit the others (holding
        # it adds its uncertainty to theirs, so the check runs again)
        weak.update(new)
        fit = fit_physical(samples, start, free=sorted(free - set(weak)))
    status = dict(fit.status)
    # a window the fitted model misses by more than its noise says the model does not
    # describe it there (a held parameter past its prior's range moved a kink, or a term the
    # model lacks): the intervals above assume it does. Say so, and widen by the misfit
    misfit = misfits(samples, fit)
    for name, width in widths.items():
        value = status[name].value
        if name in misfit:
            width = math.expm1(math.log1p(width) * misfit[name].widening)
            status[name] = dataclasses.replace(
                status[name], source=MISFIT, reason=misfit[name].describe()
            )
        status[name] = dataclasses.replace(
            status[name], ci95=(value / (1.0 + width), value * (1.0 + width))
        )
    for name, reason in weak.items():
        source = prior.notes.get(name, "").removeprefix("prior: ")
        status[name] = dataclasses.replace(
            status[name],
            value=start.flat()[name],
            source="prior",
            ci95=None,
            reason=f"not identified: {reason}; kept the prior ({source})",
        )
    return dataclasses.replace(fit, status=status)


IDENTIFIED_REL = 0.10
"""A fitted parameter counts as identified when its 95 % interval is within +/-10 %."""
TIME_NOISE_REL = 0.005
"""Noise floor of a window's seconds per iteration (timer, clocks), relative."""
ENERGY_NOISE_REL = 0.015
"""Noise floor of a window's joules (NVML: 1 to 3 % per window at most), relative."""
PRIOR_REL = 0.30
"""A held parameter is taken as good to +/-30 % (95 %): the spread of the priors a device
may differ by (the simulated device draws its truth within it). Its uncertainty reaches the
fitted parameters it is coupled to, and their intervals include it."""
LOADING_MIN = 0.3
"""A parameter whose unit direction projects more than this on a direction the windows pin
looser than +/-:data:`IDENTIFIED_REL` moves with it: it is not identified."""


def _log_model(design: StepDesign, samples: Sequence[Sample]) -> Any:
    """(params as a vector dict) -> (log seconds of the timed samples, log joules at the
    measured seconds of every sample)."""
    t_meas = np.array([s.time_s for s in samples])
    timed = np.array([not s.energy_only for s in samples])

    def model(v: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        device, host = design.times(v)
        time_s = np.maximum(device, host)[timed]
        energy_j = (
            v["base_w"] * t_meas + design.work_j(v) + v["busy_w"] * np.minimum(device, t_meas)
        )
        return np.log(np.maximum(time_s, 1e-300)), np.log(np.maximum(energy_j, 1e-300))

    return model


def _matrix_conv(name: str) -> bool:
    """A matrix unit's convolution curve parameter (``conv_share`` or ``conv_flop_half``)."""
    prefix = prefix_of(name)
    return prefix in CONV_KEYED and parse_key(name[len(prefix) + 1 : -1])[0] is Unit.MATRIX


def _column_of(samples: Sequence[Sample], params: PhysicalParams) -> Any:
    """(name, value, step) -> the central-difference slopes of every timed window's log
    seconds and every window's log joules to the parameter's log, over +/-``step``.

    Central differences: the time model is a maximum of terms, and a fit can settle on the
    kink between two (a compute and a memory time equal), where a one-sided difference sees
    only one of them and calls the other parameter irrelevant.
    """
    design = StepDesign.build([s.profile for s in samples])
    model = _log_model(design, samples)
    base_v = design.vec(params)

    def column(name: str, value: float, step: float) -> tuple[np.ndarray, np.ndarray]:
        moved = []
        for sign in (1.0, -1.0):
            v = {k: a.copy() if isinstance(a, np.ndarray) else a for k, a in base_v.items()}
            design.set(v, name, value * math.exp(sign * step))
            moved.append(model(v))
        (t_up, e_up), (t_down, e_down) = moved
        return (t_up - t_down) / (2 * step), (e_up - e_down) / (2 * step)

    return column


def _timed(samples: Sequence[Sample], values: Sequence[Any]) -> list[Any]:
    """``values`` (one per sample) of the windows whose time is modelled (not the idle ones)."""
    return [v for s, v in zip(samples, values, strict=True) if not s.energy_only]


def noise_scale(residuals: Sequence[float], floor: float) -> float:
    """A stage's per-window noise: 1.4826 x the median absolute residual, at least ``floor``.

    The scatter of most windows (x1.4826 makes it a normal noise's standard deviation): a
    few windows the model mis-describes must not set the noise they are judged against.
    The floor: a simulated or very steady device must not look more certain than its meter.
    """
    res = np.abs(np.asarray(residuals, dtype=float))
    return max(1.4826 * float(np.median(res)) if res.size else 0.0, floor)


def repeat_noise(samples: Sequence[Sample], residuals: Sequence[float], floor: float) -> float:
    """A stage's per-window noise, measured on the windows that repeat a workload.

    Windows of the same iteration (``launch`` .. ``launch-8``, ``idle`` and ``idle-2``, the
    largest matmuls and their ``-again``) are modelled alike, so the spread of their log
    residuals about their own mean is the meter's and the device's noise, whatever the model
    gets wrong: the pooled standard deviation over every group, at least ``floor``. Where
    no workload was repeated (a short budget), :func:`noise_scale` of every residual.

    Args:
        samples: the windows.
        residuals: one relative residual per sample (NaN where it has none: an idle window's
            time).
        floor: the least noise to assume (:data:`TIME_NOISE_REL`, :data:`ENERGY_NOISE_REL`).
    """
    groups: dict[str, list[float]] = {}
    for sample, r in zip(samples, residuals, strict=True):
        if math.isfinite(r):
            # a repr of the iteration's kernels: a profile holds mappings, so it has no hash
            key = repr((sample.energy_only, sample.profile.kernels, sample.profile.op_costs))
            groups.setdefault(key, []).append(math.log1p(r))
    squares = math.fsum(
        (x - statistics.fmean(g)) ** 2 for g in groups.values() if len(g) > 1 for x in g
    )
    dof = sum(len(g) - 1 for g in groups.values())
    if dof == 0:
        return noise_scale([r for r in residuals if math.isfinite(r)], floor)
    return max(math.expm1(math.sqrt(squares / dof)), floor)


MISFIT_SIGMAS = 4.0
"""A window misfits when its log residual exceeds this many times its stage's noise
(:func:`repeat_noise`). With normal noise, one of 110 residuals (57 windows, two stages)
goes past 4 sigma with a chance of 0.7 %; in the simulated runs of seeds 0 to 19 the worst
window of a good fit is 2.3 sigma (docs/calibrate.md)."""
MISFIT_P = 1e-3
"""A parameter's windows misfit together when the chi-square of their log residuals over the
noise exceeds its 1 - 1e-3 quantile (as many degrees of freedom as windows: the fit's own
parameters only lower it): several windows at 2 to 4 sigma, none past
:data:`MISFIT_SIGMAS`, are as telling as one far out."""
MISFIT_LIST_SIGMAS = 2.0
"""The windows a misfit names: those past this many times the noise, worst first."""
PIN_SLOPE = 0.1
"""A window pins a parameter when its log time (or log joules) moves by at least this much
per unit of the parameter's log (10 % of the parameter: 1 % of the window)."""


@dataclass(frozen=True)
class Misfit:
    """A fitted parameter some of whose windows the fitted model does not describe.

    Attributes:
        name: the parameter (flat name).
        stage: ``"time"`` (its windows' seconds) or ``"energy"`` (their joules).
        windows: the labels of its windows beyond :data:`MISFIT_SIGMAS` x the noise, worst
            first.
        worst_rel: the worst of those windows' relative residual (predicted / measured - 1).
        noise_rel: the stage's noise (:func:`repeat_noise`), relative.
        widening: the factor its 95 % interval's log half width was widened by (the worst
            window's residual over the noise, in log terms).
        chi_square: the sum of squares of its windows' log residuals over the noise.
        pinned_by: how many windows pin it (the chi-square's degrees of freedom).
    """

    name: str
    stage: str
    windows: tuple[str, ...]
    worst_rel: float
    noise_rel: float
    widening: float
    chi_square: float
    pinned_by: int

    def describe(self) -> str:
        """One line: the misfit against the noise, and the windows."""
        return (
            f"fitted, windows misfit: {self.stage} {abs(self.worst_rel):.2%} vs "
            f"{self.noise_rel:.2%} noise ({', '.join(self.windows)}; chi-square "
            f"{self.chi_square:.3g} on {self.pinned_by} window"
            f"{'s' if self.pinned_by != 1 else ''}); interval widened "
            f"x{self.widening:.3g}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "windows": list(self.windows),
            "worst_rel": self.worst_rel,
            "noise_rel": self.noise_rel,
            "widening": self.widening,
            "chi_square": self.chi_square,
            "pinned_by": self.pinned_by,
        }


def misfits(samples: Sequence[Sample], fit: PhysicalFit) -> dict[str, Misfit]:
    """The fitted parameters whose windows misfit beyond their noise.

    Per stage (time parameters on the timed windows' log seconds, energy parameters on every
    window's log joules), the noise is :func:`repeat_noise`: the spread of the windows that
    repeat a workload (at least :data:`TIME_NOISE_REL` / :data:`ENERGY_NOISE_REL`), which a
    misfit does not inflate as it does the scatter of every window. A window pins a fitted
    parameter when its log slope to it is at least :data:`PIN_SLOPE` at the fitted values; a
    parameter misfits when any window that pins it has a log residual beyond
    :data:`MISFIT_SIGMAS` x the noise, or when its windows' chi-square (their log residuals
    over the noise, squared and summed) passes its :data:`MISFIT_P` tail. The model then
    does not describe those windows (a held parameter beyond its prior's range moved a kink,
    or the device does something the model has no term for), and the parameter's interval,
    which assumes it does, is not to be trusted as is: :func:`fit_measurements` widens it
    by :attr:`Misfit.widening`.

    Returns:
        Per misfitting parameter, its :class:`Misfit`.
    """
    column = _column_of(samples, fit.params)
    labels = list(fit.labels)
    out: dict[str, Misfit] = {}
    for stage, prefixes, all_residuals, floor in (
        ("time", TIME_PREFIXES, fit.time_rel_residuals, TIME_NOISE_REL),
        ("energy", ENERGY_PREFIXES, fit.energy_rel_residuals, ENERGY_NOISE_REL),
    ):
        # the slopes' rows: the time stage's are the timed windows only
        residuals = _timed(samples, all_residuals) if stage == "time" else list(all_residuals)
        names = _timed(samples, labels) if stage == "time" else labels
        if not residuals:
            continue
        sigma = math.log1p(repeat_noise(samples, all_residuals, floor))
        logres = np.log1p(np.asarray(residuals, dtype=float))
        beyond = np.abs(logres) > MISFIT_SIGMAS * sigma
        index = 0 if stage == "time" else 1
        for name, status in fit.status.items():
            # a status already MISFIT: the check again on a finished calibration (its record)
            fitted = status.source in ("fitted", MISFIT)
            if not fitted or prefix_of(name) not in prefixes or status.value <= 0:
                continue
            pins = np.abs(column(name, status.value, 1e-3)[index]) >= PIN_SLOPE
            if not pins.any():
                continue
            chi_square = float(((logres[pins] / sigma) ** 2).sum())
            limit = float(chi2.isf(MISFIT_P, int(pins.sum())))
            if not (pins & beyond).any() and chi_square <= limit:
                continue
            bad = np.flatnonzero(pins & (np.abs(logres) > MISFIT_LIST_SIGMAS * sigma))
            order = bad[np.argsort(-np.abs(logres[bad]))]
            worst = float(np.abs(logres[order[0]]))
            out[name] = Misfit(
                name=name,
                stage=stage,
                windows=tuple(names[i] for i in order),
                worst_rel=float(residuals[order[0]]),
                noise_rel=math.expm1(sigma),
                widening=worst / sigma,
                chi_square=chi_square,
                pinned_by=int(pins.sum()),
            )
    return out


def identify(
    samples: Sequence[Sample], fit: PhysicalFit, designed: Collection[str]
) -> tuple[dict[str, float], dict[str, str]]:
    """Each fitted parameter's 95 % relative half width, and the ones the windows do not pin.

    For each stage (time parameters on the windows' log seconds, energy parameters on their
    log joules at the measured seconds), at the fitted values:

    - the data's part: the residual scatter (robust: 1.4826 x the median absolute residual,
      floored at :data:`TIME_NOISE_REL` / :data:`ENERGY_NOISE_REL`: a simulated or very
      steady device must not look more certain than its meter) over the Jacobian's singular
      values, per direction; or, where larger, the sandwich estimate from the residuals of
      the windows that pin the parameter (their misfit, where something held mis-models
      them);
    - the held parameters' part: each parameter of ``designed`` that is held (not pinned: its
      windows are missing or too loose) and that the windows depend on is taken as good to
      +/-:data:`PRIOR_REL` (the energy stage also takes each fitted time parameter's own
      interval), and its error moves the fitted ones by the least-squares sensitivity
      ``pinv(J_fitted) @ J_held``: a held parameter's error reaches the parameters coupled to
      it, and their intervals say so. So is every matrix unit's convolution curve
      (``conv_share``, ``conv_flop_half``), designed or not: a convolution of a format no
      convolution workload runs (the fp32 depthwise ones) must not pin that format's rate
      through a curve nothing measured. The other parameters no workload is designed for
      (the vector units' rates, ramps and J/FLOP) are taken as the model's structure, not
      propagated: their priors' error is a stated limit (docs/calibrate.md).

    A parameter is not identified when its interval is looser than +/-:data:`IDENTIFIED_REL`,
    or when it loads more than :data:`LOADING_MIN` on a direction of the data's part that the
    windows pin looser than that (a direction whose singular value is below 1e-12 of the
    largest is not pinned at all): it moves with other parameters the data cannot tell apart.

    Returns:
        (relative half width per fitted parameter, reason per parameter not identified).
    """
    flat = fit.params.flat()
    column = _column_of(samples, fit.params)
    columns = {name: column(name, value, 1e-3) for name, value in flat.items() if value > 0}
    # a held parameter's error is the prior's +/-30 %, not an infinitesimal step: its column
    # is the secant over that range. At the fitted point its windows may all sit on one side
    # of a kink (a convolution fitted compute-bound, with the held bandwidth at its prior),
    # where the local slope is zero and its error would reach nobody; 30 % away they bind
    wide = math.log1p(PRIOR_REL)
    held_columns = {
        name: column(name, value, wide)
        for name, value in flat.items()
        if value > 0 and (name in designed or _matrix_conv(name))
    }
    fitted = {n for n, st in fit.status.items() if st.source == "fitted"}
    timed = _timed(samples, fit.time_rel_residuals)
    widths: dict[str, float] = {}
    why: dict[str, str] = {}
    prior_var = (math.log1p(PRIOR_REL) / 1.96) ** 2
    time_var: dict[str, float] = {}
    for stage, prefixes, residuals, floor in (
        (0, TIME_PREFIXES, timed, TIME_NOISE_REL),
        (1, ENERGY_PREFIXES, list(fit.energy_rel_residuals), ENERGY_NOISE_REL),
    ):
        names = sorted(n for n in fitted if prefix_of(n) in prefixes and n in columns)
        # each held parameter's column: the secant over its prior's range, or (a fitted time
        # parameter, in the energy stage) the local slope over its own small interval
        held_cols = {
            n: held_columns[n][stage] if n not in time_var else columns[n][stage]
            for n in columns
            if n not in names
            and (n in time_var or n in held_columns)
            and (stage == 1 or prefix_of(n) in prefixes)
        }
        held = sorted(n for n, col in held_cols.items() if np.any(col))
        if not names:
            continue
        jac = np.column_stack([columns[n][stage] for n in names])
        res = np.array(residuals)
        sigma = noise_scale(residuals, floor)
        _, sv, vt = np.linalg.svd(jac, full_matrices=False)
        sv = np.concatenate([sv, np.zeros(len(names) - len(sv))])
        vt = np.vstack([vt, np.zeros((len(names) - vt.shape[0], len(names)))])
        none = sv <= 1e-12 * max(float(sv.max()), 1e-300)
        dir_var = np.where(none, np.inf, sigma**2 / np.where(none, 1.0, sv) ** 2)
        with np.errstate(invalid="ignore"):
            var = np.where(vt**2 > 1e-12, vt**2 * dir_var[:, None], 0.0).sum(axis=0)
        # the windows that pin a parameter, with their own residuals (the sandwich estimate):
        # where a held parameter mis-models them, their misfit widens that parameter's
        # interval, and only that parameter's
        sandwich = (np.linalg.pinv(jac) ** 2 * res[None, :] ** 2).sum(axis=1)
        var = np.maximum(var, sandwich)
        if held:
            jh = np.column_stack([held_cols[n] for n in held])
            sens = np.linalg.pinv(jac) @ jh  # d log(fitted) / d log(held)
            tau = np.array([time_var.get(n, prior_var) for n in held])
            var = var + (sens**2 * tau).sum(axis=1)
        loose = np.sqrt(dir_var) * 1.96 > math.log1p(IDENTIFIED_REL)
        for j, name in enumerate(names):
            width = math.expm1(1.96 * math.sqrt(var[j])) if math.isfinite(var[j]) else math.inf
            widths[name] = width
            if stage == 0:
                time_var[name] = float(var[j])
            moves = [k for k in np.flatnonzero(loose) if abs(vt[k, j]) > LOADING_MIN]
            if width > IDENTIFIED_REL:
                why[name] = (
                    f"the windows pin it only to x/{1 + width:.3g} (95 %, counting the held "
                    f"parameters' +/-{PRIOR_REL * 100:.0f} %), looser than "
                    f"+/-{IDENTIFIED_REL * 100:.0f} %"
                )
            elif moves:
                k = moves[0]
                with_ = [names[i] for i in np.flatnonzero(np.abs(vt[k]) > LOADING_MIN) if i != j]
                half = math.expm1(min(1.96 * math.sqrt(dir_var[k]), 700.0))
                why[name] = (
                    "it moves along a direction the windows do not pin (with "
                    f"{', '.join(with_) or 'no other'}: x/{1 + half:.3g} at 95 %)"
                )
    return widths, why


def interval_widths(
    samples: Sequence[Sample], fit: PhysicalFit, designed: Collection[str]
) -> dict[str, float]:
    """The relative half-width of each fitted parameter's 95 % interval (see :func:`identify`)."""
    return identify(samples, fit, designed)[0]


def starting_values(measured: Sequence[Measured], prior: PhysicalParams) -> dict[str, float]:
    """Where the fit starts, read off the windows that bound each rate (kept in range).

    The time model is a maximum of several terms, so a fit started far away can stall where
    the wrong term binds; these starts sit near the answer. Base power: the idle draw (the
    fit then pins it on every window, host-bound ones above all, so one noisy idle window
    does not shift busy_w and the J/FLOP). Bandwidth: the fastest copy. Peak rate per
    format: its fastest matmul. Launch floor: the empty launches.
    """
    out: dict[str, float] = {}
    base = base_power(measured)
    if base is not None:
        out[_BASE] = base[0]
    for m in measured:
        if m.time_s <= 0 or m.workload.energy_only:
            continue
        name = m.workload.name
        if name.startswith("copy-"):
            rate = m.profile.bytes / m.time_s
            out["bandwidth_b_s"] = max(out.get("bandwidth_b_s", 0.0), rate)
        elif name.startswith("matmul-") and m.workload.fmt is not None:
            key = param("peak_flop_s", "matrix", m.workload.fmt.value)
            out[key] = max(out.get(key, 0.0), m.profile.flops / m.time_s)
        elif name.startswith("launch") and m.profile.kernels > 0:
            kernels = sum(cost.kernels * calls for cost, calls in m.profile.op_costs)
            out["launch_s"] = m.time_s / kernels
    known = prior.flat()
    clipped = {}
    for name, value in out.items():
        if name in known and value > 0:
            lo, hi = prior.range_of(name)
            clipped[name] = min(max(value, lo * 1.01), hi * 0.99)
    return clipped


@dataclass(frozen=True)
class Calibrated:
    """A finished microbenchmark calibration.

    Attributes:
        device_name: the device as torch names it.
        hardware_key: the datasheet entry the priors came from (the model's count target).
        hardware: what the calibration file is specific to (its fingerprint).
        plan: what was planned (window, dropped workloads).
        measured: every window.
        fit: the fitted parameters with their status and residuals.
        pins: the parameters the workloads are designed to pin.
        elapsed_s: wall seconds of the measurements.
    """

    device_name: str
    hardware_key: str
    hardware: HardwareInfo
    plan: Plan
    measured: tuple[Measured, ...]
    fit: PhysicalFit
    pins: frozenset[str]
    elapsed_s: float

    def not_identified(self) -> list[str]:
        """Designed parameters the measurements did not pin (they keep their prior)."""
        return sorted(n for n in self.pins if self.fit.status[n].source not in ("fitted", MISFIT))

    def misfit(self) -> list[str]:
        """Fitted parameters whose windows misfit (their intervals widened by it)."""
        return sorted(n for n, s in self.fit.status.items() if s.source == MISFIT)

    def to_dict(self) -> dict[str, Any]:
        """The record: the params' own dict plus a ``calibration`` section (the windows)."""
        d = self.fit.params.to_dict()
        d["calibration"] = {
            "kind": CALIBRATION_KIND,
            "device": self.device_name,
            "hardware": self.hardware_key,
            "hardware_info": self.hardware.to_dict(),
            "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "elapsed_s": self.elapsed_s,
            "window_s": self.plan.window_s,
            "dropped": [{"workload": n, "reason": r} for n, r in self.plan.dropped],
            "measured": [m.to_dict() for m in self.measured],
            "status": {n: s.to_dict() for n, s in self.fit.status.items()},
            "designed": sorted(self.pins),
            "not_identified": self.not_identified(),
            # the windows each misfitting parameter rests on, against the noise of repeats
            "misfit": {
                n: m.to_dict() | {"reason": self.fit.status[n].reason}
                for n, m in sorted(misfits(samples_of(self.measured), self.fit).items())
            },
            "residuals": [
                {"label": label, "time_rel": t if math.isfinite(t) else None, "energy_rel": e}
                for label, t, e in zip(
                    self.fit.labels,
                    self.fit.time_rel_residuals,
                    self.fit.energy_rel_residuals,
                    strict=True,
                )
            ],
        }
        return d


def check_writable(path: Path) -> None:
    """Refuse an output path that cannot become a calibration file, before anything is measured
    (the rule of ``fit --out`` too: :func:`lightning_to_energy.calibration.store.output_problem`).

    Raises:
        CalibrationError: a directory, a file that is not a calibration, or a path that cannot
            be written.
    """
    from lightning_to_energy.calibration.store import output_problem

    problem = output_problem(path)
    if problem is not None:
        raise CalibrationError(problem)


def physical_model(calibrated: Calibrated) -> PhysicalModel:
    """The calibration as the physical model ``predict``, ``plan_run`` and ``TOEnergy`` use.

    Its intervals are split-conformal quantiles of the microbenchmark windows' own errors:
    they say how well the model fits the windows it was fitted on, not yet how well it
    predicts a training step (``benchmarks/apriori_check.py`` measures that).
    """
    from lightning_to_energy.model.physical_fit import calibrated_range_fields
    from lightning_to_energy.study.physical_eval import LEVEL, conformal_halfwidth

    fit = calibrated.fit
    samples = samples_of(calibrated.measured)
    return PhysicalModel(
        params=fit.params,
        target=calibrated.hardware_key,
        # the energy-only (idle) windows have no modelled time: NaN, left out
        time_log_halfwidth=conformal_halfwidth(
            [math.log1p(r) for r in fit.time_rel_residuals if math.isfinite(r)]
        ),
        energy_log_halfwidth=conformal_halfwidth([math.log1p(r) for r in fit.energy_rel_residuals]),
        level=LEVEL,
        basis=(
            f"split conformal on the errors of {len(samples)} microbenchmark windows (fitted "
            "on them; no training step fitted)"
        ),
        **calibrated_range_fields(samples),
        source=f"lightning-to-energy calibrate on {calibrated.device_name}",
    )


def details_path(path: Path) -> Path:
    """Where the windows and statuses behind the calibration file ``path`` are written."""
    return path.with_name(path.stem + ".calibrate.json")


def write_calibration(calibrated: Calibrated, path: Path) -> tuple[Path, Path]:
    """Write the calibration file and, beside it, the record of every window.

    ``path`` is a calibration in the store's format (``physical`` section: the fitted model),
    which ``predict --calibration``, ``plan_run`` and ``TOEnergy(calibration=...)`` read; a
    file already there for the same hardware keeps its regression windows. The record
    (:func:`details_path`) holds the plan, every window, every parameter's status and the
    fit's residuals.

    Returns:
        The two files written.

    Raises:
        CalibrationError: the store refused to write (it warned why).
    """
    from lightning_to_energy.calibration import (
        Calibration,
        CalibrationStore,
    )

    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    calibration = Calibration.of_physical(
        physical_model(calibrated).to_dict(),
        calibrated.hardware,
        run_id=f"calibrate-{when}",
        date=when,
    )
    saved = CalibrationStore.from_path(path).save(calibration)
    if saved is None:
        raise CalibrationError(
            f"expected to write the calibration to {path}, found the store refusing it (see "
            "the warning above). Fix: pass another --out."
        )
    record = calibrated.to_dict()
    record["calibration"]["created"] = when
    details = details_path(path)
    atomic_write_text(details, json.dumps(record, indent=1, allow_nan=False) + "\n")
    return saved, details


def render(calibrated: Calibrated) -> str:
    """Every parameter with its unit, value, interval and source; then the residuals, the
    parameters whose windows misfit (with those windows) and those not identified."""
    fit = calibrated.fit
    lines = [
        f"Calibration of {calibrated.device_name} ({len(calibrated.measured)} windows of "
        f"{calibrated.plan.window_s:.1f} s, {calibrated.elapsed_s:.0f} s)",
        "",
        f"  {'parameter':<30} {'value':>11} {'unit':<9} {'95 % interval':<25} source",
    ]
    for name in sorted(calibrated.pins | {n for n, s in fit.status.items() if s.source != "prior"}):
        s: ParamStatus = fit.status[name]
        interval = f"{s.ci95[0]:.4g} .. {s.ci95[1]:.4g}" if s.ci95 else "-"
        # a reason may already say where the prior comes from ("prior: half peak at ...")
        source = s.source if s.source != "prior" else f"prior: {s.reason.removeprefix('prior: ')}"
        if s.source == MISFIT:
            source = "fitted, windows misfit (below)"
        lines.append(f"  {name:<30} {s.value:>11.4g} {s.unit:<9} {interval:<25} {source}")
    held = len(fit.status) - len(calibrated.pins)
    lines.append(f"  ({held} other parameters keep their priors: no workload is designed for them)")
    lines += ["", "Fit residuals (predicted / measured - 1):"]
    for label, t, e in zip(
        fit.labels, fit.time_rel_residuals, fit.energy_rel_residuals, strict=True
    ):
        time = f"{t:+7.2%}" if math.isfinite(t) else f"{'-':>7}"  # idle: no modelled time
        lines.append(f"  {label:<28} time {time}  energy {e:+7.2%}")
    bad = calibrated.misfit()
    if bad:
        lines += ["", "Fitted on windows that misfit (their intervals widened by the misfit):"]
        lines += [f"  {name}: {fit.status[name].reason}" for name in bad]
    missing = calibrated.not_identified()
    if missing:
        lines += ["", "Not identified (kept their priors): " + ", ".join(missing)]
    if calibrated.plan.dropped:
        lines += [
            "",
            "Not measured: " + "; ".join(f"{n} ({r})" for n, r in calibrated.plan.dropped),
        ]
    return "\n".join(lines)


def load_params(path: str | os.PathLike[str]) -> PhysicalParams:
    """The physical parameters of a calibration file written by :func:`write_calibration`.

    Raises:
        CalibrationError: the file is missing, not a calibration, or has no physical model.
    """
    from lightning_to_energy.calibration import Calibration

    p = Path(path)
    try:
        calibration = Calibration.read(p)
        if calibration.physical is None:
            raise ValueError("it holds no physical step model (a regression-only calibration)")
        return PhysicalModel.from_dict(calibration.physical).params
    except (OSError, ValueError) as exc:
        raise CalibrationError(
            f"expected a calibration file written by `lightning-to-energy calibrate`, found "
            f"{p}: {exc}. Fix: pass the --out file of a calibrate run."
        ) from exc
