"""Hand-built energy reports for tests: every field empty unless a test sets it."""

from __future__ import annotations

from typing import Any

from lightning_to_energy.reporting.records import EnergyReport


def bare_report(**fields: Any) -> EnergyReport:
    """An ``EnergyReport`` with empty defaults, overridden by ``fields``."""
    defaults: dict[str, Any] = {
        "created": "2026-01-01T00:00:00+00:00",
        "hardware": {},
        "sensors": (),
        "skipped_sensors": {},
        "windows": (),
        "loops": {},
        "measured_j": 0.0,
        "predicted_j": 0.0,
        "accuracy": {},
        "coefficients": {},
        "coefficient_units": {},
        "identifiable": True,
        "tos_by_class": {},
        "tos_by_format": {},
        "tos_by_phase": {},
        "top_modules": (),
        "unmodelled_ops": {},
        "warnings": (),
    }
    return EnergyReport(**{**defaults, **fields})
