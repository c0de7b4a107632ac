"""EnergyTracker in a plain PyTorch loop (no Lightning), with a replayed energy trace."""

from __future__ import annotations

import csv
import io
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console
from torch import nn

from lightning_to_energy import EnergyTracker, FakeSensor, ReplaySensor
from lightning_to_energy.reporting.records import WindowRecord
from lightning_to_energy.sensors.fake import TRACE_COLUMNS
from lightning_to_energy.tracking.forecast import step_rate_s
from lightning_to_energy.tracking.ledger import RunningTotals


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _loop(tracker: EnergyTracker, model: nn.Module, clock: Clock, steps: int, dt: float) -> None:
    opt = tracker.optimizer
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    for _ in range(steps):
        with tracker.step((x, y)):
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            clock.t += dt


def _sgd_tracker(model: nn.Module, clock: Clock, power_w: float, **kwargs: Any) -> EnergyTracker:
    """A started tracker over one constant-power fake sensor, SGD, 1 s windows, no calibration."""
    options: dict[str, Any] = {"window_s": 1.0, "calibration": None, "clock": clock, **kwargs}
    tracker = EnergyTracker(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        sensors=[FakeSensor(power_w=power_w, clock=clock)],
        **options,
    )
    tracker.start()
    return tracker


def test_plain_loop_with_a_replayed_trace(tmp_path: Path) -> None:
    # A recorded trace: 0 J at 0 s, then 30 W for 10 s (300 J at 10 s).
    trace = tmp_path / "trace.csv"
    with trace.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(TRACE_COLUMNS)
        w.writerow([0.0, "gpu:0", 0.0, "counter", "recorded"])
        w.writerow([10.0, "gpu:0", 300.0, "counter", "recorded"])
    clock = Clock()
    model = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 3))
    tracker = EnergyTracker(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        sensors=[ReplaySensor.from_csv(trace, clock=clock)],
        window_s=1.0,
        calibration=None,
        clock=clock,
    )
    tracker.start()
    _loop(tracker, model, clock, steps=16, dt=0.25)
    report = tracker.finish()
    # 16 steps x 0.25 s = 4 s of the 30 W trace = 120 J, in 4 windows of 4 steps.
    assert report.measured_j == pytest.approx(120.0)
    assert [w.steps for w in report.windows] == [4, 4, 4, 4]
    assert report.sensors[0].kind == "replay"
    # The step is counted once and replayed: every window has the same TOs, 4 x one step's.
    assert len({w.tos for w in report.windows}) == 1
    assert report.tos_by_phase["backward"] > 0 and report.tos_by_phase["optimizer"] > 0


def test_count_only_without_sensors_and_checkpoint_state_round_trip() -> None:
    clock = Clock()
    model = nn.Linear(4, 3)
    tracker = EnergyTracker(
        model, torch.optim.Adam(model.parameters()), sensors=None, calibration=None, clock=clock
    )
    tracker.start()
    _loop(tracker, model, clock, steps=3, dt=0.1)
    assert tracker.live().tos > 0 and tracker.live().measured_j == 0.0
    clock = Clock()  # fresh, so that 0.25 s steps add up exactly in binary
    meas = EnergyTracker(
        model,
        sensors=[FakeSensor(power_w=5.0, clock=clock)],
        window_s=0.5,
        calibration=None,
        clock=clock,
    )
    meas.optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    meas.start()
    _loop(meas, model, clock, steps=10, dt=0.25)
    state = meas.state_dict()
    restored = EnergyTracker(model, sensors=None, calibration=None, clock=clock)
    restored.load_state_dict(state)
    # 10 steps x 0.25 s at 5 W = 12.5 J in closed windows of 2 steps.
    assert restored.live().measured_j == pytest.approx(12.5)
    assert [w.first_step for w in restored.windows] == [0, 2, 4, 6, 8]
    with pytest.raises(ValueError, match="version"):
        restored.load_state_dict({**state, "version": 99})


def test_old_windows_fold_into_exact_totals_and_survive_a_checkpoint() -> None:
    clock = Clock()
    model = nn.Linear(4, 3)
    tracker = EnergyTracker(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        sensors=[FakeSensor(power_w=8.0, clock=clock)],
        window_s=0.5,
        calibration=None,
        clock=clock,
        max_windows=4,
    )
    tracker.start()
    _loop(tracker, model, clock, steps=20, dt=0.25)
    # 20 steps x 0.25 s = 10 windows of 2 steps; at most 4 kept one by one.
    assert len(tracker.windows) <= 4
    assert [w.index for w in tracker.windows][-1] == 9
    restored = EnergyTracker(model, sensors=None, calibration=None, clock=clock, max_windows=4)
    restored.load_state_dict(tracker.state_dict())
    # 20 steps x 0.25 s at 8 W = 40 J, whatever was folded.
    assert restored.live().measured_j == pytest.approx(40.0)
    report = restored.build_report()
    assert report.measured_j == pytest.approx(40.0)
    assert report.loops["train"].windows == 10 and report.loops["train"].steps == 20
    assert report.loops["train"].energy_j == pytest.approx({"fake:0": 40.0})
    assert any("folded" in text for text in report.warnings)
    with pytest.raises(ValueError, match="max_windows"):
        EnergyTracker(model, max_windows=0)


def test_freezing_a_layer_mid_run_is_counted_afresh_when_the_next_window_opens() -> None:
    clock = Clock()
    model = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 3))
    tracker = _sgd_tracker(model, clock, power_w=5.0)
    _loop(tracker, model, clock, steps=8, dt=0.25)  # windows [0, 4) and [4, 8)
    # Counted: steps 0 and 1 (the first count is provisional); the rest replayed.
    assert tracker.cache.counts == 2
    model[0].weight.requires_grad_(False)  # e.g. a fine-tuning callback freezing a layer
    _loop(tracker, model, clock, steps=4, dt=0.25)
    # The window opened at step 8 reads the trainable parameters afresh: a new signature,
    # counted at steps 8 and 9 (provisional again): 2 + 2 = 4 counts.
    assert tracker.cache.counts == 4
    report = tracker.finish()
    train = [w for w in report.windows if w.loop == "train"]
    # The frozen weight's gradient (a 16 x 8 by 16 x 4 matmul a step) and its SGD update are
    # no longer computed: the same 4 steps now cost fewer TOs.
    assert train[2].tos < train[1].tos


def test_the_steps_feature_counts_a_windows_steps() -> None:
    clock = Clock()
    model = nn.Linear(4, 3)
    tracker = _sgd_tracker(model, clock, power_w=5.0, features=("duration_s", "steps"))
    _loop(tracker, model, clock, steps=6, dt=0.25)
    report = tracker.finish()
    # 0.25 s steps in 1 s windows: 4 steps, then the 2 left at the end
    assert [w.features["steps"] for w in report.windows] == [4.0, 2.0]
    assert [w.steps for w in report.windows] == [4, 2]


def test_live_predicted_and_measured_cover_the_same_windows() -> None:
    clock = Clock()
    model = nn.Linear(4, 3)
    tracker = _sgd_tracker(model, clock, power_w=5.0)
    _loop(tracker, model, clock, steps=4, dt=0.25)  # one window, closed before any prediction
    assert tracker.live().predicted_j is None
    _loop(tracker, model, clock, steps=6, dt=0.25)  # a predicted window, and 2 steps open
    live = tracker.live()
    first, second = tracker.windows
    assert first.predicted_j is None and second.predicted_j is not None
    # 10 steps x 0.25 s x 5 W = 12.5 J measured, the open window's 2 steps (2.5 J) included
    assert live.measured_j == pytest.approx(12.5)
    # predicted: the first window and the open one at their measured 5 J and 2.5 J, the
    # second at its prediction; the difference is that one prediction's error
    assert live.predicted_j == pytest.approx(5.0 + second.predicted_j + 2.5)
    assert live.measured_j - live.predicted_j == pytest.approx(5.0 - second.predicted_j)


