"""Numbers for people: SI prefixes, durations and a window's relative error."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from lightning_to_energy.reporting.records import EnergyReport, WindowRecord
from lightning_to_energy.sensors.base import UNKNOWN_KIND, weakest_kind

if TYPE_CHECKING:
    pass

__all__ = [
    "format_duration",
    "format_si",
    "ordered_union",
    "relative_error",
    "report_kind",
    "si_prefix",
]


# ----------------------------------------------------------------------------------------------
# Number formatting
# ----------------------------------------------------------------------------------------------

_PREFIXES: tuple[tuple[int, str], ...] = (
    (18, "E"),
    (15, "P"),
    (12, "T"),
    (9, "G"),
    (6, "M"),
    (3, "k"),
    (0, ""),
    (-3, "m"),
    (-6, "µ"),
    (-9, "n"),
    (-12, "p"),
    (-15, "f"),
    (-18, "a"),
)


def si_prefix(value: float, *, low: float = 1.0) -> tuple[str, float]:
    """The SI prefix, from ``"m"`` to ``"P"``, that puts ``|value|`` in ``[low, 1000 * low)``,
    and its factor: ``si_prefix(2500.0)`` is ``("k", 1e3)``, ``si_prefix(997.0, low=0.1)`` is
    ``("k", 1e3)``. Zero, non-finite or out-of-table values give the nearest end (or ``""``).
    """
    if value == 0 or not math.isfinite(value):
        return "", 1.0
    power = 3 * math.floor(math.log10(abs(value) / low) / 3)
    power = min(max(power, -3), 15)
    return dict(_PREFIXES)[power], 10.0**power


def format_si(value: float | None, unit: str, *, digits: int = 3) -> str:
    """Format a number with an SI prefix chosen so that 1 <= mantissa < 1000.

    The prefix attaches to the front of ``unit``: ``format_si(2.1e-12, "J/TO")`` is
    ``"2.10 pJ/TO"``, ``format_si(1.234e15, "TO")`` is ``"1.23 PTO"``,
    ``format_si(12345, "J")`` is ``"12.3 kJ"``.

    Args:
        value: the number in the unit's base (joules, watts, J per TO...). None gives ``"n/a"``.
        unit: the base unit symbol; may be empty.
        digits: significant digits shown (at least 1).

    Returns:
        The formatted text, e.g. ``"126 W"``; beyond the prefix table it falls back to
        scientific notation.
    """
    sep = " " if unit else ""
    if value is None:
        return "n/a"
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return f"{'-' if value < 0 else ''}inf{sep}{unit}"
    digits = max(1, digits)
    if value == 0:
        return f"0{sep}{unit}"
    # Round to the shown significant digits first, so 999.7 becomes 1.00 k, not 1000.
    rounded = float(f"{value:.{digits - 1}e}")
    exponent = math.floor(math.log10(abs(rounded)))
    power = 3 * math.floor(exponent / 3)
    if power > _PREFIXES[0][0] or power < _PREFIXES[-1][0]:
        return f"{value:.{digits - 1}e}{sep}{unit}"
    prefix = dict(_PREFIXES)[power]
    mantissa = rounded / 10.0**power
    decimals = max(0, digits - 1 - (exponent - power))
    text = f"{mantissa:.{decimals}f}"
    suffix = f"{prefix}{unit}"
    return f"{text} {suffix}" if suffix else text


def format_duration(seconds: float | None) -> str:
    """Format a duration: ``"850 ms"``, ``"12.3 s"``, ``"4 min 05 s"``, ``"2 h 03 min"``."""
    if seconds is None or math.isnan(seconds):
        return "n/a"
    if abs(seconds) < 60:
        return format_si(seconds, "s")
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {(whole % 3600) // 60:02d} min"


def relative_error(window: WindowRecord) -> float | None:
    """Signed relative error of a window's prediction: (predicted - measured) / measured.

    Returns:
        None when the window has no prediction, no measurement, or measured zero joules.
    """
    if window.predicted_j is None or window.measured_j is None or window.measured_j == 0:
        return None
    return (window.predicted_j - window.measured_j) / window.measured_j


# ----------------------------------------------------------------------------------------------
# Files: JSON, CSV, PNG
# ----------------------------------------------------------------------------------------------


def ordered_union(keys: Iterable[Iterable[str]], first: Sequence[str] = ()) -> list[str]:
    seen: dict[str, None] = dict.fromkeys(first)
    for group in keys:
        for k in group:
            seen.setdefault(k, None)
    return list(seen)


def report_kind(report: EnergyReport) -> str:
    """The weakest sensor kind behind ``report``'s joules (``"unknown"`` without sensors)."""
    kinds = {s.kind for s in report.sensors}
    return weakest_kind(kinds) if kinds else UNKNOWN_KIND
