"""Predict, then fit: a closed window's record, predicted before its measurement is seen."""

from __future__ import annotations

import math

from lightning_to_energy.model.regression import OnlineEnergyModel, Prediction
from lightning_to_energy.reporting.records import (
    FLAG_BOUNDARY,
    FLAG_ESTIMATE,
    FLAG_FAULT,
    FLAG_INTERRUPTED,
    FLAG_OUTLIER,
    FLAG_SHORT,
    FLAG_UNMEASURED,
    WindowRecord,
    fit_worthy,
)
from lightning_to_energy.sensors.base import ImplausibleReadingWarning, SensorKind
from lightning_to_energy.sensors.meter import Measurement
from lightning_to_energy.tracking.ledger import OpenWindow
from lightning_to_energy.tracking.notes import Notes

__all__ = ["record_window"]


def record_window(
    window: OpenWindow,
    measurement: Measurement | None,
    model: OnlineEnergyModel,
    *,
    duration_s: float,
    profile_features: tuple[str, ...],
    index: int,
    start_s: float,
    rank: int,
    boundary: bool,
    fork: bool,
    notes: Notes,
    interrupted: bool = False,
) -> tuple[WindowRecord, OnlineEnergyModel]:
    """The record of ``window`` measured as ``measurement``, and the model after it: the
    window is predicted before its measurement is seen, then fitted when fit-worthy, into
    ``model``, or with ``fork`` into a copy of it (``model`` is left as it is).

    Args:
        window: the window closed (or snapshotted for a checkpoint).
        measurement: its joules, None when unmeasured.
        model: the live model.
        duration_s: the window's seconds.
        profile_features: the regression's features other than ``duration_s``, in the order
            of the window's sums.
        index: the window's index in the run.
        start_s: its start, in seconds since the run began.
        rank: the process's rank.
        boundary: closed early at a loop or epoch boundary.
        fork: fit a copy of ``model`` (a checkpoint's snapshot of the open window).
        notes: where a failing sensor or fit is warned about.
        interrupted: the run ended by an exception while this window was open.
    """
    n = len(profile_features)
    features = {"duration_s": duration_s}
    features.update(zip(profile_features, window.sums[:n], strict=True))
    if math.isfinite(window.sums[n + 2]):
        features["roofline_s"] = window.sums[n + 2]
    flags: list[str] = []
    if boundary:
        flags.append(FLAG_BOUNDARY)
    energy: dict[str, float] = {}
    measured: float | None = None
    if measurement is not None:
        energy = dict(measurement.energy_j)
        measured = measurement.total_j if energy else None
        if measurement.short:
            flags.append(FLAG_SHORT)
        if measurement.faults:
            flags.append(FLAG_FAULT)
            for domain, text in measurement.faults.items():
                notes.warn_once(f"fault:{domain}", f"sensor {domain} failed: {text}")
        for domain, (kind, reason) in measurement.rejected.items():
            if kind not in flags:
                flags.append(kind)
            notes.warn_once(
                f"rejected:{kind}",
                f"a reading of {domain} was rejected ({kind}): {reason}. That domain is "
                f"left out of the window (flagged '{kind}', never fitted), and its loss is "
                f"not guessed. Further '{kind}' rejections are flagged, not warned about.",
                ImplausibleReadingWarning,
            )
        if any(
            measurement.kinds[d].value == SensorKind.ESTIMATE.value
            for d in energy
            if d in measurement.kinds
        ):
            flags.append(FLAG_ESTIMATE)
    if measured is None:
        flags.append(FLAG_UNMEASURED)
    if interrupted:
        # Its joules were spent, but the step that raised left no operation count.
        flags.append(FLAG_INTERRUPTED)
    fit_ok = fit_worthy(measured, flags)
    fit_ok = fit_ok and not (measurement is not None and measurement.rejected)
    prediction: Prediction | None
    try:
        if fit_ok:
            assert measured is not None
            if fork:
                # NB: a copy costs a few milliseconds (its bounded history), once per
                # checkpoint and only for a fit-worthy window.
                model = OnlineEnergyModel.from_state_dict(model.state_dict())
            prediction = model.update(features, measured)
        else:
            prediction = model.predict(features)
            if measured is not None:
                flags.append(FLAG_OUTLIER)
    except ValueError as exc:
        notes.warn_once("regression", f"window not fitted: {exc}")
        prediction = None
        flags.append(FLAG_OUTLIER)
    has_pred = prediction is not None and prediction.source != "none"
    record = WindowRecord(
        index=index,
        loop=window.loop,
        first_step=window.first_step,
        steps=window.steps,
        start_s=start_s,
        duration_s=duration_s,
        energy_j=energy,
        measured_j=measured,
        predicted_j=prediction.energy_j if has_pred and prediction else None,
        low_j=prediction.low_j if has_pred and prediction else None,
        high_j=prediction.high_j if has_pred and prediction else None,
        prediction_source=prediction.source if prediction is not None else "none",
        tos=window.sums[n],
        flops=window.sums[n + 1],
        features=features,
        flags=tuple(flags),
        rank=rank,
    )
    return record, model