def test_forecast_adds_validation_energy_in_proportion_to_the_train_steps_left() -> None:
    clock = Clock()
    model = nn.Linear(4, 3)
    tracker = _sgd_tracker(model, clock, power_w=10.0, total_steps=20)
    _loop(tracker, model, clock, steps=8, dt=0.25)  # 2 train windows of 4 steps, 10 J each
    x = torch.randn(16, 4)
    for _ in range(4):  # a validation pass: 4 steps x 0.25 s x 10 W = 10 J
        with torch.no_grad(), tracker.step(x, loop="validate"):
            model(x)
            clock.t += 0.25
    _loop(tracker, model, clock, steps=4, dt=0.25)  # closes the validation window, 1 train
    forecast = tracker.live().forecast
    assert forecast is not None and forecast.steps_done == 12
    # So far: train 10 + 10, validation 10, train 10 = 40 J, over 12 train steps.
    # Left: 8 train steps x 2.5 J (10 W x 0.25 s, which the model predicts nearly exactly)
    # = 20 J, and validation at 10 J per 12 train steps x 8 = 6.67 J: 40 + 20 + 6.67 = 66.7 J.
    assert forecast.total_j == pytest.approx(40 + 20 + 10 / 12 * 8, rel=0.02)
    assert forecast.low_j <= forecast.total_j <= forecast.high_j


def test_each_window_records_its_steps_roofline_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_to_energy.counting.cost_model import NumberFormat
    from lightning_to_energy.hardware.specs import HardwareSpec
    from lightning_to_energy.tracking import machine as machine_module

    # Peaks so high that every op takes just its launch cost, 1 ms per kernel.
    launch_only = HardwareSpec(
        key="launch-only",
        name="test device",
        kind="cpu",
        matrix_flops={NumberFormat.FP32: 1e30},
        vector_flops={NumberFormat.FP32: 1e30},
        memory_bw_bytes_s=1e30,
        launch_s=1e-3,
    )
    monkeypatch.setattr(machine_module, "detect_hardware", lambda device: launch_only)
    clock = Clock()
    model = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 3))
    tracker = _sgd_tracker(model, clock, power_w=5.0)
    _loop(tracker, model, clock, steps=8, dt=0.25)
    report = tracker.finish()
    assert len(report.windows) == 2
    for window in report.windows:
        features = window.features
        # every kernel of the window's 4 steps at 1 ms: roofline_s = kernels x 1e-3 s
        assert features["roofline_s"] == pytest.approx(features["kernels"] * 1e-3)
        assert features["kernels"] > 0
    # a column of the windows only: the model's features are unchanged
    assert "roofline_s" not in report.coefficients
    # and the report names the roofline it was measured against
    assert report.hardware["roofline"] == "test device (launch-only)"


