"""``lightning_to_energy.regression``: a documented import path, kept; the energy model lives in
:mod:`lightning_to_energy.model.regression`.
"""

from __future__ import annotations

from lightning_to_energy.model import regression as _regression
from lightning_to_energy.model.regression import *  # noqa: F403

__all__ = [*_regression.__all__]
