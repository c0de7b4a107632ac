"""Sensors for tests and demos: scripted readings and the replay of a recorded trace.

They ship with the package so that users can test their own energy code without hardware, the
way httpx ships a mock transport::

    now = [0.0]
    sensor = FakeSensor("gpu:0", power_w=300.0, clock=lambda: now[0])
    now[0] = 2.0
    sensor.read_j()  # 600.0 J: 300 W x 2 s

A trace recorded with ``lightning-to-energy record --seconds 60 --out trace.csv`` has one row per
sample and domain, with the columns of :data:`TRACE_COLUMNS`; :meth:`ReplaySensor.from_csv` plays
one domain of it back against any clock.
"""

from __future__ import annotations

import bisect
import csv
import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lightning_to_energy.sensors.base import SensorError, SensorKind

__all__ = [
    "TRACE_COLUMNS",
    "FakeSensor",
    "ReplaySensor",
    "Trace",
    "read_trace",
]

#: Columns of a recorded trace: seconds since the recording began, the domain, cumulative joules
#: since the recording began, the kind of the recorded sensor and its source.
TRACE_COLUMNS = ("time_s", "domain", "energy_j", "kind", "source")


class FakeSensor:
    """A scripted sensor: constant power, a cumulative-energy function, or a list of readings.

    Give exactly one of ``power_w``, ``energy_fn`` or ``readings``. Readings are not checked for
    monotonicity, so tests can script a misbehaving sensor.

    Args:
        domain: the domain name, e.g. ``"gpu:0"``.
        power_w: constant power; ``read_j()`` returns ``power_w * (clock() - clock_at_init)``.
        energy_fn: called on every read; returns cumulative joules.
        readings: returned one per read, in order; reading past the end raises SensorError.
        clock: seconds, used with ``power_w`` (default ``time.perf_counter``).
        kind: the kind to report (default ``SensorKind.FAKE``).
        update_period_s: the update period to report.
        min_window_s: the minimum trustworthy window to report.
        source: the source text to report (default describes the script).
        host_wide: whether to behave as a host-wide sensor (read by local rank 0 only).
        fail_at: read numbers (0 = the first ``read_j()`` call) that raise SensorError instead.

    Raises:
        ValueError: not exactly one of ``power_w``, ``energy_fn``, ``readings`` was given, or
            ``power_w`` is negative.
    """

    def __init__(
        self,
        domain: str = "fake:0",
        *,
        power_w: float | None = None,
        energy_fn: Callable[[], float] | None = None,
        readings: Sequence[float] | None = None,
        clock: Callable[[], float] = time.perf_counter,
        kind: SensorKind = SensorKind.FAKE,
        update_period_s: float = 0.0,
        min_window_s: float = 0.0,
        source: str | None = None,
        host_wide: bool = False,
        fail_at: int | Iterable[int] = (),
    ) -> None:
        options = {"power_w": power_w, "energy_fn": energy_fn, "readings": readings}
        given = [name for name, value in options.items() if value is not None]
        if len(given) != 1:
            raise ValueError(
                "FakeSensor needs exactly one of power_w, energy_fn or readings; found "
                f"{given or 'none'}. Example: FakeSensor('gpu:0', power_w=300.0)."
            )
        if power_w is not None and not power_w >= 0:
            raise ValueError(f"power_w must be >= 0 W; found {power_w!r}.")
        self.domain = domain
        self.kind = SensorKind(kind)
        self.update_period_s = float(update_period_s)
        self.min_window_s = float(min_window_s)
        self.host_wide = host_wide
        self._power_w = power_w
        self._energy_fn = energy_fn
        self._readings = list(readings) if readings is not None else None
        self._clock = clock
        self._t0_s = clock()
        self._fail_at = {fail_at} if isinstance(fail_at, int) else set(fail_at)
        self._last_j: float | None = None
        self.reads = 0  # read_j() calls so far, failed ones included
        self.closed = False
        if source is not None:
            self.source = source
        elif power_w is not None:
            self.source = f"fake: constant {power_w:g} W"
        elif energy_fn is not None:
            self.source = "fake: scripted energy function"
        else:
            self.source = f"fake: {len(self._readings or ())} scripted readings"

    def read_j(self) -> float:
        """The next scripted reading, in cumulative joules.

        Raises:
            SensorError: this read was scripted to fail, or the readings ran out.
        """
        index = self.reads
        self.reads += 1
        if index in self._fail_at:
            raise SensorError(f"{self.domain}: scripted failure at read {index} (fail_at).")
        value = self._value(index)
        self._last_j = value
        return value

    def peek_j(self) -> float | None:
        """The current value without consuming a scripted reading or a scripted failure."""
        if self._readings is not None:
            return self._last_j
        return self._value(None)

    def close(self) -> None:
        """Mark the sensor closed (tests can assert it). Idempotent."""
        self.closed = True

    def _value(self, index: int | None) -> float:
        if self._power_w is not None:
            # W x s = J
            return self._power_w * (self._clock() - self._t0_s)
        if self._energy_fn is not None:
            return float(self._energy_fn())
        assert self._readings is not None and index is not None
        if index >= len(self._readings):
            raise SensorError(
                f"{self.domain}: read {index} asked for a reading, but only "
                f"{len(self._readings)} were scripted. Script more readings."
            )
        return float(self._readings[index])


