"""The run's open window: opened where the last one closed, its steps added, closed when due
into a record (predicted before its measurement is seen, then fitted), or snapshotted for a
checkpoint without closing it.

:class:`~lightning_to_energy.tracking.tracker.EnergyTracker` owns one :class:`WindowRun` and
passes it what may change between calls (the model, the rank, ``window_s``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lightning_to_energy.model.regression import OnlineEnergyModel
from lightning_to_energy.reporting.records import WindowRecord
from lightning_to_energy.sensors.base import Sensor
from lightning_to_energy.sensors.meter import Measurement
from lightning_to_energy.tracking.config import check_started_window
from lightning_to_energy.tracking.ledger import OpenWindow, WindowLedger
from lightning_to_energy.tracking.metering import WindowMeter
from lightning_to_energy.tracking.notes import Notes
from lightning_to_energy.tracking.record import record_window
from lightning_to_energy.tracking.steps import StepAccounting

__all__ = ["WindowRun"]


class WindowRun:
    """The open window, the run's clock, and the closed windows' ledger.

    Args:
        acct: the step accounting (the steps and their features).
        ledger: where closed windows go.
        notes: the report's warnings.
        clock: monotonic seconds.
        profile_features: the features a step profile holds (the window's sums, in order).
    """

    def __init__(
        self,
        acct: StepAccounting,
        ledger: WindowLedger,
        notes: Notes,
        clock: Callable[[], float],
        profile_features: tuple[str, ...],
    ) -> None:
        self.acct = acct
        self.ledger = ledger
        self.notes = notes
        self.clock = clock
        self.profile_features = profile_features
        self.meter: WindowMeter | None = None  # the sensors' meter, once started
        self.window: OpenWindow | None = None
        self.window_t0 = 0.0
        self.t0 = 0.0  # the run's start on the clock
        self.elapsed_before_s = 0.0  # run time restored from a checkpoint
        # Why the run ended early (see EnergyTracker.close): marks the open window and the report.
        self.interrupted: str | None = None
        # Called with the model before a window is predicted (the live prior is set there once
        # the first step is counted: tracking/live_prior.py).
        self.before_record: Callable[[OnlineEnergyModel], None] | None = None

    def open_meter(
        self, sensors: Sequence[Sensor], window_s: float | None, sync: Callable[[], None] | None
    ) -> WindowMeter:
        """Start the meter over ``sensors``, once a requested ``window_s`` passed their check.

        Raises:
            ValueError: ``window_s`` is below a sensor's update period.
        """
        if window_s is not None:
            note = check_started_window(window_s, sensors)
            if note is not None:
                self.notes.warn_once("window-short", note)
        self.meter = WindowMeter(sensors, self.clock, sync, self.notes)
        return self.meter

    def stop_meter(self) -> None:
        """Stop the meter: the time after the last step belongs to no window."""
        if self.meter is not None:
            self.meter.stop()

    def elapsed_s(self, started: bool) -> float:
        """The run's seconds so far, those restored from a checkpoint included."""
        return self.elapsed_before_s + (self.clock() - self.t0 if started else 0.0)

    def open(self, loop: str) -> OpenWindow:
        """Open a window of ``loop``, at the last window's closing edge when the meter runs."""
        self.acct.new_window()
        window = OpenWindow(loop=loop, first_step=self.acct.steps.get(loop, 0))
        window.sums = [0.0] * (len(self.profile_features) + 3)
        if self.meter is not None and self.meter.is_open:
            # Windows tile time: the last window's closing edge opened this one.
            window.meter_open = True
            self.window = window
            self.window_t0 = self.meter.opened_s
            return window
        if self.meter is not None:
            self.meter.open(window)
        self.window_t0 = self.clock()
        self.window = window
        return window

    def add_step(self, window_s: float) -> bool:
        """Add the step that just ended to the open window.

        Returns:
            Whether the window is due to close (it has lasted ``window_s``, with a meter).
        """
        window = self.window
        if window is None:
            return False
        done = self.acct.finish()
        if done is None:
            return False
        pid, vector = done
        sums = window.sums
        for i, value in enumerate(vector):
            sums[i] += value
        window.steps += 1
        self.acct.add(window.loop, pid, vector)
        return self.meter is not None and self.clock() - self.window_t0 >= window_s

    def close(self, model: OnlineEnergyModel, *, rank: int, boundary: bool) -> WindowRecord | None:
        """Close the open window into the ledger; None when there was none to keep.

        A step begun in it and not ended is dropped first, so that its dispatch mode does not
        outlive it.
        """
        if self.acct.in_step:
            self.acct.abort()
        window = self.window
        self.window = None
        if window is None or (window.steps == 0 and self.interrupted is None):
            # A window without steps keeps the meter running: its time goes to the next one.
            # (An interrupted one is kept: the step that raised spent its joules in it.)
            return None
        measurement = None if self.meter is None else self.meter.close(window)
        record, _ = self.record(window, measurement, model, rank=rank, boundary=boundary)
        self.ledger.append(record)
        return record

    def record(
        self,
        window: OpenWindow,
        measurement: Measurement | None,
        model: OnlineEnergyModel,
        *,
        rank: int,
        boundary: bool,
        fork: bool = False,
    ) -> tuple[WindowRecord, OnlineEnergyModel]:
        """The record of ``window`` and the model after it (see :func:`record_window`)."""
        if self.before_record is not None:
            self.before_record(model)
        return record_window(
            window,
            measurement,
            model,
            duration_s=(
                measurement.duration_s if measurement is not None else self.clock() - self.window_t0
            ),
            profile_features=self.profile_features,
            index=self.ledger.n_windows,
            start_s=self.elapsed_before_s + (self.window_t0 - self.t0),
            rank=rank,
            boundary=boundary,
            fork=fork,
            notes=self.notes,
            interrupted=self.interrupted is not None,
        )

    def snapshot(
        self, model: OnlineEnergyModel, *, rank: int
    ) -> tuple[WindowRecord, OnlineEnergyModel] | None:
        """The open window as a checkpoint saves it, without closing it in this run.

        The record is what closing the window now would give (a ``boundary`` window, predicted
        first, fitted into a copy of the model when fit-worthy), with the model after it. The
        meter is lapped (one edge, as a close would read) so that the joules so far are exact;
        the live window goes on and closes when due, over its whole length.
        """
        window = self.window
        if window is None or window.steps == 0:
            return None
        measurement = None if self.meter is None else self.meter.lap(window)
        # The live model must not learn a part of a window that it fits whole at the close.
        return self.record(window, measurement, model, rank=rank, boundary=True, fork=True)
