"""The live prior: the online regression starts from the physical step model.

Where the prior comes from, in this order (chosen at the start, once the calibration is read):

a. the calibration carries a physical model whose ``target`` is this run's hardware key: its
   parameters, at a strength from its held-out interval (:func:`calibrated_strength`); a
   regression calibration that also carries one keeps seeding the model with its windows;
b. no physical model for this hardware in the calibration, and the package ships a calibration
   for the run's GPU (:func:`~lightning_to_energy.calibration.builtin_calibration`, e.g.
   ``h100-sxm``): its physical model, at the strength of its held-out interval, as in (a); a
   regression calibration (an earlier run's save) keeps seeding the model with its windows, as
   in (a): its own coefficients are not identifiable off the models it saw;
c. no usable calibration, and the run's device is a GPU of the hardware table: its datasheet
   priors (:func:`~lightning_to_energy.model.prior_for`), as weak as the regression's default;
d. otherwise (a CPU without a physical calibration, an unknown device, a regression calibration
   without a physical model on a GPU without a built-in one, ``calibration=None``): what the
   calibration link did, unchanged.

The mapping to the regression's coefficients needs a counted step, so the prior is set when the
first step's profile is known and before any window is fitted (:meth:`LivePriorLink.apply`,
called before each window is predicted, at a close or a checkpoint's snapshot). Nothing here
stops training: a failure is one warning, and the model stays as the calibration link left it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from lightning_to_energy.calibration.builtin import builtin_calibration
from lightning_to_energy.hardware.specs import HardwareSpec
from lightning_to_energy.model.physical import PhysicalModel, PhysicalParams
from lightning_to_energy.model.physical_live import (
    DATASHEET_STRENGTH,
    calibrated_strength,
    live_prior,
)
from lightning_to_energy.model.physical_prior import prior_for
from lightning_to_energy.model.regression import OnlineEnergyModel
from lightning_to_energy.reporting.records import PriorRecord
from lightning_to_energy.tracking.calibration_link import CalibrationLink
from lightning_to_energy.tracking.machine import Machine
from lightning_to_energy.tracking.notes import Notes
from lightning_to_energy.tracking.steps import StepAccounting

__all__ = ["LivePriorLink", "PhysicalSource"]


@dataclass(frozen=True)
class PhysicalSource:
    """A physical model chosen to give the live prior.

    Attributes:
        params: its parameters.
        label: where they come from, in words (the report's prior line).
        strength: the prior's strength, in windows' worth of evidence.
        calibrated: it is the run's calibration's physical model (not a built-in calibration's,
            nor datasheet priors).
    """

    params: PhysicalParams
    label: str
    strength: float
    calibrated: bool = False


class LivePriorLink:
    """Chooses the physical model behind the live prior, and sets it on the first step.

    Args:
        calibration: the calibration link (what was read, and the report's prior record).
        notes: where a mismatch or a failure is warned about.
        acct: the step accounting (the run's first counted step).

    Attributes:
        source: the physical model chosen at :meth:`choose`, until :meth:`apply` used it.
    """

    def __init__(self, calibration: CalibrationLink, notes: Notes, acct: StepAccounting) -> None:
        self.link = calibration
        self.notes = notes
        self.acct = acct
        self.source: PhysicalSource | None = None

    def load(
        self, machine: Machine, model: OnlineEnergyModel, features: tuple[str, ...]
    ) -> OnlineEnergyModel:
        """The calibration link's model for ``machine`` (see :meth:`CalibrationLink.load`),
        with the physical prior's source chosen for it (set by :meth:`apply`)."""
        model = self.link.load(machine.hardware, model, features)
        self.choose(machine.roofline, model)
        return model

    def choose(self, spec: HardwareSpec | None, model: OnlineEnergyModel) -> None:
        """Pick the source (a to d above) for a run on ``spec`` (None: an unknown device).
        Never raises: a failure is one warning, and no physical prior."""
        self.source = None
        try:
            self._choose(spec, model)
        except Exception as exc:  # never let a prior stop training
            self.source = None
            self.notes.warn_once("physical-prior", f"physical prior not chosen: {exc}")
            self._say_why(f"the physical prior could not be chosen: {exc}")

    def _choose(self, spec: HardwareSpec | None, model: OnlineEnergyModel) -> None:
        link = self.link
        if link.arg is None or link.prior_restored or model.n_updates:
            return  # no prior asked for, or a restored model keeps the prior it started from
        cal, why = link.calibration, ""
        if cal is not None and cal.physical is not None:
            physical = PhysicalModel.from_dict(cal.physical)  # checked when the file was read
            if spec is not None and physical.target == spec.key:
                self.source = PhysicalSource(
                    physical.params,
                    f"{link.where}'s physical model fitted on "
                    f"{_data_name(physical.source, 'unnamed data')} ({physical.target})",
                    calibrated_strength(physical.energy_log_halfwidth),
                    calibrated=True,
                )
                return
            here = "not in the hardware table" if spec is None else repr(spec.key)
            why = (
                f"{link.where}'s physical model is for {physical.target!r} and this run's "
                f"hardware is {here}"
            )
            self.notes.warn_once(
                "physical-target",
                f"{why}, so it is not used. Fix: calibrate this hardware (`lightning-to-energy "
                f"calibrate`), or pass the calibration of {physical.target!r} only there.",
            )
        gpu = spec if spec is not None and spec.kind == "gpu" else None
        shipped = builtin_calibration(gpu.key) if gpu is not None else None
        if gpu is not None and shipped is not None and shipped.physical is not None:
            # Also under a regression calibration (which keeps seeding the model with its
            # windows): its coefficients, fitted on runs of a few models, are not identifiable
            # (docs/regression.md), so off those models they extrapolate; the built-in's were
            # fitted on 54 measured steps. The seeds outweigh it wherever they pin anything.
            physical = PhysicalModel.from_dict(shipped.physical)
            self.source = PhysicalSource(
                physical.params,
                "the built-in calibration of "
                f"{gpu.key}, fitted on {_data_name(physical.source, 'published measurements')}",
                calibrated_strength(physical.energy_log_halfwidth),
            )  # not calibrated=True: the report's source stays the run's calibration file
            self._say_why(why)
            return
        if link.used:  # a regression calibration: its prior and seeds, over datasheet priors
            if not why and gpu is not None:
                why = (
                    f"{link.where}'s regression coefficients (measured windows) are kept over "
                    f"the datasheet priors of {gpu.key}"
                )
            self._say_why(why)
            return
        if gpu is not None:
            try:
                params = prior_for(gpu)
            except Exception as exc:  # never let a prior stop training
                self._say_why(f"the datasheet priors of {gpu.key} failed: {exc}")
                return
            label = f"datasheet priors for {gpu.name} ({gpu.key})"
            self.source = PhysicalSource(params, label, DATASHEET_STRENGTH)
            self._say_why(why)  # the calibration's physical model, when it was for another target
            return
        if not why:
            why = (
                "this device is not in the hardware table (and no calibration carries a physical "
                "model for it)"
                if spec is None
                else f"{spec.name} is a CPU without a physical calibration (datasheet priors "
                "cover the GPUs of the hardware table)"
            )
        self._say_why(why)

    def apply(self, model: OnlineEnergyModel) -> None:
        """Set the chosen prior on ``model`` once the first step is counted, before any window
        is fitted; a failure is one warning, and ``model`` stays as it was."""
        source = self.source
        if source is None:
            return
        if self.link.prior_restored or model.n_updates:
            self.source = None  # a restored (or already fitted) model keeps its prior
            return
        first = self.acct.first_step()
        if first is None:
            return  # no step counted yet: at the next close
        self.source = None
        profile, features = first
        try:
            mapped = live_prior(
                source.params, profile, features, model.feature_names, strength=source.strength
            )
            model.set_prior(mapped.prior)
        except Exception as exc:  # never let a prior stop training
            why = f"the physical prior ({source.label}) could not be mapped: {exc}"
            self.notes.warn_once("physical-prior", f"{why}; the model starts without it")
            self._say_why(why)
            return
        if mapped.unmapped:
            self.notes.note_once(
                "physical-unmapped",
                f"physical prior: no term for features {list(mapped.unmapped)}; their prior "
                "coefficient is 0 and this run's windows learn them",
            )
        self._record(source)

    def _record(self, source: PhysicalSource) -> None:
        """The report's prior record says the physical model gave the coefficients."""
        link, cal = self.link, self.link.calibration
        prior = link.prior or PriorRecord()
        if link.used or not source.calibrated or cal is None or link.where is None:
            link.prior = replace(prior, physical=source.label)
            return
        # a calibration whose physical model alone was used (no regression windows)
        link.prior = replace(
            prior,
            source=str(link.where),
            stored_windows=len(cal.windows),
            stored_runs=cal.n_runs,
            hardware=cal.hardware.label,
            other_hardware=link.other_hardware,
            note="",
            physical=source.label,
        )

    def _say_why(self, why: str) -> None:
        if why and self.link.prior is not None and not self.link.prior_restored:
            self.link.prior = replace(self.link.prior, physical_note=why)


def _data_name(source: str, default: str) -> str:
    """What a physical model was fitted on, short: the data's file name, not its whole
    description (``"h100-training-steps.json: Measured energy ... 2026-11-25."``), since the
    report's prior line goes on after it."""
    return (source or default).split(": ")[0].rstrip(" .") or default
