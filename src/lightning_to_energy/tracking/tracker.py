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
trustworthy window, 2 s for an NVML counter). A step whose signature is new is counted once under
the dispatch mode; every later step with that signature replays the cached profile at the cost of
a dictionary look-up and a few additions.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from lightning_to_energy.calibration.data import Calibration
from lightning_to_energy.calibration.store import CalibrationStore
from lightning_to_energy.counting import (
    OpCounter,
    ProfileCache,
    ProfileSum,
    StepProfile,
    StepSignature,
)
from lightning_to_energy.counting.cache import SlowKeys
from lightning_to_energy.counting.cost_model import CostModel, as_cost_model
from lightning_to_energy.hardware.detect import detect_hardware
from lightning_to_energy.hardware.identity import (
    HardwareInfo,
    hardware_fingerprint,
    hardware_section,
)
from lightning_to_energy.hardware.roofline import roofline_s
from lightning_to_energy.hardware.specs import HardwareSpec
from lightning_to_energy.model.regression import (
    FEATURES,
    Accuracy,
    OnlineEnergyModel,
    Prediction,
    warm_up_solver,
)
from lightning_to_energy.reporting.records import (
    FLAG_BOUNDARY,
    FLAG_ESTIMATE,
    FLAG_FAULT,
    FLAG_OUTLIER,
    FLAG_SHORT,
    FLAG_UNMEASURED,
    EnergyReport,
    Forecast,
    LoopTotals,
    ModuleEnergy,
    PriorRecord,
    SensorInfo,
    WindowRecord,
)
from lightning_to_energy.sensors.base import MEASURED_KINDS, Sensor, SensorKind, weakest_kind
from lightning_to_energy.sensors.meter import Measurement, Meter

__all__ = [
    "DEFAULT_MIN_WINDOW_S",
    "LOOPS",
    "PROFILE_FEATURES",
    "SLOW_KEYS_EVERY",
    "EnergyTracker",
    "LiveReadout",
    "merge_archives",
]

LOOPS = ("train", "validate", "test")
# Feature names the tracker knows how to compute from a step profile, besides duration_s.
PROFILE_FEATURES: dict[str, Callable[[StepProfile], float]] = {
    "tos": lambda p: float(p.tos),
    "flops": lambda p: float(p.flops),
    "tos_matrix_full": lambda p: float(p.tos_matrix_full),
    "tos_matrix_reduced": lambda p: float(p.tos_matrix_reduced),
    "tos_matrix_tf32": lambda p: float(p.tos_matrix_tf32),
    "tos_matrix_low": lambda p: float(p.tos_matrix_low),
    "tos_vector": lambda p: float(p.tos_vector),
    "bytes": lambda p: float(p.bytes_read + p.bytes_written),
    "kernels": lambda p: float(p.kernels),
    "steps": lambda p: 1.0,  # a window's sum is its step count: a fixed cost per step
}
# The shortest default window, whatever the sensors allow: closing a window refits the model
# (one to two milliseconds on a CPU), so windows must span many steps to keep the overhead
# negligible; NVML counters need 2 s windows anyway (see docs/sensors.md).
DEFAULT_MIN_WINDOW_S = 2.0
# NB: the signature's slow keys (which parameters train, TF32 flags, the optimizer's flags)
# are read when a window opens and every SLOW_KEYS_EVERY steps, not every step: they cost
# tens of microseconds a step and change between epochs if ever. A change mid-window is seen
# at most SLOW_KEYS_EVERY steps late (and by the cache's periodic re-count).
SLOW_KEYS_EVERY = 64


@dataclass(frozen=True)
class LiveReadout:
    """What the progress bar shows: joules so far, predicted so far, recent error."""

    measured_j: float
    predicted_j: float | None
    recent_error_pct: float | None
    tos: float  # transistor operations of every step completed so far
    kind: str  # the weakest kind behind measured_j: "counter", "estimate", ...
    windows: int
    forecast: Forecast | None = None  # the whole run's energy, once windows are in


@dataclass
class _RunningTotals:
    """Sums over closed windows, kept as windows close so that no step re-sums the run."""

    measured_j: float = 0.0
    predicted_j: float = 0.0  # over measured windows that had a prediction
    unpredicted_j: float = 0.0  # measured joules of windows closed before any prediction
    any_prediction: bool = False
    train_steps: int = 0
    train_duration_s: float = 0.0
    train_measured_j: float = 0.0

    def add_archived(self, t: LoopTotals) -> None:
        self.measured_j += t.measured_j
        self.predicted_j += t.predicted_j
        self.any_prediction = self.any_prediction or t.predicted_j > 0
        if t.loop == "train":
            self.train_steps += t.steps
            self.train_duration_s += t.duration_s
            self.train_measured_j += t.measured_j

    def add(self, w: WindowRecord) -> None:
        if w.measured_j is not None:
            self.measured_j += w.measured_j
            if w.predicted_j is not None:
                self.predicted_j += w.predicted_j
                self.any_prediction = True
            else:
                self.unpredicted_j += w.measured_j
        if w.loop == "train" and w.steps > 0:
            self.train_steps += w.steps
            self.train_duration_s += w.duration_s
            self.train_measured_j += w.measured_j or 0.0


@dataclass
class _Window:
    loop: str
    first_step: int
    meter_open: bool = False
    steps: int = 0
    # per non-duration feature, then tos, flops and roofline seconds (NaN: no roofline)
    sums: list[float] = field(default_factory=list)
    # The window's measurement so far when checkpoints lapped the meter (see state_dict),
    # and its joules for the live readout; None: no lap yet.
    lapped: Measurement | None = None
    lapped_j: float = 0.0


