"""The report's plot: predicted vs measured joules per window, and cumulative energy.

matplotlib is optional (extra ``plot``), imported only when a plot is drawn, and only here
(:func:`import_matplotlib`).
"""

from __future__ import annotations

import importlib
import math
import os
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_to_energy._files import atomic_write
from lightning_to_energy.reporting.format import report_kind
from lightning_to_energy.reporting.records import (
    EnergyReport,
    WindowRecord,
)
from lightning_to_energy.sensors.base import energy_label, energy_word

if TYPE_CHECKING:
    pass

__all__ = [
    "PLOT_INSTALL_HINT",
    "MissingExtraError",
    "import_matplotlib",
    "plot_figure",
    "save_plot",
]

PLOT_INSTALL_HINT = "pip install 'lightning-to-energy[plot]'"


class MissingExtraError(ImportError):
    """An optional dependency needed by an explicitly requested feature is not installed."""


def import_matplotlib() -> tuple[Any, Any]:
    """Import matplotlib's Figure and Agg canvas (no pyplot, no global backend switch).

    Raises:
        MissingExtraError: matplotlib is not installed.
    """
    try:
        importlib.import_module("matplotlib")
        figure = importlib.import_module("matplotlib.figure")
        backend_agg = importlib.import_module("matplotlib.backends.backend_agg")
    except ImportError as exc:
        raise MissingExtraError(
            "a plot of the energy report was requested, but matplotlib is not installed "
            f"({exc}). Fix: {PLOT_INSTALL_HINT}"
        ) from exc
    return figure.Figure, backend_agg.FigureCanvasAgg


def save_plot(report: EnergyReport, path: str | os.PathLike[str]) -> Path:
    """Save the report's PNG (:func:`plot_figure`) to ``path``, atomically.

    Raises:
        MissingExtraError: matplotlib is not installed (the message names the pip command).
    """
    fig = plot_figure(report)

    def write(fh: typing.IO[bytes]) -> None:
        fig.savefig(fh, format="png", dpi=110)

    p = Path(path)
    atomic_write(p, write)
    return p


def plot_figure(report: EnergyReport) -> Any:
    """Draw the report's figure: per-window predicted vs measured joules, and cumulative energy.

    Top panel: measured joules per window (dots) and the prequential prediction with its
    interval as error bars. Bottom panel: cumulative measured and predicted joules against the
    time each window ended; in the predicted curve a measured window without a prediction (the
    first ones, before the model could predict) counts at its measured joules, as in the
    logged ``energy/total_predicted_J``, so the gap between the curves is the model's error.

    Returns:
        A matplotlib ``Figure`` with an Agg canvas (no pyplot).

    Raises:
        MissingExtraError: matplotlib is not installed (the message names the pip command).
    """
    figure_cls, canvas_cls = import_matplotlib()
    fig = figure_cls(figsize=(9.0, 7.0), layout="constrained")
    canvas_cls(fig)
    ax_win, ax_cum = fig.subplots(2, 1)
    windows = list(report.windows)

    xs_m = [w.index for w in windows if w.measured_j is not None]
    ys_m = [w.measured_j for w in windows if w.measured_j is not None]
    predicted = [w for w in windows if w.predicted_j is not None]
    xs_p = [w.index for w in predicted]
    ys_p = [typing.cast(float, w.predicted_j) for w in predicted]
    # yerr shape: (2, n) = distances below and above each prediction, clipped at 0.
    below: list[float] = []
    above: list[float] = []
    for w, y in zip(predicted, ys_p, strict=True):
        below.append(max(0.0, y - w.low_j) if w.low_j is not None else 0.0)
        above.append(max(0.0, w.high_j - y) if w.high_j is not None else 0.0)
    yerr = [below, above]
    # "measured" only when a hardware sensor measured: an estimate is labelled as one
    word = energy_word(report_kind(report))
    ax_win.plot(xs_m, ys_m, "o", color="tab:blue", label=word, markersize=4)
    if predicted:
        ax_win.errorbar(
            xs_p, ys_p, yerr=yerr, fmt="x", color="tab:orange", capsize=2, label="predicted"
        )
    ax_win.xaxis.get_major_locator().set_params(integer=True)
    ax_win.set_xlabel("window")
    ax_win.set_ylabel("energy per window (J)")
    precision = report.accuracy.get("precision_pct")
    title = f"Predicted (before measuring) vs {energy_label(report_kind(report))} energy per window"
    if precision is not None and math.isfinite(precision):
        # On a line of its own: after an estimate's longer label it ran past the figure's edge.
        title += f"\nprecision {precision:.1f} %"
    ax_win.set_title(title)
    if not windows:
        ax_win.text(0.5, 0.5, "no windows", ha="center", va="center", transform=ax_win.transAxes)
    if xs_m or xs_p:
        ax_win.legend(loc="best")

    def cumulative(
        items: Sequence[WindowRecord], value: typing.Callable[[WindowRecord], float]
    ) -> tuple[list[float], list[float]]:
        ordered = sorted(items, key=lambda w: w.start_s + w.duration_s)
        # Each curve starts from zero joules at its first window's start.
        ts: list[float] = [ordered[0].start_s] if ordered else []
        out: list[float] = [0.0] if ordered else []
        total = 0.0
        for w in ordered:
            total += value(w)
            ts.append(w.start_s + w.duration_s)
            out.append(total)
        return ts, out

    t_m, c_m = cumulative(
        [w for w in windows if w.measured_j is not None], lambda w: typing.cast(float, w.measured_j)
    )
    # The predicted curve runs over the same windows as the measured one: a window without a
    # prediction at its measured joules. Summed over the predicted windows only, it started
    # at 0 J where the measured curve held the first window's joules, and read as an
    # under-prediction of them.
    compared = [w for w in windows if w.predicted_j is not None or w.measured_j is not None]

    def either(bound: float | None, w: WindowRecord) -> float:
        return bound if w.predicted_j is not None and bound is not None else w.measured_j or 0.0

    t_p, c_p = cumulative(compared, lambda w: either(w.predicted_j, w))
    ax_cum.plot(t_m, c_m, "-", color="tab:blue", label=word)
    if predicted:
        ax_cum.plot(t_p, c_p, "--", color="tab:orange", label="predicted")
        _, c_lo = cumulative(compared, lambda w: either(w.low_j, w))
        _, c_hi = cumulative(compared, lambda w: either(w.high_j, w))
        # NB: summing per-window bounds gives a conservative band (errors are not independent).
        if all(w.low_j is not None and w.high_j is not None for w in predicted):
            ax_cum.fill_between(
                t_p, c_lo, c_hi, color="tab:orange", alpha=0.2, label="sum of intervals"
            )
    ax_cum.set_xlabel("time since start (s)")
    ax_cum.set_ylabel("cumulative energy (J)")
    ax_cum.set_title("Cumulative energy")
    if t_m or t_p:
        ax_cum.legend(loc="best")
    return fig
