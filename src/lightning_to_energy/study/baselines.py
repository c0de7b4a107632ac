"""The models of joules per step the study compares.

- ``tos-linear`` / ``flops-linear``: ``E = a * x + b`` with ``a, b >= 0`` (the paper's form);
- ``tos-loglog`` / ``flops-loglog``: ``log E = alpha + beta * log x`` (least squares in logs);
- ``ours``: ``E = P * roofline_s + sum_k c_k * f_k`` over TOs by unit and format, bytes moved and
  kernels, every coefficient >= 0; needs no measurement of the run it predicts;
- ``ours-measured-time``: the same with the measured step duration instead of the roofline
  estimate (needs a measurement: the upper reference).

Every linear model is fitted by minimising the squared *relative* error, so the comparison is about
features, not loss.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import numpy as np

from lightning_to_energy.model.regression import OnlineEnergyModel
from lightning_to_energy.study.runs import StudyRun, check_one_hardware

__all__ = [
    "MODELS",
    "OURS_FEATURES",
    "OURS_MEASURED_FEATURES",
    "LinearModel",
    "LogLogModel",
    "NotFittableError",
    "OursModel",
    "ScalingModel",
    "fit_calibration_model",
]

OURS_FEATURES: tuple[str, ...] = (
    "roofline_s",
    # One coefficient per matrix format group: on an H100 a TF32 FLOP cost about twice a bf16
    # one (2.0 vs 1.03 pJ) where the transistor counts give about 1.5x (DESIGN.md), so TF32 and
    # 16-bit TOs need their own joules per TO.
    "tos_matrix_full",
    "tos_matrix_tf32",
    "tos_matrix_low",
    "tos_vector",
    "bytes",
    "kernels",
    # NB: a fixed cost per step ("steps", J/step: host framework work no roofline sees) was
    # tried: on the CPU small grid (2026-11-25) it lowered held-out precision (leave one
    # configuration out 76.9 -> 72.0 %, leave one family out 76.4 -> 68.3 %), so it is not
    # in the default model; `fit --features` can still use it on reports.
)
OURS_MEASURED_FEATURES: tuple[str, ...] = ("duration_s", *OURS_FEATURES[1:])


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------


class NotFittableError(ValueError):
    """A model cannot be fitted on the given training runs (the message says why)."""


class ScalingModel(ABC):
    """A model of joules per training step from a run's per-step features.

    Attributes:
        name: the model's key in :data:`MODELS`.
        formula: one line for the results table.
        inputs: the run features it reads (see :meth:`StudyRun.feature`).
        n_params: free parameters; fitting needs at least ``n_params + 1`` runs.
        needs_measurement: it reads a measured quantity of the run it predicts.
    """

    name: str
    formula: str
    inputs: tuple[str, ...]
    n_params: int
    needs_measurement: bool = False

    def unusable(self, run: StudyRun) -> str | None:
        """Why this model cannot read ``run`` (None when it can)."""
        missing = [f for f in self.inputs if run.feature(f) is None]
        if missing:
            return f"run {run.id} lacks {', '.join(missing)}"
        return None

    def _check_training(self, runs: Sequence[StudyRun]) -> None:
        if len(runs) < self.n_params + 1:
            raise NotFittableError(
                f"{len(runs)} training run(s), {self.name} needs at least {self.n_params + 1} "
                f"({self.n_params} parameters + 1)"
            )
        for run in runs:
            reason = self.unusable(run)
            if reason:
                raise NotFittableError(reason)

    @abstractmethod
    def fit(self, runs: Sequence[StudyRun]) -> None:
        """Fit on ``runs``.

        Raises:
            NotFittableError: too few runs, or runs the model cannot read.
        """

    @abstractmethod
    def predict(self, run: StudyRun) -> float:
        """Predicted joules per training step of ``run``.

        Raises:
            RuntimeError: called before :meth:`fit`.
        """


class LinearModel(ScalingModel):
    """``E = a * x + b`` with ``a, b >= 0``, fitted by minimising sum ((pred - E) / E)^2.

    Args:
        feature: the run feature ``x`` (``"tos"``, ``"flops"``, ...).
        name: the model's name.
        label: how ``x`` reads in the formula (``"TOs"``).
    """

    n_params = 2

    def __init__(self, feature: str, name: str, label: str) -> None:
        self.name = name
        self.inputs = (feature,)
        self.formula = f"E = a·{label} + b (a, b ≥ 0; relative-error fit)"
        self.coefficients: tuple[float, float] | None = None  # (a in J/unit, b in J)

    def fit(self, runs: Sequence[StudyRun]) -> None:
        """Non-negative least squares on the relative error (sample weights 1 / E^2)."""
        self._check_training(runs)
        from sklearn.linear_model import LinearRegression  # slow import: only when fitting

        x = np.array([float(r.feature(self.inputs[0]) or 0.0) for r in runs])  # (n,)
        y = np.array([r.energy_j for r in runs])  # (n,)
        X = np.column_stack([x, np.ones_like(x)])  # (n, 2): slope and intercept columns
        # Columns of ~1e15 TOs next to ones: scale each to max 1 so NNLS is well conditioned.
        scale = np.max(np.abs(X), axis=0)  # (2,)
        scale = np.where(scale > 0, scale, 1.0)
        reg = LinearRegression(positive=True, fit_intercept=False)
        # Weight 1 / E^2 turns (a x + b - E)^2 into ((a x + b - E) / E)^2.
        reg.fit(X / scale, y, sample_weight=1.0 / y**2)
        a, b = (np.asarray(reg.coef_, dtype=float) / scale).tolist()
        self.coefficients = (float(a), float(b))

    def predict(self, run: StudyRun) -> float:
        """``a * x + b``."""
        if self.coefficients is None:
            raise RuntimeError(f"{self.name}: expected fit() before predict(); fix: fit it first.")
        a, b = self.coefficients
        return a * float(run.feature(self.inputs[0]) or 0.0) + b


class LogLogModel(ScalingModel):
    """``log E = alpha + beta * log x`` by ordinary least squares in logs (a power law).

    NB: the back-transformed prediction ``exp(alpha) * x ** beta`` is the geometric mean (the
    median under log-normal errors), with no smearing correction (Duan 1983): that would scale
    every prediction up by the mean of ``exp(residual)``, which for residuals symmetric in logs
    raises the mean relative error that "precision" is made of.

    Args:
        feature: the run feature ``x``; it must be > 0.
        name: the model's name.
        label: how ``x`` reads in the formula.
    """

    n_params = 2

    def __init__(self, feature: str, name: str, label: str) -> None:
        self.name = name
        self.inputs = (feature,)
        self.formula = f"log E = α + β·log {label} (least squares in logs)"
        self.coefficients: tuple[float, float] | None = None  # (alpha, beta)

    def unusable(self, run: StudyRun) -> str | None:
        """Also unusable when the feature is 0 (its log is undefined)."""
        reason = super().unusable(run)
        if reason is None and not (run.feature(self.inputs[0]) or 0.0) > 0:
            return f"run {run.id} has {self.inputs[0]} = 0 (log undefined)"
        return reason

    def fit(self, runs: Sequence[StudyRun]) -> None:
        """Least squares of ``log E`` on ``[1, log x]``."""
        self._check_training(runs)
        lx = np.log([float(r.feature(self.inputs[0]) or 0.0) for r in runs])  # (n,)
        ly = np.log([r.energy_j for r in runs])  # (n,)
        if float(np.ptp(lx)) == 0.0:
            raise NotFittableError(f"every training run has the same {self.inputs[0]}")
        A = np.column_stack([np.ones_like(lx), lx])  # (n, 2)
        (alpha, beta), *_ = np.linalg.lstsq(A, ly, rcond=None)
        self.coefficients = (float(alpha), float(beta))

    def predict(self, run: StudyRun) -> float:
        """``exp(alpha) * x ** beta``."""
        if self.coefficients is None:
            raise RuntimeError(f"{self.name}: expected fit() before predict(); fix: fit it first.")
        alpha, beta = self.coefficients
        return math.exp(alpha + beta * math.log(float(run.feature(self.inputs[0]) or 0.0)))


class OursModel(ScalingModel):
    """``E = P * t + sum_k c_k * f_k``, every coefficient >= 0, relative-error weighted.

    ``t`` is ``roofline_s`` (a prediction needing no measurement) or the measured ``duration_s``
    (the upper reference); ``f`` are TOs on matrix units in full (fp64/fp32) and reduced formats,
    TOs on vector units, bytes moved and kernels. The fit is the project's
    :class:`~lightning_to_energy.model.regression.OnlineEnergyModel` (non-negative, relative-error
    weighted, with its weak ridge prior), so the calibration it yields is the one ``predict``
    applies.

    Args:
        measured_time: use the measured step duration instead of the roofline estimate.
    """

    n_params = len(OURS_FEATURES)

    def __init__(self, measured_time: bool = False) -> None:
        self.needs_measurement = measured_time
        self.inputs = OURS_MEASURED_FEATURES if measured_time else OURS_FEATURES
        self.name = "ours-measured-time" if measured_time else "ours"
        t = "duration_s (measured)" if measured_time else "roofline_s"
        self.formula = (
            f"E = P·{t} + Σ c_k·f_k, f: TOs matrix fp32/tf32/16-bit, TOs vector, bytes, "
            "kernels (all ≥ 0; relative-error fit)"
        )
        self.energy_model: OnlineEnergyModel | None = None

    def features_of(self, run: StudyRun) -> dict[str, float]:
        """The model's input vector for ``run``, by feature name."""
        return {f: float(run.feature(f) or 0.0) for f in self.inputs}

    def fit(self, runs: Sequence[StudyRun], *, prequential: bool = False) -> None:
        """Fit an :class:`OnlineEnergyModel` on ``runs``.

        Args:
            runs: the training runs.
            prequential: feed them with ``update()`` one by one (the model then keeps them as
                its own windows, as a calibration needs; one refit per run) instead of one
                ``seed()`` at full weight (one refit; the same coefficients).
        """
        self._check_training(runs)
        model = OnlineEnergyModel(self.inputs, history=len(runs))
        rows = [(self.features_of(r), r.energy_j) for r in runs]
        if prequential:
            for x, e in rows:
                model.update(x, e)
        else:
            # weight 1.0: the same weighted problem as update() gives, solved once, not n times.
            model.seed(rows, weight=1.0)
        self.energy_model = model

    def predict(self, run: StudyRun) -> float:
        """The fitted model's prediction for ``run``'s features."""
        if self.energy_model is None:
            raise RuntimeError(f"{self.name}: expected fit() before predict(); fix: fit it first.")
        energy = self.energy_model.predict(self.features_of(run)).energy_j
        if energy is None:  # pragma: no cover - a fitted model always predicts
            raise RuntimeError(f"{self.name}: the fitted model gave no prediction")
        return float(energy)