def test_a_device_missing_from_the_roofline_table_costs_only_the_column(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lightning_to_energy.tracking import machine as machine_module

    def unknown(device: object) -> None:
        raise ValueError("expected a GPU listed in the hardware table; found 'Mystery GPU'")

    monkeypatch.setattr(machine_module, "detect_hardware", unknown)
    clock = Clock()
    model = nn.Linear(4, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # quiet: no warning for a GPU the table lacks
        tracker = _sgd_tracker(model, clock, power_w=5.0)
        _loop(tracker, model, clock, steps=8, dt=0.25)
        report = tracker.finish(save_calibration=False)
    assert [w.steps for w in report.windows] == [4, 4]
    assert all("roofline_s" not in w.features for w in report.windows)
    assert (
        "roofline time not recorded: expected a GPU listed in the hardware table; "
        "found 'Mystery GPU'" in report.warnings
    )


def test_the_live_kind_is_the_least_trustworthy_of_the_sensors() -> None:
    from lightning_to_energy.sensors.base import SensorKind

    clock = Clock()
    model = nn.Linear(4, 3)
    counter = FakeSensor("gpu:0", power_w=50.0, clock=clock, kind=SensorKind.COUNTER)
    replay = ReplaySensor([0.0, 100.0], [0.0, 1000.0], domain="cpu:package-0", clock=clock)
    tracker = EnergyTracker(
        model, sensors=[counter, replay], window_s=1.0, calibration=None, clock=clock
    )
    tracker.start()
    # a replayed trace is weaker than a hardware counter ("counter" sorts first by name)
    assert tracker.live().kind == "replay"


def _modes() -> list[Any]:
    from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

    return list(_get_current_dispatch_mode_stack())


def test_a_step_that_raises_is_dropped_and_the_next_steps_count() -> None:
    clock = Clock()
    model = nn.Linear(4, 3)
    tracker = _sgd_tracker(model, clock, power_w=5.0)
    x = torch.randn(16, 4)
    with pytest.raises(RuntimeError, match="bad batch"), tracker.step(x):
        model(x)  # the first step: counted under the dispatch mode, then it fails
        raise RuntimeError("bad batch")
    # Nothing of it is kept, not even in the cache (a partial count would be replayed later).
    assert (tracker.steps(), tracker.tos_total, tracker.cache.counts) == (0, 0.0, 0)
    assert _modes() == []
    _loop(tracker, model, clock, steps=8, dt=0.25)
    with pytest.raises(RuntimeError, match="bad batch"), tracker.step(x):  # a replayed step
        raise RuntimeError("bad batch")
    assert tracker.steps() == 8
    report = tracker.finish()
    # 8 steps x 0.25 s x 5 W = 10 J in 2 windows of 4 steps, each 4 x the one step's TOs
    assert [w.steps for w in report.windows] == [4, 4]
    assert report.measured_j == pytest.approx(10.0)
    assert report.windows[0].tos == report.windows[1].tos
    assert sum(report.tos_by_phase.values()) == pytest.approx(report.loops["train"].tos)


def test_a_step_begun_twice_or_ended_twice_counts_once_and_leaves_no_dispatch_mode() -> None:
    clock = Clock()
    model = nn.Linear(4, 3)
    tracker = _sgd_tracker(model, clock, power_w=5.0)
    x = torch.randn(16, 4)
    tracker.begin_step(x)  # never ended: dropped by the next begin_step
    tracker.begin_step(x)
    assert len(_modes()) == 1  # the first step's counting mode is gone
    model(x)
    tracker.end_step()
    assert _modes() == [] and tracker.steps() == 1
    tracker.end_step()  # stray: nothing to end
    assert tracker.steps() == 1
    _loop(tracker, model, clock, steps=2, dt=0.25)  # replayed steps
    tracker.end_step()  # stray after a replay: the last step is not added again
    assert tracker.steps() == 3
    # A step belongs to the loop it began in, whatever end_step is told.
    tracker.begin_step(x, loop="validate", will_step=False)
    model(x)
    tracker.end_step(loop="train")
    assert (tracker.steps("train"), tracker.steps("validate")) == (3, 1)
    # A window closed with a step still open (a batch skipped by another callback) drops it.
    tracker.begin_step(x, loop="validate", will_step=False)
    tracker.close_window(boundary=True)
    assert _modes() == [] and tracker.steps("validate") == 1


def test_a_mid_window_checkpoint_loses_no_step_on_resume() -> None:
    clock = Clock()
    model = nn.Linear(4, 3)
    tracker = _sgd_tracker(model, clock, power_w=10.0, total_steps=20)
    _loop(tracker, model, clock, steps=6, dt=0.25)  # window [0, 4) closed, steps 4 and 5 open
    tos_so_far = tracker.tos_total
    state = tracker.state_dict()  # a checkpoint is a window edge: [4, 6) closes
    assert [w["steps"] for w in state["windows"]] == [4, 2]
    resumed = _sgd_tracker(model, Clock(), power_w=10.0, total_steps=20)
    resumed.load_state_dict(state)
    # 6 steps x 0.25 s x 10 W = 15 J, and the same TOs as before the checkpoint
    assert resumed.live().measured_j == pytest.approx(15.0)
    assert resumed.live().tos == pytest.approx(tos_so_far)
    _loop(resumed, model, resumed._clock, steps=14, dt=0.25)  # type: ignore[arg-type]
    report = resumed.finish()
    # steps 6..19 in windows of 4 (the last one 2): [0,4) [4,6) | [6,10) [10,14) [14,18) [18,20)
    assert [w.steps for w in report.windows] == [4, 2, 4, 4, 4, 2]
    # 20 steps x 0.25 s x 10 W = 50 J; every step's TOs in both the loop and the breakdowns
    assert report.loops["train"].steps == 20
    assert report.measured_j == pytest.approx(50.0)
    assert sum(report.tos_by_phase.values()) == pytest.approx(report.loops["train"].tos)
    assert report.forecast is not None and report.forecast.total_j == pytest.approx(50.0)


def test_a_state_that_does_not_load_leaves_the_tracker_as_it_was() -> None:
    clock = Clock()
    model = nn.Linear(4, 3)
    tracker = _sgd_tracker(model, clock, power_w=5.0)
    _loop(tracker, model, clock, steps=8, dt=0.25)
    other = _sgd_tracker(model, Clock(), power_w=5.0, features=("duration_s", "tos"))
    _loop(other, model, other._clock, steps=4, dt=0.25)  # type: ignore[arg-type]
    before = (list(tracker.windows), tracker.steps(), tracker.live().measured_j)
    with pytest.raises(ValueError, match=r"features=\['duration_s', 'tos'\]"):
        tracker.load_state_dict(other.state_dict())
    assert (list(tracker.windows), tracker.steps(), tracker.live().measured_j) == before


def test_a_state_with_more_windows_folds_to_this_trackers_max_windows() -> None:
    clock = Clock()
    model = nn.Linear(4, 3)
    tracker = _sgd_tracker(model, clock, power_w=8.0, window_s=0.5)
    _loop(tracker, model, clock, steps=20, dt=0.25)  # 10 windows of 2 steps, all kept
    restored = _sgd_tracker(model, Clock(), power_w=8.0, window_s=0.5, max_windows=4)
    restored.load_state_dict(tracker.state_dict())
    assert len(restored.windows) <= 4
    # 20 steps x 0.25 s x 8 W = 40 J, whatever was folded
    report = restored.build_report()
    assert report.measured_j == pytest.approx(40.0) and report.loops["train"].windows == 10


def test_max_windows_1_keeps_the_latest_window_and_the_forecast() -> None:
    clock = Clock()
    model = nn.Linear(4, 3)
    tracker = _sgd_tracker(model, clock, power_w=10.0, max_windows=1, total_steps=12)
    _loop(tracker, model, clock, steps=8, dt=0.25)  # 2 windows of 4 steps: the first folded
    assert [w.index for w in tracker.windows] == [1]
    forecast = tracker.live().forecast
    # 8 steps so far at 10 W x 0.25 s = 2.5 J (20 J), 4 left at 2.5 J (10 J): 30 J
    assert forecast is not None and forecast.total_j == pytest.approx(30.0, rel=1e-3)


def test_a_failed_meter_close_costs_one_window_not_the_rest() -> None:
    clock = Clock()
    model = nn.Linear(4, 3)
    edges = {"n": 0}

    def sync() -> None:  # e.g. a CUDA error at the second window edge (the first close)
        edges["n"] += 1
        if edges["n"] == 2:
            raise RuntimeError("CUDA error: unspecified launch failure")

    with pytest.warns(RuntimeWarning, match="failed to close a window") as caught:
        tracker = _sgd_tracker(model, clock, power_w=5.0, sync=sync)
        _loop(tracker, model, clock, steps=16, dt=0.25)
        report = tracker.finish(save_calibration=False)
    assert len([w for w in caught if "lightning-to-energy" in str(w.message)]) == 1
    # The first window is unmeasured; the next three are measured again: 4 x 0.25 s x 5 W = 5 J
    assert [w.measured_j for w in report.windows] == [None, 5.0, 5.0, 5.0]
    assert "unmeasured" in report.windows[0].flags


def test_live_readout_after_a_resume_leaves_out_folded_unmeasured_windows() -> None:
    clock = Clock()
    model = nn.Linear(4, 3)
    # Reads 0 and 1 are the first window's edges, 2k and 2k + 1 the k-th's: read 6 opens the
    # fourth window, which fails and is unmeasured (but predicted).
    sensor = FakeSensor(power_w=5.0, clock=clock, fail_at=6)
    tracker = EnergyTracker(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        sensors=[sensor],
        window_s=1.0,
        calibration=None,
        clock=clock,
        max_windows=2,
    )
    tracker.start()
    with pytest.warns(RuntimeWarning, match="failed"):
        _loop(tracker, model, clock, steps=24, dt=0.25)  # 6 windows, the fourth unmeasured
    assert tracker.live().measured_j == pytest.approx(25.0)  # 5 measured windows x 5 J
    before = tracker.live()
    restored = EnergyTracker(model, sensors=None, calibration=None, max_windows=2)
    restored.load_state_dict(tracker.state_dict())
    after = restored.live()
    # The folded unmeasured window's prediction counts on neither side, as before the resume.
    assert after.measured_j == pytest.approx(before.measured_j)
    assert after.predicted_j == pytest.approx(before.predicted_j)


def test_finishing_twice_saves_the_run_to_the_calibration_once(tmp_path: Path) -> None:
    from lightning_to_energy.calibration.store import CalibrationStore

    clock = Clock()
    model = nn.Linear(4, 3)
    path = tmp_path / "calibration.json"
    tracker = _sgd_tracker(model, clock, power_w=5.0, calibration=path)
    _loop(tracker, model, clock, steps=12, dt=0.25)  # 3 windows of 4 steps, all fitted
    tracker.finish()
    tracker.finish()
    stored = CalibrationStore.from_path(path).load()
    assert stored is not None
    # one run of 3 windows, not 2 runs of 6
    assert (stored.n_runs, len(stored.windows)) == (1, 3)


def _checkpointing_loop(
    tracker: EnergyTracker, model: nn.Module, clock: Clock, steps: int, every: int
) -> list[dict[str, Any]]:
    """``steps`` steps of 0.25 s, with a checkpoint (``state_dict()``) after every ``every``."""
    states = []
    for i in range(steps):
        _loop(tracker, model, clock, steps=1, dt=0.25)
        if (i + 1) % every == 0:
            states.append(tracker.state_dict())
    return states


def test_frequent_checkpoints_leave_the_live_windows_whole_and_fitted() -> None:
    clock = Clock()
    model = nn.Linear(4, 3)
    # A sensor whose windows are trustworthy from 1 s (as an NVML counter from 2 s), and a
    # checkpoint every 3 steps of 0.25 s: closing the window at each checkpoint cut every
    # window to 0.75 s, all short, and the model never learnt.
    tracker = EnergyTracker(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        sensors=[FakeSensor(power_w=10.0, clock=clock, min_window_s=1.0)],
        window_s=1.0,
        calibration=None,
        clock=clock,
    )
    tracker.start()
    _checkpointing_loop(tracker, model, clock, steps=15, every=3)
    # The live readout keeps the joules of the open window [12, 15) from before its lap at
    # the step-15 checkpoint: 15 steps x 0.25 s x 10 W = 37.5 J
    assert tracker.live().measured_j == pytest.approx(37.5)
    _loop(tracker, model, clock, steps=1, dt=0.25)
    report = tracker.finish(save_calibration=False)
    # 16 steps in windows of 4 steps (1 s): 4 x 0.25 s x 10 W = 10 J each, every one fitted
    assert [(w.first_step, w.steps) for w in report.windows] == [(0, 4), (4, 4), (8, 4), (12, 4)]
    assert [w.measured_j for w in report.windows] == pytest.approx([10.0] * 4)
    assert not any(w.flags for w in report.windows)
    assert tracker.model.n_updates == 4


def test_a_checkpoint_saves_the_open_window_and_a_resume_loses_or_repeats_nothing() -> None:
    clock = Clock()
    model = nn.Linear(4, 3)
    tracker = _sgd_tracker(model, clock, power_w=10.0, total_steps=12)
    states = _checkpointing_loop(tracker, model, clock, steps=12, every=6)
    live = tracker.finish(save_calibration=False)
    # The live run: windows of 4 steps (1 s), not cut at steps 6 and 12 by the checkpoints.
    assert [w.steps for w in live.windows] == [4, 4, 4]
    # The step-6 checkpoint: [0, 4) closed, and [4, 6) as it stood (2 x 0.25 s x 10 W = 5 J).
    saved = states[0]
    assert [(w["first_step"], w["steps"]) for w in saved["windows"]] == [(0, 4), (4, 2)]
    assert [w["measured_j"] for w in saved["windows"]] == pytest.approx([10.0, 5.0])
    assert "boundary" in saved["windows"][1]["flags"]
    assert saved["n_windows"] == 2 and saved["steps"]["train"] == 6
    # The saved model learnt the saved partial window (fit-worthy: no minimum window here)
    # on top of the closed one; the live model did not, it fitted [4, 8) whole later.
    assert saved["model"]["n_updates"] == 2
    # Killed after step 6 and resumed: steps 6..11 run again in the resumed process only.
    resumed = _sgd_tracker(model, Clock(), power_w=10.0, total_steps=12)
    resumed.load_state_dict(saved)
    _loop(resumed, model, resumed._clock, steps=6, dt=0.25)  # type: ignore[arg-type]
    report = resumed.finish(save_calibration=False)
    # [0, 4) [4, 6) restored, then [6, 10) [10, 12): 12 steps x 0.25 s x 10 W = 30 J
    assert [(w.first_step, w.steps) for w in report.windows] == [(0, 4), (4, 2), (6, 4), (10, 2)]
    assert report.measured_j == pytest.approx(30.0)
    assert report.loops["train"].steps == 12
    assert report.loops["train"].tos == pytest.approx(live.loops["train"].tos)


def test_a_calibration_of_other_features_is_used_in_part_and_says_so_once(
    tmp_path: Path,
) -> None:
    from lightning_to_energy.calibration.data import Calibration
    from lightning_to_energy.calibration.store import CalibrationStore
    from lightning_to_energy.hardware.identity import HardwareInfo
    from lightning_to_energy.model.regression import OnlineEnergyModel

    stored = OnlineEnergyModel(("duration_s", "tos"))
    for d, t in [(2.0, 1e12), (3.0, 4e12), (4.0, 2e12)]:
        stored.update({"duration_s": d, "tos": t}, 50.0 * d + 1e-11 * t)
    path = tmp_path / "calibration.json"
    CalibrationStore.from_path(path).save(Calibration.from_model(stored, HardwareInfo.detect()))

    def start(features: tuple[str, ...]) -> tuple[EnergyTracker, list[str]]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tracker = EnergyTracker(
                None, sensors=[FakeSensor(power_w=1.0)], calibration=path, features=features
            )
            tracker.start()
        return tracker, [str(w.message) for w in caught if "used in part" in str(w.message)]

    same, said = start(("duration_s", "tos"))
    assert said == [] and same.model.n_windows == 3  # all of it: prior and 3 seeded windows
    other, said = start(("duration_s", "tos", "flops"))
    # Before: the static power and J/TO priors were taken, flops silently got none and no
    # window was seeded (none has flops), with nothing said.
    assert len(said) == 1
    assert "prior coefficients are used for ['duration_s', 'tos']; none for ['flops']" in said[0]
    assert other.model.prior is not None
    assert set(other.model.prior.coefficients) == {"duration_s", "tos"}
    assert other.model.n_windows == 0
    assert any("used in part" in w for w in other.warnings)  # and in the report's warnings


def test_a_directory_or_a_non_path_as_calibration_is_refused_at_construction(
    tmp_path: Path,
) -> None:
    # Before: accepted, then at the first step "cannot be used (unreadable: Is a directory)
    # ... Fix: delete it" (the run's log directory!), and 5 failed only inside start().
    with pytest.raises(ValueError, match="expected a calibration file, found the directory"):
        EnergyTracker(None, sensors=None, calibration=tmp_path)
    with pytest.raises(ValueError, match="calibration: expected 'auto', a calibration JSON"):
        EnergyTracker(None, sensors=None, calibration=5)  # type: ignore[arg-type]
    EnergyTracker(None, sensors=None, calibration=tmp_path / "new.json")  # created at the end


def test_an_estimated_run_says_in_its_report_why_no_calibration_was_saved_and_where() -> None:
    from lightning_to_energy.calibration.store import default_directory
    from lightning_to_energy.hardware.identity import HardwareInfo
    from lightning_to_energy.hardware.identity import hardware_fingerprint as fingerprint
    from lightning_to_energy.sensors.base import SensorKind

    clock = Clock()
    model = nn.Linear(4, 3)
    tracker = EnergyTracker(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        sensors=[FakeSensor("cpu", power_w=5.0, clock=clock, kind=SensorKind.ESTIMATE)],
        window_s=1.0,
        calibration="auto",
        clock=clock,
    )
    tracker.start()
    _loop(tracker, model, clock, steps=12, dt=0.25)  # 3 fitted windows, estimated joules
    report = tracker.finish()
    where = default_directory() / f"{fingerprint(HardwareInfo.detect())}.json"
    notes = [w for w in report.warnings if "no calibration saved" in w]
    # Before: nothing saved and nothing said.
    assert len(notes) == 1
    assert "(cpu (estimate))" in notes[0] and f"would be saved to {where}" in notes[0]
    assert "calibration=<file>" in notes[0]
    assert tracker.calibration_path is None and not where.exists()


def test_windows_below_the_sensors_minimum_say_to_lengthen_them_not_to_train_longer(
    tmp_path: Path,
) -> None:
    # window_s=1 against a sensor whose joules are trustworthy over 2 s: every window is
    # short, however long the run; "Fix: train longer" would never help
    from lightning_to_energy.notices import EnergyWarning
    from lightning_to_energy.sensors.base import SensorKind

    clock = Clock()
    model = nn.Linear(4, 3)
    sensor = FakeSensor(
        "gpu:0", power_w=5.0, clock=clock, kind=SensorKind.COUNTER, min_window_s=2.0
    )
    with pytest.warns(EnergyWarning, match="below the minimum trustworthy window"):
        tracker = EnergyTracker(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            sensors=[sensor],
            window_s=1.0,
            calibration=tmp_path / "cal.json",
            clock=clock,
        )
        tracker.start()
    _loop(tracker, model, clock, steps=40, dt=0.25)  # 10 windows of 1 s, all short
    report = tracker.finish()
    notes = [w for w in report.warnings if w.startswith("no calibration saved")]
    assert len(notes) == 1
    assert f"no calibration saved to {tmp_path / 'cal.json'}: no window was fitted" in notes[0]
    # the windows (1 s) are shorter than gpu:0's 2 s minimum: that is the fix
    assert "every window was shorter than the 2 s a sensor needs (window_s=1 s)" in notes[0]
    assert "Fix: leave window_s unset, or pass window_s >= 2." in notes[0]
    assert "train longer" not in notes[0]


def test_a_run_records_where_its_calibration_was_saved(tmp_path: Path) -> None:
    clock = Clock()
    model = nn.Linear(4, 3)
    tracker = _sgd_tracker(model, clock, power_w=5.0, calibration=tmp_path / "cal.json")
    _loop(tracker, model, clock, steps=12, dt=0.25)
    report = tracker.finish()
    assert tracker.calibration_path == tmp_path / "cal.json"
    assert not any("calibration" in w for w in report.warnings)


def test_a_report_given_as_calibration_is_said_in_the_report_and_left_intact(
    tmp_path: Path,
) -> None:
    from lightning_to_energy.calibration.store import CalibrationWarning
    from lightning_to_energy.reporting.files import save_report

    clock = Clock()
    model = nn.Linear(4, 3)
    first = _sgd_tracker(model, clock, power_w=5.0)
    _loop(first, model, clock, steps=8, dt=0.25)
    saved = save_report(first.finish(), tmp_path, plot=False)
    before = saved.json_path.read_bytes()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker = _sgd_tracker(model, clock, power_w=5.0, calibration=saved.json_path)
        _loop(tracker, model, clock, steps=8, dt=0.25)
        report = tracker.finish()
    assert [w.category for w in caught] == [CalibrationWarning, CalibrationWarning]
    # The store's warnings (shown when they happened) are also lines of the report: before,
    # the report said nothing of the calibration it could not use nor of the save it refused.
    said = [w for w in report.warnings if str(saved.json_path) in w]
    assert len(said) == 2
    assert "found an energy report" in said[0] and "calibration not saved" in said[1]
    assert saved.json_path.read_bytes() == before
    assert tracker.calibration_path is None


def test_the_report_says_which_calibration_seeded_the_model(tmp_path: Path) -> None:
    from lightning_to_energy.calibration.store import default_directory
    from lightning_to_energy.hardware.detect import detect_hardware
    from lightning_to_energy.hardware.identity import HardwareInfo
    from lightning_to_energy.hardware.identity import hardware_fingerprint as fingerprint
    from lightning_to_energy.reporting.codec import report_from_dict, report_to_dict
    from lightning_to_energy.reporting.console import prior_text, render_report
    from lightning_to_energy.reporting.records import PriorRecord

    clock = Clock()
    model = nn.Linear(4, 3)
    path = tmp_path / "cal.json"
    first = _sgd_tracker(model, clock, power_w=5.0, calibration=path)
    _loop(first, model, clock, steps=12, dt=0.25)  # 3 windows of 4 steps, all fitted and saved
    report = first.finish()
    # Before: the report did not say whether (or which) calibration its predictions came from.
    # A CPU: no physical prior either (datasheet priors cover the table's GPUs), and it says so.
    cpu_note = (
        f"{detect_hardware('cpu').name} is a CPU without a physical calibration (datasheet "
        "priors cover the GPUs of the hardware table)"
    )
    assert report.prior == PriorRecord(
        note=f"{path} does not exist yet (this run's windows start it)", physical_note=cpu_note
    )
    second = _sgd_tracker(model, clock, power_w=5.0, calibration=path)
    _loop(second, model, clock, steps=4, dt=0.25)
    report = second.finish(save_calibration=False)
    # the first run's 3 windows, all of its 1 run, seeded the second run's model
    label = HardwareInfo.detect().label
    assert report.prior == PriorRecord(str(path), 3, 1, 3, 1, label, False, "")
    assert report.windows[0].predicted_j is not None  # it predicted from its first window
    assert report_from_dict(report_to_dict(report)).prior == report.prior
    line = f"prior: {path} (made on this hardware): 3 of its 3 stored windows, from 1 of its 1 run"
    console = Console(file=io.StringIO(), width=400, color_system=None)
    render_report(report, console)
    assert line in console.file.getvalue()  # type: ignore[attr-defined]
    # a checkpoint carries it: a run resumed without the file (or after it changed) still
    # reports the prior its model started from, loaded before start() as the callback does
    state = second.state_dict()
    resumed = EnergyTracker(model, sensors=None, calibration=None, clock=clock)
    resumed.load_state_dict(state)
    resumed.start()
    assert resumed.build_report().prior == report.prior
    # without a calibration, why
    none = EnergyTracker(None, sensors=None, calibration=None)
    none.start()
    assert (
        prior_text(none.build_report().prior) == "none: calibration=None (no prior, nothing saved)"
    )  # type: ignore[arg-type]
    auto = EnergyTracker(None, sensors=None, calibration="auto")
    auto.start()
    where = default_directory() / f"{fingerprint(HardwareInfo.detect())}.json"
    assert auto.build_report().prior == PriorRecord(
        note=f"the first run on this hardware (no calibration at {where} yet)",
        physical_note=cpu_note,
    )


def test_the_report_says_a_calibration_was_made_on_other_hardware(tmp_path: Path) -> None:
    from lightning_to_energy.calibration.data import Calibration
    from lightning_to_energy.calibration.store import CalibrationStore
    from lightning_to_energy.hardware.identity import HardwareInfo
    from lightning_to_energy.model.regression import OnlineEnergyModel

    h100 = HardwareInfo(gpus=("NVIDIA H100 80GB HBM3",), driver_version="1", cpu="x", cpu_count=2)
    stored = OnlineEnergyModel(("duration_s", "tos"))
    for d, t in [(2.0, 1e12), (3.0, 4e12), (4.0, 2e12)]:
        stored.update({"duration_s": d, "tos": t}, 50.0 * d + 1e-11 * t)
    path = tmp_path / "h100.json"
    CalibrationStore.from_path(path).save(Calibration.from_model(stored, h100))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the store's "made on another machine" warning
        tracker = EnergyTracker(
            None, sensors=None, calibration=path, features=("duration_s", "tos")
        )
        tracker.start()
    prior = tracker.build_report().prior
    assert prior is not None
    # its 3 windows of 1 run seed the model; made on the H100, not on this machine
    assert (prior.seed_windows, prior.seed_runs, prior.other_hardware) == (3, 1, True)
    assert prior.hardware == h100.label


# --- second mutation pass: window flags, live readout, forecast, checkpoints, reports ---------


def test_window_flags_say_what_was_measured_and_what_was_fitted() -> None:
    from lightning_to_energy.sensors.base import SensorKind

    clock = Clock()
    model = nn.Linear(4, 3)
    # Windows tile time: read k closes window k - 1 and opens window k, and a domain that
    # failed there is read once more to open window k. So the GPU's read 2 (window 1's close)
    # fails, then both sensors' close of window 2: the GPU's read 4, the CPU's read 3.
    gpu = FakeSensor("gpu:0", power_w=4.0, clock=clock, kind=SensorKind.COUNTER, fail_at=[2, 4])
    cpu = FakeSensor("cpu:0", power_w=1.0, clock=clock, kind=SensorKind.ESTIMATE, fail_at=[3])
    tracker = EnergyTracker(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        sensors=[gpu, cpu],
        window_s=1.0,
        calibration=None,
        clock=clock,
    )
    tracker.start()
    with pytest.warns(RuntimeWarning, match="scripted failure"):
        _loop(tracker, model, clock, steps=16, dt=0.25)  # 4 windows of 4 steps (1 s)
    report = tracker.finish(save_calibration=False)
    # 1 s x (4 W + 1 W) = 5 J, the CPU's 1 J an estimate: flagged although the GPU's 4 J is not
    # window 1: the GPU failed, the CPU's 1 J alone: a fault, not fitted
    # window 2: both failed: no joules at all (not 0 J), a fault, nothing to fit
    assert [(w.measured_j, w.flags) for w in report.windows] == [
        (5.0, ("estimate",)),
        (1.0, ("sensor-fault", "estimate", "not-fitted")),
        (None, ("sensor-fault", "unmeasured")),
        (5.0, ("estimate",)),
    ]
    # fitted: windows 0 and 3 only
    assert tracker.model.n_updates == 2


def test_short_and_zero_joule_windows_are_flagged_and_not_fitted() -> None:
    clock = Clock()
    model = nn.Linear(4, 3)
    # windows of 1 s on a sensor trustworthy from 2 s: short
    short = EnergyTracker(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        sensors=[FakeSensor(power_w=5.0, clock=clock, min_window_s=2.0)],
        window_s=1.0,
        calibration=None,
        clock=clock,
    )
    short.start()
    _loop(short, model, clock, steps=8, dt=0.25)
    report = short.finish(save_calibration=False)
    # 2 windows of 4 x 0.25 s x 5 W = 5 J, each shorter than 2 s
    assert [(w.measured_j, w.flags) for w in report.windows] == [(5.0, ("short", "not-fitted"))] * 2
    assert short.model.n_updates == 0
    # a counter that did not move (an NVML window shorter than its 100 ms update): 0 J is no
    # measurement to fit, and not a regression error to warn about
    clock = Clock()
    still = EnergyTracker(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        sensors=[FakeSensor(energy_fn=lambda: 7.0, clock=clock)],
        window_s=1.0,
        calibration=None,
        clock=clock,
    )
    still.start()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _loop(still, model, clock, steps=4, dt=0.25)
        report = still.finish(save_calibration=False)
    assert [(w.measured_j, w.flags) for w in report.windows] == [(0.0, ("not-fitted",))]
    assert still.model.n_updates == 0


def test_windows_closed_by_a_loop_switch_or_the_end_are_boundary_windows() -> None:
    clock = Clock()
    model = nn.Linear(4, 3)
    tracker = _sgd_tracker(model, clock, power_w=5.0)
    _loop(tracker, model, clock, steps=2, dt=0.25)
    x = torch.randn(16, 4)
    with torch.no_grad(), tracker.step(x, loop="validate", will_step=False):
        model(x)
        clock.t += 0.25
    train = tracker.windows[0]
    # 2 train steps x 0.25 s x 5 W = 2.5 J, cut short by the validation step
    assert (train.loop, train.steps, train.measured_j) == ("train", 2, 2.5)
    assert train.flags == ("boundary",)
    # and the last window, cut short by the end of the run: 1 step x 0.25 s x 5 W = 1.25 J
    last = tracker.finish(save_calibration=False).windows[-1]
    assert (last.loop, last.steps, last.measured_j, last.flags) == (
        "validate",
        1,
        1.25,
        ("boundary",),
    )


def test_two_checkpoints_in_one_window_keep_its_joules_in_the_live_readout() -> None:
    clock = Clock()
    model = nn.Linear(4, 3)
    tracker = _sgd_tracker(model, clock, power_w=10.0)
    _checkpointing_loop(tracker, model, clock, steps=3, every=1)  # 3 laps of window [0, 4)
    # 3 steps x 0.25 s x 10 W = 7.5 J, every lap's joules kept, not the latest lap's 2.5 J
    assert tracker.live().measured_j == pytest.approx(7.5)
    _loop(tracker, model, clock, steps=1, dt=0.25)
    # the window closes whole: 4 steps x 2.5 J = 10 J
    assert [(w.steps, w.measured_j) for w in tracker.windows] == [(4, pytest.approx(10.0))]


def test_forecast_after_the_planned_steps_and_before_a_train_window_closes() -> None:
    clock = Clock()
    model = nn.Linear(4, 3)
    over = _sgd_tracker(model, clock, power_w=10.0, total_steps=4)
    _loop(over, model, clock, steps=8, dt=0.25)  # twice the planned 4 steps
    forecast = over.live().forecast
    # no step left (not -4): the forecast is what was measured, 8 x 0.25 s x 10 W = 20 J
    assert forecast is not None
    assert (forecast.total_j, forecast.low_j, forecast.high_j) == (20.0, 20.0, 20.0)
    assert (forecast.steps_total, forecast.steps_done) == (4, 8)
    clock = Clock()
    first = _sgd_tracker(model, clock, power_w=10.0, total_steps=8)
    x = torch.randn(16, 4)
    for _ in range(4):  # a validation window of 4 x 0.25 s, closed when due
        with torch.no_grad(), first.step(x, loop="validate", will_step=False):
            model(x)
            clock.t += 0.25
    _loop(first, model, clock, steps=1, dt=0.25)
    # a train step, but no train window closed yet: no train seconds per step to scale
    assert first.forecast() is None


def test_a_forecast_asked_for_mid_window_counts_the_open_windows_steps() -> None:
    clock = Clock()
    model = nn.Linear(4, 3)
    tracker = _sgd_tracker(model, clock, power_w=10.0, total_steps=12)
    _loop(tracker, model, clock, steps=10, dt=0.25)
    # 1 s windows of 4 steps: windows [0, 4) and [4, 8) closed (20 J), steps 8 and 9 open.
    forecast = tracker.forecast()
    assert forecast is not None and forecast.steps_done == 10
    # 20 J so far + the model's prediction for the 12 - 8 = 4 steps after the closed windows,
    # at 10 W x 0.25 s = 2.5 J a step: 20 + 4 x 2.5 = 30 J (the open window's 2 steps were in
    # neither part: 25 J)
    assert forecast.total_j == pytest.approx(30.0, rel=1e-3)


def test_the_report_of_several_ranks_gives_one_ranks_wall_time() -> None:
    clock = Clock()
    model = nn.Linear(4, 3)
    tracker = _sgd_tracker(model, clock, power_w=5.0)
    _loop(tracker, model, clock, steps=8, dt=0.25)
    tracker.close(save_calibration=False)
    windows = list(tracker.windows)
    other_rank = [replace(w, rank=1) for w in windows]
    report = tracker.build_report([*windows, *other_rank], world_size=2)
    # 2 ranks x 8 steps x 0.25 s = 4 s of rank-seconds, 2 s of wall time; joules add up:
    # 2 x 8 x 0.25 s x 5 W = 20 J
    assert report.loops["train"].duration_s == 2.0
    assert report.measured_j == 20.0


def test_only_rank_0_saves_the_calibration(tmp_path: Path) -> None:
    clock = Clock()
    model = nn.Linear(4, 3)
    path = tmp_path / "cal.json"
    tracker = _sgd_tracker(model, clock, power_w=5.0, calibration=path, rank=1)
    _loop(tracker, model, clock, steps=12, dt=0.25)  # 3 fitted windows
    tracker.finish()
    assert tracker.model.n_updates == 3
    assert not path.exists() and tracker.calibration_path is None


def test_a_model_restored_before_start_is_not_replaced_by_the_calibration(tmp_path: Path) -> None:
    clock = Clock()
    model = nn.Linear(4, 3)
    path = tmp_path / "cal.json"
    first = _sgd_tracker(model, clock, power_w=5.0, calibration=path)
    _loop(first, model, clock, steps=12, dt=0.25)  # 3 fitted windows, saved to the file
    first.finish()
    run = _sgd_tracker(model, clock, power_w=5.0)
    _loop(run, model, clock, steps=8, dt=0.25)  # 2 fitted windows
    state = run.state_dict()
    # as the callback does: the checkpoint is loaded before start() finds the calibration
    resumed = EnergyTracker(
        model, torch.optim.SGD(model.parameters(), lr=0.1), sensors=None, calibration=path
    )
    resumed.load_state_dict(state)
    resumed.start()
    # the checkpoint's model (2 updates, nothing seeded), not the file's (0 updates, 3 seeded)
    assert (resumed.model.n_updates, resumed.model.n_windows) == (2, 2)


def test_module_attribution_splits_one_steps_predicted_dynamic_energy() -> None:
    clock = Clock()
    model = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 3))
    tracker = _sgd_tracker(model, clock, power_w=5.0)
    _loop(tracker, model, clock, steps=12, dt=0.25)  # 3 windows of 4 identical steps
    report = tracker.finish(save_calibration=False)
    window = report.windows[0]
    # one step: a window's features / its 4 steps, without the static (duration) term
    one_step = {k: v / window.steps for k, v in window.features.items() if k != "roofline_s"}
    one_step["duration_s"] = 0.0
    per_step_j = tracker.model.predict(one_step).energy_j
    assert per_step_j is not None and per_step_j > 0
    # every module is listed (fewer than 10): their shares sum to 1, their joules to one step's
    assert sum(m.share for m in report.top_modules) == pytest.approx(1.0)
    # TOs per step: the window's TOs / its 4 steps, over the modules ("(other)" included)
    assert sum(m.tos for m in report.top_modules) == pytest.approx(window.tos / window.steps)
    assert sum(m.predicted_j or 0.0 for m in report.top_modules) == pytest.approx(per_step_j)


