"""``fit`` on the shared training-step data and ``predict --target`` with its physical model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lightning_to_energy import cli
from lightning_to_energy.calibration import Calibration, CalibrationStore, HardwareInfo, merge
from lightning_to_energy.counting import StepProfile
from lightning_to_energy.hardware.specs import find_hardware
from lightning_to_energy.model import PhysicalModel, predict_step, prior_for
from lightning_to_energy.planning import plan_run
from lightning_to_energy.study.shared_data import SharedConfig, count_step

TRUTH = {"host_step_s": 200e-6}


def _shared_file(tmp_path: Path) -> Path:
    """A small data set in the shared format, measured by the model's own form (noise-free)."""
    truth = prior_for(find_hardware("h100-sxm")).with_values(TRUTH)
    configs = []
    for depth, width in ((1, 8), (2, 32), (1, 128), (2, 512), (1, 2048)):
        for act in ("relu", "tanh"):
            c = SharedConfig(
                f"mlp-d{depth}-s{width}-{act}", "mlp", depth, width, act, (64, 1, 8, 8), 1.0, 1.0
            )
            pred = predict_step(count_step(c), truth)
            configs.append(
                {
                    "id": c.id,
                    "family": "mlp",
                    "depth": depth,
                    "width": width,
                    "activation": act,
                    "input_shape": [64, 1, 8, 8],
                    "J_per_step": pred.energy_j,
                    "s_per_step": pred.time_s,
                }
            )
    path = tmp_path / "steps.json"
    path.write_text(
        json.dumps(
            {"what": "test", "hardware": {"gpu": "NVIDIA H100 80GB HBM3"}, "configs": configs}
        )
    )
    return path


def test_fit_writes_a_physical_calibration_and_predict_uses_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = _shared_file(tmp_path), tmp_path / "h100.json"
    assert cli.main(["fit", str(data), "--out", str(out), "--json"]) == 0
    printed = capsys.readouterr()
    result = json.loads(printed.out)  # stdout is the JSON alone
    # the long stages are said on stderr as they start: 10 configurations (5 shapes x 2
    # activations), one family, and no microbenchmarks in this file
    assert printed.err.splitlines() == [
        "fit: counting 10 training steps as h100-sxm runs them...",
        "fit: fitting the physical model on 10 steps...",
        "fit: scoring it: leave one shape out (5 shapes, a fit each)...",
        "fit: measuring the extrapolation widening (leave one family out, 1 family)...",
    ]
    # the data were made by the model's own form: held-out shapes come back exactly
    assert result["accuracy"]["energy"]["precision_pct"] > 99.0
    assert result["accuracy"]["time"]["precision_pct"] > 99.0
    # these host-bound steps pin the fixed host cost per step (the prior said 50 us)
    assert result["parameters"]["host_step_s"]["value"] == pytest.approx(200e-6, rel=1e-2)
    assert result["parameters"]["host_step_s"]["source"] == "fitted"
    # one family (MLPs only): no held-out family to measure the extrapolation widening on, so
    # the printed interval says it is the stated x2 and why
    interval = result["interval"]
    assert interval["time_widening"] == interval["energy_widening"] == 2.0
    assert "stated" in interval["widening_basis"]
    # bf16 was never run: its energy per FLOP is the microbenchmark prior, and says so
    saved = CalibrationStore.from_path(out).load()
    assert saved is not None and saved.physical is not None
    model = PhysicalModel.from_dict(saved.physical)
    assert "microbenchmark" in model.params.notes["j_per_flop[matrix/bf16]"]

    argv = ["predict", "_models:TinyMLP", "--input", "8x16", "--steps", "100"]
    argv += ["--optimizer", "sgd", "--calibration", str(out), "--json"]
    assert cli.main(argv) == 0
    fp32 = json.loads(capsys.readouterr().out)
    # the shared steps ran SGD: an SGD step of their format and size is no extrapolation
    assert fp32["extrapolation"] == []
    assert fp32["model"] == "physical" and fp32["roofline_hardware"] == "h100-sxm"
    assert fp32["low_j"] < fp32["energy_j"] < fp32["high_j"]
    # each of the 100 steps draws at least the 126 W base power for its predicted time
    assert fp32["energy_j"] / 100 > 126.0 * fp32["step_time_s"]
    assert cli.main([*argv, "--dtype", "bf16", "--target", "h100-sxm"]) == 0
    bf16 = json.loads(capsys.readouterr().out)
    # bf16 matmuls are a format no calibrated step ran: an extrapolation, with a wider interval
    assert any("matrix/bf16" in why for why in bf16["extrapolation"])
    ratio_fp32 = math.log(fp32["high_j"] / fp32["energy_j"])
    ratio_bf16 = math.log(bf16["high_j"] / bf16["energy_j"])
    assert ratio_bf16 == pytest.approx(2 * ratio_fp32)
    # an AdamW step (predict's default optimizer) against these SGD steps: 9 optimizer
    # kernels against 1, its dispatch a prior: an extrapolation, widened x2 as well
    argv[argv.index("sgd")] = "adamw"
    assert cli.main(argv) == 0
    adamw = json.loads(capsys.readouterr().out)
    assert any("optimizer kernels" in why for why in adamw["extrapolation"])
    assert math.log(adamw["high_j"] / adamw["energy_j"]) == pytest.approx(2 * ratio_fp32)


