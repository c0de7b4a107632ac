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
import warnings
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

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

FEATURES: tuple[str, ...] = (
    "duration_s",
    "tos_matrix_full",
    "tos_matrix_reduced",
    "tos_vector",
    "bytes",
    "kernels",
)

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
# Belsley, Kuh & Welsch (1980): a scaled condition index above 30 marks strong collinearity.
CONDITION_LIMIT = 30.0
STATE_VERSION = 1

_UNIT_BY_PREFIX = (
    ("duration", "W"),
    ("roofline", "W"),  # a duration too: the roofline estimate of the step's time
    ("tos", "J/TO"),
    ("flops", "J/FLOP"),
    ("bytes", "J/B"),
    ("kernels", "J/kernel"),
    ("steps", "J/step"),
)


def feature_unit(name: str) -> str:
    """The physical unit of the coefficient of feature ``name``.

    ``duration_s`` and ``roofline_s`` -> ``"W"`` (static power), ``tos*`` -> ``"J/TO"``,
    ``bytes*`` -> ``"J/B"``, ``kernels*`` -> ``"J/kernel"``, ``flops*`` -> ``"J/FLOP"``,
    anything else -> ``"J/<name>"``.
    """
    for prefix, unit in _UNIT_BY_PREFIX:
        if name.startswith(prefix):
            return unit
    return f"J/{name}"


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
class Accuracy:
    """Prequential accuracy: each window's prediction was made before its measurement was seen.

    Relative error of a window: ``|predicted - measured| / measured``.

    Attributes:
        n: windows that had a prediction.
        precision_pct: ``100 * (1 - mape)`` (the paper's "precision"; it does not define it, so
            this project reports this and says so). NaN when ``n == 0``.
        mape: mean relative error (a fraction, not percent).
        r2: coefficient of determination of measured joules by predicted joules,
            ``1 - sum (m - p)^2 / sum (m - mean m)^2``; NaN with fewer than 2 windows or
            constant measurements.
        median_rel_err: median relative error (over the last ``RECORDS_KEPT`` windows).
        worst_rel_err: largest relative error.
        predicted_j: sum of the predictions.
        measured_j: sum of the measurements of the same windows.
        recent: the same figures over the last few windows (None on the ``recent`` object).
    """

    n: int
    precision_pct: float
    mape: float
    r2: float
    median_rel_err: float
    worst_rel_err: float
    predicted_j: float
    measured_j: float
    recent: Accuracy | None = None

    def to_dict(self) -> dict[str, float | int | None]:
        """The whole-run figures as a JSON-able dict (NaN becomes None); ``recent`` is left out."""
        out: dict[str, float | int | None] = {"n": self.n}
        for key in (
            "precision_pct",
            "mape",
            "r2",
            "median_rel_err",
            "worst_rel_err",
            "predicted_j",
            "measured_j",
        ):
            value = float(getattr(self, key))
            out[key] = None if math.isnan(value) else value
        return out