def test_a_state_with_exactly_max_windows_keeps_every_window() -> None:
    clock = Clock()
    model = nn.Linear(4, 3)
    tracker = _sgd_tracker(model, clock, power_w=5.0, max_windows=4)
    _loop(tracker, model, clock, steps=16, dt=0.25)  # 4 windows of 4 steps: none folded
    assert len(tracker.windows) == 4 and not tracker.archived
    restored = _sgd_tracker(model, Clock(), power_w=5.0, max_windows=4)
    restored.load_state_dict(tracker.state_dict())
    # 4 windows fit the bound of 4: nothing to fold
    assert [w.index for w in restored.windows] == [0, 1, 2, 3] and not restored.archived


def test_live_predicted_stays_none_after_a_resume_when_nothing_was_predicted() -> None:
    clock = Clock()
    model = nn.Linear(4, 3)
    # every window shorter than the sensor's 10 s minimum: none fitted, none predicted
    tracker = EnergyTracker(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        sensors=[FakeSensor(power_w=5.0, clock=clock, min_window_s=10.0)],
        window_s=1.0,
        calibration=None,
        clock=clock,
        max_windows=1,
    )
    tracker.start()
    _loop(tracker, model, clock, steps=12, dt=0.25)  # 3 windows, 2 of them folded
    assert tracker.archived and tracker.live().predicted_j is None
    restored = EnergyTracker(model, sensors=None, calibration=None, max_windows=1)
    restored.load_state_dict(tracker.state_dict())
    # 12 steps x 0.25 s x 5 W = 15 J measured, nothing predicted (not "15 J predicted")
    assert restored.live().measured_j == pytest.approx(15.0)
    assert restored.live().predicted_j is None


