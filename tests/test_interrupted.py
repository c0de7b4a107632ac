"""Runs that end by an exception or Ctrl-C: sensors released, a partial report, a clean callback
for the next run (issue 13, failure 4)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from fakes.clock import FakeClock as ThreadSafeClock
from fakes.fake_pynvml import FakeGpu, make_fake_pynvml
from lightning_to_energy import EnergyTracker, TOEnergy
from lightning_to_energy.reporting.codec import load_report
from lightning_to_energy.sensors.fake import FakeSensor
from lightning_to_energy.sensors.nvml import NvmlSensor
from test_callback import AdvanceClock, FakeClock, Rows, Tiny, _trainer


class RaisesAt(Tiny):
    """Tiny, whose training step raises ``error`` at batch ``at``."""

    def __init__(self, at: int, error: BaseException) -> None:
        super().__init__()
        self.at, self.error = at, error

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if batch_idx == self.at:
            raise self.error
        return super().training_step(batch, batch_idx)


@pytest.fixture
def sigint_restored() -> Iterator[None]:
    """Lightning ignores SIGINT after a KeyboardInterrupt: give pytest its handler back."""
    handler = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)


def _energy(clock: FakeClock, sensor: Any, tmp_path: Path) -> TOEnergy:
    return TOEnergy(
        sensors=[sensor],
        window_s=1.0,
        calibration=None,
        clock=clock,
        print_report=False,
        plot=False,
        report_dir=tmp_path / "out",
    )


def test_a_fit_whose_step_raises_closes_the_sensors_and_reports_what_was_measured(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    sensor = FakeSensor("fake:0", power_w=10.0, clock=clock)
    energy = _energy(clock, sensor, tmp_path)
    trainer = _trainer(tmp_path, [AdvanceClock(clock, low=0.5, high=0.5), energy])
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(RaisesAt(5, RuntimeError("boom")), DataLoader(Rows(64), batch_size=8))
    assert sensor.closed
    report = energy.report
    assert report is not None
    assert report.interrupted == "RuntimeError: boom"
    assert report.warnings[0].startswith("interrupted (RuntimeError: boom): a partial report")
    # batches 0 to 4 ran, 0.5 s each (the clock moves before TOEnergy sees a step end, so
    # windows tile time): 5 steps, 2.5 s x 10 W = 25 J, nothing lost
    assert report.loops["train"].steps == 5
    assert report.measured_j == pytest.approx(10.0 * 2.5)
    # only the window open when step 5 raised is flagged; it is measured, never fitted
    flagged = [w for w in report.windows if "interrupted" in w.flags]  # records.FLAG_INTERRUPTED
    assert flagged == [report.windows[-1]]
    assert "not-fitted" in flagged[0].flags
    saved = load_report(tmp_path / "out" / "energy_report.json")
    assert saved.interrupted == "RuntimeError: boom"
    # The callback is clean: the next fit reports its own 3 steps, not 5 + 3.
    sensor2 = FakeSensor("fake:0", power_w=10.0, clock=clock)
    energy._sensors = [sensor2]  # NB: a test shortcut; a user would pass a factory
    trainer = _trainer(tmp_path, [AdvanceClock(clock, low=0.5, high=0.5), energy], max_steps=3)
    trainer.fit(Tiny(), DataLoader(Rows(64), batch_size=8))
    assert energy.report is not None and energy.report.interrupted is None
    assert energy.report.loops["train"].steps == 3


def test_ctrl_c_during_a_fit_reports_it_as_interrupted(
    tmp_path: Path, sigint_restored: None
) -> None:
    clock = FakeClock()
    sensor = FakeSensor("fake:0", power_w=10.0, clock=clock)
    energy = _energy(clock, sensor, tmp_path)
    trainer = _trainer(tmp_path, [AdvanceClock(clock, low=0.5, high=0.5), energy])
    # Lightning answers Ctrl-C with a graceful shutdown and sys.exit(1)
    with pytest.raises(SystemExit):
        trainer.fit(RaisesAt(3, KeyboardInterrupt()), DataLoader(Rows(64), batch_size=8))
    assert sensor.closed
    assert energy.report is not None and energy.report.interrupted == "KeyboardInterrupt"
    # batches 0 to 2: 3 steps of 0.5 s at 10 W = 15 J
    assert energy.report.loops["train"].steps == 3
    assert energy.report.measured_j == pytest.approx(15.0)
    assert energy.tracker is None


def test_a_failed_fit_stops_the_nvml_sampler_thread_and_shuts_nvml_down(tmp_path: Path) -> None:
    clock = ThreadSafeClock()
    nvml = make_fake_pynvml([FakeGpu(power_w=100.0)], clock=clock)
    before = {t.ident for t in threading.enumerate()}
    sensor = NvmlSensor(0, nvml=nvml, background=True, clock=clock, sleep=clock.sleep)  # type: ignore[arg-type]
    assert {t.ident for t in threading.enumerate()} - before  # the sampler runs
    energy = TOEnergy(sensors=[sensor], window_s=2.0, calibration=None, print_report=False,
                      plot=False, report_dir=tmp_path / "out", clock=clock)  # fmt: skip
    trainer = _trainer(tmp_path, [energy])
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(RaisesAt(2, RuntimeError("boom")), DataLoader(Rows(64), batch_size=8))
    deadline = time.monotonic() + 5.0
    while {t.ident for t in threading.enumerate()} - before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert {t.ident for t in threading.enumerate()} - before == set()
    assert nvml.shutdown_calls == 1


def test_the_plain_tracker_closes_in_a_with_block_and_reports_the_interruption() -> None:
    clock = FakeClock()
    sensor = FakeSensor("fake:0", power_w=20.0, clock=clock)
    model = nn.Linear(4, 2)
    tracker = EnergyTracker(model, sensors=[sensor], window_s=1.0, calibration=None, clock=clock)
    with pytest.raises(KeyboardInterrupt), tracker:
        for _ in range(3):
            with tracker.step():
                model(torch.randn(2, 4)).sum().backward()
                clock.t += 0.5  # inside the step: windows tile time
        with tracker.step():
            raise KeyboardInterrupt
    assert sensor.closed
    report = tracker.build_report()
    assert report.interrupted == "KeyboardInterrupt"
    # 3 steps of 0.5 s at 20 W = 30 J; the raising step took no time on the fake clock
    assert report.loops["train"].steps == 3
    assert report.measured_j == pytest.approx(30.0)


def test_a_step_that_raises_in_a_fresh_window_keeps_its_joules() -> None:
    clock = FakeClock()
    sensor = FakeSensor("fake:0", power_w=20.0, clock=clock)
    model = nn.Linear(4, 2)
    tracker = EnergyTracker(model, sensors=[sensor], window_s=1.0, calibration=None, clock=clock)
    with pytest.raises(RuntimeError, match="late"), tracker:
        for i in range(3):
            with tracker.step():
                clock.t += 0.25
                if i == 2:  # the first step of the second window: no step of it completed
                    raise RuntimeError("late")
                clock.t += 0.25
    report = tracker.build_report()
    # 2 steps of 0.5 s, then 0.25 s of the step that raised: 1.25 s x 20 W = 25 J
    assert report.measured_j == pytest.approx(25.0)
    last = report.windows[-1]
    assert (last.steps, last.flags[-1:]) == (0, ("not-fitted",))
    assert "interrupted" in last.flags
