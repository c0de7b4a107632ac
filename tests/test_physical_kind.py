"""Kernel kinds (``OpCost.kind``) and the convolutions' own curve in the physical model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_to_energy.counting import profile
from lightning_to_energy.counting.cost_model import AluOp, NumberFormat, Unit
from lightning_to_energy.counting.profile import StepProfile
from lightning_to_energy.counting.registry import CONV, MATMUL, OpCost
from lightning_to_energy.hardware.specs import find_hardware
from lightning_to_energy.model.physical import (
    PhysicalModel,
    PhysicalParams,
    energy_at,
    predict_step,
)
from lightning_to_energy.model.physical_prior import prior_for

TF32 = (Unit.MATRIX, NumberFormat.TF32)


def _fma_by_kind(p: StepProfile) -> dict[str | None, float]:
    out: dict[str | None, float] = {}
    for cost, calls in p.op_costs:
        for (op, _, unit), n in cost.ops.items():
            if op is AluOp.FMA and unit is Unit.MATRIX:
                out[cost.kind] = out.get(cost.kind, 0.0) + n * calls
    return out


def test_counted_matmuls_and_convolutions_carry_their_kind() -> None:
    torch.manual_seed(0)
    with torch.device("meta"):
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(36, 5))
        x = torch.randn(2, 3, 5, 5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    p = profile(model, x, train=True, optimizer=opt)
    by_kind = _fma_by_kind(p)
    # conv: out [2, 4, 3, 3]: 2 x 3 x 3 x 4 x 3 x 3 x 3 = 1944 FMAs forward; backward only
    # grad_weight (the input needs no grad): 1944 more -> 3888
    assert by_kind[CONV] == pytest.approx(3888)
    # linear 36 -> 5 on 2 rows: 2 x 5 x 36 = 360 forward (addmm), grad_weight 360 (mm) and
    # grad_input 360 (mm, the conv's output needs its grad) -> 1080
    assert by_kind[MATMUL] == pytest.approx(1080)
    # no matrix work without a kind; element-wise work (bias grads, SGD) has none
    assert None not in by_kind
    kinds = {cost.kind for cost, _ in p.op_costs}
    assert kinds == {CONV, MATMUL, None}
    # the kind survives what the profile cache and the tracker do to profiles
    assert _fma_by_kind(p + p)[CONV] == pytest.approx(2 * 3888)
    assert _fma_by_kind(p.scaled(3))[MATMUL] == pytest.approx(3 * 1080)


def test_old_opcost_calls_keep_working() -> None:
    # positional construction, as every formula and caller wrote it before the kind
    cost = OpCost({(AluOp.FMA, NumberFormat.FP32, Unit.MATRIX): 8.0}, 16, 8, 1, 16)
    assert cost.kind is None and cost.modelled


def _params(**values: float) -> PhysicalParams:
    flat = {
        "peak_flop_s[matrix/tf32]": 1e14,
        "flop_half[matrix/tf32]": 1e9,
        "conv_share[matrix/tf32]": 0.5,
        "conv_flop_half[matrix/tf32]": 4e9,
        "j_per_flop[matrix/tf32]": 1e-12,
        "ramp_share": 0.5,
        "launch_s": 1e-6,
        "host_step_s": 1e-6,
        "base_w": 100.0,
        "busy_w": 0.0,
    }
    flat.update(values)
    return prior_for(find_hardware("h100-sxm")).with_values(flat)


def _step(kind: str | None) -> StepProfile:
    # one kernel of 1e9 TF32 FMAs (2e9 FLOPs), no bytes, dispatched by no phase
    cost = OpCost({(AluOp.FMA, NumberFormat.TF32, Unit.MATRIX): 1e9}, 0, 0, 1, 0, kind=kind)
    return StepProfile(kernels=1, op_costs=((cost, 1.0),))


def test_the_conv_curve_moves_a_convolution_and_not_a_matmul() -> None:
    params = _params()
    conv, mm = predict_step(_step(CONV), params), predict_step(_step(MATMUL), params)
    # conv: (2e9 / 0.5 + 4e9) / 1e14 = 80 us; matmul: (2e9 + 1e9) / 1e14 = 30 us
    assert conv.device_s == pytest.approx(80e-6)
    assert mm.device_s == pytest.approx(30e-6)
    # work: conv (2e9 / 0.5 + 0.5 x 4e9) x 1e-12 = 6 mJ; matmul (2e9 + 0.5 x 1e9) x 1e-12 = 2.5 mJ
    assert conv.work_j == pytest.approx(6e-3)
    assert mm.work_j == pytest.approx(2.5e-3)
    # energy = base x time + work: 100 x 80e-6 + 6e-3 = 14 mJ
    assert conv.energy_j == pytest.approx(14e-3)
    slower = _params(**{"conv_share[matrix/tf32]": 0.25, "conv_flop_half[matrix/tf32]": 2e9})
    # conv: (2e9 / 0.25 + 2e9) / 1e14 = 100 us; the matmul stays at 30 us
    assert predict_step(_step(CONV), slower).device_s == pytest.approx(100e-6)
    assert predict_step(_step(MATMUL), slower).device_s == pytest.approx(30e-6)
    # an untyped kernel (kind None) runs on the matmul curve too: 30 us
    assert predict_step(_step(None), slower).device_s == pytest.approx(30e-6)
    # energy at a measured 200 us: 100 x 200e-6 + (2e9 / 0.25 + 0.5 x 2e9) x 1e-12 = 29 mJ
    assert energy_at(_step(CONV), slower, 200e-6).energy_j == pytest.approx(29e-3)


def test_a_convolutions_vector_work_stays_on_the_vector_curve() -> None:
    params = _params(**{"peak_flop_s[vector/fp32]": 1e13, "flop_half[vector/fp32]": 1e8})
    ops = {
        (AluOp.FMA, NumberFormat.TF32, Unit.MATRIX): 1e9,
        (AluOp.ADD, NumberFormat.FP32, Unit.VECTOR): 1e9,
    }
    cost = OpCost(ops, 0, 0, 1, 0, kind=CONV)
    pred = predict_step(StepProfile(kernels=1, op_costs=((cost, 1.0),)), params)
    # matrix: (2e9 / 0.5 + 4e9) / 1e14 = 80 us; vector (an ADD takes an FMA's slot, 2 peak
    # FLOPs, not scaled by the conv share): (2e9 + 1e8) / 1e13 = 210 us; summed: 290 us
    assert pred.device_s == pytest.approx(290e-6)


def test_params_written_before_the_conv_curve_read_with_its_prior() -> None:
    prior = prior_for(find_hardware("h100-sxm"))
    old = prior.to_dict()
    del old["conv_share"], old["conv_flop_half"]
    old["ranges"] = {n: r for n, r in old["ranges"].items() if not n.startswith("conv_")}
    old["notes"] = {n: r for n, r in old["notes"].items() if not n.startswith("conv_")}
    model = {
        "params": old,
        "target": "h100-sxm",
        "time_log_halfwidth": 0.1,
        "energy_log_halfwidth": 0.1,
        "level": 0.9,
        "basis": "test",
        "formats": ["matrix/tf32"],
        "flops_range": [1.0, 2.0],
        "kernels_range": [1.0, 2.0],
    }
    params = PhysicalModel.from_dict(model).params
    # the conv tables take the H100 prior: 253.4 / 352.9 = 0.718 of the TF32 matmul rate
    assert params.conv_share[TF32] == pytest.approx(253.4 / 352.9)
    assert params.conv_flop_half == prior.conv_flop_half
    assert params.range_of("conv_share[matrix/tf32]") == (0.05, 1.5)
    assert params.notes["conv_share[matrix/tf32]"].startswith("not in the file")
    # without a prior, convolutions run on the matmul curve, as when the file was written
    bare = PhysicalParams.from_dict(old)
    assert set(bare.conv_share.values()) == {1.0}
    assert bare.conv_flop_half == bare.flop_half
    assert bare.notes["conv_share[matrix/tf32]"] == "not given: convolutions on the matmul curve"
    step = _step(CONV)
    # (2e9 + flop_half) / peak: the matmul curve of the same params
    key_peak, key_half = bare.peak_flop_s[TF32], bare.flop_half[TF32]
    assert predict_step(step, bare).device_s == pytest.approx((2e9 + key_half) / key_peak)
    # a round trip keeps the conv tables
    again = PhysicalParams.from_dict(params.to_dict())
    assert again.conv_share == params.conv_share


def test_conv_tables_must_match_or_be_empty() -> None:
    prior = prior_for(find_hardware("h100-sxm"))
    with pytest.raises(ValueError, match="conv_share"):
        PhysicalParams.from_dict({**prior.to_dict(), "conv_share": {"matrix/tf32": 0.7}})


def test_a_convolutions_bias_kernel_pays_the_vector_ramp_not_a_second_matrix_ramp() -> None:
    params = _params(
        **{
            "peak_flop_s[vector/fp32]": 1e13,
            "flop_half[vector/fp32]": 1e8,
            "j_per_flop[vector/fp32]": 1e-11,
        }
    )
    ops = {
        (AluOp.FMA, NumberFormat.TF32, Unit.MATRIX): 1e9,
        (AluOp.ADD, NumberFormat.FP32, Unit.VECTOR): 1e9,
    }
    # CUDA's convolution with a bias: cuDNN's kernel, then the bias add (vector_kernels 1)
    split = OpCost(ops, 0, 0, 2, 0, kind=CONV, vector_kernels=1)
    # the same two kernels counted as before vector_kernels: each pays every ramp
    both = OpCost(ops, 0, 0, 2, 0, kind=CONV)
    after = predict_step(StepProfile(kernels=2, op_costs=((split, 1.0),)), params)
    before = predict_step(StepProfile(kernels=2, op_costs=((both, 1.0),)), params)
    # after: matrix (2e9 / 0.5 + 1 x 4e9) / 1e14 = 80 us, vector (2e9 + 1 x 1e8) / 1e13 = 210 us
    assert after.device_s == pytest.approx(290e-6)
    # before: matrix (4e9 + 2 x 4e9) / 1e14 = 120 us, vector (2e9 + 2 x 1e8) / 1e13 = 220 us
    assert before.device_s == pytest.approx(340e-6)
    # work after: matrix (4e9 + 0.5 x 4e9) x 1e-12 = 6 mJ, vector (2e9 + 0.5 x 1e8) x 1e-11
    # = 20.5 mJ -> 26.5 mJ (before: 8 mJ + 21 mJ = 29 mJ)
    assert after.work_j == pytest.approx(26.5e-3)
    assert before.work_j == pytest.approx(29e-3)
    # three calls: the ramps scale with the calls, 3 x 26.5 = 79.5 mJ, 3 x 290 = 870 us
    three = predict_step(StepProfile(kernels=6, op_costs=((split, 3.0),)), params)
    assert three.work_j == pytest.approx(79.5e-3)
    assert three.device_s == pytest.approx(870e-6)
    # both kernels still move bytes: 1e9 B at 1e12 B/s with a 1e6 B ramp per kernel,
    # (1e9 + 2 x 1e6) / 1e12 = 1.002 ms, above the 290 us of compute
    memory = _params(bandwidth_b_s=1e12, bytes_half=1e6)
    heavy = OpCost(ops, int(1e9), 0, 2, 0, kind=CONV, vector_kernels=1)
    pred = predict_step(StepProfile(kernels=2, op_costs=((heavy, 1.0),)), memory)
    assert pred.device_s == pytest.approx(1.002e-3)
