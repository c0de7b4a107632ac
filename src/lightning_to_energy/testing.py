"""Fakes for your own tests: sensors that need no hardware, and recorded traces replayed.

Use them where a test of your training code must not depend on a GPU or a readable RAPL tree::

    from lightning_to_energy.testing import FakeSensor

    energy = TOEnergy(sensors=[FakeSensor(power_w=50.0)])

They are the package's own test doubles (see ``docs/sensors.md``); this module only gathers
them in one place that does not change when the package's folders do.
"""

from __future__ import annotations

from lightning_to_energy.sensors.fake import (
    TRACE_COLUMNS,
    FakeSensor,
    ReplaySensor,
    Trace,
    read_trace,
)

__all__ = ["TRACE_COLUMNS", "FakeSensor", "ReplaySensor", "Trace", "read_trace"]