MODELS: dict[str, Callable[[], ScalingModel]] = {
    "tos-linear": lambda: LinearModel("tos", "tos-linear", "TOs"),
    "tos-loglog": lambda: LogLogModel("tos", "tos-loglog", "TOs"),
    "flops-linear": lambda: LinearModel("flops", "flops-linear", "FLOPs"),
    "flops-loglog": lambda: LogLogModel("flops", "flops-loglog", "FLOPs"),
    "ours": lambda: OursModel(measured_time=False),
    "ours-measured-time": lambda: OursModel(measured_time=True),
}


def fit_calibration_model(runs: Sequence[StudyRun]) -> OnlineEnergyModel:
    """The ``ours`` model fitted on every run: the calibration ``fit`` writes, ``predict`` applies.

    The runs are fed with ``update()`` in order, so the model holds them as its own windows
    (what :meth:`Calibration.from_model` stores) and its prequential accuracy covers them.

    Args:
        runs: measured study runs (one hardware).

    Raises:
        ValueError: no runs, runs from several hardware keys, or too few runs to fit the
            model's parameters (the message says how many are needed).
    """
    check_one_hardware(runs)
    model = OursModel()
    try:
        model.fit(runs, prequential=True)
    except NotFittableError as exc:
        raise ValueError(
            f"calibration: expected runs the 'ours' model can be fitted on, found {exc}; fix: "
            "run more study configurations (or ones with a roofline_s)."
        ) from None
    assert model.energy_model is not None
    return model.energy_model
