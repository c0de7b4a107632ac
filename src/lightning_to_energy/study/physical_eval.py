"""Cross-validated evaluation of the physical step model on the shared H100 measurements.

Splits (scikit-learn's ``LeaveOneGroupOut``): leave one *shape* out (groups = family x depth x
width, the activations of a shape held out together), leave one *family* out, and leave one
*configuration* out (for reference only: a configuration's siblings of other activations
predict it almost perfectly). Models: ours (the physical model, time and energy), FLOPs-only
and TOs-only least-squares lines (linear and log-log), and the data's repeat measurements as
the ceiling. Scores (:func:`~lightning_to_energy.model.scoring.score_pairs`): precision = 100 x
(1 - MAPE), R^2, median and worst relative error; and the coverage of cross-conformal 90 %
intervals (each held-out configuration's interval is sized from the held-out errors of the
*other* groups only).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from lightning_to_energy.model.physical import PhysicalModel, PhysicalParams, predict_steps
from lightning_to_energy.model.physical_fit import (
    PhysicalFit,
    Sample,
    calibrated_range,
    fit_physical,
)
from lightning_to_energy.model.scoring import score_pairs

__all__ = [
    "LEVEL",
    "SPLITS",
    "SharedFit",
    "SharedRow",
    "conformal_halfwidth",
    "cross_conformal",
    "evaluate",
    "fit_shared",
    "oof_line",
    "oof_physical",
    "params_table",
    "physical_predictions",
    "precision_scores",
    "render_markdown",
    "repeat_ceiling",
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
    out: dict[str, float | None] = {
        "n": float(len(m)),
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


def oof_physical(
    samples: Sequence[Sample],
    groups: Sequence[str],
    prior: PhysicalParams,
    *,
    extra: Sequence[Sample] = (),
    free: Collection[str] | None = None,
) -> np.ndarray:
    """Out-of-fold (time_s, energy_j) of each sample, fitted on the other groups plus ``extra``."""
    out = np.zeros((len(samples), 2))
    for train, test in _folds(groups):
        fit = fit_physical([samples[i] for i in train] + list(extra), prior, free=free)
        out[test] = physical_predictions(fit.params, [samples[i] for i in test])
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
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every model on every split: scores and interval coverage, JSON-able."""
    t = np.array([r.time_s for r in rows])
    e = np.array([r.energy_j for r in rows])
    flops = np.array([r.flops for r in rows])
    tos = np.array([r.tos for r in rows])
    result: dict[str, Any] = {"level": level, "n_configs": len(rows), "splits": {}}
    for split in splits:
        groups = [_group(r, split) for r in rows]
        if progress:
            progress(f"split {split}: {len(set(groups))} groups")
        preds: dict[str, dict[str, np.ndarray]] = {}
        ours = oof_physical(samples, groups, prior, extra=extra, free=free)
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
            for target, p in by_target.items():
                m = t if target == "time" else e
                low, high = cross_conformal(p, m, groups, level)
                table[model][target] = precision_scores(p, m, low, high)
        result["splits"][split] = {"groups": len(set(groups)), "models": table}
        if split == "shape":
            result["oof_shape"] = {
                r.id: {"time_s": float(ours[i, 0]), "energy_j": float(ours[i, 1])}
                for i, r in enumerate(rows)
            }
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
    """Every parameter a step of the data uses, with its value, unit, range and source."""
    return {
        name: status.to_dict()
        for name, status in fit.status.items()
        if not status.reason.startswith("held fixed")
    }


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
    (split conformal on the held-out shapes' log errors).
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
        progress(f"counting {len(data.configs) if ids is None else len(ids)} steps for {hardware}")
    pairs = shared_samples(data, hardware, ids)
    configs, samples = [c for c, _ in pairs], [s for _, s in pairs]
    extra = microbenchmark_samples(data)
    prior = prior_for(find_hardware(hardware))
    if progress:
        progress("fitting")
    fit = fit_physical(samples + extra, prior, free=free)
    groups = [c.shape for c in configs]
    if progress:
        progress(f"leave one shape out ({len(set(groups))} shapes)")
    oof = oof_physical(samples, groups, prior, extra=extra, free=free)
    t = np.array([c.time_s for c in configs])
    e = np.array([c.energy_j for c in configs])
    qt = conformal_halfwidth(np.log(t / oof[:, 0]), level)
    qe = conformal_halfwidth(np.log(e / oof[:, 1]), level)
    formats, flops_range, kernels_range = calibrated_range(samples)
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
        formats=formats,
        flops_range=flops_range,
        kernels_range=kernels_range,
        source=data.source,
    )
    scores = {"time": precision_scores(oof[:, 0], t), "energy": precision_scores(oof[:, 1], e)}
    return SharedFit(model, fit, oof, scores, tuple(c.id for c in configs))
