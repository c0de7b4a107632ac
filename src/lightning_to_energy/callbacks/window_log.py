"""What the callback hands on as windows close: the loggers' metrics, the progress bar's items
and, under DDP, the totals summed over the ranks.

:class:`WindowLog` keeps the little state this needs between hooks (the latest window logged,
the bar's unit, the ranks' totals); :class:`~lightning_to_energy.callbacks.to_energy.TOEnergy`
owns one and calls it from its hooks.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from lightning.pytorch import LightningModule, Trainer

from lightning_to_energy.callbacks.display import (
    FORECAST_KEYS,
    BarUnit,
    bar_items,
    bar_scale_j,
    bar_unit,
    window_metrics,
)
from lightning_to_energy.reporting.records import WindowRecord

if TYPE_CHECKING:
    from lightning_to_energy.tracking.tracker import EnergyTracker

__all__ = ["WindowLog", "logger_step"]


def logger_step(trainer: Trainer) -> int:
    """The step Lightning's own logging would give a metric logged now.

    Lightning logs ``self.log`` values of a train batch, and the validation after it, at its
    count of optimizer-stepped batches *before* that batch's increment: one below
    ``trainer.global_step`` once the batch's optimizer has stepped (the last batch of an
    epoch of 22 is logged at step 21, with the epoch's ``val_loss``). Our windows use the same
    step, so they line up with the user's metrics in ``metrics.csv`` and TensorBoard.

    NB: Lightning keeps that count in a private attribute, which its own
    ``LearningRateMonitor`` and ``DeviceStatsMonitor`` read for the same purpose; should it
    move, ``trainer.global_step`` is the fallback (at most one step later).
    """
    loop = getattr(trainer, "fit_loop", None)
    step = getattr(getattr(loop, "epoch_loop", None), "_batches_that_stepped", None)
    return step if isinstance(step, int) else trainer.global_step


class WindowLog:
    """The windows handed to the loggers and the bar, and the totals logged with them."""

    def __init__(self) -> None:
        self.logged_index = -1  # the latest window handed to the loggers
        self.new_run()

    def new_run(self) -> None:
        """A new fit/validate/test: Lightning's bar starts empty, and the unit is chosen anew."""
        self.train_batches = 0
        self.bar_unit: BarUnit | None = None  # chosen once per run: see show_in_bar
        self.bar_due = False  # a window closed since the bar was last given its items
        self.totals = (0.0, 0.0)  # under DDP: the ranks' measured and predicted joules
        self.any_rank_predicted = False  # under DDP: a rank's model had predicted at the sum

    def skip_restored(self, tracker: EnergyTracker) -> None:
        """Restored windows were logged by the run that closed them: never log them again."""
        self.logged_index = tracker.windows[-1].index if tracker.windows else -1

    def show_in_bar(
        self, tracker: EnergyTracker | None, pl_module: LightningModule, *, epoch_end: bool = False
    ) -> None:
        """Hand the bar its items through ``pl_module.log(prog_bar=True, logger=False)``.

        Called from ``on_train_batch_end`` (the train hook where a callback may log per step)
        once a window has closed since the last call: Lightning keeps a logged bar value until
        it is logged again, so the numbers stay between window closes and across epochs, in
        the TQDM and the Rich bar alike, and the bar itself is left as Lightning built it.
        Also from ``on_train_epoch_end`` (``epoch_end``, where Lightning takes epoch-level
        values only): the validation after an epoch's last batch is in the bar before the bar
        draws its last line, not only in the summary.
        """
        self.bar_due = False
        if tracker is None:
            return
        live = tracker.live()
        if self.bar_unit is None:
            scale_j = bar_scale_j(live, tracker.total_steps, tracker.steps("train"))
            if scale_j is None:
                return  # too early to fix the run's unit (see bar_scale_j): no items yet
            self.bar_unit = bar_unit(scale_j, estimate=live.kind == "estimate")
        for name, value in bar_items(live, self.bar_unit).items():
            # A CPU float64 tensor: Lightning keeps it where it is, so the bar reads it back
            # without a device sync and without float32 noise in the rounded digits.
            pl_module.log(
                name,
                torch.tensor(value, dtype=torch.float64),
                prog_bar=True,
                logger=False,
                on_step=not epoch_end,
                on_epoch=epoch_end,
                batch_size=1,
            )

    def log_window(
        self, trainer: Trainer, tracker: EnergyTracker | None, record: WindowRecord | None
    ) -> None:
        """Hand a closed window (and the run's totals) to ``trainer.loggers``, on rank 0."""
        if record is not None:
            self.logged_index = max(self.logged_index, record.index)
            self.bar_due = True
        if record is None or trainer.global_rank != 0 or not trainer.loggers:
            return
        metrics = window_metrics(record)
        if trainer.world_size == 1:
            assert tracker is not None
            live = tracker.live()
            self.totals = (live.measured_j, live.predicted_j or 0.0)
            predicted = live.predicted_j is not None
        else:
            # The ranks' sums, at the reduce cadence (see reduce_totals).
            predicted = self.any_rank_predicted
        metrics["energy/total_measured_J"] = self.totals[0]
        if predicted:
            # Left out before the model's first prediction, as a window's predicted_J is:
            # a 0 J "predicted" total would read as a prediction of nothing.
            metrics["energy/total_predicted_J"] = self.totals[1]
        assert tracker is not None
        precision = tracker.model.accuracy().precision_pct
        if precision is not None and math.isfinite(precision):
            metrics["energy/precision_pct"] = float(precision)
        forecast = tracker.live().forecast
        if forecast is not None:
            values = (forecast.total_j, forecast.low_j, forecast.high_j)
            metrics.update(zip(FORECAST_KEYS, values, strict=True))
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=logger_step(trainer))

    def reduce_totals(
        self, trainer: Trainer, pl_module: LightningModule, tracker: EnergyTracker | None
    ) -> None:
        """Sum the ranks' totals, at the trainer's ``log_every_n_steps`` cadence."""
        # Every rank runs the same train batches, so a cadence counted here (not by the
        # tracker, which may have stood aside on one rank) keeps the collective in lockstep;
        # window closes are time-based and differ between ranks.
        every = max(int(getattr(trainer, "log_every_n_steps", 50)), 1)
        if self.train_batches % every != 0 or tracker is None:
            return
        live = tracker.live()
        # As on one process, windows without a prediction count at their measured joules: a
        # rank whose model has not predicted yet adds its measured joules, not 0 J. The third
        # entry counts the ranks that have predicted: none, and the sum is no prediction.
        predicted = live.predicted_j is not None
        local = torch.tensor(
            [
                live.measured_j,
                live.predicted_j if live.predicted_j is not None else live.measured_j,
                1.0 if predicted else 0.0,
            ],
            dtype=torch.float64,
            device=pl_module.device,
        )
        total = trainer.strategy.reduce(local, reduce_op="sum")
        self.totals = (float(total[0]), float(total[1]))
        self.any_rank_predicted = float(total[2]) > 0
