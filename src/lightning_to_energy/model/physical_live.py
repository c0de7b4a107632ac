"""The physical step model as the online regression's prior: J/TO, J/B and W for one step's mix.

The live callback fits a linear model over window totals (:mod:`lightning_to_energy.model.
regression`: ``duration_s``, TOs by unit and format, ``bytes``, ``kernels``). The physical
model (:mod:`lightning_to_energy.model.physical`) is not linear in those totals, but for one
counted step it is: at a measured step time ``t`` (not shorter than the modelled device time)

    energy_at(profile, params, t) = base_w x t + sum_k W_k + bytes x j_per_byte + busy_w x D

with ``W_k`` the work energy of the FLOPs of (unit, format) ``k`` (their ramps included) and
``D`` the modelled device time. :func:`live_prior` writes that as coefficients of the linear
model's features, so the regression starts where the physical model is and refines it window
by window. Nothing here knows about the tracker: it sees a profile, its features and params.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from lightning_to_energy.counting.cost_model import NumberFormat, Unit
from lightning_to_energy.counting.profile import StepProfile
from lightning_to_energy.model.physical import PhysicalParams, energy_at, parse_key, predict_step
from lightning_to_energy.model.regression import DEFAULT_PRIOR_STRENGTH, Prior

__all__ = [
    "CALIBRATED_STRENGTH_MAX",
    "DATASHEET_STRENGTH",
    "TO_PARTITIONS",
    "WINDOW_REL_SD",
    "LivePrior",
    "calibrated_strength",
    "live_prior",
]

_FULL = frozenset({NumberFormat.FP64, NumberFormat.FP32})
KeyTest = Callable[[Unit, NumberFormat], bool]

TO_PARTITIONS: tuple[Mapping[str, KeyTest], ...] = (
    {  # the default FEATURES: as StepProfile.tos_matrix_full / _reduced / tos_vector split them
        "tos_matrix_full": lambda u, f: u is Unit.MATRIX and f in _FULL,
        "tos_matrix_reduced": lambda u, f: u is Unit.MATRIX and f not in _FULL,
        "tos_vector": lambda u, f: u is Unit.VECTOR,
    },
    {  # the finer split (tos_matrix_tf32 + tos_matrix_low == tos_matrix_reduced)
        "tos_matrix_full": lambda u, f: u is Unit.MATRIX and f in _FULL,
        "tos_matrix_tf32": lambda u, f: u is Unit.MATRIX and f is NumberFormat.TF32,
        "tos_matrix_low": lambda u, f: u is Unit.MATRIX and f not in _FULL | {NumberFormat.TF32},
        "tos_vector": lambda u, f: u is Unit.VECTOR,
    },
    {"tos": lambda u, f: True},  # one TO feature for every unit and format
)
"""Sets of TO features that split a step's (unit, format) work without overlap, finest first:
the first whose features are all among the run's carries the work energy."""

DATASHEET_STRENGTH = DEFAULT_PRIOR_STRENGTH
"""Strength of a prior from datasheets (``prior_for``): as weak as the regression's default,
so the first windows' data decide (its energies per FLOP are H100 microbenchmarks scaled by
transistor ratios, its rates 70 % of a datasheet: errors of tens of percent are expected)."""

WINDOW_REL_SD = 0.044
"""Relative error of one measured window (>= 2 s), for weighing a fitted prior against data:
the same H100 configuration measured twice differs by 4.4 % on average (issue 11)."""

CALIBRATED_STRENGTH_MAX = 1.0
"""A fitted prior counts at most as one window: a calibration on other models never outweighs
this run's own measurements for long."""

_Z90 = 1.6448536269514722  # the standard normal's 95th percentile: a 90 % interval is +/- z sd


def calibrated_strength(energy_log_halfwidth: float) -> float:
    """The strength of a fitted physical model's prior, in windows' worth of evidence.

    A prior whose relative error has standard deviation ``s_p`` weighs like ``(s_w / s_p)^2``
    windows of relative error ``s_w`` (:data:`WINDOW_REL_SD`): the ridge term of the regression
    is one window's squared relative error per unit of strength (``docs/regression.md``).
    ``s_p`` is read off the calibration's held-out 90 % half width in log space (``q = z s_p``).
    E.g. the built-in H100 calibration's ``q`` of 0.234 gives ``(0.044 / (0.234 / 1.645))^2
    = 0.096``: the first window already outweighs the prior about 10 to 1. Bounded below by
    :data:`DATASHEET_STRENGTH` and above by :data:`CALIBRATED_STRENGTH_MAX`.
    """
    q = float(energy_log_halfwidth)
    if not math.isfinite(q) or q <= 0:
        return CALIBRATED_STRENGTH_MAX  # no stated error: trust it as one window, no more
    strength = (WINDOW_REL_SD * _Z90 / q) ** 2
    return min(max(strength, DATASHEET_STRENGTH), CALIBRATED_STRENGTH_MAX)


@dataclass(frozen=True)
class LivePrior:
    """The physical model's prior for a linear model's features, and what it left out.

    Attributes:
        prior: the coefficients (W, J/TO, J/B, J/kernel) and strength.
        step_j: the physical model's energy of one step at its modelled time, J (for a note).
        device_s: the modelled device time of one step, s (the busy term's, see
            :func:`live_prior`).
        unmapped: the run's features the mapping has no term for (their coefficient is 0).
    """

    prior: Prior
    step_j: float
    device_s: float
    unmapped: tuple[str, ...]


