"""The physical model's extrapolation widening: measured, nested, serialised, used by ``plan``."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import pytest

from lightning_to_energy.counting import StepProfile
from lightning_to_energy.counting.cost_model import AluOp, NumberFormat, Unit
from lightning_to_energy.counting.registry import OpCost
from lightning_to_energy.hardware.specs import find_hardware
from lightning_to_energy.model import PhysicalModel, PhysicalParams, Sample, predict_step, prior_for
from lightning_to_energy.model.physical import EXTRAPOLATION_WIDENING, STATED_WIDENING_BASIS
from lightning_to_energy.study.physical_eval import (
    PhysicalFolds,
    PlannedIntervals,
    Widening,
    measure_widening,
    nested_widening,
    planned_family_intervals,
    widening_ratio,
)

F, MATRIX = NumberFormat, Unit.MATRIX


def _step(fmt: NumberFormat, fma: float = 1e9) -> StepProfile:
    """One matmul kernel of ``fma`` FMAs in ``fmt`` on the matrix units."""
    cost = OpCost({(AluOp.FMA, fmt, MATRIX): fma}, bytes_read=int(1e6), kernels=1)
    return StepProfile(kernels=1, flops=2 * fma, op_costs=((cost, 1),))


def _model(**over: object) -> PhysicalModel:
    fields: dict[str, object] = dict(
        params=prior_for(find_hardware("h100-sxm")),
        target="h100-sxm",
        time_log_halfwidth=0.1,
        energy_log_halfwidth=0.2,
        level=0.9,
        basis="test",
        formats=("matrix/fp32",),
        flops_range=(1e8, 1e12),
        kernels_range=(1.0, 100.0),
    )
    fields.update(over)
    return PhysicalModel(**fields)  # type: ignore[arg-type]


def test_widening_round_trips_and_an_older_file_reads_the_stated_factor() -> None:
    model = _model(time_widening=1.7, energy_widening=2.6, widening_basis="measured: toy")
    back = PhysicalModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert back == model
    assert (back.time_widening, back.energy_widening) == (1.7, 2.6)
    old = model.to_dict()
    for key in ("time_widening", "energy_widening", "widening_basis"):
        del old[key]  # what a calibration written before the widening was measured carries
    legacy = PhysicalModel.from_dict(old)
    assert legacy.time_widening == legacy.energy_widening == EXTRAPOLATION_WIDENING == 2.0
    assert legacy.widening_basis == STATED_WIDENING_BASIS
    assert "stated" in legacy.widening_basis
    # a widening below 1 would narrow an extrapolation's interval: refused, with the fix
    with pytest.raises(ValueError, match=r"time_widening.*>= 1"):
        _model(time_widening=0.5)


def test_plan_widens_only_extrapolations_by_the_models_factors() -> None:
    model = _model(time_widening=1.5, energy_widening=3.0, widening_basis="measured: toy")
    inside = _step(F.FP32)
    plan = model.plan(inside)
    pred = predict_step(inside, model.params)
    # fp32 ran in calibration, 2e9 FLOPs and 1 kernel lie in range: half widths 0.1 and 0.2
    assert plan.extrapolation == ()
    assert plan.time_low_s == pytest.approx(pred.time_s * math.exp(-0.1))
    assert plan.energy_high_j == pytest.approx(pred.energy_j * math.exp(0.2))
    outside = _step(F.BF16)
    plan = model.plan(outside)
    pred = predict_step(outside, model.params)
    assert plan.extrapolation and "matrix/bf16" in plan.extrapolation[0]
    # time: 1.5 x 0.1 = 0.15 in log space; energy: 3.0 x 0.2 = 0.6
    assert plan.time_low_s == pytest.approx(pred.time_s * math.exp(-0.15))
    assert plan.time_high_s == pytest.approx(pred.time_s * math.exp(0.15))
    assert plan.energy_low_j == pytest.approx(pred.energy_j * math.exp(-0.6))
    assert plan.energy_high_j == pytest.approx(pred.energy_j * math.exp(0.6))
    assert "x1.5 (time)" in plan.basis and "x3 (energy)" in plan.basis
    assert "measured: toy" in plan.basis


def test_widening_ratio_by_hand() -> None:
    shape = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1]
    family = [-3 * r for r in shape]  # the sign of an error does not matter
    # 10 residuals at 0.9: the ceil(11 x 0.9) = 10th smallest |r|: 0.1 and 0.3; 0.3 / 0.1 = 3
    assert widening_ratio(shape, family, 0.9) == pytest.approx(3.0)
    # an unseen family predicted better than an unseen shape: 0.05 / 0.1 -> held at 1
    assert widening_ratio(shape, [r / 2 for r in shape], 0.9) == 1.0
    # 5 residuals cannot size a 90 % interval (ceil(6 x 0.9) = 6 > 5): not measurable
    assert widening_ratio(shape[:5], family, 0.9) is None


class _ToyPredictor:
    """Every configuration measures (1 s, 1 J). Predicted from its own family (an unseen shape),
    it is off by ``A`` in log space; from other families only, by ``B[its family]`` (time too
    high, energy too low: the sign must not matter). A family held out is an extrapolation of
    the others when it is in ``novel`` (a format they never ran)."""

    A = 0.1
    B: ClassVar[dict[str, float]] = {"a": 0.2, "b": 0.3, "c": 5.0}

    def __init__(self, families: Sequence[str], novel: Sequence[str] = ("a", "b", "c")) -> None:
        self.families = list(families)
        self.novel = set(novel)

    def outside(self, train: Sequence[int], test: Sequence[int]) -> list[bool]:
        seen = {self.families[i] for i in train}
        return [self.families[i] in self.novel and self.families[i] not in seen for i in test]

    def __call__(self, train: Sequence[int], test: Sequence[int]) -> np.ndarray:
        seen = {self.families[i] for i in train}
        out = []
        for i in test:
            f = self.families[i]
            err = self.A if f in seen else self.B[f]
            out.append([math.exp(err), math.exp(-err)])
        return np.array(out)


def test_the_nested_widening_never_sees_the_family_it_is_scored_on() -> None:
    families = ["a"] * 5 + ["b"] * 5 + ["c"] * 5
    shapes = [f"s{i}" for i in range(15)]  # each configuration its own shape
    measured = np.ones((15, 2))
    toy = _ToyPredictor(families)
    nested = nested_widening(toy, measured, shapes, families, level=0.9)
    # without c: leave one shape out, 10 errors of 0.1 -> the 10th smallest is 0.1; leave one
    # family out, 5 of 0.2 (a) and 5 of 0.3 (b) -> the 10th smallest is 0.3; 0.3 / 0.1 = 3
    assert nested["c"].time == pytest.approx(3.0)
    assert nested["c"].energy == pytest.approx(3.0)
    assert nested["c"].time_log_halfwidth == pytest.approx(0.1)
    # without a: 5 of 0.3 (b) and 5 of 5.0 (c) -> 5.0 / 0.1 = 50; c's own error sizes a and b
    assert nested["a"].time == pytest.approx(50.0)
    assert nested["b"].energy == pytest.approx(50.0)
    assert "measured" in nested["c"].basis and "10 held-out extrapolations" in nested["c"].basis
    # c's own errors never size c's widening: make them 10x worse, and only a's and b's move
    worse = _ToyPredictor(families)
    worse.B = {"a": 0.2, "b": 0.3, "c": 50.0}
    again = nested_widening(worse, measured, shapes, families, level=0.9)
    assert again["c"].time == pytest.approx(3.0)
    # 50.0 / 0.1 = 500
    assert again["a"].time == pytest.approx(500.0)
    # on all 15: 5 of 0.2, 0.3 and 5.0 each; ceil(16 x 0.9) = 15th smallest = 5.0 -> 50
    everything = measure_widening(toy, measured, shapes, families, level=0.9)
    assert everything.time == pytest.approx(50.0)


def test_only_extrapolations_size_the_widening() -> None:
    families = ["a"] * 10 + ["b"] * 10 + ["c"] * 10
    shapes = [f"s{i}" for i in range(30)]
    measured = np.ones((30, 2))
    # only c runs a format the others never ran
    toy = _ToyPredictor(families, novel=("c",))
    nested = nested_widening(toy, measured, shapes, families, level=0.9)
    # without a: held out by family, only c's 10 errors of 5.0 are extrapolations (b's 0.3 are
    # not): the ceil(11 x 0.9) = 10th smallest is 5.0; leave one shape out 0.1; 5.0 / 0.1 = 50
    assert nested["a"].time == pytest.approx(50.0)
    # without c: a and b are no extrapolation of each other: nothing measured, the stated x2
    assert nested["c"].time == nested["c"].energy == EXTRAPOLATION_WIDENING
    assert "no held-out family was an extrapolation" in nested["c"].basis
    # sized on every held-out step instead (the variant first tried): 10 of 0.2 and 10 of 0.3,
    # the ceil(21 x 0.9) = 19th smallest is 0.3; 0.3 / 0.1 = 3
    every = nested_widening(toy, measured, shapes, families, level=0.9, only_extrapolations=False)
    assert every["c"].time == pytest.approx(3.0)


def test_one_family_falls_back_to_the_stated_factor_and_says_so() -> None:
    families = ["a"] * 10
    shapes = [f"s{i}" for i in range(10)]
    toy = _ToyPredictor(families)
    w = measure_widening(toy, np.ones((10, 2)), shapes, families, level=0.9)
    assert (w.time, w.energy) == (EXTRAPOLATION_WIDENING, EXTRAPOLATION_WIDENING)
    assert "stated x2" in w.basis and "only 1 family" in w.basis
    # the half width is still measured: 10 leave-one-shape-out errors of 0.1
    assert w.time_log_halfwidth == pytest.approx(0.1)


class _FixedFolds(PhysicalFolds):
    """Every fold 'fits' the same parameters (no optimiser): the intervals' arithmetic alone."""

    def params(self, train: Sequence[int]) -> PhysicalParams:
        return self.prior