def test_the_prior_counts_every_run_of_a_calibration_past_the_runs_listed(
    tmp_path: Path,
) -> None:
    from lightning_to_energy.calibration.data import MAX_RUNS_LISTED, Calibration, merge
    from lightning_to_energy.calibration.store import CalibrationStore
    from lightning_to_energy.hardware.identity import HardwareInfo
    from lightning_to_energy.model.regression import OnlineEnergyModel

    fitted = OnlineEnergyModel(("duration_s", "tos"))
    fitted.update({"duration_s": 2.0, "tos": 1e12}, 110.0)
    hardware = HardwareInfo.detect()
    merged = Calibration.from_model(fitted, hardware, run_id="run-0")
    for i in range(1, MAX_RUNS_LISTED + 5):
        merged = merge(merged, Calibration.from_model(fitted, hardware, run_id=f"run-{i}"))
    path = tmp_path / "cal.json"
    CalibrationStore.from_path(path).save(merged)
    tracker = EnergyTracker(None, sensors=None, calibration=path, features=("duration_s", "tos"))
    tracker.start()
    prior = tracker.build_report().prior
    assert prior is not None
    # 200 + 5 runs merged, of which the file lists the latest 200: the prior says 205
    assert prior.stored_runs == MAX_RUNS_LISTED + 5


