"""Windows of measured energy over a set of sensors.

A window is opened and closed at step boundaries. At each edge the meter synchronises CUDA (so
the window holds exactly the GPU work launched inside it), reads the clock, then reads every
sensor. Sensors with a background sampler answer at once, so an edge costs the training thread
microseconds, not the ~3 ms of an NVML energy read. A sensor that fails is left out of that
window and listed in :attr:`Measurement.faults`; the meter warns once per domain and carries on,
so a flaky counter never stops training.

A reading that cannot be true never reaches a total. Each domain's joules over a window are
checked against its power ceiling (:func:`~lightning_to_energy.sensors.base.power_ceiling_w`:
twice the device's stated limit, else 1 kW); a counter that went back is a reset; a sensor
that knows its interval is lost (a RAPL reset or possible missed wraps) says so with
:class:`~lightning_to_energy.sensors.base.ReadingAnomaly`. The domain is then left out of that
window, listed in :attr:`Measurement.rejected` with the kind, and the loss is never guessed.

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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from lightning_to_energy import notices
from lightning_to_energy.sensors.base import (
    ANOMALY_IMPLAUSIBLE,
    ANOMALY_RESET,
    ImplausibleReadingWarning,
    ReadingAnomaly,
    Sensor,
    SensorError,
    SensorKind,
    power_ceiling_w,
)

# One edge: the clock, the readings, the failures and the anomalies (domain -> (kind, text)).
_Edge = tuple[float, dict[str, float], dict[str, str], dict[str, tuple[str, str]]]

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
        rejected: domain -> (kind, reason) for the domains whose reading could not be true
            (kinds in :data:`~lightning_to_energy.sensors.base.ANOMALY_KINDS`); they are left
            out of ``energy_j`` too.
    """

    start_s: float
    duration_s: float
    energy_j: Mapping[str, float]
    total_j: float
    kinds: Mapping[str, SensorKind]
    sources: Mapping[str, str]
    short: bool
    faults: Mapping[str, str]
    rejected: Mapping[str, tuple[str, str]] = field(default_factory=lambda: MappingProxyType({}))

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
            "rejected": {d: {"kind": k, "reason": r} for d, (k, r) in self.rejected.items()},
        }


