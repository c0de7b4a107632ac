"""``lightning_to_energy.roofline``: a documented import path, kept; hardware specs and the
roofline estimate live in :mod:`lightning_to_energy.hardware.specs`,
:mod:`lightning_to_energy.hardware.roofline`, :mod:`lightning_to_energy.hardware.detect`.
"""

from __future__ import annotations

from lightning_to_energy.hardware import detect as _detect
from lightning_to_energy.hardware import roofline as _roofline
from lightning_to_energy.hardware import specs as _specs
from lightning_to_energy.hardware.detect import *  # noqa: F403
from lightning_to_energy.hardware.roofline import *  # noqa: F403
from lightning_to_energy.hardware.specs import *  # noqa: F403

__all__ = [*_specs.__all__, *_roofline.__all__, *_detect.__all__]
