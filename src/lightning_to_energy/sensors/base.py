"""The sensor interface: cumulative, monotonic joules for one energy domain.

Units past this edge are SI: joules and seconds. Vendor units (µJ, mJ, mW) live only inside a
backend module.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import Protocol, runtime_checkable

from lightning_to_energy.notices import EnergyWarning

__all__ = [
    "ANOMALY_IMPLAUSIBLE",
    "ANOMALY_KINDS",
    "ANOMALY_MULTI_WRAP",
    "ANOMALY_RESET",
    "DEFAULT_POWER_CEILING_W",
    "MEASURED_KINDS",
    "UNKNOWN_KIND",
    "ImplausibleReadingWarning",
    "Peekable",
    "ReadingAnomaly",
    "Sensor",
    "SensorError",
    "SensorKind",
    "SensorUnavailable",
    "energy_label",
    "energy_word",
    "power_ceiling_w",
    "sensor_info",
    "update_period_shown",
    "weakest_kind",
]


class SensorKind(str, Enum):
    """How a sensor's joules were obtained; shown next to every number it produces."""

    COUNTER = "counter"  # a hardware energy counter (NVML total energy, RAPL energy_uj)
    POWER_INTEGRATION = "power-integration"  # instant power integrated over time by us
    ESTIMATE = "estimate"  # a model, not a measurement (CPU time x per-core power)
    REPLAY = "replay"  # a recorded trace played back
    FAKE = "fake"  # scripted readings for tests


MEASURED_KINDS: frozenset[str] = frozenset(
    {SensorKind.COUNTER.value, SensorKind.POWER_INTEGRATION.value}
)
"""The kinds whose joules are a hardware measurement (the others are models, replays or fakes)."""

# From the most to the least trustworthy: what a number mixing several kinds is labelled.
_KIND_ORDER = (
    SensorKind.COUNTER.value,
    SensorKind.POWER_INTEGRATION.value,
    SensorKind.REPLAY.value,
    SensorKind.FAKE.value,
    SensorKind.ESTIMATE.value,
)


# The kind of joules whose sensor was not recorded (a calibration of an earlier release).
UNKNOWN_KIND = "unknown"
_WORDS = {
    SensorKind.ESTIMATE.value: "estimated",
    SensorKind.REPLAY.value: "replayed",
    SensorKind.FAKE.value: "scripted",
    UNKNOWN_KIND: "unverified",
}


def energy_word(kind: str) -> str:
    """One word for joules of sensor ``kind``: ``"measured"`` only for a hardware measurement,
    else ``"estimated"``, ``"replayed"``, ``"scripted"``, ``"unverified"`` (kind not
    recorded) or ``"not measured"``."""
    if kind in MEASURED_KINDS:
        return "measured"
    return _WORDS.get(kind, "not measured")


def update_period_shown(kind: str, update_period_s: float) -> float | None:
    """A sensor's update period as listings show it; None (shown as nothing) for an estimate.

    An estimate has no update period of its own: it is computed on every read, from a CPU
    clock whose nominal resolution (1 ns) says nothing about it (other threads' CPU time
    advances a scheduler tick at a time: 4 ms steps measured on the project's VM).
    """
    return None if kind == SensorKind.ESTIMATE.value else float(update_period_s)


def energy_label(kind: str) -> str:
    """The words for joules of sensor ``kind`` wherever a number is shown.

    E.g. ``"measured (counter)"``, ``"estimated (estimate, not measured)"``; ``"unknown"`` (a
    calibration of an earlier release) is ``"unverified (sensor kind not recorded by an
    earlier release: maybe estimated)"``.
    """
    if kind in MEASURED_KINDS:
        return f"measured ({kind})"
    if kind == UNKNOWN_KIND:
        return "unverified (sensor kind not recorded by an earlier release: maybe estimated)"
    return f"{energy_word(kind)} ({kind}, not measured)"


def weakest_kind(kinds: Iterable[str]) -> str:
    """The least trustworthy sensor kind among ``kinds`` (counter is the strongest); an
    unknown kind counts as weakest, and no kind at all is ``"none"``."""
    rank = {k: i for i, k in enumerate(_KIND_ORDER)}
    return max(kinds, key=lambda k: rank.get(k, len(rank)), default="none")


class SensorError(RuntimeError):
    """A sensor could not produce a reading. Vendor errors are translated into this at the edge."""


class ImplausibleReadingWarning(EnergyWarning):
    """A reading that cannot be true was left out of every total (warned once per kind).

    An :class:`~lightning_to_energy.notices.EnergyWarning` (so a RuntimeWarning too): filters
    on sensor warnings keep working, and it prints as one line.
    """


