"""Prequential accuracy: each window scored by the prediction made before it was measured."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Accuracy", "Aggregates", "prequential_accuracy"]


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


class Aggregates:
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
        """Add one (predicted, measured) pair."""
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
        """The figures of the pairs so far, with their ``median`` relative error."""
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
        """The sums as plain values (a model's state)."""
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Aggregates:
        """Inverse of :meth:`to_dict`."""
        agg = cls()
        for key in agg.__dict__:
            setattr(agg, key, int(d[key]) if key == "n" else float(d[key]))
        return agg


def prequential_accuracy(
    rec_p: Iterable[float], rec_m: Iterable[float], agg: Aggregates, recent: int
) -> Accuracy:
    """Accuracy over the run (``agg``, exact) and over the last ``recent`` of the kept
    (predicted, measured) pairs ``rec_p``, ``rec_m`` (medians come from the kept pairs).

    Raises:
        ValueError: ``recent`` < 1.
    """
    rec_p, rec_m = list(rec_p), list(rec_m)
    if recent < 1:
        raise ValueError(f"recent: expected an int >= 1, found {recent!r}; fix: use e.g. 10.")
    rel = [abs(p - m) / m for p, m in zip(rec_p, rec_m, strict=True)]
    a = agg
    median = float(np.median(rel)) if rel else math.nan
    whole = a.accuracy(median)
    tail_p = list(rec_p)[-recent:]
    tail_m = list(rec_m)[-recent:]
    tail = Aggregates()
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