def test_ops_without_a_formula_are_listed_per_step_not_summed_over_loops() -> None:
    class Sorted(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(torch.sort(x, dim=1).values)  # aten.sort has no TO formula

    clock = Clock()
    model = Sorted()
    tracker = _sgd_tracker(model, clock, power_w=5.0)
    _loop(tracker, model, clock, steps=4, dt=0.25)
    x = torch.randn(16, 4)
    for _ in range(4):
        with torch.no_grad(), tracker.step(x, loop="validate", will_step=False):
            model(x)
            clock.t += 0.25
    report = tracker.finish(save_calibration=False)
    # one sort per step in training and one in validation: 1 call a step, not 1 + 1
    assert report.unmodelled_ops == {"aten.sort": 1}


def test_module_tos_per_step_count_the_steps_restored_from_a_checkpoint() -> None:
    clock = Clock()
    model = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 3))
    whole = _sgd_tracker(model, clock, power_w=5.0)
    _loop(whole, model, clock, steps=12, dt=0.25)
    expected = {m.name: m.tos for m in whole.finish(save_calibration=False).top_modules}
    clock = Clock()
    first = _sgd_tracker(model, clock, power_w=5.0)
    _loop(first, model, clock, steps=8, dt=0.25)
    resumed = _sgd_tracker(model, clock, power_w=5.0)
    resumed.load_state_dict(first.state_dict())
    _loop(resumed, model, clock, steps=4, dt=0.25)
    report = resumed.finish(save_calibration=False)
    # 8 restored + 4 new steps of the same work: the same TOs per step as one run of 12
    # (not the 12 steps' TOs over the 4 run since the resume)
    assert {m.name: m.tos for m in report.top_modules} == pytest.approx(expected)


