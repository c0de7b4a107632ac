"""Windows of measured energy over a set of sensors.

A window is opened and closed at step boundaries. At each edge the meter synchronises CUDA (so
the window holds exactly the GPU work launched inside it), reads the clock, then reads every
sensor. Sensors with a background sampler answer at once, so an edge costs the training thread
microseconds, not the ~3 ms of an NVML energy read. A sensor that fails is left out of that
window and listed in :attr:`Measurement.faults`; the meter warns once per domain and carries on,
so a flaky counter never stops training.

Example::

    from lightning_to_energy.sensors.meter import Meter
    from lightning_to_energy.sensors import FakeSensor

    meter = Meter([FakeSensor("gpu:0", power_w=300.0)])
    meter.open()
    ...  # train for a while
    m = meter.close()
    print(m.duration_s, m.energy_j["gpu:0"], m.short)
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from lightning_to_energy.sensors.base import Sensor, SensorError, SensorKind

__all__ = [
    "Measurement",
    "Meter",
]


@dataclass(frozen=True)
class Measurement:
    """One closed window.

    Attributes:
        start_s: the meter clock's value when the window opened.
        duration_s: seconds between the two edges (after CUDA synchronisation).
        energy_j: joules by domain, for the domains that read cleanly at both edges.
        total_j: the sum of ``energy_j``.
        kinds: domain -> how its joules are obtained (every sensor of the meter).
        sources: domain -> human-readable origin (every sensor of the meter).
        short: the window is shorter than some sensor's ``min_window_s``: its joules are not
            trustworthy (an NVML counter changes only every ~100 ms).
        faults: domain -> error text, for the domains left out of ``energy_j``.
    """

    start_s: float
    duration_s: float
    energy_j: Mapping[str, float]
    total_j: float
    kinds: Mapping[str, SensorKind]
    sources: Mapping[str, str]
    short: bool
    faults: Mapping[str, str]

    @property
    def mean_power_w(self) -> float | None:
        """``total_j / duration_s``; None for an empty window."""
        # J / s = W
        return self.total_j / self.duration_s if self.duration_s > 0 else None

    @property
    def includes_estimate(self) -> bool:
        """True when some of ``total_j`` is an estimate rather than a measurement."""
        return any(self.kinds[d] is SensorKind.ESTIMATE for d in self.energy_j)

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready values (kinds as their string values)."""
        return {
            "start_s": self.start_s,
            "duration_s": self.duration_s,
            "energy_j": dict(self.energy_j),
            "total_j": self.total_j,
            "kinds": {d: k.value for d, k in self.kinds.items()},
            "sources": dict(self.sources),
            "short": self.short,
            "faults": dict(self.faults),
        }


