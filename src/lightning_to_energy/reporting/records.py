"""Frozen records shared by the tracker, the callback and the report.

They hold plain numbers and strings only, so a report can be written to JSON, read back and
re-rendered without the objects that produced it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from lightning_to_energy.sensors.base import (
    ANOMALY_IMPLAUSIBLE,
    ANOMALY_MULTI_WRAP,
    ANOMALY_RESET,
)

__all__ = [
    "FLAG_BOUNDARY",
    "FLAG_COUNTER_RESET",
    "FLAG_ESTIMATE",
    "FLAG_FAULT",
    "FLAG_IMPLAUSIBLE",
    "FLAG_INTERRUPTED",
    "FLAG_MISSED_WRAPS",
    "FLAG_OUTLIER",
    "FLAG_SHORT",
    "FLAG_UNMEASURED",
    "NOT_FIT_FLAGS",
    "EnergyReport",
    "Forecast",
    "LoopTotals",
    "ModuleEnergy",
    "PriorRecord",
    "SensorInfo",
    "WindowRecord",
    "fit_worthy",
]

# Window flags. A window can carry several.
FLAG_SHORT = "short"  # shorter than a sensor's minimum trustworthy window
FLAG_FAULT = "sensor-fault"  # a sensor failed during the window; its domain is missing
FLAG_ESTIMATE = "estimate"  # some of the window's joules are an estimate, not a measurement
FLAG_UNMEASURED = "unmeasured"  # no joules at all for this window
FLAG_BOUNDARY = "boundary"  # closed early at an epoch or loop boundary
FLAG_OUTLIER = "not-fitted"  # measured, but not used to fit the model (short, faulty)
FLAG_INTERRUPTED = "interrupted"  # open when the run ended by an exception: not fitted
# A domain's reading could not be true; that domain is left out of the window's joules.
FLAG_IMPLAUSIBLE = ANOMALY_IMPLAUSIBLE  # implied power above twice the device's limit
FLAG_COUNTER_RESET = ANOMALY_RESET  # the counter went back: reset, not wrapped
FLAG_MISSED_WRAPS = ANOMALY_MULTI_WRAP  # reads too far apart: RAPL wraps may be missing
# Flags that keep a window's joules out of any fit (the model's, a calibration's, a study's).
NOT_FIT_FLAGS = frozenset(
    {
        FLAG_SHORT,
        FLAG_FAULT,
        FLAG_OUTLIER,
        FLAG_INTERRUPTED,
        FLAG_IMPLAUSIBLE,
        FLAG_COUNTER_RESET,
        FLAG_MISSED_WRAPS,
    }
)


@dataclass(frozen=True)
class SensorInfo:
    """Where a domain's joules come from."""

    domain: str
    kind: str  # a SensorKind value: counter, power-integration, estimate, replay, fake
    source: str
    update_period_s: float
    min_window_s: float


@dataclass(frozen=True)
class WindowRecord:
    """One measurement window: consecutive steps of one loop."""

    index: int
    loop: str  # "train", "validate" or "test"
    first_step: int  # the loop's step counter at the window's first step
    steps: int
    start_s: float  # seconds since the run started
    duration_s: float
    energy_j: Mapping[str, float]  # measured joules by domain
    measured_j: float | None  # sum over domains; None when nothing was measured
    predicted_j: float | None  # predicted before the measurement was seen (prequential)
    low_j: float | None
    high_j: float | None
    prediction_source: str  # "fit", "prior" or "none"
    tos: float
    flops: float
    features: Mapping[str, float] = field(default_factory=dict)
    flags: tuple[str, ...] = ()
    rank: int = 0


@dataclass(frozen=True)
class LoopTotals:
    """Totals for one loop (train / validate / test) over all ranks."""

    loop: str
    windows: int
    steps: int
    duration_s: float
    measured_j: float
    predicted_j: float
    tos: float
    flops: float
    energy_j: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ModuleEnergy:
    """Per-layer attribution of a step's predicted joules.

    ``predicted_j`` is the module's share of TOs times the step's predicted dynamic energy;
    ``static_j`` its share of the step's roofline time times the step's predicted static
    energy (static power x step time), None when it could not be attributed (the report's
    ``static_note`` says why).
    """

    name: str
    tos: float
    share: float  # of the step's TOs, 0..1
    predicted_j: float | None
    time_share: float | None = None  # of the step's roofline time, 0..1
    static_j: float | None = None


