"""The one scorer of predictions against measurements: precision, MAPE, R^2, median, worst.

"Precision" is ``100 * (1 - mean relative error)`` (the paper does not define it; this project
reports this and says so). R^2 is None where it is undefined (fewer than two pairs, or constant
measurements): never NaN, so that every figure is valid JSON.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["score_pairs"]


def score_pairs(pairs: Sequence[tuple[float, float]]) -> dict[str, float | int | None]:
    """Figures of ``(predicted, measured)`` pairs: n, precision_pct, mape, r2, median and worst.

    Raises:
        ValueError: no pairs, or a measurement <= 0.
    """
    if not pairs:
        raise ValueError("score: expected at least one (predicted, measured) pair, found none.")
    p = np.array([a for a, _ in pairs], dtype=float)  # (n,)
    m = np.array([b for _, b in pairs], dtype=float)  # (n,)
    if not bool(np.all(m > 0)):
        raise ValueError(f"score: expected measurements > 0, found {m.min()!r}.")
    rel = np.abs(p - m) / m  # (n,)
    ss_tot = float(np.sum((m - m.mean()) ** 2))
    r2 = 1.0 - float(np.sum((m - p) ** 2)) / ss_tot if len(m) >= 2 and ss_tot > 0 else None
    mape = float(rel.mean())
    return {
        "n": len(pairs),
        "precision_pct": 100.0 * (1.0 - mape),
        "mape": mape,
        "r2": r2,
        "median_rel_err": float(np.median(rel)),
        "worst_rel_err": float(rel.max()),
    }
