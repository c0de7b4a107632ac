"""A manual clock for tests: time moves only when the test says so."""

from __future__ import annotations

import threading


class FakeClock:
    """Seconds that advance only through :meth:`advance` or :meth:`sleep`.

    Thread-safe, so a sensor's background thread may read it while the test advances it.

    Args:
        start_s: the initial reading.
    """

    def __init__(self, start_s: float = 0.0) -> None:
        self._now_s = float(start_s)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now_s

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        with self._lock:
            self._now_s += seconds

    def sleep(self, seconds: float) -> None:
        """A ``time.sleep`` stand-in that advances the clock instead of waiting."""
        self.advance(seconds)
