"""``plan_run``: a run's energy from one counted step and a calibration, with hand-worked laws."""

from __future__ import annotations

import math

import pytest
import torch

from _models import TinyMLP
from lightning_to_energy import Calibration, RunPlan, StepProfile, plan_run, profile
from lightning_to_energy.hardware.identity import HardwareInfo
from lightning_to_energy.hardware.roofline import roofline_s
from lightning_to_energy.hardware.specs import find_hardware
from lightning_to_energy.model.regression import OnlineEnergyModel

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
    with pytest.raises(ValueError, match="calibration: expected a Calibration, found None") as err:
        plan_run(step, 10, None)  # type: ignore[arg-type]
    # A missing file warns nothing: the message must not point at a warning, and says why None.
    assert "see its warning" not in str(err.value)
    assert "no calibration file at its path" in str(err.value)


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
    from lightning_to_energy.hardware.specs import cpu_spec
    from lightning_to_energy.planning import calibration_hardware

    cal = calibration("roofline_s")
    other = Calibration(
        **{**cal.__dict__, "hardware": HardwareInfo(gpus=(), cpu="Xeon X", cpu_count=8)}
    )
    # not this machine: a rough spec from the calibration's CPU name and its 8 cores
    assert calibration_hardware(other, same_machine=False) == cpu_spec(8, name="Xeon X")


# --- the interval: leave-one-run-out over the calibration's runs ------------------------------

# Every window of these calibrations has tos = 1e11 x roofline_s (one direction in feature space),
# so a fit only learns the energy along it, a = fitted / law, and with relative-error least
# squares that is a = sum_i u_i / sum_i u_i^2 over the fitted windows, u_i = law_i / measured_i.
TOS_PER_S = 1e11
DEVIANT = 1.2  # the last run measures 1.2 x the law; every other run follows it exactly


def runs_calibration(n_runs: int, windows_per_run: int = 2) -> Calibration:
    """``n_runs`` runs (ids run-0 ...) of the law, the last one 1.2 x it, saved by run."""
    from lightning_to_energy.calibration.data import CalibrationRun, CalibrationWindow

    windows = []
    for r in range(n_runs):
        scale = DEVIANT if r == n_runs - 1 else 1.0
        for i in range(windows_per_run):
            time_s = 0.01 * (1 + i + r % 3)  # runs and windows of different lengths
            tos = TOS_PER_S * time_s
            features = {"roofline_s": time_s, "tos": tos}
            windows.append(CalibrationWindow(features, scale * law_j(time_s, tos), f"run-{r}"))
    base = calibration("roofline_s")
    return Calibration(
        **{
            **base.__dict__,
            "windows": tuple(reversed(windows)),  # most recent first
            "runs": tuple(CalibrationRun(f"run-{r}", base.updated, 2) for r in range(n_runs)),
            "n_runs": n_runs,
        }
    )


@pytest.mark.parametrize(
    ("n_runs", "half_width", "coverage", "short"),
    [
        # Held out, the 1.2 x run is predicted by exact runs only: a = 1, score ln 1.2 = 0.1823.
        # An exact run is predicted by 3 (or 4) exact runs and the 1.2 x one, 2 windows each:
        # a = (2 x 3 + 2 / 1.2) / (2 x 3 + 2 / 1.44) = 7.6667 / 7.3889 = 1.0376, score 0.0369
        # (6 runs: 9.6667 / 9.3889 = 1.0296, score 0.0292; 9 runs: 15.6667 / 15.3889 = 1.0181,
        # score 0.0179).
        # 5 scores: k = min(ceil(6 x 0.9), 5) = 5, the largest; 6 scores: min(ceil(6.3), 6) = 6;
        # 9 scores: min(ceil(9.0), 9) = 9.
        # Each way q = ln 1.2: the interval is [p / 1.2, p x 1.2]. (Had the 1.2 x run been in
        # its own fit, 6 runs: a = (10 + 2 / 1.2) / (10 + 2 / 1.44) = 1.0244, a factor
        # 1.2 / 1.0244 = 1.171.)
        # The largest of n scores bounds a new one with probability n / (n + 1): 5 / 6 = 0.833
        # and 6 / 7 = 0.857, not 0.9; 9 runs reach 9 / 10 = 0.9 (0.9 / (1 - 0.9) = 9 needed).
        (5, math.log(1.2), 5 / 6, "; 90 % needs 9 runs"),
        (6, math.log(1.2), 6 / 7, "; 90 % needs 9 runs"),
        (9, math.log(1.2), 0.9, ""),
    ],
)
def test_five_runs_or_more_give_a_leave_one_run_out_interval(
    step: StepProfile, n_runs: int, half_width: float, coverage: float, short: str
) -> None:
    plan = plan_run(step, 1000, runs_calibration(n_runs))
    assert plan.interval == pytest.approx(coverage)
    assert plan.interval_basis == f"leave-one-run-out over {n_runs} runs{short}"
    # NB: the ridge toward the zero prior pulls each fit about 1e-3 / (0.5 x 8 windows) low
    assert plan.high_j / plan.energy_j == pytest.approx(math.exp(half_width), rel=1e-3)
    assert plan.energy_j / plan.low_j == pytest.approx(math.exp(half_width), rel=1e-3)
    assert plan.to_dict()["interval_basis"] == plan.interval_basis


