"""The physical step model: forward model, priors, serialisation and fitting."""

from __future__ import annotations

import json
import math

import pytest

from lightning_to_energy.counting import StepProfile
from lightning_to_energy.counting.cost_model import AluOp, NumberFormat, Unit
from lightning_to_energy.counting.profile import PhaseTotals
from lightning_to_energy.counting.registry import OpCost
from lightning_to_energy.hardware.specs import find_hardware
from lightning_to_energy.model import (
    PhysicalParams,
    Sample,
    energy_at,
    fit_physical,
    predict_step,
    prior_for,
)

F, MATRIX, VECTOR = NumberFormat, Unit.MATRIX, Unit.VECTOR
TF32, VFP32, BF16 = (MATRIX, F.TF32), (VECTOR, F.FP32), (MATRIX, F.BF16)


def _params(**over: float) -> PhysicalParams:
    base = dict(
        base_w=100.0,
        peak_flop_s={TF32: 1e12, VFP32: 1e13},
        flop_half={TF32: 1e9, VFP32: 1e6},
        bandwidth_b_s=1e11,
        bytes_half=1e6,
        launch_s=1e-5,
        host_step_s=1e-4,
        dispatch_s=dict.fromkeys(("forward", "backward", "optimizer", "other"), 1e-5),
        j_per_flop={TF32: 1e-12, VFP32: 1e-11},
        j_per_byte=1e-10,
        busy_w=50.0,
    )
    base.update(over)
    return PhysicalParams(**base)  # type: ignore[arg-type]


def _profile(
    matmul_fma: float, add_bytes: float, forward: int = 2, backward: int = 3
) -> StepProfile:
    matmul = OpCost({(AluOp.FMA, F.TF32, MATRIX): matmul_fma}, bytes_read=int(1e8), kernels=1)
    add = OpCost({(AluOp.ADD, F.FP32, VECTOR): 1e6}, bytes_read=int(add_bytes), kernels=1)
    phases = {p: PhaseTotals() for p in ("forward", "backward", "optimizer", "other")}
    phases["forward"] = PhaseTotals(kernels=forward)
    phases["backward"] = PhaseTotals(kernels=backward)
    return StepProfile(
        kernels=forward + backward, by_phase=phases, op_costs=((matmul, 2), (add, 3))
    )


def test_forward_model_by_hand() -> None:
    pred = predict_step(_profile(5e9, 8e6), _params())
    # matmul: 2 * 5e9 = 1e10 FLOPs; compute (1e10 + 1e9 ramp) / 1e12 = 0.011 s > memory
    # (1e8 + 1e6) / 1e11 = 1.01e-3 s > launch 1e-5 s; 2 calls -> 0.022 s
    # add: compute (2e6 + 1e6) / 1e13 = 3e-7 s; memory (8e6 + 1e6) / 1e11 = 9e-5 s; 3 calls
    # -> 2.7e-4 s; device = 0.022 + 0.00027 = 0.02227 s
    assert pred.device_s == pytest.approx(0.02227)
    # host = 1e-4 + (2 + 3) kernels * 1e-5 = 1.5e-4 s
    assert pred.host_s == pytest.approx(1.5e-4)
    assert pred.bound == "device"
    assert pred.time_s == pytest.approx(0.02227)
    # work = 2e10 * 1e-12 + 6e6 * 1e-11 + (2 * 1e8 + 3 * 8e6) * 1e-10 = 0.02 + 6e-5 + 0.0224
    assert pred.work_j == pytest.approx(0.04246)
    # static = 100 W * 0.02227 s; busy = 50 W * 0.02227 s
    assert pred.static_j == pytest.approx(2.227)
    assert pred.busy_j == pytest.approx(1.1135)
    # 2.227 + 0.04246 + 1.1135 = 3.38296
    assert pred.energy_j == pytest.approx(3.38296)


def test_host_bound_step_and_energy_at_measured_time() -> None:
    slow_host = _params(
        dispatch_s=dict.fromkeys(("forward", "backward", "optimizer", "other"), 1e-2)
    )
    pred = predict_step(_profile(5e9, 8e6), slow_host)
    # host = 1e-4 + 5 * 1e-2 = 0.0501 s > device 0.02227 s
    assert pred.bound == "host"
    assert pred.time_s == pytest.approx(0.0501)
    at = energy_at(_profile(5e9, 8e6), _params(), 0.03)
    # 100 W * 0.03 s + 0.04246 J + 50 W * 0.02227 s (busy only while the device runs)
    assert at.energy_j == pytest.approx(3.0 + 0.04246 + 1.1135)