def test_a_resumed_run_saves_to_the_calibration_as_the_same_run(tmp_path: Path) -> None:
    from lightning_to_energy.calibration.store import CalibrationStore

    clock = Clock()
    model = nn.Linear(4, 3)
    path = tmp_path / "cal.json"
    first = _sgd_tracker(model, clock, power_w=5.0, calibration=path)
    _loop(first, model, clock, steps=8, dt=0.25)  # 2 fitted windows
    state = first.state_dict()
    first.finish()  # e.g. a preempted job's handler saved both
    resumed = _sgd_tracker(model, clock, power_w=5.0, calibration=path)
    resumed.load_state_dict(state)
    _loop(resumed, model, clock, steps=4, dt=0.25)  # 1 more fitted window
    report = resumed.finish()
    assert report.run_id == first.build_report().run_id
    stored = CalibrationStore.from_path(path).load()
    assert stored is not None
    # one run of 2 + 1 windows, its first save replaced (not 2 runs, 2 + 3 windows)
    assert (stored.n_runs, len(stored.windows)) == (1, 3)


def test_a_run_partly_estimated_is_not_saved_to_the_automatic_store() -> None:
    from lightning_to_energy.sensors.base import SensorKind

    clock = Clock()
    model = nn.Linear(4, 3)
    tracker = EnergyTracker(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        sensors=[
            FakeSensor("gpu:0", power_w=4.0, clock=clock, kind=SensorKind.COUNTER),
            FakeSensor("cpu", power_w=1.0, clock=clock, kind=SensorKind.ESTIMATE),
        ],
        window_s=1.0,
        calibration="auto",
        clock=clock,
    )
    tracker.start()
    _loop(tracker, model, clock, steps=12, dt=0.25)  # 3 fitted windows
    report = tracker.finish()
    # a measured GPU does not make the estimated CPU's joules a measurement
    assert tracker.calibration_path is None
    assert any("no calibration saved" in w and "(cpu (estimate))" in w for w in report.warnings)


def _launch_only_spec() -> Any:
    from lightning_to_energy.counting.cost_model import NumberFormat
    from lightning_to_energy.hardware.specs import HardwareSpec

    # Peaks so high that every op takes just its launch cost, 1 ms per kernel.
    return HardwareSpec(
        key="launch-only",
        name="test device",
        kind="cpu",
        matrix_flops={NumberFormat.FP32: 1e30},
        vector_flops={NumberFormat.FP32: 1e30},
        memory_bw_bytes_s=1e30,
        launch_s=1e-3,
    )


def _static_only_run(monkeypatch: pytest.MonkeyPatch, spec: Any) -> Any:
    """32 steps at a constant 5 W, alternating 0.25 s and 0.5 s steps by blocks of 8, so that
    windows of equal length hold 4 or 2 steps: the fit puts every joule in static power."""
    from lightning_to_energy.tracking import machine as machine_module

    def detect(device: object) -> Any:
        if spec is None:
            raise ValueError("no roofline for 'Mystery CPU'")
        return spec

    monkeypatch.setattr(machine_module, "detect_hardware", detect)
    clock = Clock()
    model = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 3))
    tracker = _sgd_tracker(model, clock, power_w=5.0)
    for dt in (0.25, 0.5, 0.25, 0.5):
        _loop(tracker, model, clock, steps=8, dt=dt)
    return tracker.finish(save_calibration=False)