@dataclass(frozen=True)
class FitDiagnostics:
    """Whether the data determine each coefficient separately.

    Computed on the relative-error-weighted design with unit-scaled columns (Belsley's scaled
    condition indices). Predictions along the data's own directions stay accurate even when the
    coefficients are not identifiable; only the split between collinear features is then set by
    the prior.

    Attributes:
        n_windows: windows in the fit.
        effective_rank: singular values whose condition index is at most ``CONDITION_LIMIT``.
        condition_number: largest over smallest singular value of the used columns (inf when
            rank deficient, NaN with no data).
        identifiable: every used coefficient is separately determined by the data.
        undetermined: features whose coefficient variance sits mostly (> 50 %) on weak
            directions: their split is set by the prior, not the data.
        unused: features that were zero in every window (their coefficient is the prior's).
    """

    n_windows: int
    effective_rank: int
    condition_number: float
    identifiable: bool
    undetermined: tuple[str, ...]
    unused: tuple[str, ...]


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
        self._agg = _Aggregates()
        self._n_updates = 0

    # ---- properties ---------------------------------------------------------------------------

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The features, in the order of sequence inputs."""
        return self._names

    @property
    def prior(self) -> Prior | None:
        """The prior given at construction."""
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
        if recent < 1:
            raise ValueError(f"recent: expected an int >= 1, found {recent!r}; fix: use e.g. 10.")
        rel = [abs(p - m) / m for p, m in zip(self._rec_p, self._rec_m, strict=True)]
        a = self._agg
        median = float(np.median(rel)) if rel else math.nan
        whole = a.accuracy(median)
        tail_p = list(self._rec_p)[-recent:]
        tail_m = list(self._rec_m)[-recent:]
        tail = _Aggregates()
        for p, m in zip(tail_p, tail_m, strict=True):
            tail.add(p, m)
        tail_median = float(np.median(rel[-recent:])) if rel else math.nan
        return Accuracy(
            n=whole.n,
            precision_pct=whole.precision_pct,
            mape=whole.mape,
            r2=whole.r2,
            median_rel_err=whole.median_rel_err,
            worst_rel_err=whole.worst_rel_err,
            predicted_j=whole.predicted_j,
            measured_j=whole.measured_j,
            recent=tail.accuracy(tail_median),
        )

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
        fresh._agg = _Aggregates.from_dict(state["aggregates"])
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
        if isinstance(x, Mapping):
            missing = [n for n in self._names if n not in x]
            if missing:
                raise ValueError(
                    f"features: expected keys {list(self._names)}, found {sorted(map(str, x))} "
                    f"(missing {missing}); fix: pass every feature the model was built with."
                )
            raw = [x[n] for n in self._names]
        elif isinstance(x, (str, bytes)):
            raise ValueError(
                f"features: expected a mapping or a sequence of numbers, found {x!r}; "
                f"fix: pass a dict keyed by {list(self._names)}."
            )
        else:
            raw = list(x)
            if len(raw) != len(self._names):
                raise ValueError(
                    f"features: expected {len(self._names)} values in the order "
                    f"{list(self._names)}, found {len(raw)}; fix: pass one value per feature, "
                    "or a dict keyed by feature name."
                )
        out = np.empty(len(raw))
        for i, (name, value) in enumerate(zip(self._names, raw, strict=True)):
            try:
                v = float(value)
            except (TypeError, ValueError):
                v = math.nan
            if not math.isfinite(v) or v < 0:
                raise ValueError(
                    f"feature {name!r}: expected a finite number >= 0, found {value!r}; fix: "
                    "skip or mark this window (features count seconds, operations, bytes)."
                )
            out[i] = v
        return out

    def _append(self, vec: np.ndarray, y: float, weight: float, seeded: bool) -> None:
        self._x.append(tuple(float(v) for v in vec))
        self._y.append(y)
        self._w.append(weight)
        self._seeded.append(seeded)

    def _scaled_design(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Relative-error design with unit-RMS columns.

        Returns:
            B (n, p): x_ij / y_i / s_j; w (n,): window weights; s (p,): column scales (1 for
            unused columns); used (p,): columns non-zero in some window.
        """
        X = np.array(self._x, dtype=float).reshape(len(self._y), len(self._names))  # (n, p)
        y = np.array(self._y, dtype=float)  # (n,)
        w = np.array(self._w, dtype=float)  # (n,)
        # Dividing row i by y_i turns squared error into squared relative error: (x_i.c - y_i)/y_i.
        A = X / y[:, None]  # (n, p)
        wsum = float(w.sum()) if len(w) else 1.0
        # s_j = sqrt(sum_i w_i A_ij^2 / sum_i w_i): a unit-RMS column for every used feature, so
        # the scaled coefficient z_j = c_j * s_j is roughly feature j's share of the energy.
        s = np.sqrt((w[:, None] * A**2).sum(axis=0) / wsum)  # (p,)
        used = s > 0
        s = np.where(used, s, 1.0)
        return A / s, w, s, used

    def _refit(self) -> None:
        B, w, s, _ = self._scaled_design()
        p = len(self._names)
        z0 = self._prior_vec * s  # prior in scaled units, (p,)
        # Ridge toward the prior as p extra rows: sqrt(lam) * (z - z0) = 0. The rows keep the
        # problem a non-negative least squares, so positive=True still applies.
        design = np.vstack([B, np.eye(p)])  # (n + p, p)
        target = np.concatenate([np.ones(len(w)), z0])  # (n + p,)
        weight = np.concatenate([w, np.full(p, self._strength)])  # (n + p,)
        # The non-negative least squares scikit-learn's LinearRegression(positive=True,
        # fit_intercept=False) solves with sample weights, solved as it does: rows scaled by
        # sqrt(weight), then SciPy's Lawson-Hanson NNLS. Called directly, it takes 16 to 33 us
        # against 0.6 to 0.9 ms through scikit-learn's input checks, on every window close;
        # tests check the coefficients against scikit-learn's on the same problem.
        from scipy.optimize import nnls

        root_w = np.sqrt(weight)
        try:
            coef, _ = nnls(design * root_w[:, None], target * root_w)
        except (RuntimeError, ValueError, np.linalg.LinAlgError) as exc:
            # NB: NNLS can stop at its iteration limit on pathological data; keeping the
            # previous coefficients is better than stopping a training run over it.
            warnings.warn(
                f"energy model: the refit on {len(w)} windows failed ({exc}); expected a "
                "solvable non-negative least squares, keeping the previous coefficients. Fix: "
                "report this with the model's state_dict().",
                RuntimeWarning,
                stacklevel=3,
            )
            self._diag = None
            return
        self._coef = np.asarray(coef, dtype=float) / s  # back to physical units
        self._diag = None

    def _diagnose(self) -> FitDiagnostics:
        n = len(self._y)
        names = self._names
        if n == 0:
            return FitDiagnostics(0, 0, math.nan, False, names, ())
        B, w, _, used = self._scaled_design()
        unused = tuple(nm for nm, u in zip(names, used, strict=True) if not u)
        used_names = [nm for nm, u in zip(names, used, strict=True) if u]
        k = len(used_names)
        if k == 0:
            return FitDiagnostics(n, 0, math.nan, False, (), unused)
        D = np.sqrt(w)[:, None] * B[:, used]  # (n, k)
        if n < k:
            # Zero rows change neither singular values nor V, and give V all k directions.
            D = np.vstack([D, np.zeros((k - n, k))])  # (k, k)
        _, sv, vt = np.linalg.svd(D, full_matrices=False)  # sv (k,), vt (k, k)
        smax = float(sv[0])
        cond = smax / float(sv[-1]) if sv[-1] > 0 else math.inf
        weak = sv < smax / CONDITION_LIMIT  # (k,)
        # Belsley variance-decomposition proportions: var(z_j) ~ sum_m V_jm^2 / sv_m^2.
        sv_clip = np.maximum(sv, smax * 1e-12)
        phi = vt.T**2 / sv_clip[None, :] ** 2  # (k features, k directions)
        share_weak = phi[:, weak].sum(axis=1) / phi.sum(axis=1)  # (k,)
        undetermined = tuple(nm for nm, sh in zip(used_names, share_weak, strict=True) if sh > 0.5)
        identifiable = n >= max(2, k) and not bool(weak.any())
        return FitDiagnostics(n, int((~weak).sum()), cond, identifiable, undetermined, unused)


