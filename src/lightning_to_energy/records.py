"""``lightning_to_energy.records``: a documented import path, kept; the report's records live in
:mod:`lightning_to_energy.reporting.records`.
"""

from __future__ import annotations

from lightning_to_energy.reporting.records import (
    FLAG_BOUNDARY,
    FLAG_ESTIMATE,
    FLAG_FAULT,
    FLAG_OUTLIER,
    FLAG_SHORT,
    FLAG_UNMEASURED,
    NOT_FIT_FLAGS,
    EnergyReport,
    Forecast,
    LoopTotals,
    ModuleEnergy,
    PriorRecord,
    SensorInfo,
    WindowRecord,
    fit_worthy,
)

__all__ = [
    "FLAG_BOUNDARY",
    "FLAG_ESTIMATE",
    "FLAG_FAULT",
    "FLAG_OUTLIER",
    "FLAG_SHORT",
    "FLAG_UNMEASURED",
    "NOT_FIT_FLAGS",
    "EnergyReport",
    "Forecast",
    "LoopTotals",
    "ModuleEnergy",
    "PriorRecord",
    "SensorInfo",
    "WindowRecord",
    "fit_worthy",
]
