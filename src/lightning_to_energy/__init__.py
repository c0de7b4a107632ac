"""lightning-to-energy: transistor operations, measured joules and live energy prediction.

``TOEnergy`` is the Lightning callback; ``EnergyTracker`` is the same machinery for a plain
PyTorch loop; ``profile`` counts one step of any model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Imports are lazy (PEP 562): `lightning-to-energy sensors` and other light entry points
# must not pay for importing Lightning, and `import lightning_to_energy` stays cheap.
_EXPORTS: dict[str, str] = {
    "AluOp": "lightning_to_energy.counting.cost_model",
    "Calibration": "lightning_to_energy.calibration.data",
    "CalibrationStore": "lightning_to_energy.calibration.store",
    "CostModel": "lightning_to_energy.counting.cost_model",
    "EnergyReport": "lightning_to_energy.reporting.records",
    "EnergyTracker": "lightning_to_energy.tracking.tracker",
    "EnergyWarning": "lightning_to_energy.notices",
    "FEATURES": "lightning_to_energy.model.regression",
    "FakeSensor": "lightning_to_energy.sensors.fake",
    "Measurement": "lightning_to_energy.sensors.meter",
    "Meter": "lightning_to_energy.sensors.meter",
    "NumberFormat": "lightning_to_energy.counting.cost_model",
    "OnlineEnergyModel": "lightning_to_energy.model.regression",
    "OpCounter": "lightning_to_energy.counting",
    "ReplaySensor": "lightning_to_energy.sensors.fake",
    "RunPlan": "lightning_to_energy.planning",
    "Sensor": "lightning_to_energy.sensors.base",
    "SensorError": "lightning_to_energy.sensors.base",
    "SensorKind": "lightning_to_energy.sensors.base",
    "StepProfile": "lightning_to_energy.counting",
    "TOEnergy": "lightning_to_energy.callbacks.to_energy",
    "Unit": "lightning_to_energy.counting.cost_model",
    "WindowRecord": "lightning_to_energy.reporting.records",
    "discover": "lightning_to_energy.sensors.discover",
    "hardware_fingerprint": "lightning_to_energy.hardware.identity",
    "load_report": "lightning_to_energy.reporting.codec",
    "plan_run": "lightning_to_energy.planning",
    "profile": "lightning_to_energy.counting",
    "render_report": "lightning_to_energy.reporting.console",
    "save_report": "lightning_to_energy.reporting.files",
}

if TYPE_CHECKING:
    from lightning_to_energy.calibration.data import Calibration
    from lightning_to_energy.calibration.store import CalibrationStore
    from lightning_to_energy.callbacks.to_energy import TOEnergy
    from lightning_to_energy.counting import OpCounter, StepProfile, profile
    from lightning_to_energy.counting.cost_model import AluOp, CostModel, NumberFormat, Unit
    from lightning_to_energy.hardware.identity import hardware_fingerprint
    from lightning_to_energy.model.regression import FEATURES, OnlineEnergyModel
    from lightning_to_energy.notices import EnergyWarning
    from lightning_to_energy.planning import RunPlan, plan_run
    from lightning_to_energy.reporting.codec import load_report
    from lightning_to_energy.reporting.console import render_report
    from lightning_to_energy.reporting.files import save_report
    from lightning_to_energy.reporting.records import EnergyReport, WindowRecord
    from lightning_to_energy.sensors.base import Sensor, SensorError, SensorKind
    from lightning_to_energy.sensors.discover import discover
    from lightning_to_energy.sensors.fake import FakeSensor, ReplaySensor
    from lightning_to_energy.sensors.meter import Measurement, Meter
    from lightning_to_energy.tracking.tracker import EnergyTracker

__version__ = "0.1.0"

__all__ = [
    "FEATURES",
    "AluOp",
    "Calibration",
    "CalibrationStore",
    "CostModel",
    "EnergyReport",
    "EnergyTracker",
    "EnergyWarning",
    "FakeSensor",
    "Measurement",
    "Meter",
    "NumberFormat",
    "OnlineEnergyModel",
    "OpCounter",
    "ReplaySensor",
    "RunPlan",
    "Sensor",
    "SensorError",
    "SensorKind",
    "StepProfile",
    "TOEnergy",
    "Unit",
    "WindowRecord",
    "discover",
    "hardware_fingerprint",
    "load_report",
    "plan_run",
    "profile",
    "render_report",
    "save_report",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lightning_to_energy' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