class Meter:
    """Opens and closes energy windows over sensors.

    Args:
        sensors: the sensors to read; their domains must be distinct.
        clock: seconds (default ``time.perf_counter``).
        sync: called before each edge's readings, e.g. ``torch.cuda.synchronize`` when
            training on CUDA, so queued GPU work lands in the right window; None on CPU.
        warn: warn (once per domain) when a sensor fails, and once per kind of rejected
            reading. Callers that report faults themselves, like the callback (once, on rank
            zero), pass False.

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
        # Per domain: the most joules a second may bring, and the reading's own granularity
        # (a counter that updates every 100 ms may add 100 ms of energy to any window).
        self._ceilings_w = {s.domain: power_ceiling_w(s) for s in self.sensors}
        self._slack_s = {s.domain: max(float(s.update_period_s), 0.0) for s in self.sensors}
        self._start_j: dict[str, float] | None = None
        self._open_faults: dict[str, str] = {}
        # Domains whose opening reading ended a window rejected as implausible: if the next
        # window then goes back, that is the rejected reading's echo, not a counter reset.
        self._suspect: set[str] = set()
        self._t0_s = 0.0
        self._warn = warn
        self._warned_kinds: set[str] = set()
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

    @property
    def opened_s(self) -> float:
        """The clock's value at the open window's first edge (the last edge when closed)."""
        return self._t0_s

    def open(self) -> None:
        """Start a window: synchronise, read the clock, read every sensor.

        Raises:
            RuntimeError: a window is already open.
        """
        if self._start_j is not None:
            raise RuntimeError("Meter.open(): a window is already open; close() it first.")
        # An anomaly before the window opened concerns no window: its baseline is enough.
        self._t0_s, self._start_j, self._open_faults, _ = self._edge()
        self._suspect = set()

    def close(self) -> Measurement:
        """End the window and return its measurement. Sensor failures never raise here.

        Raises:
            RuntimeError: no window is open.
        """
        measurement, _ = self._finish()
        self._suspect = set()
        return measurement

    def lap(self) -> Measurement:
        """Close the window and open the next one at the same edge (one read serves both).

        Windows lapped one after another tile time: no joule falls between two of them. A
        domain that failed at the edge is read once more to open the next window, so one
        transient failure costs one window, not two.

        Raises:
            RuntimeError: no window is open.
        """
        measurement, (t_s, readings, faults, _) = self._finish()
        if faults:
            _, retried, still, _ = self._edge(only=frozenset(faults), sync=False)
            readings.update(retried)
            faults = still
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

    def _finish(self) -> tuple[Measurement, _Edge]:
        start = self._start_j
        if start is None:
            raise RuntimeError("Meter.close(): no window is open; call open() first.")
        edge = self._edge()
        t_s, end, end_faults, anomalies = edge
        duration_s = t_s - self._t0_s
        energy: dict[str, float] = {}
        faults: dict[str, str] = {}
        rejected: dict[str, tuple[str, str]] = {}
        suspect: set[str] = set()
        for sensor in self.sensors:
            domain = sensor.domain
            if domain in self._open_faults:
                faults[domain] = f"at window open: {self._open_faults[domain]}"
            elif domain in end_faults:
                faults[domain] = end_faults[domain]
            elif domain in anomalies:
                rejected[domain] = anomalies[domain]
            else:
                verdict = self._check(domain, end[domain] - start[domain], duration_s)
                if verdict is None:
                    energy[domain] = end[domain] - start[domain]
                else:
                    rejected[domain] = verdict
                    if verdict[0] == ANOMALY_IMPLAUSIBLE and end[domain] > start[domain]:
                        suspect.add(domain)
        for domain, (kind, reason) in rejected.items():
            self._warn_kind(kind, domain, reason)
        self._suspect = suspect
        measurement = Measurement(
            start_s=self._t0_s,
            duration_s=duration_s,
            energy_j=MappingProxyType(energy),
            total_j=math.fsum(energy.values()),
            kinds=self._kinds,
            sources=self._sources,
            short=duration_s < self.min_window_s,
            faults=MappingProxyType(faults),
            rejected=MappingProxyType(rejected),
        )
        self._start_j = None
        self._open_faults = {}
        return measurement, edge

    def _check(self, domain: str, energy_j: float, duration_s: float) -> tuple[str, str] | None:
        """None when ``energy_j`` over ``duration_s`` can be true; else (kind, reason)."""
        if energy_j < 0:
            if domain in self._suspect:
                return (
                    ANOMALY_IMPLAUSIBLE,
                    f"went back by {-energy_j:.6g} J from an opening reading that was itself "
                    "rejected as implausible",
                )
            return (
                ANOMALY_RESET,
                f"the counter went back by {-energy_j:.6g} J in {duration_s:.3g} s: it was "
                "reset, and the energy of this window is unknown",
            )
        ceiling_w = self._ceilings_w[domain]
        # The counter's granularity: a window may see one update period more than it lasts.
        span_s = max(duration_s, 0.0) + self._slack_s[domain]
        if energy_j > ceiling_w * span_s:
            # J / s = W
            implied = f"{energy_j / span_s:.3g} W" if span_s > 0 else "unbounded power"
            return (
                ANOMALY_IMPLAUSIBLE,
                f"{energy_j:.6g} J in {duration_s:.3g} s implies {implied}, above its "
                f"{ceiling_w:g} W ceiling (twice its stated power limit, else 1 kW)",
            )
        return None

    def _edge(self, only: frozenset[str] | None = None, *, sync: bool = True) -> _Edge:
        if sync and self._sync is not None:
            self._sync()
        t_s = self._clock()
        readings: dict[str, float] = {}
        faults: dict[str, str] = {}
        anomalies: dict[str, tuple[str, str]] = {}
        for sensor in self.sensors:
            if only is not None and sensor.domain not in only:
                continue
            try:
                value = float(sensor.read_j())
            except ReadingAnomaly as exc:  # the interval is lost; the new baseline is good
                value = float(exc.value_j)
                anomalies[sensor.domain] = (exc.kind, str(exc))
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
        return t_s, readings, faults, anomalies

    def _warn_kind(self, kind: str, domain: str, reason: str) -> None:
        if not self._warn or kind in self._warned_kinds:
            return
        self._warned_kinds.add(kind)
        notices.warn(
            f"energy reading of {domain} rejected ({kind}): {reason}. The domain is left out "
            "of that window (Measurement.rejected), whose loss is not guessed; the meter "
            f"carries on. Further '{kind}' rejections are not warned about again.",
            ImplausibleReadingWarning,
            stacklevel=4,
        )

    def _warn_once(self, domain: str, text: str) -> None:
        if domain in self._warned:
            return
        self._warned.add(domain)
        notices.warn(
            f"energy sensor {domain} failed: {text}. Its joules are left out of the affected "
            "windows (listed in Measurement.faults); the meter carries on. Further failures "
            f"of {domain} are not warned about again.",
            stacklevel=4,
        )