def test_family_intervals_are_what_plan_gives_with_the_nested_widening() -> None:
    prior = prior_for(find_hardware("h100-sxm"))
    # family "m" runs fp32 matmuls, family "t" tf32 ones: each is an extrapolation of the other
    profiles = [_step(F.FP32, 1e9 * (k + 1)) for k in range(3)]
    profiles += [_step(F.TF32, 1e9 * (k + 1)) for k in range(3)]
    samples = [Sample(p, 1.0, 1.0, f"x{i}") for i, p in enumerate(profiles)]
    families = ["m"] * 3 + ["t"] * 3
    folds = _FixedFolds(samples, prior)
    widening = {
        "m": Widening(0.1, 0.2, 1.5, 3.0, "toy"),
        "t": Widening(0.1, 0.2, 1.0, 1.0, "toy"),
    }
    measured = np.ones((6, 2))

    def plan(stated: bool) -> PlannedIntervals:
        return planned_family_intervals(
            folds,
            measured,
            [f"s{i}" for i in range(6)],
            families,
            target="h100-sxm",
            widening=widening,
            stated=stated,
        )

    planned = plan(stated=False)
    assert planned.extrapolation == (True,) * 6
    pred = predict_step(profiles[0], prior)
    # held out "m", calibrated on tf32 only: time 1.5 x 0.1 = 0.15, energy 3.0 x 0.2 = 0.6
    assert planned.low[0, 0] == pytest.approx(pred.time_s * math.exp(-0.15))
    assert planned.high[0, 1] == pytest.approx(pred.energy_j * math.exp(0.6))
    stated = plan(stated=True)
    # the stated factor instead: 2 x 0.2 = 0.4
    assert stated.high[0, 1] == pytest.approx(pred.energy_j * math.exp(0.4))
