"""``lightning_to_energy.meter``: a documented import path, kept; the meter lives in
:mod:`lightning_to_energy.sensors.meter`.
"""

from __future__ import annotations

from lightning_to_energy.sensors.meter import (
    Measurement,
    Meter,
)

__all__ = [
    "Measurement",
    "Meter",
]
