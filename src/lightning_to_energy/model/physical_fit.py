"""The physical model's fit: samples, per-parameter status, staged bounded least squares."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from lightning_to_energy.counting.profile import PHASES, StepProfile
from lightning_to_energy.model.physical import (
    CONV_KEYED,
    ENERGY_PREFIXES,
    TIME_PREFIXES,
    UNITS,
    PhysicalParams,
    StepDesign,
    key_name,
    matrix_curves,
    optimizer_kernels,
    prefix_of,
)

__all__ = [
    "MEASURED",
    "ParamStatus",
    "PhysicalFit",
    "Sample",
    "calibrated_range",
    "calibrated_range_fields",
    "exercised",
    "fit_physical",
]


# --- fitting -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One measured step: its counted profile, measured joules and seconds.

    ``energy_only``: the step's duration is not a modelled time (a host sleep: an idle
    window), so it enters the energy fit only, at its measured time; its time residual is
    NaN.
    """

    profile: StepProfile
    energy_j: float
    time_s: float
    label: str = ""
    energy_only: bool = False


@dataclass(frozen=True)
class ParamStatus:
    """Where one parameter's value comes from.

    Args:
        name: flat name (``"peak_flop_s[matrix/tf32]"``).
        value: the value used.
        unit: its SI unit.
        low, high: its physical range.
        source: ``"fitted"`` (with ``ci95``), ``"prior"`` (with ``reason``) or ``"at bound"``.
        ci95: 95 % confidence interval of a fitted value (from the fit's Jacobian).
        reason: why a prior was kept, or where it comes from.
    """

    name: str
    value: float
    unit: str
    low: float
    high: float
    source: str
    ci95: tuple[float, float] | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "unit": self.unit,
            "range": [self.low, self.high],
            "source": self.source,
            "ci95": list(self.ci95) if self.ci95 else None,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class PhysicalFit:
    """The result of :func:`fit_physical`.

    Args:
        params: the fitted parameters (priors where the samples do not pin them).
        status: per flat parameter name, where its value comes from.
        time_rel_residuals: predicted / measured time - 1, per sample (NaN for an
            energy-only sample).
        energy_rel_residuals: predicted (at the predicted time; at the measured time for an
            energy-only sample) / measured energy - 1.
        labels: the samples' labels.
        used: the flat names the samples' steps depend on (:func:`exercised`): the fitted
            parameters and the priors that enter their predictions. The others (formats,
            units and curves no sample ran) keep their priors for other steps only.
    """

    params: PhysicalParams
    status: Mapping[str, ParamStatus]
    time_rel_residuals: tuple[float, ...]
    energy_rel_residuals: tuple[float, ...]
    labels: tuple[str, ...]
    used: frozenset[str]

    def fitted(self) -> list[str]:
        """Names of the parameters the samples pin."""
        return [n for n, s in self.status.items() if s.source == "fitted"]

    def unused(self) -> list[str]:
        """Names of the parameters no sample's step depends on (sorted): priors kept for
        steps that run other formats, units or curves."""
        return sorted(n for n in self.status if n not in self.used)


MEASURED = frozenset({"base_w", "j_per_byte"})
"""Parameters pinned by direct measurements, held at their prior by default: base power (a
CUDA context attached, idle) and energy per byte (the draw of memory-bound steps). A fit over
training steps alone trades them against busy power and energy per FLOP (issue 11)."""


def _vector_rates(names: Collection[str]) -> set[str]:
    return {n for n in names if prefix_of(n) in ("peak_flop_s", "flop_half") and "[vector/" in n}


