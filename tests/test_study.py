"""The study runner: grids, models, one configuration under fake sensors, resuming, the CLI.

Every training run here uses a fake clock that advances 0.5 s per step and a fake 10 W sensor,
so the measured joules are worked out by hand.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback
from torch.nn import functional as F

from _records import bare_report
from lightning_to_energy import FakeSensor
from lightning_to_energy.cli import CliError
from lightning_to_energy.cli import study as _cli_study
from lightning_to_energy.counting import profile
from lightning_to_energy.hardware.roofline import roofline_s
from lightning_to_energy.hardware.specs import find_hardware
from lightning_to_energy.reporting.records import (
    FLAG_BOUNDARY,
    FLAG_FAULT,
    FLAG_OUTLIER,
    FLAG_SHORT,
    EnergyReport,
    SensorInfo,
    WindowRecord,
)
from lightning_to_energy.sensors.base import weakest_kind
from lightning_to_energy.study import grid as study_grid
from lightning_to_energy.study import runner as study_runner
from lightning_to_energy.study import runs as study_runs
from lightning_to_energy.study import workload as study_workload

STEP_S = 0.5
POWER_W = 10.0
TINY = study_grid.default_grid("tiny")
H100 = find_hardware("h100-sxm")


class Clock:
    """A fake clock: seconds move only when a step ends."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Advance(Callback):
    """Every training step lasts STEP_S seconds of the fake clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def on_train_batch_end(self, *args: Any) -> None:
        self.clock.t += STEP_S


def fake_run_kwargs() -> dict[str, Any]:
    clock = Clock()
    return {
        "steps": 8,
        "sensors": [FakeSensor("fake:0", power_w=POWER_W, clock=clock)],
        "window_s": 1.0,
        "clock": clock,
        "hardware": H100,
        "callbacks": [Advance(clock)],
    }


# --- configurations -------------------------------------------------------------------------


def test_tiny_grid_ids_are_unique_and_stable() -> None:
    ids = [c.id for c in TINY]
    assert ids == [
        "mlp-digits-w16-d1-relu-fp32-b16",
        "cnn-cifar-synthetic-w4-d1-relu-fp32-b4",
        "transformer-digits-w16-d1-h2-s8-gelu-fp32-b8",
        "mlp-cifar-synthetic-w16-d1-tanh-bf16-b8",
    ]
    assert [c.id for c in study_grid.default_grid("tiny")] == ids  # the same on every call
    assert {c.family for c in TINY} == set(study_grid.FAMILIES)
    assert {c.dataset for c in TINY} == set(study_grid.DATASETS)
    assert {c.dtype for c in TINY} == set(study_grid.DTYPES)


@pytest.mark.parametrize("scale", ["small", "full"])
def test_larger_grids_have_unique_ids_and_cover_every_choice(scale: str) -> None:
    grid = study_grid.default_grid(scale)
    assert len({c.id for c in grid}) == len(grid)
    assert {c.family for c in grid} == set(study_grid.FAMILIES)
    assert {c.dtype for c in grid} == set(study_grid.DTYPES)
    assert {c.dataset for c in grid} == set(study_grid.DATASETS)
    if scale == "full":
        assert 60 <= len(grid) <= 120
        assert {c.activation for c in grid} == set(study_grid.ACTIVATIONS)


def test_unknown_grid_and_bad_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="expected a grid scale"):
        study_grid.default_grid("huge")
    with pytest.raises(ValueError, match="activation"):
        study_grid.make_config("mlp", "digits", "fp32", width=8, depth=1, activation="swish")
    with pytest.raises(ValueError, match="heads"):
        study_grid.make_config("transformer", "digits", "fp32", width=30, depth=1, heads=4)
    with pytest.raises(ValueError, match="seq_len"):
        study_grid.make_config("transformer", "digits", "fp32", width=32, depth=1, seq_len=64)


def test_config_round_trips_through_its_json_form() -> None:
    for config in TINY:
        assert study_grid.StudyConfig.from_dict(config.to_dict()) == config
    assert "heads" not in TINY[0].to_dict()
    assert TINY[2].to_dict()["heads"] == 2


@pytest.mark.parametrize("config", TINY, ids=[c.id for c in TINY])
def test_each_model_trains_on_its_data_sets_batch_shape(config: study_grid.StudyConfig) -> None:
    model = study_workload.build_model(config)
    x, y = study_workload.make_batches(config, n_batches=1)[0]
    assert tuple(x.shape) == config.input_shape
    assert model(x).shape == (config.batch_size, study_workload.NUM_CLASSES)
    model.training_step((x, y), 0).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)


def test_data_sets_are_fixed_and_shaped() -> None:
    x1, y1 = study_workload.dataset_tensors("cifar-synthetic")
    x2, y2 = study_workload.dataset_tensors("cifar-synthetic")
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert tuple(x1.shape) == (study_workload.CIFAR_SYNTHETIC_SIZE, 3, 32, 32)
    digits, labels = study_workload.dataset_tensors("digits")
    # scikit-learn's bundled digits: 1,797 images of 8x8 pixels, values 0..16 scaled to 0..1
    assert tuple(digits.shape) == (1797, 1, 8, 8)
    assert float(digits.max()) == 1.0 and set(labels.tolist()) == set(range(10))


def test_patches_keep_every_pixel() -> None:
    tokens = study_workload.Tokens((3, 32, 32), 64)
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    out = tokens(x)
    # 64 patches of 4x4 pixels in 3 channels: 3 * 4 * 4 = 48 features each
    assert tuple(out.shape) == (2, 64, 48)
    assert torch.equal(out.sort(dim=-1).values.flatten().sort().values, x.flatten())
    # the first patch is the top-left 4x4 of each channel
    assert torch.equal(out[0, 0], x[0, :, :4, :4].reshape(-1))


# --- measured windows -----------------------------------------------------------------------


def window(index: int, flags: Sequence[str] = (), loop: str = "train") -> WindowRecord:
    return WindowRecord(
        index=index,
        loop=loop,
        first_step=2 * index,
        steps=2,
        start_s=float(index),
        duration_s=1.0,
        energy_j={"fake:0": 10.0},
        measured_j=10.0,
        predicted_j=None,
        low_j=None,
        high_j=None,
        prediction_source="none",
        tos=1.0,
        flops=1.0,
        flags=tuple(flags),
    )


def test_fit_worthy_windows_drop_the_first_and_the_flagged() -> None:
    windows = [
        window(0),  # the first: counted step and warm-up
        window(1),
        window(2, [FLAG_SHORT]),
        window(3, [FLAG_FAULT]),
        window(4, [FLAG_OUTLIER]),
        window(5, [FLAG_BOUNDARY]),  # boundary alone is still a full measurement
        window(6, loop="validate"),
    ]
    assert [w.index for w in study_runner.fit_worthy_windows(windows)] == [1, 5]


def _summed_report(
    sensors: tuple[tuple[str, str], ...], rows: Sequence[Mapping[str, float]]
) -> EnergyReport:
    """Train windows 0, 1, ... with the given joules by domain, over sensors (domain, kind)."""
    windows = tuple(
        dataclasses.replace(window(i), energy_j=dict(row), measured_j=sum(row.values()))
        for i, row in enumerate(rows)
    )
    infos = tuple(SensorInfo(d, kind, kind, 0.1, 2.0) for d, kind in sensors)
    return bare_report(sensors=infos, windows=windows)


def test_measured_summary_sums_measured_domains_and_leaves_an_estimate_out() -> None:
    sensors = (("nvml:0", "counter"), ("cpu:estimate", "estimate"))
    rows = [(999.0, 9.0), (300.0, 20.0), (310.0, 20.0)]
    report = _summed_report(sensors, [{"nvml:0": g, "cpu:estimate": c} for g, c in rows])
    m = study_runner.measured_summary(report)
    # windows 1 and 2 (the first is dropped): GPU 300 + 310 = 610 J over 2 + 2 = 4 steps;
    # the estimate's 20 + 20 = 40 J are listed apart, not added
    assert (m["energy_j"], m["steps"], m["kind"]) == (610.0, 4, "counter")
    assert m["energy_per_step_j"] == 610.0 / 4
    assert m["domains"] == ["nvml:0"] and m["excluded_j"] == {"cpu:estimate": 40.0}
    # with only the estimate, it is summed and labelled
    only = _summed_report(sensors[1:], [{"cpu:estimate": 5.0}] * 3)
    m = study_runner.measured_summary(only)
    assert (m["energy_j"], m["kind"], m["excluded_j"]) == (10.0, "estimate", {})


def test_measured_summary_on_a_gpu_sums_the_gpu_and_lists_rapl_apart() -> None:
    sensors = (("gpu:0", "counter"), ("cpu:package-0", "counter"))
    rows = [(999.0, 99.0), (300.0, 60.0), (310.0, 70.0)]
    report = _summed_report(sensors, [{"gpu:0": g, "cpu:package-0": c} for g, c in rows])
    m = study_runner.measured_summary(report)
    # windows 1 and 2: GPU 300 + 310 = 610 J; the socket's 60 + 70 = 130 J measured but apart
    assert (m["energy_j"], m["domains"]) == (610.0, ["gpu:0"])
    assert m["excluded_j"] == {"cpu:package-0": 130.0}
    assert m["energy_by_domain_j"] == {"gpu:0": 610.0, "cpu:package-0": 130.0}
    # without a GPU, the RAPL package is the measurement (a CPU study)
    cpu_only = _summed_report(sensors[1:], [{"cpu:package-0": c} for _, c in rows])
    m = study_runner.measured_summary(cpu_only)
    assert (m["energy_j"], m["domains"], m["excluded_j"]) == (130.0, ["cpu:package-0"], {})


def test_weakest_kind() -> None:
    assert weakest_kind(["counter", "power-integration"]) == "power-integration"
    assert weakest_kind(["counter", "estimate", "fake"]) == "estimate"
    assert weakest_kind([]) == "none"


# --- one configuration ----------------------------------------------------------------------


def test_run_config_writes_hand_worked_energy_and_the_counted_step(tmp_path: Path) -> None:
    config = TINY[0]
    path = study_runner.run_config(config, tmp_path, **fake_run_kwargs())
    assert path == tmp_path / f"{config.id}.run.json"
    data = json.loads(path.read_text())
    assert data["format"] == "lightning-to-energy/study-run" and data["version"] == 1
    assert data["config"] == config.to_dict()
    assert data["hardware"]["key"] == "h100-sxm"
    assert data["sensors"] == [
        {"domain": "fake:0", "kind": "fake", "source": "fake: constant 10 W"}
    ]

    measured = data["measured"]
    # 8 steps of 0.5 s with 1 s windows: 4 windows of 2 steps; the first is left out, so
    # 3 windows, 3 * 2 = 6 steps, 6 * 0.5 = 3.0 s, and 10 W * 3.0 s = 30 J
    assert measured["train_windows"] == 4
    assert measured["windows"] == 3
    assert measured["steps"] == 6
    assert measured["duration_s"] == pytest.approx(3.0)
    assert measured["energy_j"] == pytest.approx(30.0)
    # 30 J / 6 steps = 5 J; 3.0 s / 6 steps = 0.5 s
    assert measured["energy_per_step_j"] == pytest.approx(5.0)
    assert measured["duration_per_step_s"] == pytest.approx(0.5)
    assert measured["kind"] == "fake"

    # the same model, batch and optimizer counted directly with counting.profile
    model = study_workload.build_model(config)
    x, y = study_workload.make_batches(config)[0]
    optimizer = torch.optim.AdamW(model.parameters(), lr=study_workload.LEARNING_RATE)
    expected = profile(model, x, train=True, optimizer=optimizer, loss_fn=F.cross_entropy, target=y)
    per_step = data["per_step"]
    assert per_step["tos"] == pytest.approx(expected.tos, rel=1e-12)
    assert per_step["flops"] == pytest.approx(expected.flops, rel=1e-12)
    assert per_step["kernels"] == pytest.approx(expected.kernels, rel=1e-12)
    assert per_step["bytes"] == pytest.approx(expected.bytes, rel=1e-12)
    assert per_step["roofline_s"] == pytest.approx(roofline_s(expected, H100), rel=1e-12)
    assert per_step["tos_by_format"] == pytest.approx(
        {k.value: v for k, v in expected.tos_by_format.items()}
    )

    report = tmp_path / data["report"]
    assert report.name == f"{config.id}.report.json"
    assert json.loads(report.read_text())["measured_j"] > 0


def test_run_config_counts_a_bf16_step_under_autocast(tmp_path: Path) -> None:
    config = TINY[3]
    data = json.loads(study_runner.run_config(config, tmp_path, **fake_run_kwargs()).read_text())
    # autocast runs the matmuls in bf16; the optimizer and the loss stay in fp32
    assert data["per_step"]["tos_by_format"]["bf16"] > 0
    assert data["per_step"]["tos_by_format"]["fp32"] > 0
    assert data["measured"]["energy_j"] == pytest.approx(30.0)  # as worked out above


# --- the grid -------------------------------------------------------------------------------


class Runner:
    """Records every configuration it is asked to run; ``fail`` ids raise instead."""

    def __init__(self, fail: Sequence[str] = ()) -> None:
        self.calls: list[str] = []
        self.fail = set(fail)

    def __call__(self, config: study_grid.StudyConfig, out_dir: Path, **kwargs: Any) -> Path:
        self.calls.append(config.id)
        if config.id in self.fail:
            raise RuntimeError(f"boom in {config.id}")
        return study_runner.run_config(config, out_dir, **{**kwargs, **fake_run_kwargs()})


def test_run_study_resumes_and_survives_a_failing_config(tmp_path: Path) -> None:
    good, bad = TINY[0], TINY[1]
    runner = Runner(fail=[bad.id])
    paths = study_runner.run_study(
        [good, bad], tmp_path, progress=False, runner=runner, hardware=H100
    )
    assert runner.calls == [good.id, bad.id]
    assert paths == [tmp_path / f"{good.id}.run.json"]
    error = json.loads((tmp_path / f"{bad.id}.error.json").read_text())
    assert error["error"] == "RuntimeError"
    assert error["message"] == f"boom in {bad.id}"
    assert error["config"] == bad.to_dict()
    assert not (tmp_path / f"{bad.id}.run.json").exists()
    mtime = paths[0].stat().st_mtime_ns

    # again: the finished configuration is skipped, the failed one is tried once more
    runner = Runner(fail=[bad.id])
    again = study_runner.run_study(
        [good, bad], tmp_path, progress=False, runner=runner, hardware=H100
    )
    assert again == paths
    assert runner.calls == [bad.id]
    assert paths[0].stat().st_mtime_ns == mtime


def test_run_study_reruns_a_run_of_another_config_and_stops_at_the_budget(
    tmp_path: Path,
) -> None:
    config = TINY[0]
    stale = study_runner.run_path(tmp_path, config)
    stale.write_text(json.dumps({"format": "lightning-to-energy/study-run", "version": 1}))
    assert not study_runner.is_complete(stale, config)
    stale.write_text("{not json")
    assert not study_runner.is_complete(stale, config)
    # a budget smaller than one configuration's first guess (2 * 8 s + 30 s) starts nothing
    runner = Runner()
    assert (
        study_runner.run_study([config], tmp_path, progress=False, runner=runner, budget_s=1.0)
        == []
    )
    assert runner.calls == []


def test_run_study_refuses_to_mix_hardware_in_one_directory(tmp_path: Path) -> None:
    # a run measured on an H100 is there; this call would measure on an H200
    config = TINY[0]
    study_runner.run_config(config, tmp_path, **fake_run_kwargs())
    runner = Runner()
    with pytest.raises(ValueError, match=r"runs of this hardware \(h200\) only.*h100-sxm"):
        study_runner.run_study(TINY, tmp_path, progress=False, runner=runner, hardware="h200")
    assert runner.calls == []  # refused before anything ran
    with pytest.raises(CliError, match="own output directory"):
        run_cli(["run", str(tmp_path), "--grid", "tiny", "--device", "cpu", "--hardware", "h200"])
    # the same hardware resumes: the done configuration is skipped
    runner = Runner()
    study_runner.run_study(TINY[:2], tmp_path, progress=False, runner=runner, hardware=H100)
    assert runner.calls == [TINY[1].id]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"windows": 0}, "windows >= 1"),
        ({"min_seconds": -1.0}, "min_seconds >= 0"),
        ({"steps": 0}, "steps >= 1"),
        ({"budget_s": 0.0}, "budget_s > 0"),
    ],
)
def test_run_study_checks_its_arguments_before_running_anything(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    runner = Runner()
    with pytest.raises(ValueError, match=re.escape(message)):
        study_runner.run_study(TINY, tmp_path / "out", progress=False, runner=runner, **kwargs)
    assert runner.calls == []
    assert not (tmp_path / "out").exists()  # no error file per configuration either
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="found a file"):
        study_runner.run_study(TINY, tmp_path / "file", progress=False, runner=runner)


def test_run_study_says_when_the_budget_cannot_start_one_configuration(tmp_path: Path) -> None:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=200)
    runner = Runner()
    # 10 s < the first guess of 2 * 8 s + 30 s = 46 s: nothing starts, and again never would
    assert (
        study_runner.run_study(TINY, tmp_path, runner=runner, budget_s=10.0, console=console) == []
    )
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "time budget too short: 10 s is less than one configuration" in text
    assert "(46 s)" in text and "run the same command again" not in text


def test_run_study_refuses_duplicate_ids(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="duplicates"):
        study_runner.run_study([TINY[0], TINY[0]], tmp_path, progress=False, runner=Runner())


# --- the CLI --------------------------------------------------------------------------------


def cli_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lightning-to-energy")
    _cli_study.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["study", *argv])


def run_cli(argv: Sequence[str]) -> int:
    args = cli_args(argv)
    return int(args.func(args))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "OUT", "--grid", "huge"], "expected --grid in full, small, tiny"),
        (["run", "OUT", "--grid", "tiny", "--only", "("], "regular expression"),
        (["run", "OUT", "--grid", "tiny", "--only", "^resnet"], "found none"),
        (["run", "OUT", "--grid", "tiny", "--device", "tpu"], "device"),
        (["run", "OUT", "--grid", "tiny", "--device", "cpu", "--hardware", "abacus"], "abacus"),
    ],
)
def test_cli_run_errors(tmp_path: Path, argv: list[str], message: str) -> None:
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    with pytest.raises(CliError, match=re.escape(message)):
        run_cli(argv)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cli_run_cuda_without_cuda(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="CUDA device"):
        run_cli(["run", str(tmp_path), "--grid", "tiny", "--device", "cuda"])


def test_cli_run_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["run", str(tmp_path), "--grid", "tiny", "--only", "^mlp", "--list"]) == 0
    assert capsys.readouterr().out.split() == [TINY[0].id, TINY[3].id]


def test_cli_eval_errors(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="found nothing"):
        run_cli(["eval", str(tmp_path / "missing")])
    with pytest.raises(CliError, match=r"expected \*\.run\.json files"):
        run_cli(["eval", str(tmp_path)])
    (tmp_path / "x.run.json").write_text("[]")
    with pytest.raises(CliError, match=re.escape("x.run.json")):
        run_cli(["eval", str(tmp_path)])


def synthetic_run(out: Path, config: study_grid.StudyConfig, tos: float, seconds: float) -> None:
    """A run JSON whose step energy follows 100 W * roofline_s + 1e-9 J/TO * tos exactly."""
    per_step: dict[str, Any] = {
        "tos": tos,
        "flops": tos / 1000,
        "tos_matrix_full": 0.6 * tos,
        "tos_matrix_reduced": 0.0,
        "tos_matrix_tf32": 0.0,
        "tos_matrix_low": 0.0,
        "tos_vector": 0.4 * tos,
        "bytes": tos / 100,
        "kernels": 50.0,
        "roofline_s": seconds,
    }
    energy = 100.0 * seconds + 1e-9 * tos
    data = {
        "format": study_runs.RUN_FORMAT,
        "version": study_runs.RUN_VERSION,
        "config": config.to_dict(),
        "hardware": {"key": "h100-sxm", "name": "NVIDIA H100 80GB HBM3", "fingerprint": {}},
        "per_step": per_step,
        "measured": {
            "steps": 10,
            "energy_j": 10 * energy,
            "duration_s": 10 * seconds,
            "windows": 3,
            "kind": "counter",
            "energy_per_step_j": energy,
            "duration_per_step_s": seconds,
        },
    }
    (out / f"{config.id}.run.json").write_text(json.dumps(data))


def test_cli_eval_writes_results_and_replaces_its_markdown_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "study"
    out.mkdir()
    for i in range(6):
        for family in ("mlp", "cnn"):
            config = study_grid.make_config(family, "digits", "fp32", width=8 * (i + 1), depth=1)
            synthetic_run(out, config, tos=(i + 1) * 3e10, seconds=(i + 2) * 1e-3)
    md = tmp_path / "results.md"
    md.write_text("# Results\n\nKept before.\n")
    assert run_cli(["eval", str(out), "--results-md", str(md)]) == 0
    assert (out / "results.json").exists() and (out / "predictions.csv").exists()
    first = md.read_text()
    assert first.startswith("# Results\n\nKept before.\n")
    assert first.count("<!-- study-results: h100-sxm -->") == 1
    assert "NVIDIA H100 80GB HBM3" in first
    assert "section for h100-sxm written" in capsys.readouterr().out

    md.write_text(first + "\nKept after.\n")
    assert run_cli(["eval", str(out), "--results-md", str(md), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["hardware"] == "h100-sxm"
    second = md.read_text()
    assert second.count("<!-- study-results: h100-sxm -->") == 1
    assert second.startswith("# Results\n\nKept before.\n") and second.endswith("Kept after.\n")


def test_cli_eval_never_writes_its_section_into_a_file_of_another_kind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    precious = tmp_path / "precious.py"
    precious.write_text("print('mine')\n")
    from lightning_to_energy.cli import CliError

    # refused before the study directory is even read
    with pytest.raises(CliError, match=r"expected --results-md to name a \.md file"):
        run_cli(["eval", str(tmp_path / "absent"), "--results-md", str(precious)])
    assert precious.read_text() == "print('mine')\n"


def test_cli_eval_json_still_says_which_runs_it_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for i in range(3):
        config = study_grid.make_config("mlp", "digits", "fp32", width=8 * (i + 1), depth=1)
        synthetic_run(tmp_path, config, tos=(i + 1) * 3e10, seconds=(i + 2) * 1e-3)
    path = tmp_path / f"{config.id}.run.json"
    data = json.loads(path.read_text())
    data["measured"]["energy_per_step_j"] = None  # no fit-worthy window: skipped
    path.write_text(json.dumps(data))
    assert run_cli(["eval", str(tmp_path), "--json"]) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)["runs"]) == 2  # stdout stays pure JSON
    assert f"{config.id}.run.json: skipped" in captured.err


def test_update_markdown_creates_the_file(tmp_path: Path) -> None:
    md = tmp_path / "docs" / "results.md"
    _cli_study.update_markdown(md, "cpu", "## Section\n")
    assert md.read_text() == (
        "# Results\n\n<!-- study-results: cpu -->\n## Section\n<!-- /study-results: cpu -->\n"
    )
    assert os.path.getsize(md) > 0


# --- benchmarks/paper_study.py --------------------------------------------------------------


def paper_study_main() -> Any:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "paper_study.py"
    spec = importlib.util.spec_from_file_location("paper_study", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--windows", "0"], "windows >= 1"),
        (["--min-seconds", "-1"], "min_seconds >= 0"),
        # a minute is kept for the evaluation: 1.5 min leaves 30 s < 2 * 8 s + 30 s = 46 s,
        # so at least (46 + 60) / 60 = 1.77 minutes are needed
        (["--budget-min", "1.5"], "expected --budget-min of at least 1.77"),
        (["--budget-min", "0"], "expected --budget-min of at least 1.77"),
    ],
)
def test_paper_study_refuses_bad_options_before_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    main = paper_study_main()
    out = tmp_path / "out"
    assert main(["--out", str(out), "--grid", "tiny", "--device", "cpu", *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # no error file written per configuration


def test_paper_study_out_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main = paper_study_main()
    (tmp_path / "file").write_text("")
    assert main(["--out", str(tmp_path / "file"), "--grid", "tiny", "--device", "cpu"]) == 2
    assert "found a file" in capsys.readouterr().err


def test_fit_worthy_windows_go_by_index_and_need_measured_joules() -> None:
    windows = [
        window(2),
        window(0),  # the first by index, although listed second: it is the one dropped
        window(1),
        dataclasses.replace(window(3), measured_j=0.0),  # nothing measured
        dataclasses.replace(window(4), measured_j=None),
    ]
    assert [w.index for w in study_runner.fit_worthy_windows(windows)] == [1, 2]


def test_measured_summary_power_and_train_window_count() -> None:
    sensors = (("gpu:0", "counter"),)
    report = _summed_report(sensors, [{"gpu:0": g} for g in (999.0, 300.0, 310.0)])
    report = dataclasses.replace(report, windows=(*report.windows, window(3, loop="validate")))
    m = study_runner.measured_summary(report)
    # windows 1 and 2: 300 + 310 = 610 J over 1 + 1 = 2 s -> 305 W
    assert m["power_w"] == pytest.approx(305.0)
    # three train windows; the validation window is not one of them
    assert m["train_windows"] == 3


def test_stop_rule_waits_for_min_seconds_and_the_windows() -> None:
    from types import SimpleNamespace

    clock = Clock()
    tracker = SimpleNamespace(windows=[])
    trainer = SimpleNamespace(should_stop=False)
    rule = study_runner._StopWhenMeasured(
        SimpleNamespace(tracker=tracker), windows=1, min_seconds=5.0, max_seconds=60.0, clock=clock
    )
    rule.on_train_start(trainer, None)  # type: ignore[arg-type]
    tracker.windows = [window(0), window(1)]  # one fit-worthy window beyond the first ...
    clock.t = 2.0
    rule.on_train_batch_end(trainer)  # type: ignore[arg-type]
    assert not trainer.should_stop  # ... but only 2 s of the 5 s minimum
    tracker.windows.append(window(2))
    clock.t = 5.0
    rule.on_train_batch_end(trainer)  # type: ignore[arg-type]
    assert trainer.should_stop  # a window just closed, 5 s >= 5 s and 2 >= 1 windows


def test_is_complete_needs_this_very_configuration(tmp_path: Path) -> None:
    doc = {
        "format": "lightning-to-energy/study-run",
        "version": 1,
        "config": TINY[1].to_dict(),
        "per_step": {},
        "measured": {"energy_j": 1.0},
    }
    path = study_runner.run_path(tmp_path, TINY[0])
    path.write_text(json.dumps(doc))
    # a complete run, but of another configuration (a renamed or copied file): run it again
    assert not study_runner.is_complete(path, TINY[0])
    assert study_runner.is_complete(path, TINY[1])


def test_run_study_budget_expects_the_slowest_configuration_so_far(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time
    from types import SimpleNamespace

    now = [0.0]
    # study's own view of the time module: its monotonic clock moves only when a run ends
    monkeypatch.setattr(
        study_runner, "time", SimpleNamespace(**{**vars(time), "monotonic": lambda: now[0]})
    )
    took = {TINY[0].id: 30.0, TINY[1].id: 5.0}
    calls: list[str] = []

    def runner(config: study_grid.StudyConfig, out_dir: Path, **kwargs: Any) -> Path:
        calls.append(config.id)
        now[0] += took.get(config.id, 1.0)
        path = study_runner.run_path(out_dir, config)
        path.write_text("{}")
        return path

    study_runner.run_study(
        TINY[:3],
        tmp_path,
        progress=False,
        runner=runner,
        budget_s=60.0,
        min_seconds=0.0,
        hardware=H100,
    )
    # first guess 2 x 0 + 30 = 30 s: 0 + 30 <= 60 starts TINY[0] (30 s); then 30 + 30 <= 60
    # starts TINY[1] (5 s); then 35 + max(30, 5) = 65 > 60: TINY[2] is left for the next call
    # (expecting the fastest, 35 + 5 = 40, would start it)
    assert calls == [TINY[0].id, TINY[1].id]


def test_run_config_gives_up_after_a_minute_when_no_window_is_fit_worthy(
    tmp_path: Path,
) -> None:
    clock = Clock()
    steps: list[float] = []

    class FiveSecondSteps(Callback):
        def on_train_batch_end(self, *args: Any) -> None:
            clock.t += 5.0
            steps.append(clock.t)

    # every read after the first fails: each window is a fault, none is ever fit-worthy
    sensor = FakeSensor("fake:0", readings=[0.0])
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match="fit-worthy"):
        study_runner.run_config(
            TINY[0],
            tmp_path,
            min_seconds=1.0,
            windows=1,
            sensors=[sensor],
            window_s=1.0,
            clock=clock,
            hardware=H100,
            callbacks=[FiveSecondSteps()],
        )
    # max_seconds defaults to max(3 x 1 s, 60 s) = 60 s: 60 / 5 = 12 steps, not 3 s (1 step)
    assert len(steps) == 12
