"""EnergyTracker in a plain PyTorch loop (no Lightning), with a replayed energy trace."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from lightning_to_energy import EnergyTracker, FakeSensor, ReplaySensor
from lightning_to_energy.sensors.fake import TRACE_COLUMNS


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
    from lightning_to_energy import tracker as tracker_module
    from lightning_to_energy.cost_model import NumberFormat
    from lightning_to_energy.roofline import HardwareSpec

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
    monkeypatch.setattr(tracker_module, "detect_hardware", lambda device: launch_only)
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


def test_a_device_missing_from_the_roofline_table_costs_only_the_column(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lightning_to_energy import tracker as tracker_module

    def unknown(device: object) -> None:
        raise ValueError("expected a GPU listed in the hardware table; found 'Mystery GPU'")

    monkeypatch.setattr(tracker_module, "detect_hardware", unknown)
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
