"""The sensor interface: cumulative, monotonic joules for one energy domain.

Units past this edge are SI: joules and seconds. Vendor units (µJ, mJ, mW) live only inside a
backend module.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import Protocol, runtime_checkable

__all__ = [
    "MEASURED_KINDS",
    "Peekable",
    "Sensor",
    "SensorError",
    "SensorKind",
    "SensorUnavailable",
    "sensor_info",
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


def weakest_kind(kinds: Iterable[str]) -> str:
    """The least trustworthy sensor kind among ``kinds`` (counter is the strongest); an
    unknown kind counts as weakest, and no kind at all is ``"none"``."""
    rank = {k: i for i, k in enumerate(_KIND_ORDER)}
    return max(kinds, key=lambda k: rank.get(k, len(rank)), default="none")


class SensorError(RuntimeError):
    """A sensor could not produce a reading. Vendor errors are translated into this at the edge."""


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