def exercised(samples: Iterable[Sample]) -> set[str]:
    """Flat names of the parameters some sample's step depends on.

    As :class:`StepDesign` splits the work: every (unit, format) with work uses its rate and
    energy per FLOP; its matmul work (and all vector work) runs on the matmul curve
    (``flop_half``), a convolution's matrix work on the convolution curve (``conv_share``,
    ``conv_flop_half``), so a format that only ran matmuls leaves its convolution curve unused.
    """
    design = StepDesign.build([s.profile for s in samples])
    names = {"base_w", "busy_w", "ramp_share", "host_step_s", "launch_s"}
    used = design.flops.sum(axis=0) > 0
    for key, conv, u in zip(design.keys, design.conv, used, strict=True):
        if u:
            curve = CONV_KEYED if conv else ("flop_half",)
            names |= {f"{p}[{key_name(key)}]" for p in ("peak_flop_s", "j_per_flop", *curve)}
    if design.step_bytes.sum() > 0:
        names |= {"bandwidth_b_s", "bytes_half", "j_per_byte"}
    for j, phase in enumerate(PHASES):
        if design.phase_kernels[:, j].sum() > 0:
            names.add(f"dispatch_s[{phase}]")
    return names


def fit_physical(
    samples: Sequence[Sample],
    prior: PhysicalParams,
    *,
    free: Collection[str] | None = None,
    keep_at_bound: bool = False,
) -> PhysicalFit:
    """Fit the free parameters to measured steps by bounded least squares on relative error.

    Time parameters are fitted on measured times first, then energy parameters on measured
    energies at the measured times. Parameters are fitted in log space inside their ranges.
    A free parameter the samples do not pin (no sample exercises it, its 95 % interval is wider
    than its range, or it runs to a bound unless ``keep_at_bound``) keeps its prior, and its
    status says why; the rest are refitted without it.

    Args:
        samples: the measured steps (at least 2).
        prior: starting values, ranges and notes (:func:`prior_for`).
        free: flat names to fit; default every parameter a sample exercises, except those
            measured directly (:data:`MEASURED`) and the vector units' rates and ramps
            (element-wise work is memory-bound: a training step cannot pin them, and a fit
            would use a rarely-run format's ramp as a per-step constant).
        keep_at_bound: keep a value that ran to its bound (status ``"at bound"``) instead of
            reverting it to its prior.

    Raises:
        ValueError: fewer than 2 samples, none with a modelled time (all energy-only), a
            non-positive measurement, or an unknown name.
    """
    if len(samples) < 2:
        raise ValueError(
            f"fit_physical: expected at least 2 samples; found {len(samples)}; "
            "fix: measure more steps"
        )
    bad = [s.label or i for i, s in enumerate(samples) if not (s.energy_j > 0 and s.time_s > 0)]
    if bad:
        raise ValueError(
            f"fit_physical: expected positive energy_j and time_s in every sample; found "
            f"others in {bad}; fix: drop those samples"
        )
    flat = prior.flat()
    used = exercised(samples)
    wanted = set(used - MEASURED - _vector_rates(used) if free is None else free)
    unknown = sorted(wanted - set(flat))
    if unknown:
        raise ValueError(
            f"fit_physical: expected free names among {sorted(flat)}; found {unknown}; "
            "fix: use PhysicalParams.flat() names"
        )
    design = StepDesign.build([s.profile for s in samples])
    t_meas = np.array([s.time_s for s in samples])
    e_meas = np.array([s.energy_j for s in samples])
    timed = np.array([not s.energy_only for s in samples])
    if timed.sum() < 1:
        raise ValueError(
            "fit_physical: expected at least 1 sample with a modelled time; found only "
            "energy-only samples; fix: measure a step that is not a host sleep"
        )
    status: dict[str, ParamStatus] = {}
    for name, value in flat.items():
        lo, hi = prior.range_of(name)
        reason = prior.notes.get(name, "stated prior")
        if name in wanted and name not in used:
            reason = f"no sample exercises it; {reason}"
        elif name not in wanted and name in MEASURED and name in used:
            reason = f"measured, held at its prior; {reason}"
        elif name not in wanted:
            reason = f"held fixed; {reason}"
        status[name] = ParamStatus(
            name, value, UNITS[prefix_of(name)], lo, hi, "prior", None, reason
        )

    params = prior
    time_free = [n for n in sorted(wanted & used) if prefix_of(n) in TIME_PREFIXES]
    energy_free = [n for n in sorted(wanted & used) if prefix_of(n) in ENERGY_PREFIXES]

    def time_res(v: dict[str, Any]) -> np.ndarray:
        device, host = design.times(v)
        return (np.maximum(device, host) / t_meas - 1.0)[timed]

    def energy_res(v: dict[str, Any]) -> np.ndarray:
        device, _ = design.times(v)
        e = v["base_w"] * t_meas + design.work_j(v) + v["busy_w"] * np.minimum(device, t_meas)
        return e / e_meas - 1.0

    params = _fit_stage(params, design, time_free, time_res, status, keep_at_bound)
    params = _fit_stage(params, design, energy_free, energy_res, status, keep_at_bound)
    device, host = design.times(params)
    t_pred = np.maximum(device, host)
    # an energy-only sample's energy at its measured time (its time is no prediction)
    t_pred = np.where(timed, t_pred, t_meas)
    e_pred = (
        params.base_w * t_pred + design.work_j(params) + params.busy_w * np.minimum(device, t_pred)
    )
    return PhysicalFit(
        params=params,
        status=status,
        time_rel_residuals=tuple(
            float(x) if t else math.nan for x, t in zip(t_pred / t_meas - 1, timed, strict=True)
        ),
        energy_rel_residuals=tuple(float(x) for x in e_pred / e_meas - 1),
        labels=tuple(s.label for s in samples),
        used=frozenset(used),
    )


