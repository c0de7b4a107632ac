"""The examples run as users run them: as scripts in a fresh process, with tiny settings.

Each test starts ``python examples/<script>.py`` in a temporary working directory and checks
what the script prints and writes. On this kind of machine (no GPU, no readable RAPL) the
joules come from the CPU-time estimate, which every process has, so ``measured_j > 0`` holds
wherever the tests run.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_to_energy.reporting.codec import load_report

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run_example(
    script: str, *args: str, cwd: Path, timeout_s: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<script>`` with ``args`` in ``cwd``; the package is importable from src/."""
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def test_plain_pytorch_prints_loop_totals_and_writes_the_report(tmp_path: Path) -> None:
    done = run_example(
        "plain_pytorch.py", "--epochs", "1", "--max-steps", "12", "--window-s", "0.02",
        "--out", "out", "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = load_report(tmp_path / "out" / "energy_report.json")
    # --max-steps 12 train steps, then one evaluation batch
    assert report.loops["train"].steps == 12
    assert report.loops["validate"].steps == 1
    assert report.measured_j > 0
    lines = done.stdout.splitlines()
    train = re.fullmatch(
        r"train: 12 steps in (\d+) windows, measured ([0-9.]+) J \((\w[\w, -]*)\), "
        r"predicted (n/a|[0-9.]+ J(?: \(\d+ of \d+ windows\))?), ([0-9.e+]+) TOs",
        lines[0],
    )
    assert train is not None, done.stdout
    train_windows = [w for w in report.windows if w.loop == "train"]
    assert int(train.group(1)) == report.loops["train"].windows == len(train_windows)
    assert float(train.group(2)) == pytest.approx(report.loops["train"].measured_j, abs=5e-4)
    assert train.group(3) == ", ".join(sorted({s.kind for s in report.sensors}))
    # the first window comes before any prediction (no calibration: conftest empties the
    # cache), so predicted covers k of the n train windows and says so
    covered = sum(1 for w in train_windows if w.predicted_j is not None)
    assert 0 < covered < len(train_windows)
    expected = (
        f"{report.loops['train'].predicted_j:.3f} J ({covered} of {len(train_windows)} windows)"
    )
    assert train.group(4) == expected
    assert float(train.group(5)) == pytest.approx(report.loops["train"].tos, rel=1e-3)
    assert lines[1].startswith("validate: 1 step in 1 window, measured ")
    total = re.fullmatch(
        # precision = 100 x (1 - MAPE) is negative when the mean error passes 100 %, which
        # 0.02 s windows of a noisy CPU-time estimate can do
        r"total: measured ([0-9.]+) J; (\d+) of (\d+) windows predicted: ([0-9.]+) J for "
        r"([0-9.]+) J, precision (?:-?[0-9.]+ %|n/a)",
        lines[2],
    )
    assert total is not None, done.stdout
    assert float(total.group(1)) == pytest.approx(report.measured_j, abs=5e-4)
    # predicted and measured are compared over the same windows: those with a prediction
    paired = [w for w in report.windows if w.predicted_j is not None]
    assert (int(total.group(2)), int(total.group(3))) == (len(paired), len(report.windows))
    assert float(total.group(4)) == pytest.approx(sum(w.predicted_j or 0 for w in paired), abs=5e-4)
    assert float(total.group(5)) == pytest.approx(sum(w.measured_j or 0 for w in paired), abs=5e-4)
    assert lines[-1] == f"report written to {Path('out') / 'energy_report.json'}"


@pytest.mark.slow
def test_digits_demo_trains_one_epoch_and_writes_its_report(tmp_path: Path) -> None:
    done = run_example("digits_demo.py", "--epochs", "1", "--out", "rep", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    # the callback's closing summary names the files it wrote and the command for the rest
    assert "full report: lightning-to-energy report rep/energy_report.json (also .csv" in (
        done.stdout
    )
    head = [i for i, line in enumerate(done.stdout.splitlines()) if line.startswith("lightning-")]
    assert len(head) == 1 and len(done.stdout.splitlines()[head[0] :]) <= 15, done.stdout
    # piped, the demo's Rich bar is drawn once, when it closes, at 120 columns (not Rich's 80
    # for files): the energy item whole on one line, every line of the bar within 120 columns
    lines = done.stdout.splitlines()
    bar = [i for i, line in enumerate(lines) if re.search(r"energy_(est_)?[umkM]?J: \d", line)]
    assert len(bar) == 1 and bar[0] < head[0], done.stdout
    assert all(len(line.rstrip()) <= 120 for line in lines[bar[0] : head[0]]), done.stdout
    # a clean end: no warning printed with a source path, no Lightning start-up chatter
    assert ".py:" not in done.stderr, done.stderr[-3000:]
    assert "GPU available" not in done.stdout + done.stderr
    report = load_report(tmp_path / "rep" / "energy_report.json")
    # 1,797 digits x 0.85 = 1,527.45: random_split gives the training split 1,528 rows;
    # batches of 64 with the last partial one dropped: 1528 // 64 = 23 steps
    assert report.loops["train"].steps == 23
    assert report.measured_j > 0


@pytest.mark.slow
def test_ddp_example_prints_each_rank_and_the_total(tmp_path: Path) -> None:
    done = run_example(
        "ddp.py", "--max-steps", "3", "--window-s", "0.02", "--out", "ddp", "--quiet",
        cwd=tmp_path, timeout_s=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = load_report(tmp_path / "ddp" / "energy_report.json")
    assert report.world_size == 2
    ranks = {
        int(m.group(1)): (float(m.group(2)), int(m.group(3)), int(m.group(4)))
        for m in re.finditer(
            r"^rank (\d): ([0-9.]+) J measured \(.+\), (\d+) windows, (\d+) steps$",
            done.stdout,
            re.M,
        )
    }
    assert sorted(ranks) == [0, 1], done.stdout
    # --max-steps 3 per rank
    assert [ranks[r][2] for r in (0, 1)] == [3, 3]
    for r in (0, 1):
        windows = [w for w in report.windows if w.rank == r]
        assert ranks[r][0] == pytest.approx(sum(w.measured_j or 0.0 for w in windows), abs=5e-4)
        assert ranks[r][1] == len(windows)
        assert ranks[r][0] > 0  # each process has its own CPU-time estimate
    total = re.search(r"^total: ([0-9.]+) J measured over 2 ranks", done.stdout, re.M)
    assert total is not None, done.stdout
    # the total is the sum of both ranks' windows
    assert float(total.group(1)) == pytest.approx(ranks[0][0] + ranks[1][0], abs=2e-3)
    assert float(total.group(1)) == pytest.approx(report.measured_j, abs=5e-4)
    # printed once, by rank 0
    assert done.stdout.count("total: ") == 1


def test_ddp_example_total_compares_prediction_and_measurement_over_the_same_windows() -> None:
    from _records import bare_report
    from lightning_to_energy.reporting.records import WindowRecord

    spec = importlib.util.spec_from_file_location("ddp_example", EXAMPLES / "ddp.py")
    assert spec is not None and spec.loader is not None
    ddp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ddp)

    def window(index: int, rank: int, measured_j: float, predicted_j: float | None) -> WindowRecord:
        return WindowRecord(
            index=index, loop="train", first_step=4 * index, steps=4, start_s=2.0 * index,
            duration_s=2.0, energy_j={"cpu:estimate": measured_j}, measured_j=measured_j,
            predicted_j=predicted_j, low_j=None, high_j=None,
            prediction_source="none" if predicted_j is None else "fit", tos=1e12, flops=1e9,
            features={}, flags=(), rank=rank,
        )  # fmt: skip

    # rank 0: 10 J (not predicted) + 12 J (predicted 11 J); rank 1: 9 J + 13 J (predicted 14 J)
    windows = (window(0, 0, 10.0, None), window(1, 0, 12.0, 11.0),
               window(0, 1, 9.0, None), window(1, 1, 13.0, 14.0))  # fmt: skip
    lines = ddp.per_rank_lines(bare_report(windows=windows, measured_j=44.0, predicted_j=25.0,
                                           world_size=2))  # fmt: skip
    # total 10 + 12 + 9 + 13 = 44 J; the 2 predicted windows: 11 + 14 = 25 J for 12 + 13 = 25 J
    # (not "25 J predicted" next to 44 J measured, which reads as a 43 % under-prediction)
    assert lines[-1] == (
        "total: 44.000 J measured over 2 ranks; 2 of 4 windows predicted: 25.000 J for 25.000 J"
    )
    # no window predicted yet: say so rather than "0.000 J predicted"
    unpredicted = tuple(w for w in windows if w.predicted_j is None)
    lines = ddp.per_rank_lines(bare_report(windows=unpredicted, measured_j=19.0, world_size=2))
    assert lines[-1] == (
        "total: 19.000 J measured over 2 ranks; 0 of 2 windows predicted: none yet (the first "
        "windows are measured before the model can predict)"
    )


@pytest.mark.skipif(torch.cuda.device_count() >= 2, reason="this machine has 2 CUDA GPUs")
def test_ddp_example_gpu_without_two_gpus_exits_2_with_its_message_on_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # In-process (the module's main), so the test does not pay for a fresh interpreter.
    spec = importlib.util.spec_from_file_location("ddp_example", EXAMPLES / "ddp.py")
    assert spec is not None and spec.loader is not None
    ddp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ddp)
    assert ddp.main(["--gpu"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("ddp.py --gpu needs 2 CUDA GPUs, found ")
    assert "Fix: run without --gpu (CPU)." in err


_NEEDS_JSONARGPARSE = pytest.mark.skipif(
    importlib.util.find_spec("jsonargparse") is None,
    reason="LightningCLI needs jsonargparse: pip install 'jsonargparse[signatures]'",
)


@_NEEDS_JSONARGPARSE
def test_lightning_cli_adds_toenergy_by_class_path_with_init_args(tmp_path: Path) -> None:
    done = run_example(
        "lightning_cli.py", "fit",
        "--trainer.callbacks+=lightning_to_energy.TOEnergy",
        "--trainer.max_epochs=1",
        "--trainer.callbacks.init_args.window_s=1.0",
        "--trainer.callbacks.init_args.print_report=false",
        "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1",
        "--trainer.default_root_dir=runs", "--trainer.enable_progress_bar=false",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    log_dir = tmp_path / "runs" / "lightning_logs" / "version_0"
    report = load_report(log_dir / "energy_report.json")
    # limit_train_batches=3, one epoch; limit_val_batches=1
    assert report.loops["train"].steps == 3
    assert report.loops["validate"].steps == 1
    config = (log_dir / "config.yaml").read_text()
    assert "class_path: lightning_to_energy.TOEnergy" in config
    assert "window_s: 1.0" in config
    assert "print_report: false" in config


@_NEEDS_JSONARGPARSE
def test_lightning_cli_parses_sensors_features_and_report_dir(tmp_path: Path) -> None:
    done = run_example(
        "lightning_cli.py", "fit",
        "--trainer.callbacks+=lightning_to_energy.TOEnergy",
        "--trainer.callbacks.init_args.sensors="
        "[{class_path: lightning_to_energy.FakeSensor, init_args: {power_w: 50.0}}]",
        "--trainer.callbacks.init_args.window_s=1e-6",
        "--trainer.callbacks.init_args.features=[duration_s, tos]",
        "--trainer.callbacks.init_args.calibration=null",
        "--trainer.callbacks.init_args.report_dir=energy",
        "--trainer.callbacks.init_args.print_report=false",
        "--trainer.max_steps=3", "--trainer.logger=false",
        "--trainer.enable_checkpointing=false", "--trainer.enable_progress_bar=false",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = load_report(tmp_path / "energy" / "energy_report.json")
    assert [s.kind for s in report.sensors] == ["fake"]
    assert report.loops["train"].steps == 3
    # window_s=1e-6 s: every step closes its window
    assert len(report.windows) == 3
    # the model's two features, and the roofline column every window carries
    assert all(set(w.features) == {"duration_s", "tos", "roofline_s"} for w in report.windows)
    # a constant 50 W: joules = 50 x the windows' summed duration. NB: the fake sensor and the
    # meter each read the clock, microseconds apart, hence the tolerance.
    expected_j = 50.0 * sum(w.duration_s for w in report.windows)
    assert report.measured_j == pytest.approx(expected_j, rel=1e-3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_gpu_example_without_a_gpu_exits_2_with_its_message(tmp_path: Path) -> None:
    done = run_example("gpu_bf16.py", "--max-steps", "5", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip().startswith("gpu_bf16.py needs a CUDA GPU, found none")
    assert "Fix:" in done.stderr
    assert not (tmp_path / "energy_reports").exists()


@pytest.mark.gpu
def test_gpu_example_trains_in_bf16_and_counts_bf16(tmp_path: Path) -> None:
    done = run_example(
        "gpu_bf16.py", "--max-steps", "200", "--layers", "2", "--dim", "128", "--out", "g",
        cwd=tmp_path, timeout_s=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = load_report(tmp_path / "g" / "energy_report.json")
    assert report.loops["train"].steps == 200
    # bf16-mixed: the matmuls and attention run (and are counted) in bf16
    assert report.tos_by_format.get("bf16", 0.0) > 0
    assert re.search(r"^TOs by format: .*bf16 \d", done.stdout, re.M), done.stdout
    predicted = [w for w in report.windows if w.loop == "train" and w.predicted_j is not None]
    if predicted:  # a run long enough for a second window shows the model converging
        assert f"prediction error per window, first to last ({len(predicted)})" in done.stdout
