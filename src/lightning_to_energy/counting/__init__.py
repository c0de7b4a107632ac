"""Counting transistor operations with a dispatch mode.

``OpCounter`` costs every aten op of a step with the formulas in ``counting.formulas``;
``profile`` does it for one step of a plain PyTorch model; ``StepSignature`` and
``ProfileCache`` let a training loop count a step once and replay its profile after.
"""

from __future__ import annotations

from lightning_to_energy.counting.cache import ProfileCache, StepSignature
from lightning_to_energy.counting.mode import OpCounter, uncompiled
from lightning_to_energy.counting.profile import (
    ModuleTotals,
    OpTotals,
    PhaseTotals,
    ProfileSum,
    StepProfile,
)
from lightning_to_energy.counting.step import profile

__all__ = [
    "ModuleTotals",
    "OpCounter",
    "OpTotals",
    "PhaseTotals",
    "ProfileCache",
    "ProfileSum",
    "StepProfile",
    "StepSignature",
    "profile",
    "uncompiled",
]
