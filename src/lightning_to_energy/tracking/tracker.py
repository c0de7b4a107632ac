"""The framework-free core: count steps, measure windows, predict before measuring.

:class:`EnergyTracker` wires the counter, the meter and the online regression. It knows nothing
of Lightning: :class:`~lightning_to_energy.callbacks.to_energy.TOEnergy` only decides *when* to
call it, and a plain PyTorch loop can drive it directly::

    tracker = EnergyTracker(model, optimizer, sensors=[FakeSensor(power_w=50.0)])
    tracker.start()
    for batch in loader:
        with tracker.step(batch):
            loss = loss_fn(model(batch[0]), batch[1])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    report = tracker.finish()

Steps are grouped into windows lasting at least ``window_s`` (by default the sensors' minimum
trustworthy window, 2 s for an NVML counter). Windows tile time: each opens at the edge where
the last one closed, so the time between steps (loading the next batch) is in a window too.
A step whose signature is new is counted once under the dispatch mode; every later step with that
signature replays the cached profile at the cost of a dictionary look-up and a few additions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from lightning_to_energy.counting.cost_model import CostModel, as_cost_model
from lightning_to_energy.model.regression import (
    FEATURES,
    OnlineEnergyModel,
    warm_up_solver,
)
from lightning_to_energy.reporting.records import (
    EnergyReport,
    Forecast,
    LoopTotals,
    SensorInfo,
    WindowRecord,
)
from lightning_to_energy.sensors.base import Sensor, weakest_kind
from lightning_to_energy.sensors.meter import Meter
from lightning_to_energy.tracking.assembly import (
    sensor_infos,
)
from lightning_to_energy.tracking.calibration_link import CalibrationLink
from lightning_to_energy.tracking.checkpoint import parse_state
from lightning_to_energy.tracking.config import check_arguments
from lightning_to_energy.tracking.forecast import LiveReadout, LiveState
from lightning_to_energy.tracking.ledger import (
    WindowLedger,
)
from lightning_to_energy.tracking.live_prior import LivePriorLink
from lightning_to_energy.tracking.machine import Machine
from lightning_to_energy.tracking.metering import close_sensors, select_sensors
from lightning_to_energy.tracking.notes import Notes, interruption_reason
from lightning_to_energy.tracking.stepping import StepGate
from lightning_to_energy.tracking.steps import StepAccounting
from lightning_to_energy.tracking.summary import RunSummary
from lightning_to_energy.tracking.windows import WindowRun

__all__ = ["DEFAULT_MIN_WINDOW_S", "EnergyTracker", "LiveReadout"]

# The shortest default window, whatever the sensors allow: closing a window refits the model
# (one to two milliseconds on a CPU), so windows must span many steps to keep the overhead
# negligible; NVML counters need 2 s windows anyway (see docs/sensors.md).
DEFAULT_MIN_WINDOW_S = 2.0


class EnergyTracker:
    """Counts, measures and predicts the energy of training steps, window by window.

    Args:
        module: the model whose steps are counted (attribution hooks go on its submodules).
        optimizer: the optimizer (its type is part of the step signature); optional.
        sensors: ``"auto"`` (discover NVML, RAPL, then an estimate), backend names that must
            work (``"nvml,estimate"``, ``["rapl"]``: see
            :mod:`lightning_to_energy.sensors.spec`), a sequence of
            :class:`~lightning_to_energy.sensors.base.Sensor` objects, or ``None`` to count only.
        cost_model: transistor costs: a :class:`CostModel`, a TOML/JSON cost file, or None
            for :meth:`CostModel.default`.
        window_s: minimum window length in seconds (> 0, and not below any sensor's
            ``update_period_s``); default: the sensors' ``min_window_s`` (2 s for an NVML
            counter), and never below ``DEFAULT_MIN_WINDOW_S`` (2 s). Below a sensor's
            ``min_window_s`` it warns: such windows are flagged short and never fitted.
        features: regression features; names from ``FEATURES`` plus ``"tos"`` and ``"flops"``.
        calibration: ``"auto"`` (the per-hardware store in the user cache), a path to a
            calibration JSON file, or ``None`` for no prior and nothing saved.
        recheck_every: count one step in this many of a cached signature (1 counts every
            step; the default 1000 re-counts after 999 replays).
        clock: monotonic seconds; injectable for tests.
        sync: called at window edges so that queued GPU work lands in the right window.
        device: the torch device this process trains on (selects the GPU sensor).
        local_rank: only local rank 0 reads host-wide sensors.
        total_steps: steps the run will take, for the forecast; optional.
        max_windows: windows kept one by one (in memory, checkpoints and the report); older
            ones are folded into per-loop totals, so totals stay exact on runs of any length.

    Raises:
        ValueError: an argument is out of range or of the wrong kind (every one is checked
            here), ``calibration`` is a directory, or ``window_s`` is below a sensor's update
            period (raised by :meth:`start` for sensors found there).
        SensorError: (from :meth:`start`) a backend named in ``sensors`` cannot work here.

    A ``with`` block starts the tracker and closes it at its end, releasing every sensor even
    when the block raises (Ctrl-C included); :meth:`build_report` then gives the partial
    report, marked ``interrupted``.
    """

    def __init__(
        self,
        module: torch.nn.Module | None = None,
        optimizer: Any = None,
        *,
        sensors: str | Sequence[str] | Sequence[Sensor] | None = "auto",
        cost_model: CostModel | str | Path | None = None,
        window_s: float | None = None,
        features: Sequence[str] = FEATURES,
        calibration: str | Path | None = "auto",
        recheck_every: int = 1000,
        clock: Callable[[], float] = time.perf_counter,
        sync: Callable[[], None] | None = None,
        device: torch.device | str | None = None,
        local_rank: int = 0,
        rank: int = 0,
        total_steps: int | None = None,
        max_windows: int = 20_000,
    ) -> None:
        request, features, device = check_arguments(
            module=module,
            optimizer=optimizer,
            sensors=sensors,
            window_s=window_s,
            features=features,
            calibration=calibration,
            recheck_every=recheck_every,
            clock=clock,
            sync=sync,
            device=device,
            local_rank=local_rank,
            rank=rank,
            total_steps=total_steps,
            max_windows=max_windows,
        )
        self.module = module
        self.optimizer = optimizer
        self.cost_model = as_cost_model(cost_model)
        self.features = tuple(features)
        self._profile_features = tuple(f for f in self.features if f != "duration_s")
        self._requested_sensors = request
        self._requested_window_s = window_s
        self._clock = clock
        self._sync = sync
        self.device = device
        self.local_rank = local_rank
        self.rank = rank
        self.total_steps = total_steps

        # The parts (notes, machine, steps, ledger, calibration, windows, summary, live readout,
        # step gate): each module's docstring says what it owns; this class wires them.
        self._notes = Notes()
        self._machine = Machine(self.device, self._notes)
        self._acct = StepAccounting(
            module,
            optimizer,
            self.cost_model,
            self._profile_features,
            recheck_every,
            self._machine.roofline_s,
        )
        self._ledger = WindowLedger(max_windows)
        self._calibration = CalibrationLink(calibration, self._notes)
        self._live_prior = LivePriorLink(self._calibration, self._notes, self._acct)
        self.model = OnlineEnergyModel(self.features)
        self.sensors: list[Sensor] = []
        self.skipped_sensors: dict[str, str] = {}
        self.window_s = window_s or 0.0
        self._windows = WindowRun(
            self._acct, self._ledger, self._notes, clock, self._profile_features
        )
        self._windows.before_record = self._live_prior.apply  # the physical prior, once
        self._summary = RunSummary(
            self._acct, self._ledger, self._machine, self._calibration, self._notes, self._windows
        )
        self._live = LiveState(self._acct, self._windows)  # behind live(), once per close
        self._started = False
        self._gate = StepGate(
            self._acct, self._windows, self._notes, start=self.start, close_window=self.close_window
        )

    # --- the parts, as attributes -----------------------------------------------------------

    @property
    def meter(self) -> Meter | None:
        """The meter over the open window; None without sensors (or before :meth:`start`)."""
        return None if self._windows.meter is None else self._windows.meter.meter

    @property
    def cache(self) -> Any:
        """The profile cache (one counted profile per step signature)."""
        return self._acct.cache

    @property
    def windows(self) -> list[WindowRecord]:
        """The windows closed so far and kept one by one (see ``max_windows``)."""
        return self._ledger.windows

    @property
    def max_windows(self) -> int:
        """Windows kept one by one before the oldest are folded into per-loop totals."""
        return self._ledger.max_windows

    @property
    def archived(self) -> dict[str, LoopTotals]:
        """Per-loop totals of the windows folded out of :attr:`windows` (see ``max_windows``)."""
        return dict(self._ledger.archived)

    @property
    def warnings(self) -> list[str]:
        """The report's warning lines so far."""
        return self._notes.messages

    @property
    def calibration_path(self) -> Path | None:
        """The calibration file saved at the end of the run; None if not (the warnings say why)."""
        return self._calibration.path

    @property
    def tos_total(self) -> float:
        """TOs of every step completed (restored checkpoints included)."""
        return self._acct.tos_total

    def steps(self, loop: str = "train") -> int:
        """Steps of ``loop`` completed so far (restored checkpoints included)."""
        return self._acct.steps.get(loop, 0)

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Find the sensors, load the calibration prior and open the run. Idempotent."""
        if self._started:
            return
        self._started = True
        self._windows.t0 = self._clock()
        self.sensors, self.skipped_sensors = select_sensors(
            self._requested_sensors, self._machine.cuda_devices(), self.local_rank
        )
        self._live.weakest_kind = weakest_kind({s.kind.value for s in self.sensors})
        window_s = self._requested_window_s
        if self.sensors:
            try:
                meter = self._windows.open_meter(self.sensors, window_s, self._sync)
            except ValueError:
                self._started = False
                raise
            if window_s is None:
                self.window_s = max(meter.min_window_s, DEFAULT_MIN_WINDOW_S)
        self._machine.detect()
        self.model = self._live_prior.load(self._machine, self.model, self.features)
        # Pay for the solver's import and first fit now, not in the first window close.
        warm_up_solver()

    # --- steps ----------------------------------------------------------------------------

    @contextmanager
    def step(
        self, batch: Any = None, *, loop: str = "train", will_step: bool = True
    ) -> Iterator[None]:
        """Count (or replay) one step of ``loop`` run inside the ``with`` block.

        A step whose block raises is dropped (:meth:`abort_step`): nothing of it is kept, and
        the exception goes on to the caller. Its seconds and joules stay in its window (they
        were spent), its operations do not (they are unknown).
        """
        self.begin_step(batch, loop=loop, will_step=will_step)
        try:
            yield
        except BaseException:
            self.abort_step()
            raise
        self.end_step(loop=loop)

    def begin_step(self, batch: Any, *, loop: str = "train", will_step: bool = True) -> None:
        """Mark the start of a step; starts counting when its signature needs it.

        Never raises because of the tracker itself: an internal error is one warning, after
        which this tracker stands aside and the training goes on untouched. A step begun and
        never ended (a skipped batch, an exception) is dropped when the next one begins.
        """
        self._gate.begin(batch, loop, will_step)

    def set_phase(self, phase: str) -> None:
        """Attribute the ops that follow to ``phase`` (forward, backward, optimizer, other)."""
        self._gate.set_phase(phase)

    def end_step(self, *, loop: str = "train") -> WindowRecord | None:
        """Add the step to its window; close the window when it has lasted ``window_s``.

        The step belongs to the loop it began in (``loop`` is accepted for symmetry with
        :meth:`begin_step`); an ``end_step`` without a step begun does nothing.

        Returns:
            The window record when this step closed a window, else None.
        """
        return self._gate.end(self.window_s)

    def abort_step(self) -> None:
        """Drop a step that failed in user code: stop counting it, keep nothing of it."""
        self._acct.abort()

    # --- windows --------------------------------------------------------------------------

    def close_window(self, *, boundary: bool = False) -> WindowRecord | None:
        """Close the open window (at a loop or epoch boundary, or when due).

        A step begun in it and not ended (a batch skipped by ``on_train_batch_start``
        returning -1, say) is dropped first, so that its dispatch mode does not outlive it.
        """
        record = self._windows.close(self.model, rank=self.rank, boundary=boundary)
        if record is not None:
            self._live.refresh(self.model, self.forecast)  # the accuracy and forecast of live()
        return record

    # --- live readout ---------------------------------------------------------------------

    def live(self) -> LiveReadout:
        """Totals so far for the progress bar: cheap enough for every step, never blocks.

        Measured joules include the open window's latest background sample. Predicted joules
        are the predictions of the closed windows that had one, plus, at their measured value,
        the windows closed before the model could predict and the open window (predicted when
        it closes): so measured minus predicted is the model's accumulated error.
        """
        return self._live.readout()

    def forecast(self) -> Forecast | None:
        """Whole-run energy, with its interval (see :func:`forecast_run`); None without
        ``total_steps`` or before a train window closed."""
        return self._live.forecast_run(self.model, self.total_steps)

    # --- the end --------------------------------------------------------------------------

    def finish(
        self, *, save_calibration: bool = True, interrupted: str | None = None
    ) -> EnergyReport:
        """Close the last window, save the calibration and build the report of this process."""
        self.close(save_calibration=save_calibration, interrupted=interrupted)
        return self.build_report()

    def close(self, *, save_calibration: bool = True, interrupted: str | None = None) -> None:
        """Close the last window, save the calibration and release the sensors.

        :meth:`finish` does this and builds the report; a caller that reports over more than
        this process (the callback under DDP) calls this and then :meth:`build_report` once.
        The sensors (and their sampler threads, and NVML) are released whatever fails first.

        Args:
            save_calibration: merge the fitted windows into the calibration store.
            interrupted: why the run ended early (e.g. ``"KeyboardInterrupt"``); the open
                window is kept, flagged ``interrupted`` and not fitted, and the report says so.
        """
        try:
            if interrupted is not None:
                self.interrupt(interrupted)
            if not self._started:
                self.start()
            self.close_window(boundary=True)
            self._windows.stop_meter()  # the time after the last step belongs to no window
            if save_calibration:
                self.save_calibration()
        finally:
            close_sensors(self.sensors)  # and their sampler threads, whatever failed

    def interrupt(self, reason: str) -> None:
        """Mark the run as ended early by ``reason`` (e.g. ``"KeyboardInterrupt"``): the step
        under way is dropped, the open window, once closed, is flagged ``interrupted`` and not
        fitted, and the report says so. :meth:`close` follows."""
        self.abort_step()  # the step that raised: nothing of it is counted
        self._windows.interrupted = reason

    def __enter__(self) -> EnergyTracker:
        """Start; the ``with`` block's end closes the tracker even when the block raises."""
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        """:meth:`close`, or on an exception (Ctrl-C included) ``close(interrupted=...)``:
        :meth:`build_report` then gives the partial report, marked ``interrupted``. The
        exception goes on to the caller."""
        self.close(interrupted=None if exc is None else interruption_reason(exc))

    def save_calibration(self) -> None:
        """Merge this run's measured windows into the calibration store (rank 0 only).

        Only the windows the model was fitted on are stored; see
        :meth:`~lightning_to_energy.tracking.calibration_link.CalibrationLink.save`. The file
        written is :attr:`calibration_path`; when nothing is written, a line of
        :attr:`warnings` (and so of the report) says why and where it would have gone.
        """
        self._summary.save_calibration(
            self.model, self.sensors, rank=self.rank, window_s=self.window_s
        )

    def build_report(
        self,
        windows: Sequence[WindowRecord] | None = None,
        *,
        world_size: int = 1,
        archived: Mapping[str, LoopTotals] | None = None,
        extra_warnings: Sequence[str] = (),
        sensors: Sequence[SensorInfo] | None = None,
    ) -> EnergyReport:
        """The report over ``windows`` and the ``archived`` per-loop totals of windows folded
        out of the list, measured by ``sensors`` (default: this process's; under DDP, every
        rank's, so that each domain of the windows names its kind)."""
        return self._summary.report(
            self.model,
            self.windows if windows is None else windows,
            archived=archived,
            world_size=world_size,
            extra_warnings=extra_warnings,
            sensors=self.sensor_infos() if sensors is None else sensors,
            skipped_sensors=self.skipped_sensors,
            forecast=self.forecast(),
        )

    def sensor_infos(self) -> list[SensorInfo]:
        """This process's sensors as the report lists them."""
        return sensor_infos(self.sensors)

    # --- checkpoint state -----------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Totals, windows and regression state, as plain JSON-able values.

        The state holds every step completed so far, so that a run resumed from it neither
        loses nor repeats any: the open window is saved as it would be closed now (a
        ``boundary`` window, ``short`` if it lasted less than a sensor's minimum, fitted into
        the saved model when fit-worthy), but it is *not* closed in this run, whose windows
        keep their full length however often checkpoints are taken. Called in the middle of a
        step (a preemption handler's checkpoint, ``save_checkpoint`` inside the training
        step), the saved window holds the steps completed so far, as ``steps`` does. NB: its
        joules then include the begun step's seconds so far, which a resumed run measures
        again when it runs that step anew: at most one partial step counted twice.
        """
        # Safe inside a counted step: the meter lap and the model fork run no aten op for
        # the counting dispatch mode to see, and the window's sums hold completed steps only.
        # A checkpoint must be written whatever happens here.
        snapshot = self._gate.guarded(self._windows.snapshot, self.model, rank=self.rank)
        return self._summary.state(
            self.model, snapshot, elapsed_s=self._windows.elapsed_s(self._started)
        )

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved; windows after the checkpoint are not in it.

        All or nothing: a state that does not load (another version, other features, a
        malformed entry) raises and leaves this tracker as it was.

        Raises:
            ValueError: the state was written by another release or with other features.
        """
        restored = parse_state(state, self.features)
        self.model = restored.model
        self._summary.restore(restored)
        self._live.refresh(self.model, self.forecast)  # the accuracy and forecast of live()
