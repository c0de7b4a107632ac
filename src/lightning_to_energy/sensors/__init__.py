"""Energy sensors: NVML, RAPL, estimates, and fake/replay sensors for tests.

Importing this package imports no vendor library: ``pynvml`` is loaded only when an
:class:`NvmlSensor` is created.
"""

from __future__ import annotations

from lightning_to_energy.sensors.base import (
    ImplausibleReadingWarning,
    Peekable,
    ReadingAnomaly,
    Sensor,
    SensorError,
    SensorKind,
    SensorUnavailable,
    sensor_info,
)
from lightning_to_energy.sensors.discover import BACKENDS, Discovery, discover
from lightning_to_energy.sensors.estimate import CpuTimeEstimateSensor, EnergyEstimateWarning
from lightning_to_energy.sensors.fake import (
    TRACE_COLUMNS,
    FakeSensor,
    ReplaySensor,
    Trace,
    read_trace,
)
from lightning_to_energy.sensors.nvml import NvmlSensor
from lightning_to_energy.sensors.nvml_devices import GpuIdentity
from lightning_to_energy.sensors.rapl import RaplSensor, RaplZone, find_rapl_zones

__all__ = [
    "BACKENDS",
    "TRACE_COLUMNS",
    "CpuTimeEstimateSensor",
    "Discovery",
    "EnergyEstimateWarning",
    "FakeSensor",
    "GpuIdentity",
    "ImplausibleReadingWarning",
    "NvmlSensor",
    "Peekable",
    "RaplSensor",
    "RaplZone",
    "ReadingAnomaly",
    "ReplaySensor",
    "Sensor",
    "SensorError",
    "SensorKind",
    "SensorUnavailable",
    "Trace",
    "discover",
    "find_rapl_zones",
    "read_trace",
    "sensor_info",
]