def _fit_stage(
    params: PhysicalParams,
    design: StepDesign,
    names: list[str],
    residuals: Any,
    status: dict[str, ParamStatus],
    keep_at_bound: bool,
) -> PhysicalParams:
    """Fit ``names`` (log space, bounded), dropping unpinned ones until the rest are pinned."""
    from scipy.optimize import least_squares

    prior = params
    free = list(names)
    for _ in range(len(names) + 1):
        if not free:
            return prior
        lows = np.log([max(prior.range_of(n)[0], 1e-300) for n in free])
        highs = np.log([prior.range_of(n)[1] for n in free])
        start = np.clip(
            np.log([max(prior.flat()[n], 1e-300) for n in free]), lows + 1e-9, highs - 1e-9
        )

        base = design.vec(prior)

        def fun(x: np.ndarray, free: list[str] = free, base: dict[str, Any] = base) -> np.ndarray:
            v = {k: a.copy() if isinstance(a, np.ndarray) else a for k, a in base.items()}
            for name, value in zip(free, np.exp(x), strict=True):
                design.set(v, name, float(value))
            return residuals(v)

        fit = least_squares(fun, start, bounds=(lows, highs), x_scale=1.0, method="trf")
        n, k = len(fit.fun), len(free)
        dof = max(n - k, 1)
        s2 = float(fit.fun @ fit.fun) / dof
        jac = fit.jac
        try:
            cov = np.linalg.pinv(jac.T @ jac) * s2
            sd = np.sqrt(np.clip(np.diag(cov), 0, None))
            # Directions the samples cannot see (a singular Jacobian, e.g. a rate and a ramp
            # pinned by one benchmark): pinv hides them, so mark their parameters unpinned.
            _, sv, vt = np.linalg.svd(jac, full_matrices=True)
            sv = np.concatenate([sv, np.zeros(k - len(sv))])
            null = vt[sv <= 1e-8 * max(float(sv.max()), 1e-300)]
            if len(null):
                sd[(null**2).sum(axis=0) > 1e-2] = np.inf
        except np.linalg.LinAlgError:
            sd = np.full(k, np.inf)
        drop: list[tuple[str, str, str]] = []
        for i, name in enumerate(free):
            lo, hi = lows[i], highs[i]
            width = 2 * 1.96 * sd[i]
            if not np.any(jac[:, i]):
                drop.append((name, "prior", "no sample's residual depends on it"))
            elif not np.isfinite(width) or width > hi - lo:
                drop.append(
                    (
                        name,
                        "prior",
                        f"the data do not pin it (95 % interval x{math.exp(min(width, 700)):.3g}"
                        " is wider than its range)",
                    )
                )
            elif _at_bound(fit.x[i], lo, hi) and not keep_at_bound:
                bound = "upper" if hi - fit.x[i] < fit.x[i] - lo else "lower"
                drop.append(
                    (name, "prior", f"the fit ran to its {bound} bound ({math.exp(fit.x[i]):.4g})")
                )
        if drop:
            # Drop what nothing depends on or what ran to a bound, else the least pinned one,
            # and refit: the others may be pinned without it.
            sure = [d for d in drop if "interval" not in d[2]]
            if not sure:
                sure = [
                    max(drop, key=lambda d: float(np.nan_to_num(sd[free.index(d[0])], nan=np.inf)))
                ]
            for name, source, why in sure:
                old = status[name]
                status[name] = replace(
                    old,
                    source=source,
                    reason=f"{why}; kept the prior ({old.reason.removeprefix('prior: ')})",
                )
                free.remove(name)
            continue
        values = dict(zip(free, np.exp(fit.x), strict=True))
        for i, name in enumerate(free):
            lo, hi = lows[i], highs[i]
            at_bound = _at_bound(fit.x[i], lo, hi)
            status[name] = replace(
                status[name],
                value=float(values[name]),
                source="at bound" if at_bound else "fitted",
                ci95=(
                    float(math.exp(fit.x[i] - 1.96 * sd[i])),
                    float(math.exp(fit.x[i] + 1.96 * sd[i])),
                ),
                reason="fitted on measured steps (95 % interval from the Jacobian)",
            )
        return prior.with_values(values, {n: "fitted" for n in free})
    return prior