class EnergyTracker:
    """Counts, measures and predicts the energy of training steps, window by window.

    Args:
        module: the model whose steps are counted (attribution hooks go on its submodules).
        optimizer: the optimizer (its type is part of the step signature); optional.
        sensors: ``"auto"`` (discover NVML, RAPL, then an estimate), a sequence of
            :class:`~lightning_to_energy.sensors.base.Sensor` objects, or ``None`` to count only.
        cost_model: transistor costs: a :class:`CostModel`, a TOML/JSON cost file, or None
            for :meth:`CostModel.default`.
        window_s: minimum window length in seconds; default: the sensors' ``min_window_s``
            (2 s for an NVML counter), and never below ``DEFAULT_MIN_WINDOW_S`` (2 s).
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
        ValueError: an argument is out of range or of the wrong kind, or ``calibration`` is a
            directory.
    """

    def __init__(
        self,
        module: torch.nn.Module | None = None,
        optimizer: Any = None,
        *,
        sensors: str | Sequence[Sensor] | None = "auto",
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
        if window_s is not None and not (window_s >= 0 and math.isfinite(window_s)):
            raise ValueError(
                f"window_s must be a finite number of seconds >= 0, found {window_s!r}; "
                "pass e.g. window_s=2.0, or None for the sensors' minimum trustworthy window."
            )
        if not isinstance(max_windows, int) or max_windows < 1:
            raise ValueError(
                f"max_windows must be a positive int, found {max_windows!r}; "
                "pass e.g. max_windows=20_000."
            )
        if not isinstance(recheck_every, int) or recheck_every < 1:
            raise ValueError(
                f"recheck_every must be a positive int, found {recheck_every!r}; "
                "pass e.g. recheck_every=1000."
            )
        unknown = [f for f in features if f != "duration_s" and f not in PROFILE_FEATURES]
        if unknown or "duration_s" not in features:
            raise ValueError(
                f"features must include 'duration_s' and names from {sorted(PROFILE_FEATURES)}; "
                f"found {list(features)!r}. Fix the names or leave the default."
            )
        if not (sensors is None or sensors == "auto" or isinstance(sensors, Sequence)):
            raise ValueError(
                f"sensors must be 'auto', a sequence of Sensor objects or None; found {sensors!r}."
            )
        if not (calibration is None or isinstance(calibration, (str, os.PathLike))):
            raise ValueError(
                "calibration: expected 'auto', a calibration JSON file path or None; found "
                f"{calibration!r}. Fix: pass calibration='auto' (this hardware's own), a path, "
                "or None."
            )
        if calibration is not None and calibration != "auto":
            CalibrationStore.from_path(calibration)  # a directory is refused now, not at the end
        self.module = module
        self.optimizer = optimizer
        self.cost_model = as_cost_model(cost_model)
        self.features = tuple(features)
        self._profile_features = tuple(f for f in self.features if f != "duration_s")
        self._requested_sensors = sensors
        self._requested_window_s = window_s
        self._calibration_arg = calibration
        self._clock = clock
        self._sync = sync
        self.device = torch.device(device) if device is not None else None
        self.local_rank = local_rank
        self.rank = rank
        self.total_steps = total_steps

        self.cache = ProfileCache(recheck_every=recheck_every)
        self.model = OnlineEnergyModel(self.features)
        self.sensors: list[Sensor] = []
        self.skipped_sensors: dict[str, str] = {}
        self.meter: Meter | None = None
        self.window_s = window_s or 0.0
        self.windows: list[WindowRecord] = []
        self.max_windows = max_windows
        self._n_windows = 0  # windows closed in the run, folded ones included
        self._archived: dict[str, LoopTotals] = {}  # per loop: windows folded out of the list
        self._archived_unpredicted_j = 0.0  # measured J of folded windows that had no prediction
        # predicted J of folded windows that had no measurement: the live readout leaves them out
        self._archived_unmeasured_predicted_j = 0.0
        # Names this run in the calibration store, so saving it again (finish() twice, or the
        # end of a resumed run) replaces its windows instead of adding them a second time.
        self._run_id = uuid.uuid4().hex[:12]
        self.warnings: list[str] = []
        self._warned: set[str] = set()
        self._profiles: dict[int, StepProfile] = {}
        self._profile_vectors: dict[int, tuple[float, ...]] = {}
        self._window: _Window | None = None
        self._window_t0 = 0.0
        # Every step completed, by profile: the report's breakdowns. Checkpoints carry them as
        # plain sums (_restored_breakdown), added back after a resume.
        self._run_steps = ProfileSum()
        self._restored_breakdown: dict[str, Any] = {}
        self._counter: OpCounter | None = None
        self._counting_sig: StepSignature | None = None
        self._pending: tuple[int, tuple[float, ...]] | None = None
        # The signature's slow keys (TF32 flags, trainable parameters, optimizer), per loop,
        # with the steps left before they are read again: see _signature.
        self._slow: dict[str, tuple[SlowKeys, int]] = {}
        self._step_profile_ids: dict[str, int] = {}  # loop -> id of the last profile used
        self._steps: dict[str, int] = dict.fromkeys(LOOPS, 0)
        self.tos_total = 0.0  # TOs of every step completed (restored checkpoints included)
        self._totals = _RunningTotals()
        self._recent_error_pct: float | None = None
        self._weakest_kind = "none"
        self._forecast: Forecast | None = None
        self._t0 = 0.0
        self._elapsed_before_s = 0.0  # run time restored from a checkpoint
        self._store: CalibrationStore | None = None
        self._store_warnings_seen = 0  # the store's warnings already copied to self.warnings
        # The file the calibration was saved to at the end of the run, None if not (the
        # report's warnings say why, except where calibration=None asked for none).
        self.calibration_path: Path | None = None
        # The calibration the model started from, for the report; restored from a checkpoint
        # (whose model it seeded) in preference to the file as it is at the resume.
        self._prior: PriorRecord | None = None
        self._prior_restored = False
        self._hardware: HardwareInfo | None = None
        # The roofline's hardware (peaks per format, bandwidth, launch cost): each window
        # records its steps' roofline seconds, so a run's windows can fit a calibration that
        # needs no timing to predict (``lightning-to-energy fit REPORT --roofline``).
        self._roofline: HardwareSpec | None = None
        self._roofline_note: str | None = None
        self._started = False
        self._broken: str | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Find the sensors, load the calibration prior and open the run. Idempotent."""
        if self._started:
            return
        self._started = True
        self._t0 = self._clock()
        if self._requested_sensors == "auto":
            from lightning_to_energy.sensors.discover import discover

            found = discover("auto", devices=self._cuda_devices(), local_rank=self.local_rank)
            self.sensors = list(found.sensors)
            self.skipped_sensors = dict(found.skipped)
        elif not isinstance(self._requested_sensors, (str, type(None))):
            self.sensors = [
                s for s in self._requested_sensors if self.local_rank == 0 or not s.host_wide
            ]
        self._weakest_kind = weakest_kind({s.kind.value for s in self.sensors})
        if self.sensors:
            # The tracker warns once per failing domain itself (and records it for the report).
            self.meter = Meter(self.sensors, clock=self._clock, sync=self._sync, warn=False)
            if self._requested_window_s is None:
                self.window_s = max(self.meter.min_window_s, DEFAULT_MIN_WINDOW_S)
        try:
            self._hardware = HardwareInfo.detect()
        except Exception as exc:  # detection is best effort; it only names the report
            self._warn_once("hardware", f"hardware not identified: {exc}")
        self._load_calibration()
        self._roofline = self._roofline_spec()
        # Pay for importing the regression's solver and for its first fit now, not in the
        # middle of the first window close.
        warm_up_solver()

    def _roofline_spec(self) -> HardwareSpec | None:
        # NB: best effort and quiet: a GPU missing from the hardware table only costs the
        # windows their roofline_s column (the report says so), never a warning per run.
        try:
            return detect_hardware(self.device if self.device is not None else "cpu")
        except Exception as exc:
            self._roofline_note = f"roofline time not recorded: {exc}"
            return None

    def _cuda_devices(self) -> list[int]:
        if self.device is not None and self.device.type == "cuda":
            return [self.device.index if self.device.index is not None else 0]
        return []

    def _no_prior(self, note: str) -> None:
        """Record that the model starts without a calibration, and why (for the report)."""
        if not self._prior_restored:  # a restored model's own start is what the report says
            self._prior = PriorRecord(note=note)

    def _load_calibration(self) -> None:
        arg = self._calibration_arg
        if arg is None:
            self._no_prior("calibration=None (no prior, nothing saved)")
            return
        if self._hardware is None:
            self._no_prior("the hardware was not identified (see the warnings)")
            return
        try:
            if arg == "auto":
                self._store = CalibrationStore()
            else:
                self._store = CalibrationStore.from_path(Path(arg))
            fingerprint = hardware_fingerprint(self._hardware)
            where = self._store.path_for(fingerprint)
            calibration = self._store.load(fingerprint)
        except Exception as exc:  # never let a calibration problem stop training
            self._warn_once("calibration", f"calibration not loaded: {exc}")
            self._no_prior("the calibration could not be loaded (see the warnings)")
            return
        finally:
            self._take_store_warnings()
        if calibration is None:
            if not where.exists():
                self._no_prior(
                    f"the first run on this hardware (no calibration at {where} yet)"
                    if arg == "auto"
                    else f"{where} does not exist yet (this run's windows start it)"
                )
            else:
                self._no_prior(f"{where} could not be used (see the warnings)")
            return
        if self.model.n_updates != 0:
            return  # a model restored from a checkpoint keeps the prior it started from
        try:
            self.model = calibration.to_model(self.features)
        except (KeyError, ValueError) as exc:
            self._warn_once("calibration", f"calibration not used: {exc}")
            self._no_prior(f"the calibration at {where} was not used (see the warnings)")
            return
        # A prior of other features is used in part (static power, say, but no dynamic
        # coefficient): say what was used, or the first predictions look calibrated.
        note = calibration.usage_note(self.features)
        seed = calibration.model_windows(self.features)
        self._prior = PriorRecord(
            source=str(where),
            seed_windows=len(seed),
            seed_runs=len({w.run_id for w in seed}),
            stored_windows=len(calibration.windows),
            stored_runs=calibration.n_runs,
            hardware=calibration.hardware.label,
            other_hardware=calibration.fingerprint != fingerprint,
            note="" if note is None else "used in part: fitted on other features (see warnings)",
        )
        self._prior_restored = False
        if note is not None:
            where = self._store.path or self._store.path_for(calibration.fingerprint)
            self._warn_once("calibration-features", f"calibration {where} used in part: {note}")

    @property
    def archived(self) -> dict[str, LoopTotals]:
        """Per-loop totals of the windows folded out of :attr:`windows` (see ``max_windows``)."""
        return dict(self._archived)

    def steps(self, loop: str = "train") -> int:
        """Steps of ``loop`` completed so far (restored checkpoints included)."""
        return self._steps.get(loop, 0)

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
        if self._broken:
            return
        try:
            self._begin_step(batch, loop, will_step)
        except Exception as exc:
            self._break(exc)

    def _begin_step(self, batch: Any, loop: str, will_step: bool) -> None:
        if not self._started:
            self.start()
        if self._counter is not None or self._pending is not None:
            # The previous step never ended: drop it, and above all stop its dispatch mode.
            self.abort_step()
        window = self._window
        if window is None or window.loop != loop:
            if window is not None:
                self.close_window(boundary=True)
            window = self._open_window(loop)
        sig = self._signature(batch, loop, will_step)
        cached = self.cache.replay(sig)
        if cached is None:
            self._counting_sig = sig
            self._counter = OpCounter(cost_model=self.cost_model, module=self.module)
            self._counter.start()
            self._pending = None
        else:
            self._pending = self._vector_for(cached)

    def _signature(self, batch: Any, loop: str, will_step: bool) -> StepSignature:
        optimizer = self.optimizer if loop == "train" else None
        slow, left = self._slow.get(loop) or (None, 0)
        if slow is None or left <= 0:
            slow, left = StepSignature.slow_keys(self.module, optimizer), SLOW_KEYS_EVERY
        self._slow[loop] = (slow, left - 1)
        return StepSignature.capture(
            batch, self.module, optimizer=optimizer, will_step=will_step, slow=slow
        )

    def set_phase(self, phase: str) -> None:
        """Attribute the ops that follow to ``phase`` (forward, backward, optimizer, other)."""
        if self._counter is not None:
            try:
                self._counter.set_phase(phase)
            except Exception as exc:
                self._break(exc)

    def end_step(self, *, loop: str = "train") -> WindowRecord | None:
        """Add the step to its window; close the window when it has lasted ``window_s``.

        The step belongs to the loop it began in (``loop`` is accepted for symmetry with
        :meth:`begin_step`); an ``end_step`` without a step begun does nothing.

        Returns:
            The window record when this step closed a window, else None.
        """
        if self._broken:
            return None
        try:
            return self._end_step(loop)
        except Exception as exc:
            self._break(exc)
            return None

    def abort_step(self) -> None:
        """Drop a step that failed in user code: stop counting it, keep nothing of it."""
        counter, self._counter = self._counter, None
        self._counting_sig = None
        self._pending = None
        if counter is not None:
            with contextlib.suppress(Exception):
                counter.stop()

    def _break(self, exc: BaseException) -> None:
        self.abort_step()
        self._broken = f"{type(exc).__name__}: {exc}"
        self._warn_once(
            "internal",
            f"stopped counting after an internal error ({self._broken}); training is not "
            "affected, and the windows closed so far are kept in the report. Please report "
            "this error.",
        )

    def _end_step(self, loop: str) -> WindowRecord | None:
        window = self._window
        if window is None:
            return None
        loop = window.loop
        if self._counter is not None:
            profile = self._counter.stop()
            self._counter = None
            assert self._counting_sig is not None
            # The cache's profile where this one did the same work: one object per distinct
            # profile, so the run's sums do not grow with every re-check.
            profile = self.cache.store(self._counting_sig, profile)
            self._counting_sig = None
            pid, vector = self._vector_for(profile)
        elif self._pending is not None:
            pid, vector = self._pending
            self._pending = None  # a stray second end_step must not add the step again
        else:
            return None
        sums = window.sums
        for i, value in enumerate(vector):
            sums[i] += value
        self._run_steps.add(self._profiles[pid])
        window.steps += 1
        self.tos_total += vector[len(self._profile_features)]
        self._steps[loop] = self._steps.get(loop, 0) + 1
        self._step_profile_ids[loop] = pid
        if self.meter is not None and self._clock() - self._window_t0 >= self.window_s:
            return self.close_window()
        return None

    def _vector_for(self, profile: StepProfile) -> tuple[int, tuple[float, ...]]:
        pid = id(profile)
        vector = self._profile_vectors.get(pid)
        if vector is None:
            vector = (
                *(PROFILE_FEATURES[f](profile) for f in self._profile_features),
                float(profile.tos),
                float(profile.flops),
                self._step_roofline_s(profile),
            )
            self._profiles[pid] = profile
            self._profile_vectors[pid] = vector
        return pid, vector

    def _step_roofline_s(self, profile: StepProfile) -> float:
        """The step's roofline seconds on this device, NaN without a roofline."""
        if self._roofline is None:
            return math.nan
        try:
            return roofline_s(profile, self._roofline)
        except ValueError:  # a profile without op_costs (made by hand): no roofline
            return math.nan

    def _open_window(self, loop: str) -> _Window:
        self._slow.clear()  # a new window (a new epoch or loop) reads every key afresh
        window = _Window(loop=loop, first_step=self._steps.get(loop, 0))
        window.sums = [0.0] * (len(self._profile_features) + 3)
        if self.meter is not None:
            try:
                self.meter.open()
                window.meter_open = True
            except Exception as exc:
                self._warn_once("meter-open", f"energy meter could not open a window: {exc}")
        self._window_t0 = self._clock()
        self._window = window
        return window

    # --- windows --------------------------------------------------------------------------

    def close_window(self, *, boundary: bool = False) -> WindowRecord | None:
        """Close the open window (at a loop or epoch boundary, or when due).

        A step begun in it and not ended (a batch skipped by ``on_train_batch_start``
        returning -1, say) is dropped first, so that its dispatch mode does not outlive it.
        """
        if self._counter is not None or self._pending is not None:
            self.abort_step()
        window = self._window
        self._window = None
        if window is None or window.steps == 0:
            if window is not None and window.meter_open and self.meter is not None:
                self._safe_close_meter()
            return None
        measurement = self._safe_close_meter() if window.meter_open else None
        if measurement is not None and window.lapped is not None:
            measurement = _join(window.lapped, measurement, self.meter)
        record, _ = self._record(window, measurement, boundary=boundary)
        self.windows.append(record)
        self._n_windows += 1
        self._totals.add(record)
        if len(self.windows) > self.max_windows:
            self._fold_oldest()
        self._refresh_live()
        return record

    def _record(
        self,
        window: _Window,
        measurement: Measurement | None,
        *,
        boundary: bool,
        fork: bool = False,
    ) -> tuple[WindowRecord, OnlineEnergyModel]:
        """The record of ``window`` measured as ``measurement``, and the model after it: the
        window is predicted before its measurement is seen, then fitted when fit-worthy, into
        the live model, or with ``fork`` into a copy of it (the live model is left as it is).
        """
        model = self.model
        duration_s = (
            measurement.duration_s if measurement is not None else self._clock() - self._window_t0
        )
        n = len(self._profile_features)
        features = {"duration_s": duration_s}
        features.update(zip(self._profile_features, window.sums[:n], strict=True))
        if math.isfinite(window.sums[n + 2]):
            features["roofline_s"] = window.sums[n + 2]
        flags: list[str] = []
        if boundary:
            flags.append(FLAG_BOUNDARY)
        energy: dict[str, float] = {}
        measured: float | None = None
        if measurement is not None:
            energy = dict(measurement.energy_j)
            measured = measurement.total_j if energy else None
            if measurement.short:
                flags.append(FLAG_SHORT)
            if measurement.faults:
                flags.append(FLAG_FAULT)
                for domain, text in measurement.faults.items():
                    self._warn_once(f"fault:{domain}", f"sensor {domain} failed: {text}")
            if any(
                measurement.kinds[d].value == SensorKind.ESTIMATE.value
                for d in energy
                if d in measurement.kinds
            ):
                flags.append(FLAG_ESTIMATE)
        if measured is None:
            flags.append(FLAG_UNMEASURED)
        fit_ok = measured is not None and measured > 0 and FLAG_SHORT not in flags
        fit_ok = fit_ok and FLAG_FAULT not in flags
        prediction: Prediction | None
        try:
            if fit_ok:
                assert measured is not None
                if fork:
                    # NB: a copy costs a few milliseconds (its bounded history), once per
                    # checkpoint and only for a fit-worthy window.
                    model = OnlineEnergyModel.from_state_dict(model.state_dict())
                prediction = model.update(features, measured)
            else:
                prediction = model.predict(features)
                if measured is not None:
                    flags.append(FLAG_OUTLIER)
        except ValueError as exc:
            self._warn_once("regression", f"window not fitted: {exc}")
            prediction = None
            flags.append(FLAG_OUTLIER)
        has_pred = prediction is not None and prediction.source != "none"
        record = WindowRecord(
            index=self._n_windows,
            loop=window.loop,
            first_step=window.first_step,
            steps=window.steps,
            start_s=self._elapsed_before_s + (self._window_t0 - self._t0),
            duration_s=duration_s,
            energy_j=energy,
            measured_j=measured,
            predicted_j=prediction.energy_j if has_pred and prediction else None,
            low_j=prediction.low_j if has_pred and prediction else None,
            high_j=prediction.high_j if has_pred and prediction else None,
            prediction_source=prediction.source if prediction is not None else "none",
            tos=window.sums[n],
            flops=window.sums[n + 1],
            features=features,
            flags=tuple(flags),
            rank=self.rank,
        )
        return record, model

    def _snapshot_window(self) -> tuple[WindowRecord, OnlineEnergyModel] | None:
        """The open window as a checkpoint saves it, without closing it in this run.

        The record is what closing the window now would give (a ``boundary`` window, predicted
        first, fitted into a copy of the model when fit-worthy), with the model after it. The
        meter is lapped (one edge, as a close would read) so that the joules so far are exact;
        the live window goes on and closes when due, over its whole length.
        """
        window = self._window
        if window is None or window.steps == 0:
            return None
        measurement: Measurement | None = None
        if window.meter_open and self.meter is not None:
            try:
                lap = self.meter.lap()
            except Exception as exc:  # e.g. the CUDA sync at the edge failed
                self._warn_once("meter-close", f"energy meter failed to close a window: {exc}")
                # As _safe_close_meter: a fresh meter; this window stays unmeasured.
                self.meter = Meter(self.sensors, clock=self._clock, sync=self._sync, warn=False)
                window.meter_open = False
                window.lapped, window.lapped_j = None, 0.0
            else:
                lapped = lap if window.lapped is None else _join(window.lapped, lap, self.meter)
                window.lapped = lapped
                window.lapped_j = lapped.total_j
                measurement = lapped
        # The live model must not learn a part of a window that it fits whole at the close.
        return self._record(window, measurement, boundary=True, fork=True)

    def _fold_oldest(self) -> None:
        """Fold the oldest tenth of the kept windows into the per-loop archive."""
        # Keep at least one window: max_windows=1 must not empty the list (the forecast and
        # the report's window table need the latest).
        n = len(self.windows) - max(self.max_windows * 9 // 10, 1)
        if n <= 0:
            return
        old, self.windows = self.windows[:n], self.windows[n:]
        self._archived_unpredicted_j += math.fsum(
            w.measured_j for w in old if w.measured_j is not None and w.predicted_j is None
        )
        self._archived_unmeasured_predicted_j += math.fsum(
            w.predicted_j for w in old if w.measured_j is None and w.predicted_j is not None
        )
        for loop in LOOPS:
            ws = [w for w in old if w.loop == loop]
            if ws:
                self._archived[loop] = _add_totals(self._archived.get(loop), _sum_windows(loop, ws))

    def _safe_close_meter(self) -> Measurement | None:
        assert self.meter is not None
        try:
            return self.meter.close()
        except Exception as exc:  # e.g. the CUDA sync at the edge failed
            self._warn_once("meter-close", f"energy meter failed to close a window: {exc}")
            # The failed close left its window open, and every later open() would be refused:
            # a fresh meter over the same sensors lets the next windows be measured again.
            self.meter = Meter(self.sensors, clock=self._clock, sync=self._sync, warn=False)
            return None

    def _take_store_warnings(self) -> None:
        """Copy the calibration store's new warnings (already shown) into the report's."""
        if self._store is None:
            return
        self.warnings.extend(self._store.warnings[self._store_warnings_seen :])
        self._store_warnings_seen = len(self._store.warnings)

    def _warn_once(self, key: str, message: str) -> None:
        if key in self._warned:
            return
        self._warned.add(key)
        # A run resumed from a checkpoint restores its warnings but warns anew: the report
        # and the checkpoint keep each message once however often it recurs.
        if message not in self.warnings:
            self.warnings.append(message)
        warnings.warn(f"lightning-to-energy: {message}", RuntimeWarning, stacklevel=3)

    # --- live readout ---------------------------------------------------------------------

    def live(self) -> LiveReadout:
        """Totals so far for the progress bar: cheap enough for every step, never blocks.

        Measured joules include the open window's latest background sample. Predicted joules
        are the predictions of the closed windows that had one, plus, at their measured value,
        the windows closed before the model could predict and the open window (predicted when
        it closes): so measured minus predicted is the model's accumulated error.
        """
        totals = self._totals
        open_j = 0.0
        window = self._window
        if self.meter is not None and window is not None and window.meter_open:
            open_j = window.lapped_j + self.meter.peek_j()
        return LiveReadout(
            measured_j=totals.measured_j + open_j,
            predicted_j=totals.predicted_j + totals.unpredicted_j + open_j
            if totals.any_prediction
            else None,
            recent_error_pct=self._recent_error_pct,
            tos=self.tos_total,
            kind=self._weakest_kind,
            windows=self._n_windows,
            forecast=self._forecast,
        )

    def _refresh_totals(self) -> None:
        """Recompute every running total from the windows (after a checkpoint restore)."""
        self._totals = _RunningTotals()
        for totals in self._archived.values():
            self._totals.add_archived(totals)
        self._totals.unpredicted_j += self._archived_unpredicted_j
        # The archive's predicted joules include windows that were never measured; the live
        # readout compares measured with predicted over the same (measured) windows.
        self._totals.predicted_j -= self._archived_unmeasured_predicted_j
        for record in self.windows:
            self._totals.add(record)
        self._refresh_live()

    def _refresh_live(self) -> None:
        """The accuracy and forecast behind :meth:`live`; once per window close."""
        mape = self.model.recent_mape()
        self._recent_error_pct = None if math.isnan(mape) else 100.0 * mape
        self._forecast = self.forecast()

    # --- the end --------------------------------------------------------------------------

    def finish(self, *, save_calibration: bool = True) -> EnergyReport:
        """Close the last window, save the calibration and build the report of this process."""
        self.close(save_calibration=save_calibration)
        return self.build_report()

    def close(self, *, save_calibration: bool = True) -> None:
        """Close the last window, save the calibration and release the sensors.

        :meth:`finish` does this and builds the report; a caller that reports over more than
        this process (the callback under DDP) calls this and then :meth:`build_report` once.
        """
        if not self._started:
            self.start()
        self.close_window(boundary=True)
        if save_calibration:
            self.save_calibration()
        for sensor in self.sensors:
            with contextlib.suppress(Exception):  # closing is best effort; the run is over
                sensor.close()

    def save_calibration(self) -> None:
        """Merge this run's measured windows into the calibration store (rank 0 only).

        Only the windows the model was fitted on are stored. The automatic store takes only
        hardware counters and power integration: an estimate, a replay or a fake sensor would
        teach the next run the wrong hardware. An explicit calibration file takes any sensor.
        The file written is :attr:`calibration_path`; when nothing is written, a line of
        :attr:`warnings` (and so of the report) says why and where it would have gone.
        """
        if self._store is None or self._hardware is None or self.rank != 0:
            return
        kinds = {s.kind.value for s in self.sensors}
        trusted = bool(kinds) and kinds <= MEASURED_KINDS
        where = self._store.path or self._store.path_for(hardware_fingerprint(self._hardware))
        # Said in the report, not warned: a run that measures nothing, or estimates its
        # joules (most VMs), is no fault, but its user must learn why the next run does not
        # predict from its first window.
        if self.sensors and self._calibration_arg == "auto" and not trusted:
            estimated = sorted(
                f"{s.domain} ({s.kind.value})"
                for s in self.sensors
                if s.kind.value not in MEASURED_KINDS
            )
            self._note_once(
                "calibration-unsaved",
                f"no calibration saved: this run's joules are not all measured by hardware "
                f"({', '.join(estimated)}), and the automatic store keeps measured runs only, so "
                f"the next run on this machine does not predict from its first window (a "
                f"measured run would be saved to {where}). Fix: run where an energy counter is "
                "readable (NVML, or RAPL as root: `lightning-to-energy sensors` says what is "
                "missing), or pass calibration=<file> to keep this run's windows in a file of "
                "your own.",
            )
            return
        if self.model.n_updates == 0:
            if self.sensors:
                self._note_once(
                    "calibration-unsaved",
                    f"no calibration saved to {where}: no window was fitted (the run was "
                    f"shorter than one {self.window_s:g} s window, or its windows were short or "
                    "faulty). Fix: train longer.",
                )
            return
        try:
            calibration = Calibration.from_model(self.model, self._hardware, run_id=self._run_id)
            self.calibration_path = self._store.save(calibration)
        except Exception as exc:
            self._warn_once("calibration-save", f"calibration not saved: {exc}")
        finally:
            self._take_store_warnings()

    def _note_once(self, key: str, message: str) -> None:
        """A line of the report's warnings, without a Python warning (nothing is wrong)."""
        if key not in self._warned:
            self._warned.add(key)
            if message not in self.warnings:  # restored from a checkpoint already
                self.warnings.append(message)

    def forecast(self) -> Forecast | None:
        """Whole-run energy, with its interval: the joules measured so far (every loop), the
        model's prediction for the train steps left (the last train step's profile x the steps
        left), and the validation and test joules so far per train step x the steps left.

        NB: validation is assumed to keep its cadence in train steps (every epoch, or every N
        steps), so its energy grows in proportion to the train steps.
        """
        if self.total_steps is None or self._n_windows == 0:
            return None
        pid = self._step_profile_ids.get("train")
        totals = self._totals
        if pid is None or totals.train_steps == 0:
            return None
        done = self._steps.get("train", 0)
        # The steps left after the closed train windows, whose joules are "so far": counted
        # from ``done`` instead, the open window's steps would be in neither part.
        left = max(self.total_steps - totals.train_steps, 0)
        step_s = totals.train_duration_s / totals.train_steps
        vector = self._profile_vectors[pid]
        features = {"duration_s": step_s * left}
        features.update({f: vector[i] * left for i, f in enumerate(self._profile_features)})
        so_far = totals.measured_j
        if left == 0:
            return Forecast(so_far, so_far, so_far, self.total_steps, done)
        pred = self.model.predict(features)
        if pred.energy_j is None or pred.low_j is None or pred.high_j is None:
            return None
        other_loops_j = (totals.measured_j - totals.train_measured_j) / totals.train_steps * left
        base = so_far + other_loops_j
        return Forecast(
            total_j=base + pred.energy_j,
            low_j=base + pred.low_j,
            high_j=base + pred.high_j,
            steps_total=self.total_steps,
            steps_done=done,
        )

    def build_report(
        self,
        windows: Sequence[WindowRecord] | None = None,
        *,
        world_size: int = 1,
        archived: Mapping[str, LoopTotals] | None = None,
        extra_warnings: Sequence[str] = (),
    ) -> EnergyReport:
        """The report over ``windows`` and the ``archived`` per-loop totals of windows folded
        out of the list (default: this process's)."""
        windows = tuple(self.windows if windows is None else windows)
        archived = self._archived if archived is None else archived
        loops: dict[str, LoopTotals] = {}
        for loop in LOOPS:
            ws = [w for w in windows if w.loop == loop]
            total = archived.get(loop)
            if ws:
                total = _add_totals(total, _sum_windows(loop, ws))
            if total is not None:
                # Durations add up over ranks: report the wall time of one rank on average.
                loops[loop] = replace(total, duration_s=total.duration_s / max(world_size, 1))
        acc = self.model.accuracy()
        tos_by_class, tos_by_format, tos_by_phase, modules, unmodelled = self._step_breakdown()
        notes = list(self.warnings) + list(extra_warnings)
        folded = sum(t.windows for t in archived.values())
        if folded:
            notes.append(
                f"{folded} earlier window(s) are folded into the loop totals (max_windows="
                f"{self.max_windows}); the window table and plot show the later ones."
            )
        if self._roofline_note is not None:
            notes.append(self._roofline_note)
        changed = len(self.cache.changed_signatures)
        if changed:
            notes.append(
                f"{changed} step signature(s) did different work when re-counted (a "
                "data-dependent path); replays use the latest count. Lower recheck_every to "
                "re-count more often."
            )
        return EnergyReport(
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            hardware=self._hardware_dict(),
            sensors=tuple(
                SensorInfo(
                    domain=s.domain,
                    kind=s.kind.value,
                    source=s.source,
                    update_period_s=float(s.update_period_s),
                    min_window_s=float(s.min_window_s),
                )
                for s in self.sensors
            ),
            skipped_sensors=dict(self.skipped_sensors),
            windows=windows,
            loops=loops,
            measured_j=sum(t.measured_j for t in loops.values()),
            predicted_j=sum(t.predicted_j for t in loops.values()),
            accuracy=_accuracy_dict(acc),
            coefficients=dict(self.model.coefficients),
            coefficient_units=dict(self.model.units()),
            identifiable=bool(getattr(self.model, "identifiable", True)),
            tos_by_class=tos_by_class,
            tos_by_format=tos_by_format,
            tos_by_phase=tos_by_phase,
            top_modules=modules,
            unmodelled_ops=unmodelled,
            warnings=tuple(notes),
            forecast=self.forecast(),
            world_size=world_size,
            run_id=self._run_id,
            prior=self._prior,
        )

    def _hardware_dict(self) -> dict[str, str]:
        section = {} if self._hardware is None else hardware_section(self._hardware)
        if self._roofline is not None:  # what the windows' roofline_s is measured against
            section["roofline"] = f"{self._roofline.name} ({self._roofline.key})"
        return section

    def _step_breakdown(
        self,
    ) -> tuple[
        dict[str, float],
        dict[str, float],
        dict[str, float],
        tuple[ModuleEnergy, ...],
        dict[str, int],
    ]:
        """TOs by class, format, phase and module over every counted-or-replayed step."""
        sums = self._breakdown_sums()
        steps = sums["steps"]
        if steps == 0:
            return {}, {}, {}, (), {}
        by_module = sums["by_module"]
        # Calls per step of ops without a formula, from the profiles as counted.
        unmodelled: dict[str, int] = {}
        for p in self._profiles.values():
            for name, calls in p.unmodelled_ops.items():
                unmodelled[name] = max(unmodelled.get(name, 0), int(calls))
        total_tos = math.fsum(by_module.values()) or 1.0
        modules = self._top_modules(by_module, total_tos, steps)
        return sums["by_class"], sums["by_format"], sums["by_phase"], modules, unmodelled

    def _breakdown_sums(self) -> dict[str, Any]:
        """TO sums by class, format, phase and module, and the steps behind them: this
        process's steps plus those restored from a checkpoint."""
        sums: dict[str, Any] = {
            "steps": float(self._restored_breakdown.get("steps", 0.0)),
            **{
                k: dict(self._restored_breakdown.get(k, {}))
                for k in ("by_class", "by_format", "by_phase", "by_module")
            },
        }
        if self._run_steps.steps:
            total = self._run_steps.total()
            sums["steps"] += float(self._run_steps.steps)
            mine = {
                "by_class": {_key(k): float(v) for k, v in total.tos_by_class.items()},
                "by_format": {_key(k): float(v) for k, v in total.tos_by_format.items()},
                "by_phase": {k: float(t.tos) for k, t in total.by_phase.items()},
                "by_module": {k: float(m.tos) for k, m in total.by_module.items()},
            }
            for group, values in mine.items():
                for k, v in values.items():
                    sums[group][k] = sums[group].get(k, 0.0) + v
        return sums

    def _top_modules(
        self, by_module: Mapping[str, float], total: float, steps: float
    ) -> tuple[ModuleEnergy, ...]:
        # NB: a module's predicted joules per step are its share of the step's TOs times the
        # predicted dynamic (duration-free) energy of one train step. Static power is not a
        # layer's doing and is left out of the attribution.
        per_step_j: float | None = None
        pid = self._step_profile_ids.get("train")
        if pid is not None:
            vector = self._profile_vectors[pid]
            features = {"duration_s": 0.0}
            features.update({f: vector[i] for i, f in enumerate(self._profile_features)})
            pred = self.model.predict(features)
            per_step_j = pred.energy_j if pred.source != "none" else None
        steps = max(steps, 1.0)
        top = sorted(by_module.items(), key=lambda kv: kv[1], reverse=True)[:10]
        return tuple(
            ModuleEnergy(
                name=name,
                tos=tos / steps,
                share=tos / total,
                predicted_j=None if per_step_j is None else per_step_j * tos / total,
            )
            for name, tos in top
        )

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
        windows = self.windows
        n_windows = self._n_windows
        model = self.model
        # Safe inside a counted step: the meter lap and the model fork run no aten op for
        # the counting dispatch mode to see, and the window's sums hold completed steps only.
        try:
            snapshot = self._snapshot_window()
        except Exception as exc:  # a checkpoint must be written whatever happens here
            self._break(exc)
            snapshot = None
        if snapshot is not None:
            record, model = snapshot
            windows = [*windows, record]
            n_windows += 1
        return {
            "version": 1,
            "windows": [_window_to_dict(w) for w in windows],
            "n_windows": n_windows,
            "archived": {loop: _totals_to_dict(t) for loop, t in self._archived.items()},
            "archived_unpredicted_j": self._archived_unpredicted_j,
            "archived_unmeasured_predicted_j": self._archived_unmeasured_predicted_j,
            "steps": dict(self._steps),
            "elapsed_s": self._elapsed_before_s
            + (self._clock() - self._t0 if self._started else 0.0),
            "model": model.state_dict(),
            "warnings": list(self.warnings),
            "breakdown": self._breakdown_sums(),
            "run_id": self._run_id,
            "prior": None if self._prior is None else dict(self._prior.__dict__),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved; windows after the checkpoint are not in it.

        All or nothing: a state that does not load (another version, other features, a
        malformed entry) raises and leaves this tracker as it was.

        Raises:
            ValueError: the state was written by another release or with other features.
        """
        if state.get("version") != 1:
            raise ValueError(
                f"TOEnergy checkpoint state version 1 expected, found {state.get('version')!r}; "
                "this checkpoint was written by a different lightning-to-energy release."
            )
        saved_features = tuple(state["model"].get("feature_names", ()))
        if saved_features != self.features:
            raise ValueError(
                f"checkpoint state: expected a model on features {list(self.features)}, found "
                f"{list(saved_features)}; fix: construct the tracker with "
                f"features={list(saved_features)!r} to resume from it."
            )
        # Everything is parsed before anything is assigned, so a failure changes nothing.
        model = OnlineEnergyModel(self.features)
        model.load_state_dict(state["model"])
        windows = [WindowRecord(**_window_from_dict(w)) for w in state["windows"]]
        archived = {
            loop: LoopTotals(**{**t, "energy_j": dict(t["energy_j"])})
            for loop, t in state.get("archived", {}).items()
        }
        steps = {**dict.fromkeys(LOOPS, 0), **{k: int(v) for k, v in state["steps"].items()}}
        n_windows = int(state.get("n_windows", len(windows)))
        unpredicted_j = float(state.get("archived_unpredicted_j", 0.0))
        unmeasured_predicted_j = float(state.get("archived_unmeasured_predicted_j", 0.0))
        elapsed_s = float(state["elapsed_s"])
        notes = [str(w) for w in state.get("warnings", [])]
        # Checkpoints before this key existed restore no breakdown: the report's TO breakdowns
        # then cover the steps run since the resume.
        breakdown = dict(state.get("breakdown", {}))
        run_id = str(state.get("run_id") or self._run_id)
        # Checkpoints before this key existed say nothing of the prior: the report then neither.
        saved_prior = state.get("prior")
        prior = None if saved_prior is None else PriorRecord(**saved_prior)

        self.model = model
        self.windows = windows
        self._archived = archived
        self._steps = steps
        self._n_windows = n_windows
        self._archived_unpredicted_j = unpredicted_j
        self._archived_unmeasured_predicted_j = unmeasured_predicted_j
        self._elapsed_before_s = elapsed_s
        self.warnings = notes
        self._restored_breakdown = breakdown
        self._run_id = run_id
        self._prior = prior
        self._prior_restored = True
        self._run_steps.clear()
        # TOs of every step so far, as the live readout counts them: the restored windows'.
        self.tos_total = math.fsum(t.tos for t in archived.values()) + math.fsum(
            w.tos for w in windows
        )
        if len(self.windows) > self.max_windows:  # saved by a tracker that kept more
            self._fold_oldest()
        self._refresh_totals()


def _key(k: Any) -> str:
    return str(getattr(k, "value", k))


def _accuracy_dict(acc: Accuracy) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in acc.to_dict().items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def _sum_windows(loop: str, ws: Sequence[WindowRecord]) -> LoopTotals:
    """Raw sums over windows of one loop (durations summed over ranks)."""
    by_domain: dict[str, float] = {}
    for w in ws:
        for domain, joules in w.energy_j.items():
            by_domain[domain] = by_domain.get(domain, 0.0) + joules
    return LoopTotals(
        loop=loop,
        windows=len(ws),
        steps=sum(w.steps for w in ws),
        duration_s=sum(w.duration_s for w in ws),
        measured_j=sum(w.measured_j or 0.0 for w in ws),
        predicted_j=sum(w.predicted_j or 0.0 for w in ws),
        tos=sum(w.tos for w in ws),
        flops=sum(w.flops for w in ws),
        energy_j=by_domain,
    )


def _add_totals(a: LoopTotals | None, b: LoopTotals) -> LoopTotals:
    if a is None:
        return b
    energy = dict(a.energy_j)
    for domain, joules in b.energy_j.items():
        energy[domain] = energy.get(domain, 0.0) + joules
    return LoopTotals(
        loop=a.loop,
        windows=a.windows + b.windows,
        steps=a.steps + b.steps,
        duration_s=a.duration_s + b.duration_s,
        measured_j=a.measured_j + b.measured_j,
        predicted_j=a.predicted_j + b.predicted_j,
        tos=a.tos + b.tos,
        flops=a.flops + b.flops,
        energy_j=energy,
    )


def merge_archives(parts: Sequence[Mapping[str, LoopTotals]]) -> dict[str, LoopTotals]:
    """Per-loop archived totals of several ranks, summed."""
    merged: dict[str, LoopTotals] = {}
    for part in parts:
        for loop, totals in part.items():
            merged[loop] = _add_totals(merged.get(loop), totals)
    return merged


def _totals_to_dict(t: LoopTotals) -> dict[str, Any]:
    d = dict(t.__dict__)
    d["energy_j"] = dict(t.energy_j)
    return d


def _join(first: Measurement, then: Measurement, meter: Meter | None) -> Measurement:
    """One measurement over two back-to-back parts of a window (``Meter.lap`` edges).

    A domain measured in both parts adds up; one that failed in either is a fault of the
    whole. ``short`` is judged on the joined duration.
    """
    faults = {**then.faults, **first.faults}
    energy = {
        d: first.energy_j[d] + then.energy_j[d]
        for d in first.energy_j
        if d in then.energy_j and d not in faults
    }
    duration_s = first.duration_s + then.duration_s
    min_window_s = meter.min_window_s if meter is not None else 0.0
    return Measurement(
        start_s=first.start_s,
        duration_s=duration_s,
        energy_j=energy,
        total_j=math.fsum(energy.values()),
        kinds=then.kinds,
        sources=then.sources,
        short=duration_s < min_window_s,
        faults=faults,
    )


def _window_to_dict(w: WindowRecord) -> dict[str, Any]:
    d = dict(w.__dict__)
    d["energy_j"] = dict(w.energy_j)
    d["features"] = dict(w.features)
    d["flags"] = list(w.flags)
    return d


def _window_from_dict(d: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(d)
    out["energy_j"] = dict(d["energy_j"])
    out["features"] = dict(d["features"])
    out["flags"] = tuple(d["flags"])
    return out
