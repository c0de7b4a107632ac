"""``lightning_to_energy.records``: a documented import path, kept; the report's records live in
:mod:`lightning_to_energy.reporting.records`.
"""

from __future__ import annotations

from lightning_to_energy.reporting import records as _records
from lightning_to_energy.reporting.records import *  # noqa: F403

__all__ = [*_records.__all__]
