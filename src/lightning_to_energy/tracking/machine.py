"""This process's machine: its identity (for the report and the calibration) and the roofline
spec its steps' seconds are estimated on. Both are best effort and never stop training."""

from __future__ import annotations

import math
from typing import Any

from lightning_to_energy.counting import StepProfile
from lightning_to_energy.hardware.detect import detect_hardware
from lightning_to_energy.hardware.identity import HardwareInfo, hardware_section
from lightning_to_energy.hardware.roofline import roofline_s
from lightning_to_energy.hardware.specs import HardwareSpec
from lightning_to_energy.tracking.notes import Notes

__all__ = ["Machine"]


class Machine:
    """The hardware a tracker runs on.

    The roofline's hardware (peaks per format, bandwidth, launch cost): each window records its
    steps' roofline seconds, so a run's windows can fit a calibration that needs no timing to
    predict (``lightning-to-energy fit REPORT --roofline``).

    Args:
        device: the torch device this process trains on, or None (the CPU's roofline).
        notes: where a failed identification is warned about.

    Attributes:
        hardware: the identity, None until :meth:`detect` or when it failed (warned).
        roofline: the roofline spec, None when the device is not in the hardware table.
        roofline_note: why there is no roofline (a report line), else None.
    """

    def __init__(self, device: Any, notes: Notes) -> None:
        self.device = device
        self._notes = notes
        self.hardware: HardwareInfo | None = None
        self.roofline: HardwareSpec | None = None
        self.roofline_note: str | None = None

    def cuda_devices(self) -> list[int]:
        """The CUDA device indices whose sensors this process reads."""
        if self.device is not None and self.device.type == "cuda":
            return [self.device.index if self.device.index is not None else 0]
        return []

    def detect(self) -> None:
        """Identify the machine and find its roofline spec."""
        try:
            self.hardware = HardwareInfo.detect()
        except Exception as exc:  # detection is best effort; it only names the report
            self._notes.warn_once("hardware", f"hardware not identified: {exc}")
        # NB: best effort and quiet: a GPU missing from the hardware table only costs the
        # windows their roofline_s column (the report says so), never a warning per run.
        try:
            self.roofline = detect_hardware(self.device if self.device is not None else "cpu")
        except Exception as exc:
            self.roofline_note = f"roofline time not recorded: {exc}"

    def roofline_s(self, profile: StepProfile) -> float:
        """The step's roofline seconds on this device, NaN without a roofline."""
        if self.roofline is None:
            return math.nan
        try:
            return roofline_s(profile, self.roofline)
        except ValueError:  # a profile without op_costs (made by hand): no roofline
            return math.nan

    def section(self) -> dict[str, str]:
        """The report's ``hardware`` section, with the roofline spec the windows used."""
        section = {} if self.hardware is None else hardware_section(self.hardware)
        if self.roofline is not None:  # what the windows' roofline_s is measured against
            section["roofline"] = f"{self.roofline.name} ({self.roofline.key})"
        return section
