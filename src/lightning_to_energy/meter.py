"""``lightning_to_energy.meter``: a documented import path, kept; the meter lives in
:mod:`lightning_to_energy.sensors.meter`.
"""

from __future__ import annotations

from lightning_to_energy.sensors import meter as _meter
from lightning_to_energy.sensors.meter import *  # noqa: F403

__all__ = [*_meter.__all__]
