"""The tracker's arguments, checked before anything starts (the callback checks its own with
the same function, without building a tracker)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from lightning_to_energy.calibration.store import CalibrationStore
from lightning_to_energy.sensors.base import MEASURED_KINDS, Sensor, SensorKind
from lightning_to_energy.tracking.steps import PROFILE_FEATURES

__all__ = ["check_arguments", "check_window_against"]


def check_arguments(
    *,
    sensors: Any,
    window_s: float | None,
    features: Sequence[str],
    calibration: Any,
    recheck_every: Any,
    max_windows: Any,
) -> None:
    """Refuse out-of-range or ill-typed tracker arguments before anything starts.

    Raises:
        ValueError: the message names the argument, what was found and the fix.
    """
    if window_s is not None and not (
        isinstance(window_s, (int, float)) and window_s > 0 and math.isfinite(window_s)
    ):
        raise ValueError(
            f"window_s must be a finite number of seconds > 0, found {window_s!r}: a "
            "window of no length measures nothing (every reading would be noise); pass "
            "e.g. window_s=2.0, or None for the sensors' minimum trustworthy window."
        )
    if not isinstance(max_windows, int) or max_windows < 1:
        raise ValueError(
            f"max_windows must be a positive int, found {max_windows!r}; "
            "pass e.g. max_windows=20_000."
        )
    if not isinstance(recheck_every, int) or recheck_every < 1:
        raise ValueError(
            f"recheck_every must be a positive int, found {recheck_every!r}; "
            "pass e.g. recheck_every=1000."
        )
    unknown = [f for f in features if f != "duration_s" and f not in PROFILE_FEATURES]
    if unknown or "duration_s" not in features:
        raise ValueError(
            f"features must include 'duration_s' and names from {sorted(PROFILE_FEATURES)}; "
            f"found {list(features)!r}. Fix the names or leave the default."
        )
    if not (sensors is None or sensors == "auto" or isinstance(sensors, Sequence)):
        raise ValueError(
            f"sensors must be 'auto', a sequence of Sensor objects or None; found {sensors!r}."
        )
    if not (calibration is None or isinstance(calibration, (str, os.PathLike))):
        raise ValueError(
            "calibration: expected 'auto', a calibration JSON file path or None; found "
            f"{calibration!r}. Fix: pass calibration='auto' (this hardware's own), a path, "
            "or None."
        )
    if calibration is not None and calibration != "auto":
        CalibrationStore.from_path(calibration)  # a directory is refused now, not at the end
    if window_s is not None and isinstance(sensors, Sequence) and not isinstance(sensors, str):
        check_window_against(window_s, [s for s in sensors if hasattr(s, "update_period_s")])


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
