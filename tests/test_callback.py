"""TOEnergy inside real (tiny) Lightning runs on the CPU, with fake sensors and a fake clock."""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, RichProgressBar, TQDMProgressBar
from lightning.pytorch.loggers import Logger
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from lightning_to_energy import TOEnergy
from lightning_to_energy.callback import FORECAST_KEYS, TOTAL_KEYS, window_metric_keys
from lightning_to_energy.report import load_report
from lightning_to_energy.sensors.fake import FakeSensor


class FakeClock:
    """Seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Tiny(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 2))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self.net(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


class Rows(Dataset):
    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 8, generator=g)
        self.y = torch.randint(0, 2, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


class VaryingBatches(Sampler[list[int]]):
    """Batches of cycling sizes, so that TOs per step vary independently of step time."""

    def __init__(self, n: int, sizes: tuple[int, ...]) -> None:
        self.n, self.sizes = n, sizes

    def __iter__(self) -> Iterator[list[int]]:
        start, k = 0, 0
        while start + self.sizes[k % len(self.sizes)] <= self.n:
            size = self.sizes[k % len(self.sizes)]
            yield list(range(start, start + size))
            start, k = start + size, k + 1

    def __len__(self) -> int:
        return sum(1 for _ in iter(self))


class AdvanceClock(Callback):
    """Moves the fake clock by a random step time at the end of every step."""

    def __init__(
        self, clock: FakeClock, seed: int = 0, low: float = 0.2, high: float = 1.0
    ) -> None:
        self.clock, self.rng, self.low, self.high = clock, random.Random(seed), low, high

    def on_train_batch_end(self, *args: Any) -> None:
        self.clock.t += self.rng.uniform(self.low, self.high)

    def on_validation_batch_end(self, *args: Any) -> None:
        self.clock.t += self.rng.uniform(self.low, self.high)


class ReadBar(Callback):
    """Reads what the progress bar would display at the end of training."""

    def __init__(self, bar: Callback) -> None:
        self.bar = bar
        self.shown: dict[str, Any] = {}

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.shown = self.bar.get_metrics(trainer, pl_module)  # type: ignore[attr-defined]


class RecordingLogger(Logger):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[dict[str, float], int | None]] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.calls.append((dict(metrics), step))


def _fake_energy(clock: FakeClock, *, power_w: float, **kwargs: Any) -> TOEnergy:
    """TOEnergy over one constant-power fake sensor, 1 s windows, no calibration, no printing."""
    options: dict[str, Any] = {
        "window_s": 1.0,
        "calibration": None,
        "clock": clock,
        "print_report": False,
    }
    options.update(kwargs)
    return TOEnergy(sensors=[FakeSensor("fake:0", power_w=power_w, clock=clock)], **options)


def _trainer(tmp_path: Path, callbacks: list[Callback], **kwargs: Any) -> Trainer:
    defaults: dict[str, Any] = {
        "accelerator": "cpu",
        "max_epochs": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "default_root_dir": tmp_path,
    }
    defaults.update(kwargs)
    return Trainer(callbacks=callbacks, **defaults)


def test_regression_recovers_a_linear_law_of_duration_and_tos(tmp_path: Path) -> None:
    # The fake sensor's energy follows E = 40 W x t + 5e-9 J/TO x TOs exactly, where TOs are
    # those the callback itself counted. Batch sizes cycle and step times are random, so
    # duration and TOs vary independently across windows and both coefficients are identifiable.
    power_w, j_per_to = 40.0, 5e-9
    clock = FakeClock()
    energy = TOEnergy(
        sensors=[FakeSensor("fake:0", energy_fn=lambda: power_w * clock.t + j_per_to * tos())],
        window_s=3.0,
        features=("duration_s", "tos"),
        calibration=None,
        clock=clock,
        print_report=False,
        report_dir=tmp_path,
    )

    def tos() -> float:
        return energy.tracker.tos_total if energy.tracker is not None else 0.0

    data = Rows(8000)
    loader = DataLoader(data, batch_sampler=VaryingBatches(len(data), (8, 96, 32, 200, 16)))
    trainer = _trainer(tmp_path, [AdvanceClock(clock), energy], max_epochs=2)
    trainer.fit(Tiny(), loader)

    report = energy.report
    assert report is not None
    windows = [w for w in report.windows if w.measured_j is not None]
    assert len(windows) >= 20
    coefficients = report.coefficients
    assert coefficients["duration_s"] == pytest.approx(power_w, rel=0.02)
    assert coefficients["tos"] == pytest.approx(j_per_to, rel=0.02)
    # Prequential: windows after the 10th were predicted before being seen, within 2 %.
    late = windows[10:]
    errors = [abs(w.predicted_j / w.measured_j - 1.0) for w in late if w.predicted_j]
    assert len(errors) == len(late)
    assert max(errors) < 0.02
    # The measured total is the law applied to the whole run: 40 W x clock + 5e-9 x all TOs
    # (every window closed, none lost).
    assert report.measured_j == pytest.approx(
        power_w * clock.t + j_per_to * sum(w.tos for w in report.windows), rel=1e-9
    )


def test_logged_keys_are_exactly_the_documented_ones(tmp_path: Path) -> None:
    clock = FakeClock()
    logger = RecordingLogger()
    energy = _fake_energy(clock, power_w=10.0, window_s=2.0)
    trainer = _trainer(
        tmp_path,
        [AdvanceClock(clock, low=0.5, high=0.5), energy],
        logger=logger,
        limit_val_batches=4,
        max_epochs=2,
    )
    data = Rows(256)
    trainer.fit(Tiny(), DataLoader(data, batch_size=16), DataLoader(data, batch_size=64))
    keys = {k for metrics, _ in logger.calls for k in metrics if k.startswith("energy/")}
    documented = (
        set(TOTAL_KEYS)
        | set(FORECAST_KEYS)
        | set(window_metric_keys("train"))
        | set(window_metric_keys("validate"))
    )
    assert keys == documented
    # 0.5 s a step and 2 s windows: every closed train window of 4 steps measured 10 W x 2 s.
    train_measured = [
        m["energy/train_window_measured_J"]
        for m, _ in logger.calls
        if "energy/train_window_measured_J" in m and m["energy/train_window_duration_s"] == 2.0
    ]
    assert train_measured and all(v == pytest.approx(20.0) for v in train_measured)


@pytest.mark.parametrize("bar", [TQDMProgressBar, RichProgressBar])
def test_progress_bar_shows_measured_predicted_and_error(tmp_path: Path, bar: type) -> None:
    clock = FakeClock()
    energy = _fake_energy(clock, power_w=25.0)
    progress = bar()
    read = ReadBar(progress)
    trainer = _trainer(
        tmp_path,
        [AdvanceClock(clock, low=0.5, high=0.5), energy, progress, read],
        enable_progress_bar=True,
    )
    trainer.fit(Tiny(), DataLoader(Rows(512), batch_size=16))
    shown = read.shown
    # 32 steps x 0.5 s x 25 W = 400 J measured, all in closed 1 s windows.
    assert shown["energy_J"] == pytest.approx(400.0)
    assert "energy_pred_J" in shown and "energy_err_%" in shown
    # At the last step the forecast of the whole run is what was measured: 400 J.
    assert shown["energy_run_J"] == pytest.approx(400.0)
    # Constant power and constant step time: the model predicts it nearly exactly.
    assert float(shown["energy_err_%"]) < 1.0


def test_estimate_is_labelled_in_the_progress_bar(tmp_path: Path) -> None:
    from lightning_to_energy.sensors.base import SensorKind

    clock = FakeClock()
    energy = TOEnergy(
        sensors=[FakeSensor("cpu:estimate", power_w=5.0, clock=clock, kind=SensorKind.ESTIMATE)],
        window_s=1.0,
        calibration=None,
        clock=clock,
        print_report=False,
    )
    progress = TQDMProgressBar()
    read = ReadBar(progress)
    trainer = _trainer(
        tmp_path,
        [AdvanceClock(clock, low=0.5, high=0.5), energy, progress, read],
        enable_progress_bar=True,
    )
    trainer.fit(Tiny(), DataLoader(Rows(128), batch_size=16))
    metrics = read.shown
    assert "energy_est_J" in metrics and "energy_J" not in metrics
    assert energy.report is not None
    assert all("estimate" in w.flags for w in energy.report.windows)


def test_sensor_failure_mid_run_warns_once_marks_windows_and_training_goes_on(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    failing = FakeSensor("gpu:0", power_w=100.0, clock=clock, fail_at=range(6, 10))
    steady = FakeSensor("cpu:package-0", power_w=20.0, clock=clock)
    energy = TOEnergy(
        sensors=[failing, steady], window_s=1.0, calibration=None, clock=clock, print_report=False
    )
    trainer = _trainer(tmp_path, [AdvanceClock(clock, low=0.5, high=0.5), energy])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(Tiny(), DataLoader(Rows(320), batch_size=16))
    assert trainer.global_step == 20  # training finished every step
    fault_warnings = [w for w in caught if "gpu:0" in str(w.message)]
    assert len(fault_warnings) == 1
    report = energy.report
    assert report is not None
    faulty = [w for w in report.windows if "sensor-fault" in w.flags]
    assert faulty, "the windows around the failing reads are marked"
    for w in faulty:
        assert "gpu:0" not in w.energy_j
        assert w.energy_j["cpu:package-0"] == pytest.approx(20.0 * w.duration_s)
    assert any("gpu:0" in text for text in report.warnings)


def test_invalid_arguments_raise_at_construction() -> None:
    with pytest.raises(ValueError, match="window_s"):
        TOEnergy(window_s=-1.0)
    with pytest.raises(ValueError, match="sensors"):
        TOEnergy(sensors="nvml-please")
    with pytest.raises(ValueError, match="features"):
        TOEnergy(features=("tos",))
    with pytest.raises(ValueError, match="recheck_every"):
        TOEnergy(recheck_every=0)


def test_report_files_and_validation_windows(tmp_path: Path) -> None:
    clock = FakeClock()
    energy = _fake_energy(clock, power_w=10.0, report_dir=tmp_path / "out")
    trainer = _trainer(
        tmp_path, [AdvanceClock(clock, low=0.25, high=0.25), energy], limit_val_batches=2
    )
    data = Rows(128)
    trainer.fit(Tiny(), DataLoader(data, batch_size=16), DataLoader(data, batch_size=32))
    saved = load_report(tmp_path / "out" / "energy_report.json")
    assert energy.report is not None
    assert saved.measured_j == pytest.approx(energy.report.measured_j)
    # 8 train steps + 2 validation steps, 0.25 s each, at 10 W: 25 J in all.
    assert saved.measured_j == pytest.approx(25.0)
    assert set(saved.loops) == {"train", "validate"}
    assert saved.loops["validate"].steps == 2
    # Lightning runs forward and backward inside optimizer.step(closure): each keeps its phase.
    phases = saved.tos_by_phase
    assert phases["forward"] > 0 and phases["backward"] > 0 and phases["optimizer"] > 0
    assert (tmp_path / "out" / "energy_report.csv").exists()
    assert (tmp_path / "out" / "energy_report.png").exists()  # matplotlib is in the dev extra
    assert saved.top_modules and saved.top_modules[0].name.startswith("net")
    assert math.isclose(sum(m.share for m in saved.top_modules), 1.0, rel_tol=0.05)


def test_plot_false_saves_the_report_without_its_png(tmp_path: Path) -> None:
    clock = FakeClock()
    energy = _fake_energy(clock, power_w=10.0, report_dir=tmp_path / "out", plot=False)
    trainer = _trainer(tmp_path, [AdvanceClock(clock, low=0.25, high=0.25), energy])
    trainer.fit(Tiny(), DataLoader(Rows(64), batch_size=16))
    assert (tmp_path / "out" / "energy_report.json").exists()
    assert (tmp_path / "out" / "energy_report.csv").exists()
    assert not (tmp_path / "out" / "energy_report.png").exists()


def test_corrupt_calibration_file_warns_is_left_untouched_and_training_goes_on(
    tmp_path: Path,
) -> None:
    path = tmp_path / "calibration.json"
    path.write_text("{not json")
    clock = FakeClock()
    energy = _fake_energy(clock, power_w=10.0, calibration=path, report_dir=tmp_path)
    trainer = _trainer(tmp_path, [AdvanceClock(clock, low=0.5, high=0.5), energy])
    with pytest.warns(UserWarning, match="calibration"):
        trainer.fit(Tiny(), DataLoader(Rows(128), batch_size=16))
    assert trainer.global_step == 8
    assert path.read_text() == "{not json"


def test_calibration_saved_by_one_run_predicts_the_next_runs_first_window(tmp_path: Path) -> None:
    path = tmp_path / "calibration.json"

    def run() -> Any:
        clock = FakeClock()
        energy = _fake_energy(clock, power_w=30.0, calibration=path, report_dir=tmp_path)
        trainer = _trainer(tmp_path, [AdvanceClock(clock, low=0.5, high=0.5), energy])
        trainer.fit(Tiny(), DataLoader(Rows(256), batch_size=16))
        assert energy.report is not None
        return energy.report

    first = run()
    assert first.windows[0].predicted_j is None  # nothing known before the first run
    assert path.exists()
    second = run()
    # 30 W x 1 s windows: the second run predicts its first window from the stored windows.
    w = second.windows[0]
    assert w.predicted_j == pytest.approx(30.0, rel=0.01)


def test_an_internal_error_is_one_warning_and_training_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning_to_energy.counting import StepSignature

    calls = {"n": 0}
    original = StepSignature.capture

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("boom")
        return original(*args, **kwargs)

    monkeypatch.setattr(StepSignature, "capture", staticmethod(flaky))
    clock = FakeClock()
    energy = _fake_energy(clock, power_w=10.0, report_dir=tmp_path)
    trainer = _trainer(tmp_path, [AdvanceClock(clock, low=0.5, high=0.5), energy])
    with pytest.warns(RuntimeWarning, match="internal error.*boom"):
        trainer.fit(Tiny(), DataLoader(Rows(160), batch_size=16))
    assert trainer.global_step == 10
    report = energy.report
    assert report is not None
    # Steps 1-4 made two closed windows (2 steps x 0.5 s x 10 W = 10 J each) before step 5
    # broke the counter; they are kept.
    assert [w.measured_j for w in report.windows[:2]] == pytest.approx([10.0, 10.0])


def test_an_exception_in_the_users_step_leaves_no_dispatch_mode_behind(tmp_path: Path) -> None:
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    class Failing(Tiny):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            if batch_idx == 0:  # the first step is counted: the mode is active here
                raise ValueError("user bug")
            return super().training_step(batch, batch_idx)

    clock = FakeClock()
    energy = _fake_energy(clock, power_w=10.0, window_s=None)
    trainer = _trainer(tmp_path, [energy])
    with pytest.raises(ValueError, match="user bug"):
        trainer.fit(Failing(), DataLoader(Rows(64), batch_size=16))
    assert _get_current_dispatch_mode() is None


def test_a_test_only_run_reports_its_test_windows(tmp_path: Path) -> None:
    class TestOnly(Tiny):
        def test_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("test_loss", nn.functional.cross_entropy(self.net(x), y))

    clock = FakeClock()
    energy = _fake_energy(clock, power_w=20.0, report_dir=tmp_path)
    trainer = _trainer(tmp_path, [AdvanceClock(clock, low=0.5, high=0.5), energy])

    class AdvanceOnTest(Callback):
        def on_test_batch_end(self, *args: Any) -> None:
            clock.t += 0.5

    trainer.callbacks.insert(0, AdvanceOnTest())
    trainer.test(TestOnly(), DataLoader(Rows(64), batch_size=16))
    report = energy.report
    assert report is not None
    # 4 test batches x 0.5 s at 20 W = 40 J, no train loop, no forecast.
    assert set(report.loops) == {"test"}
    assert report.loops["test"].steps == 4
    assert report.measured_j == pytest.approx(40.0)
    assert report.forecast is None
