"""The calibration link: the prior a run starts from, and the calibration it leaves behind."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lightning_to_energy.calibration.data import Calibration
from lightning_to_energy.calibration.store import CalibrationStore
from lightning_to_energy.hardware.identity import HardwareInfo, hardware_fingerprint
from lightning_to_energy.model.regression import OnlineEnergyModel
from lightning_to_energy.reporting.records import PriorRecord
from lightning_to_energy.sensors.base import MEASURED_KINDS, Sensor, weakest_kind
from lightning_to_energy.tracking.notes import Notes

__all__ = ["CalibrationLink"]


class CalibrationLink:
    """Loads the per-hardware calibration into a model, and saves the run into it.

    Args:
        arg: ``"auto"`` (the store in the user cache), a calibration file, or None (no prior,
            nothing saved).
        notes: where warnings and report lines go.

    Attributes:
        prior: what the model started from, for the report (None before :meth:`load`).
        path: the file the calibration was saved to at the end of the run, None if not (the
            report's warnings say why, except where ``arg`` None asked for none).
    """

    def __init__(self, arg: str | Path | None, notes: Notes) -> None:
        self.arg = arg
        self.notes = notes
        self.store: CalibrationStore | None = None
        self._store_warnings_seen = 0  # the store's warnings already copied to the notes
        self.path: Path | None = None
        # Restored from a checkpoint (whose model it seeded) in preference to the file as it
        # is at the resume.
        self.prior: PriorRecord | None = None
        self.prior_restored = False
        # The calibration read at the start (its physical model may give the live prior, see
        # tracking/live_prior.py), where it was read, and whether its regression was used.
        self.calibration: Calibration | None = None
        self.where: Path | None = None
        self.used = False
        self.other_hardware = False  # the calibration read was made on other hardware

    def restore_prior(self, prior: PriorRecord | None) -> None:
        """The prior a checkpoint's model started from."""
        self.prior = prior
        self.prior_restored = True

    def no_prior(self, note: str) -> None:
        """Record that the model starts without a calibration, and why (for the report)."""
        if not self.prior_restored:  # a restored model's own start is what the report says
            self.prior = PriorRecord(note=note)

    def load(
        self,
        hardware: HardwareInfo | None,
        model: OnlineEnergyModel,
        features: tuple[str, ...],
    ) -> OnlineEnergyModel:
        """The model to train with: seeded from this hardware's calibration when there is a
        usable one and ``model`` has learned nothing yet (a restored one keeps its prior),
        else ``model`` itself. Never raises: a problem is a warning and no prior."""
        arg = self.arg
        if arg is None:
            self.no_prior("calibration=None (no prior, nothing saved)")
            return model
        if hardware is None:
            self.no_prior("the hardware was not identified (see the warnings)")
            return model
        try:
            if arg == "auto":
                self.store = CalibrationStore()
            else:
                self.store = CalibrationStore.from_path(Path(arg))
            fingerprint = hardware_fingerprint(hardware)
            where = self.store.path_for(fingerprint)
            calibration = self.store.load(fingerprint)
        except Exception as exc:  # never let a calibration problem stop training
            self.notes.warn_once("calibration", f"calibration not loaded: {exc}")
            self.no_prior("the calibration could not be loaded (see the warnings)")
            return model
        finally:
            self.take_store_warnings()
        if calibration is None:
            if not where.exists():
                self.no_prior(
                    f"the first run on this hardware (no calibration at {where} yet)"
                    if arg == "auto"
                    else f"{where} does not exist yet (this run's windows start it)"
                )
            else:
                self.no_prior(f"{where} could not be used (see the warnings)")
            return model
        self.calibration, self.where = calibration, where
        self.other_hardware = calibration.fingerprint != fingerprint
        if model.n_updates != 0:
            return model  # a model restored from a checkpoint keeps the prior it started from
        if not calibration.model_windows(features) and not any(
            f in calibration.coefficients for f in features
        ):
            # e.g. `fit` on the shared steps or `calibrate`: a physical model and no windows.
            # Its empty regression would predict 0 J; the physical model may give the prior.
            self.no_prior(f"{where} holds no regression windows or coefficients for this run")
            return model
        try:
            seeded = calibration.to_model(features)
        except (KeyError, ValueError) as exc:
            self.notes.warn_once("calibration", f"calibration not used: {exc}")
            self.no_prior(f"the calibration at {where} was not used (see the warnings)")
            return model
        # A prior of other features is used in part (static power, say, but no dynamic
        # coefficient): say what was used, or the first predictions look calibrated.
        note = calibration.usage_note(features)
        seed = calibration.model_windows(features)
        self.prior = PriorRecord(
            source=str(where),
            seed_windows=len(seed),
            seed_runs=len({w.run_id for w in seed}),
            stored_windows=len(calibration.windows),
            stored_runs=calibration.n_runs,
            hardware=calibration.hardware.label,
            other_hardware=calibration.fingerprint != fingerprint,
            note="" if note is None else "used in part: fitted on other features (see warnings)",
        )
        self.prior_restored = False
        self.used = True
        if note is not None:
            where = self.store.path or self.store.path_for(calibration.fingerprint)
            self.notes.warn_once(
                "calibration-features", f"calibration {where} used in part: {note}"
            )
        return seeded

    def save(
        self,
        model: OnlineEnergyModel,
        hardware: HardwareInfo | None,
        sensors: Sequence[Sensor],
        *,
        rank: int,
        run_id: str,
        window_s: float,
    ) -> None:
        """Merge the run's fitted windows into the store (rank 0 only).

        Only the windows the model was fitted on are stored. The automatic store takes only
        hardware counters and power integration: an estimate, a replay or a fake sensor would
        teach the next run the wrong hardware. An explicit calibration file takes any sensor.
        The file written is :attr:`path`; when nothing is written, a report line says why and
        where it would have gone.
        """
        if self.store is None or hardware is None or rank != 0:
            return
        kinds = {s.kind.value for s in sensors}
        trusted = bool(kinds) and kinds <= MEASURED_KINDS
        where = self.store.path or self.store.path_for(hardware_fingerprint(hardware))
        # Said in the report, not warned: a run that measures nothing, or estimates its
        # joules (most VMs), is no fault, but its user must learn why the next run does not
        # predict from its first window.
        if sensors and self.arg == "auto" and not trusted:
            estimated = sorted(
                f"{s.domain} ({s.kind.value})"
                for s in sensors
                if s.kind.value not in MEASURED_KINDS
            )
            self.notes.note_once(
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
        if model.n_updates == 0:
            needed_s = max((float(s.min_window_s) for s in sensors), default=0.0)
            if sensors and window_s < needed_s:
                # every window is short however long the run: the window is the fix
                self.notes.note_once(
                    "calibration-unsaved",
                    f"no calibration saved to {where}: no window was fitted (every window was "
                    f"shorter than the {needed_s:g} s a sensor needs (window_s={window_s:g} s)). "
                    f"Fix: leave window_s unset, or pass window_s >= {needed_s:g}.",
                )
            elif sensors:
                self.notes.note_once(
                    "calibration-unsaved",
                    f"no calibration saved to {where}: no window was fitted (the run was "
                    f"shorter than one {window_s:g} s window, or its windows were short or "
                    "faulty). Fix: train longer.",
                )
            return
        try:
            calibration = Calibration.from_model(
                model, hardware, run_id=run_id, sensor_kind=weakest_kind(kinds)
            )
            self.path = self.store.save(calibration)
        except Exception as exc:
            self.notes.warn_once("calibration-save", f"calibration not saved: {exc}")
        finally:
            self.take_store_warnings()

    def take_store_warnings(self) -> None:
        """Copy the calibration store's new warnings (already shown) into the report's."""
        if self.store is None:
            return
        self.notes.extend(self.store.warnings[self._store_warnings_seen :])
        self._store_warnings_seen = len(self.store.warnings)