#: Kinds of rejected readings: the flag a window carries when one of its domains was left out.
ANOMALY_IMPLAUSIBLE = "implausible"  # implied power above what the device can draw
ANOMALY_RESET = "counter-reset"  # the counter went back (a reset, not a wrap)
ANOMALY_MULTI_WRAP = "missed-wraps"  # so long between reads that wraps may have been missed
ANOMALY_KINDS = (ANOMALY_IMPLAUSIBLE, ANOMALY_RESET, ANOMALY_MULTI_WRAP)

#: The power ceiling of a domain that states no power limit, watts.
#: NB: above any one CPU package or GPU made today (server packages draw up to about 400 W,
#: an H100 SXM is capped at 700 W), so only garbage exceeds it.
DEFAULT_POWER_CEILING_W = 1000.0


class ReadingAnomaly(SensorError):
    """The energy since the previous reading cannot be known; a new baseline is given.

    Raised by :meth:`Sensor.read_j` when the sensor can tell that the interval since its
    previous read is lost (a counter reset, or so long a gap that wraps may have been
    missed). The meter leaves the domain out of the window that ends at this reading, labels
    that window with ``kind``, and starts the next window from ``value_j``: the loss is never
    guessed, and it never spills into the next window.

    Args:
        kind: one of :data:`ANOMALY_KINDS`.
        message: what was expected, what was found.
        value_j: the sensor's cumulative joules now, the baseline for what follows.
    """

    def __init__(self, kind: str, message: str, value_j: float) -> None:
        super().__init__(message)
        self.kind = kind
        self.value_j = value_j


def power_ceiling_w(sensor: object) -> float:
    """The most power a reading of ``sensor`` may imply before it is rejected, in watts.

    Twice the device's stated power limit (attribute ``power_limit_w``: NVML's enforced
    limit, a RAPL zone's stated maximum), else :data:`DEFAULT_POWER_CEILING_W`. Twice, because
    a device may exceed its limit for milliseconds, never on average over a reading interval.
    """
    limit_w = getattr(sensor, "power_limit_w", None)
    if isinstance(limit_w, (int, float)) and limit_w > 0 and limit_w < float("inf"):
        return 2.0 * float(limit_w)
    return DEFAULT_POWER_CEILING_W


@runtime_checkable
class Sensor(Protocol):
    """One energy domain.

    Attributes:
        domain: e.g. ``"gpu:0"``, ``"cpu:package-0"``, ``"dram:0"``.
        kind: how the joules are obtained.
        update_period_s: how often the underlying reading changes (NVML counter: about 0.1 s).
        min_window_s: the shortest window whose energy can be trusted (NVML counter: 2 s).
        source: human-readable origin, e.g.
            ``"NVML nvmlDeviceGetTotalEnergyConsumption, NVIDIA H100"``.
        host_wide: True for sensors that measure the whole host (RAPL), read by local rank 0 only.

    Optional: ``power_limit_w`` (float or None), the device's stated power limit, from which
    :func:`power_ceiling_w` bounds every reading.
    """

    domain: str
    kind: SensorKind
    update_period_s: float
    min_window_s: float
    source: str
    host_wide: bool

    def read_j(self) -> float:
        """Cumulative joules since an arbitrary origin; monotonic non-decreasing.

        Raises:
            ReadingAnomaly: the interval since the previous read is lost (carries the new
                baseline).
            SensorError: the reading failed.
        """
        ...

    def close(self) -> None:
        """Release resources (background threads, library handles). Idempotent."""
        ...


class SensorUnavailable(SensorError):
    """A backend cannot work on this machine; carries the reason and the fix separately.

    ``str(exc)`` gives both, so the error reads well wherever it surfaces.

    Args:
        reason: what was expected and what was found, e.g. ``"CPU energy not measured: ..."``.
        fix: what the user can do about it; empty when nothing can be done.
    """

    def __init__(self, reason: str, fix: str = "") -> None:
        self.reason = reason
        self.fix = fix
        super().__init__(f"{reason} Fix: {fix}" if fix else reason)


@runtime_checkable
class Peekable(Protocol):
    """Optional sensor extension: the latest reading without waiting on hardware.

    Used for live displays; a sensor with a background sampler returns its latest sample.
    """

    def peek_j(self) -> float | None:
        """Latest cumulative joules known without blocking; None when nothing is known yet.

        Never raises.
        """
        ...


def sensor_info(sensor: Sensor) -> dict[str, object]:
    """A sensor's description as plain JSON-ready values.

    Args:
        sensor: any sensor.

    Returns:
        ``domain``, ``kind`` (the string value), ``update_period_s``, ``min_window_s``,
        ``source`` and ``host_wide``.
    """
    return {
        "domain": sensor.domain,
        "kind": SensorKind(sensor.kind).value,
        "update_period_s": float(sensor.update_period_s),
        "min_window_s": float(sensor.min_window_s),
        "source": sensor.source,
        "host_wide": bool(sensor.host_wide),
    }
