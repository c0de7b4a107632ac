"""The end of a callback's run: close the tracker, gather the ranks' windows into one report,
save its files and print it once the progress bar has closed.

:class:`~lightning_to_energy.callbacks.to_energy.TOEnergy` calls these from ``on_fit_end`` (or
the end of a ``validate`` / ``test`` run, or ``on_exception``) and from ``teardown`` (after an
exception, from ``on_exception``: Lightning calls no ``teardown`` hook then).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

from lightning_to_energy import notices
from lightning_to_energy.reporting.records import EnergyReport, WindowRecord
from lightning_to_energy.tracking.ledger import merge_archives

if TYPE_CHECKING:
    from lightning_to_energy.reporting.files import SavedReport
    from lightning_to_energy.tracking.tracker import EnergyTracker

__all__ = ["finish_run", "print_summary", "save_report_files"]


def finish_run(
    trainer: Trainer,
    tracker: EnergyTracker,
    notes: list[str],
    log_window: Callable[[Trainer, WindowRecord | None], None],
    interrupted: str | None,
) -> EnergyReport:
    """Close ``tracker`` and build the report over every rank's windows.

    Args:
        trainer: the run's trainer (its state, rank and world size).
        tracker: this rank's tracker.
        notes: the callback's lines for the report; an interrupted DDP run adds one.
        log_window: hands the last window to the loggers.
        interrupted: why the run ended early, or None.

    Returns:
        The run's report (every rank's windows under DDP, unless interrupted).
    """
    if trainer.state.fn == "fit" and tracker.total_steps is not None:
        # The fit is over (early stopping or max_time may have ended it before the
        # planned steps): the run's length is the steps it took, and its forecast what
        # was measured, not a projection over steps that will never run.
        tracker.total_steps = tracker.steps("train")
    # Each part guarded on its own: a logger that fails must not keep the sensors open
    # or the calibration unsaved, and every rank must still reach the gather below.
    last: WindowRecord | None = None
    for part in ("close", "log", "finish"):
        try:
            if part == "close":
                last = tracker.close_window(boundary=True)
            elif part == "log":
                # The last window (a test run's, say) reaches the loggers like every other.
                log_window(trainer, last)
            else:
                tracker.close()
        except Exception as exc:
            what = "logging its last window" if part == "log" else "the end of the run"
            notices.warn(
                f"lightning-to-energy: {what} failed on rank {trainer.global_rank} "
                f"({type(exc).__name__}: {exc}); reporting the windows closed so far.",
                stacklevel=2,  # the callback's _finish
            )
    windows: list[WindowRecord] = list(tracker.windows)
    sensors = tracker.sensor_infos()
    if interrupted is not None and trainer.world_size > 1:
        # The other ranks may never reach a collective: this rank reports its own part.
        notes.append(
            f"rank {trainer.global_rank}'s windows only: the run was interrupted, so the "
            "ranks' windows were not gathered."
        )
    elif (
        trainer.world_size > 1
        and torch.distributed.is_available()
        and torch.distributed.is_initialized()
    ):
        gathered: list[Any] = [None] * trainer.world_size
        torch.distributed.all_gather_object(gathered, (windows, tracker.archived, sensors))
        windows = [w for part, _, _ in gathered for w in part]
        windows.sort(key=lambda w: (w.start_s, w.rank))
        archived = merge_archives([archive for _, archive, _ in gathered])
        # Each rank's own sensors (its GPU), host-wide ones once: every domain has a kind.
        by_domain = {s.domain: s for _, _, part in gathered for s in part}
        sensors = list(by_domain.values())
    else:
        archived = tracker.archived
    return tracker.build_report(
        windows,
        world_size=trainer.world_size,
        archived=archived,
        extra_warnings=notes,
        sensors=sensors,
    )


def save_report_files(report: EnergyReport, directory: Path, *, plot: bool) -> SavedReport | None:
    """Save the report's JSON, CSV and (with ``plot`` and matplotlib) PNG in ``directory``.

    Returns:
        The files written, or None when saving failed (one warning says why).
    """
    from lightning_to_energy.reporting.files import save_report

    try:
        # None: draw when matplotlib is there; False: never
        return save_report(report, directory, plot=None if plot else False)
    except OSError as exc:
        notices.warn(
            f"lightning-to-energy: energy report not saved to {directory}: {exc}",
            stacklevel=3,  # the callback's _emit's caller, as before this function existed
        )
        return None


def print_summary(
    trainer: Trainer,
    pl_module: LightningModule,
    stage: str,
    report: EnergyReport,
    files: list[str],
    *,
    verbose: bool,
) -> None:
    """Print the summary (or, ``verbose``, the full report) and ``files``, below the bar.

    Called from the callback's ``teardown`` at the end of a run, and from its ``on_exception``
    after an exception or Ctrl-C (Lightning calls no ``teardown`` hook then).
    """
    _stop_bar(trainer, pl_module, stage)
    from lightning_to_energy.reporting.console import render_report, summary_lines

    if verbose:
        render_report(report)
        print("\n".join(files))
    else:
        print("\n".join([*summary_lines(report), *files]))


def _stop_bar(trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
    """Stop Lightning's progress bar through its own means, so nothing it draws follows."""
    bar = trainer.progress_bar_callback
    if isinstance(bar, RichProgressBar):
        # Lightning stops a Rich bar in its own teardown or on_exception, which run after
        # ours when the bar comes later in trainer.callbacks (the default bar is appended
        # after the user's callbacks): printed while it is live, the summary would sit above
        # a bar redrawn below it. Both hooks only stop the bar, so call one first (Lightning's
        # own call then finds it stopped; in a non-interactive console Rich prints one blank
        # line for each stop).
        bar.teardown(trainer, pl_module, stage)
    elif isinstance(bar, TQDMProgressBar):
        # Lightning closes a TQDM bar at the end of its loop but never after an exception:
        # left open, the summary would continue the bar's last line, and tqdm would draw the
        # bar again below it when the bar is garbage-collected (at exit, after Ctrl-C). Close
        # the bars below the train bar first, as Lightning does; closing one twice does
        # nothing.
        for name in ("predict_progress_bar", "test_progress_bar", "val_progress_bar",
                     "train_progress_bar"):  # fmt: skip
            try:
                tqdm_bar = getattr(bar, name)
            except TypeError:  # Lightning's answer for a bar this run never drew
                continue
            tqdm_bar.close()
