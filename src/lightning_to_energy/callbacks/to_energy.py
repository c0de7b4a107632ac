"""``TOEnergy``: the Lightning callback. It decides *when*; :class:`EnergyTracker` does the work.

What it shows (progress bar items, logged metric keys, the files lines) is in
:mod:`lightning_to_energy.callbacks.display`; what it reads of the trainer in
:mod:`lightning_to_energy.callbacks.trainer_info`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from typing_extensions import override

from lightning_to_energy import notices
from lightning_to_energy.counting.cost_model import CostModel
from lightning_to_energy.model.regression import FEATURES
from lightning_to_energy.reporting.records import EnergyReport, WindowRecord
from lightning_to_energy.sensors.base import Sensor
from lightning_to_energy.sensors.spec import parse_sensors
from lightning_to_energy.tracking.metering import close_sensors
from lightning_to_energy.tracking.notes import interruption_reason
from lightning_to_energy.tracking.tracker import EnergyTracker

if TYPE_CHECKING:
    from lightning_to_energy.reporting.files import SavedReport
from lightning_to_energy.callbacks.checkpoint import (
    gather_rank_states,
    own_rank_state,
    restorable_state,
)
from lightning_to_energy.callbacks.display import files_lines
from lightning_to_energy.callbacks.run_end import finish_run, print_summary, save_report_files
from lightning_to_energy.callbacks.run_start import new_tracker, tracker_arguments
from lightning_to_energy.callbacks.trainer_info import BatchPlan
from lightning_to_energy.callbacks.window_log import WindowLog

__all__ = ["TOEnergy"]


class TOEnergy(Callback):
    """Counts transistor operations, measures energy and predicts it live, window by window.

    Steps are grouped into windows of at least ``window_s`` seconds (by default the sensors'
    minimum trustworthy window, and at least 2 s: 2 s for an NVML counter). Each window's
    energy is predicted from its operation features *before* its measurement is seen, then the
    measurement refines the online regression. Training, validation and test windows are kept apart.

    Progress bar (rank-local; given through ``pl_module.log(..., prog_bar=True, logger=False)``
    at the first train step after each window close, so any Lightning progress bar shows it
    and keeps it until the next close): at most three items, each rounded to 3 significant
    digits, in one unit chosen once per run from its expected energy (``J``, ``kJ``, ``MJ``...,
    shown here as ``kJ``), once that is known well enough (a forecast within ±25 %, or half
    the run's steps done: never from the first window's warm-up, so the items appear from a
    later window close on):
        ``energy_kJ`` measured energy so far (``energy_est_kJ`` when a sensor only estimates);
        ``pred_err_%`` mean relative error of the model's last 10 predictions, each made
        before its window was measured; ``run_kJ`` the forecast of the whole run's energy
        (energy so far plus the model's prediction for the steps left at the recent steady
        seconds per step, the first window's warm-up left out), shown once its
        interval is within ±25 % and updated at each window close while it stays so.
    The bar is left as built: Lightning's Rich bar prints them with its theme's ``metrics_format``
    (``.3f``: ``13.800``; ``.3g``: ``13.8``) and wraps them past about 37 of 120 columns.

    Logged at each window close (to ``trainer.loggers``, rank 0, at the step Lightning logs that
    batch's own ``self.log`` values at, see :func:`logger_step`),
    with ``LOOP`` one of ``train``, ``validate``, ``test``:
        ``energy/LOOP_window_measured_J``, ``energy/LOOP_window_predicted_J``,
        ``energy/LOOP_window_rel_error`` (predicted / measured - 1), ``energy/LOOP_window_power_W``,
        ``energy/LOOP_window_TOs``, ``energy/LOOP_window_duration_s``; a key is left out of a
        window when its value does not exist (no measurement, no prediction yet). And
        ``energy/total_measured_J``, ``energy/total_predicted_J`` (the predictions of the
        windows that had one plus, at their measured joules, the windows closed before the
        model could predict, so that measured minus predicted is the model's accumulated error;
        left out before the first prediction, under DDP before any rank's, where a rank
        without a prediction yet adds its measured joules; the report's ``predicted_j`` sums
        the predictions only), ``energy/precision_pct``
        (100 x (1 - mean relative error)), summed over all ranks under DDP at the trainer's
        ``log_every_n_steps`` cadence; and once a fitted train window exists in a run of known
        length, ``energy/forecast_J``, ``energy/forecast_low_J``, ``energy/forecast_high_J``
        (the whole run's forecast and its interval, this rank).

    At the end of ``fit`` (or of a ``validate`` / ``test`` run) rank 0 saves
    ``energy_report.json``, ``energy_report.csv`` and, with matplotlib, ``energy_report.png``
    in ``report_dir`` (default: the trainer's log directory; a later ``fit``, ``validate``
    or ``test`` of the same trainer writes the same names there and replaces them: copy them,
    or give that run a callback with another ``report_dir``, to keep both). Once the progress
    bar has
    closed it prints a summary of at most 15 lines: the energy and what measured it, each
    loop's steps and joules, the prediction accuracy, a train step's joules, TOs and top
    layers, how many notices the full report holds, and the files written (with the
    ``lightning-to-energy report FILE`` command that prints the full report), why the PNG was
    not (e.g. matplotlib missing) and the calibration saved. ``verbose=True`` prints the full
    report instead. A run ended by an exception or Ctrl-C saves and prints the same, its
    second line saying why (``interrupted (KeyboardInterrupt): ...``), before Lightning
    re-raises the exception (or exits with status 1). The report is kept in :attr:`report`,
    and the files written in :attr:`report_files` (a
    :class:`~lightning_to_energy.reporting.files.SavedReport`; rank 0, None when saving
    failed). The report's warnings say when no calibration was saved, and why (e.g.
    estimated joules are never saved to the automatic store). Notices during the run are
    :class:`~lightning_to_energy.notices.EnergyWarning` warnings, printed one line each.

    Under ``strategy="ddp_spawn"`` (and other launchers that run the fit in child processes)
    the callback runs in the workers: in the process that called ``fit``, :attr:`report` stays
    None. Read the report the workers saved instead: ``load_report(report_dir)``
    (:func:`lightning_to_energy.reporting.codec.load_report`), with ``report_dir`` set explicitly.

    Checkpoints carry the windows, totals and model state (under DDP, every rank's, so each
    rank resumes its own); the open window is saved as it stands but not closed, so frequent
    checkpoints do not cut the run's windows short. A state that does not fit (other
    ``features``, another release) is one warning, and the energy totals start again from the
    resume.

    Args:
        sensors: ``"auto"`` to discover NVML, RAPL and, where neither measures, a labelled
            CPU-time estimate; backend names that must work, as one string (``"nvml"``,
            ``"nvml,estimate"``) or a list (``["rapl"]``), from ``nvml``, ``rapl``,
            ``estimate``, ``fake``; a sequence of sensor objects; a callable ``(local_rank,
            device) -> sequence of sensors``; or ``None``.
        window_s: minimum window length in seconds (default: the sensors' minimum, at least
            2 s); > 0 and not below a hardware sensor's update period (ValueError), and
            below a sensor's minimum trustworthy window (2 s on NVML) it warns.
        features: regression features (default ``regression.FEATURES``).
        calibration: ``"auto"`` (per-hardware store in the user cache directory), a JSON
            file path (a calibration saved by ``TOEnergy`` or written by
            ``lightning-to-energy fit --out FILE``; created at the end when missing), or
            ``None``. On a GPU of the hardware table the first window is predicted from the
            physical step model: the calibration's own (``calibrate``, ``fit`` on the shared
            steps), else the built-in calibration of that GPU (``h100-sxm``; a saved
            regression's windows still seed the model), else its datasheet priors; the
            report's prior line names which (``docs/regression.md``).
        cost_model: a :class:`CostModel`, or a TOML/JSON file of overrides.
        recheck_every: count one step in this many of a cached signature (1 counts every
            step; the default 1000 re-counts after 999 replays).
        max_windows: windows kept one by one; older ones are folded into per-loop totals
            (totals stay exact; memory and checkpoints stay bounded on long runs).
        report_dir: where the report files go; ``None`` means the trainer's ``log_dir``.
        print_report: print the end-of-run summary (or, with ``verbose``, the full report) on
            rank 0; False prints nothing (the files are still written).
        verbose: print the full report at the end instead of the summary.
        plot: draw ``energy_report.png`` (when matplotlib is installed); False skips it (the
            drawing takes about half a second at the end of each fit).
        clock: monotonic clock in seconds (injectable for tests).

    Raises:
        ValueError: an argument has the wrong type or range (an unknown sensor name: the
            message lists the valid ones), or ``calibration`` is a directory (raised at
            construction).
        SensorError: a sensor backend named in ``sensors`` cannot work here (at the start of
            the run; ``"auto"`` never raises).

    Example::

        from lightning.pytorch import Trainer
        from lightning_to_energy import TOEnergy

        energy = TOEnergy()
        trainer = Trainer(max_epochs=3, callbacks=[energy])
        trainer.fit(model, datamodule)
        print(energy.report.measured_j)  # energy.report is None under ddp_spawn: see above
    """

    def __init__(
        self,
        sensors: str
        | Sequence[str]
        | Sequence[Sensor]
        | Callable[[int, torch.device], Sequence[Sensor]]
        | None = "auto",
        *,
        window_s: float | None = None,
        features: Sequence[str] = FEATURES,
        calibration: str | Path | None = "auto",
        cost_model: CostModel | str | Path | None = None,
        recheck_every: int = 1000,
        max_windows: int = 20_000,
        report_dir: str | Path | None = None,
        print_report: bool = True,
        verbose: bool = False,
        plot: bool = True,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        # Every argument is checked now, not at the first training step (the tracker is built
        # when the rank and the device are known), with the tracker's own checks.
        self._sensor_request = parse_sensors(sensors, factory_ok=True)
        self._kwargs: dict[str, Any] = tracker_arguments(
            window_s=window_s,
            features=features,
            calibration=calibration,
            cost_model=cost_model,
            recheck_every=recheck_every,
            max_windows=max_windows,
            report_dir=report_dir,
            print_report=print_report,
            verbose=verbose,
            plot=plot,
            clock=clock,
        )
        self._sensors = sensors
        self.report_dir = Path(report_dir) if report_dir is not None else None
        self.print_report = print_report
        self.verbose = verbose
        self._to_print: tuple[EnergyReport, list[str]] | None = None
        self.plot = plot
        self.tracker: EnergyTracker | None = None
        self.report: EnergyReport | None = None
        self.report_files: SavedReport | None = None
        self._pending_state: dict[str, Any] | None = None
        self._plan = BatchPlan()  # which batches step the optimizer; a manual run's length
        self._notes: list[str] = []  # for the report: e.g. a checkpoint state left unused
        self._log = WindowLog()  # the loggers' metrics and the bar's items

    # --- set-up ---------------------------------------------------------------------------

    def _ensure_tracker(self, trainer: Trainer, pl_module: LightningModule) -> EnergyTracker:
        if self.tracker is not None:
            return self.tracker
        tracker = new_tracker(
            trainer, pl_module, self._sensors, self._sensor_request.factory, self._kwargs
        )
        if self._pending_state is not None:
            tracker.load_state_dict(self._pending_state)
            self._pending_state = None
        self._log.skip_restored(tracker)  # logged by the run that closed them: never again
        tracker.start()
        self.tracker = tracker
        return tracker

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        tracker = self._ensure_tracker(trainer, pl_module)
        optimizers = trainer.optimizers
        tracker.optimizer = optimizers[0] if optimizers else None
        self._plan.start(trainer, pl_module)

    # --- train steps ----------------------------------------------------------------------

    @override
    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        tracker = self.tracker or self._ensure_tracker(trainer, pl_module)
        will_step = self._plan.will_step(trainer, batch_idx)
        tracker.begin_step(batch, loop="train", will_step=will_step)
        tracker.set_phase("forward")

    @override
    def on_before_backward(
        self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor
    ) -> None:
        if self.tracker is not None:
            self.tracker.set_phase("backward")

    @override
    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: Any
    ) -> None:
        if self.tracker is not None:
            self.tracker.set_phase("optimizer")

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._end_step(trainer, pl_module, "train")
        if self._log.bar_due:
            self._log.show_in_bar(self.tracker, pl_module)
        self._plan.batch_done(trainer, self.tracker)

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.tracker is not None:
            self._log_window(trainer, self.tracker.close_window(boundary=True))
        if self._log.bar_due:  # windows closed since the epoch's last batch (its validation)
            self._log.show_in_bar(self.tracker, pl_module, epoch_end=True)

    # --- validation and test steps --------------------------------------------------------

    @override
    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # The train window open when validation begins (mid-epoch, or at the epoch's end,
        # before on_train_epoch_end) ends here: close it and log it, rather than leave its
        # close to the first validation step, which does not log it.
        if not trainer.sanity_checking and self.tracker is not None:
            self._log_window(trainer, self.tracker.close_window(boundary=True))

    @override
    def on_validation_batch_start(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not trainer.sanity_checking:
            self._begin_eval(trainer, pl_module, batch, "validate")

    @override
    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not trainer.sanity_checking:
            self._end_step(trainer, pl_module, "validate")

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or self.tracker is None:
            return
        self._log_window(trainer, self.tracker.close_window(boundary=True))
        if trainer.state.fn == "validate":
            self._finish(trainer)

    @override
    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.tracker is not None:  # as in on_validation_start
            self._log_window(trainer, self.tracker.close_window(boundary=True))

    @override
    def on_test_batch_start(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._begin_eval(trainer, pl_module, batch, "test")

    @override
    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._end_step(trainer, pl_module, "test")

    @override
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._finish(trainer)

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._finish(trainer)

    def _begin_eval(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, loop: str
    ) -> None:
        tracker = self._ensure_tracker(trainer, pl_module)
        tracker.begin_step(batch, loop=loop, will_step=False)
        tracker.set_phase("forward")

    def _end_step(self, trainer: Trainer, pl_module: LightningModule, loop: str) -> None:
        tracker = self.tracker
        if tracker is None:
            return
        record = tracker.end_step(loop=loop)
        if record is not None:
            self._log_window(trainer, record)
        if loop == "train":
            self._log.train_batches += 1
            if trainer.world_size > 1:
                self._log.reduce_totals(trainer, pl_module, self.tracker)

    @override
    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        # The run ended by an exception or Ctrl-C (Lightning calls this hook for both, then
        # re-raises or exits): no dispatch mode or hook of ours may outlive it, every sensor
        # and sampler thread is released, the windows measured so far are reported (marked
        # "interrupted"), and the callback is left clean for the next fit. Lightning calls no
        # teardown hook after an exception, so the summary is printed here (below the bar,
        # stopped first): a user who pressed Ctrl-C sees the joules spent. A failure here is
        # one warning: it must never take the place of the exception Lightning re-raises.
        try:
            if self.tracker is not None:
                reason = interruption_reason(exception)
                self.tracker.interrupt(reason)
                self._finish(trainer, interrupted=reason)
        except Exception as exc:
            notices.warn(
                f"lightning-to-energy: the energy report of the interrupted run failed "
                f"({type(exc).__name__}: {exc}); the exception that ended the run follows."
            )
        stage = trainer.state.fn.value if trainer.state.fn is not None else ""
        self._print_queued(trainer, pl_module, stage)

    # --- display and logging --------------------------------------------------------------

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # A new fit/validate/test: Lightning's bar starts empty, and the unit is chosen anew.
        self._log.new_run()
        self._to_print = None
        if self.tracker is not None:
            # An earlier run that never reached its end (on_exception did not run): its steps
            # must not count in this one, and its sensors must not stay open.
            stale, self.tracker = self.tracker, None
            with contextlib.suppress(Exception):
                stale.close(save_calibration=False, interrupted="never finished")

    def _log_window(self, trainer: Trainer, record: WindowRecord | None) -> None:
        self._log.log_window(trainer, self.tracker, record)

    # --- the end --------------------------------------------------------------------------

    def _finish(self, trainer: Trainer, interrupted: str | None = None) -> None:
        tracker = self.tracker
        if tracker is None:
            return
        try:
            report = finish_run(trainer, tracker, self._notes, self._log_window, interrupted)
            self._notes = []
            self.report = report
            self._emit(trainer, report, tracker.calibration_path)
        except BaseException:
            # finish_run releases the sensors itself, whatever fails inside it; this is for a
            # failure before it got there: no sensor or sampler thread outlives the run.
            close_sensors(tracker.sensors)
            raise
        finally:
            # Whatever failed, the next run starts a tracker of its own.
            self.tracker = None

    @rank_zero_only
    def _emit(self, trainer: Trainer, report: EnergyReport, calibration: Path | None) -> None:
        directory = self.report_dir or Path(trainer.log_dir or trainer.default_root_dir)
        self.report_files = None
        self.report_files = save_report_files(report, directory, plot=self.plot)
        if self.print_report:
            # Printed in teardown (or on_exception), once the bar has closed (see there).
            self._to_print = (report, files_lines(self.report_files, directory, calibration))

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._print_queued(trainer, pl_module, stage)

    def _print_queued(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Print what :meth:`_emit` queued (rank 0 only queues), once; a failure to print is
        one warning, never an exception out of the run's end."""
        if self._to_print is None:
            return
        (report, files), self._to_print = self._to_print, None
        try:
            print_summary(trainer, pl_module, stage, report, files, verbose=self.verbose)
        except Exception as exc:
            notices.warn(
                f"lightning-to-energy: the energy summary could not be printed "
                f"({type(exc).__name__}: {exc}); the report files hold it."
            )

    # --- checkpoint state -----------------------------------------------------------------

    @override
    def state_dict(self) -> dict[str, Any]:
        if self.tracker is not None:
            state = self.tracker.state_dict()
        else:  # resumed but not started yet: the restored state, as it was loaded
            state = dict(self._pending_state or {})
        return gather_rank_states(state)

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = own_rank_state(state_dict, self._note)
        if not state or not restorable_state(state, self._kwargs, self._note):
            return
        if self.tracker is not None:
            self.tracker.load_state_dict(state)
            self._log.skip_restored(self.tracker)
        else:
            self._pending_state = state

    def _note(self, message: str) -> None:
        """One warning (rank 0) and a line in the report."""
        self._notes.append(message)
        notices.install_format()
        rank_zero_warn(f"lightning-to-energy: {message}", category=notices.EnergyWarning)
