"""Report assembly: the run's windows, totals, TO breakdowns and notes into one report."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from lightning_to_energy.counting import ProfileSum, StepProfile
from lightning_to_energy.hardware.roofline import module_time_shares
from lightning_to_energy.hardware.specs import HardwareSpec
from lightning_to_energy.model.regression import Accuracy, OnlineEnergyModel
from lightning_to_energy.reporting.records import (
    EnergyReport,
    Forecast,
    LoopTotals,
    ModuleEnergy,
    PriorRecord,
    SensorInfo,
    WindowRecord,
)
from lightning_to_energy.sensors.base import Sensor
from lightning_to_energy.tracking.ledger import loop_totals

__all__ = [
    "Breakdown",
    "accuracy_dict",
    "assemble_report",
    "breakdown_sums",
    "sensor_infos",
    "static_per_step",
    "step_breakdown",
    "top_modules",
    "train_step_energy",
]

Breakdown = tuple[
    dict[str, float],
    dict[str, float],
    dict[str, float],
    tuple[ModuleEnergy, ...],
    dict[str, int],
]


def _key(k: Any) -> str:
    return str(getattr(k, "value", k))


def accuracy_dict(acc: Accuracy) -> dict[str, float]:
    """The report's accuracy figures: the numeric fields of ``acc``."""
    return {
        k: float(v)
        for k, v in acc.to_dict().items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def breakdown_sums(run_steps: ProfileSum, restored: Mapping[str, Any]) -> dict[str, Any]:
    """TO sums by class, format, phase and module, and the steps behind them: this
    process's steps (``run_steps``) plus those ``restored`` from a checkpoint."""
    sums: dict[str, Any] = {
        "steps": float(restored.get("steps", 0.0)),
        **{
            k: dict(restored.get(k, {})) for k in ("by_class", "by_format", "by_phase", "by_module")
        },
    }
    if run_steps.steps:
        total = run_steps.total()
        sums["steps"] += float(run_steps.steps)
        mine = {
            "by_class": {_key(k): float(v) for k, v in total.tos_by_class.items()},
            "by_format": {_key(k): float(v) for k, v in total.tos_by_format.items()},
            "by_phase": {k: float(t.tos) for k, t in total.by_phase.items()},
            "by_module": {k: float(m.tos) for k, m in total.by_module.items()},
        }
        for group, values in mine.items():
            for k, v in values.items():
                sums[group][k] = sums[group].get(k, 0.0) + v
    return sums


def step_breakdown(
    sums: Mapping[str, Any],
    profiles: Iterable[StepProfile],
    per_step_j: float | None,
    static_j: float | None = None,
    time_shares: Mapping[str, float] | None = None,
) -> Breakdown:
    """TOs by class, format, phase and module over every counted-or-replayed step, and the
    calls per step of ops without a formula (from the ``profiles`` as counted)."""
    steps = sums["steps"]
    if steps == 0:
        return {}, {}, {}, (), {}
    by_module = sums["by_module"]
    unmodelled: dict[str, int] = {}
    for p in profiles:
        for name, calls in p.unmodelled_ops.items():
            unmodelled[name] = max(unmodelled.get(name, 0), int(calls))
    total_tos = math.fsum(by_module.values()) or 1.0
    modules = top_modules(by_module, total_tos, steps, per_step_j, static_j, time_shares)
    return sums["by_class"], sums["by_format"], sums["by_phase"], modules, unmodelled


def top_modules(
    by_module: Mapping[str, float],
    total: float,
    steps: float,
    per_step_j: float | None,
    static_j: float | None = None,
    time_shares: Mapping[str, float] | None = None,
) -> tuple[ModuleEnergy, ...]:
    """The ten modules with the most TOs, per step, with their share of the predicted joules.

    ``per_step_j`` is the predicted dynamic (duration-free) energy of one train step, None
    without a prediction. NB: a module's dynamic joules per step are its share of the step's
    TOs times it; its static joules are its share of the step's roofline time
    (``time_shares``, see :func:`~lightning_to_energy.hardware.roofline.module_time_shares`)
    times the static energy of a train step (``static_j``).
    """
    steps = max(steps, 1.0)
    top = sorted(by_module.items(), key=lambda kv: kv[1], reverse=True)[:10]
    return tuple(
        ModuleEnergy(
            name=name,
            tos=tos / steps,
            share=tos / total,
            predicted_j=None if per_step_j is None else per_step_j * tos / total,
            time_share=time_shares.get(name, 0.0) if time_shares else None,
            static_j=None if static_j is None else static_j * (time_shares or {}).get(name, 0.0),
        )
        for name, tos in top
    )


def assemble_report(
    windows: tuple[WindowRecord, ...],
    archived: Mapping[str, LoopTotals],
    *,
    world_size: int,
    warnings: Sequence[str],
    max_windows: int,
    roofline_note: str | None,
    changed_signatures: int,
    hardware: dict[str, str],
    sensors: Sequence[SensorInfo],
    skipped_sensors: Mapping[str, str],
    model: OnlineEnergyModel,
    breakdown: Breakdown,
    forecast: Forecast | None,
    run_id: str,
    prior: PriorRecord | None,
    static_note: str = "",
    interrupted: str | None = None,
) -> EnergyReport:
    """The report over ``windows`` and the ``archived`` per-loop totals of windows folded
    out of the list, with the notes that explain what it leaves out."""
    loops = loop_totals(windows, archived, world_size)
    tos_by_class, tos_by_format, tos_by_phase, modules, unmodelled = breakdown
    notes = list(warnings)
    folded = sum(t.windows for t in archived.values())
    if folded:
        notes.append(
            f"{folded} earlier window(s) are folded into the loop totals (max_windows="
            f"{max_windows}); the window table and plot show the later ones."
        )
    if roofline_note is not None:
        notes.append(roofline_note)
    if interrupted is not None:
        notes.insert(
            0,
            f"interrupted ({interrupted}): a partial report of what was measured "
            "until then; the window open at the interruption is kept but not fitted.",
        )
    if changed_signatures:
        notes.append(
            f"{changed_signatures} step signature(s) did different work when re-counted (a "
            "data-dependent path); replays use the latest count. Lower recheck_every to "
            "re-count more often."
        )
    return EnergyReport(
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        hardware=hardware,
        sensors=tuple(sensors),
        skipped_sensors=dict(skipped_sensors),
        windows=windows,
        loops=loops,
        measured_j=sum(t.measured_j for t in loops.values()),
        predicted_j=sum(t.predicted_j for t in loops.values()),
        accuracy=accuracy_dict(model.accuracy()),
        coefficients=dict(model.coefficients),
        coefficient_units=dict(model.units()),
        identifiable=bool(getattr(model, "identifiable", True)),
        tos_by_class=tos_by_class,
        tos_by_format=tos_by_format,
        tos_by_phase=tos_by_phase,
        top_modules=modules,
        unmodelled_ops=unmodelled,
        warnings=tuple(notes),
        forecast=forecast,
        world_size=world_size,
        run_id=run_id,
        prior=prior,
        static_note=static_note,
        interrupted=interrupted,
    )


def static_per_step(
    model: OnlineEnergyModel,
    profile: StepProfile,
    roofline: HardwareSpec | None,
    dynamic: Mapping[str, float],
    step_s: float | None,
) -> tuple[float | None, Mapping[str, float], str]:
    """A train step's predicted static joules, each module's share of its roofline time, and
    why either is missing (``""`` when both are there).

    Args:
        model: the energy model.
        profile: the last train step's profile.
        roofline: this hardware's spec, None without one.
        dynamic: the step's features with ``duration_s`` 0 (its duration-free prediction).
        step_s: the mean train step's seconds, None before a train window closed.
    """
    if "duration_s" not in model.feature_names:
        return None, {}, "the model has no duration_s term, so no static energy"
    if roofline is None:
        return (
            None,
            {},
            "no roofline for this hardware, so no time share per layer (see "
            "docs/roofline.md to register one)",
        )
    shares = module_time_shares(profile, roofline)
    if not shares or step_s is None:
        return None, {}, "the train step has no roofline time to share out"
    whole = model.predict({**dynamic, "duration_s": step_s})
    base = model.predict(dynamic)
    if whole.energy_j is None or base.energy_j is None or whole.source == "none":
        return None, {}, "no prediction yet"
    return max(whole.energy_j - base.energy_j, 0.0), shares, ""


def sensor_infos(sensors: Sequence[Sensor]) -> list[SensorInfo]:
    """``sensors`` as the report lists them."""
    return [
        SensorInfo(
            domain=s.domain,
            kind=s.kind.value,
            source=s.source,
            update_period_s=float(s.update_period_s),
            min_window_s=float(s.min_window_s),
        )
        for s in sensors
    ]


def train_step_energy(
    model: OnlineEnergyModel,
    profile: StepProfile | None,
    features: Mapping[str, float] | None,
    roofline: HardwareSpec | None,
    step_s: float | None,
    *,
    attribute_static: bool,
) -> tuple[float | None, float | None, Mapping[str, float], str]:
    """A train step's predicted dynamic (duration-free) joules, its static joules, its modules'
    roofline time shares, and why static energy is not attributed (``""`` when it is).

    Args:
        model: the energy model.
        profile: the last train step's profile, None before any train step.
        features: that step's features without ``duration_s``.
        roofline: this hardware's spec, None without one.
        step_s: the mean train step's seconds, None before a train window closed.
        attribute_static: whether the report attributes static energy to modules at all.
    """
    if profile is None or features is None:
        return None, None, {}, ""
    dynamic = {"duration_s": 0.0, **features}
    pred = model.predict(dynamic)
    dynamic_j = pred.energy_j if pred.source != "none" else None
    if not attribute_static:
        return dynamic_j, None, {}, ""
    static_j, shares, note = static_per_step(model, profile, roofline, dynamic, step_s)
    return dynamic_j, static_j, shares, note
