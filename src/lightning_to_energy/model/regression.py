"""The online energy model: window features -> joules, predicted before each window is seen.

The physical model is linear and non-negative::

    energy_j = static_power_w * duration_s + sum_k coef_k * feature_k      (all coef >= 0)

with units W, J/TO, J/TO, J/TO, J/B and J/kernel for the default :data:`FEATURES`. It is fitted
by minimising the weighted squared *relative* error over a bounded history of windows, with a
ridge penalty that pulls the coefficients toward a prior (from the calibration store, or a weak
default). Every window is predicted before the model sees its measurement (prequential), so the
accuracy figures are honest out-of-sample figures. See ``docs/regression.md``.

Nothing here knows about Lightning, sensors or counting: only feature vectors and joules.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from lightning_to_energy.model.accuracy import Accuracy, Aggregates, prequential_accuracy
from lightning_to_energy.model.features import FEATURES, feature_unit, feature_vector
from lightning_to_energy.model.solver import (
    CONDITION_LIMIT,
    FitDiagnostics,
    diagnose,
    scaled_design,
    solve,
    warm_up_solver,
)

__all__ = [
    "CONDITION_LIMIT",
    "DEFAULT_HISTORY",
    "DEFAULT_INTERVAL",
    "DEFAULT_INTERVAL_FACTOR",
    "DEFAULT_PRIOR_STRENGTH",
    "FEATURES",
    "INTERVAL_WINDOWS",
    "MIN_WINDOWS_FOR_INTERVAL",
    "RECORDS_KEPT",
    "SEED_WEIGHT",
    "STATE_VERSION",
    "Accuracy",
    "FitDiagnostics",
    "OnlineEnergyModel",
    "Prediction",
    "PredictionSource",
    "Prior",
    "feature_unit",
    "log_interval_half_width",
    "warm_up_solver",
]

PredictionSource = Literal["fit", "prior", "none"]

DEFAULT_HISTORY = 512
DEFAULT_PRIOR_STRENGTH = 1e-3  # in windows' worth of evidence per scaled coefficient
DEFAULT_INTERVAL = 0.9
SEED_WEIGHT = 0.5  # weight of a window from an earlier run, relative to this run's windows
# Prediction intervals: below this many prequential errors the interval is the conservative
# default factor (or wider, if a larger error was already seen).
MIN_WINDOWS_FOR_INTERVAL = 5
DEFAULT_INTERVAL_FACTOR = 1.5  # [p / 1.5, p * 1.5] until enough errors are in
INTERVAL_WINDOWS = 100  # the most recent prequential errors the interval is drawn from
# Prequential (predicted, measured) pairs kept for the median and the recent figures.
RECORDS_KEPT = 1024
STATE_VERSION = 1


@dataclass(frozen=True)
class Prediction:
    """One window's predicted energy.

    Attributes:
        energy_j: predicted joules; None when no prediction is available (``source == "none"``).
        low_j: lower end of the prediction interval (None when unavailable).
        high_j: upper end of the prediction interval (None when unavailable).
        source: ``"fit"`` (fitted on windows), ``"prior"`` (no window yet: the prior's
            coefficients) or ``"none"`` (no window and no prior).
        n_windows: windows the model was fitted on when it predicted (seeded ones included).
    """

    energy_j: float | None
    low_j: float | None
    high_j: float | None
    source: PredictionSource
    n_windows: int

    @property
    def available(self) -> bool:
        """True when the prediction carries a number."""
        return self.energy_j is not None


@dataclass(frozen=True)
class Prior:
    """Prior coefficients in physical units and how hard the fit is pulled toward them.

    Attributes:
        coefficients: feature name -> coefficient (W for ``duration_s``, J/TO, J/B, ...).
            Features left out have a prior of 0.
        strength: the ridge weight, in windows' worth of evidence per (scaled) coefficient;
            None uses the model's ``prior_strength``.
    """

    coefficients: Mapping[str, float] = field(default_factory=dict)
    strength: float | None = None

    def __post_init__(self) -> None:
        for name, value in self.coefficients.items():
            v = float(value)
            if not math.isfinite(v) or v < 0:
                raise ValueError(
                    f"Prior coefficient {name!r}: expected a finite number >= 0, found {value!r}; "
                    "fix: pass physical, non-negative coefficients (W, J/TO, J/B, J/kernel)."
                )
        if self.strength is not None and (not math.isfinite(self.strength) or self.strength < 0):
            raise ValueError(
                f"Prior strength: expected a finite number >= 0, found {self.strength!r}; "
                f"fix: use e.g. {DEFAULT_PRIOR_STRENGTH} (windows' worth of evidence) or None."
            )

    @classmethod
    def from_model(cls, model: OnlineEnergyModel, strength: float | None = None) -> Prior:
        """A prior equal to ``model``'s current coefficients."""
        return cls(coefficients=dict(model.coefficients), strength=strength)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "coefficients": {k: float(v) for k, v in self.coefficients.items()},
            "strength": self.strength,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Prior:
        """Inverse of :meth:`to_dict`."""
        strength = d.get("strength")
        return cls(
            coefficients={str(k): float(v) for k, v in dict(d["coefficients"]).items()},
            strength=None if strength is None else float(strength),
        )


