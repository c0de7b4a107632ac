"""The shared H100 data importer and the physical model's cross-validated evaluation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from lightning_to_energy.counting.cost_model import AluOp, NumberFormat, Unit
from lightning_to_energy.hardware.specs import find_hardware
from lightning_to_energy.model import Sample, predict_step, prior_for
from lightning_to_energy.study.physical_eval import (
    SharedRow,
    conformal_halfwidth,
    cross_conformal,
    evaluate,
    precision_scores,
)
from lightning_to_energy.study.shared_data import (
    SharedConfig,
    SharedData,
    build_model,
    count_step,
    is_shared_data,
    load_shared_data,
    microbenchmark_samples,
)

_CANDIDATES = [
    Path(__file__).resolve().parents[2] / "shared" / "data" / "h100-training-steps.json",
    Path("/work/shared/data/h100-training-steps.json"),
]
SHARED = next((p for p in _CANDIDATES if p.is_file()), None)


def _config(family: str, depth: int, width: int, shape: tuple[int, ...]) -> SharedConfig:
    return SharedConfig(
        f"{family}-d{depth}-s{width}-relu", family, depth, width, "relu", shape, 1.0, 1e-3
    )


def test_models_are_built_as_described() -> None:
    mlp = build_model(_config("mlp", 2, 16, (4, 1, 28, 28)))
    # Flatten, 2 x (Linear, ReLU), Linear(16, 10)
    assert [type(m).__name__ for m in mlp] == [
        "Flatten",
        "Linear",
        "ReLU",
        "Linear",
        "ReLU",
        "Linear",
    ]
    assert mlp[1].in_features == 784  # 1 * 28 * 28
    cnn = build_model(_config("cnn", 4, 8, (2, 3, 32, 32)))
    # a MaxPool2d after the 2nd and the 4th convolution
    assert sum(isinstance(m, nn.MaxPool2d) for m in cnn) == 2
    # conv, relu, conv, relu, pool (index 4), conv, relu, conv, relu, pool (index 9)
    assert isinstance(cnn[4], nn.MaxPool2d) and isinstance(cnn[9], nn.MaxPool2d)
    tfm = build_model(_config("tfm", 2, 16, (2, 128, 16)))
    # the head reads 128 positions x 16 features
    assert tfm[-1].in_features == 128 * 16
    with pytest.raises(ValueError, match="activation"):
        build_model(SharedConfig("x", "mlp", 1, 4, "swish", (1, 4), 1.0, 1.0))


def test_counting_labels_cuda_convolutions_tf32() -> None:
    step = count_step(_config("cnn", 2, 8, (2, 3, 8, 8)))
    keys = {(op, fmt, unit) for cost, _ in step.op_costs for op, fmt, unit in cost.ops}
    # cudnn.allow_tf32 is True on CUDA: the convolutions run on tensor cores in TF32
    assert (AluOp.FMA, NumberFormat.TF32, Unit.MATRIX) in keys
    mlp = count_step(_config("mlp", 1, 8, (2, 1, 4, 4)))
    mlp_keys = {(op, fmt, unit) for cost, _ in mlp.op_costs for op, fmt, unit in cost.ops}
    # matmul TF32 is off by default: fp32 matmuls stay fp32
    assert (AluOp.FMA, NumberFormat.FP32, Unit.MATRIX) in mlp_keys
    assert (AluOp.FMA, NumberFormat.TF32, Unit.MATRIX) not in mlp_keys
    # one step: forward, backward and one foreach SGD update (a single optimizer kernel here)
    assert mlp.by_phase["optimizer"].kernels >= 1


def test_microbenchmarks_become_samples() -> None:
    data = SharedData(
        configs=(),
        microbenchmarks={"matmul": {"bf16": {"TFLOP_per_s": 676.1, "mean_W": 696.7}}},
    )
    (sample,) = microbenchmark_samples(data)
    # 2 * 8192^3 FLOPs / 676.1e12 FLOP/s = 1.6263e-3 s; energy 696.7 W * that
    assert sample.time_s == pytest.approx(2 * 8192**3 / 676.1e12)
    assert sample.energy_j == pytest.approx(696.7 * 2 * 8192**3 / 676.1e12)
    pred = predict_step(sample.profile, prior_for(find_hardware("h100-sxm")))
    # the prior's bf16 rate is the benchmark's; the 4 us ramp adds 4e-6 s
    assert pred.device_s == pytest.approx(sample.time_s + 4e-6, rel=1e-3)


@pytest.mark.skipif(SHARED is None, reason="the shared data (../shared/data) is not here")
def test_shared_file_loads() -> None:
    assert SHARED is not None
    data = load_shared_data(SHARED)
    # 54 configurations of 18 shapes (family x depth x width)
    assert len(data.configs) == 54
    assert len({c.shape for c in data.configs}) == 18
    assert is_shared_data(json.loads(SHARED.read_text()))
    micro = {s.label: s for s in microbenchmark_samples(data)}
    assert set(micro) == {
        "matmul-fp32",
        "matmul-tf32",
        "matmul-bf16",
        "matmul-fp16",
        "conv3x3-fp32",
        "conv3x3-tf32",
        "conv3x3-bf16",
    }
    conv = micro["conv3x3-tf32"]
    ((cost, calls),) = conv.profile.op_costs
    # one cuDNN kernel of 64 x 56 x 56 x 256 x 256 x 9 = 118_380_036_096 FMAs, a convolution
    assert cost.kind == "conv" and calls == 1
    assert cost.flops == 2 * 118_380_036_096
    # at the measured 253.4 TFLOP/s: 2 x 118_380_036_096 / 253.4e12 = 934.33 us
    assert conv.time_s == pytest.approx(934.33e-6, rel=1e-4)
    assert micro["matmul-tf32"].profile.op_costs[0][0].kind == "matmul"


def test_scores_by_hand() -> None:
    s = precision_scores([110.0, 180.0], [100.0, 200.0], [100.0, 100.0], [120.0, 150.0])
    # relative errors 0.1 and 0.1: precision 100 * (1 - 0.1) = 90 %
    assert s["precision_pct"] == pytest.approx(90.0)
    # R^2 = 1 - (10^2 + 20^2) / (50^2 + 50^2) = 1 - 500 / 5000 = 0.9
    assert s["r2"] == pytest.approx(0.9)
    # 100 in [100, 120], 200 not in [100, 150]: 1 of 2
    assert s["coverage"] == pytest.approx(0.5)


def test_conformal_halfwidth_by_hand() -> None:
    r = [0.1 * i for i in range(1, 11)]
    # n = 10, level 0.9: rank ceil(11 * 0.9) = 10 -> 1.0
    assert conformal_halfwidth(r, 0.9) == pytest.approx(1.0)
    # level 0.8: rank ceil(11 * 0.8) = 9 -> 0.9
    assert conformal_halfwidth(r, 0.8) == pytest.approx(0.9)
    # 5 residuals cannot support 90 %: rank ceil(6 * 0.9) = 6 > 5
    assert math.isinf(conformal_halfwidth(r[:5], 0.9))


def test_cross_conformal_uses_other_groups_only() -> None:
    pred = np.array([1.0, 1.0, 1.0])
    meas = np.array([1.0, math.e, math.e**2])
    low, high = cross_conformal(pred, meas, ["a", "b", "c"], level=0.5)
    # group a sees |log| residuals {1, 2}: rank ceil(3 * 0.5) = 2 -> 2, interval [e^-2, e^2]
    assert low[0] == pytest.approx(math.exp(-2)) and high[0] == pytest.approx(math.exp(2))
    # group c sees {0, 1}: half width 1, so its measurement e^2 falls outside [e^-1, e]
    assert high[2] == pytest.approx(math.e)


def test_evaluation_recovers_a_model_that_generated_the_data() -> None:
    prior = prior_for(find_hardware("h100-sxm"))
    truth = prior.with_values({"busy_w": 150.0, "j_per_byte": 80e-12})
    rows, samples = [], []
    for width in (8, 16, 32, 64):
        for act in ("relu", "tanh"):
            c = SharedConfig(
                f"mlp-d1-s{width}-{act}", "mlp", 1, width, act, (64, 1, 8, 8), 1.0, 1.0
            )
            step = count_step(c)
            pred = predict_step(step, truth)
            samples.append(Sample(step, pred.energy_j, pred.time_s, c.id))
            rows.append(
                SharedRow(
                    c.id,
                    c.shape,
                    "mlp",
                    step.flops,
                    step.tos,
                    pred.time_s,
                    pred.energy_j,
                    None,
                    None,
                )
            )
    result = evaluate(rows, samples, prior, free=["busy_w", "j_per_byte"], splits=("shape",))
    ours = result["splits"]["shape"]["models"]["ours"]
    # noise-free data from the model's own form: held-out shapes are predicted exactly
    assert ours["energy"]["precision_pct"] > 99.0
    assert ours["time"]["precision_pct"] > 99.0
    assert result["splits"]["shape"]["groups"] == 4
