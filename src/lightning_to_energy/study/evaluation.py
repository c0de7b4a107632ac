"""The energy scaling-law evaluation: which per-step features predict a training step's joules.

Fits the competing models of :mod:`lightning_to_energy.study.baselines` on the study's runs
(:mod:`lightning_to_energy.study.runs`) and scores them on held-out configurations.
"Precision" is ``100 * (1 - mean relative error)`` (the paper does not define it; this project
reports this and says so), next to R^2 and the median and worst relative error.

Splits: ``within-family`` (leave one configuration out, train on the rest of its family),
``config`` (leave one configuration out, train on every other run), ``family`` (leave one family
out, train on the others) and ``in-sample`` (fit on everything: a reference, not a prediction).

Nothing here imports rich or matplotlib; rendering lives in
:mod:`lightning_to_energy.study.rendering`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

import numpy as np

from lightning_to_energy._files import found_repr
from lightning_to_energy.model.scoring import score_pairs
from lightning_to_energy.study.baselines import MODELS, NotFittableError, ScalingModel
from lightning_to_energy.study.runs import StudyRun, check_one_hardware, field_error

__all__ = [
    "DEFAULT_SPLITS",
    "DESIGN_KNOBS",
    "GOAL_ACROSS_FAMILIES_PCT",
    "GOAL_WITHIN_FAMILY_PCT",
    "RESULTS_FORMAT",
    "RESULTS_VERSION",
    "SPLITS",
    "SPLIT_CONFIG",
    "SPLIT_FAMILY",
    "SPLIT_IN_SAMPLE",
    "SPLIT_WITHIN_FAMILY",
    "DesignEffect",
    "Goal",
    "ModelInfo",
    "PredictionRow",
    "RunInfo",
    "Score",
    "StudyResults",
    "Verdict",
    "design_effects",
    "evaluate",
    "goals",
    "verdict",
]
RESULTS_FORMAT = "lightning-to-energy/scaling-results"
RESULTS_VERSION = 1

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
            ValueError: another format or version, or a malformed entry: the message names the
                field (``scores[3].n``), what was expected, what was found, and the fix.
        """
        if not isinstance(data, Mapping):
            raise _malformed("the file", "a JSON object", found_repr(data))
        if data.get("format") != RESULTS_FORMAT or data.get("version") != RESULTS_VERSION:
            raise field_error(
                "scaling results",
                f"format {RESULTS_FORMAT!r} version {RESULTS_VERSION}",
                (data.get("format"), data.get("version")),
                "pass a results.json written by this version of lightning-to-energy",
            )
        hardware = data.get("hardware")
        if not isinstance(hardware, str):
            found = found_repr(hardware) if "hardware" in data else "no such field"
            raise _malformed("field 'hardware'", "a str (the hardware key)", found)
        splits = _entries(data, "splits", str, required=True)
        return cls(
            hardware=hardware,
            models=tuple(_rows(data, "models", ModelInfo, required=True)),
            splits=tuple(str(s) for s in splits),
            runs=tuple(_rows(data, "runs", RunInfo, required=True)),
            scores=tuple(_rows(data, "scores", Score, required=True)),
            predictions=tuple(_rows(data, "predictions", PredictionRow, required=True)),
            effects=tuple(_rows(data, "effects", DesignEffect, required=False)),
        )


# What a malformed results.json is fixed by: it is the output of `study eval`, not an input.
_REGENERATE = "regenerate it with `lightning-to-energy study eval STUDY_DIR` from the run JSONs"

# The JSON types of the row fields' annotations (strings: ``from __future__ import
# annotations``). A bool is no number here, and a float field takes a JSON integer.
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "bool": (bool,),
    "int": (int,),
    "float": (int, float),
    "None": (type(None),),
}


def _malformed(where: str, expected: str, found: str) -> ValueError:
    """The one-line error of a malformed results file: where, what was expected, what was found."""
    return ValueError(
        f"scaling results: {where}: expected {expected}, found {found}; fix: {_REGENERATE}."
    )


def _entries(data: Mapping[str, Any], key: str, kind: type, *, required: bool) -> list[Any]:
    """``data[key]``, a list whose items are all of ``kind`` (``[]`` when optional and absent).

    Raises:
        ValueError: missing, not a list, or an item of another type (which one, and where).
    """
    if key not in data and not required:
        return []
    what = "an object" if kind is dict else f"a {kind.__name__}"
    if key not in data:
        raise _malformed(f"field {key!r}", f"a list, each item {what}", "no such field")
    value = data[key]
    if not isinstance(value, list):
        raise _malformed(f"field {key!r}", f"a list, each item {what}", found_repr(value))
    for i, item in enumerate(value):
        if not isinstance(item, kind):
            raise _malformed(f"{key}[{i}]", what, found_repr(item))
    return value


def _rows(data: Mapping[str, Any], key: str, row: type[Any], *, required: bool) -> list[Any]:
    """The ``row`` dataclasses of ``data[key]``, a list of objects with ``row``'s fields.

    Raises:
        ValueError: the first entry with a missing, unknown or mistyped field (which one, in
            which entry, and the fields expected).
    """
    names = [f.name for f in fields(row)]
    needed = [f.name for f in fields(row) if f.default is MISSING and f.default_factory is MISSING]
    rows = []
    for i, item in enumerate(_entries(data, key, dict, required=required)):
        missing = [n for n in needed if n not in item]
        unknown = sorted(str(k) for k in item if k not in names)
        if missing or unknown:
            found = "; ".join(
                part
                for part in (
                    f"no {', '.join(map(repr, missing))}" if missing else "",
                    f"unknown {', '.join(map(repr, unknown))}" if unknown else "",
                )
                if part
            )
            expected = f"an object with the fields of {row.__name__} ({', '.join(names)})"
            raise _malformed(f"{key}[{i}]", expected, found)
        for f in fields(row):
            types = [_JSON_TYPES.get(t.strip()) for t in str(f.type).split("|")]
            if f.name not in item or any(t is None for t in types):
                continue  # a default, or a type this check does not know
            value = item[f.name]
            ok = any(isinstance(value, t) for t in types if t is not None)
            if ok and isinstance(value, bool) and "bool" not in str(f.type):
                ok = False
            if not ok:
                raise _malformed(f"{key}[{i}].{f.name}", f"{f.type} (JSON)", found_repr(value))
        rows.append(row(**item))
    return rows


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------

# A fold: (label, held-out runs, training runs).
_Fold = tuple[str, list[StudyRun], list[StudyRun]]


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
    hardware = check_one_hardware(runs)
    names = list(MODELS) if models is None else list(models)
    unknown = [m for m in names if m not in MODELS]
    if unknown or not names:
        raise field_error(
            "evaluate: models", f"names among {list(MODELS)}", names, "pick from those"
        )
    split_list = list(dict.fromkeys(splits))
    if in_sample and SPLIT_IN_SAMPLE not in split_list:
        split_list.append(SPLIT_IN_SAMPLE)
    bad = [s for s in split_list if s not in SPLITS]
    if bad or not split_list:
        raise field_error(
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