def test_static_energy_is_attributed_to_layers_by_roofline_time_share(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    report = _static_only_run(monkeypatch, _launch_only_spec())
    assert report.coefficients["duration_s"] == pytest.approx(5.0, rel=1e-3)
    modules = report.top_modules
    # Every module of this small model is listed: the time shares cover the step.
    assert sum(m.time_share for m in modules) == pytest.approx(1.0)
    # A step lasts (8 x 0.25 + 8 x 0.5) x 2 / 32 = 0.375 s; at 5 W static: 1.875 J a step,
    # shared out by time (here by kernels: every op costs its launch only).
    assert sum(m.static_j for m in modules) == pytest.approx(1.875, rel=1e-3)
    for m in modules:
        assert m.static_j == pytest.approx(1.875 * m.time_share, rel=1e-3)
        assert m.predicted_j == pytest.approx(0.0, abs=1e-3)  # no dynamic energy to share
    assert report.static_note == ""


def test_without_a_roofline_the_module_table_says_why_static_is_not_attributed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lightning_to_energy.reporting.console import render_report

    report = _static_only_run(monkeypatch, None)
    assert all(m.static_j is None and m.time_share is None for m in report.top_modules)
    assert report.static_note.startswith("no roofline for this hardware")
    console = Console(record=True, width=200)
    render_report(report, console)
    text = " ".join(console.export_text().split())
    assert "static energy is not attributed to layers: no roofline for this hardware" in text


def test_forecast_leaves_the_first_windows_warm_up_out_of_the_rate() -> None:
    # A first window 4x slower per step than the rest: 1 step of 1 s, then steps of 0.25 s,
    # at 10 W, for 21 steps: 10 J + 20 x 2.5 J = 60 J in all.
    clock = Clock()
    model = nn.Linear(4, 3)
    tracker = _sgd_tracker(model, clock, power_w=10.0, total_steps=21)
    _loop(tracker, model, clock, steps=1, dt=1.0)  # the warm-up window closes
    # Only the warm-up so far: no forecast (at its rate it would say 10 + 20 x 10 = 210 J).
    assert tracker.live().forecast is None
    _loop(tracker, model, clock, steps=4, dt=0.25)  # the first steady window: 4 steps, 10 J
    one = tracker.live().forecast
    assert one is not None
    # 20 J so far, 16 steps left at 0.25 s x 10 W = 40 J: 60 J. The rate over every window
    # (2 s / 5 steps = 0.4 s) gave 20 + 16 x 4 J = 84 J, 40 % over.
    assert one.total_j == pytest.approx(60.0, rel=0.05)
    # One steady window only: the interval reaches at least to the warm-up's rate (20 + 16 x
    # 10 J = 180 J), so it contains the truth and stays out of the bar (wider than ±25 %).
    assert one.low_j <= 60.0 <= one.high_j
    assert one.high_j >= 180.0 * 0.98 and one.spread > 0.25
    _loop(tracker, model, clock, steps=4, dt=0.25)  # a second steady window agrees
    two = tracker.live().forecast
    assert two is not None
    # 30 J so far + 12 steps x 2.5 J = 60 J; the warm-up's rate is no longer a bound: the
    # interval's top comes down (from 20 + 16 x 10 J = 180 J or more to 30 + 12 x 2.5 J at the
    # model's own margin).
    assert two.total_j == pytest.approx(60.0, rel=0.05)
    assert two.low_j <= 60.0 <= two.high_j
    assert two.high_j < one.high_j and two.high_j < 180.0


def test_a_resumed_runs_first_window_is_a_warm_up_too() -> None:
    # 2 s windows at 10 W. Before the checkpoint: a warm-up window of 1 step of 2 s, then 2
    # steady windows of 4 steps of 0.5 s. After it, a new process: a first window 4x slower
    # per step (1 step of 2 s), then 20 steps of 0.5 s. 30 steps, and
    # 10 W x (2 + 8 x 0.5 + 2 + 20 x 0.5) s = 10 x 18 = 180 J in all.
    clock = Clock()
    model = nn.Linear(4, 3)
    first = _sgd_tracker(model, clock, power_w=10.0, total_steps=30, window_s=2.0)
    _loop(first, model, clock, steps=1, dt=2.0)
    _loop(first, model, clock, steps=8, dt=0.5)
    state = first.state_dict()  # at a window edge: windows 0, 1, 2
    assert state["warmup_windows"] == [0]
    resumed = _sgd_tracker(model, clock, power_w=10.0, total_steps=30, window_s=2.0)
    resumed.load_state_dict(state)
    _loop(resumed, model, clock, steps=1, dt=2.0)  # this process's warm-up: window 3
    _loop(resumed, model, clock, steps=4, dt=0.5)  # the first steady window after the resume
    forecast = resumed.live().forecast
    assert forecast is not None
    # 10 W x (2 + 4 + 2 + 2) s = 100 J so far, 16 steps left at 0.5 s x 10 W = 80 J: 180 J.
    # With the new warm-up in the rate, the latest 4 train windows pool (2 + 2 + 2 + 2) s /
    # (1 + 4 + 4 + 4) steps = 0.615 s: 100 + 16 x 6.15 J = 198 J, 10 % over.
    assert forecast.total_j == pytest.approx(180.0, rel=0.05)
    # One steady window since the warm-up: its 2 s per step is a bound, up to
    # 100 + 16 x 20 J = 420 J, so the interval contains the truth.
    assert forecast.low_j <= 180.0 <= forecast.high_j
    assert forecast.high_j >= 420.0 * 0.98
    # A checkpoint now keeps both warm-ups, and a tracker restored from it leaves both out.
    again = resumed.state_dict()
    assert again["warmup_windows"] == [0, 3]
    third = _sgd_tracker(model, clock, power_w=10.0, total_steps=30, window_s=2.0)
    third.load_state_dict(again)
    restored = third._ledger.totals
    # the warm-ups: 1 + 1 = 2 steps, 2 + 2 = 4 s, 10 W x 4 s = 40 J
    assert (restored.warmup_steps, restored.warmup_duration_s) == (2, pytest.approx(4.0))
    assert restored.warmup_measured_j == pytest.approx(40.0)


def test_a_checkpoint_inside_the_warm_up_window_saves_it_as_one() -> None:
    clock = Clock()
    model = nn.Linear(4, 3)
    tracker = _sgd_tracker(model, clock, power_w=10.0, total_steps=30, window_s=2.0)
    _loop(tracker, model, clock, steps=2, dt=0.5)  # 1 s of the first 2 s window: still open
    state = tracker.state_dict()
    # the open window's snapshot (window 0, 2 steps) is the run's warm-up, saved as such
    assert [w["steps"] for w in state["windows"]] == [2]
    assert state["warmup_windows"] == [0]


def test_a_checkpoint_without_warm_up_windows_loads_as_before() -> None:
    # A checkpoint written before "warmup_windows" existed: the first train window kept is
    # the warm-up, as it was; the next window this process closes is its own warm-up.
    clock = Clock()
    model = nn.Linear(4, 3)
    first = _sgd_tracker(model, clock, power_w=10.0, total_steps=30, window_s=2.0)
    _loop(first, model, clock, steps=1, dt=2.0)
    _loop(first, model, clock, steps=8, dt=0.5)
    state = first.state_dict()
    del state["warmup_windows"]
    resumed = _sgd_tracker(model, clock, power_w=10.0, total_steps=30, window_s=2.0)
    resumed.load_state_dict(state)
    totals = resumed._ledger.totals
    # window 0 (1 step of 2 s, 10 W x 2 s = 20 J), as the run that wrote it had it
    assert totals.warmup_indices == {0}
    assert (totals.warmup_steps, totals.warmup_measured_j) == (1, pytest.approx(20.0))
    # 10 W x (2 + 8 x 0.5) s = 60 J, as before the checkpoint
    assert resumed.live().measured_j == pytest.approx(60.0)
    _loop(resumed, model, clock, steps=1, dt=2.0)
    # and window 3, this process's first
    assert totals.warmup_indices == {0, 3}


def _train_window(index: int, steps: int, duration_s: float, loop: str = "train") -> WindowRecord:
    """A closed window at 10 W, without prediction."""
    joules = 10.0 * duration_s
    return WindowRecord(
        index, loop, 0, steps, 0.0, duration_s, {"fake:0": joules}, joules, None, None, None,
        "none", 0.0, 0.0,
    )  # fmt: skip


def test_step_rate_follows_the_latest_steady_windows_within_their_spread() -> None:
    totals = RunningTotals()
    # A warm-up window (1 step in 1 s), two slow windows (2 steps in 1 s) and a validation one.
    for w in (_train_window(0, 1, 1.0), _train_window(1, 2, 1.0), _train_window(2, 2, 1.0)):
        totals.add(w)
    windows = [_train_window(0, 1, 1.0), _train_window(1, 2, 1.0), _train_window(2, 2, 1.0)]
    # The steady windows pool (1 + 1) s / (2 + 2) steps = 0.5 s, both at 0.5 s: no spread.
    assert step_rate_s(totals, windows) == pytest.approx((0.5, 0.5, 0.5))
    fast = [_train_window(3, 4, 1.0), _train_window(4, 1, 0.1, "validate")]
    for w in fast:
        totals.add(w)
    windows += fast
    # Then faster (4 steps in 1 s): (1 + 1 + 1) s / (2 + 2 + 4) steps = 0.375 s, between the
    # fastest window's 0.25 s and the slowest's 0.5 s; the validation window is no train rate.
    assert step_rate_s(totals, windows) == pytest.approx((0.375, 0.25, 0.5))
    later = [_train_window(i, 4, 1.0) for i in range(5, 8)]
    for w in later:
        totals.add(w)
    windows += later
    # The latest 4 steady windows are all fast: 4 s / 16 steps = 0.25 s, the slow start out.
    assert step_rate_s(totals, windows) == pytest.approx((0.25, 0.25, 0.25))


def test_step_rate_from_one_steady_window_reaches_to_the_warm_ups() -> None:
    totals = RunningTotals()
    windows = [_train_window(0, 1, 1.0), _train_window(1, 4, 1.0)]
    for w in windows:
        totals.add(w)
    # The steady window: 1 s / 4 steps = 0.25 s; unconfirmed, so up to the warm-up's 1 s.
    assert step_rate_s(totals, windows) == pytest.approx((0.25, 0.25, 1.0))
    # Only the warm-up: no rate.
    alone = RunningTotals()
    alone.add(windows[0])
    assert step_rate_s(alone, windows[:1]) is None
