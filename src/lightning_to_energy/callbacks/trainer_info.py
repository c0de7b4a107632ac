"""What the callback reads of the trainer and the process group: rank and world size, the
train batches a run plans.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from lightning.pytorch import LightningModule, Trainer

if TYPE_CHECKING:
    from lightning_to_energy.tracking.tracker import EnergyTracker

__all__ = [
    "BatchPlan",
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


class BatchPlan:
    """Which train batches end with an optimizer step, and, under manual optimization, how
    many batches ``max_steps`` (optimizer steps) allows.

    The accumulation factor and the batches per epoch are read once per epoch, at its first
    batch: the optimizer steps on every accumulate-th batch and on the epoch's last batch.
    """

    def __init__(self) -> None:
        self.accumulate = 1
        self.epoch_batches: float = math.inf
        self.epoch = -1
        self.global_step_before: int | None = None  # see start

    def start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """A fit starts: read the accumulation settings again at the first batch."""
        self.epoch = -1
        # Manual optimization may step several optimizers a batch, and max_steps counts every
        # step: the run's length in batches is known once one batch has run (see
        # plan_manual_run).
        self.global_step_before = None
        if not pl_module.automatic_optimization and trainer.max_steps > 0:
            self.global_step_before = -1

    def will_step(self, trainer: Trainer, batch_idx: int) -> bool:
        """Whether the optimizer steps after train batch ``batch_idx`` (about to begin)."""
        if self.global_step_before is not None:
            self.global_step_before = trainer.global_step
        epoch = trainer.current_epoch
        if epoch != self.epoch:
            # Once per epoch, at its first batch (after every on_train_epoch_start, where a
            # GradientAccumulationScheduler changes the factor), not on every step.
            self.epoch = epoch
            self.accumulate = max(int(trainer.accumulate_grad_batches), 1)
            self.epoch_batches = trainer.num_training_batches
        # As Lightning decides: the optimizer also steps on the epoch's last batch.
        return (batch_idx + 1) % self.accumulate == 0 or batch_idx + 1 == self.epoch_batches

    def batch_done(self, trainer: Trainer, tracker: EnergyTracker | None) -> None:
        """After a train batch: the first one under manual optimization plans the run."""
        if self.global_step_before is not None:
            self.plan_manual_run(trainer, tracker, trainer.global_step - self.global_step_before)
            self.global_step_before = None

    @staticmethod
    def plan_manual_run(
        trainer: Trainer, tracker: EnergyTracker | None, steps_per_batch: int
    ) -> None:
        """Under manual optimization, turn ``max_steps`` (optimizer steps) into batches, with
        the optimizer steps the first batch took; epochs still cap the run."""
        if tracker is None or tracker.total_steps is None or steps_per_batch <= 1:
            return
        done = tracker.steps("train")
        by_steps = math.ceil((trainer.max_steps - trainer.global_step) / steps_per_batch)
        tracker.total_steps = done + max(min(tracker.total_steps - done, by_steps), 0)
