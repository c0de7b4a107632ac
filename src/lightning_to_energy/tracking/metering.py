"""The meter over the open window: opened with it, lapped by checkpoints, closed with it.

A failed edge (the CUDA sync at a window's close, say) is one warning; the meter is replaced
by a fresh one over the same sensors, so that the next windows are measured again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

from lightning_to_energy.sensors.base import Sensor
from lightning_to_energy.sensors.meter import Measurement, Meter
from lightning_to_energy.sensors.spec import SensorRequest
from lightning_to_energy.tracking.ledger import OpenWindow, join_measurements
from lightning_to_energy.tracking.notes import Notes

__all__ = ["WindowMeter", "close_sensors", "select_sensors"]


class WindowMeter:
    """A :class:`Meter` over ``sensors`` that never raises to the tracker.

    Args:
        sensors: the sensors read at each window edge (not empty).
        clock: monotonic seconds.
        sync: called at window edges so that queued GPU work lands in the right window.
        notes: where a failed edge is warned about.
    """

    def __init__(
        self,
        sensors: Sequence[Sensor],
        clock: Callable[[], float],
        sync: Callable[[], None] | None,
        notes: Notes,
    ) -> None:
        self._sensors = list(sensors)
        self._clock = clock
        self._sync = sync
        self._notes = notes
        self.meter = self._fresh()

    def _fresh(self) -> Meter:
        # The tracker warns once per failing domain itself (and records it for the report).
        return Meter(self._sensors, clock=self._clock, sync=self._sync, warn=False)

    @property
    def min_window_s(self) -> float:
        """The sensors' minimum trustworthy window, seconds."""
        return self.meter.min_window_s

    @property
    def is_open(self) -> bool:
        """Whether the meter runs: the last window's closing edge opened the next one."""
        return self.meter.is_open

    @property
    def opened_s(self) -> float:
        """The clock reading of the meter's opening edge."""
        return self.meter.opened_s

    def open(self, window: OpenWindow) -> None:
        """Start measuring ``window``; a failure leaves it unmeasured (one warning)."""
        try:
            self.meter.open()
            window.meter_open = True
        except Exception as exc:
            self._notes.warn_once("meter-open", f"energy meter could not open a window: {exc}")

    def close(self, window: OpenWindow) -> Measurement | None:
        """The joules of ``window`` over its whole length (its checkpoint laps joined), None
        when it was not measured or its close failed. Lapped, not closed: the next window
        opens at this edge, so no joule falls between two windows."""
        if not window.meter_open:
            return None
        measurement = self._safe_close(lap=True)
        if measurement is not None and window.lapped is not None:
            measurement = join_measurements(window.lapped, measurement, self.meter)
        return measurement

    def lap(self, window: OpenWindow) -> Measurement | None:
        """The joules of ``window`` so far, the window going on (a checkpoint's snapshot).

        The lap is kept on the window, so that its close joins the parts; a failed lap leaves
        the window unmeasured.
        """
        if not window.meter_open:
            return None
        try:
            lap = self.meter.lap()
        except Exception as exc:  # e.g. the CUDA sync at the edge failed
            self._notes.warn_once("meter-close", f"energy meter failed to close a window: {exc}")
            # As a failed close: a fresh meter; this window stays unmeasured.
            self.meter = self._fresh()
            window.meter_open = False
            window.lapped, window.lapped_j = None, 0.0
            return None
        lapped = lap if window.lapped is None else join_measurements(window.lapped, lap, self.meter)
        window.lapped = lapped
        window.lapped_j = lapped.total_j
        return lapped

    def open_j(self, window: OpenWindow | None) -> float:
        """The open window's joules so far (its laps and the latest background sample)."""
        if window is None or not window.meter_open:
            return 0.0
        return window.lapped_j + self.meter.peek_j()

    def stop(self) -> None:
        """Close the meter at the end of the run: the time after the last step belongs to no
        window."""
        if self.meter.is_open:
            self._safe_close()

    def _safe_close(self, *, lap: bool = False) -> Measurement | None:
        try:
            return self.meter.lap() if lap else self.meter.close()
        except Exception as exc:  # e.g. the CUDA sync at the edge failed
            self._notes.warn_once("meter-close", f"energy meter failed to close a window: {exc}")
            # The failed close left its window open, and every later open() would be refused:
            # a fresh meter over the same sensors lets the next windows be measured again.
            self.meter = self._fresh()
            return None


def select_sensors(
    request: SensorRequest, cuda_devices: list[int], local_rank: int
) -> tuple[list[Sensor], dict[str, str]]:
    """The sensors this process reads, and those discovery skipped (name -> why).

    ``"auto"`` discovers NVML for ``cuda_devices``, RAPL, then an estimate; named backends must
    work (discovery raises ``SensorError`` when one cannot); sensor objects are taken as given,
    less the host-wide ones on a local rank other than 0 (rank 0 reads them for the host).
    """
    if request.discovers:
        from lightning_to_energy.sensors.discover import discover

        found = discover(
            "auto" if request.auto else list(request.backends),
            devices=cuda_devices,
            local_rank=local_rank,
        )
        return list(found.sensors), dict(found.skipped)
    return [s for s in request.sensors if local_rank == 0 or not s.host_wide], {}


def close_sensors(sensors: Sequence[Sensor]) -> None:
    """Close every sensor (and its sampler thread), whatever fails: the run is over."""
    for sensor in sensors:
        with contextlib.suppress(Exception):  # closing is best effort
            sensor.close()
