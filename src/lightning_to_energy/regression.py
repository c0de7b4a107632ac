"""``lightning_to_energy.regression``: a documented import path, kept; the energy model lives in
:mod:`lightning_to_energy.model.regression`.
"""

from __future__ import annotations

from lightning_to_energy.model.regression import (
    CONDITION_LIMIT,
    DEFAULT_HISTORY,
    DEFAULT_INTERVAL,
    DEFAULT_INTERVAL_FACTOR,
    DEFAULT_PRIOR_STRENGTH,
    FEATURES,
    INTERVAL_WINDOWS,
    MIN_WINDOWS_FOR_INTERVAL,
    RECORDS_KEPT,
    SEED_WEIGHT,
    STATE_VERSION,
    Accuracy,
    FitDiagnostics,
    OnlineEnergyModel,
    Prediction,
    PredictionSource,
    Prior,
    feature_unit,
    log_interval_half_width,
    warm_up_solver,
)

__all__ = [
    "CONDITION_LIMIT",
    "DEFAULT_HISTORY",
    "DEFAULT_INTERVAL",
    "DEFAULT_INTERVAL_FACTOR",
    "DEFAULT_PRIOR_STRENGTH",
    "FEATURES",
    "INTERVAL_WINDOWS",
    "MIN_WINDOWS_FOR_INTERVAL",
    "RECORDS_KEPT",
    "SEED_WEIGHT",
    "STATE_VERSION",
    "Accuracy",
    "FitDiagnostics",
    "OnlineEnergyModel",
    "Prediction",
    "PredictionSource",
    "Prior",
    "feature_unit",
    "log_interval_half_width",
    "warm_up_solver",
]
