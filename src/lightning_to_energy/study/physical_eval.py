"""Cross-validated evaluation of the physical step model on the shared H100 measurements.

Splits (scikit-learn's ``LeaveOneGroupOut``): leave one *shape* out (groups = family x depth x
width, the activations of a shape held out together), leave one *family* out, and leave one
*configuration* out (for reference only: a configuration's siblings of other activations
predict it almost perfectly). Models: ours (the physical model, time and energy), FLOPs-only
and TOs-only least-squares lines (linear and log-log), and the data's repeat measurements as
the ceiling. Scores (:func:`~lightning_to_energy.model.scoring.score_pairs`): precision = 100 x
(1 - MAPE), R^2, median and worst relative error; and the coverage of cross-conformal 90 %
intervals (each held-out configuration's interval is sized from the held-out errors of the
*other* groups only). Leave one family out, ours' intervals are those
:meth:`~lightning_to_energy.model.physical.PhysicalModel.plan` gives a user: sized on the
training families' leave-one-shape-out errors and, for a held-out step outside their calibrated
range, widened by a factor measured on those training families alone (nested: the held-out
family never sizes its own interval; :func:`measure_widening`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike

from lightning_to_energy.model.physical import (
    EXTRAPOLATION_WIDENING,
    PhysicalModel,
    PhysicalParams,
    predict_steps,
)
from lightning_to_energy.model.physical_fit import (
    PhysicalFit,
    Sample,
    calibrated_range_fields,
    fit_physical,
)
from lightning_to_energy.model.scoring import score_pairs

__all__ = [
    "LEVEL",
    "SPLITS",
    "PhysicalFolds",
    "PlannedIntervals",
    "Predictor",
    "SharedFit",
    "SharedRow",
    "Widening",
    "conformal_halfwidth",
    "cross_conformal",
    "evaluate",
    "fit_shared",
    "measure_widening",
    "nested_widening",
    "oof_groups",
    "oof_line",
    "oof_physical",
    "params_table",
    "physical_predictions",
    "planned_family_intervals",
    "precision_scores",
    "render_markdown",
    "repeat_ceiling",
    "unused_priors_line",
    "widening_ratio",
]

SPLITS = ("shape", "family", "config")
LEVEL = 0.9


def precision_scores(
    pred: ArrayLike,
    meas: ArrayLike,
    low: ArrayLike | None = None,
    high: ArrayLike | None = None,
) -> dict[str, float | None]:
    """The figures of :func:`~lightning_to_energy.model.scoring.score_pairs` (precision % =
    100 x (1 - MAPE), R^2 (None where undefined), median and worst relative error), and the
    coverage of the intervals ``[low, high]`` when given."""
    p, m = np.asarray(pred, float), np.asarray(meas, float)
    figures = score_pairs(list(zip(p.tolist(), m.tolist(), strict=True)))
    r2 = figures["r2"]
    out: dict[str, float | int | None] = {
        "n": len(m),  # a count, written as one (54, not 54.0)
        "precision_pct": float(figures["precision_pct"] or 0.0),
        "r2": None if r2 is None else float(r2),
        "median_rel_err": float(figures["median_rel_err"] or 0.0),
        "worst_rel_err": float(figures["worst_rel_err"] or 0.0),
        "coverage": None,
    }
    if low is not None and high is not None:
        inside = (np.asarray(low) <= m) & (m <= np.asarray(high))
        out["coverage"] = float(np.mean(inside))
    return out


def _r2_text(r2: float | None) -> str:
    return "n/a" if r2 is None or math.isnan(r2) else f"{r2:.3f}"


def conformal_halfwidth(log_residuals: Sequence[float], level: float = LEVEL) -> float:
    """Split-conformal half width in log space: the ``ceil((n + 1) level)``-th smallest |r|.

    ``inf`` when there are too few residuals for that rank (fewer than ``level / (1 - level)``).
    """
    r = np.sort(np.abs(np.asarray(log_residuals, float)))
    k = math.ceil((len(r) + 1) * level)
    return float(r[k - 1]) if 0 < k <= len(r) else math.inf


def cross_conformal(
    pred: np.ndarray, meas: np.ndarray, groups: Sequence[str], level: float = LEVEL
) -> tuple[np.ndarray, np.ndarray]:
    """Intervals for out-of-fold predictions, each sized on the *other* groups' errors."""
    g = np.asarray(groups)
    r = np.log(meas / pred)
    low, high = np.empty_like(pred), np.empty_like(pred)
    for name in set(groups):
        mine = g == name
        q = conformal_halfwidth(r[~mine], level)
        low[mine], high[mine] = pred[mine] * math.exp(-q), pred[mine] * math.exp(q)
    return low, high


