"""Runs that end by an exception or Ctrl-C: sensors released, a partial report, a clean callback
for the next run (issue 13, failure 4)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import Callback, RichProgressBar, TQDMProgressBar
from torch import nn
from torch.utils.data import DataLoader

from fakes.clock import FakeClock as ThreadSafeClock
from fakes.fake_pynvml import FakeGpu, make_fake_pynvml
from lightning_to_energy import EnergyTracker, TOEnergy
from lightning_to_energy.notices import EnergyWarning
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


def _energy(clock: FakeClock, sensor: Any, tmp_path: Path, **kwargs: Any) -> TOEnergy:
    options: dict[str, Any] = {"print_report": False}
    options.update(kwargs)
    return TOEnergy(
        sensors=[sensor],
        window_s=1.0,
        calibration=None,
        clock=clock,
        plot=False,
        report_dir=tmp_path / "out",
        **options,
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


# The summary's first line names the run's joules; Ctrl-C or a step that raises at batch 3 ends
# the fit after batches 0 to 2: 3 steps of 0.5 s at 10 W = 15 J in 1.5 s.
_HEAD = "lightning-to-energy: 15.0 J from a fake sensor, not measured (fake:0) in 1.50 s"


def _lines(text: str) -> list[str]:
    """The text as a terminal's lines, a bar's carriage-return redraws each a line of its own."""
    return [line.rstrip() for part in text.split("\n") for line in part.split("\r")]


def _interrupt(error: str) -> tuple[BaseException, Callable[[pytest.ExceptionInfo[Any]], bool]]:
    """The error a step raises, and how to tell that it came out of ``fit`` as before."""
    if error == "ctrl-c":
        # Lightning's answer to Ctrl-C: a graceful shutdown, then sys.exit(1) inside its
        # `except KeyboardInterrupt`, so the KeyboardInterrupt is the SystemExit's context.
        return (
            KeyboardInterrupt(),
            lambda info: (
                info.type is SystemExit
                and info.value.code == 1
                and isinstance(info.value.__context__, KeyboardInterrupt)
            ),
        )
    boom = RuntimeError("boom")
    return boom, lambda info: info.value is boom  # the very exception, re-raised unchanged


@pytest.mark.parametrize("error", ["ctrl-c", "RuntimeError"])
@pytest.mark.parametrize("bar_first", [False, True], ids=["bar-last", "bar-first"])
@pytest.mark.parametrize("bar", ["tqdm", "rich"])
def test_an_interrupted_fit_prints_its_summary_once_below_the_stopped_bar(
    tmp_path: Path,
    bar: str,
    bar_first: bool,
    error: str,
    capsys: pytest.CaptureFixture[str],
    sigint_restored: None,
) -> None:
    clock = FakeClock()
    energy = _energy(clock, FakeSensor("fake:0", power_w=10.0, clock=clock), tmp_path,
                     print_report=True)  # fmt: skip
    progress: Callback = TQDMProgressBar() if bar == "tqdm" else RichProgressBar()
    callbacks = [AdvanceClock(clock, low=0.5, high=0.5), energy]
    callbacks = [progress, *callbacks] if bar_first else [*callbacks, progress]
    trainer = _trainer(tmp_path, callbacks, enable_progress_bar=True)
    # Lightning calls on_exception in trainer.callbacks order: the bar's own hook (Rich: stop;
    # TQDM: none) runs before ours with bar-first, after ours with bar-last.
    order = trainer.callbacks.index(progress) < trainer.callbacks.index(energy)
    assert order == bar_first
    exception, propagated = _interrupt(error)
    with pytest.raises(BaseException) as info:
        trainer.fit(RaisesAt(3, exception), DataLoader(Rows(64), batch_size=8))
    assert propagated(info), info.value
    captured = capsys.readouterr()
    lines = _lines(captured.out)
    heads = [i for i, line in enumerate(lines) if line.startswith(_HEAD)]
    assert len(heads) == 1 and _HEAD not in captured.err, captured
    # the bar (TQDM "Epoch 0:  38%|...", Rich "Epoch 0/0 ━━━") drew at least once, and never
    # again after the summary: with TQDM left open, it was redrawn at garbage collection
    bar_at = [i for i, line in enumerate(lines) if line.startswith("Epoch 0")]
    assert bar_at and max(bar_at) < heads[0], captured.out
    summary = [line for line in lines[heads[0] :] if line]
    assert len(summary) <= 15  # SUMMARY_MAX_LINES
    # one line says why: interruption_reason() of the step's exception
    reason = "KeyboardInterrupt" if error == "ctrl-c" else "RuntimeError: boom"
    assert summary[1] == f"  interrupted ({reason}): a partial report of the steps run until then"
    # and it names the report files that on_exception saved
    json_path = tmp_path / "out" / "energy_report.json"
    assert f"  full report: lightning-to-energy report {json_path} (also .csv)" in summary
    assert load_report(json_path).interrupted == reason
    if isinstance(progress, TQDMProgressBar):
        # nor later: tqdm draws a bar left open once more when it is garbage-collected (at
        # exit after Ctrl-C); a closed one is disabled for good
        assert progress.train_progress_bar.disable


def test_print_report_false_prints_nothing_of_an_interrupted_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sigint_restored: None
) -> None:
    clock = FakeClock()
    energy = _energy(clock, FakeSensor("fake:0", power_w=10.0, clock=clock), tmp_path)
    trainer = _trainer(tmp_path, [AdvanceClock(clock, low=0.5, high=0.5), energy])
    with pytest.raises(SystemExit):
        trainer.fit(RaisesAt(3, KeyboardInterrupt()), DataLoader(Rows(64), batch_size=8))
    captured = capsys.readouterr()
    assert "lightning-to-energy" not in captured.out + captured.err
    # the files are still written: 3 steps x 0.5 s x 10 W = 15 J
    saved = load_report(tmp_path / "out" / "energy_report.json")
    assert saved.interrupted == "KeyboardInterrupt"
    assert saved.measured_j == pytest.approx(15.0)


def test_verbose_prints_the_interrupted_full_report_and_the_next_fit_only_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = FakeClock()
    sensor = FakeSensor("fake:0", power_w=10.0, clock=clock)
    energy = _energy(clock, sensor, tmp_path, print_report=True, verbose=True)
    trainer = _trainer(tmp_path, [AdvanceClock(clock, low=0.5, high=0.5), energy])
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(RaisesAt(3, RuntimeError("boom")), DataLoader(Rows(64), batch_size=8))
    out = capsys.readouterr().out
    # the full report, once, whose warnings open with the interruption (assembly's note)
    assert out.count("Totals per loop") == 1
    assert " ".join(out.split()).count("interrupted (RuntimeError: boom): a partial report") == 1
    assert out.count("full report: lightning-to-energy report") == 1
    # The next fit prints its own report once, and nothing of the interrupted one is left to
    # print: 4 steps (64 rows / 16) x 0.5 s x 10 W = 20 J, not interrupted.
    energy._sensors = [FakeSensor("fake:0", power_w=10.0, clock=clock)]  # NB: test shortcut
    trainer = _trainer(tmp_path, [AdvanceClock(clock, low=0.5, high=0.5), energy])
    trainer.fit(Tiny(), DataLoader(Rows(64), batch_size=16))
    out = capsys.readouterr().out
    assert out.count("Totals per loop") == 1
    assert "interrupted (" not in out
    assert energy.report is not None and energy.report.measured_j == pytest.approx(20.0)


class _BrokenPipe:
    """A stdout whose reader is gone (``python train.py | head`` after head exits)."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_summary_that_cannot_be_printed_is_one_warning_and_the_error_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    energy = _energy(clock, FakeSensor("fake:0", power_w=10.0, clock=clock), tmp_path,
                     print_report=True)  # fmt: skip
    trainer = _trainer(tmp_path, [AdvanceClock(clock, low=0.5, high=0.5), energy])
    boom = RuntimeError("boom")
    monkeypatch.setattr("sys.stdout", _BrokenPipe())
    with pytest.warns(EnergyWarning) as warned, pytest.raises(RuntimeError) as info:
        trainer.fit(RaisesAt(3, boom), DataLoader(Rows(64), batch_size=8))
    assert info.value is boom  # the step's own exception, not the print's BrokenPipeError
    failed = [w for w in warned if "summary could not be printed" in str(w.message)]
    assert len(failed) == 1 and "BrokenPipeError" in str(failed[0].message)
    # the report was saved before the print failed
    assert load_report(tmp_path / "out" / "energy_report.json").interrupted == "RuntimeError: boom"


def test_a_report_that_fails_after_an_exception_is_one_warning_and_the_error_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise ValueError("a bug of ours")

    clock = FakeClock()
    sensor = FakeSensor("fake:0", power_w=10.0, clock=clock)
    energy = _energy(clock, sensor, tmp_path, print_report=True)
    trainer = _trainer(tmp_path, [AdvanceClock(clock, low=0.5, high=0.5), energy])
    # NB: our own report builder broken on purpose; Lightning is untouched
    monkeypatch.setattr("lightning_to_energy.callbacks.to_energy.finish_run", broken)
    boom = RuntimeError("boom")
    failed = r"report of the interrupted run failed \(ValueError: a bug of ours"
    with pytest.warns(EnergyWarning, match=failed), pytest.raises(RuntimeError) as info:
        trainer.fit(RaisesAt(3, boom), DataLoader(Rows(64), batch_size=8))
    assert info.value is boom  # not the ValueError raised while reporting
    assert energy.tracker is None  # the next fit starts a tracker of its own
    assert sensor.closed  # the report failed before finish_run could release it
