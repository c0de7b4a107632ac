"""``plan_run``: a run's energy from one counted step and a calibration, with hand-worked laws."""

from __future__ import annotations

import math

import pytest
import torch

from _models import TinyMLP
from lightning_to_energy import Calibration, RunPlan, StepProfile, plan_run, profile
from lightning_to_energy.calibration import HardwareInfo
from lightning_to_energy.regression import OnlineEnergyModel
from lightning_to_energy.roofline import find_hardware, roofline_s

H100 = HardwareInfo(gpus=("NVIDIA H100 80GB HBM3",), driver_version="1", cpu="x", cpu_count=2)
STATIC_W = 300.0  # the law every calibration window follows: 300 W x time + 1e-11 J/TO x TOs
J_PER_TO = 1e-11
# (time_s, tos) of the calibration windows: the two vary independently
WINDOWS = ((0.01, 1e9), (0.03, 5e8), (0.02, 3e9), (0.05, 2e9), (0.04, 4e9), (0.015, 6e9))


def law_j(time_s: float, tos: float) -> float:
    return STATIC_W * time_s + J_PER_TO * tos


def calibration(time_feature: str) -> Calibration:
    model = OnlineEnergyModel((time_feature, "tos"), history=len(WINDOWS))
    for time_s, tos in WINDOWS:
        model.update({time_feature: time_s, "tos": tos}, law_j(time_s, tos))
    return Calibration.from_model(model, H100)


@pytest.fixture(scope="module")
def step() -> StepProfile:
    return profile(TinyMLP(), torch.randn(8, 16), train=True, optimizer="adamw")


def test_a_roofline_calibration_plans_on_its_own_hardware(step: StepProfile) -> None:
    plan = plan_run(step, 1000, calibration("roofline_s"))
    assert isinstance(plan, RunPlan)
    assert (plan.hardware, plan.step_time_s, plan.steps) == ("h100-sxm", None, 1000)
    per_step_s = roofline_s(step, find_hardware("h100-sxm"))
    assert plan.roofline_s_per_step == pytest.approx(per_step_s)
    # 1000 x (300 W x roofline_s + 1e-11 J/TO x TOs)
    by_law = 1000 * law_j(per_step_s, plan.tos_per_step)
    assert plan.energy_j == pytest.approx(by_law, rel=0.02)
    assert plan.low_j <= plan.energy_j <= plan.high_j
    assert plan.calibration_windows == len(WINDOWS)
    assert plan.calibration_hardware == H100.label


def test_modules_share_the_dynamic_energy_by_their_tos(step: StepProfile) -> None:
    plan = plan_run(step, 1000, calibration("roofline_s"), top=10)
    # TinyMLP: fc1, act, fc2, and the loss and optimizer outside any module: all listed
    assert math.isclose(sum(m.share for m in plan.top_modules), 1.0, rel_tol=1e-9)
    # dynamic energy: the TO term alone, 1000 x 1e-11 J/TO x TOs, split by TO share
    dynamic = sum(m.energy_j for m in plan.top_modules)
    assert dynamic == pytest.approx(1000 * J_PER_TO * plan.tos_per_step, rel=0.02)
    assert plan.top_modules[0].tos_per_step >= plan.top_modules[-1].tos_per_step


def test_another_gpu_gives_another_roofline() -> None:
    # Big enough for the matmuls to be compute-bound (TinyMLP's kernels are all launch-bound):
    # 2 x 512 x 1024 x 1024 = 1.07 GFLOP a matmul, 16 us at the H100's 67 fp32 TFLOPS.
    big = profile(torch.nn.Linear(1024, 1024), torch.randn(512, 1024), train=True, optimizer="sgd")
    h100 = plan_run(big, 10, calibration("roofline_s"))
    a100 = plan_run(big, 10, calibration("roofline_s"), hardware=find_hardware("a100-sxm-80gb"))
    assert a100.hardware == "a100-sxm-80gb"
    # the A100 has lower peaks and bandwidth than the H100: a longer roofline, more static J
    assert a100.roofline_s_per_step is not None and h100.roofline_s_per_step is not None
    assert a100.roofline_s_per_step > h100.roofline_s_per_step
    assert a100.energy_j > h100.energy_j


def test_a_measured_time_calibration_needs_the_step_time(step: StepProfile) -> None:
    cal = calibration("duration_s")
    with pytest.raises(ValueError, match=r"step_time_s: the calibration .* uses measured step"):
        plan_run(step, 10, cal)
    plan = plan_run(step, 100, cal, step_time_s=0.02)
    # 100 x (300 W x 0.02 s + 1e-11 J/TO x TOs)
    assert plan.energy_j == pytest.approx(100 * law_j(0.02, plan.tos_per_step), rel=0.02)
    assert (plan.step_time_s, plan.roofline_s_per_step, plan.hardware) == (0.02, None, None)


