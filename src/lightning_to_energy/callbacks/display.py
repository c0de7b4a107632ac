"""What the callback shows: the progress bar's items in one run-wide unit, the metric keys it
logs, and the lines naming the files a run wrote.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lightning_to_energy.reporting.format import si_prefix
from lightning_to_energy.reporting.records import WindowRecord
from lightning_to_energy.tracking.forecast import LiveReadout

if TYPE_CHECKING:
    from lightning_to_energy.reporting.files import SavedReport

__all__ = [
    "FORECAST_KEYS",
    "PBAR_ERROR",
    "PBAR_FORECAST_MAX_SPREAD",
    "TOTAL_KEYS",
    "BarUnit",
    "bar_items",
    "bar_number",
    "bar_scale_j",
    "bar_unit",
    "files_lines",
    "window_metric_keys",
    "window_metrics",
]

# Progress-bar items (see TOEnergy and bar_items): at most three, their unit in the key.
PBAR_ERROR = "pred_err_%"
# The forecast joins the bar once its interval is within this fraction of it, either side.
PBAR_FORECAST_MAX_SPREAD = 0.25
# A run of unknown length is taken, for the bar's unit only, to use this many times the
# joules measured when the unit is chosen.
_UNKNOWN_LENGTH_SCALE = 10.0


@dataclass(frozen=True)
class BarUnit:
    """The progress bar's energy unit, chosen once per run (see :func:`bar_unit`)."""

    symbol: str  # "J", "kJ", "MJ"...
    joules: float  # joules in one unit
    estimate: bool = False  # the joules are an estimate: the measured key says so

    @property
    def energy_key(self) -> str:
        """``energy_kJ``, or ``energy_est_kJ`` when the joules are estimated."""
        return f"energy_est_{self.symbol}" if self.estimate else f"energy_{self.symbol}"

    @property
    def forecast_key(self) -> str:
        """``run_kJ``: the whole run's forecast."""
        return f"run_{self.symbol}"


def bar_unit(scale_j: float, *, estimate: bool = False) -> BarUnit:
    """The SI unit that puts a run of about ``scale_j`` joules between 0.1 and 100 units.

    NB: the 0.1 to 100 band, not the usual 1 to 1000: Rich's default theme prints bar values
    with three decimals (``.3f``) and TQDM with three significant digits padded to five
    characters, so values below 10 read the same in both (``0.592``, ``1.110``), and every
    value from 0.1 up keeps its three significant digits. The band cannot make ``.3f`` print
    exactly three (``13.800``): that is the bar's theme, which the callback leaves as it is.
    """
    prefix, factor = si_prefix(scale_j, low=0.1)
    return BarUnit(symbol=prefix.replace("µ", "u") + "J", joules=factor, estimate=estimate)


def bar_number(value: float) -> float:
    """``value`` rounded to 3 significant digits and at most 3 decimals (what Rich shows)."""
    if value == 0.0 or not math.isfinite(value):
        return value
    decimals = 2 - math.floor(math.log10(abs(value)))
    return round(value, min(decimals, 3))


def bar_items(live: LiveReadout, unit: BarUnit) -> dict[str, float]:
    """The progress bar's items: measured energy, the recent prediction error and, once its
    interval is within ±25 %, the run's forecast; each rounded by :func:`bar_number`."""
    items = {unit.energy_key: bar_number(live.measured_j / unit.joules)}
    if live.recent_error_pct is not None:
        items[PBAR_ERROR] = bar_number(live.recent_error_pct)
    fc = live.forecast
    if fc is not None and fc.total_j > 0 and fc.spread <= PBAR_FORECAST_MAX_SPREAD:
        items[unit.forecast_key] = bar_number(fc.total_j / unit.joules)
    return items


def bar_scale_j(live: LiveReadout, total_steps: int | None, steps_done: int) -> float | None:
    """The run's joules to choose the bar's unit from, or None while it is too early to tell.

    The unit is chosen once, so only from a scale that will hold: a forecast the bar would
    show (within ±25 %); the joules measured so far when they already sit in the unit of the
    forecast's upper bound (they are a floor of the run's total, so the unit is settled);
    the joules so far extrapolated to the run's length once half its train steps are done (a
    first window's warm-up then weighs at most as much as the steps after it); and, for a run
    of unknown length (never forecast), a multiple of the joules so far. Not from an early
    forecast or extrapolation: a first window's warm-up makes those too large (a forecast of
    125 J at the first window for a run that took 30 J would fix the unit at kJ).
    """
    if live.measured_j <= 0.0:
        return None  # nothing measured yet
    fc = live.forecast
    if fc is not None and fc.total_j > 0 and fc.spread <= PBAR_FORECAST_MAX_SPREAD:
        return fc.total_j
    if not total_steps:
        return live.measured_j * _UNKNOWN_LENGTH_SCALE
    if fc is not None and bar_unit(live.measured_j).symbol == bar_unit(fc.high_j).symbol:
        return live.measured_j
    if 2 * steps_done >= total_steps:
        return live.measured_j * max(total_steps / max(steps_done, 1), 1.0)
    return None


def window_metric_keys(loop: str) -> tuple[str, ...]:
    """The logger keys written when a window of ``loop`` closes (see :class:`TOEnergy`)."""
    return tuple(
        f"energy/{loop}_window_{name}"
        for name in ("measured_J", "predicted_J", "rel_error", "power_W", "TOs", "duration_s")
    )


TOTAL_KEYS = ("energy/total_measured_J", "energy/total_predicted_J", "energy/precision_pct")
FORECAST_KEYS = ("energy/forecast_J", "energy/forecast_low_J", "energy/forecast_high_J")


def files_lines(saved: SavedReport | None, directory: Path, calibration: Path | None) -> list[str]:
    """The lines printed after the summary or the report: the files written (and how to see
    the full report), why any was not, and the calibration saved."""
    if saved is None:
        lines = [f"  energy report not saved to {directory} (see the warning above)"]
    else:
        others = [saved.csv_path.suffix] + ([saved.png_path.suffix] if saved.png_path else [])
        lines = [
            f"  full report: lightning-to-energy report {saved.json_path} "
            f"(also {', '.join(others)})"
        ]
        # "not requested" is what the user asked for (plot=False): no news to print.
        lines += [f"  {n.rstrip('.')}" for n in saved.notes if "not requested" not in n]
    if calibration is not None:
        lines.append(f"  calibration saved: {calibration}")
    return lines


def window_metrics(record: WindowRecord) -> dict[str, float]:
    """The metrics a closed window is logged with (:func:`window_metric_keys` of its loop)."""
    prefix = f"energy/{record.loop}_window_"
    metrics: dict[str, float] = {
        prefix + "TOs": record.tos,
        prefix + "duration_s": record.duration_s,
    }
    if record.measured_j is not None:
        metrics[prefix + "measured_J"] = record.measured_j
        if record.duration_s > 0:
            metrics[prefix + "power_W"] = record.measured_j / record.duration_s
    if record.predicted_j is not None:
        metrics[prefix + "predicted_J"] = record.predicted_j
        if record.measured_j:
            metrics[prefix + "rel_error"] = record.predicted_j / record.measured_j - 1.0
    return metrics