@dataclass(frozen=True)
class Forecast:
    """A whole run's predicted energy, from TOs per step and the steps still to run."""

    total_j: float
    low_j: float
    high_j: float
    steps_total: int
    steps_done: int

    @property
    def spread(self) -> float:
        """The interval's larger side as a fraction of the forecast (0.25: within ±25 %);
        infinite for a forecast of 0 J or less."""
        if self.total_j <= 0:
            return math.inf
        return max(self.high_j - self.total_j, self.total_j - self.low_j) / self.total_j


@dataclass(frozen=True)
class PriorRecord:
    """The calibration a run's model started from: its prior coefficients and seed windows.

    Attributes:
        source: the calibration file; ``""`` when the run started without one.
        seed_windows: stored windows that seeded the model (those with every one of the run's
            features, the most recent ``DEFAULT_HISTORY`` of them).
        seed_runs: the runs those windows came from.
        stored_windows: windows the file holds.
        stored_runs: runs merged into the file.
        hardware: the hardware the calibration was made on, in words (``""`` without one).
        other_hardware: it was made on other hardware than this run's (an explicit file).
        note: without a calibration, why (e.g. ``"the first run on this hardware: ..."``);
            with one, how it was used when not in full, else ``""``.
        physical: where the prior's coefficients came from when the physical step model gave
            them (``"datasheet priors for NVIDIA H100 SXM5 80GB"``, or ``"h100.json's physical
            model fitted on ..."``), else ``""``.
        physical_note: why a physical model did not give the prior where one could have (a
            calibration's physical model for another target, a CPU without a physical
            calibration, a step the mapping could not express), else ``""``.
    """

    source: str = ""
    seed_windows: int = 0
    seed_runs: int = 0
    stored_windows: int = 0
    stored_runs: int = 0
    hardware: str = ""
    other_hardware: bool = False
    note: str = ""
    physical: str = ""
    physical_note: str = ""


@dataclass(frozen=True)
class EnergyReport:
    """Everything the end-of-run report shows. Rendering lives in :mod:`report`."""

    created: str  # ISO 8601
    hardware: Mapping[str, str]
    sensors: tuple[SensorInfo, ...]
    skipped_sensors: Mapping[str, str]  # backend -> reason and fix
    windows: tuple[WindowRecord, ...]
    loops: Mapping[str, LoopTotals]
    measured_j: float  # all loops, all domains, all ranks
    predicted_j: float  # sum of prequential predictions over windows that have one
    accuracy: Mapping[str, float]  # precision_pct, mape, r2, median_rel_err, worst_rel_err, n
    coefficients: Mapping[str, float]
    coefficient_units: Mapping[str, str]
    identifiable: bool
    tos_by_class: Mapping[str, float]
    tos_by_format: Mapping[str, float]
    tos_by_phase: Mapping[str, float]
    top_modules: tuple[ModuleEnergy, ...]
    unmodelled_ops: Mapping[str, int]
    warnings: tuple[str, ...]
    forecast: Forecast | None = None
    world_size: int = 1
    version: str = "1"
    # the tracker's run id, as its calibration saves name the run ("" in older reports), so
    # that `fit` on this report replaces that run's windows instead of adding a second copy
    run_id: str = ""
    # the calibration the model started from (None in older reports): the first windows'
    # "prior" predictions come from it
    prior: PriorRecord | None = None
    # why static energy is not attributed to the modules ("" when it is, or in older reports)
    static_note: str = ""
    # why the run ended early ("KeyboardInterrupt", "RuntimeError: ..."); None: it finished
    interrupted: str | None = None


def fit_worthy(measured_j: float | None, flags: Iterable[str]) -> bool:
    """Whether a window's joules may fit an energy model: measured (> 0 J), and none of
    :data:`NOT_FIT_FLAGS` (not short, no sensor fault, not left out of the fit)."""
    return measured_j is not None and measured_j > 0 and NOT_FIT_FLAGS.isdisjoint(flags)