@pytest.mark.parametrize("steps", [0, -5, 2.5, True])
def test_bad_step_counts_are_refused(step: StepProfile, steps: object) -> None:
    with pytest.raises(ValueError, match="steps: expected an int >= 1"):
        plan_run(step, steps, calibration("roofline_s"))  # type: ignore[arg-type]


def test_an_unknown_gpu_in_the_calibration_says_how_to_add_it(step: StepProfile) -> None:
    cal = calibration("roofline_s")
    other = Calibration(
        **{**cal.__dict__, "hardware": HardwareInfo(gpus=("NVIDIA Z999",), cpu="x", cpu_count=1)}
    )
    with pytest.raises(ValueError, match="'NVIDIA Z999'"):
        plan_run(step, 10, other)


def test_no_calibration_is_a_clear_error(step: StepProfile) -> None:
    # what CalibrationStore.from_path(missing).load() returns
    with pytest.raises(ValueError, match="calibration: expected a Calibration, found None"):
        plan_run(step, 10, None)  # type: ignore[arg-type]


def test_a_numpy_step_count_is_an_int(step: StepProfile) -> None:
    import numpy as np

    # e.g. steps computed as np.prod(...) or from an array's length
    plan = plan_run(step, np.int64(1000), calibration("roofline_s"))  # type: ignore[arg-type]
    assert plan.steps == 1000 and type(plan.steps) is int
    assert plan.energy_j == pytest.approx(plan_run(step, 1000, calibration("roofline_s")).energy_j)


@pytest.mark.parametrize("step_time_s", [math.inf, math.nan, 0.0])
def test_a_step_time_that_is_not_a_finite_positive_number_is_refused(
    step: StepProfile, step_time_s: float
) -> None:
    with pytest.raises(ValueError, match=r"expected finite seconds per step > 0.*Fix: pass"):
        plan_run(step, 10, calibration("duration_s"), step_time_s=step_time_s)


def test_a_calibration_without_windows_is_refused_not_planned_at_0_j(step: StepProfile) -> None:
    # Saved from a model that never fitted a window: its coefficients are all 0, and it would
    # plan 0 J with a 0 .. 0 J interval.
    empty = Calibration.from_model(OnlineEnergyModel(("roofline_s", "tos")), H100)
    assert empty.windows == ()
    with pytest.raises(ValueError, match=r"expected fitted windows, found none\. Fix: train"):
        plan_run(step, 10, empty)


@pytest.mark.parametrize("steps", [10**308, 10**400])
def test_a_step_count_beyond_floats_is_refused_with_the_fix(step: StepProfile, steps: int) -> None:
    # 10**308 steps x ~1e9 TOs overflows to inf; 10**400 is not a float at all
    with pytest.raises(ValueError, match=r"run totals are finite.*Fix: plan fewer steps"):
        plan_run(step, steps, calibration("roofline_s"))


def test_the_plan_is_linear_in_the_step_count(step: StepProfile) -> None:
    cal = calibration("roofline_s")
    one, two = plan_run(step, 1000, cal), plan_run(step, 2000, cal)
    # E = sum_k c_k x steps x f_k has no intercept: twice the steps, exactly twice the joules
    # (and the interval, a factor around the prediction, doubles with it)
    assert two.energy_j == pytest.approx(2 * one.energy_j, rel=1e-12)
    assert (two.low_j, two.high_j) == pytest.approx((2 * one.low_j, 2 * one.high_j), rel=1e-12)


def test_top_lists_at_most_top_modules_and_none_for_zero(step: StepProfile) -> None:
    cal = calibration("roofline_s")
    # TinyMLP has more than two entries (fc1, act, fc2, and ops outside any module)
    assert len(plan_run(step, 10, cal, top=10).top_modules) > 2
    assert len(plan_run(step, 10, cal, top=2).top_modules) == 2
    assert plan_run(step, 10, cal, top=0).top_modules == ()


def test_another_machines_cpu_is_planned_with_its_own_core_count() -> None:
    from lightning_to_energy.planning import calibration_hardware
    from lightning_to_energy.roofline import cpu_spec

    cal = calibration("roofline_s")
    other = Calibration(
        **{**cal.__dict__, "hardware": HardwareInfo(gpus=(), cpu="Xeon X", cpu_count=8)}
    )
    # not this machine: a rough spec from the calibration's CPU name and its 8 cores
    assert calibration_hardware(other, same_machine=False) == cpu_spec(8, name="Xeon X")
