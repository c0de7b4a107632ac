"""The schedule: which workloads fit the budget, and how each one is measured.

Each workload is measured over one window of at least :data:`MIN_WINDOW_S` seconds (NVML's
energy counter changes about every 100 ms, so shorter windows are not trustworthy). A window
opens and closes on a counter update: the workload keeps running, one iteration at a time,
until the counter's reading changes, so the window spans whole counter periods and its energy
is not off by up to a period's worth of joules at each edge (5 % of a 2 s window at 100 ms).
The result is one :class:`Measured` per workload: joules and seconds per iteration, with the
iteration's counted profile.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lightning_to_energy.counting.profile import StepProfile
from lightning_to_energy.sensors.meter import Meter

from .bench import Bench, CalibrationError, check_sensors
from .workloads import Workload

__all__ = [
    "MAX_WINDOW_S",
    "MIN_WINDOW_S",
    "PREP_S",
    "TICK_TIMEOUT_S",
    "Measured",
    "Plan",
    "Progress",
    "measure",
    "plan",
    "run_plan",
]

MIN_WINDOW_S = 2.0
"""Shortest measurement window (NVML's counter: about 100 ms per update)."""
MAX_WINDOW_S = 4.0
"""Longest window: a larger budget measures more workloads rather than longer ones."""
PREP_S = 0.6
"""Estimated seconds per workload outside its window: allocation, counting, graph capture,
warm-up and the waits for counter updates at both edges."""
TICK_TIMEOUT_S = 0.5
"""How long an edge waits for the counter to change before it opens anyway."""


@dataclass(frozen=True)
class Plan:
    """The workloads to measure and the window length.

    Attributes:
        workloads: in measuring order.
        window_s: seconds per window.
        dropped: workloads left out (unsupported format, or no time), with the reason.
        estimate_s: the plan's expected duration.
    """

    workloads: tuple[Workload, ...]
    window_s: float
    dropped: tuple[tuple[str, str], ...]
    estimate_s: float


def plan(
    workloads: Sequence[Workload],
    budget_s: float,
    skip: Callable[[Workload], str | None] = lambda w: None,
    *,
    min_window_s: float = MIN_WINDOW_S,
) -> Plan:
    """The workloads that fit ``budget_s``: every essential one, then extras in order.

    Args:
        workloads: candidates (:func:`~lightning_to_energy.calibrate.workloads.all_workloads`).
        budget_s: seconds for the measurements.
        skip: why the device cannot run a workload (None: it can).
        min_window_s: the shortest trustworthy window of the sensors.

    Raises:
        CalibrationError: the budget cannot fit the essential workloads (the message gives
            the smallest budget that does).
    """
    dropped: list[tuple[str, str]] = []
    usable: list[Workload] = []
    for w in workloads:
        reason = skip(w)
        if reason is not None:
            dropped.append((w.name, reason))
        else:
            usable.append(w)
    per_s = min_window_s + PREP_S
    essential = [w for w in usable if w.priority == 0]
    need_s = len(essential) * per_s
    if not (math.isfinite(budget_s) and budget_s >= need_s):
        raise CalibrationError(
            f"expected --budget-s of at least {math.ceil(need_s)} s (the {len(essential)} "
            f"measurements that pin the parameters, {min_window_s:g} s windows plus "
            f"{PREP_S:g} s of preparation each), found {budget_s:g} s. Fix: pass --budget-s "
            f"{math.ceil(need_s)} or more ({math.ceil(len(usable) * per_s)} measures every "
            "workload)."
        )
    room = int((budget_s - need_s) // per_s)
    extras = [w for w in usable if w.priority != 0]
    chosen = {w.name for w in essential} | {w.name for w in extras[:room]}
    dropped += [(w.name, "no time left in the budget") for w in extras[room:]]
    # essential ones first: if the device runs slower than planned, extras are what is lost
    ordered = tuple(w for w in usable if w.name in chosen and w.priority == 0) + tuple(
        w for w in usable if w.name in chosen and w.priority != 0
    )
    window_s = min(MAX_WINDOW_S, (budget_s - len(ordered) * PREP_S) / len(ordered))
    window_s = max(window_s, min_window_s)
    return Plan(ordered, window_s, tuple(dropped), len(ordered) * (window_s + PREP_S))


@dataclass(frozen=True)
class Measured:
    """One workload's window.

    Attributes:
        workload: what ran.
        profile: the counted cost of one iteration.
        energy_j: joules per iteration (whole device, base power included).
        time_s: seconds per iteration.
        iterations: iterations inside the window.
        window_s: the window's duration.
        power_w: mean power over the window.
        short: the window was shorter than a sensor's minimum.
        faults: sensor faults during the window (domain -> text).
    """

    workload: Workload
    profile: StepProfile
    energy_j: float
    time_s: float
    iterations: int
    window_s: float
    power_w: float
    short: bool
    faults: dict[str, str]

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready values (the profile summarised by its totals)."""
        return {
            "name": self.workload.name,
            "group": self.workload.group,
            "energy_only": self.workload.energy_only,
            "energy_j": self.energy_j,
            "time_s": self.time_s,
            "iterations": self.iterations,
            "window_s": self.window_s,
            "power_w": self.power_w,
            "flops": self.profile.flops,
            "bytes": self.profile.bytes,
            "kernels": self.profile.kernels,
            "short": self.short,
            "faults": dict(self.faults),
        }


Progress = Callable[[str, int, int], object]
"""Called before each workload: (name, index, total)."""


def _until_tick(bench: Bench, run: Callable[[int], None]) -> int:
    """Run single iterations until a counter sensor's reading changes; iterations run."""
    counters = [s for s in bench.sensors if s.update_period_s > 0]
    if not counters:
        return 0
    sensor = counters[0]
    start_j = sensor.read_j()
    t0 = bench.clock()
    n = 0
    while bench.clock() - t0 < TICK_TIMEOUT_S:
        run(1)
        bench.sync()
        n += 1
        if sensor.read_j() != start_j:
            break
    return n


def measure(bench: Bench, workload: Workload, window_s: float) -> Measured:
    """Prepare ``workload`` on ``bench`` and measure one window of about ``window_s``.

    Raises:
        CalibrationError: the window produced no usable energy (every sensor failed).
    """
    prepared = bench.prepare(workload)
    run = prepared.run
    t0 = bench.clock()
    run(1)
    bench.sync()
    iteration_s = max(bench.clock() - t0, 1e-7)
    meter = Meter(bench.sensors, clock=bench.clock, sync=bench.sync, warn=False)
    _until_tick(bench, run)
    meter.open()
    n = max(1, math.ceil(window_s / iteration_s))
    run(n)
    n += _until_tick(bench, run)
    m = meter.close()
    if not m.energy_j or m.duration_s <= 0:
        raise CalibrationError(
            f"expected energy readings over the {workload.name} window, found none (faults: "
            f"{dict(m.faults) or 'none'}). Fix: check `lightning-to-energy sensors`."
        )
    return Measured(
        workload=workload,
        profile=prepared.profile,
        energy_j=m.total_j / n,
        time_s=m.duration_s / n,
        iterations=n,
        window_s=m.duration_s,
        power_w=m.total_j / m.duration_s,
        short=m.short,
        faults=dict(m.faults),
    )


def run_plan(
    bench: Bench, the_plan: Plan, progress: Progress | None = None
) -> tuple[tuple[Measured, ...], tuple[tuple[str, str], ...]]:
    """Measure the workloads of ``the_plan`` on ``bench``, in order, within its estimate.

    An extra workload (priority 1) that would end past the plan's estimate is skipped: a
    device slower to prepare than planned loses extra points, never the budget. A workload
    that raises (a format or kernel this device or build refuses, memory) is skipped with the
    error; its parameters are then reported as not identified.

    Returns:
        The windows measured, and the workloads skipped with the reason.

    Raises:
        CalibrationError: the bench's sensors do not measure energy.
    """
    check_sensors(bench.sensors, bench.device_name)
    out: list[Measured] = []
    skipped: list[tuple[str, str]] = []
    total = len(the_plan.workloads)
    deadline_s = bench.clock() + the_plan.estimate_s
    for i, workload in enumerate(the_plan.workloads):
        if progress is not None:
            progress(workload.name, i, total)
        if workload.priority != 0 and bench.clock() + the_plan.window_s + PREP_S > deadline_s:
            skipped.append((workload.name, "the budget was spent (preparation took longer)"))
            continue
        try:
            out.append(measure(bench, workload, the_plan.window_s))
        except CalibrationError:
            raise  # the sensors stopped answering: no later window would be better
        except Exception as exc:  # one kernel the device refuses must not cost the others
            skipped.append((workload.name, f"failed: {type(exc).__name__}: {exc}"[:300]))
    if progress is not None:
        progress("fitting", total, total)
    return tuple(out), tuple(skipped)