def test_fewer_than_five_runs_keep_the_default_factor_and_say_so(step: StepProfile) -> None:
    plan = plan_run(step, 1000, runs_calibration(4))
    # no measured error: the default factor 1.5 either way, and no coverage claimed
    assert (plan.low_j, plan.high_j) == pytest.approx((plan.energy_j / 1.5, plan.energy_j * 1.5))
    assert plan.interval is None
    assert plan.interval_basis == (
        "default factor 1.5, no measured error: the calibration holds windows of 4 runs, "
        "leave-one-run-out needs 5"
    )
    # one run (all windows of one TOEnergy run): still the default, in the singular
    assert "windows of 1 run," in plan_run(step, 10, calibration("roofline_s")).interval_basis


def test_many_runs_are_held_out_in_groups(step: StepProfile) -> None:
    # 160 one-window runs: 160 folds x 159 windows = 25,440 window fits > 25,000, so the runs
    # are held out in max(5, 25,000 // 160) = 156 groups (runs i and i + 156 together).
    plan = plan_run(step, 1000, runs_calibration(160, windows_per_run=1))
    assert plan.interval_basis == "leave-runs-out over 160 runs, held out in 156 groups"
    # An exact run held out alone: a = (158 + 1 / 1.2) / (158 + 1 / 1.44) = 1.000875, score
    # 0.000875 (152 of them; 1.000881 for the 6 in the 3 other groups of two). The 1.2 x run
    # (the most recent, group 0) scores ln 1.2, its partner 0 (all its fit is exact).
    # k = ceil(161 x 0.9) = 145: sorted, 0 then 152 x 0.000875, so q = 0.000875. NB: the ridge
    # toward the zero prior (1e-3 windows' worth against 159 x 0.5) takes about 1e-5 off it.
    assert plan.high_j / plan.energy_j == pytest.approx(math.exp(0.000875), abs=2e-5)


def test_the_calibration_windows_are_those_the_plan_was_fitted_on(step: StepProfile) -> None:
    from lightning_to_energy.calibration.data import CalibrationWindow

    # 4 runs of 130 windows (520), and 3 more recent windows without a "tos" feature.
    cal = runs_calibration(4, windows_per_run=130)
    partial = tuple(CalibrationWindow({"roofline_s": 0.01}, 3.0, "old-format") for _ in range(3))
    cal = Calibration(**{**cal.__dict__, "windows": partial + cal.windows})
    plan = plan_run(step, 1000, cal)
    # The plan's model is seeded with the windows that have its features (520 of the 523),
    # the most recent DEFAULT_HISTORY = 512 of them: all 130 of runs 3, 2 and 1, and 122 of
    # run 0 (the 8 oldest dropped). Before: 523, every window stored.
    assert (plan.calibration_windows, plan.calibration_runs) == (512, 4)
    assert plan.to_dict()["calibration_runs"] == 4


# --- the step time a plan uses, and where it comes from (issue 14) ---------------------------

PROFILE = ("tos_matrix_full", "tos_matrix_reduced", "tos_vector", "bytes", "kernels")


def _windows_of(step: StepProfile, rows: list[tuple[float, float, str]], *, kernels: float = 1.0):
    """Windows of ``n`` steps like ``step`` lasting ``duration_s``: ``(n, duration_s, run)``.

    ``kernels`` scales the windows' kernel count (another model or batch when not 1).
    """
    from lightning_to_energy.calibration import CalibrationWindow
    from lightning_to_energy.tracking.steps import PROFILE_FEATURES

    per_step = {f: PROFILE_FEATURES[f](step) for f in PROFILE}
    per_step["kernels"] *= kernels
    return tuple(
        CalibrationWindow({"duration_s": d, **{f: n * v for f, v in per_step.items()}}, 1.0, run)
        for n, d, run in rows
    )


def _measured_time_calibration(step: StepProfile, windows: tuple) -> Calibration:
    import dataclasses

    base = calibration("duration_s")
    return dataclasses.replace(base, windows=windows, feature_names=("duration_s", *PROFILE))


def test_the_calibrations_own_runs_of_this_step_give_its_seconds_per_step(
    step: StepProfile,
) -> None:
    from lightning_to_energy.planning import (
        STEP_TIME_CALIBRATION,
        calibration_step_time,
        choose_step_time,
    )

    # newest first: run a's oldest window (2 s: warm-up and counted steps) is left out
    windows = _windows_of(step, [(10, 0.5, "a"), (20, 1.1, "b"), (10, 2.0, "a")])
    # a window of another step (three times the kernels per step) is not this step's
    other = _windows_of(step, [(10, 9.0, "c")], kernels=3.0)
    cal = _measured_time_calibration(step, windows + other)
    found = calibration_step_time(step, cal)
    assert found is not None
    seconds, n_windows, n_runs = found
    # (0.5 + 1.1) s / (10 + 20) steps = 0.05333 s; run a's first window and the 9 s window of
    # run c (another step) are left out
    assert seconds == pytest.approx(1.6 / 30)
    assert (n_windows, n_runs) == (2, 2)
    chosen = choose_step_time(step, cal, spec=find_hardware("h100-sxm"), time_bare_step=None)
    assert (chosen.source, chosen.warning) == (STEP_TIME_CALIBRATION, None)
    assert chosen.seconds == pytest.approx(1.6 / 30)
    assert "2 runs of this model and batch (2 windows" in chosen.detail


