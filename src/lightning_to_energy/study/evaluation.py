"""The energy scaling-law evaluation: which per-step features predict a training step's joules.

Reads the study's run JSONs (one per configuration, written by ``study.py``; format in
``docs/dev/CONTRACTS.md``), fits competing models of joules per step and scores them on held-out
configurations:

- ``tos-linear`` / ``flops-linear``: ``E = a * x + b`` with ``a, b >= 0`` (the paper's form);
- ``tos-loglog`` / ``flops-loglog``: ``log E = alpha + beta * log x`` (least squares in logs);
- ``ours``: ``E = P * roofline_s + sum_k c_k * f_k`` over TOs by unit and format, bytes moved and
  kernels, every coefficient >= 0; needs no measurement of the run it predicts;
- ``ours-measured-time``: the same with the measured step duration instead of the roofline
  estimate (needs a measurement: the upper reference).

Every linear model is fitted by minimising the squared *relative* error, so the comparison is about
features, not loss. "Precision" is ``100 * (1 - mean relative error)`` (the paper does not define
it; this project reports this and says so), next to R^2 and the median and worst relative error.

Splits: ``within-family`` (leave one configuration out, train on the rest of its family),
``config`` (leave one configuration out, train on every other run), ``family`` (leave one family
out, train on the others) and ``in-sample`` (fit on everything: a reference, not a prediction).

Nothing here imports rich or matplotlib; rendering lives in :mod:`scaling_report`.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lightning_to_energy.model.regression import OnlineEnergyModel

__all__ = [
    "DESIGN_KNOBS",
    "MODELS",
    "OURS_FEATURES",
    "OURS_MEASURED_FEATURES",
    "PER_STEP_KEYS",
    "RESULTS_FORMAT",
    "RESULTS_VERSION",
    "RUN_FORMAT",
    "RUN_SUFFIX",
    "RUN_VERSION",
    "SPLITS",
    "DesignEffect",
    "Goal",
    "LinearModel",
    "LogLogModel",
    "ModelInfo",
    "NotFittableError",
    "OursModel",
    "PredictionRow",
    "RunInfo",
    "ScalingModel",
    "Score",
    "StudyResults",
    "StudyRun",
    "Verdict",
    "design_effects",
    "evaluate",
    "fit_calibration_model",
    "goals",
    "load_runs",
    "score_pairs",
    "verdict",
]

RUN_FORMAT = "lightning-to-energy/study-run"
RUN_VERSION = 1
RUN_SUFFIX = ".run.json"
RESULTS_FORMAT = "lightning-to-energy/scaling-results"
RESULTS_VERSION = 1

# The per-step scalars every run JSON carries (CONTRACTS.md, "Study run JSON").
PER_STEP_KEYS: tuple[str, ...] = (
    "tos",
    "flops",
    "tos_matrix_full",
    "tos_matrix_reduced",
    "tos_vector",
    "bytes",
    "kernels",
    "roofline_s",
)
# roofline_s may be null: the study ran on hardware the roofline table does not know.
_NULLABLE_PER_STEP = frozenset({"roofline_s"})

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

SPLIT_WITHIN_FAMILY = "within-family"
SPLIT_CONFIG = "config"
SPLIT_FAMILY = "family"
SPLIT_IN_SAMPLE = "in-sample"
SPLITS: dict[str, str] = {
    SPLIT_WITHIN_FAMILY: "leave one configuration out, trained on its own family only",
    SPLIT_CONFIG: "leave one configuration out, trained on every other run",
    SPLIT_FAMILY: "leave one family out, trained on the other families",
    SPLIT_IN_SAMPLE: "fitted on every run: a reference, not a prediction",
}
DEFAULT_SPLITS: tuple[str, ...] = (SPLIT_WITHIN_FAMILY, SPLIT_CONFIG, SPLIT_FAMILY)

# The project's goals for "ours" on held-out configurations (issue 5).
GOAL_WITHIN_FAMILY_PCT = 99.0
GOAL_ACROSS_FAMILIES_PCT = 95.0


# ----------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyRun:
    """One measured configuration of the study, per training step.

    Attributes:
        id: the configuration id, e.g. ``"mlp-digits-w256-d4-relu-fp32"``.
        family: ``"mlp"``, ``"cnn"``, ``"transformer"``, ...
        dataset: the data set the configuration trained on.
        dtype: ``"fp32"`` or ``"bf16"`` (autocast).
        config: the whole ``config`` object of the run JSON (the family's knobs).
        features: the numeric ``per_step`` scalars (tos, flops, tos_matrix_full, ..., roofline_s);
            a null ``roofline_s`` is left out.
        energy_j: measured joules per training step (> 0).
        duration_s: measured seconds per training step (> 0).
        hardware: the hardware key, e.g. ``"h100-sxm"``.
        path: the file the run was read from (None for runs built in memory).
        kind: the weakest sensor kind behind ``energy_j`` (``"counter"``,
            ``"power-integration"``, ``"estimate"``, ...; ``"unknown"`` when not recorded).
    """

    id: str
    family: str
    dataset: str
    dtype: str
    config: Mapping[str, Any]
    features: Mapping[str, float]
    energy_j: float
    duration_s: float
    hardware: str
    path: Path | None = None
    kind: str = "unknown"

    def __post_init__(self) -> None:
        for name in ("energy_j", "duration_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise _fail(
                    f"study run {self.id!r}: {name}",
                    "a finite number > 0 (per training step)",
                    value,
                    "leave unmeasured runs out (load_runs skips them)",
                )

    def feature(self, name: str) -> float | None:
        """A model input by name: ``duration_s`` is the measured step time, anything else a
        ``per_step`` scalar; None when the run lacks it."""
        if name == "duration_s":
            return self.duration_s
        if name == "steps":
            return 1.0  # every figure of a run is per step
        return self.features.get(name)


def _fail(where: str, expected: str, found: Any, fix: str) -> ValueError:
    return ValueError(f"{where}: expected {expected}, found {found!r}; fix: {fix}.")


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _section(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = data.get(key)
    if not isinstance(value, Mapping):
        raise _fail(
            f"{where}: field {key!r}",
            "a JSON object",
            value if key in data else "<missing>",
            f"rewrite the run with `lightning-to-energy study` ({RUN_FORMAT} v{RUN_VERSION})",
        )
    return value


def _text_field(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise _fail(
            f"{where}: field {key!r}",
            "a non-empty string",
            value if key in data else "<missing>",
            "rewrite the run with `lightning-to-energy study`",
        )
    return value


def _parse_run(data: Any, where: str, path: Path | None) -> StudyRun | None:
    """One run JSON object -> StudyRun; None (with a warning) when it holds no measurement."""
    if not isinstance(data, Mapping):
        raise _fail(where, "a JSON object", type(data).__name__, "pass a *.run.json file")
    if data.get("format") != RUN_FORMAT:
        raise _fail(
            f"{where}: field 'format'",
            repr(RUN_FORMAT),
            data.get("format", "<missing>"),
            "pass a study run JSON written by `lightning-to-energy study`",
        )
    if data.get("version") != RUN_VERSION:
        raise _fail(
            f"{where}: field 'version'",
            f"{RUN_VERSION}",
            data.get("version", "<missing>"),
            "rerun the study with this version of lightning-to-energy, or read the run with the "
            "version that wrote it",
        )
    config = _section(data, "config", where)
    run_id = _text_field(config, "id", f"{where}: config")
    family = _text_field(config, "family", f"{where}: config")
    dataset = _text_field(config, "dataset", f"{where}: config")
    dtype = _text_field(config, "dtype", f"{where}: config")
    hardware = _text_field(_section(data, "hardware", where), "key", f"{where}: hardware")

    per_step = _section(data, "per_step", where)
    features: dict[str, float] = {}
    for key in PER_STEP_KEYS:
        raw = per_step.get(key)
        if raw is None and key in _NULLABLE_PER_STEP and key in per_step:
            continue
        value = _as_number(raw)
        if value is None or value < 0:
            raise _fail(
                f"{where}: per_step.{key}",
                "a finite number >= 0" + (" (or null)" if key in _NULLABLE_PER_STEP else ""),
                raw if key in per_step else "<missing>",
                "rerun this configuration with `lightning-to-energy study` (it counts one step)",
            )
        features[key] = value
    # Extra numeric scalars (a later study may add features) ride along; mappings do not.
    for key, raw in per_step.items():
        value = _as_number(raw)
        if key not in features and value is not None:
            features[str(key)] = value

    measured = _section(data, "measured", where)
    raw_energy = measured.get("energy_per_step_j")
    if raw_energy is None:
        warnings.warn(
            f"{where}: skipped: measured.energy_per_step_j is "
            f"{'null' if 'energy_per_step_j' in measured else 'missing'} (no fit-worthy window "
            "was measured). Fix: rerun this configuration longer, or with a readable sensor.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    energy = _as_number(raw_energy)
    if energy is None or energy <= 0:
        raise _fail(
            f"{where}: measured.energy_per_step_j",
            "a finite number of joules > 0",
            raw_energy,
            "rerun this configuration (a zero or negative reading means a sensor fault), or "
            "delete the file",
        )
    duration = _as_number(measured.get("duration_per_step_s"))
    if duration is None:
        total_s = _as_number(measured.get("duration_s"))
        steps = _as_number(measured.get("steps"))
        if total_s is not None and steps is not None and steps > 0:
            duration = total_s / steps
    if duration is None or duration <= 0:
        raise _fail(
            f"{where}: measured.duration_per_step_s",
            "a finite number of seconds > 0 (or measured.duration_s and measured.steps)",
            measured.get("duration_per_step_s", "<missing>"),
            "rerun this configuration with `lightning-to-energy study`",
        )
    return StudyRun(
        id=run_id,
        family=family,
        dataset=dataset,
        dtype=dtype,
        config=dict(config),
        features=features,
        energy_j=energy,
        duration_s=duration,
        hardware=hardware,
        path=path,
        kind=str(measured.get("kind") or "unknown"),
    )


def load_runs(paths: Iterable[str | os.PathLike[str]]) -> list[StudyRun]:
    """Read study run JSONs from files and directories.

    A directory contributes every ``*.run.json`` directly inside it, sorted by name. A file given
    twice (or also inside a given directory) is read once. Runs without a measurement
    (``measured.energy_per_step_j`` missing or null) are skipped with a ``RuntimeWarning``.

    Args:
        paths: run files and/or directories.

    Returns:
        The runs, in the order given (directories expanded in sorted order).

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: a directory holds no run JSON, a file is not JSON, has another format or
            version, lacks a field, or holds a non-positive energy (the message names the file,
            what was expected, what was found and the fix).
    """
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(q for q in p.glob(f"*{RUN_SUFFIX}") if q.is_file())
            if not found:
                raise ValueError(
                    f"{p}: expected a directory holding *{RUN_SUFFIX} files, found none; fix: "
                    "point at the study's output directory, or run `lightning-to-energy study`."
                )
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(
                f"{p}: expected a run file or a directory of *{RUN_SUFFIX} files, found nothing "
                "at that path; fix: check the path."
            )
    runs: list[StudyRun] = []
    seen: set[Path] = set()
    for f in files:
        key = f.resolve()
        if key in seen:
            continue
        seen.add(key)
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(
                f"{f}: expected a study run JSON ({RUN_FORMAT}), found unreadable JSON ({exc}); "
                "fix: rerun this configuration, or delete the file."
            ) from None
        run = _parse_run(data, str(f), f)
        if run is not None:
            runs.append(run)
    return runs


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
    _check_one_hardware(runs)
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


# ----------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """A compared model as the results record it."""

    name: str
    formula: str
    needs_measurement: bool


@dataclass(frozen=True)
class RunInfo:
    """A run as the results record it (enough to count runs by family, dataset and dtype)."""

    id: str
    family: str
    dataset: str
    dtype: str
    kind: str = "unknown"  # the weakest sensor kind behind the run's energy


@dataclass(frozen=True)
class PredictionRow:
    """One held-out prediction: joules per step of ``run_id`` under ``split`` by ``model``."""

    model: str
    split: str
    run_id: str
    family: str
    dataset: str
    dtype: str
    predicted_j: float
    measured_j: float

    @property
    def rel_err(self) -> float:
        """``|predicted - measured| / measured``."""
        return abs(self.predicted_j - self.measured_j) / self.measured_j


@dataclass(frozen=True)
class Score:
    """A model's figures on one split.

    Attributes:
        model: model name.
        split: split name.
        evaluable: False when no held-out run could be predicted; ``reason`` says why and every
            figure is None.
        reason: why the row is not evaluable (None when it is).
        n: held-out runs predicted.
        precision_pct: ``100 * (1 - mean relative error)``.
        mape: mean relative error (a fraction).
        r2: ``1 - sum (m - p)^2 / sum (m - mean m)^2``; None with fewer than 2 runs or constant
            measurements.
        median_rel_err: median relative error (a fraction).
        worst_rel_err: largest relative error (a fraction).
        note: held-out runs that could not be predicted (their model could not be fitted) and
            why; None when every run was predicted.
    """

    model: str
    split: str
    evaluable: bool
    reason: str | None
    n: int
    precision_pct: float | None
    mape: float | None
    r2: float | None
    median_rel_err: float | None
    worst_rel_err: float | None
    note: str | None = None


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


@dataclass(frozen=True)
class DesignEffect:
    """What one design choice does to the measured energy per step, everything else equal.

    Attributes:
        knob: the configuration key that differs (``"activation"``, ``"dtype"``, ``"width"``...).
        value: the choice, as text.
        reference: what it is compared with (relu, fp32, or the smaller number).
        pairs: pairs of runs that differ in this knob only.
        ratio: mean of (energy per step with ``value``) / (with ``reference``) over the pairs.
        ratio_min: the smallest of those ratios.
        ratio_max: the largest.
    """

    knob: str
    value: str
    reference: str
    pairs: int
    ratio: float
    ratio_min: float
    ratio_max: float


DESIGN_KNOBS: tuple[tuple[str, str | None], ...] = (
    ("activation", "relu"),
    ("dtype", "fp32"),
    ("width", None),
    ("depth", None),
)
"""Configuration keys compared by :func:`design_effects`, with their reference value (None: the
smaller number in each group)."""


def design_effects(runs: Sequence[StudyRun]) -> list[DesignEffect]:
    """Measured energy-per-step ratios of runs that differ in one configuration key only.

    For each knob of :data:`DESIGN_KNOBS`, runs are grouped by every other key of their
    configuration (the id aside); within a group, each run is compared with the group's run at
    the reference value. Ratios are then averaged per (knob, value, reference).
    """
    effects: list[DesignEffect] = []
    for knob, fixed_ref in DESIGN_KNOBS:
        groups: dict[tuple[Any, ...], list[StudyRun]] = {}
        for r in runs:
            if knob not in r.config:
                continue
            rest = tuple(sorted((k, repr(v)) for k, v in r.config.items() if k not in (knob, "id")))
            groups.setdefault(rest, []).append(r)
        ratios: dict[tuple[str, str], list[float]] = {}
        for members in groups.values():
            values = {str(m.config[knob]): m for m in members}
            if len(values) < 2:
                continue
            ref = fixed_ref or str(min(m.config[knob] for m in members))
            base = values.get(ref)
            if base is None:
                continue
            for value, m in values.items():
                if value != ref:
                    ratios.setdefault((value, ref), []).append(m.energy_j / base.energy_j)
        for (value, ref), rs in sorted(ratios.items(), key=lambda kv: _natural(kv[0])):
            effects.append(
                DesignEffect(knob, value, ref, len(rs), math.fsum(rs) / len(rs), min(rs), max(rs))
            )
    return effects


def _natural(pair: tuple[str, str]) -> tuple[Any, ...]:
    """Sort numbers as numbers and names as names."""
    return tuple(
        (0, float(x), "") if x.replace(".", "", 1).isdigit() else (1, 0.0, x) for x in pair
    )


@dataclass(frozen=True)
class StudyResults:
    """Everything :func:`evaluate` found: scores per (model, split) and every prediction.

    Attributes:
        hardware: the hardware key the runs share.
        models: the compared models, in table order.
        splits: the splits, in table order (``in-sample`` last when present).
        runs: the evaluated runs.
        scores: one per (model, split), models within splits.
        predictions: every held-out prediction.
        effects: what each design choice does to the measured energy (:func:`design_effects`).
    """

    hardware: str
    models: tuple[ModelInfo, ...]
    splits: tuple[str, ...]
    runs: tuple[RunInfo, ...]
    scores: tuple[Score, ...]
    predictions: tuple[PredictionRow, ...] = field(repr=False)
    effects: tuple[DesignEffect, ...] = ()

    def score(self, model: str, split: str) -> Score:
        """The score of ``model`` on ``split``.

        Raises:
            KeyError: no such row.
        """
        for s in self.scores:
            if s.model == model and s.split == split:
                return s
        raise KeyError(f"no score for model {model!r} on split {split!r}")

    def predictions_for(self, model: str, split: str) -> list[PredictionRow]:
        """The held-out predictions of ``model`` on ``split``."""
        return [p for p in self.predictions if p.model == model and p.split == split]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (read back by :meth:`from_dict`)."""
        return {
            "format": RESULTS_FORMAT,
            "version": RESULTS_VERSION,
            "hardware": self.hardware,
            "models": [vars(m).copy() for m in self.models],
            "splits": list(self.splits),
            "split_descriptions": {s: SPLITS.get(s, "") for s in self.splits},
            "runs": [vars(r).copy() for r in self.runs],
            "scores": [vars(s).copy() for s in self.scores],
            "predictions": [vars(p).copy() for p in self.predictions],
            "effects": [vars(e).copy() for e in self.effects],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudyResults:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: another format or version, or a malformed entry.
        """
        if data.get("format") != RESULTS_FORMAT or data.get("version") != RESULTS_VERSION:
            raise _fail(
                "scaling results",
                f"format {RESULTS_FORMAT!r} version {RESULTS_VERSION}",
                (data.get("format"), data.get("version")),
                "pass a results.json written by this version of lightning-to-energy",
            )
        try:
            return cls(
                hardware=str(data["hardware"]),
                models=tuple(ModelInfo(**m) for m in data["models"]),
                splits=tuple(str(s) for s in data["splits"]),
                runs=tuple(RunInfo(**r) for r in data["runs"]),
                scores=tuple(Score(**s) for s in data["scores"]),
                predictions=tuple(PredictionRow(**p) for p in data["predictions"]),
                effects=tuple(DesignEffect(**e) for e in data.get("effects", [])),
            )
        except (KeyError, TypeError) as exc:
            raise _fail(
                "scaling results",
                "the fields written by StudyResults.to_dict()",
                f"a malformed entry ({exc})",
                "regenerate the results",
            ) from None


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------

# A fold: (label, held-out runs, training runs).
_Fold = tuple[str, list[StudyRun], list[StudyRun]]


def _check_one_hardware(runs: Sequence[StudyRun]) -> str:
    if not runs:
        raise ValueError(
            "expected at least one measured study run, found none; fix: run "
            "`lightning-to-energy study` (runs without a measurement are skipped)."
        )
    keys = sorted({r.hardware for r in runs})
    if len(keys) > 1:
        raise ValueError(
            f"expected runs from one hardware (one energy law per machine), found {keys}; fix: "
            "evaluate each hardware's runs separately."
        )
    return keys[0]


def _folds(runs: Sequence[StudyRun], split: str) -> list[_Fold] | str:
    """The split's folds, or why the split cannot be made at all."""
    if split == SPLIT_IN_SAMPLE:
        return [("all runs", list(runs), list(runs))]
    if split == SPLIT_FAMILY:
        families = sorted({r.family for r in runs})
        if len(families) < 2:
            return (
                f"only one family ({families[0]}): leaving a family out needs at least two"
                if families
                else "no runs"
            )
        return [
            (
                f"family {fam}",
                [r for r in runs if r.family == fam],
                [r for r in runs if r.family != fam],
            )
            for fam in families
        ]
    config_ids = list(dict.fromkeys(r.id for r in runs))  # first-seen order
    folds: list[_Fold] = []
    for cid in config_ids:
        held = [r for r in runs if r.id == cid]
        train = [r for r in runs if r.id != cid]
        if split == SPLIT_WITHIN_FAMILY:
            train = [r for r in train if r.family == held[0].family]
        folds.append((f"config {cid}", held, train))
    return folds


def _evaluate_one(
    runs: Sequence[StudyRun],
    factory: Callable[[], ScalingModel],
    split: str,
    folds: list[_Fold] | str,
) -> tuple[Score, list[PredictionRow]]:
    probe = factory()
    name = probe.name

    def not_evaluable(reason: str) -> tuple[Score, list[PredictionRow]]:
        return Score(name, split, False, reason, 0, None, None, None, None, None), []

    if isinstance(folds, str):
        return not_evaluable(folds)
    unusable = [reason for r in runs if (reason := probe.unusable(r))]
    if unusable:
        more = f" (and {len(unusable) - 1} more)" if len(unusable) > 1 else ""
        return not_evaluable(f"{unusable[0]}{more}")
    rows: list[PredictionRow] = []
    skipped: list[tuple[str, int, str]] = []  # (fold label, held-out runs, reason)
    for label, held, train in folds:
        model = factory()
        try:
            model.fit(train)
        except NotFittableError as exc:
            skipped.append((label, len(held), str(exc)))
            continue
        for r in held:
            rows.append(
                PredictionRow(
                    name, split, r.id, r.family, r.dataset, r.dtype, model.predict(r), r.energy_j
                )
            )
    if not rows:
        reasons = list(dict.fromkeys(reason for _, _, reason in skipped))
        return not_evaluable("; ".join(reasons[:3]) + (" ..." if len(reasons) > 3 else ""))
    note = None
    if skipped:
        lost = sum(k for _, k, _ in skipped)
        first_label, _, first_reason = skipped[0]
        note = (
            f"{lost} of {len(runs)} runs not predicted (model not fittable on {len(skipped)} "
            f"fold(s), e.g. {first_label}: {first_reason})"
        )
    figures = score_pairs([(p.predicted_j, p.measured_j) for p in rows])
    score = Score(
        model=name,
        split=split,
        evaluable=True,
        reason=None,
        n=int(figures["n"] or 0),
        precision_pct=figures["precision_pct"],
        mape=figures["mape"],
        r2=figures["r2"],
        median_rel_err=figures["median_rel_err"],
        worst_rel_err=figures["worst_rel_err"],
        note=note,
    )
    return score, rows


def evaluate(
    runs: Sequence[StudyRun],
    models: Sequence[str] | None = None,
    splits: Sequence[str] = DEFAULT_SPLITS,
    *,
    in_sample: bool = True,
) -> StudyResults:
    """Fit and score the models on held-out configurations.

    For every split and model, each fold's model is fitted on the fold's training runs only and
    predicts its held-out runs. A fold whose model cannot be fitted (fewer training runs than the
    model's parameters + 1) leaves its runs unpredicted and says so in the row's ``note``; a
    split where nothing could be predicted gives a row with ``evaluable=False`` and the reason.

    Args:
        runs: measured runs of one hardware (see :func:`load_runs`).
        models: names from :data:`MODELS` (default: all, in that order).
        splits: names from :data:`SPLITS`, in table order.
        in_sample: also add the ``in-sample`` split (fit on everything) last, for reference.

    Returns:
        The scores and every prediction.

    Raises:
        ValueError: no runs, runs from several hardware keys, or an unknown model or split.
    """
    hardware = _check_one_hardware(runs)
    names = list(MODELS) if models is None else list(models)
    unknown = [m for m in names if m not in MODELS]
    if unknown or not names:
        raise _fail("evaluate: models", f"names among {list(MODELS)}", names, "pick from those")
    split_list = list(dict.fromkeys(splits))
    if in_sample and SPLIT_IN_SAMPLE not in split_list:
        split_list.append(SPLIT_IN_SAMPLE)
    bad = [s for s in split_list if s not in SPLITS]
    if bad or not split_list:
        raise _fail(
            "evaluate: splits", f"names among {list(SPLITS)}", split_list, "pick from those"
        )
    scores: list[Score] = []
    predictions: list[PredictionRow] = []
    for split in split_list:
        folds = _folds(runs, split)
        for name in names:
            score, rows = _evaluate_one(runs, MODELS[name], split, folds)
            scores.append(score)
            predictions.extend(rows)
    infos = []
    for name in names:
        probe = MODELS[name]()
        infos.append(ModelInfo(probe.name, probe.formula, probe.needs_measurement))
    return StudyResults(
        hardware=hardware,
        models=tuple(infos),
        splits=tuple(split_list),
        runs=tuple(RunInfo(r.id, r.family, r.dataset, r.dtype, r.kind) for r in runs),
        scores=tuple(scores),
        predictions=tuple(predictions),
        effects=tuple(design_effects(runs)),
    )


# ----------------------------------------------------------------------------------------------
# Verdicts and goals (shared by the rich table and the Markdown)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """The best model of a split, compared on the runs every evaluable model predicted.

    Attributes:
        split: the split.
        n_common: held-out runs predicted by every evaluable model (the comparison set).
        best: the model with the highest precision on them (None when none was evaluable).
        best_pct: its precision there.
        best_predictive: the best model needing no measurement of the predicted run.
        best_predictive_pct: its precision there.
        not_evaluable: models with no prediction on this split.
        text: one line saying all of it.
    """

    split: str
    n_common: int
    best: str | None
    best_pct: float | None
    best_predictive: str | None
    best_predictive_pct: float | None
    not_evaluable: tuple[str, ...]
    text: str


def verdict(results: StudyResults, split: str) -> Verdict:
    """The best model of ``split``: precision on the runs every evaluable model predicted.

    Comparing on the common runs keeps a model that could only be fitted on some folds from
    winning on an easier subset.
    """
    rows = [s for s in results.scores if s.split == split]
    evaluable = [s.model for s in rows if s.evaluable]
    missing = tuple(s.model for s in rows if not s.evaluable)
    label = f"{split} ({SPLITS[split]})" if split in SPLITS else split
    if not evaluable:
        return Verdict(split, 0, None, None, None, None, missing, f"{label}: no model evaluable.")
    by_model = {m: {p.run_id: p for p in results.predictions_for(m, split)} for m in evaluable}
    common = set.intersection(*(set(v) for v in by_model.values()))
    precision: dict[str, float] = {}
    for m in evaluable:
        rel = [by_model[m][rid].rel_err for rid in common]
        if rel:
            precision[m] = 100.0 * (1.0 - float(np.mean(rel)))
    if not precision:
        text = f"{label}: the models predicted no run in common; compare the rows."
        return Verdict(split, 0, None, None, None, None, missing, text)
    needs = {m.name: m.needs_measurement for m in results.models}
    best = max(precision, key=lambda m: precision[m])
    predictive = [m for m in precision if not needs.get(m, False)]
    best_pred = max(predictive, key=lambda m: precision[m]) if predictive else None
    text = f"{label}: best {best} at {precision[best]:.2f} % on the {len(common)} runs "
    text += "every evaluable model predicted"
    if best_pred is not None and best_pred != best:
        text += f"; best without measuring the run: {best_pred} at {precision[best_pred]:.2f} %"
    if missing:
        text += f"; not evaluable: {', '.join(missing)}"
    return Verdict(
        split,
        len(common),
        best,
        precision[best],
        best_pred,
        None if best_pred is None else precision[best_pred],
        missing,
        text + ".",
    )


@dataclass(frozen=True)
class Goal:
    """One of the project's precision goals, checked against the figures.

    Attributes:
        text: the goal in words.
        model: the model it is about (``"ours"``).
        split: the split that measures it.
        target_pct: the precision to reach.
        value_pct: the precision reached (None when the row is missing or not evaluable).
        n: held-out runs behind ``value_pct``.
        met: True/False, or None when not evaluated.
    """

    text: str
    model: str
    split: str
    target_pct: float
    value_pct: float | None
    n: int
    met: bool | None

    @property
    def status(self) -> str:
        """``"met"``, ``"not met"`` or ``"not evaluated"``."""
        return {True: "met", False: "not met", None: "not evaluated"}[self.met]


def goals(results: StudyResults, model: str = "ours") -> list[Goal]:
    """The issue's goals for ``model`` on held-out configurations, met or not from the figures."""
    out = []
    for text, split, target in (
        ("within a family", SPLIT_WITHIN_FAMILY, GOAL_WITHIN_FAMILY_PCT),
        ("across families", SPLIT_FAMILY, GOAL_ACROSS_FAMILIES_PCT),
    ):
        try:
            s: Score | None = results.score(model, split)
        except KeyError:
            s = None
        value = s.precision_pct if s is not None and s.evaluable else None
        out.append(
            Goal(
                text=f"{model} ≥ {target:g} % {text}",
                model=model,
                split=split,
                target_pct=target,
                value_pct=value,
                n=s.n if s is not None else 0,
                met=None if value is None else value >= target,
            )
        )
    return out
