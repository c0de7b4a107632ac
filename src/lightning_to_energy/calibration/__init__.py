"""Calibration: what the energy model learned on one machine, and its locked per-hardware store.

``lightning_to_energy.calibration`` is a documented import path; it re-exports the names below
(the hardware identity among them, which lives in :mod:`lightning_to_energy.hardware.identity`).
"""

from __future__ import annotations

from lightning_to_energy.calibration.builtin import (
    BUILTIN_DIR,
    builtin_calibration,
    builtin_keys,
    builtin_note,
)
from lightning_to_energy.calibration.data import (
    DEFAULT_MAX_WINDOWS,
    MAX_RUNS_LISTED,
    MIN_PRECISION_PCT,
    SCHEMA_VERSION,
    Calibration,
    CalibrationRun,
    CalibrationWindow,
    merge,
)
from lightning_to_energy.calibration.store import (
    APP_DIR,
    CalibrationStore,
    CalibrationWarning,
    default_directory,
    foreign_file,
)
from lightning_to_energy.hardware.identity import (
    HardwareInfo,
    hardware_fingerprint,
    hardware_from_section,
    hardware_section,
)

__all__ = [
    "APP_DIR",
    "BUILTIN_DIR",
    "DEFAULT_MAX_WINDOWS",
    "MAX_RUNS_LISTED",
    "MIN_PRECISION_PCT",
    "SCHEMA_VERSION",
    "Calibration",
    "CalibrationRun",
    "CalibrationStore",
    "CalibrationWarning",
    "CalibrationWindow",
    "HardwareInfo",
    "builtin_calibration",
    "builtin_keys",
    "builtin_note",
    "default_directory",
    "foreign_file",
    "hardware_fingerprint",
    "hardware_from_section",
    "hardware_section",
    "merge",
]
