"""The calibrated range beyond formats and sizes: optimizers, and matrix curves (convolutions
against matmuls) that no calibrated step ran, are labelled extrapolations and widened."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from lightning_to_energy.calibration import builtin_calibration
from lightning_to_energy.counting import profile
from lightning_to_energy.counting.cost_model import AluOp, NumberFormat, Unit
from lightning_to_energy.counting.profile import StepProfile
from lightning_to_energy.counting.registry import CONV, MATMUL, OpCost
from lightning_to_energy.model.physical import (
    PhysicalModel,
    matrix_curves,
    optimizer_kernels,
)
from lightning_to_energy.model.physical_fit import Sample, calibrated_range_fields
from test_physical_widening import _model as widening_model


def _mlp_step(optimizer: str) -> StepProfile:
    torch.manual_seed(0)
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        x = torch.randn(32, 64)
    params = model.parameters()
    opt = torch.optim.SGD(params, lr=0.1) if optimizer == "sgd" else torch.optim.AdamW(params)
    return profile(model, x, train=True, optimizer=opt, hardware="h100-sxm")


def _model(steps: list[StepProfile], **over: object) -> PhysicalModel:
    """test_physical_widening's toy model, its widening x1.5 (time) and x3.0 (energy), and
    the calibrated range of ``steps``."""
    fields = {
        "time_widening": 1.5,
        "energy_widening": 3.0,
        **calibrated_range_fields([Sample(p, 1.0, 1.0) for p in steps]),
    }
    return widening_model(**{**fields, **over})


def test_an_adamw_step_against_sgd_steps_is_an_extrapolation_widened_by_the_measured_factor() -> (
    None
):
    sgd, adamw = _mlp_step("sgd"), _mlp_step("adamw")
    # foreach SGD: one _foreach_add_ (p -= lr g); foreach AdamW: _foreach_add_ (step),
    # _foreach_mul_ (weight decay), _foreach_lerp_ (m), _foreach_mul_ and _foreach_addcmul_
    # (v), _foreach_sqrt, _foreach_div_, _foreach_add_ (eps), _foreach_addcdiv_: 9
    assert optimizer_kernels(sgd) == 1
    assert optimizer_kernels(adamw) == 9
    model = _model([sgd])
    assert model.optimizer_kernels_range == (1.0, 1.0)
    # same format and size: only the optimizer tells them apart
    assert model.extrapolation(sgd) == ()
    (why,) = model.extrapolation(adamw)
    assert why.startswith("9 optimizer kernels per step, calibrated on 1 to 1")
    assert "dispatch_s[optimizer]" in why
    step = model.plan(adamw)
    # widened in log space by the model's factors: e^(1.5 x 0.1) and e^(3.0 x 0.2)
    assert step.time_high_s / step.prediction.time_s == pytest.approx(math.exp(0.15))
    assert step.energy_low_j / step.prediction.energy_j == pytest.approx(math.exp(-0.6))
    assert "optimizer kernels" in step.basis and "x1.5 (time)" in step.basis
    # calibrated on AdamW steps, an SGD step (fewer optimizer kernels) is inside the range
    assert _model([adamw]).extrapolation(sgd) == ()


def _matrix_step(kind: str, fmt: NumberFormat = NumberFormat.TF32) -> StepProfile:
    cost = OpCost({(AluOp.FMA, fmt, Unit.MATRIX): 1e9}, 1000, 1000, 1, int(2e9), kind=kind)
    return StepProfile(flops=2e9, kernels=1, op_costs=((cost, 1.0),))


def test_convolutions_against_matmul_steps_and_the_reverse_are_extrapolations() -> None:
    conv, mm = _matrix_step(CONV), _matrix_step(MATMUL)
    # the same (unit, format), so the format test alone saw neither
    assert matrix_curves(conv) == {"conv matrix/tf32"}
    assert matrix_curves(mm) == {"matmul matrix/tf32"}
    on_matmuls, on_convs = _model([mm]), _model([conv])
    assert on_matmuls.formats == on_convs.formats == ("matrix/tf32",)
    assert on_matmuls.extrapolation(mm) == on_convs.extrapolation(conv) == ()
    assert on_matmuls.extrapolation(conv) == (
        "conv work in ['matrix/tf32'], which no calibrated step ran as conv work (its curve "
        "there, conv_share, conv_flop_half, is not calibrated on steps)",
    )
    (why,) = on_convs.extrapolation(mm)
    assert why.startswith("matmul work in ['matrix/tf32']") and "flop_half" in why
    # steps of both kinds calibrate both curves
    assert _model([mm, conv]).extrapolation(conv) == ()


def test_the_new_range_round_trips_and_an_older_file_behaves_as_before() -> None:
    sgd, adamw = _mlp_step("sgd"), _mlp_step("adamw")
    model = _model([sgd, _matrix_step(MATMUL)])
    back = PhysicalModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert back == model
    # the MLP's fp32 matmuls and the hand step's TF32 one
    assert back.curves == ("matmul matrix/fp32", "matmul matrix/tf32")
    old = model.to_dict()
    del old["curves"], old["optimizer_kernels_range"]  # a file written before they existed
    before = PhysicalModel.from_dict(old)
    assert before.curves is None and before.optimizer_kernels_range is None
    # as before: the AdamW step is no extrapolation, nor a TF32 convolution (format seen)
    assert before.extrapolation(adamw) == ()
    assert before.extrapolation(_matrix_step(CONV)) == ()
    assert "curves" not in before.to_dict()


def test_an_fp16_convolution_against_the_builtin_h100_calibration_is_labelled() -> None:
    cal = builtin_calibration("h100-sxm")
    assert cal is not None and cal.physical is not None
    model = PhysicalModel.from_dict(cal.physical)
    half = _matrix_step(CONV, NumberFormat.FP16)
    why = model.extrapolation(half)
    # no calibrated step ran fp16 (its conv_share is bf16's benchmark ratio, a prior)
    assert why[0].startswith("formats no calibrated step ran: ['matrix/fp16']")
    # as bf16, whose conv_share a benchmark did fit but no training step ran
    assert model.extrapolation(_matrix_step(CONV, NumberFormat.BF16))[0].startswith(
        "formats no calibrated step ran: ['matrix/bf16']"
    )
    # the built-in file records its steps' curves (TF32 convolutions, fp32 matmuls): the fp16
    # convolution's curve is named too
    assert model.curves == ("conv matrix/tf32", "matmul matrix/fp32")
    assert any(w.startswith("conv work in ['matrix/fp16']") for w in why)
    # a TF32 matmul: the format is calibrated, by convolutions only
    tf32_mm = model.extrapolation(_matrix_step(MATMUL))
    assert tf32_mm[0].startswith("matmul work in ['matrix/tf32']")
    # and an AdamW step, in the format and size of its steps, is labelled by its optimizer
    assert model.optimizer_kernels_range == (1.0, 1.0)
    assert any("optimizer kernels" in w for w in model.extrapolation(_mlp_step("adamw")))
    # and the prior the prediction rests on says where it comes from
    assert "bf16" in model.params.notes["conv_share[matrix/fp16]"]
    step = model.plan(half)
    # widened by the model's own factor: e^(widening x half width)
    assert step.time_high_s / step.prediction.time_s == pytest.approx(
        math.exp(model.time_widening * model.time_log_halfwidth)
    )