def test_without_its_runs_the_step_model_plus_lightnings_overhead_is_used(
    step: StepProfile,
) -> None:
    from lightning_to_energy.planning import (
        DEFAULT_LIGHTNING_OVERHEAD_S,
        STEP_TIME_MODEL,
        choose_step_time,
        model_step_time_s,
    )

    cal = _measured_time_calibration(step, _windows_of(step, [(10, 9.0, "c")], kernels=3.0))
    h100 = find_hardware("h100-sxm")

    def no_timer() -> float:
        raise AssertionError("a step model is there: nothing is timed")

    chosen = choose_step_time(step, cal, spec=h100, time_bare_step=no_timer)
    # the one step model (today the roofline) plus the stated default overhead
    assert model_step_time_s(step, h100) == roofline_s(step, h100)
    assert chosen.source == STEP_TIME_MODEL
    assert chosen.seconds == pytest.approx(roofline_s(step, h100) + DEFAULT_LIGHTNING_OVERHEAD_S)
    assert "stated default" in chosen.detail and chosen.warning is None
    # an overhead measured by the caller replaces the default: roofline + 0.02 s
    given = choose_step_time(step, cal, spec=h100, overhead_s=0.02)
    assert given.seconds == pytest.approx(roofline_s(step, h100) + 0.02)


def test_a_bare_step_is_the_last_resort_and_warns(step: StepProfile) -> None:
    from lightning_to_energy.planning import STEP_TIME_BARE, choose_step_time

    cal = _measured_time_calibration(step, _windows_of(step, [(10, 9.0, "c")], kernels=3.0))
    chosen = choose_step_time(step, cal, spec=None, time_bare_step=lambda: 0.007)
    assert (chosen.source, chosen.seconds) == (STEP_TIME_BARE, 0.007)
    assert chosen.warning is not None and "Lightning's loop" in chosen.warning
    with pytest.raises(ValueError, match="none of its runs is of this model and batch"):
        choose_step_time(step, cal, spec=None, time_bare_step=None)


def test_the_plan_names_its_step_time_and_the_calibrations_sensor_kind(step: StepProfile) -> None:
    import dataclasses

    from lightning_to_energy.planning import STEP_TIME_GIVEN, StepTime

    cal = dataclasses.replace(calibration("duration_s"), sensor_kind="estimate")
    plan = plan_run(step, 100, cal, step_time_s=StepTime(0.05, STEP_TIME_GIVEN, "as given"))
    assert (plan.step_time_s, plan.step_time_source, plan.step_time_detail) == (
        0.05,
        STEP_TIME_GIVEN,
        "as given",
    )
    assert (plan.sensor_kind, plan.energy_label) == (
        "estimate",
        "estimated (estimate, not measured)",
    )
    # a roofline calibration's time is the roofline of its hardware, and says so
    roof = plan_run(step, 100, calibration("roofline_s"))
    assert roof.step_time_source == "roofline"
    assert roof.step_time_detail == "roofline estimate on " + find_hardware("h100-sxm").name


@pytest.mark.parametrize("given", [0.5, "StepTime"])
def test_plan_run_refuses_a_step_time_a_physical_calibration_would_ignore(
    given: object,
) -> None:
    from lightning_to_energy.calibration import builtin_calibration
    from lightning_to_energy.planning import STEP_TIME_GIVEN, StepTime

    cal = builtin_calibration("h100-sxm")
    assert cal is not None and cal.physical is not None
    step = profile(TinyMLP(), torch.randn(8, 16), train=True)
    step_time = StepTime(0.5, STEP_TIME_GIVEN, "given") if given == "StepTime" else given
    # the physical model predicts the step's time itself: 0.5 s was once silently ignored
    with pytest.raises(ValueError) as caught:
        plan_run(step, 10, cal, step_time_s=step_time)  # type: ignore[arg-type]
    assert str(caught.value) == (
        "expected no step_time_s with this calibration: it carries the physical step model of "
        "h100-sxm, which predicts each step's time itself; found step_time_s=0.5, which it would "
        "ignore. Fix: drop step_time_s, or pass a calibration fitted on measured time "
        "(`lightning-to-energy fit energy_report.json --out FILE`)."
    )
    # without it the same call plans, with the model's own step time
    plan = plan_run(step, 10, cal)
    assert plan.model == "physical" and plan.step_time_s is not None and plan.step_time_s > 0
