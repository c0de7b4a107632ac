"""The window ledger: the windows closed so far, their running totals, and the archive of
windows folded out of the list on long runs (so totals stay exact at any length)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from lightning_to_energy.reporting.records import LoopTotals, WindowRecord
from lightning_to_energy.sensors.meter import Measurement, Meter

__all__ = [
    "LOOPS",
    "OpenWindow",
    "RunningTotals",
    "WindowLedger",
    "add_totals",
    "join_measurements",
    "loop_totals",
    "merge_archives",
    "sum_windows",
]

LOOPS = ("train", "validate", "test")


@dataclass
class RunningTotals:
    """Sums over closed windows, kept as windows close so that no step re-sums the run."""

    measured_j: float = 0.0
    predicted_j: float = 0.0  # over measured windows that had a prediction
    unpredicted_j: float = 0.0  # measured joules of windows closed before any prediction
    any_prediction: bool = False
    train_steps: int = 0
    train_duration_s: float = 0.0
    train_measured_j: float = 0.0
    # The warm-up windows (compilation, allocator and data-loader start-up): the run's first
    # train window and the first one each resumed process closes, summed apart so the
    # forecast's per-step rate can leave them out. A warm-up in the archive when a checkpoint
    # is restored is not among them (a resumed long run, whose many windows dilute it).
    warmup_indices: frozenset[int] = frozenset()
    warmup_steps: int = 0
    warmup_duration_s: float = 0.0
    warmup_measured_j: float = 0.0
    # The next train window is a warm-up: at the run's start, and again after a restore.
    warmup_due: bool = True
    # The latest warm-up's seconds per step, and the steady train windows closed since it:
    # while one is in, its rate is unconfirmed and the warm-up's is a bound.
    latest_warmup_rate_s: float | None = None
    steady_since_warmup: int = 0

    def add_archived(self, t: LoopTotals) -> None:
        """Add the totals of windows folded into the archive."""
        self.measured_j += t.measured_j
        self.predicted_j += t.predicted_j
        self.any_prediction = self.any_prediction or t.predicted_j > 0
        if t.loop == "train":
            self.train_steps += t.steps
            self.train_duration_s += t.duration_s
            self.train_measured_j += t.measured_j
            self.warmup_due = self.warmup_due and t.windows == 0

    def add(self, w: WindowRecord, *, warmup: bool | None = None) -> None:
        """Add one closed window.

        Args:
            w: the window.
            warmup: whether a train window is a warm-up; None: if it is the first train
                window since the start or a restore (see ``warmup_due``).
        """
        if w.measured_j is not None:
            self.measured_j += w.measured_j
            if w.predicted_j is not None:
                self.predicted_j += w.predicted_j
                self.any_prediction = True
            else:
                self.unpredicted_j += w.measured_j
        if w.loop == "train" and w.steps > 0:
            if self.warmup_due if warmup is None else warmup:
                self.warmup_due = False
                self.warmup_indices |= {w.index}
                self.warmup_steps += w.steps
                self.warmup_duration_s += w.duration_s
                self.warmup_measured_j += w.measured_j or 0.0
                self.latest_warmup_rate_s = w.duration_s / w.steps
                self.steady_since_warmup = 0
            else:
                self.steady_since_warmup += 1
            self.train_steps += w.steps
            self.train_duration_s += w.duration_s
            self.train_measured_j += w.measured_j or 0.0


@dataclass
class OpenWindow:
    """The window steps are being added to."""

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


class WindowLedger:
    """Closed windows, kept one by one up to ``max_windows``, then folded per loop.

    Args:
        max_windows: windows kept one by one; the oldest tenth is folded into per-loop
            totals when the list grows past it.
    """

    def __init__(self, max_windows: int) -> None:
        self.max_windows = max_windows
        self.windows: list[WindowRecord] = []
        self.n_windows = 0  # windows closed in the run, folded ones included
        self.archived: dict[str, LoopTotals] = {}  # per loop: windows folded out of the list
        self.archived_unpredicted_j = 0.0  # measured J of folded windows without a prediction
        # predicted J of folded windows that had no measurement: the live readout leaves them out
        self.archived_unmeasured_predicted_j = 0.0
        self.totals = RunningTotals()

    def append(self, record: WindowRecord) -> None:
        """Add a closed window, folding the oldest ones when the list is full."""
        self.windows.append(record)
        self.n_windows += 1
        self.totals.add(record)
        if len(self.windows) > self.max_windows:
            self.fold_oldest()

    def fold_oldest(self) -> None:
        """Fold the oldest tenth of the kept windows into the per-loop archive."""
        # Keep at least one window: max_windows=1 must not empty the list (the forecast and
        # the report's window table need the latest).
        n = len(self.windows) - max(self.max_windows * 9 // 10, 1)
        if n <= 0:
            return
        old, self.windows = self.windows[:n], self.windows[n:]
        self.archived_unpredicted_j += math.fsum(
            w.measured_j for w in old if w.measured_j is not None and w.predicted_j is None
        )
        self.archived_unmeasured_predicted_j += math.fsum(
            w.predicted_j for w in old if w.measured_j is None and w.predicted_j is not None
        )
        for loop in LOOPS:
            ws = [w for w in old if w.loop == loop]
            if ws:
                self.archived[loop] = add_totals(self.archived.get(loop), sum_windows(loop, ws))

    def restore(
        self,
        windows: list[WindowRecord],
        archived: dict[str, LoopTotals],
        n_windows: int,
        unpredicted_j: float,
        unmeasured_predicted_j: float,
        warmup_indices: frozenset[int] | None = None,
    ) -> None:
        """Take the windows and archive of a checkpoint, and recompute every running total.

        ``warmup_indices`` are the saved warm-up windows (None, from checkpoints before they
        were saved: the first train window kept, unless train windows were archived). The
        next train window to close is a warm-up too: this process's own.
        """
        self.windows = windows
        self.archived = archived
        self.n_windows = n_windows
        self.archived_unpredicted_j = unpredicted_j
        self.archived_unmeasured_predicted_j = unmeasured_predicted_j
        if len(self.windows) > self.max_windows:  # saved by a tracker that kept more
            self.fold_oldest()
        self.totals = RunningTotals()
        for totals in self.archived.values():
            self.totals.add_archived(totals)
        self.totals.unpredicted_j += self.archived_unpredicted_j
        # The archive's predicted joules include windows that were never measured; the live
        # readout compares measured with predicted over the same (measured) windows.
        self.totals.predicted_j -= self.archived_unmeasured_predicted_j
        for record in self.windows:
            self.totals.add(
                record, warmup=None if warmup_indices is None else record.index in warmup_indices
            )
        self.totals.warmup_due = True

    def warmups_with(self, snapshot: WindowRecord | None) -> frozenset[int]:
        """The warm-up windows' indices, the open window's ``snapshot`` included when it is
        one (what a checkpoint saves)."""
        t = self.totals
        if t.warmup_due and snapshot is not None and snapshot.loop == "train" and snapshot.steps:
            return t.warmup_indices | {snapshot.index}
        return t.warmup_indices


def loop_totals(
    windows: Sequence[WindowRecord], archived: Mapping[str, LoopTotals], world_size: int
) -> dict[str, LoopTotals]:
    """Per-loop totals of ``windows`` and the ``archived`` totals, durations per rank."""
    loops: dict[str, LoopTotals] = {}
    for loop in LOOPS:
        ws = [w for w in windows if w.loop == loop]
        total = archived.get(loop)
        if ws:
            total = add_totals(total, sum_windows(loop, ws))
        if total is not None:
            # Durations add up over ranks: report the wall time of one rank on average.
            loops[loop] = replace(total, duration_s=total.duration_s / max(world_size, 1))
    return loops


def sum_windows(loop: str, ws: Sequence[WindowRecord]) -> LoopTotals:
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


def add_totals(a: LoopTotals | None, b: LoopTotals) -> LoopTotals:
    """``a`` plus ``b``, field by field and domain by domain (``b`` alone when ``a`` is None)."""
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
            merged[loop] = add_totals(merged.get(loop), totals)
    return merged


def join_measurements(first: Measurement, then: Measurement, meter: Meter | None) -> Measurement:
    """One measurement over two back-to-back parts of a window (``Meter.lap`` edges).

    A domain measured in both parts adds up; one that failed in either is a fault of the
    whole. ``short`` is judged on the joined duration.
    """
    faults = {**then.faults, **first.faults}
    rejected = {**then.rejected, **first.rejected}
    energy = {
        d: first.energy_j[d] + then.energy_j[d]
        for d in first.energy_j
        if d in then.energy_j and d not in faults and d not in rejected
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
        rejected=rejected,
    )