def log_interval_half_width(scores: Sequence[float], interval: float) -> float:
    """Half width, in log space, of a prediction interval from past prequential errors.

    ``scores`` are ``|ln(measured / predicted)|`` of past windows. With fewer than
    ``MIN_WINDOWS_FOR_INTERVAL`` scores the result is ``max(ln DEFAULT_INTERVAL_FACTOR, max
    score)``. Otherwise it is the split-conformal quantile: the k-th smallest score with
    ``k = min(ceil((n + 1) * interval), n)``.

    Args:
        scores: past absolute log ratios (non-negative; inf allowed).
        interval: target coverage in (0, 1).

    Returns:
        q such that the interval is ``[p * exp(-q), p * exp(q)]``.
    """
    n = len(scores)
    if n < MIN_WINDOWS_FOR_INTERVAL:
        return max(math.log(DEFAULT_INTERVAL_FACTOR), max(scores, default=0.0))
    # NB: the 1e-9 keeps a product that is whole but for rounding from going up a rank:
    # (24 + 1) * 0.56 == 14.000000000000002 would otherwise take the 15th score, not the 14th.
    k = min(math.ceil((n + 1) * interval - 1e-9), n)
    return sorted(scores)[max(k, 1) - 1]


class OnlineEnergyModel:
    """Online, non-negative, relative-error linear model from window features to joules.

    Args:
        feature_names: names of the features, in the order of sequence inputs. Any subset or
            ordering works (e.g. ``("duration_s", "tos")``); ``duration_s``'s coefficient is the
            static power in W.
        history: the most recent windows kept and fitted (seeded ones included).
        prior: prior coefficients; also used for predictions before the first window. None: a
            weak all-zero prior, and no prediction before the first window.
        prior_strength: ridge weight in windows' worth of evidence per scaled coefficient;
            defaults to ``prior.strength`` if set, else ``DEFAULT_PRIOR_STRENGTH``.
        interval: coverage of the prediction intervals, in (0, 1).

    Raises:
        ValueError: invalid arguments (each message says what was expected and the fix).

    Example:
        >>> m = OnlineEnergyModel(("duration_s", "tos"))
        >>> for d, t in [(2.0, 1e14), (3.0, 4e14), (4.0, 2e14), (2.5, 3e14)]:
        ...     _ = m.update({"duration_s": d, "tos": t}, 300 * d + 2e-12 * t)
        >>> round(m.predict({"duration_s": 3.0, "tos": 1e14}).energy_j)
        1100
    """

    def __init__(
        self,
        feature_names: Sequence[str] = FEATURES,
        *,
        history: int = DEFAULT_HISTORY,
        prior: Prior | None = None,
        prior_strength: float | None = None,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        names = tuple(feature_names) if not isinstance(feature_names, str) else ()
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ValueError(
                "feature_names: expected a non-empty sequence of non-empty strings, found "
                f"{feature_names!r}; fix: pass e.g. {FEATURES!r}."
            )
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(
                f"feature_names: expected unique names, found duplicates {dupes}; "
                "fix: list each feature once."
            )
        if isinstance(history, bool) or not isinstance(history, int) or history < 1:
            raise ValueError(
                f"history: expected an int >= 1, found {history!r}; "
                f"fix: use e.g. {DEFAULT_HISTORY}."
            )
        if not (isinstance(interval, (int, float)) and 0.0 < interval < 1.0):
            raise ValueError(
                f"interval: expected a coverage strictly between 0 and 1, found {interval!r}; "
                f"fix: use e.g. {DEFAULT_INTERVAL}."
            )
        if prior is not None:
            unknown = sorted(set(prior.coefficients) - set(names))
            if unknown:
                raise ValueError(
                    f"prior: expected coefficients for features among {list(names)}, found "
                    f"unknown {unknown}; fix: rename them, or build the prior with "
                    "Calibration.to_prior(feature_names)."
                )
        strength = prior_strength
        if strength is None:
            strength = (
                prior.strength if prior and prior.strength is not None else DEFAULT_PRIOR_STRENGTH
            )
        if not (isinstance(strength, (int, float)) and math.isfinite(strength) and strength >= 0):
            raise ValueError(
                f"prior_strength: expected a finite number >= 0, found {strength!r}; "
                f"fix: use e.g. {DEFAULT_PRIOR_STRENGTH}."
            )

        self._names = names
        self._history_limit = history
        self._prior = prior
        self._strength = float(strength)
        self._interval = float(interval)
        self._prior_vec = np.array(
            [float(prior.coefficients.get(n, 0.0)) if prior else 0.0 for n in names]
        )
        # History: (features, joules, weight, seeded) of the most recent windows.
        self._x: deque[tuple[float, ...]] = deque(maxlen=history)
        self._y: deque[float] = deque(maxlen=history)
        self._w: deque[float] = deque(maxlen=history)
        self._seeded: deque[bool] = deque(maxlen=history)
        self._coef: np.ndarray | None = None  # None until fitted on at least one window
        self._diag: FitDiagnostics | None = None
        # Prequential records: the last RECORDS_KEPT (predicted, measured) pairs ...
        self._rec_p: deque[float] = deque(maxlen=RECORDS_KEPT)
        self._rec_m: deque[float] = deque(maxlen=RECORDS_KEPT)
        # ... and exact running aggregates over the whole run.
        self._agg = Aggregates()
        self._n_updates = 0

    # ---- properties ---------------------------------------------------------------------------

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The features, in the order of sequence inputs."""
        return self._names

    @property
    def prior(self) -> Prior | None:
        """The prior given at construction, or by :meth:`set_prior`."""
        return self._prior

    @property
    def interval(self) -> float:
        """Coverage of the prediction intervals."""
        return self._interval

    @property
    def n_windows(self) -> int:
        """Windows in the history (seeded ones included)."""
        return len(self._y)

    @property
    def n_updates(self) -> int:
        """Windows of this run passed to :meth:`update` (including those pushed out of history)."""
        return self._n_updates

    @property
    def fitted(self) -> bool:
        """True once the model has been fitted on at least one window."""
        return self._coef is not None

    @property
    def coefficients(self) -> dict[str, float]:
        """Coefficients in physical units (see :meth:`units`); the prior's before any fit."""
        vec = self._coef if self._coef is not None else self._prior_vec
        return {n: float(c) for n, c in zip(self._names, vec, strict=True)}

    def units(self) -> dict[str, str]:
        """Unit of each coefficient: ``W``, ``J/TO``, ``J/B``, ``J/kernel``, ..."""
        return {n: feature_unit(n) for n in self._names}

    def diagnostics(self) -> FitDiagnostics:
        """Identifiability of the coefficients from the current history."""
        # Computed when asked (an SVD of the history), not at every window close.
        if self._diag is None:
            self._diag = self._diagnose()
        return self._diag

    @property
    def identifiable(self) -> bool:
        """True when the data determine every used coefficient separately."""
        return self.diagnostics().identifiable

    # ---- prediction and update ----------------------------------------------------------------

    def predict(self, x: Mapping[str, float] | Sequence[float] | np.ndarray) -> Prediction:
        """Predict the joules of a window with features ``x``.

        Args:
            x: a mapping with every feature name (extra keys are ignored), or a sequence in the
                order of ``feature_names``.

        Returns:
            The prediction and its interval; ``source == "none"`` (numbers None) before the
            first window when there is no prior.

        Raises:
            ValueError: a feature is missing, non-finite or negative.
        """
        vec = self._vector(x)
        source: PredictionSource
        if self._coef is not None:
            coef, source = self._coef, "fit"
        elif self._prior is not None:
            coef, source = self._prior_vec, "prior"
        else:
            return Prediction(None, None, None, "none", len(self._y))
        # (p,) . (p,) -> scalar joules
        energy = float(vec @ coef)
        scores = [
            _log_score(p, m)
            for p, m in zip(
                list(self._rec_p)[-INTERVAL_WINDOWS:],
                list(self._rec_m)[-INTERVAL_WINDOWS:],
                strict=True,
            )
        ]
        q = log_interval_half_width(scores, self._interval)
        low = energy * math.exp(-q) if math.isfinite(q) else 0.0
        high = energy * math.exp(q) if math.isfinite(q) else math.inf
        return Prediction(energy, low, high, source, len(self._y))

    def update(
        self, x: Mapping[str, float] | Sequence[float] | np.ndarray, energy_j: float
    ) -> Prediction:
        """Prequential step: predict the window, score it against ``energy_j``, then learn it.

        Args:
            x: the window's features (as for :meth:`predict`).
            energy_j: the window's measured joules, > 0.

        Returns:
            The prediction made *before* the measurement was seen (``source == "none"`` when
            none was possible; such windows do not count in :meth:`accuracy`).

        Raises:
            ValueError: a feature is missing, non-finite or negative, or ``energy_j`` is not a
                finite number > 0. The model is unchanged.
        """
        vec = self._vector(x)
        y = _check_energy(energy_j)
        pred = self.predict(vec)
        if pred.energy_j is not None:
            self._rec_p.append(pred.energy_j)
            self._rec_m.append(y)
            self._agg.add(pred.energy_j, y)
        self._append(vec, y, 1.0, seeded=False)
        self._n_updates += 1
        self._refit()
        return pred

    def seed(
        self,
        windows: Iterable[tuple[Mapping[str, float] | Sequence[float], float]],
        weight: float = SEED_WEIGHT,
    ) -> int:
        """Add windows from earlier runs (e.g. the calibration store) before this run starts.

        Seeded windows are fitted with ``weight`` relative to this run's windows (weight 1), are
        not scored for accuracy, and are the first to leave the bounded history.

        Args:
            windows: ``(features, energy_j)`` pairs, oldest first.
            weight: their weight in the fit, in (0, 1].

        Returns:
            The number of windows added (at most ``history``; the most recent are kept).

        Raises:
            RuntimeError: called after :meth:`update` (older data must come first).
            ValueError: a window is invalid, or ``weight`` is not in (0, 1].
        """
        if self._n_updates:
            raise RuntimeError(
                "seed(): expected to be called before the first update(), found "
                f"{self._n_updates} update(s); fix: seed a fresh model, then update it."
            )
        if not (isinstance(weight, (int, float)) and 0.0 < weight <= 1.0):
            raise ValueError(
                f"seed weight: expected a number in (0, 1], found {weight!r}; "
                f"fix: use e.g. {SEED_WEIGHT}."
            )
        rows = [(self._vector(x), _check_energy(e)) for x, e in windows]
        for vec, y in rows:
            self._append(vec, y, float(weight), seeded=True)
        if rows:
            self._refit()
        return min(len(rows), self._history_limit)

    def set_prior(self, prior: Prior | None, prior_strength: float | None = None) -> None:
        """Replace the prior before this run's first window (e.g. once the first step is known).

        Seeded windows are refitted toward the new prior. The strength becomes
        ``prior_strength``, else ``prior.strength`` if set, else stays as it is. The prior rides
        in :meth:`state_dict` as one given at construction does.

        Raises:
            RuntimeError: called after :meth:`update` (a window was predicted from the old one).
            ValueError: the prior names features the model lacks, or the strength is invalid.
        """
        if self._n_updates:
            raise RuntimeError(
                "set_prior(): expected a model with no update() yet, found "
                f"{self._n_updates}; fix: set the prior before the first window is fitted."
            )
        strength = prior_strength
        if strength is None:
            strength = prior.strength if prior and prior.strength is not None else self._strength
        # the constructor's checks, on a throwaway model: the same messages, one owner
        OnlineEnergyModel(self._names, prior=prior, prior_strength=strength)
        self._prior = prior
        self._strength = float(strength)
        self._prior_vec = np.array(
            [float(prior.coefficients.get(n, 0.0)) if prior else 0.0 for n in self._names]
        )
        self._coef = None
        self._diag = None
        if self._y:
            self._refit()

    def history_windows(self, include_seeded: bool = False) -> list[tuple[dict[str, float], float]]:
        """The windows in the history as ``(features by name, energy_j)``, oldest first.

        Args:
            include_seeded: also return windows added by :meth:`seed`.
        """
        return [
            (dict(zip(self._names, x, strict=True)), y)
            for x, y, s in zip(self._x, self._y, self._seeded, strict=True)
            if include_seeded or not s
        ]

    # ---- accuracy -----------------------------------------------------------------------------

    def recent_mape(self, recent: int = 10) -> float:
        """Mean relative error of the last ``recent`` predicted windows (nan before any).

        What :meth:`accuracy` reports as ``recent.mape``, without the whole run's median: the
        tracker asks for it after every window.
        """
        n = min(recent, len(self._rec_p))
        if n < 1:
            return math.nan
        pairs = zip(
            itertools.islice(reversed(self._rec_p), n),
            itertools.islice(reversed(self._rec_m), n),
            strict=True,
        )
        return math.fsum(abs(p - m) / m for p, m in pairs) / n

    def accuracy(self, recent: int = 10) -> Accuracy:
        """Prequential accuracy over the run, and over its last ``recent`` predicted windows.

        Args:
            recent: how many of the latest predicted windows the ``recent`` figures cover.
        """
        return prequential_accuracy(self._rec_p, self._rec_m, self._agg, recent)

    # ---- state --------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: JSON-able (str, int, float, list, dict, None)."""
        return {
            "version": STATE_VERSION,
            "feature_names": list(self._names),
            "history": self._history_limit,
            "prior": None if self._prior is None else self._prior.to_dict(),
            "prior_strength": self._strength,
            "interval": self._interval,
            "windows": {
                "x": [list(x) for x in self._x],
                "energy_j": list(self._y),
                "weight": list(self._w),
                "seeded": [1 if s else 0 for s in self._seeded],
            },
            "coefficients": None if self._coef is None else [float(c) for c in self._coef],
            "records": {"predicted_j": list(self._rec_p), "measured_j": list(self._rec_m)},
            "aggregates": self._agg.to_dict(),
            "n_updates": self._n_updates,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`: history, records, coefficients and settings, exactly.

        Raises:
            ValueError: the state is from another version or another feature set.
        """
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"model state: expected version {STATE_VERSION}, found {state.get('version')!r}; "
                "fix: load a state written by this version of lightning-to-energy."
            )
        names = tuple(state["feature_names"])
        if names != self._names:
            raise ValueError(
                f"model state: expected features {list(self._names)}, found {list(names)}; "
                f"fix: construct OnlineEnergyModel(feature_names={list(names)!r}) or use "
                "OnlineEnergyModel.from_state_dict(state)."
            )
        prior = None if state["prior"] is None else Prior.from_dict(state["prior"])
        fresh = OnlineEnergyModel(
            names,
            history=int(state["history"]),
            prior=prior,
            prior_strength=float(state["prior_strength"]),
            interval=float(state["interval"]),
        )
        w = state["windows"]
        for x, y, wt, s in zip(w["x"], w["energy_j"], w["weight"], w["seeded"], strict=True):
            fresh._append(np.array([float(v) for v in x]), float(y), float(wt), bool(s))
        coef = state["coefficients"]
        fresh._coef = None if coef is None else np.array([float(c) for c in coef])
        fresh._diag = None
        fresh._rec_p.extend(float(v) for v in state["records"]["predicted_j"])
        fresh._rec_m.extend(float(v) for v in state["records"]["measured_j"])
        fresh._agg = Aggregates.from_dict(state["aggregates"])
        fresh._n_updates = int(state["n_updates"])
        self.__dict__.update(fresh.__dict__)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> OnlineEnergyModel:
        """A model restored from :meth:`state_dict`."""
        model = cls(tuple(state["feature_names"]))
        model.load_state_dict(state)
        return model

    # ---- internals ----------------------------------------------------------------------------

    def _vector(self, x: Mapping[str, float] | Sequence[float] | np.ndarray) -> np.ndarray:
        return feature_vector(self._names, x)

    def _append(self, vec: np.ndarray, y: float, weight: float, seeded: bool) -> None:
        self._x.append(tuple(float(v) for v in vec))
        self._y.append(y)
        self._w.append(weight)
        self._seeded.append(seeded)

    def _scaled_design(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Relative-error design with unit-RMS columns (see :func:`scaled_design`)."""
        return scaled_design(self._x, self._y, self._w, len(self._names))

    def _refit(self) -> None:
        B, w, s, _ = self._scaled_design()
        coef = solve(B, w, s, self._prior_vec, self._strength)
        if coef is not None:
            self._coef = coef
        self._diag = None

    def _diagnose(self) -> FitDiagnostics:
        n = len(self._y)
        return diagnose(self._names, n, self._scaled_design() if n else _NO_DESIGN)


_NO_DESIGN = (np.empty((0, 0)), np.empty(0), np.empty(0), np.empty(0, dtype=bool))


def _check_energy(energy_j: float) -> float:
    try:
        y = float(energy_j)
    except (TypeError, ValueError):
        y = math.nan
    if not math.isfinite(y) or y <= 0:
        raise ValueError(
            f"energy_j: expected a finite number of joules > 0, found {energy_j!r}; fix: do not "
            "fit this window (mark it: a zero or missing reading means the window was too short "
            "or a sensor failed)."
        )
    return y


def _log_score(predicted: float, measured: float) -> float:
    """|ln(measured / predicted)|; inf for a zero prediction."""
    if predicted <= 0:
        return math.inf
    return abs(math.log(measured / predicted))
