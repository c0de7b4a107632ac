"""The energy model's solver: a relative-error, non-negative ridge fit, and its diagnostics."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lightning_to_energy.notices import warn as notify

__all__ = [
    "CONDITION_LIMIT",
    "FitDiagnostics",
    "diagnose",
    "scaled_design",
    "solve",
    "warm_up_solver",
]

# Belsley, Kuh & Welsch (1980): a scaled condition index above 30 marks strong collinearity.
CONDITION_LIMIT = 30.0


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


def scaled_design(
    x: Sequence[tuple[float, ...]], y: Sequence[float], w: Sequence[float], p: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Relative-error design with unit-RMS columns.

    Returns:
        B (n, p): x_ij / y_i / s_j; w (n,): window weights; s (p,): column scales (1 for
        unused columns); used (p,): columns non-zero in some window.
    """
    X = np.array(x, dtype=float).reshape(len(y), p)  # (n, p)
    y_ = np.array(y, dtype=float)  # (n,)
    w_ = np.array(w, dtype=float)  # (n,)
    # Dividing row i by y_i turns squared error into squared relative error: (x_i.c - y_i)/y_i.
    A = X / y_[:, None]  # (n, p)
    wsum = float(w_.sum()) if len(w_) else 1.0
    # s_j = sqrt(sum_i w_i A_ij^2 / sum_i w_i): a unit-RMS column for every used feature, so
    # the scaled coefficient z_j = c_j * s_j is roughly feature j's share of the energy.
    s = np.sqrt((w_[:, None] * A**2).sum(axis=0) / wsum)  # (p,)
    used = s > 0
    s = np.where(used, s, 1.0)
    return A / s, w_, s, used


def solve(
    B: np.ndarray, w: np.ndarray, s: np.ndarray, prior: np.ndarray, strength: float
) -> np.ndarray | None:
    """The coefficients (physical units) of the relative-error fit of :func:`scaled_design`'s
    ``B, w, s``, ridge-pulled toward ``prior`` with ``strength``; None when the solver fails
    (a warning says so, and the caller keeps its previous coefficients)."""
    p = len(prior)
    z0 = prior * s  # prior in scaled units, (p,)
    # Ridge toward the prior as p extra rows: sqrt(lam) * (z - z0) = 0. The rows keep the
    # problem a non-negative least squares, so positive=True still applies.
    design = np.vstack([B, np.eye(p)])  # (n + p, p)
    target = np.concatenate([np.ones(len(w)), z0])  # (n + p,)
    weight = np.concatenate([w, np.full(p, strength)])  # (n + p,)
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
        notify(
            f"energy model: the refit on {len(w)} windows failed ({exc}); expected a "
            "solvable non-negative least squares, keeping the previous coefficients. Fix: "
            "report this with the model's state_dict().",
            stacklevel=4,
        )
        return None
    return np.asarray(coef, dtype=float) / s  # back to physical units


def diagnose(
    names: tuple[str, ...], n: int, design: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
) -> FitDiagnostics:
    """Identifiability of a fit over ``n`` windows whose :func:`scaled_design` is ``design``."""
    if n == 0:
        return FitDiagnostics(0, 0, math.nan, False, names, ())
    B, w, _, used = design
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