def test_plan_run_scales_the_physical_step_and_merge_keeps_it() -> None:
    prior = prior_for(find_hardware("h100-sxm"))
    model = PhysicalModel(
        params=prior,
        target="h100-sxm",
        time_log_halfwidth=0.1,
        energy_log_halfwidth=0.2,
        level=0.9,
        basis="test",
        formats=("matrix/fp32", "vector/fp32"),
        flops_range=(0.0, 1e15),
        kernels_range=(0.0, 1e6),
    )
    info = HardwareInfo(gpus=("NVIDIA H100 80GB HBM3",))
    cal = Calibration("fp", info, (), (), {}, 1, "2026-12-07T00:00:00Z", physical=model.to_dict())
    step = StepProfile()
    plan = plan_run(step, 10, cal)
    # an empty step: host time only (host_step_s = 50 us), 126 W base: 10 * 126 * 5e-5 J
    assert plan.energy_j == pytest.approx(10 * 126.0 * 50e-6)
    # interval exp(+-0.2) around it
    assert plan.high_j == pytest.approx(plan.energy_j * math.exp(0.2))
    assert plan.model == "physical" and plan.extrapolation == ()
    back = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert back.physical == cal.physical
    # a run's regression saved into the file keeps the file's physical model
    regression_only = Calibration(
        "fp", info, ("tos",), (), {"tos": 1e-12}, 1, "2026-12-07T00:00:01Z"
    )
    assert merge(cal, regression_only).physical == cal.physical


def test_fit_on_a_missing_file_names_the_shared_steps_among_the_fixes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `fit ../shared/data/h100-training-steps.json` run from the wrong directory: the fix must
    # name that data set too, not only reports and study directories
    missing = tmp_path / "h100-training-steps.json"
    assert cli.main(["fit", str(missing), "--out", str(tmp_path / "cal.json")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"cannot read report {missing}: expected a file there, found none." in err
    assert "or the shared H100 steps (h100-training-steps.json" in err


def test_predict_with_a_physical_calibration_of_another_gpu_does_not_say_drop_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Planning an H100 run from this CPU with `fit`'s calibration is what it is for: no
    # "made on ...; this machine is ...; fix: drop calibration=..." warning (the output names
    # the calibration's hardware already).
    import warnings

    data, out = _shared_file(tmp_path), tmp_path / "h100.json"
    assert cli.main(["fit", str(data), "--out", str(out)]) == 0
    capsys.readouterr()
    argv = ["predict", "_models:TinyMLP", "--input", "8x16", "--steps", "100"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cli.main([*argv, "--calibration", str(out)]) == 0
    printed = capsys.readouterr()
    messages = [str(w.message) for w in caught] + [printed.err]
    assert not any("drop calibration" in m or "Using it as asked" in m for m in messages)
    assert "from the physical step model of" in printed.out
    # and, like a regression's plan, the modules by predicted joules
    assert "top modules by predicted joules (dynamic energy, TO share):" in printed.out


def test_a_physical_plan_lists_its_top_modules_as_the_readme_uses_them() -> None:
    # README: `plan = plan_run(p, ..., calibration=<fit on the shared steps>)` then
    # `plan.top_modules[0]`; the physical plan listed none (IndexError)
    import torch

    from _models import TinyMLP
    from lightning_to_energy.calibration import builtin_calibration
    from lightning_to_energy.counting import profile

    shipped = builtin_calibration("h100-sxm")
    assert shipped is not None and shipped.physical is not None
    step = profile(TinyMLP(), torch.randn(8, 16), train=True, optimizer="adamw")
    plan = plan_run(step, 1000, shipped, top=10)
    assert plan.model == "physical" and plan.top_modules
    # TinyMLP: fc1, act, fc2, and the loss and optimizer outside any module: all listed
    assert math.isclose(sum(m.share for m in plan.top_modules), 1.0, rel_tol=1e-9)
    # they share the run's dynamic energy (static power is no layer's): 1000 x (the step's
    # energy - base_w x its time), split by TO share
    pred = predict_step(step, PhysicalModel.from_dict(shipped.physical).params)
    dynamic = 1000 * (pred.energy_j - pred.static_j)
    assert sum(m.energy_j for m in plan.top_modules) == pytest.approx(dynamic)
    assert plan.top_modules[0].tos_per_step >= plan.top_modules[-1].tos_per_step
    assert len(plan_run(step, 1000, shipped, top=2).top_modules) == 2
    assert plan_run(step, 1000, shipped, top=0).top_modules == ()


def test_fit_prints_a_dimensionless_parameter_without_a_bare_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # ramp_share's unit is "1" (SI for dimensionless, kept in the JSON); printed after the
    # value it read "0.3571 1  (fitted, ...)"
    data = _shared_file(tmp_path)
    assert cli.main(["fit", str(data), "--out", str(tmp_path / "h100.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    line = next(x for x in lines if "ramp_share:" in x)
    value = line.split("ramp_share: ")[1].split("  (")[0]
    assert " " not in value  # the number alone, e.g. "0.3571"
    assert float(value) > 0
    # the table lists the parameters these steps use, the rest in one line: the rows and the
    # left-out priors add up to the H100 prior's 132 parameters (8 scalars + 24 (unit,
    # format) keys x 5 tables + 4 phases)
    rows = [x for x in lines if x.startswith("  ") and ": " in x and "priors of" not in x]
    summary = next(x for x in lines if "priors of formats, units or curves" in x)
    assert int(summary.split()[1]) == 132 - len(rows)
    # these MLPs run no convolution: no convolution curve is listed, and nothing of bf16
    assert not any("conv_share[" in x or "conv_flop_half[" in x or "bf16" in x for x in rows)
    assert any("host_step_s:" in x for x in rows)