def test_round_trip_through_json() -> None:
    prior = prior_for(find_hardware("h100-sxm"))
    back = PhysicalParams.from_dict(json.loads(json.dumps(prior.to_dict())))
    assert back == prior
    assert back.ranges == prior.ranges
    assert back.notes["base_w"] == prior.notes["base_w"]
    with pytest.raises(ValueError, match="format"):
        PhysicalParams.from_dict({"base_w": 1.0})


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValueError, match="base_w"):
        _params(base_w=-1.0)
    with pytest.raises(ValueError, match="flop_half"):
        _params(flop_half={TF32: 1e9})


def test_h100_prior_comes_from_the_microbenchmarks() -> None:
    prior = prior_for(find_hardware("h100-sxm"))
    # bf16 8192^3 matmul: 676.1 TFLOP/s at 696.7 W; base 126 W, busy prior 60 W
    # (696.7 - 126 - 60) / 676.1e12 = 0.7554 pJ/FLOP
    assert prior.j_per_flop[BF16] == pytest.approx(510.7 / 676.1e12)
    assert prior.peak_flop_s[BF16] == pytest.approx(676.1e12)
    # tf32: (720.3 - 186) / 352.9e12 = 1.514 pJ/FLOP
    assert prior.j_per_flop[TF32] == pytest.approx(534.3 / 352.9e12)
    assert "microbenchmark" in prior.notes["j_per_flop[matrix/bf16]"]
    # the ranges: bandwidth 1.5 to 3.35 TB/s, 20 to 300 pJ/B, base between 72.7 W and 700 W
    assert prior.range_of("bandwidth_b_s") == pytest.approx((1.5075e12, 3.35e12))
    assert prior.range_of("j_per_byte") == pytest.approx((20e-12, 300e-12))
    assert prior.range_of("base_w") == pytest.approx((72.7, 700.0))


def _synthetic(truth: PhysicalParams) -> list[Sample]:
    samples = []
    for i, (fma, add_bytes) in enumerate(
        [(a, b) for a in (1e9, 5e9, 3e10) for b in (1e6, 1e9, 8e9)]
    ):
        p = _profile(fma, add_bytes)
        pred = predict_step(p, truth)
        samples.append(Sample(p, pred.energy_j, pred.time_s, label=str(i)))
    return samples


def test_fit_recovers_known_parameters_and_keeps_bf16_prior() -> None:
    truth = _params(bandwidth_b_s=2e11, base_w=120.0, j_per_byte=2e-10)
    prior = _params()
    free = ["bandwidth_b_s", "peak_flop_s[matrix/tf32]", "base_w", "j_per_byte"]
    fit = fit_physical(_synthetic(truth), prior, free=free)
    # noise-free samples from the truth: the fit finds it back
    assert fit.params.bandwidth_b_s == pytest.approx(2e11, rel=1e-3)
    assert fit.params.base_w == pytest.approx(120.0, rel=1e-3)
    assert fit.params.j_per_byte == pytest.approx(2e-10, rel=1e-3)
    assert fit.status["base_w"].source == "fitted"
    assert max(abs(r) for r in fit.energy_rel_residuals) < 1e-4


def test_bf16_without_bf16_data_keeps_the_microbenchmark_prior() -> None:
    prior = prior_for(find_hardware("h100-sxm"))
    truth = prior.with_values({"base_w": 130.0})
    samples = _synthetic(truth)
    fit = fit_physical(samples, prior, free=["base_w", "j_per_flop[matrix/bf16]"])
    status = fit.status["j_per_flop[matrix/bf16]"]
    assert status.source == "prior"
    assert "no sample exercises it" in status.reason
    # unchanged: (696.7 - 126 - 60) / 676.1e12
    assert fit.params.j_per_flop[BF16] == pytest.approx(510.7 / 676.1e12)
    assert math.isclose(fit.params.base_w, 130.0, rel_tol=1e-3)


def test_ramp_energy_by_hand() -> None:
    pred = predict_step(_profile(5e9, 8e6), _params(ramp_share=0.5))
    # ramps: matmul 2 calls x 1 kernel x 1e9 FLOPs x 1e-12 J; add 3 x 1 x 1e6 x 1e-11 J;
    # half of them: 0.5 * (2e-3 + 3e-5) = 1.015e-3 J on top of 0.04246 J
    assert pred.work_j == pytest.approx(0.04246 + 1.015e-3)