class Meter:
    """Opens and closes energy windows over sensors.

    Args:
        sensors: the sensors to read; their domains must be distinct.
        clock: seconds (default ``time.perf_counter``).
        sync: called before each edge's readings, e.g. ``torch.cuda.synchronize`` when
            training on CUDA, so queued GPU work lands in the right window; None on CPU.
        warn: warn (once per domain) when a sensor fails. Callers that report faults
            themselves, like the callback (once, on rank zero), pass False.

    Raises:
        ValueError: two sensors share a domain.
    """

    def __init__(
        self,
        sensors: Iterable[Sensor],
        clock: Callable[[], float] = time.perf_counter,
        sync: Callable[[], object] | None = None,
        *,
        warn: bool = True,
    ) -> None:
        self.sensors = tuple(sensors)
        domains = [s.domain for s in self.sensors]
        duplicates = sorted({d for d in domains if domains.count(d) > 1})
        if duplicates:
            raise ValueError(
                f"each sensor needs its own domain; found {duplicates} more than once. "
                "Give the sensors distinct domain names."
            )
        self._clock = clock
        self._sync = sync
        self._kinds = MappingProxyType({s.domain: SensorKind(s.kind) for s in self.sensors})
        self._sources = MappingProxyType({s.domain: s.source for s in self.sensors})
        # Peek callables looked up once: the live display calls peek_j() often.
        self._peekers = tuple(
            (s.domain, peek) for s in self.sensors if callable(peek := getattr(s, "peek_j", None))
        )
        self._start_j: dict[str, float] | None = None
        self._open_faults: dict[str, str] = {}
        self._t0_s = 0.0
        # With warnings off, every domain counts as already warned about.
        self._warned: set[str] = set() if warn else {s.domain for s in self.sensors}

    @property
    def min_window_s(self) -> float:
        """The longest ``min_window_s`` of the sensors: shorter windows are flagged short."""
        return max((s.min_window_s for s in self.sensors), default=0.0)

    @property
    def is_open(self) -> bool:
        """True between :meth:`open` and :meth:`close`."""
        return self._start_j is not None

    def open(self) -> None:
        """Start a window: synchronise, read the clock, read every sensor.

        Raises:
            RuntimeError: a window is already open.
        """
        if self._start_j is not None:
            raise RuntimeError("Meter.open(): a window is already open; close() it first.")
        self._t0_s, self._start_j, self._open_faults = self._edge()

    def close(self) -> Measurement:
        """End the window and return its measurement. Sensor failures never raise here.

        Raises:
            RuntimeError: no window is open.
        """
        measurement, _ = self._finish()
        return measurement

    def lap(self) -> Measurement:
        """Close the window and open the next one at the same edge (one read serves both).

        Raises:
            RuntimeError: no window is open.
        """
        measurement, (t_s, readings, faults) = self._finish()
        self._t0_s, self._start_j, self._open_faults = t_s, readings, faults
        return measurement

    def peek_j(self) -> float:
        """Joules so far in the open window, from the sensors' latest samples (no blocking).

        Sensors without ``peek_j`` and domains that failed at the opening edge are left out;
        0.0 when no window is open.
        """
        start = self._start_j
        if start is None:
            return 0.0
        total_j = 0.0
        for domain, peek in self._peekers:
            if domain not in start:
                continue
            try:
                value = peek()
            except Exception:  # a live display must never fail
                continue
            if value is not None and value > start[domain]:
                total_j += value - start[domain]
        return total_j

    # --- internals ------------------------------------------------------------------------

    def _finish(self) -> tuple[Measurement, tuple[float, dict[str, float], dict[str, str]]]:
        start = self._start_j
        if start is None:
            raise RuntimeError("Meter.close(): no window is open; call open() first.")
        edge = self._edge()
        t_s, end, end_faults = edge
        energy: dict[str, float] = {}
        faults: dict[str, str] = {}
        for sensor in self.sensors:
            domain = sensor.domain
            if domain in self._open_faults:
                faults[domain] = f"at window open: {self._open_faults[domain]}"
            elif domain in end_faults:
                faults[domain] = end_faults[domain]
            elif end[domain] < start[domain]:
                faults[domain] = (
                    f"energy went backwards: {start[domain]:.6g} J at open, "
                    f"{end[domain]:.6g} J at close (was the counter reset?)"
                )
                self._warn_once(domain, faults[domain])
            else:
                energy[domain] = end[domain] - start[domain]
        duration_s = t_s - self._t0_s
        measurement = Measurement(
            start_s=self._t0_s,
            duration_s=duration_s,
            energy_j=MappingProxyType(energy),
            total_j=math.fsum(energy.values()),
            kinds=self._kinds,
            sources=self._sources,
            short=duration_s < self.min_window_s,
            faults=MappingProxyType(faults),
        )
        self._start_j = None
        self._open_faults = {}
        return measurement, edge

    def _edge(self) -> tuple[float, dict[str, float], dict[str, str]]:
        if self._sync is not None:
            self._sync()
        t_s = self._clock()
        readings: dict[str, float] = {}
        faults: dict[str, str] = {}
        for sensor in self.sensors:
            try:
                value = float(sensor.read_j())
            except Exception as exc:  # never let a sensor stop training
                text = str(exc) if isinstance(exc, SensorError) else f"{type(exc).__name__}: {exc}"
                faults[sensor.domain] = text
                self._warn_once(sensor.domain, text)
                continue
            if not math.isfinite(value):
                faults[sensor.domain] = f"read {value!r} J, expected a finite number"
                self._warn_once(sensor.domain, faults[sensor.domain])
                continue
            readings[sensor.domain] = value
        return t_s, readings, faults

    def _warn_once(self, domain: str, text: str) -> None:
        if domain in self._warned:
            return
        self._warned.add(domain)
        warnings.warn(
            f"energy sensor {domain} failed: {text}. Its joules are left out of the affected "
            "windows (listed in Measurement.faults); the meter carries on. Further failures "
            f"of {domain} are not warned about again.",
            RuntimeWarning,
            stacklevel=4,
        )