@dataclass(frozen=True)
class Trace:
    """One domain of a recorded trace.

    Attributes:
        domain: the domain recorded.
        times_s: sample times in seconds since the recording began, strictly increasing.
        energy_j: cumulative joules at each time, non-decreasing.
        kind: the kind of the sensor that was recorded (a SensorKind value).
        source: the source of the sensor that was recorded.
    """

    domain: str
    times_s: tuple[float, ...]
    energy_j: tuple[float, ...]
    kind: str
    source: str


def read_trace(path: str | Path) -> dict[str, Trace]:
    """Read a trace CSV written by ``lightning-to-energy record``.

    Args:
        path: the CSV file, with the header :data:`TRACE_COLUMNS`.

    Returns:
        The traces by domain, in the order their domains first appear.

    Raises:
        SensorError: the file is missing, has other columns, or holds an unreadable value.
    """
    path = Path(path)
    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in TRACE_COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise SensorError(
                    f"trace {path}: expected the columns {', '.join(TRACE_COLUMNS)}; missing "
                    f"{', '.join(missing)}. Record one with `lightning-to-energy record`."
                )
            rows: dict[str, list[tuple[float, float]]] = {}
            meta: dict[str, tuple[str, str]] = {}
            for line, row in enumerate(reader, start=2):
                try:
                    t_s, e_j = float(row["time_s"]), float(row["energy_j"])
                except (TypeError, ValueError) as exc:
                    raise SensorError(
                        f"trace {path} line {line}: expected numbers in time_s and energy_j; "
                        f"found {row['time_s']!r}, {row['energy_j']!r}."
                    ) from exc
                rows.setdefault(row["domain"], []).append((t_s, e_j))
                meta.setdefault(row["domain"], (row["kind"], row["source"]))
    except OSError as exc:
        raise SensorError(f"trace {path} could not be read: {exc}") from exc
    return {
        domain: Trace(
            domain=domain,
            times_s=tuple(t for t, _ in samples),
            energy_j=tuple(e for _, e in samples),
            kind=meta[domain][0],
            source=meta[domain][1],
        )
        for domain, samples in rows.items()
    }


