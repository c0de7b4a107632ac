"""``TOEnergy``: the Lightning callback. It decides *when*; :class:`EnergyTracker` does the work.

What it shows (progress bar items, logged metric keys, the files lines) is in
:mod:`lightning_to_energy.callbacks.display`; what it reads of the trainer in
:mod:`lightning_to_energy.callbacks.trainer_info`.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, RichProgressBar
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from typing_extensions import override

from lightning_to_energy import notices
from lightning_to_energy._arguments import (
    check_bool,
    check_calibration,
    check_clock,
    check_directory_arg,
    check_features,
    check_positive_int,
    check_window_s,
)
from lightning_to_energy.calibration.store import CalibrationStore
from lightning_to_energy.counting.cost_model import CostModel, as_cost_model
from lightning_to_energy.model.regression import FEATURES
from lightning_to_energy.reporting.records import EnergyReport, WindowRecord
from lightning_to_energy.sensors.base import Sensor
from lightning_to_energy.sensors.spec import parse_sensors
from lightning_to_energy.tracking.ledger import merge_archives
from lightning_to_energy.tracking.notes import interruption_reason
from lightning_to_energy.tracking.steps import PROFILE_FEATURES
from lightning_to_energy.tracking.tracker import EnergyTracker

if TYPE_CHECKING:
    from lightning_to_energy.reporting.files import SavedReport
from lightning_to_energy.callbacks.checkpoint import (
    gather_rank_states,
    own_rank_state,
    restorable_state,
)
from lightning_to_energy.callbacks.display import (
    FORECAST_KEYS,
    BarUnit,
    bar_items,
    bar_unit,
    files_lines,
    run_scale_j,
    window_metrics,
)
from lightning_to_energy.callbacks.trainer_info import planned_train_batches

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
    shown here as ``kJ``):
        ``energy_kJ`` measured energy so far (``energy_est_kJ`` when a sensor only estimates);
        ``pred_err_%`` mean relative error of the model's last 10 predictions, each made
        before its window was measured; ``run_kJ`` the forecast of the whole run's energy
        (energy so far plus the model's prediction for the steps left), shown once its
        interval is within ±25 % and updated at each window close while it stays so.

    Logged at each window close (to ``trainer.loggers``, rank 0, step = ``trainer.global_step``),
    with ``LOOP`` one of ``train``, ``validate``, ``test``:
        ``energy/LOOP_window_measured_J``, ``energy/LOOP_window_predicted_J``,
        ``energy/LOOP_window_rel_error`` (predicted / measured - 1), ``energy/LOOP_window_power_W``,
        ``energy/LOOP_window_TOs``, ``energy/LOOP_window_duration_s``; a key is left out of a
        window when its value does not exist (no measurement, no prediction yet). And
        ``energy/total_measured_J``, ``energy/total_predicted_J``, ``energy/precision_pct``
        (100 x (1 - mean relative error)), summed over all ranks under DDP at the trainer's
        ``log_every_n_steps`` cadence; and once a fitted train window exists in a run of known
        length, ``energy/forecast_J``, ``energy/forecast_low_J``, ``energy/forecast_high_J``
        (the whole run's forecast and its interval, this rank).

    At the end of ``fit`` (or of a ``validate`` / ``test`` run) rank 0 saves
    ``energy_report.json``, ``energy_report.csv`` and, with matplotlib, ``energy_report.png``
    in ``report_dir`` (default: the trainer's log directory). Once the progress bar has
    closed it prints a summary of at most 15 lines: the energy and what measured it, each
    loop's steps and joules, the prediction accuracy, a train step's joules, TOs and top
    layers, how many notices the full report holds, and the files written (with the
    ``lightning-to-energy report FILE`` command that prints the full report), why the PNG was
    not (e.g. matplotlib missing) and the calibration saved. ``verbose=True`` prints the full
    report instead. The report is kept in :attr:`report`, and the files written in
    :attr:`report_files` (a :class:`~lightning_to_energy.reporting.files.SavedReport`; rank 0,
    None when
    saving failed). The report's warnings say when no calibration was saved, and why (e.g.
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
            ``None``.
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
        check_window_s(window_s)
        features = check_features(features, tuple(PROFILE_FEATURES))
        check_calibration(calibration)
        if calibration is not None and calibration != "auto":
            CalibrationStore.from_path(calibration)  # a directory is refused now
        cost_model = as_cost_model(cost_model)
        check_positive_int("recheck_every", recheck_every, 1000)
        check_positive_int("max_windows", max_windows, 20_000)
        check_directory_arg("report_dir", report_dir)
        check_bool("print_report", print_report)
        check_bool("plot", plot)
        check_clock(clock)
        self._sensors = sensors
        self._kwargs: dict[str, Any] = {
            "window_s": window_s,
            "features": features,
            "calibration": calibration,
            "cost_model": cost_model,
            "recheck_every": recheck_every,
            "max_windows": max_windows,
            "clock": clock,
        }
        self.report_dir = Path(report_dir) if report_dir is not None else None
        self.print_report = print_report
        self.verbose = bool(verbose)
        self._to_print: tuple[EnergyReport, list[str]] | None = None
        self.plot = bool(plot)
        self.tracker: EnergyTracker | None = None
        self.report: EnergyReport | None = None
        self.report_files: SavedReport | None = None
        self._pending_state: dict[str, Any] | None = None
        # Accumulation factor and batches per epoch, read once per epoch (see
        # on_train_batch_start): the optimizer steps on every accumulate-th batch and on the
        # epoch's last batch.
        self._accumulate = 1
        self._epoch_batches: float = math.inf
        self._epoch = -1
        self._global_step_before: int | None = None  # see on_train_start
        self._notes: list[str] = []  # for the report: e.g. a checkpoint state left unused
        self._logged_index = -1  # the latest window handed to the loggers
        self._train_batches = 0
        self._bar_unit: BarUnit | None = None  # chosen once per run: see _show_in_bar
        self._bar_due = False  # a window closed since the bar was last given its items
        self._totals = (0.0, 0.0)

    # --- set-up ---------------------------------------------------------------------------

    def _ensure_tracker(self, trainer: Trainer, pl_module: LightningModule) -> EnergyTracker:
        if self.tracker is not None:
            return self.tracker
        device = pl_module.device
        local_rank = trainer.local_rank
        sensors: Any = self._sensors
        factory = self._sensor_request.factory
        if factory is not None:
            # Checked by the tracker like any sensors argument: a factory returning names or
            # junk fails here, at the start, saying what it returned.
            sensors = list(factory(local_rank, device))
        sync = torch.cuda.synchronize if device.type == "cuda" else None
        # Only a fit has a length to forecast.
        total_steps = planned_train_batches(trainer) if trainer.state.fn == "fit" else None
        tracker = EnergyTracker(
            pl_module,
            sensors=sensors,
            sync=sync,
            device=device,
            local_rank=local_rank,
            rank=trainer.global_rank,
            total_steps=total_steps,
            **self._kwargs,
        )
        if self._pending_state is not None:
            tracker.load_state_dict(self._pending_state)
            self._pending_state = None
        self._skip_restored_windows(tracker)
        tracker.start()
        self.tracker = tracker
        return tracker

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        tracker = self._ensure_tracker(trainer, pl_module)
        optimizers = trainer.optimizers
        tracker.optimizer = optimizers[0] if optimizers else None
        self._epoch = -1  # read the accumulation settings again at the first batch
        # Manual optimization may step several optimizers a batch, and max_steps counts every
        # step: the run's length in batches is known once one batch has run (see
        # _plan_manual_run).
        self._global_step_before = None
        if not pl_module.automatic_optimization and trainer.max_steps > 0:
            self._global_step_before = -1

    # --- train steps ----------------------------------------------------------------------

    @override
    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        tracker = self.tracker or self._ensure_tracker(trainer, pl_module)
        if self._global_step_before is not None:
            self._global_step_before = trainer.global_step
        epoch = trainer.current_epoch
        if epoch != self._epoch:
            # Once per epoch, at its first batch (after every on_train_epoch_start, where a
            # GradientAccumulationScheduler changes the factor), not on every step.
            self._epoch = epoch
            self._accumulate = max(int(trainer.accumulate_grad_batches), 1)
            self._epoch_batches = trainer.num_training_batches
        # As Lightning decides: the optimizer also steps on the epoch's last batch.
        will_step = (batch_idx + 1) % self._accumulate == 0 or batch_idx + 1 == self._epoch_batches
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
        if self._bar_due:
            self._show_in_bar(pl_module)
        if self._global_step_before is not None:
            self._plan_manual_run(trainer, trainer.global_step - self._global_step_before)
            self._global_step_before = None

    def _plan_manual_run(self, trainer: Trainer, steps_per_batch: int) -> None:
        """Under manual optimization, turn ``max_steps`` (optimizer steps) into batches, with
        the optimizer steps the first batch took; epochs still cap the run."""
        tracker = self.tracker
        if tracker is None or tracker.total_steps is None or steps_per_batch <= 1:
            return
        done = tracker.steps("train")
        by_steps = math.ceil((trainer.max_steps - trainer.global_step) / steps_per_batch)
        tracker.total_steps = done + max(min(tracker.total_steps - done, by_steps), 0)

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.tracker is not None:
            self._log_window(trainer, self.tracker.close_window(boundary=True))

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
            self._train_batches += 1
            if trainer.world_size > 1:
                self._reduce_totals(trainer, pl_module)

    @override
    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        # The run ended by an exception or Ctrl-C (Lightning calls this hook for both, then
        # re-raises or exits): no dispatch mode or hook of ours may outlive it, every sensor
        # and sampler thread is released, the windows measured so far are reported (marked
        # "interrupted"), and the callback is left clean for the next fit.
        if self.tracker is not None:
            reason = interruption_reason(exception)
            self.tracker.interrupt(reason)
            self._finish(trainer, interrupted=reason)

    # --- display and logging --------------------------------------------------------------

    def _show_in_bar(self, pl_module: LightningModule) -> None:
        """Hand the bar its items through ``pl_module.log(prog_bar=True, logger=False)``.

        Called from ``on_train_batch_end`` (the train hook where a callback may log per step)
        once a window has closed since the last call: Lightning keeps a logged bar value until
        it is logged again, so the numbers stay between window closes and across epochs, in
        the TQDM and the Rich bar alike, and the bar itself is left as Lightning built it.
        """
        self._bar_due = False
        tracker = self.tracker
        if tracker is None:
            return
        live = tracker.live()
        if self._bar_unit is None:
            if live.measured_j <= 0.0:
                return  # nothing measured yet: no unit to choose
            self._bar_unit = bar_unit(
                run_scale_j(live, tracker.total_steps, tracker.steps("train")),
                estimate=live.kind == "estimate",
            )
        for name, value in bar_items(live, self._bar_unit).items():
            # A CPU float64 tensor: Lightning keeps it where it is, so the bar reads it back
            # without a device sync and without float32 noise in the rounded digits.
            pl_module.log(
                name,
                torch.tensor(value, dtype=torch.float64),
                prog_bar=True,
                logger=False,
                on_step=True,
                on_epoch=False,
                batch_size=1,
            )

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # A new fit/validate/test: Lightning's bar starts empty, and the unit is chosen anew.
        self._bar_unit = None
        self._bar_due = False
        self._to_print = None
        if self.tracker is not None:
            # An earlier run that never reached its end (on_exception did not run): its steps
            # must not count in this one, and its sensors must not stay open.
            stale, self.tracker = self.tracker, None
            with contextlib.suppress(Exception):
                stale.close(save_calibration=False, interrupted="never finished")
        self._train_batches = 0
        self._totals = (0.0, 0.0)

    def _log_window(self, trainer: Trainer, record: WindowRecord | None) -> None:
        if record is not None:
            self._logged_index = max(self._logged_index, record.index)
            self._bar_due = True
        if record is None or trainer.global_rank != 0 or not trainer.loggers:
            return
        metrics = window_metrics(record)
        if trainer.world_size == 1:
            assert self.tracker is not None
            live = self.tracker.live()
            self._totals = (live.measured_j, live.predicted_j or 0.0)
        metrics["energy/total_measured_J"], metrics["energy/total_predicted_J"] = self._totals
        assert self.tracker is not None
        precision = self.tracker.model.accuracy().precision_pct
        if precision is not None and math.isfinite(precision):
            metrics["energy/precision_pct"] = float(precision)
        forecast = self.tracker.live().forecast
        if forecast is not None:
            values = (forecast.total_j, forecast.low_j, forecast.high_j)
            metrics.update(zip(FORECAST_KEYS, values, strict=True))
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    def _reduce_totals(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Every rank runs the same train batches, so a cadence counted here (not by the
        # tracker, which may have stood aside on one rank) keeps the collective in lockstep;
        # window closes are time-based and differ between ranks.
        every = max(int(getattr(trainer, "log_every_n_steps", 50)), 1)
        if self._train_batches % every != 0 or self.tracker is None:
            return
        live = self.tracker.live()
        local = torch.tensor(
            [live.measured_j, live.predicted_j or 0.0], dtype=torch.float64, device=pl_module.device
        )
        total = trainer.strategy.reduce(local, reduce_op="sum")
        self._totals = (float(total[0]), float(total[1]))

    # --- the end --------------------------------------------------------------------------

    def _finish(self, trainer: Trainer, interrupted: str | None = None) -> None:
        tracker = self.tracker
        if tracker is None:
            return
        try:
            self._finish_run(trainer, tracker, interrupted)
        finally:
            # Whatever failed, the next run starts a tracker of its own.
            self.tracker = None

    def _finish_run(
        self, trainer: Trainer, tracker: EnergyTracker, interrupted: str | None
    ) -> None:
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
                    self._log_window(trainer, last)
                else:
                    tracker.close()
            except Exception as exc:
                what = "logging its last window" if part == "log" else "the end of the run"
                notices.warn(
                    f"lightning-to-energy: {what} failed on rank {trainer.global_rank} "
                    f"({type(exc).__name__}: {exc}); reporting the windows closed so far.",
                    stacklevel=2,
                )
        windows: list[WindowRecord] = list(tracker.windows)
        sensors = tracker.sensor_infos()
        if interrupted is not None and trainer.world_size > 1:
            # The other ranks may never reach a collective: this rank reports its own part.
            self._notes.append(
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
        report = tracker.build_report(
            windows,
            world_size=trainer.world_size,
            archived=archived,
            extra_warnings=self._notes,
            sensors=sensors,
        )
        self._notes = []
        self.report = report
        self._emit(trainer, report, tracker.calibration_path)

    @rank_zero_only
    def _emit(self, trainer: Trainer, report: EnergyReport, calibration: Path | None) -> None:
        from lightning_to_energy.reporting.files import save_report

        directory = self.report_dir or Path(trainer.log_dir or trainer.default_root_dir)
        self.report_files = None
        try:
            # None: draw when matplotlib is there; False: never
            self.report_files = save_report(report, directory, plot=None if self.plot else False)
        except OSError as exc:
            notices.warn(
                f"lightning-to-energy: energy report not saved to {directory}: {exc}",
                stacklevel=2,
            )
        if self.print_report:
            # Printed in teardown, once the bar has closed (see there).
            self._to_print = (report, files_lines(self.report_files, directory, calibration))

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._to_print is None:
            return
        report, files = self._to_print
        self._to_print = None
        bar = trainer.progress_bar_callback
        if isinstance(bar, RichProgressBar):
            # Lightning stops a Rich bar in its own teardown, which runs after this one (the
            # default bar is appended after the user's callbacks): printed while it is live,
            # the summary would sit above a bar redrawn below it. Its teardown only stops the
            # bar, so call it first (Lightning's own call then finds it stopped; in a
            # non-interactive console Rich prints one blank line for it).
            bar.teardown(trainer, pl_module, stage)
        from lightning_to_energy.reporting.console import render_report, summary_lines

        if self.verbose:
            render_report(report)
            print("\n".join(files))
        else:
            print("\n".join([*summary_lines(report), *files]))

    # --- checkpoint state -----------------------------------------------------------------

    @override
    def state_dict(self) -> dict[str, Any]:
        if self.tracker is not None:
            state = self.tracker.state_dict()
        else:  # resumed but not started yet: the restored state, as it was loaded
            state = dict(self._pending_state or {})
        state = gather_rank_states(state)
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = own_rank_state(state_dict, self._note)
        if not state or not restorable_state(state, self._kwargs, self._note):
            return
        if self.tracker is not None:
            self.tracker.load_state_dict(state)
            self._skip_restored_windows(self.tracker)
        else:
            self._pending_state = state

    def _skip_restored_windows(self, tracker: EnergyTracker) -> None:
        """Restored windows were logged by the run that closed them: never log them again."""
        self._logged_index = tracker.windows[-1].index if tracker.windows else -1

    def _note(self, message: str) -> None:
        """One warning (rank 0) and a line in the report."""
        self._notes.append(message)
        notices.install_format()
        rank_zero_warn(f"lightning-to-energy: {message}", category=notices.EnergyWarning)