def _at_bound(x: float, low: float, high: float) -> bool:
    """Whether a log-space value sits on a bound (within 0.1 %, or 0.1 % of a narrow range)."""
    tol = min(1e-3, 1e-3 * (high - low))
    return bool(x - low < tol or high - x < tol)


def calibrated_range_fields(samples: Sequence[Sample]) -> dict[str, Any]:
    """The calibrated range of ``samples`` as :class:`PhysicalModel`'s fields: ``formats``,
    ``flops_range``, ``kernels_range`` (:func:`calibrated_range`), ``curves`` (the matrix
    curves they ran, :func:`matrix_curves`) and ``optimizer_kernels_range`` (optimizer-phase
    kernels per step, :func:`optimizer_kernels`)."""
    formats, flops_range, kernels_range = calibrated_range(samples)
    opt = [optimizer_kernels(s.profile) for s in samples]
    return {
        "formats": formats,
        "flops_range": flops_range,
        "kernels_range": kernels_range,
        "curves": tuple(sorted(set().union(*(matrix_curves(s.profile) for s in samples)))),
        "optimizer_kernels_range": (min(opt), max(opt)),
    }


def calibrated_range(
    samples: Sequence[Sample],
) -> tuple[tuple[str, ...], tuple[float, float], tuple[float, float]]:
    """The (unit, format) keys with work, and the FLOPs and kernel ranges, of ``samples``."""
    formats = sorted(
        {
            key_name((unit, fmt))
            for s in samples
            for cost, _ in s.profile.op_costs
            for (_, fmt, unit), n in cost.ops.items()
            if n > 0
        }
    )
    flops = [float(s.profile.flops) for s in samples]
    kernels = [float(s.profile.kernels) for s in samples]
    return tuple(formats), (min(flops), max(flops)), (min(kernels), max(kernels))
