"""What the callback reads of the trainer and the process group: rank and world size, the
train batches a run plans.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from lightning.pytorch import Trainer

if TYPE_CHECKING:
    pass

__all__ = [
    "planned_train_batches",
    "rank_and_world",
]


def rank_and_world() -> tuple[int, int]:
    """This process's global rank and the world size (0 and 1 outside a process group)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def planned_train_batches(trainer: Trainer) -> int | None:
    """Train batches the fit will run (the tracker's steps), or None when unknown.

    Lightning plans in optimizer steps (``estimated_stepping_batches``: ``ceil(batches /
    accumulate)`` per epoch, capped by ``max_steps``); the tracker counts batches, and an
    epoch's last optimizer step may follow fewer than ``accumulate`` batches.
    """
    try:
        stepping = trainer.estimated_stepping_batches
    except Exception:  # e.g. a data loader that cannot be sized: no forecast, no failure
        return None
    # -1 is max_steps unset on an iterable dataset without a length: the length is unknown.
    if not isinstance(stepping, (int, float)) or not math.isfinite(stepping) or stepping <= 0:
        return None
    accumulate = max(int(trainer.accumulate_grad_batches), 1)
    per_epoch = trainer.num_training_batches
    if accumulate == 1 or not math.isfinite(per_epoch) or per_epoch <= 0:
        return int(stepping) * accumulate
    steps_per_epoch = math.ceil(per_epoch / accumulate)
    epochs, rest = divmod(int(stepping), steps_per_epoch)
    return epochs * int(per_epoch) + rest * accumulate
