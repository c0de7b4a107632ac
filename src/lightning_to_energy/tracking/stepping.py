"""Steps begun and ended for the tracker, guarded: an internal error is one warning, after
which the tracker stands aside and the training goes on untouched.

:class:`~lightning_to_energy.tracking.tracker.EnergyTracker` owns one :class:`StepGate`; its
``begin_step``, ``set_phase`` and ``end_step`` hand over to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from lightning_to_energy.reporting.records import WindowRecord
from lightning_to_energy.tracking.notes import Notes
from lightning_to_energy.tracking.steps import StepAccounting
from lightning_to_energy.tracking.windows import WindowRun

__all__ = ["StepGate"]

T = TypeVar("T")


class StepGate:
    """Begins a step in the right window, adds it when it ends, and stops after a failure.

    Args:
        acct: the step accounting.
        windows: the open window.
        notes: the report's warnings (the internal error's).
        start: starts the tracker (idempotent), at the first step.
        close_window: the tracker's window close (``boundary`` keyword), which also refreshes
            the live readout.
    """

    def __init__(
        self,
        acct: StepAccounting,
        windows: WindowRun,
        notes: Notes,
        *,
        start: Callable[[], None],
        close_window: Callable[..., WindowRecord | None],
    ) -> None:
        self.acct = acct
        self.windows = windows
        self.notes = notes
        self.start = start
        self.close_window = close_window
        self.broken: str | None = None  # the internal error that stopped counting

    def begin(self, batch: Any, loop: str, will_step: bool) -> None:
        """Begin a step of ``loop``; never raises because of the tracker itself."""
        if self.broken:
            return
        try:
            self.start()
            if self.acct.in_step:
                # The previous step never ended: drop it, and above all stop its dispatch mode.
                self.acct.abort()
            window = self.windows.window
            if window is None or window.loop != loop:
                if window is not None:
                    self.close_window(boundary=True)
                self.windows.open(loop)
            self.acct.begin(batch, loop, will_step)
        except Exception as exc:
            self.trip(exc)

    def set_phase(self, phase: str) -> None:
        """Attribute the ops that follow to ``phase``."""
        try:
            self.acct.set_phase(phase)
        except Exception as exc:
            self.trip(exc)

    def end(self, window_s: float) -> WindowRecord | None:
        """Add the step to its window; close the window when it has lasted ``window_s``.

        Returns:
            The window record when this step closed a window, else None.
        """
        if self.broken:
            return None
        try:
            if self.windows.add_step(window_s):
                return self.close_window()
            return None
        except Exception as exc:
            self.trip(exc)
            return None

    def guarded(self, action: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """``action(*args, **kwargs)``, or None after tripping on its internal error."""
        try:
            return action(*args, **kwargs)
        except Exception as exc:
            self.trip(exc)
            return None

    def trip(self, exc: BaseException) -> None:
        """Stop counting after the internal error ``exc``: one warning, a line of the report."""
        self.acct.abort()
        self.broken = f"{type(exc).__name__}: {exc}"
        self.notes.warn_once(
            "internal",
            f"stopped counting after an internal error ({self.broken}); training is not "
            "affected, and the windows closed so far are kept in the report. Please report "
            "this error.",
        )