class ReplaySensor:
    """Plays back a recorded cumulative-energy trace against a clock.

    The trace's first sample is aligned with the clock's value when the sensor is created;
    between samples the cumulative energy is interpolated linearly (constant power within a
    sample interval).

    Args:
        times_s: sample times in seconds, strictly increasing (at least two samples).
        energy_j: cumulative joules at those times, non-decreasing.
        domain: the domain to report.
        clock: seconds (default ``time.perf_counter``).
        source: the source text to report.
        min_window_s: the minimum trustworthy window to report (e.g. 2.0 for an NVML trace).
        host_wide: whether to behave as a host-wide sensor.

    Raises:
        ValueError: fewer than two samples, times not increasing, or energy decreasing.
    """

    kind = SensorKind.REPLAY

    def __init__(
        self,
        times_s: Sequence[float],
        energy_j: Sequence[float],
        *,
        domain: str,
        clock: Callable[[], float] = time.perf_counter,
        source: str = "replay",
        min_window_s: float = 0.0,
        host_wide: bool = False,
    ) -> None:
        times = [float(t) for t in times_s]
        energies = [float(e) for e in energy_j]
        if len(times) != len(energies) or len(times) < 2:
            raise ValueError(
                f"a replay needs at least two (time, energy) samples of equal count; found "
                f"{len(times)} times and {len(energies)} energies for {domain}."
            )
        for i in range(1, len(times)):
            if not times[i] > times[i - 1]:
                raise ValueError(
                    f"replay times must increase; found {times[i - 1]} then {times[i]} s "
                    f"at samples {i - 1} and {i} of {domain}."
                )
            if energies[i] < energies[i - 1]:
                raise ValueError(
                    f"replay energy must not decrease; found {energies[i - 1]} then "
                    f"{energies[i]} J at samples {i - 1} and {i} of {domain}."
                )
        self.domain = domain
        self.source = source
        self.min_window_s = float(min_window_s)
        self.host_wide = host_wide
        gaps = sorted(b - a for a, b in itertools.pairwise(times))
        self.update_period_s = gaps[len(gaps) // 2]  # the median sample spacing
        self._times = times
        # Energies relative to the first sample, so a replay starts at 0 J.
        self._energies = [e - energies[0] for e in energies]
        self._clock = clock
        self._c0_s = clock()

    @classmethod
    def from_csv(
        cls,
        path: str | Path,
        domain: str | None = None,
        *,
        clock: Callable[[], float] = time.perf_counter,
        min_window_s: float = 0.0,
        host_wide: bool = False,
    ) -> ReplaySensor:
        """Replay one domain of a trace written by ``lightning-to-energy record``.

        Args:
            path: the CSV file.
            domain: the domain to replay; may be omitted when the trace holds only one.
            clock: seconds.
            min_window_s: the minimum trustworthy window to report.
            host_wide: whether to behave as a host-wide sensor.

        Raises:
            SensorError: the file cannot be read, or the domain is missing or ambiguous.
        """
        traces = read_trace(path)
        if domain is None:
            if len(traces) != 1:
                raise SensorError(
                    f"trace {path} holds the domains {sorted(traces)}; pass domain= to choose one."
                )
            domain = next(iter(traces))
        if domain not in traces:
            raise SensorError(f"trace {path} has no domain {domain!r}; it holds {sorted(traces)}.")
        trace = traces[domain]
        try:
            return cls(
                trace.times_s,
                trace.energy_j,
                domain=domain,
                clock=clock,
                source=f"replay of {Path(path).name} ({trace.kind}: {trace.source})",
                min_window_s=min_window_s,
                host_wide=host_wide,
            )
        except ValueError as exc:
            raise SensorError(f"trace {path}: {exc}") from exc

    @property
    def duration_s(self) -> float:
        """Seconds the trace lasts."""
        return self._times[-1] - self._times[0]

    def read_j(self) -> float:
        """Cumulative joules at the current clock time, interpolated in the trace.

        Raises:
            SensorError: the clock has run past the end of the trace.
        """
        t_s = self._times[0] + (self._clock() - self._c0_s)
        if t_s > self._times[-1]:
            raise SensorError(
                f"{self.domain}: the replayed trace ended at {self.duration_s:.3f} s; it was "
                f"read at {t_s - self._times[0]:.3f} s. Record a longer trace."
            )
        i = bisect.bisect_right(self._times, t_s)
        if i == 0:  # a clock that went backwards: hold the first sample
            return 0.0
        if i == len(self._times):
            return self._energies[-1]
        t0, t1 = self._times[i - 1], self._times[i]
        e0, e1 = self._energies[i - 1], self._energies[i]
        # NB: linear interpolation assumes constant power between two recorded samples.
        return e0 + (e1 - e0) * (t_s - t0) / (t1 - t0)

    def peek_j(self) -> float | None:
        """The current value, or None past the end of the trace."""
        try:
            return self.read_j()
        except SensorError:
            return None

    def close(self) -> None:
        """Nothing to release. Idempotent."""
