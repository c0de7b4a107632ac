"""The run as it is reported and checkpointed: the report over its windows, and the state a
checkpoint carries (read back into the same parts on resume).

:class:`~lightning_to_energy.tracking.tracker.EnergyTracker` owns one :class:`RunSummary` over
its parts and passes it what may change between calls (the model, the sensors, the forecast).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from lightning_to_energy.model.regression import OnlineEnergyModel
from lightning_to_energy.reporting.records import (
    EnergyReport,
    Forecast,
    LoopTotals,
    SensorInfo,
    WindowRecord,
)
from lightning_to_energy.sensors.base import Sensor
from lightning_to_energy.tracking.assembly import (
    assemble_report,
    breakdown_sums,
    step_breakdown,
    train_step_energy,
)
from lightning_to_energy.tracking.calibration_link import CalibrationLink
from lightning_to_energy.tracking.checkpoint import RestoredState, tracker_state
from lightning_to_energy.tracking.ledger import WindowLedger
from lightning_to_energy.tracking.machine import Machine
from lightning_to_energy.tracking.notes import Notes
from lightning_to_energy.tracking.steps import StepAccounting
from lightning_to_energy.tracking.windows import WindowRun

__all__ = ["RunSummary"]


class RunSummary:
    """The report and the checkpoint state of one run, built from the tracker's parts.

    Args:
        acct: the step accounting.
        ledger: the closed windows and the running totals.
        machine: the hardware (the roofline, the report's hardware section).
        calibration: the calibration store's link (its prior).
        notes: the report's warnings.
        windows: the open window and the run's clock.
    """

    def __init__(
        self,
        acct: StepAccounting,
        ledger: WindowLedger,
        machine: Machine,
        calibration: CalibrationLink,
        notes: Notes,
        windows: WindowRun,
    ) -> None:
        self.acct = acct
        self.ledger = ledger
        self.machine = machine
        self.calibration = calibration
        self.notes = notes
        self.windows = windows
        # Names this run in the calibration store, so saving it again (finish() twice, or the
        # end of a resumed run) replaces its windows instead of adding them a second time.
        self.run_id = uuid.uuid4().hex[:12]
        # Checkpoints carry the report's breakdowns as plain sums, added back after a resume.
        self.restored_breakdown: dict[str, Any] = {}

    def report(
        self,
        model: OnlineEnergyModel,
        windows: Sequence[WindowRecord],
        *,
        archived: Mapping[str, LoopTotals] | None,
        world_size: int,
        extra_warnings: Sequence[str],
        sensors: Sequence[SensorInfo],
        skipped_sensors: Mapping[str, str],
        forecast: Forecast | None,
    ) -> EnergyReport:
        """The report over ``windows`` and ``archived`` (default: the ledger's archive)."""
        acct = self.acct
        sums = breakdown_sums(acct.run_steps, self.restored_breakdown)
        pid = acct.last_profile.get("train")
        totals = self.ledger.totals
        dynamic_j, static_j, shares, static_note = train_step_energy(
            model,
            None if pid is None else acct.profiles[pid],
            acct.features_of("train", 1.0),
            self.machine.roofline,
            totals.train_duration_s / totals.train_steps if totals.train_steps else None,
            attribute_static=bool(sums["steps"]),
        )
        return assemble_report(
            tuple(windows),
            self.ledger.archived if archived is None else archived,
            world_size=world_size,
            warnings=[*self.notes.messages, *extra_warnings],
            max_windows=self.ledger.max_windows,
            roofline_note=self.machine.roofline_note,
            changed_signatures=len(acct.cache.changed_signatures),
            hardware=self.machine.section(),
            sensors=sensors,
            skipped_sensors=skipped_sensors,
            model=model,
            breakdown=step_breakdown(sums, acct.profiles.values(), dynamic_j, static_j, shares),
            forecast=forecast,
            run_id=self.run_id,
            prior=self.calibration.prior,
            static_note=static_note,
            interrupted=self.windows.interrupted,
        )

    def state(
        self,
        model: OnlineEnergyModel,
        snapshot: tuple[WindowRecord, OnlineEnergyModel] | None,
        *,
        elapsed_s: float,
    ) -> dict[str, Any]:
        """The checkpoint state, with the open window's ``snapshot`` (and the model after it)
        when there is one."""
        windows = self.ledger.windows
        n_windows = self.ledger.n_windows
        record = None
        if snapshot is not None:
            record, model = snapshot
            windows = [*windows, record]
            n_windows += 1
        return tracker_state(
            windows=windows,
            n_windows=n_windows,
            ledger=self.ledger,
            steps=self.acct.steps,
            elapsed_s=elapsed_s,
            model=model,
            warnings=self.notes.messages,
            breakdown=breakdown_sums(self.acct.run_steps, self.restored_breakdown),
            run_id=self.run_id,
            prior=self.calibration.prior,
            warmup_indices=self.ledger.warmups_with(record),
        )

    def restore(self, restored: RestoredState) -> None:
        """Give the parts what a checkpoint restored (the model aside: the tracker's)."""
        self.acct.steps = restored.steps
        self.windows.elapsed_before_s = restored.elapsed_s
        self.notes.messages = restored.warnings
        self.restored_breakdown = restored.breakdown
        self.run_id = restored.run_id or self.run_id
        self.calibration.restore_prior(restored.prior)
        self.acct.run_steps.clear()
        self.acct.tos_total = restored.tos_total
        restored.restore_ledger(self.ledger)

    def save_calibration(
        self, model: OnlineEnergyModel, sensors: Sequence[Sensor], *, rank: int, window_s: float
    ) -> None:
        """Merge the run's fitted windows into the calibration store, as this run's."""
        self.calibration.save(
            model,
            self.machine.hardware,
            sensors,
            rank=rank,
            run_id=self.run_id,
            window_s=window_s,
        )