def test_a_rate_and_ramp_one_benchmark_cannot_separate_keep_the_ramp_prior() -> None:
    prior = _params()
    truth = _params(peak_flop_s={TF32: 2e12, VFP32: 1e13})
    one = _profile(5e9, 8e6)
    pred = predict_step(one, truth)
    samples = [Sample(one, pred.energy_j, pred.time_s), Sample(one, pred.energy_j, pred.time_s)]
    fit = fit_physical(samples, prior, free=["peak_flop_s[matrix/tf32]", "flop_half[matrix/tf32]"])
    # one step size: time = (F + half) / peak fixes only their ratio, so the ramp keeps its prior
    assert fit.status["flop_half[matrix/tf32]"].source == "prior"
    assert fit.status["peak_flop_s[matrix/tf32]"].source == "fitted"
    # 2 calls x (1e10 + 1e9) / peak + 2.7e-4 s (the adds) = the true time
    assert fit.params.peak_flop_s[TF32] == pytest.approx(2e12, rel=1e-3)


def test_the_parameter_table_lists_what_the_steps_run_and_counts_the_rest() -> None:
    from lightning_to_energy.counting.registry import CONV
    from lightning_to_energy.study.physical_eval import params_table, unused_priors_line

    prior = prior_for(find_hardware("h100-sxm"))
    # a tf32 matmul (matmul curve), an fp32 convolution (convolution curve: its matrix work;
    # its bias add runs fp32 on the vector units), and an fp32 add on the vector units, all
    # moving bytes; kernels in the forward and backward phases only
    matmul = OpCost({(AluOp.FMA, F.TF32, MATRIX): 1e9}, bytes_read=int(1e7), kernels=1)
    conv = OpCost(
        {(AluOp.FMA, F.FP32, MATRIX): 1e9, (AluOp.ADD, F.FP32, VECTOR): 1e6},
        bytes_read=int(1e7),
        kernels=2,
        kind=CONV,
    )
    add = OpCost({(AluOp.ADD, F.FP32, VECTOR): 1e6}, bytes_read=int(1e6), kernels=1)
    phases = {p: PhaseTotals() for p in ("forward", "backward", "optimizer", "other")}
    phases["forward"], phases["backward"] = PhaseTotals(kernels=2), PhaseTotals(kernels=3)
    samples = []
    for scale in (1.0, 2.0, 4.0):
        profile = StepProfile(
            kernels=5, by_phase=phases, op_costs=((matmul, scale), (conv, 1.0), (add, 2 * scale))
        )
        pred = predict_step(profile, prior)
        samples.append(Sample(profile, pred.energy_j, pred.time_s, label=str(scale)))
    fit = fit_physical(samples, prior)
    table = params_table(fit)
    # every step: base_w, busy_w, ramp_share, host_step_s, launch_s; bytes moved: bandwidth_b_s,
    # bytes_half, j_per_byte (8). matrix/tf32 ran matmuls only: peak_flop_s, j_per_flop,
    # flop_half (3); matrix/fp32 ran a convolution only: peak_flop_s, j_per_flop, conv_share,
    # conv_flop_half (4); vector/fp32: peak_flop_s, j_per_flop, flop_half (3); dispatch_s of
    # forward and backward (2): 8 + 3 + 4 + 3 + 2 = 20 rows
    expected = {"base_w", "busy_w", "ramp_share", "host_step_s", "launch_s"}
    expected |= {"bandwidth_b_s", "bytes_half", "j_per_byte"}
    expected |= {f"{p}[matrix/tf32]" for p in ("peak_flop_s", "j_per_flop", "flop_half")}
    expected |= {
        f"{p}[matrix/fp32]" for p in ("peak_flop_s", "j_per_flop", "conv_share", "conv_flop_half")
    }
    expected |= {f"{p}[vector/fp32]" for p in ("peak_flop_s", "j_per_flop", "flop_half")}
    expected |= {"dispatch_s[forward]", "dispatch_s[backward]"}
    assert set(table) == expected
    # the fitted ones are among them (none of the left-out ones was fitted)
    assert {n for n, s in fit.status.items() if s.source == "fitted"} <= expected
    assert any(s["source"] == "fitted" for s in table.values())
    # the H100 prior: 8 scalars + 24 (unit, format) keys x 5 tables + 4 phases = 132;
    # 132 - 20 = 112 left out, among them the fp32 matmul curve the convolution did not use
    assert len(fit.unused()) == 112
    assert "flop_half[matrix/fp32]" in fit.unused()
    assert "conv_share[matrix/tf32]" in fit.unused()
    assert "conv_flop_half[vector/int64]" in fit.unused()
    assert unused_priors_line(112).startswith("  and 112 priors of formats, units or curves")
    assert "kept in the file" in unused_priors_line(112)
