"""The energy model: features and their units, the online regression, its solver and scoring,
the physical per-kernel model of a training step's time and energy (``physical``), and that
model as the online regression's prior (``physical_live``)."""

from __future__ import annotations

from lightning_to_energy.model.physical import (
    PhysicalModel,
    PhysicalParams,
    PlannedStep,
    StepPrediction,
    energy_at,
    predict_step,
    predict_steps,
)
from lightning_to_energy.model.physical_fit import ParamStatus, PhysicalFit, Sample, fit_physical
from lightning_to_energy.model.physical_live import LivePrior, calibrated_strength, live_prior
from lightning_to_energy.model.physical_prior import prior_for

__all__ = [
    "LivePrior",
    "ParamStatus",
    "PhysicalFit",
    "PhysicalModel",
    "PhysicalParams",
    "PlannedStep",
    "Sample",
    "StepPrediction",
    "calibrated_strength",
    "energy_at",
    "fit_physical",
    "live_prior",
    "predict_step",
    "predict_steps",
    "prior_for",
]