def _folds(groups: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import LeaveOneGroupOut

    x = np.zeros((len(groups), 1))
    return list(LeaveOneGroupOut().split(x, groups=groups))


def physical_predictions(params: PhysicalParams, samples: Sequence[Sample]) -> np.ndarray:
    """Predicted (time_s, energy_j) per sample: energy at the *predicted* time, as planned."""
    preds = predict_steps([s.profile for s in samples], params)
    return np.array([[p.time_s, p.energy_j] for p in preds]).reshape(len(samples), 2)


class Predictor(Protocol):
    """Fits on some samples and predicts others (:class:`PhysicalFolds`, or a toy in tests)."""

    def __call__(self, train: Sequence[int], test: Sequence[int]) -> np.ndarray:
        """(time_s, energy_j) of the samples at ``test`` (one row each), fitted on ``train``."""
        ...

    def outside(self, train: Sequence[int], test: Sequence[int]) -> list[bool]:
        """Whether each sample at ``test`` lies outside the calibrated range of ``train``."""
        ...


class PhysicalFolds:
    """The physical model fitted on subsets of ``samples`` (plus ``extra``), each fit once.

    Calling it is a :data:`Predictor`; :meth:`params` gives a subset's fitted parameters. Nested
    cross-validation fits the same subsets again and again (an outer fold's inner folds), so
    the fits are cached by the set of training indices.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        prior: PhysicalParams,
        *,
        extra: Sequence[Sample] = (),
        free: Collection[str] | None = None,
    ) -> None:
        self.samples = list(samples)
        self.prior = prior
        self.extra = list(extra)
        self.free = free
        self._fits: dict[frozenset[int], PhysicalParams] = {}

    def params(self, train: Sequence[int]) -> PhysicalParams:
        """The parameters fitted on the samples at ``train`` plus ``extra``."""
        key = frozenset(int(i) for i in train)
        if key not in self._fits:
            chosen = [self.samples[i] for i in sorted(key)] + self.extra
            self._fits[key] = fit_physical(chosen, self.prior, free=self.free).params
        return self._fits[key]

    def __call__(self, train: Sequence[int], test: Sequence[int]) -> np.ndarray:
        return physical_predictions(self.params(train), [self.samples[i] for i in test])

    def outside(self, train: Sequence[int], test: Sequence[int]) -> list[bool]:
        """Whether ``PhysicalModel.extrapolation`` labels each sample at ``test`` for a model
        calibrated on the samples at ``train`` (formats, FLOPs and kernels: no fit needed)."""
        probe = PhysicalModel(
            params=self.prior,
            target="",
            time_log_halfwidth=0.0,
            energy_log_halfwidth=0.0,
            level=LEVEL,
            basis="",
            **calibrated_range_fields([self.samples[i] for i in train]),
        )
        return [bool(probe.extrapolation(self.samples[i].profile)) for i in test]


def oof_groups(predict: Predictor, groups: Sequence[str], index: Sequence[int]) -> np.ndarray:
    """Out-of-fold (time_s, energy_j) of the samples at ``index`` (rows in that order), each
    group among them held out in turn and predicted from the others among ``index`` only."""
    idx = np.asarray(index, dtype=int)
    out = np.zeros((len(idx), 2))
    for train, test in _folds([groups[i] for i in idx]):
        out[test] = predict(idx[train].tolist(), idx[test].tolist())
    return out


def oof_physical(
    samples: Sequence[Sample],
    groups: Sequence[str],
    prior: PhysicalParams,
    *,
    extra: Sequence[Sample] = (),
    free: Collection[str] | None = None,
) -> np.ndarray:
    """Out-of-fold (time_s, energy_j) of each sample, fitted on the other groups plus ``extra``."""
    folds = PhysicalFolds(samples, prior, extra=extra, free=free)
    return oof_groups(folds, groups, range(len(samples)))


def widening_ratio(
    shape_log_residuals: Sequence[float],
    family_log_residuals: Sequence[float],
    level: float = LEVEL,
) -> float | None:
    """The measured extrapolation widening: the leave-one-family-out split-conformal half width
    over the leave-one-shape-out one (both in log space), at least 1; None where either cannot
    be sized (too few residuals) or the shape half width is 0."""
    q_shape = conformal_halfwidth(shape_log_residuals, level)
    q_family = conformal_halfwidth(family_log_residuals, level)
    if not (math.isfinite(q_shape) and math.isfinite(q_family)) or q_shape <= 0.0:
        return None
    # an unseen family predicted better than an unseen shape is luck, not a narrower interval
    return max(1.0, q_family / q_shape)


@dataclass(frozen=True)
class Widening:
    """Interval widths measured on held-out groups of some configurations.

    Args:
        time_log_halfwidth, energy_log_halfwidth: split-conformal half widths (log space) of
            their leave-one-shape-out errors (``inf`` with too few of them).
        time, energy: extrapolation widening factors (:func:`widening_ratio`), or
            :data:`~lightning_to_energy.model.physical.EXTRAPOLATION_WIDENING` where they could
            not be measured.
        basis: how the factors were obtained, in words.
    """

    time_log_halfwidth: float
    energy_log_halfwidth: float
    time: float
    energy: float
    basis: str


def measure_widening(
    predict: Predictor,
    measured: np.ndarray,
    shapes: Sequence[str],
    families: Sequence[str],
    index: Sequence[int] | None = None,
    *,
    level: float = LEVEL,
    shape_oof: np.ndarray | None = None,
    only_extrapolations: bool = True,
) -> Widening:
    """Leave-one-shape-out half widths and the extrapolation widening of the samples at ``index``.

    The widening is the ratio of two ``level`` quantiles of |log(measured / predicted)|
    (:func:`widening_ratio`), per target, using the samples at ``index`` only: that of the
    steps which, held out with their family, lie outside the other families' calibrated range
    (``predict.outside``: what ``plan`` widens), over that of every step held out with its
    shape. It measures how much wider an extrapolation's errors are than a calibrated step's,
    on the population ``plan`` applies it to. Where it cannot be measured (fewer than two
    families, no held-out family outside the others' range, too few such errors) the factor is
    the stated :data:`~lightning_to_energy.model.physical.EXTRAPOLATION_WIDENING`, and
    ``basis`` says so.

    Args:
        predict: fits and predicts (:class:`PhysicalFolds`).
        measured: (time_s, energy_j) of every sample, one row each.
        shapes, families: every sample's shape and family.
        index: the samples to use (all when None).
        level: the intervals' nominal coverage.
        shape_oof: the leave-one-shape-out predictions of the samples at ``index`` when already
            computed (rows in that order).
        only_extrapolations: False to size the family quantile on every held-out step, whether
            an extrapolation or not (the variant first tried; see docs/physical-model.md).
    """
    idx = list(range(len(shapes))) if index is None else [int(i) for i in index]
    meas = np.asarray(measured, float)[idx]
    loso = oof_groups(predict, shapes, idx) if shape_oof is None else np.asarray(shape_oof)
    r_shape = np.log(meas / loso)
    q = [conformal_halfwidth(r_shape[:, k], level) for k in (0, 1)]
    n_families = len({families[i] for i in idx})
    ratios: list[float | None] = [None, None]
    n_used = 0
    if n_families >= 2:
        arr = np.asarray(idx, dtype=int)
        r_family = np.zeros((len(idx), 2))
        used = np.zeros(len(idx), dtype=bool)
        for train, test in _folds([families[i] for i in idx]):
            tr, te = arr[train].tolist(), arr[test].tolist()
            r_family[test] = np.log(meas[test] / predict(tr, te))
            used[test] = predict.outside(tr, te) if only_extrapolations else True
        n_used = int(used.sum())
        ratios = [widening_ratio(r_shape[:, k], r_family[used, k], level) for k in (0, 1)]
    if None in ratios:
        if n_families < 2:
            why = f"only {n_families} family"
        elif n_used == 0:
            why = "no held-out family was an extrapolation of the others"
        else:
            why = f"{n_used} held-out extrapolations, too few to size"
        basis = f"stated x{EXTRAPOLATION_WIDENING:g}, not measured ({why}) for " + " and ".join(
            t for t, r in zip(("time", "energy"), ratios, strict=True) if r is None
        )
    else:
        basis = ""
    factors = [EXTRAPOLATION_WIDENING if r is None else r for r in ratios]
    which = "extrapolations" if only_extrapolations else "steps"
    measured_basis = (
        f"measured: {level:.0%} half width of |log error| of {n_used} held-out {which} "
        f"(leave one family out) over that of leave one shape out, on {len(idx)} "
        f"configurations ({n_families} families)"
    )
    if not basis:
        basis = measured_basis
    elif any(r is not None for r in ratios):
        basis = measured_basis + "; " + basis
    return Widening(q[0], q[1], factors[0], factors[1], basis)


@dataclass(frozen=True)
class PlannedIntervals:
    """``plan``'s intervals for held-out samples.

    Args:
        low, high: (time_s, energy_j) bounds per sample, one row each.
        extrapolation: whether ``plan`` labelled each sample an extrapolation.
        widenings: the widening each held-out family's model carried.
    """

    low: np.ndarray
    high: np.ndarray
    extrapolation: tuple[bool, ...]
    widenings: Mapping[str, Widening]

    def coverage(self, measured: np.ndarray, column: int, rows: np.ndarray | None = None) -> float:
        """The share of ``measured`` inside column ``column``'s bounds: one value per sample, or
        per sample selected by the boolean mask ``rows``."""
        m = np.asarray(measured, float)
        low, high = self.low[:, column], self.high[:, column]
        if rows is not None:
            low, high = low[rows], high[rows]
        inside = (low <= m) & (m <= high)
        return float(np.mean(inside))


def planned_family_intervals(
    folds: PhysicalFolds,
    measured: np.ndarray,
    shapes: Sequence[str],
    families: Sequence[str],
    *,
    target: str,
    level: float = LEVEL,
    widening: Mapping[str, Widening] | None = None,
    stated: bool = False,
) -> PlannedIntervals:
    """Leave one family out, each held-out sample's interval as ``PhysicalModel.plan`` gives it.

    Each family's model is what ``fit_shared`` would build from the other families alone: their
    fit, half widths from their leave-one-shape-out errors, their calibrated range, and the
    widening measured on them (:func:`nested_widening`, or ``widening`` when given); with
    ``stated`` the widening is the stated
    :data:`~lightning_to_energy.model.physical.EXTRAPOLATION_WIDENING` instead (the figure
    before it was measured).
    """
    if widening is None:
        widening = nested_widening(folds, measured, shapes, families, level=level)
    n = len(families)
    low, high = np.zeros((n, 2)), np.zeros((n, 2))
    flagged = [False] * n
    for family, w in widening.items():
        train = [i for i, f in enumerate(families) if f != family]
        model = PhysicalModel(
            params=folds.params(train),
            target=target,
            time_log_halfwidth=w.time_log_halfwidth,
            energy_log_halfwidth=w.energy_log_halfwidth,
            level=level,
            basis=f"split conformal on leave-one-shape-out errors without {family}",
            **calibrated_range_fields([folds.samples[i] for i in train]),
            time_widening=EXTRAPOLATION_WIDENING if stated else w.time,
            energy_widening=EXTRAPOLATION_WIDENING if stated else w.energy,
            widening_basis="stated" if stated else w.basis,
        )
        for i, f in enumerate(families):
            if f == family:
                step = model.plan(folds.samples[i].profile)
                low[i] = step.time_low_s, step.energy_low_j
                high[i] = step.time_high_s, step.energy_high_j
                flagged[i] = bool(step.extrapolation)
    return PlannedIntervals(low, high, tuple(flagged), dict(widening))


def nested_widening(
    predict: Predictor,
    measured: np.ndarray,
    shapes: Sequence[str],
    families: Sequence[str],
    *,
    level: float = LEVEL,
    only_extrapolations: bool = True,
) -> dict[str, Widening]:
    """For each family, :func:`measure_widening` on the *other* families' samples only: what a
    model fitted without that family would carry, so scoring it on that family is out of sample.
    """
    out: dict[str, Widening] = {}
    for family in sorted(set(families)):
        train = [i for i, f in enumerate(families) if f != family]
        out[family] = measure_widening(
            predict,
            measured,
            shapes,
            families,
            train,
            level=level,
            only_extrapolations=only_extrapolations,
        )
    return out


def oof_line(x: np.ndarray, y: np.ndarray, groups: Sequence[str], loglog: bool) -> np.ndarray:
    """Out-of-fold predictions of a one-feature least-squares line (or log-log line)."""
    from sklearn.linear_model import LinearRegression

    out = np.zeros(len(y))
    xx = np.log(x) if loglog else x
    yy = np.log(y) if loglog else y
    for train, test in _folds(groups):
        line = LinearRegression().fit(xx[train, None], yy[train])
        p = line.predict(xx[test, None])
        out[test] = np.exp(p) if loglog else p
    # a line may predict <= 0 J for a small held-out config: floor it at a tiny positive value
    # so relative errors stay defined (it then scores -100 % error there, as it should)
    return np.maximum(out, 1e-12)


@dataclass(frozen=True)
class SharedRow:
    """One configuration for the evaluation: its groups, features and measurements."""

    id: str
    shape: str
    family: str
    flops: float
    tos: float
    time_s: float
    energy_j: float
    repeat_time_s: float | None
    repeat_energy_j: float | None


def evaluate(
    rows: Sequence[SharedRow],
    samples: Sequence[Sample],
    prior: PhysicalParams,
    *,
    extra: Sequence[Sample] = (),
    free: Collection[str] | None = None,
    splits: Sequence[str] = SPLITS,
    level: float = LEVEL,
    target: str = "h100-sxm",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every model on every split: scores and interval coverage, JSON-able.

    Ours' intervals leave one family out are :func:`planned_family_intervals` (what ``plan``
    gives a user, with the widening measured on the training families only); the JSON keeps,
    beside them, the coverage of the cross-conformal intervals every other row uses
    (``coverage_cross_conformal``) and of ``plan`` with the stated widening
    (``coverage_stated_widening``). On the other splits a held-out step outside its fold's
    calibrated range (``extrapolations`` counts them) is widened by the stated factor.
    """
    t = np.array([r.time_s for r in rows])
    e = np.array([r.energy_j for r in rows])
    flops = np.array([r.flops for r in rows])
    tos = np.array([r.tos for r in rows])
    folds = PhysicalFolds(samples, prior, extra=extra, free=free)
    result: dict[str, Any] = {"level": level, "n_configs": len(rows), "splits": {}}
    for split in splits:
        groups = [_group(r, split) for r in rows]
        if progress:
            progress(f"split {split}: {len(set(groups))} groups")
        preds: dict[str, dict[str, np.ndarray]] = {}
        ours = oof_groups(folds, groups, range(len(rows)))
        preds["ours"] = {"time": ours[:, 0], "energy": ours[:, 1]}
        for feature, x in (("flops", flops), ("tos", tos)):
            for form in ("linear", "loglog"):
                preds[f"{feature}-{form}"] = {
                    "time": oof_line(x, t, groups, form == "loglog"),
                    "energy": oof_line(x, e, groups, form == "loglog"),
                }
        table: dict[str, Any] = {}
        for model, by_target in preds.items():
            table[model] = {}
            for quantity, p in by_target.items():
                m = t if quantity == "time" else e
                low, high = cross_conformal(p, m, groups, level)
                table[model][quantity] = precision_scores(p, m, low, high)
        body: dict[str, Any] = {"groups": len(set(groups)), "models": table}
        flagged = np.zeros(len(rows), dtype=bool)
        for train, test in _folds(groups):
            flagged[test] = folds.outside(train.tolist(), test.tolist())
        body["extrapolations"] = int(flagged.sum())
        measured = np.stack([t, e], axis=1)
        shapes = [r.shape for r in rows]
        if split == "family" and len(set(groups)) >= 2:
            if progress:
                progress("nested widening: inner folds of each family's training families")
            variants: dict[str, PlannedIntervals] = {}
            for name, only in (("", True), ("_all_steps_widening", False)):
                nested = nested_widening(
                    folds, measured, shapes, groups, level=level, only_extrapolations=only
                )
                variants[name] = planned_family_intervals(
                    folds, measured, shapes, groups, target=target, level=level, widening=nested
                )
            variants["_stated_widening"] = planned_family_intervals(
                folds,
                measured,
                shapes,
                groups,
                target=target,
                level=level,
                widening=variants[""].widenings,
                stated=True,
            )
            g = np.asarray(groups)
            for k, quantity in enumerate(("time", "energy")):
                scores = table["ours"][quantity]
                scores["coverage_cross_conformal"] = scores["coverage"]
                for name, planned in variants.items():
                    scores["coverage" + name] = planned.coverage(measured[:, k], k)
                    scores["coverage_by_family" + name] = {
                        f: planned.coverage(measured[g == f, k], k, g == f)
                        for f in sorted(set(groups))
                    }
            body["widening"] = {
                family: {"time": w.time, "energy": w.energy, "basis": w.basis}
                for family, w in variants[""].widenings.items()
            }
            body["widening_all_steps"] = {
                family: {"time": w.time, "energy": w.energy, "basis": w.basis}
                for family, w in variants["_all_steps_widening"].widenings.items()
            }
        elif flagged.any():
            for k, quantity in enumerate(("time", "energy")):
                p = ours[:, k]
                low, high = cross_conformal(p, measured[:, k], groups, level)
                q = np.log(high / p) * np.where(flagged, EXTRAPOLATION_WIDENING, 1.0)
                inside = (p * np.exp(-q) <= measured[:, k]) & (measured[:, k] <= p * np.exp(q))
                table["ours"][quantity]["coverage"] = float(np.mean(inside))
        result["splits"][split] = body
        if split == "shape":
            result["oof_shape"] = {
                r.id: {"time_s": float(ours[i, 0]), "energy_j": float(ours[i, 1])}
                for i, r in enumerate(rows)
            }
    if len({r.family for r in rows}) >= 2:
        # what the model fitted on every configuration carries (fit_shared); the folds' fits
        # are cached, so after the shape and family splits this costs nothing more
        w = measure_widening(
            folds,
            np.stack([t, e], axis=1),
            [r.shape for r in rows],
            [r.family for r in rows],
            level=level,
        )
        result["widening_all"] = {"time": w.time, "energy": w.energy, "basis": w.basis}
    result["repeats"] = repeat_ceiling(rows)
    return result


def repeat_ceiling(rows: Sequence[SharedRow]) -> dict[str, Any]:
    """The repeat measurement scored as a prediction of the first: no model can do better."""
    out: dict[str, Any] = {}
    for target in ("time", "energy"):
        pairs = [
            (r.repeat_time_s, r.time_s) if target == "time" else (r.repeat_energy_j, r.energy_j)
            for r in rows
        ]
        kept = [(p, m) for p, m in pairs if p is not None]
        if kept:
            out[target] = precision_scores([p for p, _ in kept], [m for _, m in kept])
    return out


def _group(row: SharedRow, split: str) -> str:
    if split == "shape":
        return row.shape
    if split == "family":
        return row.family
    if split == "config":
        return row.id
    raise ValueError(
        f"evaluate: expected a split in {SPLITS}; found {split!r}; fix: use one of those"
    )


def params_table(fit: PhysicalFit) -> dict[str, Any]:
    """Every parameter a step of the data uses, with its value, unit, range and source: the
    fitted ones and the priors that enter these steps' predictions (``fit.used``). The others
    (``fit.unused()``, formats, units and curves no step ran) stay in the calibration file."""
    return {name: status.to_dict() for name, status in fit.status.items() if name in fit.used}


def unused_priors_line(count: int) -> str:
    """The printout's one line for the ``count`` parameters :func:`params_table` leaves out."""
    if not count:
        return "  (every parameter enters these steps' predictions)"
    return (
        f"  and {count} prior{'s' if count != 1 else ''} of formats, units or curves these "
        "steps never ran (kept in the file, used only for steps that run them: an "
        "extrapolation)"
    )


def render_markdown(result: Mapping[str, Any]) -> str:
    """The evaluation as Markdown tables (precision %, R^2, median / worst error, coverage)."""
    lines: list[str] = []
    for split, body in result["splits"].items():
        lines += [
            f"Leave one {split} out ({body['groups']} groups):",
            "",
            "| model | target | precision | R^2 | median err | worst err | 90 % coverage |",
            "|---|---|---|---|---|---|---|",
        ]
        for model, by_target in body["models"].items():
            for target, s in by_target.items():
                cov = "-" if s["coverage"] is None else f"{100 * s['coverage']:.0f} %"
                med, worst = 100 * s["median_rel_err"], 100 * s["worst_rel_err"]
                lines.append(
                    f"| {model} | {target} | {s['precision_pct']:.1f} % | {_r2_text(s['r2'])} | "
                    f"{med:.1f} % | {worst:.1f} % | {cov} |"
                )
        lines.append("")
        lines.append(f"Held-out steps labelled extrapolations: {body.get('extrapolations', 0)}.")
        for family, w in body.get("widening", {}).items():
            lines.append(
                f"- without {family}: widening x{w['time']:.2f} (time), x{w['energy']:.2f} "
                f"(energy), {w['basis']}"
            )
        ours = body["models"].get("ours", {})
        for target, s in ours.items():
            if "coverage_cross_conformal" in s:
                lines.append(
                    f"- ours {target} coverage: {100 * s['coverage']:.0f} % as planned (measured "
                    f"widening), {100 * s['coverage_all_steps_widening']:.0f} % widened by all "
                    f"held-out steps' errors, {100 * s['coverage_stated_widening']:.0f} % with the "
                    f"stated x2, {100 * s['coverage_cross_conformal']:.0f} % cross-conformal; "
                    f"by family {s['coverage_by_family']}"
                )
        lines.append("")
    rep = result.get("repeats", {})
    if rep:
        lines += ["Repeat measurements (the ceiling):", ""]
        for target, s in rep.items():
            lines.append(
                f"- {target}: precision {s['precision_pct']:.1f} %, median "
                f"{100 * s['median_rel_err']:.1f} %, worst {100 * s['worst_rel_err']:.1f} % "
                f"({int(s['n'])} configurations)"
            )
        lines.append("")
    return "\n".join(lines)


@dataclass(frozen=True)
class SharedFit:
    """The physical model fitted on the shared data, with its cross-validated intervals.

    Args:
        model: the calibrated model (parameters, range, interval half widths).
        fit: the fit on every configuration plus the microbenchmarks.
        oof: leave-one-shape-out (time_s, energy_j) per configuration.
        scores: leave-one-shape-out scores of ``oof`` (``"time"``, ``"energy"``).
        ids: the configurations, in the order of ``oof``.
    """

    model: PhysicalModel
    fit: PhysicalFit
    oof: np.ndarray
    scores: Mapping[str, Any]
    ids: tuple[str, ...]


def fit_shared(
    path: str | os.PathLike[str],
    *,
    hardware: str = "h100-sxm",
    level: float = LEVEL,
    ids: Collection[str] | None = None,
    free: Collection[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> SharedFit:
    """Fit the physical model on the shared training steps and size its intervals.

    Counts every configuration (or those in ``ids``) for ``hardware``, fits on them plus the
    matmul microbenchmarks, and sizes the ``level`` intervals from leave-one-shape-out errors
    (split conformal on the held-out shapes' log errors), and their widening for extrapolations
    from leave-one-family-out errors (:func:`measure_widening`; in sample for this model: its
    held-out score is the evaluation's nested one).
    """
    from lightning_to_energy.hardware.specs import find_hardware
    from lightning_to_energy.model import prior_for
    from lightning_to_energy.study.shared_data import (
        load_shared_data,
        microbenchmark_samples,
        shared_samples,
    )

    data = load_shared_data(path)
    if progress:
        n = len(data.configs) if ids is None else len(ids)
        progress(f"counting {n} training steps as {hardware} runs them...")
    pairs = shared_samples(data, hardware, ids)
    configs, samples = [c for c, _ in pairs], [s for _, s in pairs]
    extra = microbenchmark_samples(data)
    prior = prior_for(find_hardware(hardware))
    if progress:
        also = f" and {len(extra)} microbenchmark windows" if extra else ""
        progress(f"fitting the physical model on {len(samples)} steps{also}...")
    fit = fit_physical(samples + extra, prior, free=free)
    groups = [c.shape for c in configs]
    families = [c.family for c in configs]
    if progress:
        progress(f"scoring it: leave one shape out ({len(set(groups))} shapes, a fit each)...")
    folds = PhysicalFolds(samples, prior, extra=extra, free=free)
    oof = oof_groups(folds, groups, range(len(samples)))
    t = np.array([c.time_s for c in configs])
    e = np.array([c.energy_j for c in configs])
    if progress:
        k = len(set(families))
        progress(
            "measuring the extrapolation widening (leave one family out, "
            f"{k} famil{'y' if k == 1 else 'ies'})..."
        )
    widening = measure_widening(
        folds, np.stack([t, e], axis=1), groups, families, level=level, shape_oof=oof
    )
    qt, qe = widening.time_log_halfwidth, widening.energy_log_halfwidth
    model = PhysicalModel(
        params=fit.params,
        target=hardware,
        time_log_halfwidth=qt,
        energy_log_halfwidth=qe,
        level=level,
        basis=(
            f"split conformal on leave-one-shape-out errors of {len(samples)} configurations "
            f"({len(set(groups))} shapes)"
        ),
        **calibrated_range_fields(samples),
        source=data.source,
        time_widening=widening.time,
        energy_widening=widening.energy,
        widening_basis=widening.basis,
    )
    scores = {"time": precision_scores(oof[:, 0], t), "energy": precision_scores(oof[:, 1], e)}
    return SharedFit(model, fit, oof, scores, tuple(c.id for c in configs))