def warm_up_solver() -> None:
    """Import the solver and run one tiny fit, so that the first real refit is not slow.

    A tracker calls this when it starts, not in the middle of its first window close.
    """
    from scipy.optimize import nnls

    nnls(np.ones((2, 1)), np.ones(2))


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


class _Aggregates:
    """Exact running sums of the prequential errors over the whole run."""

    def __init__(self) -> None:
        self.n = 0
        self.sum_rel = 0.0
        self.worst_rel = 0.0
        self.sum_sq_res = 0.0
        self.mean_m = 0.0  # Welford running mean and M2 of the measurements
        self.m2_m = 0.0
        self.sum_p = 0.0
        self.sum_m = 0.0

    def add(self, p: float, m: float) -> None:
        rel = abs(p - m) / m
        self.n += 1
        self.sum_rel += rel
        self.worst_rel = max(self.worst_rel, rel)
        self.sum_sq_res += (m - p) ** 2
        delta = m - self.mean_m
        self.mean_m += delta / self.n
        self.m2_m += delta * (m - self.mean_m)
        self.sum_p += p
        self.sum_m += m

    def accuracy(self, median: float) -> Accuracy:
        if self.n == 0:
            nan = math.nan
            return Accuracy(0, nan, nan, nan, nan, nan, 0.0, 0.0)
        mape = self.sum_rel / self.n
        r2 = 1.0 - self.sum_sq_res / self.m2_m if self.n >= 2 and self.m2_m > 0 else math.nan
        return Accuracy(
            n=self.n,
            precision_pct=100.0 * (1.0 - mape),
            mape=mape,
            r2=r2,
            median_rel_err=median,
            worst_rel_err=self.worst_rel,
            predicted_j=self.sum_p,
            measured_j=self.sum_m,
        )

    def to_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> _Aggregates:
        agg = cls()
        for key in agg.__dict__:
            setattr(agg, key, int(d[key]) if key == "n" else float(d[key]))
        return agg
