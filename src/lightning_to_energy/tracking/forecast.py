"""The live readout (what the progress bar shows) and the whole run's energy forecast."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lightning_to_energy.model.regression import OnlineEnergyModel
from lightning_to_energy.reporting.records import Forecast, WindowRecord
from lightning_to_energy.tracking.ledger import RunningTotals
from lightning_to_energy.tracking.steps import StepAccounting
from lightning_to_energy.tracking.windows import WindowRun

__all__ = [
    "RATE_WINDOWS",
    "LiveReadout",
    "LiveState",
    "forecast_run",
    "live_readout",
    "step_rate_s",
]

# The latest steady train windows the forecast's seconds per step are read from: recent enough
# to follow a run that speeds up after its start (as tqdm's smoothed rate and Lightning's
# ThroughputMonitor window do), several so that one short window does not swing it.
RATE_WINDOWS = 4


def step_rate_s(
    totals: RunningTotals, windows: Sequence[WindowRecord]
) -> tuple[float, float, float] | None:
    """Seconds per train step for the steps left: the rate, and its low and high bounds.

    The rate is pooled over the latest :data:`RATE_WINDOWS` steady train windows of
    ``windows`` (the steady ones: every train window but the warm-ups, the run's first and
    the first one of each process resumed from a checkpoint, which are left out), or over
    every steady window when none of them is kept; a resumed run's windows from before the
    checkpoint pool with its own. The bounds are the slowest and fastest of those windows'
    own rates; while at most one steady window has closed since the latest warm-up, the
    rate is unconfirmed, so that warm-up's rate is a bound too: the interval then spans the
    warm-up's rate and the steady one (no bar forecast from one window after a warm-up).

    Args:
        totals: the running totals of the closed windows.
        windows: the closed windows kept one by one, oldest first.

    Returns:
        ``(rate_s, low_s, high_s)``, or None while no steady window has closed.
    """
    steady_steps = totals.train_steps - totals.warmup_steps
    if steady_steps <= 0:
        return None
    latest = [
        w
        for w in windows
        if w.loop == "train" and w.steps > 0 and w.index not in totals.warmup_indices
    ][-RATE_WINDOWS:]
    if latest:
        rate_s = math.fsum(w.duration_s for w in latest) / sum(w.steps for w in latest)
        rates = [w.duration_s / w.steps for w in latest]
    else:  # every steady window folded into the archive: their mean
        rate_s = (totals.train_duration_s - totals.warmup_duration_s) / steady_steps
        rates = [rate_s]
    if totals.latest_warmup_rate_s is not None and totals.steady_since_warmup <= 1:
        rates.append(totals.latest_warmup_rate_s)
    return rate_s, min(rates), max(rates)


def forecast_run(
    totals: RunningTotals,
    model: OnlineEnergyModel,
    *,
    total_steps: int,
    steps_done: int,
    step_features: dict[str, float] | None,
    windows: Sequence[WindowRecord] = (),
) -> Forecast | None:
    """Whole-run energy, with its interval: the joules measured so far (every loop), the
    model's prediction for the train steps left (the last train step's features x the steps
    left, at the recent steady seconds per step of :func:`step_rate_s`), and the validation
    and test joules so far per train step x the steps left.

    The steady seconds per step leave out the run's first train window: its steps carry the
    warm-up (compilation, caches, data-loader start-up; on a small CPU run the first window
    took 2.0 s for 7 steps, the next 0.3 s for 15), whose joules count as spent but whose
    rate must not be extrapolated. So there is no forecast while the first train window is
    the only one and steps are left: a forecast from it alone would be the warm-up's. The
    first train window a run resumed from a checkpoint closes is a warm-up too (its
    process's own), left out of the rate the same way. The
    interval is the model's, at the slowest and the fastest rate of :func:`step_rate_s`: it
    widens while the steady windows disagree, or while only one of them is in.

    NB: validation is assumed to keep its cadence in train steps (every epoch, or every N
    steps), so its energy grows in proportion to the train steps.

    Args:
        totals: the running totals of the closed windows.
        model: the energy model.
        total_steps: train steps the run will take.
        steps_done: train steps completed, the open window's included.
        step_features: one train step's features (``duration_s`` aside), None before any.
        windows: the closed windows kept one by one, oldest first (for the recent rate).

    Returns:
        The forecast, or None before a train window after the first closed (unless no step
        is left) or while the model cannot predict.
    """
    if step_features is None or totals.train_steps == 0:
        return None
    # The steps left after the closed train windows, whose joules are "so far": counted
    # from ``steps_done`` instead, the open window's steps would be in neither part.
    left = max(total_steps - totals.train_steps, 0)
    so_far = totals.measured_j
    if left == 0:
        return Forecast(so_far, so_far, so_far, total_steps, steps_done)
    rate = step_rate_s(totals, windows)
    if rate is None:
        return None  # only the warm-up window so far
    rate_s, low_s, high_s = rate
    per_step = {f: v * left for f, v in step_features.items()}
    # One prediction per distinct rate: steady windows that agree cost one, as before.
    preds = {
        s: model.predict({"duration_s": s * left, **per_step}) for s in {rate_s, low_s, high_s}
    }
    pred, low, high = preds[rate_s], preds[low_s], preds[high_s]
    if pred.energy_j is None or low.low_j is None or high.high_j is None:
        return None
    other_loops_j = (totals.measured_j - totals.train_measured_j) / totals.train_steps * left
    base = so_far + other_loops_j
    return Forecast(
        total_j=base + pred.energy_j,
        low_j=base + min(low.low_j, pred.energy_j),
        high_j=base + max(high.high_j, pred.energy_j),
        steps_total=total_steps,
        steps_done=steps_done,
    )


@dataclass(frozen=True)
class LiveReadout:
    """What the progress bar shows: joules so far, predicted so far, recent error."""

    measured_j: float
    predicted_j: float | None
    recent_error_pct: float | None
    tos: float  # transistor operations of every step completed so far
    kind: str  # the weakest kind behind measured_j: "counter", "estimate", ...
    windows: int
    forecast: Forecast | None = None  # the whole run's energy, once windows are in


def live_readout(
    totals: RunningTotals,
    open_j: float,
    *,
    recent_error_pct: float | None,
    tos: float,
    kind: str,
    windows: int,
    forecast: Forecast | None,
) -> LiveReadout:
    """The readout over the closed windows' ``totals`` and the open window's ``open_j`` so far.

    Predicted joules are the predictions of the closed windows that had one, plus, at their
    measured value, the windows closed before the model could predict and the open window
    (predicted when it closes): so measured minus predicted is the model's accumulated error.
    """
    return LiveReadout(
        measured_j=totals.measured_j + open_j,
        predicted_j=totals.predicted_j + totals.unpredicted_j + open_j
        if totals.any_prediction
        else None,
        recent_error_pct=recent_error_pct,
        tos=tos,
        kind=kind,
        windows=windows,
        forecast=forecast,
    )


class LiveState:
    """What the live readout shows between window closes: the recent accuracy, the weakest
    sensor kind and the forecast, refreshed once per window close (see
    :meth:`~lightning_to_energy.tracking.tracker.EnergyTracker.live`).

    Args:
        acct: the step accounting (TOs and steps so far, a train step's features).
        windows: the open window, its meter and the closed windows' ledger.
    """

    def __init__(self, acct: StepAccounting, windows: WindowRun) -> None:
        self.acct = acct
        self.windows = windows
        self.recent_error_pct: float | None = None
        self.weakest_kind = "none"
        self.forecast: Forecast | None = None

    def readout(self) -> LiveReadout:
        """The totals so far, the open window's latest sample included."""
        meter, ledger = self.windows.meter, self.windows.ledger
        return live_readout(
            ledger.totals,
            0.0 if meter is None else meter.open_j(self.windows.window),
            recent_error_pct=self.recent_error_pct,
            tos=self.acct.tos_total,
            kind=self.weakest_kind,
            windows=ledger.n_windows,
            forecast=self.forecast,
        )

    def refresh(self, model: OnlineEnergyModel, forecast: Callable[[], Forecast | None]) -> None:
        """The model's recent accuracy, then the ``forecast``; once per window close."""
        mape = model.recent_mape()
        self.recent_error_pct = None if math.isnan(mape) else 100.0 * mape
        self.forecast = forecast()

    def forecast_run(self, model: OnlineEnergyModel, total_steps: int | None) -> Forecast | None:
        """The whole run's forecast (:func:`forecast_run`); None without ``total_steps`` or
        before a window closed."""
        ledger = self.windows.ledger
        if total_steps is None or ledger.n_windows == 0:
            return None
        return forecast_run(
            ledger.totals,
            model,
            total_steps=total_steps,
            steps_done=self.acct.steps.get("train", 0),
            step_features=self.acct.features_of("train", 1.0),
            windows=ledger.windows,
        )
