"""A small periodic sampler thread shared by the NVML and RAPL backends.

The training thread must never wait for a slow counter read (an NVML energy read takes about
3 ms), and a RAPL counter must be read more often than it wraps even while the training thread
is paused. Both needs are served by one daemon thread per sensor that calls ``poll`` at a fixed
period and remembers, rather than raises, what went wrong.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = [
    "Sampler",
]


class Sampler:
    """Calls ``poll()`` every ``period_s`` seconds on a daemon thread until stopped.

    Errors raised by ``poll`` are handed to ``on_error`` and the loop carries on: a transient
    failure must not end sampling for the rest of a run.

    Args:
        poll: takes one sample; runs on the sampler thread.
        period_s: seconds to wait after each poll before the next one (> 0).
        name: the thread's name, shown in debuggers and thread dumps.
        on_error: called on the sampler thread with each exception ``poll`` raised.

    Raises:
        ValueError: ``period_s`` is not positive.
    """

    def __init__(
        self,
        poll: Callable[[], object],
        period_s: float,
        name: str,
        on_error: Callable[[Exception], None],
    ) -> None:
        if not period_s > 0:
            raise ValueError(f"sampler period must be > 0 s; found {period_s!r}.")
        self.period_s = float(period_s)
        self._poll = poll
        self._on_error = on_error
        self._stop = threading.Event()
        self._polls = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def polls(self) -> int:
        """How many polls have finished (successfully or not) so far."""
        return self._polls

    @property
    def running(self) -> bool:
        """True while the thread is alive."""
        return self._thread.is_alive()

    def start(self) -> None:
        """Start the thread (the first poll comes one period from now)."""
        self._thread.start()

    def stop(self, timeout_s: float = 1.0) -> None:
        """Ask the thread to stop and wait up to ``timeout_s`` for it. Idempotent."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        # Event.wait doubles as an interruptible sleep, so stop() never waits a full period.
        while not self._stop.wait(self.period_s):
            try:
                self._poll()
            except Exception as exc:
                self._on_error(exc)
            self._polls += 1
