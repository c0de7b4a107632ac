"""A labelled CPU energy estimate for machines with no readable counter (cloud VMs, containers).

This is a model, not a measurement: CPU seconds used by this process times a per-core power
figure, plus an optional constant idle term. Its kind is ``estimate`` wherever its numbers
appear, and its use is announced once per process with an :class:`EnergyEstimateWarning`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from lightning_to_energy import notices
from lightning_to_energy.notices import EnergyWarning
from lightning_to_energy.sensors.base import SensorKind

__all__ = [
    "DEFAULT_WATTS_PER_CORE",
    "CpuTimeEstimateSensor",
    "EnergyEstimateWarning",
]

#: Default power drawn by one fully busy core, in watts.
#: NB: a round figure for server cores under load (a 200 to 350 W package over 16 to 64 cores
#: gives about 5 to 20 W per core); set your own with ``watts_per_core``.
DEFAULT_WATTS_PER_CORE = 10.0


class EnergyEstimateWarning(EnergyWarning, UserWarning):
    """Emitted once per process when joules come from an estimate rather than a measurement."""


_announced = False
_announce_lock = threading.Lock()


def _announce_once(message: str) -> None:
    global _announced
    with _announce_lock:
        if _announced:
            return
        _announced = True
    notices.warn(message, EnergyEstimateWarning, stacklevel=3)


def _usable_cores() -> int:
    """The CPUs this process may run on (its affinity where the OS says, else all)."""
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        return max(len(affinity(0)), 1)
    return max(os.cpu_count() or 1, 1)


def _process_cpu_s() -> float:
    # User plus system CPU time of every thread of this process.
    return time.process_time()


class CpuTimeEstimateSensor:
    """CPU energy estimated from this process's CPU time.

    ``read_j() = watts_per_core * cpu_s + idle_w * wall_s`` where ``cpu_s`` is the process CPU
    time since the sensor was created (one busy core for one second adds one CPU second) and
    ``wall_s`` the wall time since then.

    NB: only this process is counted: DataLoader worker processes and other programs are not,
    and real per-core power depends on frequency, vector width and how many cores are busy.

    Args:
        domain: the domain name (default ``"cpu:estimate"``).
        watts_per_core: watts per fully busy core (default :data:`DEFAULT_WATTS_PER_CORE`).
        idle_w: constant watts added for the time that passes (default 0).
        cpu_time: seconds of CPU time used so far (default ``time.process_time``).
        clock: wall seconds (default ``time.perf_counter``).
        announce: warn once per process that an estimate is in use.

    Raises:
        ValueError: a negative power figure.
    """

    kind = SensorKind.ESTIMATE
    host_wide = False  # it estimates this process only, so every rank counts its own
    min_window_s = 0.0

    def __init__(
        self,
        domain: str = "cpu:estimate",
        *,
        watts_per_core: float = DEFAULT_WATTS_PER_CORE,
        idle_w: float = 0.0,
        cpu_time: Callable[[], float] = _process_cpu_s,
        clock: Callable[[], float] = time.perf_counter,
        announce: bool = True,
    ) -> None:
        if not (watts_per_core >= 0 and idle_w >= 0):
            raise ValueError(
                f"watts_per_core and idle_w must be >= 0 W; found {watts_per_core!r} and "
                f"{idle_w!r}."
            )
        self.domain = domain
        self.watts_per_core = float(watts_per_core)
        self.idle_w = float(idle_w)
        # The most this model can say: every usable core busy. The meter's plausibility
        # ceiling is twice it, so a big machine's estimate is never taken for garbage.
        self.power_limit_w = self.watts_per_core * _usable_cores() + self.idle_w
        self._cpu_time = cpu_time
        self._clock = clock
        self._cpu0_s = cpu_time()
        self._t0_s = clock()
        # process_time advances in scheduler ticks; its reported resolution is the best case.
        self.update_period_s = time.get_clock_info("process_time").resolution
        idle = f" + {self.idle_w:g} W idle" if self.idle_w else ""
        self.source = (
            f"estimate: process CPU time x {self.watts_per_core:g} W per busy core{idle} "
            "(not a measurement)"
        )
        if announce:
            _announce_once(
                f"CPU energy is an ESTIMATE ({self.source}): no readable hardware counter was "
                "found. Its numbers are labelled 'estimate'. Run `lightning-to-energy sensors` "
                "to see why RAPL is unavailable and how to enable it."
            )

    def read_j(self) -> float:
        """Estimated cumulative joules since the sensor was created."""
        cpu_s = self._cpu_time() - self._cpu0_s
        wall_s = self._clock() - self._t0_s
        # W x s + W x s = J
        return self.watts_per_core * cpu_s + self.idle_w * wall_s

    def peek_j(self) -> float | None:
        """Same as :meth:`read_j` (two cheap clock reads)."""
        return self.read_j()

    def close(self) -> None:
        """Nothing to release. Idempotent."""
