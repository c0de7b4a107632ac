"""The tracker's arguments, checked before anything starts (the callback checks its own with
the same function, without building a tracker)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch

from lightning_to_energy._arguments import (
    check_calibration,
    check_callable,
    check_clock,
    check_device,
    check_features,
    check_module,
    check_optimizer,
    check_positive_int,
    check_rank,
    check_total_steps,
    check_window_s,
)
from lightning_to_energy.calibration.store import CalibrationStore
from lightning_to_energy.sensors.base import MEASURED_KINDS, Sensor, SensorKind
from lightning_to_energy.sensors.spec import SensorRequest, parse_sensors
from lightning_to_energy.tracking.steps import PROFILE_FEATURES

__all__ = [
    "check_arguments",
    "check_started_window",
    "check_window_against",
    "short_window_note",
]


def check_arguments(
    *,
    module: Any,
    optimizer: Any,
    sensors: Any,
    window_s: Any,
    features: Any,
    calibration: Any,
    recheck_every: Any,
    clock: Any,
    sync: Any,
    device: Any,
    local_rank: Any,
    rank: Any,
    total_steps: Any,
    max_windows: Any,
) -> tuple[SensorRequest, tuple[str, ...], torch.device | None]:
    """Refuse out-of-range or ill-typed tracker arguments before anything starts.

    Returns:
        The parsed sensor request, the features and the device (a ``torch.device`` or None).

    Raises:
        ValueError: the message names the argument, what was found and the fix.
    """
    check_module(module)
    check_optimizer(optimizer)
    request = parse_sensors(sensors)
    check_window_s(window_s)
    checked = check_features(features, tuple(PROFILE_FEATURES))
    check_calibration(calibration)
    check_positive_int("recheck_every", recheck_every, 1000)
    check_clock(clock)
    check_callable("sync", sync, optional=True, example="torch.cuda.synchronize")
    checked_device = check_device(device)
    check_rank("local_rank", local_rank)
    check_rank("rank", rank)
    check_total_steps(total_steps)
    check_positive_int("max_windows", max_windows, 20_000)
    if calibration is not None and calibration != "auto":
        CalibrationStore.from_path(calibration)  # a directory is refused now, not at the end
    if window_s is not None and request.sensors:
        check_window_against(window_s, list(request.sensors))
    return request, checked, checked_device


def check_window_against(window_s: float, sensors: Sequence[Sensor]) -> None:
    """Refuse a ``window_s`` shorter than a hardware sensor's update period, with the reason."""
    # Hardware readings only: a replay interpolates between its samples, a fake is scripted.
    slow = [
        s
        for s in sensors
        if SensorKind(s.kind).value in MEASURED_KINDS and window_s < float(s.update_period_s)
    ]
    if slow:
        names = ", ".join(f"{s.domain} ({float(s.update_period_s):g} s)" for s in slow)
        raise ValueError(
            f"window_s={window_s:g} s is shorter than the update period of {names}: such a "
            "window would read 0 J or a whole update's joules, never its own. Fix: pass "
            f"window_s >= {max(float(s.update_period_s) for s in slow):g} (2 s or more to fit "
            "NVML windows), or leave it unset."
        )


def short_window_note(window_s: float, sensors: Sequence[Sensor]) -> str | None:
    """Why ``window_s`` is below a sensor's minimum trustworthy window, None when it is not."""
    slow = [s for s in sensors if window_s < s.min_window_s]
    if not slow:
        return None
    names = ", ".join(f"{s.domain} ({s.min_window_s:g} s)" for s in slow)
    return (
        f"window_s={window_s:g} s is below the minimum trustworthy window of "
        f"{names}: windows that short are flagged 'short' and never fitted (an NVML "
        "counter changes only every 100 ms, so its 0.25 s windows read 528 to 830 W "
        "for a true 694 W). Fix: leave window_s unset, or pass window_s >= "
        f"{max(s.min_window_s for s in slow):g}."
    )


def check_started_window(window_s: float, sensors: Sequence[Sensor]) -> str | None:
    """Check ``window_s`` against the sensors a tracker found when it started: refused below a
    sensor's update period (the sensors are closed first), else a note when it is below a
    sensor's minimum trustworthy window (see :func:`short_window_note`), else None.

    Raises:
        ValueError: ``window_s`` is below a hardware sensor's update period.
    """
    try:
        check_window_against(window_s, sensors)
    except ValueError:
        for sensor in sensors:
            with contextlib.suppress(Exception):
                sensor.close()
        raise
    return short_window_note(window_s, sensors)
