"""What a user may pass as ``sensors=`` (to ``TOEnergy`` or ``EnergyTracker``), checked once.

The documented forms:

- ``"auto"``: discover NVML, RAPL and, where neither measures, the labelled CPU-time estimate;
- backend names from :data:`~lightning_to_energy.sensors.discover.BACKENDS`, as one string
  (``"nvml"``, ``"nvml,estimate"``) or a list (``["nvml", "estimate"]``): each must work;
- a sequence of :class:`~lightning_to_energy.sensors.base.Sensor` objects;
- a factory ``(local_rank, device) -> sequence of sensors`` (``TOEnergy`` only: it knows
  the rank and device; a plain tracker is given its sensors);
- ``None``: count operations, measure nothing.

Anything else is refused when the object is built, with the forms above and the valid names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lightning_to_energy.sensors.base import Sensor
from lightning_to_energy.sensors.discover import BACKENDS, parse_backends

__all__ = [
    "FORMS",
    "SensorRequest",
    "parse_sensors",
]

FORMS = (
    "'auto', backend names (e.g. 'nvml', 'nvml,estimate' or ['nvml', 'estimate']; valid: "
    + ", ".join(repr(b) for b in BACKENDS)
    + "), a list of Sensor objects"
)


@dataclass(frozen=True)
class SensorRequest:
    """A checked ``sensors=`` argument.

    Attributes:
        auto: discover every backend that works (``"auto"``).
        backends: backend names to open (each must work); empty unless named.
        sensors: sensor objects given as they are.
        factory: ``(local_rank, device) -> sensors``, called where both are known.
    """

    auto: bool = False
    backends: tuple[str, ...] = ()
    sensors: tuple[Sensor, ...] = ()
    factory: Callable[[int, Any], Sequence[Sensor]] | None = None

    @property
    def discovers(self) -> bool:
        """Whether the sensors come from :func:`~lightning_to_energy.sensors.discover.discover`."""
        return self.auto or bool(self.backends)


def parse_sensors(spec: Any, *, factory_ok: bool = False) -> SensorRequest:
    """Check a ``sensors=`` argument (see the module docstring for the forms).

    Args:
        spec: what the user passed.
        factory_ok: accept a factory (``TOEnergy``); otherwise a callable is refused.

    Raises:
        ValueError: any other value, an unknown backend name (the valid ones are listed), an
            empty list, a list mixing names and sensors, or an object that is no Sensor.
    """
    forms = FORMS + (", a factory (local_rank, device) -> sensors" if factory_ok else "")
    if spec is None:
        return SensorRequest()
    if isinstance(spec, str):
        return _names(spec, spec, forms)
    if isinstance(spec, Sequence):
        items = list(spec)
        if items and all(isinstance(i, str) for i in items):
            return _names(items, spec, forms)
        bad = [i for i in items if not isinstance(i, Sensor)]
        if not items or bad:
            found = "an empty list" if not items else f"{bad[0]!r} ({type(bad[0]).__name__})"
            raise ValueError(
                f"sensors: expected {forms} or None; found {found} in {_short(spec)}. "
                "Fix: pass backend names only, or Sensor objects only (each with domain, kind, "
                "read_j() and close()), or sensors=None to measure nothing."
            )
        return SensorRequest(sensors=tuple(items))
    if callable(spec) and factory_ok:
        return SensorRequest(factory=spec)
    raise ValueError(
        f"sensors: expected {forms} or None; found {_short(spec)} ({type(spec).__name__}). "
        "Fix: e.g. sensors='auto'."
    )


def _names(names: str | list[str], spec: Any, forms: str) -> SensorRequest:
    try:
        auto, backends = parse_backends(names)
    except ValueError:
        raise ValueError(
            f"sensors: expected {forms} or None; found {_short(spec)}. Fix: use names from "
            f"{', '.join(BACKENDS)} (comma-separated in one string, or a list), or 'auto'."
        ) from None
    return SensorRequest(auto=auto, backends=tuple(backends))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