def live_prior(
    params: PhysicalParams,
    profile: StepProfile,
    step_features: Mapping[str, float],
    feature_names: Sequence[str],
    *,
    strength: float | None = None,
) -> LivePrior:
    """Prior coefficients such that ``prior . x(step at time t) == energy_at(profile, params,
    t).energy_j``.

    ``x(step at time t)`` is ``{"duration_s": t, **step_features}``: the features of one step
    as the tracker sums them into a window. The coefficients:

    - ``duration_s``: ``base_w`` (W);
    - ``bytes``: the model's bytes energy over the step's bytes (``j_per_byte``: the tracker's
      ``bytes`` feature and the model count the same bytes read and written);
    - the TO features of the first :data:`TO_PARTITIONS` set the run has: the work energy of
      the FLOPs of each (unit, format) with their ramps, summed per TO feature, plus the busy
      term ``busy_w x D`` folded onto them in proportion to that work (onto ``bytes`` when the
      step has no FLOPs), divided by the step's TOs of that feature (J/TO for this step's
      mix);
    - ``kernels`` and any other feature: 0 (listed in :attr:`LivePrior.unmapped`, except
      ``kernels``, whose energy the physical model carries in the ramps and device time).

    The mapping is exact for a window of steps of this one signature, at any measured step time
    ``t >= D`` (the busy term is ``busy_w x min(D, t)``: a step measured faster than its
    modelled device time is overpredicted by ``busy_w x (D - t)``). A window mixing signatures
    (validation steps, a second input shape) is predicted with the same coefficients: an
    approximation, as good as its steps' mix of formats resembles this one's.

    Args:
        params: the physical model's parameters.
        profile: one counted step (with ``op_costs``).
        step_features: that step's features by name (``duration_s`` aside), as the tracker
            computes them from ``profile``.
        feature_names: the linear model's features.
        strength: the prior's strength (None: the model's default).

    Raises:
        ValueError: no ``duration_s`` feature, no set of TO features that covers the step's
            work, work on a TO feature whose count is 0, or a profile without ``op_costs``.
        KeyError: the step runs a (unit, format) the params have no rate for.
    """
    names = tuple(feature_names)
    if "duration_s" not in names:
        raise ValueError(
            f"physical prior: expected a 'duration_s' feature (base power x time), found "
            f"{list(names)}; fix: add 'duration_s' to the features"
        )
    partition = next((p for p in TO_PARTITIONS if set(p) <= set(names)), None)
    if partition is None:
        raise ValueError(
            f"physical prior: expected TO features that split every unit and format, one of "
            f"{[list(p) for p in TO_PARTITIONS]}; found {list(names)}; fix: use the default "
            "FEATURES"
        )
    step = predict_step(profile, params)
    # The work of each TO feature: the model's work energy with every other (unit, format)'s
    # J/FLOP and the J/B set to 0 (energy_at at t = 0 J of base and busy power).
    flat = params.flat()
    jpf_names = [n for n in flat if n.startswith("j_per_flop[")]
    group_j: dict[str, float] = {}
    for feature, covers in partition.items():
        off = {n: 0.0 for n in jpf_names if not covers(*parse_key(n[len("j_per_flop[") : -1]))}
        group_j[feature] = energy_at(
            profile, params.with_values({**off, "j_per_byte": 0.0}), 0.0
        ).work_j
    flops_j = math.fsum(group_j.values())
    # and the bytes' (every J/FLOP set to 0): computed, not a difference that rounds below 0
    no_flops = params.with_values(dict.fromkeys(jpf_names, 0.0))
    bytes_j = energy_at(profile, no_flops, 0.0).work_j
    busy_j = params.busy_w * step.device_s
    coefficients: dict[str, float] = {"duration_s": params.base_w}
    n_bytes = float(step_features.get("bytes", 0.0))
    if "bytes" in names:
        coefficients["bytes"] = bytes_j / n_bytes if n_bytes > 0 else params.j_per_byte
    elif bytes_j > 0:
        raise ValueError(
            f"physical prior: expected a 'bytes' feature for the step's {bytes_j:.3g} J of "
            f"memory traffic; found features {list(names)}; fix: add 'bytes'"
        )
    if flops_j <= 0 and busy_j > 0:
        if "bytes" not in names or n_bytes <= 0:
            raise ValueError(
                "physical prior: expected FLOPs or bytes to carry the step's busy energy "
                f"({busy_j:.3g} J); found neither; fix: count the step with op_costs"
            )
        coefficients["bytes"] += busy_j / n_bytes
    for feature, work_j in group_j.items():
        tos = float(step_features.get(feature, 0.0))
        energy_j = work_j * (1.0 + busy_j / flops_j) if flops_j > 0 else 0.0
        if energy_j > 0 and tos <= 0:
            raise ValueError(
                f"physical prior: expected TOs on {feature!r} for its {energy_j:.3g} J of work; "
                "found 0; fix: count the step with the cost model the tracker uses"
            )
        coefficients[feature] = energy_j / tos if tos > 0 else 0.0
    mapped = {"duration_s", "bytes", "kernels", *partition}
    unmapped = tuple(n for n in names if n not in mapped)
    return LivePrior(
        prior=Prior({n: coefficients.get(n, 0.0) for n in names}, strength=strength),
        step_j=step.energy_j,
        device_s=step.device_s,
        unmapped=unmapped,
    )
