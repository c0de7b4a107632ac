"""The run's notes: each warning shown once, and every line kept for the report."""

from __future__ import annotations

from lightning_to_energy import notices
from lightning_to_energy.notices import EnergyWarning

__all__ = ["Notes", "interruption_reason"]


class Notes:
    """Warnings shown once per key, and the report's lines (each kept once).

    Attributes:
        messages: the report's warning lines, in order; restored from a checkpoint on resume.
    """

    def __init__(self) -> None:
        self.messages: list[str] = []
        self._seen: set[str] = set()

    def warn_once(
        self, key: str, message: str, category: type[EnergyWarning] = EnergyWarning
    ) -> None:
        """A warning (``category``) the first time ``key`` comes up, and a line of the report."""
        if key in self._seen:
            return
        self._seen.add(key)
        # A run resumed from a checkpoint restores its warnings but warns anew: the report
        # and the checkpoint keep each message once however often it recurs.
        if message not in self.messages:
            self.messages.append(message)
        notices.warn(f"lightning-to-energy: {message}", category, stacklevel=3)

    def note_once(self, key: str, message: str) -> None:
        """A line of the report's warnings, without a Python warning (nothing is wrong)."""
        if key not in self._seen:
            self._seen.add(key)
            if message not in self.messages:  # restored from a checkpoint already
                self.messages.append(message)

    def extend(self, messages: list[str]) -> None:
        """Lines already shown elsewhere (the calibration store's), for the report only."""
        self.messages.extend(messages)


def interruption_reason(exc: BaseException) -> str:
    """How a report names the exception that ended a run: ``"KeyboardInterrupt"``, or the
    type and the first line of the message (``"RuntimeError: CUDA out of memory"``)."""
    text = str(exc).strip().splitlines()
    return type(exc).__name__ + (f": {text[0][:200]}" if text else "")
