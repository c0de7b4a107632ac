"""The start of a callback's run: the arguments checked when the callback is built, and the
tracker built at the first step, once the rank and the device are known.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer

from lightning_to_energy._arguments import (
    check_bool,
    check_calibration,
    check_clock,
    check_directory_arg,
    check_features,
    check_positive_int,
    check_window_s,
)
from lightning_to_energy.calibration.store import CalibrationStore
from lightning_to_energy.callbacks.trainer_info import planned_train_batches
from lightning_to_energy.counting.cost_model import CostModel, as_cost_model
from lightning_to_energy.sensors.base import Sensor
from lightning_to_energy.tracking.steps import PROFILE_FEATURES
from lightning_to_energy.tracking.tracker import EnergyTracker

__all__ = ["new_tracker", "tracker_arguments"]


def tracker_arguments(
    *,
    window_s: float | None,
    features: Sequence[str],
    calibration: str | Path | None,
    cost_model: CostModel | str | Path | None,
    recheck_every: int,
    max_windows: int,
    report_dir: str | Path | None,
    print_report: bool,
    verbose: bool,
    plot: bool,
    clock: Callable[[], float],
) -> dict[str, Any]:
    """Check the callback's arguments (but ``sensors``) now, with the tracker's own checks.

    Returns:
        The tracker's keyword arguments (``report_dir``, ``print_report``, ``verbose`` and
        ``plot`` are the callback's own, only checked).

    Raises:
        ValueError: an argument has the wrong type or range, or ``calibration`` is a directory.
    """
    check_window_s(window_s)
    features = check_features(features, tuple(PROFILE_FEATURES))
    check_calibration(calibration)
    if calibration is not None and calibration != "auto":
        CalibrationStore.from_path(calibration)  # a directory is refused now
    cost_model = as_cost_model(cost_model)
    check_positive_int("recheck_every", recheck_every, 1000)
    check_positive_int("max_windows", max_windows, 20_000)
    check_directory_arg("report_dir", report_dir)
    check_bool("print_report", print_report)
    check_bool("verbose", verbose)  # bool("no") is True: a string must not pass as a flag
    check_bool("plot", plot)
    check_clock(clock)
    return {
        "window_s": window_s,
        "features": features,
        "calibration": calibration,
        "cost_model": cost_model,
        "recheck_every": recheck_every,
        "max_windows": max_windows,
        "clock": clock,
    }


def new_tracker(
    trainer: Trainer,
    pl_module: LightningModule,
    sensors: Any,
    factory: Callable[[int, torch.device], Sequence[Sensor]] | None,
    kwargs: dict[str, Any],
) -> EnergyTracker:
    """The tracker of this rank's run (not started), on ``pl_module``'s device."""
    device = pl_module.device
    local_rank = trainer.local_rank
    if factory is not None:
        # Checked by the tracker like any sensors argument: a factory returning names or
        # junk fails here, at the start, saying what it returned.
        sensors = list(factory(local_rank, device))
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    # Only a fit has a length to forecast.
    total_steps = planned_train_batches(trainer) if trainer.state.fn == "fit" else None
    return EnergyTracker(
        pl_module,
        sensors=sensors,
        sync=sync,
        device=device,
        local_rank=local_rank,
        rank=trainer.global_rank,
        total_steps=total_steps,
        **kwargs,
    )
