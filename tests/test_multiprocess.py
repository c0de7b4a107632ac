"""DDP with two CPU processes, and a training process killed then resumed from a checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_to_energy.reporting.codec import load_report
from lightning_to_energy.reporting.records import EnergyReport

SCRIPT = Path(__file__).parent / "scripts" / "tiny_run.py"


def _run(mode: str, out: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), mode, str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )


@pytest.fixture(scope="module")
def ddp_report(tmp_path_factory: pytest.TempPathFactory) -> EnergyReport:
    """One two-rank DDP run (about half a minute), shared by the tests that read its report."""
    out = tmp_path_factory.mktemp("ddp")
    done = _run("ddp", out)
    assert done.returncode == 0, done.stderr[-3000:]
    return load_report(out / "energy_report.json")


@pytest.mark.slow
def test_ddp_two_processes_sum_ranks_and_read_host_sensors_once(ddp_report: EnergyReport) -> None:
    report = ddp_report
    assert report.world_size == 2
    # 256 rows / 2 ranks / batch 16 = 8 steps per rank, 0.5 s each: 4 s per rank.
    # rank 0: 10 W x 4 s = 40 J, plus the host sensor 100 W x 4 s = 400 J (read once);
    # rank 1: 20 W x 4 s = 80 J. Total 40 + 400 + 80 = 520 J (800 more if host double counted).
    assert report.measured_j == pytest.approx(520.0)
    assert report.loops["train"].energy_j == pytest.approx(
        {"fake:0": 40.0, "host:0": 400.0, "fake:1": 80.0}
    )
    assert sorted({w.rank for w in report.windows}) == [0, 1]
    assert report.loops["train"].steps == 16


@pytest.mark.slow
def test_ddp_report_lists_every_ranks_sensors(ddp_report: EnergyReport) -> None:
    # rank 0 reads fake:0 and the host sensor, rank 1 its own fake:1: every domain of the
    # windows is listed with its kind (rank 1's was "unknown" when rank 0's alone were listed)
    kinds = {s.domain: s.kind for s in ddp_report.sensors}
    assert kinds == {"fake:0": "fake", "host:0": "fake", "fake:1": "fake"}
    domains = {d for w in ddp_report.windows for d in w.energy_j}
    assert domains == set(kinds)


@pytest.mark.slow
def test_ddp_resume_restores_each_ranks_own_windows(tmp_path: Path) -> None:
    done = _run("ddp-resume", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = load_report(tmp_path / "energy_report.json")
    # 4 steps checkpointed, then resumed up to 8: 8 steps per rank of 0.5 s, 4 s per rank:
    # rank 0: 10 W x 4 s = 40 J and the host sensor 100 W x 4 s = 400 J; rank 1: 20 W x 4 s =
    # 80 J; 520 J in all (700 J if rank 0's checkpointed windows came back on both ranks)
    assert report.measured_j == pytest.approx(520.0)
    assert report.loops["train"].energy_j == pytest.approx(
        {"fake:0": 40.0, "host:0": 400.0, "fake:1": 80.0}
    )
    # 1 s windows of 2 steps, 4 per rank: 2 from before the checkpoint, 2 after the resume
    assert sorted((w.rank, w.first_step) for w in report.windows) == [
        (rank, step) for rank in (0, 1) for step in (0, 2, 4, 6)
    ]


@pytest.mark.slow
def test_killed_and_resumed_run_neither_double_counts_nor_loses_checkpointed_windows(
    tmp_path: Path,
) -> None:
    killed = _run("kill", tmp_path)
    assert killed.returncode == 3, killed.stderr[-3000:]
    assert not (tmp_path / "energy_report.json").exists()  # it died before reporting
    resumed = _run("resume", tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    report = load_report(tmp_path / "energy_report.json")
    train = sorted((w for w in report.windows if w.loop == "train"), key=lambda w: w.first_step)
    # Windows of 2 steps (0.5 s a step, 1 s windows). The step-4 checkpoint holds windows
    # [0, 2) and [2, 4); the window [4, 6) closed before the crash is lost with the process,
    # and the resumed run measures steps 4..11 again: [4, 6), [6, 8), [8, 10), [10, 12).
    assert [(w.first_step, w.steps) for w in train] == [(i, 2) for i in range(0, 12, 2)]
    # 12 steps x 0.5 s x 10 W = 60 J: no window counted twice, none saved before it lost.
    assert report.measured_j == pytest.approx(60.0)
    # The TO breakdowns ride in the checkpoint too: the phases sum to the 12 steps' TOs of the
    # windows (steps 0..3 restored from the checkpoint + steps 4..11 run after the resume), not
    # to the 8 steps since the resume.
    assert sum(report.tos_by_phase.values()) == pytest.approx(sum(w.tos for w in train))
    assert sum(report.tos_by_class.values()) == pytest.approx(sum(w.tos for w in train))
