"""TOEnergy inside real (tiny) Lightning runs on the CPU, with fake sensors and a fake clock."""

from __future__ import annotations

import inspect
import math
import random
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, RichProgressBar, TQDMProgressBar
from lightning.pytorch.callbacks.progress.rich_progress import RichProgressBarTheme
from lightning.pytorch.loggers import Logger
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from lightning_to_energy import TOEnergy
from lightning_to_energy.callbacks.display import (
    FORECAST_KEYS,
    TOTAL_KEYS,
    bar_items,
    bar_number,
    bar_scale_j,
    bar_unit,
    window_metric_keys,
)
from lightning_to_energy.reporting.codec import load_report
from lightning_to_energy.reporting.records import WindowRecord
from lightning_to_energy.sensors.fake import FakeSensor
from lightning_to_energy.tracking.forecast import LiveReadout


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


def _logged_fit(tmp_path: Path, *, rows: int, limit_val_batches: int) -> RecordingLogger:
    """Two epochs of Tiny on ``rows`` rows (batches of 16; validation batches of 64), 0.5 s a
    step, 10 W, 2 s windows; the logger that recorded them."""
    clock = FakeClock()
    logger = RecordingLogger()
    energy = _fake_energy(clock, power_w=10.0, window_s=2.0)
    trainer = _trainer(
        tmp_path,
        [AdvanceClock(clock, low=0.5, high=0.5), energy],
        logger=logger,
        limit_val_batches=limit_val_batches,
        max_epochs=2,
    )
    data = Rows(rows)
    trainer.fit(Tiny(), DataLoader(data, batch_size=16), DataLoader(data, batch_size=64))
    return logger


def test_logged_keys_are_exactly_the_documented_ones(tmp_path: Path) -> None:
    logger = _logged_fit(tmp_path, rows=256, limit_val_batches=4)
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


def test_total_predicted_is_left_out_before_the_first_prediction(tmp_path: Path) -> None:
    # The first hour: the first window's metrics said total_predicted_J = 0.0 before any
    # prediction existed, then jumped; the run's totals must read as the model's running sum.
    clock = FakeClock()
    logger = RecordingLogger()
    energy = _fake_energy(clock, power_w=10.0, window_s=2.0)
    trainer = _trainer(
        tmp_path, [AdvanceClock(clock, low=0.5, high=0.5), energy], logger=logger, max_epochs=1
    )
    trainer.fit(Tiny(), DataLoader(Rows(256), batch_size=16))
    train = [m for m, _ in logger.calls if "energy/train_window_measured_J" in m]
    # 256 / 16 = 16 steps of 0.5 s in 2 s windows: 4 windows of 10 W x 2 s = 20 J
    assert [m["energy/train_window_measured_J"] for m in train] == pytest.approx([20.0] * 4)
    first, later = train[0], train[1:]
    assert "energy/train_window_predicted_J" not in first
    assert "energy/total_predicted_J" not in first
    assert first["energy/total_measured_J"] == pytest.approx(20.0)
    # later: the first window at its measured 20 J, plus each later window's prediction
    running = 20.0
    for m in later:
        running += m["energy/train_window_predicted_J"]
        assert m["energy/total_predicted_J"] == pytest.approx(running)


class LoggingTiny(Tiny):
    """Tiny, logging its loss to the bar as most training scripts do."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        self.log("loss", loss, prog_bar=True)
        return loss


class BarIsUntouched(Callback):
    """Records whether anything replaced the bar's get_metrics on the instance."""

    def __init__(self, bar: Callback) -> None:
        self.bar = bar
        self.patched: list[bool] = []

    def on_train_batch_end(self, *args: Any) -> None:
        self.patched.append("get_metrics" in vars(self.bar))


@pytest.mark.parametrize("bar", [TQDMProgressBar, RichProgressBar])
def test_progress_bar_shows_three_rounded_items_through_self_log(tmp_path: Path, bar: type) -> None:
    clock = FakeClock()
    energy = _fake_energy(clock, power_w=25.0)
    progress = bar()
    read = ReadBar(progress)
    untouched = BarIsUntouched(progress)
    trainer = _trainer(
        tmp_path,
        [AdvanceClock(clock, low=0.5, high=0.5), energy, progress, read, untouched],
        enable_progress_bar=True,
    )
    trainer.fit(LoggingTiny(), DataLoader(Rows(512), batch_size=16))
    shown = {k: v for k, v in read.shown.items() if k != "loss"}
    # 32 steps x 0.5 s x 25 W = 400 J in all: a run of 400 J is shown in kJ (0.1 to 100 units).
    assert set(shown) == {"energy_kJ", "pred_err_%", "run_kJ"}
    # The last window closed at the last step: 400 J = 0.4 kJ measured and forecast.
    assert shown["energy_kJ"] == 0.4
    assert shown["run_kJ"] == 0.4
    # Constant power and constant step time: the model predicts it nearly exactly.
    assert 0.0 <= shown["pred_err_%"] < 1.0
    # 3 significant digits, at most 3 decimals: rounding it again changes nothing.
    assert all(bar_number(v) == v for v in shown.values())
    # Given through pl_module.log(logger=False): the bar's method is Lightning's own.
    assert untouched.patched and not any(untouched.patched)
    assert "energy_kJ" not in trainer.logged_metrics


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
    # 8 steps x 0.5 s x 5 W = 20 J: shown in J (20 is within 0.1 to 100).
    assert metrics["energy_est_J"] == 20.0 and "energy_J" not in metrics
    assert energy.report is not None
    assert all("estimate" in w.flags for w in energy.report.windows)


def test_bar_numbers_have_three_significant_digits_and_at_most_three_decimals() -> None:
    # 12.345 -> 3 significant digits: 12.3 (1 decimal); 0.99949 -> 0.999; 0.0123 -> at most
    # 3 decimals: 0.012; 1234.5 -> 1230; 0.0004 -> 0.0
    assert [bar_number(v) for v in (12.345, 0.99949, 0.0123, 1234.5, 0.0004, 0.0)] == [
        12.3,
        0.999,
        0.012,
        1230.0,
        0.0,
        0.0,
    ]


def test_bar_unit_puts_the_run_between_a_tenth_and_a_hundred_units() -> None:
    # 997 J -> 0.997 kJ; 99.9 J -> 99.9 J; 2.5e7 J -> 25 MJ; 0.05 J -> 50 mJ
    assert [bar_unit(j).symbol for j in (997.0, 99.9, 2.5e7, 0.05)] == ["kJ", "J", "MJ", "mJ"]
    unit = bar_unit(997.0, estimate=True)
    assert (unit.energy_key, unit.forecast_key, unit.joules) == ("energy_est_kJ", "run_kJ", 1e3)


def test_forecast_joins_the_bar_only_within_25_percent() -> None:
    from lightning_to_energy.reporting.records import Forecast
    from lightning_to_energy.tracking.tracker import LiveReadout

    unit = bar_unit(1000.0)

    def live(low: float, high: float) -> LiveReadout:
        fc = Forecast(total_j=1000.0, low_j=low, high_j=high, steps_total=10, steps_done=2)
        return LiveReadout(250.0, 240.0, 4.0, 1e9, "counter", 2, forecast=fc)

    # 1000 J within 760..1240 J: ±24 % -> shown; 700..1100 J: -30 % -> not yet.
    assert bar_items(live(760.0, 1240.0), unit) == {
        "energy_kJ": 0.25,
        "pred_err_%": 4.0,
        "run_kJ": 1.0,
    }
    assert "run_kJ" not in bar_items(live(700.0, 1100.0), unit)


def _callables(bar: Callback) -> set[str]:
    """What a patch would leave on a bar instance: the functions in its own ``__dict__``, less
    the ``log`` and ``log_dict`` that Lightning itself hands every callback at fit start."""
    patched = {n for n, v in vars(bar).items() if inspect.isfunction(v) or inspect.ismethod(v)}
    return patched - {"log", "log_dict"}


# The three looks at 120 columns: (bar, Rich theme's metrics_format, the script logs its loss).
# 32 steps x 0.5 s x 37 W = 592 J = 0.592 kJ measured and forecast: 3 significant digits, which
# TQDM (".3g", padded to 5 characters), Rich's default ".3f" and a ".3g" theme all print
# "0.592"; only the separator differs (TQDM "key=value, ", Rich "key: value ").
_LOOKS = [("tqdm", None, True), ("rich", None, True), ("rich", ".3g", False)]


@pytest.mark.parametrize(("bar", "metrics_format", "loss_in_bar"), _LOOKS)
def test_bar_at_120_columns_shows_each_item_whole_and_the_summary_once_after_it(
    tmp_path: Path,
    bar: str,
    metrics_format: str | None,
    loss_in_bar: bool,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    clock = FakeClock()
    energy = _fake_energy(clock, power_w=37.0, print_report=True, report_dir=tmp_path, plot=False)
    theme = RichProgressBarTheme(metrics_format=metrics_format or ".3f")
    progress: TQDMProgressBar | RichProgressBar = (
        TQDMProgressBar()
        if bar == "tqdm"
        else RichProgressBar(theme=theme, console_kwargs={"width": 120})
    )
    patches_before = _callables(progress)
    trainer = _trainer(
        tmp_path,
        [AdvanceClock(clock, low=0.5, high=0.5), energy, progress],
        enable_progress_bar=True,
    )
    trainer.fit(LoggingTiny() if loss_in_bar else Tiny(), DataLoader(Rows(512), batch_size=16))
    out = capsys.readouterr().out
    lines = [line.rstrip() for part in out.split("\n") for line in part.split("\r")]
    first = max(i for i, line in enumerate(lines) if "energy_kJ" in line)
    bar_lines = lines[first : first + 3] if bar == "rich" else [lines[first]]
    bar_lines = [line for line in bar_lines if line and not line.startswith("lightning-")]
    assert all(len(line) <= 120 for line in bar_lines), bar_lines
    sep = "=" if bar == "tqdm" else ": "

    def line_of(pattern: str) -> int:
        found = [i for i, line in enumerate(bar_lines) if re.search(pattern, line)]
        assert len(found) == 1, (pattern, bar_lines)  # the key and its value on one line
        return found[0]

    # 592 J = 0.592 kJ, measured and forecast (see _LOOKS).
    energy_at = line_of(f"energy_kJ{sep}0\\.592\\b")
    run_at = line_of(f"run_kJ{sep}0\\.592\\b")
    # Constant power and step time: the recent error is below 1 %, rounded to 3 decimals;
    # ".3g" drops the trailing zeros the other two keep (0.070 -> 0.07).
    error_at = line_of(f"pred_err_%{sep}0\\.\\d{{1,3}}\\b")
    if bar == "tqdm":
        # TQDM shrinks its bar instead: all three on the bar's one line.
        assert energy_at == error_at == run_at == 0
    else:
        # NB: Lightning's Rich bar gives its metrics column about 37 of the 120 columns (it
        # shares 74 with the bar) and wraps it word by word: the items take two lines there.
        assert len(bar_lines) == 2 and energy_at == 0 and run_at == 1
    # The bar the user gave is the bar that ran: no method or theme of it was replaced.
    assert _callables(progress) == patches_before == set()
    if isinstance(progress, RichProgressBar):
        assert progress.theme is theme and theme == RichProgressBarTheme(
            metrics_format=metrics_format or ".3f"
        )
    heads = [i for i, line in enumerate(lines) if line.startswith("lightning-to-energy: ")]
    assert len(heads) == 1, out
    assert heads[0] > first  # after the bar, never under a redrawn one
    summary = [line for line in lines[heads[0] :] if line.strip()]
    assert len(summary) <= 15
    assert f"full report: lightning-to-energy report {tmp_path / 'energy_report.json'}" in out


def test_the_bar_ends_on_the_runs_energy_validation_included(tmp_path: Path) -> None:
    clock = FakeClock()
    energy = _fake_energy(clock, power_w=40.0)
    progress = TQDMProgressBar()
    trainer = _trainer(
        tmp_path,
        [AdvanceClock(clock, low=0.5, high=0.5), energy, progress],
        enable_progress_bar=True,
        max_epochs=2,
    )
    data = Rows(64)
    # per epoch 4 train steps and 4 validation steps of 0.5 s each, after the last train batch
    trainer.fit(Tiny(), DataLoader(data, batch_size=16), DataLoader(data, batch_size=16))
    report = energy.report
    assert report is not None
    # 2 epochs x 8 steps x 0.5 s x 40 W = 320 J, every joule of it in a closed window
    assert sum(w.measured_j or 0.0 for w in report.windows) == pytest.approx(320.0)
    # the bar's last value is the run's, shown in kJ: 0.320 (it read 0.240 when the bar was
    # given its items at train batch ends only: 320 J less the second epoch's validation,
    # 4 x 0.5 s x 40 W = 80 J)
    assert float(trainer.progress_bar_metrics["energy_kJ"]) == pytest.approx(0.320)


def test_verbose_prints_the_full_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clock = FakeClock()
    energy = _fake_energy(
        clock, power_w=10.0, print_report=True, verbose=True, report_dir=tmp_path, plot=False
    )
    trainer = _trainer(tmp_path, [AdvanceClock(clock, low=0.5, high=0.5), energy])
    trainer.fit(Tiny(), DataLoader(Rows(64), batch_size=16))
    out = capsys.readouterr().out
    assert "Totals per loop" in out and "Prediction accuracy" in out
    assert out.count("full report: lightning-to-energy report") == 1


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
    # The flags are True or False: TOEnergy(verbose="no") printed the full report (bool("no")).
    for flag in ("verbose", "print_report", "plot"):
        with pytest.raises(ValueError, match=f"{flag} must be True or False, found 'no'"):
            TOEnergy(**{flag: "no"})


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


def test_end_of_run_prints_the_files_written_why_the_png_was_not_and_the_calibration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning_to_energy.reporting import plot as report_mod

    def no_matplotlib() -> Any:
        raise report_mod.MissingExtraError("matplotlib is not installed")

    monkeypatch.setattr(report_mod, "import_matplotlib", no_matplotlib)
    clock = FakeClock()
    cal = tmp_path / "cal.json"
    out = tmp_path / "out"
    energy = _fake_energy(clock, power_w=10.0, calibration=cal, report_dir=out, print_report=True)
    trainer = _trainer(tmp_path, [AdvanceClock(clock, low=0.5, high=0.5), energy])
    trainer.fit(Tiny(), DataLoader(Rows(128), batch_size=16))
    # Before: the paths and the skipped PNG's reason were dropped; the user never learnt them.
    last = capsys.readouterr().out.strip().splitlines()[-3:]
    assert last == [
        f"  full report: lightning-to-energy report {out / 'energy_report.json'} (also .csv)",
        "  PNG not written: matplotlib is not installed (pip install 'lightning-to-energy[plot]')",
        f"  calibration saved: {cal}",
    ]
    files = energy.report_files
    assert files is not None and files.json_path == out / "energy_report.json"
    assert files.png_path is None and cal.exists()


def test_print_report_false_prints_nothing_but_keeps_the_files_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = FakeClock()
    energy = _fake_energy(clock, power_w=10.0, report_dir=tmp_path / "out", plot=False)
    trainer = _trainer(tmp_path, [AdvanceClock(clock, low=0.5, high=0.5), energy])
    trainer.fit(Tiny(), DataLoader(Rows(64), batch_size=16))
    assert "lightning-to-energy" not in capsys.readouterr().out
    assert energy.report_files is not None
    assert energy.report_files.csv_path == tmp_path / "out" / "energy_report.csv"


def test_a_directory_as_calibration_is_refused_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected a calibration file, found the directory"):
        TOEnergy(sensors=None, calibration=tmp_path)


def test_a_report_given_as_calibration_survives_the_runs_end(tmp_path: Path) -> None:
    from lightning_to_energy.calibration.store import CalibrationWarning

    clock = FakeClock()
    first = _fake_energy(clock, power_w=10.0, report_dir=tmp_path / "first", plot=False)
    _trainer(tmp_path, [AdvanceClock(clock, low=0.5, high=0.5), first]).fit(
        Tiny(), DataLoader(Rows(64), batch_size=16)
    )
    report = tmp_path / "first" / "energy_report.json"
    before = report.read_bytes()
    clock = FakeClock()
    energy = _fake_energy(
        clock, power_w=10.0, calibration=report, report_dir=tmp_path / "second", plot=False
    )
    trainer = _trainer(tmp_path, [AdvanceClock(clock, low=0.5, high=0.5), energy])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(Tiny(), DataLoader(Rows(128), batch_size=16))
    said = [str(w.message) for w in caught if w.category is CalibrationWarning]
    assert len(said) == 2 and "found an energy report" in said[0]
    assert f"`lightning-to-energy fit {report} --out cal.json`" in said[0]
    assert report.read_bytes() == before  # the end-of-run save did not touch it
    assert energy.report is not None
    # and the report says both: the calibration it could not use, and the save it refused
    said = [w for w in energy.report.warnings if str(report) in w]
    assert len(said) == 2 and "calibration not saved" in said[1]


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


def test_a_logger_failing_at_the_end_still_closes_the_sensors_and_saves_the_calibration(
    tmp_path: Path,
) -> None:
    class DownLogger(RecordingLogger):
        def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
            raise RuntimeError("logger backend down")

    class ClosingSensor(FakeSensor):
        closed = False

        def close(self) -> None:
            ClosingSensor.closed = True
            super().close()

    clock = FakeClock()
    path = tmp_path / "calibration.json"
    energy = TOEnergy(
        sensors=[ClosingSensor("fake:0", power_w=10.0, clock=clock)],
        window_s=10.0,
        calibration=path,
        clock=clock,
        print_report=False,
        plot=False,
        report_dir=tmp_path,
    )

    class TestOnly(Tiny):
        def test_step(self, batch: Any, batch_idx: int) -> None:
            clock.t += 0.5

    trainer = _trainer(tmp_path, [energy], logger=DownLogger())
    with pytest.warns(RuntimeWarning, match="logging its last window failed"):
        # 4 test batches of 0.5 s: one 2 s window (of 10 s at least), closed at the end
        trainer.test(TestOnly(), DataLoader(Rows(64), batch_size=16))
    assert ClosingSensor.closed
    assert energy.report is not None and len(energy.report.windows) == 1
    assert path.exists()  # the tracker's close saved the calibration after the logger failed


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


def _optimizer_tos(tmp_path: Path, loader: DataLoader[Any], **trainer_kwargs: Any) -> float:
    clock = FakeClock()
    energy = _fake_energy(clock, power_w=10.0)
    _trainer(tmp_path, [AdvanceClock(clock, low=0.5, high=0.5), energy], **trainer_kwargs).fit(
        Tiny(), loader
    )
    assert energy.report is not None
    return energy.report.tos_by_phase["optimizer"]


def test_gradient_accumulation_counts_the_last_batchs_step_and_forecasts_batches(
    tmp_path: Path,
) -> None:
    loader = DataLoader(Rows(160), batch_size=16)  # 10 batches an epoch
    # The optimizer's TOs of 3 steps (SGD's first step, without a momentum buffer yet, costs
    # less than the later ones: compare like with like).
    three_steps = _optimizer_tos(tmp_path, loader, max_steps=3)
    clock = FakeClock()
    energy = _fake_energy(clock, power_w=10.0)
    trainer = _trainer(
        tmp_path, [AdvanceClock(clock, low=0.5, high=0.5), energy], accumulate_grad_batches=4
    )
    trainer.fit(Tiny(), loader)
    report = energy.report
    assert report is not None
    # Lightning steps after batches 4 and 8 and after the epoch's last batch, 10: 3 steps
    # (the last batch's step was replayed as a no-step batch before: 2 steps).
    assert trainer.global_step == 3
    assert report.tos_by_phase["optimizer"] == pytest.approx(three_steps)
    # The forecast counts batches: 10 (ceil(10 / 4) = 3 optimizer steps x 4 gave 12 before).
    assert report.forecast is not None
    assert (report.forecast.steps_total, report.forecast.steps_done) == (10, 10)
    # 10 batches x 0.5 s x 10 W = 50 J, and nothing left to run.
    assert report.forecast.total_j == pytest.approx(50.0)


def test_an_accumulation_schedule_is_followed_epoch_by_epoch(tmp_path: Path) -> None:
    from lightning.pytorch.callbacks import GradientAccumulationScheduler

    loader = DataLoader(Rows(160), batch_size=16)  # 10 batches an epoch
    thirteen_steps = _optimizer_tos(tmp_path, loader, max_steps=13, max_epochs=2)
    clock = FakeClock()
    energy = _fake_energy(clock, power_w=10.0)
    schedule = GradientAccumulationScheduler({1: 4})  # after TOEnergy in the list, on purpose
    trainer = _trainer(
        tmp_path, [AdvanceClock(clock, low=0.5, high=0.5), energy, schedule], max_epochs=2
    )
    trainer.fit(Tiny(), loader)
    assert energy.report is not None
    # Epoch 0 steps after each of its 10 batches, epoch 1 after batches 4, 8 and 10: 13 steps
    # (the factor read once at the start of the fit counted 20).
    assert trainer.global_step == 13
    assert energy.report.tos_by_phase["optimizer"] == pytest.approx(thirteen_steps)


def test_an_iterable_dataset_without_length_has_no_forecast(tmp_path: Path) -> None:
    from torch.utils.data import IterableDataset

    class Stream(IterableDataset[tuple[torch.Tensor, torch.Tensor]]):
        def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            rows = Rows(64)
            return (rows[i] for i in range(len(rows)))

    clock = FakeClock()
    energy = _fake_energy(clock, power_w=10.0)
    trainer = _trainer(tmp_path, [AdvanceClock(clock, low=0.5, high=0.5), energy])
    trainer.fit(Tiny(), DataLoader(Stream(), batch_size=16))
    assert energy.report is not None
    assert energy.report.loops["train"].steps == 4
    # Lightning plans max_steps = -1 steps for it: unknown, not "-1 steps in all".
    assert energy.report.forecast is None


def test_a_fit_stopped_early_forecasts_the_steps_it_ran(tmp_path: Path) -> None:
    from lightning.pytorch.callbacks import EarlyStopping

    class Flat(Tiny):
        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.log("val_loss", 1.0)  # never improves: stops after patience + 1 epochs

    clock = FakeClock()
    energy = _fake_energy(clock, power_w=10.0)
    trainer = _trainer(
        tmp_path,
        [AdvanceClock(clock, low=0.5, high=0.5), energy, EarlyStopping("val_loss", patience=1)],
        max_epochs=10,
    )
    data = Rows(64)
    trainer.fit(Flat(), DataLoader(data, batch_size=16), DataLoader(data, batch_size=64))
    report = energy.report
    assert report is not None and report.forecast is not None
    # 2 epochs of 4 batches ran out of the 10 x 4 = 40 planned: the finished run's length is
    # 8 steps and its forecast what was measured, (8 train + 2 validation steps) x 0.5 s x
    # 10 W = 50 J (the projection over 40 steps said about 200 J, "8 done (20 %)").
    assert trainer.current_epoch == 2
    assert (report.forecast.steps_total, report.forecast.steps_done) == (8, 8)
    assert report.forecast.total_j == pytest.approx(50.0)
    assert report.measured_j == pytest.approx(50.0)


@pytest.mark.parametrize(
    ("change", "found"),
    [
        ({}, "features"),  # written by TOEnergy() with the default features
        ({"version": 0}, "version 1 expected, found 0"),  # an older layout
        ({"model": None}, "model"),  # a damaged state
    ],
)
def test_a_checkpoint_state_that_does_not_fit_warns_and_training_goes_on(
    tmp_path: Path, change: dict[str, Any], found: str
) -> None:
    from lightning_to_energy.tracking.tracker import EnergyTracker

    state = EnergyTracker(None, sensors=None, calibration=None).state_dict()
    state.update(change)
    if change.get("model", 1) is None:
        del state["model"]
    clock = FakeClock()
    energy = _fake_energy(clock, power_w=10.0, features=("duration_s", "tos"))
    with pytest.warns(RuntimeWarning, match=f"not restored.*{found}"):
        energy.load_state_dict(state)  # what Lightning does when it resumes a checkpoint
    trainer = _trainer(tmp_path, [AdvanceClock(clock, low=0.5, high=0.5), energy])
    trainer.fit(Tiny(), DataLoader(Rows(64), batch_size=16))
    report = energy.report
    assert report is not None
    # The totals start at the resume: 4 steps x 0.5 s x 10 W = 20 J; the report says why.
    assert report.measured_j == pytest.approx(20.0)
    assert any("not restored" in text for text in report.warnings)


def test_a_reused_callback_shows_no_numbers_of_its_previous_run(tmp_path: Path) -> None:
    clock = FakeClock()
    energy = _fake_energy(clock, power_w=10.0)
    first = _trainer(
        tmp_path,
        [AdvanceClock(clock, low=0.5, high=0.5), energy, TQDMProgressBar()],
        enable_progress_bar=True,
    )
    first.fit(Tiny(), DataLoader(Rows(64), batch_size=16))

    class ReadAtStart(ReadBar):
        def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
            self.shown = self.bar.get_metrics(trainer, pl_module)  # type: ignore[attr-defined]

        def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
            pass  # keep what was shown at the start

    progress = TQDMProgressBar()
    read = ReadAtStart(progress)
    trainer = _trainer(tmp_path, [energy, progress, read], enable_progress_bar=True)
    trainer.fit(Tiny(), DataLoader(Rows(64), batch_size=16))
    # Before the second fit's first step nothing is measured: the first fit's 20 J is gone.
    assert not any(key.startswith("energy") for key in read.shown)


def _state_after_fit(tmp_path: Path, power_w: float) -> dict[str, Any]:
    """A single-process TOEnergy state: 4 steps x 0.5 s at ``power_w``, in 1 s windows."""
    clock = FakeClock()
    energy = _fake_energy(clock, power_w=power_w)

    grabbed: dict[str, Any] = {}

    class Grab(Callback):
        def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
            grabbed.update(energy.state_dict())  # before on_fit_end closes the tracker

    trainer = _trainer(tmp_path, [AdvanceClock(clock, low=0.5, high=0.5), energy, Grab()])
    trainer.fit(Tiny(), DataLoader(Rows(64), batch_size=16))
    return grabbed


def test_under_ddp_each_rank_resumes_its_own_windows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Lightning saves rank 0's callback state only, and every rank loads that file: without
    # the per-rank states a 2-rank resume counted rank 0's windows twice and lost rank 1's.
    states = [_state_after_fit(tmp_path, 10.0), _state_after_fit(tmp_path, 20.0)]
    rank = {"now": 0}
    dist = torch.distributed
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "get_rank", lambda: rank["now"])

    def all_gather_object(out: list[Any], obj: Any) -> None:
        out[:] = [states[0] if rank["now"] == 0 else obj, states[1]]

    monkeypatch.setattr(dist, "all_gather_object", all_gather_object)
    writer = TOEnergy(sensors=None, calibration=None, print_report=False)
    writer.load_state_dict(states[0])
    saved = writer.state_dict()  # what rank 0 writes to the checkpoint file
    restored = []
    for r in (0, 1):
        rank["now"] = r
        reader = TOEnergy(sensors=None, calibration=None, print_report=False)
        reader.load_state_dict(saved)
        restored.append(reader)
    # Also a state without per-rank parts (one process wrote it): rank 1 must not take it.
    rank["now"] = 1
    plain = TOEnergy(sensors=None, calibration=None, print_report=False)
    with pytest.warns(RuntimeWarning, match="one process's energy state"):
        plain.load_state_dict(states[0])
    monkeypatch.undo()
    # Each rank restores its own windows: rank 0 two 1 s windows at 10 W (10 J each), rank 1
    # two at 20 W (20 J each); rank 1 restores nothing of the single-process state.
    for reader, expected_j in zip(restored, (10.0, 20.0), strict=True):
        windows = reader.state_dict()["windows"]
        assert [w["measured_j"] for w in windows] == pytest.approx([expected_j, expected_j])
    assert plain.state_dict() == {}


def test_frequent_checkpoints_do_not_cut_windows_and_each_holds_every_step(
    tmp_path: Path,
) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    clock = FakeClock()
    logger = RecordingLogger()
    energy = _fake_energy(clock, power_w=10.0, window_s=2.0)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3)
    trainer = _trainer(
        tmp_path,
        [AdvanceClock(clock, low=0.5, high=0.5), energy, checkpoint],
        logger=logger,
        enable_checkpointing=True,
        log_every_n_steps=1,
    )
    trainer.fit(Tiny(), DataLoader(Rows(256), batch_size=16))
    assert energy.report is not None
    train = [w for w in energy.report.windows if w.loop == "train"]
    # 16 steps of 0.5 s, a checkpoint every 3 steps: the 2 s windows still close every 4
    # steps (checkpoints used to close them, giving windows of 3 steps)
    assert [w.steps for w in train] == [4, 4, 4, 4]
    logged = [m for m, _ in logger.calls if "energy/train_window_duration_s" in m]
    # every one of them logged once
    assert [m["energy/train_window_duration_s"] for m in logged] == [w.duration_s for w in train]
    # The last checkpoint (after 15 steps) holds [0, 4) [4, 8) [8, 12) and the open window
    # [12, 15) as it stood: 15 steps x 0.5 s x 10 W = 75 J
    (path,) = (tmp_path / "ckpt").glob("*.ckpt")
    saved = torch.load(path, weights_only=False)["callbacks"]
    (state,) = (v for k, v in saved.items() if "TOEnergy" in k)
    assert [(w["first_step"], w["steps"]) for w in state["windows"]] == [
        (0, 4),
        (4, 4),
        (8, 4),
        (12, 3),
    ]
    assert sum(w["measured_j"] for w in state["windows"]) == pytest.approx(75.0)


def test_windows_cut_by_validation_and_the_last_test_window_reach_the_loggers(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    logger = RecordingLogger()
    energy = _fake_energy(clock, power_w=10.0, window_s=2.0)
    trainer = _trainer(
        tmp_path,
        [AdvanceClock(clock, low=0.5, high=0.5), energy],
        logger=logger,
        log_every_n_steps=1,
        val_check_interval=6,
    )
    model = Tiny()
    trainer.fit(model, DataLoader(Rows(256), batch_size=16), DataLoader(Rows(32), batch_size=16))
    assert energy.report is not None
    logged = [
        (loop, m[f"energy/{loop}_window_duration_s"])
        for m, _ in logger.calls
        for loop in ("train", "validate")
        if f"energy/{loop}_window_duration_s" in m
    ]
    # Validation every 6 of 16 steps (0.5 s each, 2 s windows): train [0, 4) then [4, 6),
    # cut short by validation (2 steps, 1 s), validation (2 batches, 1 s), and again; the
    # cut train windows were never logged.
    assert logged == [(w.loop, w.duration_s) for w in energy.report.windows]
    assert logged[:3] == [("train", 2.0), ("train", 1.0), ("validate", 1.0)]

    class Tested(Tiny):
        def test_step(self, batch: Any, batch_idx: int) -> None:
            clock.t += 0.5

    logger.calls.clear()
    energy = _fake_energy(clock, power_w=10.0, window_s=2.0)
    tester = _trainer(tmp_path, [energy], logger=logger)
    tester.test(Tested(), DataLoader(Rows(96), batch_size=16))
    assert energy.report is not None
    logged_test = [m["energy/test_window_duration_s"] for m, _ in logger.calls]
    # 6 test batches of 0.5 s: [0, 4) closes when due (2 s), [4, 6) at the end of the run (1 s)
    assert logged_test == [w.duration_s for w in energy.report.windows] == [2.0, 1.0]


class TwoOptimizers(Tiny):
    """Manual optimization, as in a GAN: two optimizer steps every batch."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        for opt in self.optimizers():
            loss = nn.functional.cross_entropy(self.net(x), y)
            opt.zero_grad()
            self.manual_backward(loss)
            opt.step()

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [
            torch.optim.SGD(self.net[0].parameters()),
            torch.optim.SGD(self.net[2].parameters()),
        ]


class ForecastLength(Callback):
    """The forecast's run length seen at each train batch end (after TOEnergy's hook)."""

    def __init__(self, energy: TOEnergy) -> None:
        self.energy, self.seen = energy, []

    def on_train_batch_end(self, *args: Any) -> None:
        assert self.energy.tracker is not None
        self.seen.append(self.energy.tracker.total_steps)


def test_manual_optimization_forecasts_batches_not_optimizer_steps(tmp_path: Path) -> None:
    clock = FakeClock()
    energy = _fake_energy(clock, power_w=10.0)
    seen = ForecastLength(energy)
    trainer = _trainer(
        tmp_path, [AdvanceClock(clock, low=0.5, high=0.5), energy, seen], max_steps=20
    )
    trainer.fit(TwoOptimizers(), DataLoader(Rows(1024), batch_size=16))
    # max_steps=20 counts both optimizers' steps: 20 / 2 = 10 batches, of the 64 an epoch has
    assert energy.report is not None and energy.report.loops["train"].steps == 10
    # known from the first batch on (Lightning's own estimate says 20)
    assert seen.seen == [10] * 10


class WarmUpClock(Callback):
    """Moves the fake clock by ``first_s`` after the first train batch, ``then_s`` after each
    later one: a first window slowed by its warm-up (compilation, caches, loader start-up)."""

    def __init__(self, clock: FakeClock, first_s: float, then_s: float) -> None:
        self.clock, self.first_s, self.then_s = clock, first_s, then_s

    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        self.clock.t += self.first_s if trainer.global_step <= 1 else self.then_s


def test_the_bar_unit_is_not_fixed_by_the_first_windows_warm_up(tmp_path: Path) -> None:
    clock = FakeClock()
    energy = _fake_energy(clock, power_w=5.0)
    progress = TQDMProgressBar()
    read = ReadBar(progress)
    trainer = _trainer(
        tmp_path,
        [WarmUpClock(clock, first_s=1.0, then_s=0.25), energy, progress, read],
        enable_progress_bar=True,
    )
    trainer.fit(Tiny(), DataLoader(Rows(21 * 16), batch_size=16))
    # 21 steps: a 1 s warm-up (5 J at 5 W), then 20 x 0.25 s x 5 W = 25 J: 30 J in all, a
    # run shown in J. The warm-up's rate gave 5 + 20 x 1 s x 5 W = 105 J = 0.105 kJ at the
    # first window, which fixed the unit at kJ and showed 0.030 (2 significant digits).
    assert energy.report is not None and energy.report.measured_j == pytest.approx(30.0)
    shown = {k: v for k, v in read.shown.items() if k != "v_num"}
    assert set(shown) == {"energy_J", "pred_err_%", "run_J"}
    # The last window closed at the last step: 30 J measured and forecast.
    assert shown["energy_J"] == 30.0 and shown["run_J"] == 30.0


def test_energy_metrics_share_lightnings_step_with_the_epochs_val_loss(tmp_path: Path) -> None:
    logger = _logged_fit(tmp_path, rows=128, limit_val_batches=2)
    val_steps = [step for m, step in logger.calls if "val_loss" in m]
    validate_steps = [step for m, step in logger.calls if "energy/validate_window_TOs" in m]
    # 8 batches an epoch: Lightning logs epoch 0's val_loss at step 7 and epoch 1's at 15
    # (its count of stepped batches before the last batch's increment); the validation
    # windows closed with them are logged at the same steps (they were at 8 and 16).
    assert val_steps == [7, 15]
    assert validate_steps == val_steps
    # 0.5 s steps in 2 s windows: the train windows close at batches 4 and 8 of each epoch,
    # logged with the batch's own step: 3, 7, 11, 15.
    train_steps = [step for m, step in logger.calls if "energy/train_window_TOs" in m]
    assert train_steps == [3, 7, 11, 15]


def test_bar_scale_waits_for_a_forecast_or_measurement_that_will_hold() -> None:
    from lightning_to_energy.reporting.records import Forecast
    from lightning_to_energy.tracking.tracker import LiveReadout

    def live(measured_j: float, total_j: float, low_j: float, high_j: float) -> LiveReadout:
        fc = Forecast(total_j, low_j, high_j, steps_total=21, steps_done=5)
        return LiveReadout(measured_j, None, None, 1e9, "estimate", 2, forecast=fc)

    # Within ±25 % (800..1200 J around 1000 J): the forecast's total.
    assert bar_scale_j(live(100.0, 1000.0, 800.0, 1200.0), 21, 5) == 1000.0
    # A wide forecast (105 J, up to 400 J = 0.4 kJ) and 10 J measured (J): not settled, and
    # 5 of 21 steps is under half the run: too early.
    assert bar_scale_j(live(10.0, 105.0, 60.0, 400.0), 21, 5) is None
    # 150 J measured (0.15 kJ) and the upper bound 900 J (0.9 kJ): both kJ, the unit is settled.
    assert bar_scale_j(live(150.0, 500.0, 300.0, 900.0), 21, 5) == 150.0
    # 13 of 21 steps done, past half: 20 J x 21 / 13 = 32.3 J.
    assert bar_scale_j(live(20.0, 105.0, 60.0, 400.0), 21, 13) == pytest.approx(20.0 * 21 / 13)
    # No forecast and an unknown length: 10 x the 3 J so far = 30 J.
    no_fc = LiveReadout(3.0, None, None, 1e9, "estimate", 1, forecast=None)
    assert bar_scale_j(no_fc, None, 5) == pytest.approx(30.0)
    # Nothing measured yet: no scale.
    assert bar_scale_j(LiveReadout(0.0, None, None, 0.0, "none", 0), 21, 1) is None


def _ranks_logged_totals(lives: list[LiveReadout]) -> dict[str, float]:
    """The metrics rank 0 logs after summing the ranks' ``lives`` the way DDP would."""
    from types import SimpleNamespace

    from lightning_to_energy.callbacks.window_log import WindowLog

    sent: list[torch.Tensor] = []

    class SumOverRanks:
        """A strategy whose ``reduce`` sums the tensors the other ranks sent (all_reduce)."""

        def reduce(self, local: torch.Tensor, reduce_op: str) -> torch.Tensor:
            assert reduce_op == "sum"
            sent.append(local)
            return torch.stack(sent).sum(dim=0)

    logger = RecordingLogger()
    module = SimpleNamespace(device=torch.device("cpu"))
    logs = [WindowLog() for _ in lives]
    # The highest rank first, so that rank 0's reduce sees every rank's tensor.
    for rank in reversed(range(len(lives))):
        tracker = SimpleNamespace(
            live=lambda rank=rank: lives[rank],
            model=SimpleNamespace(accuracy=lambda: SimpleNamespace(precision_pct=None)),
        )
        trainer = SimpleNamespace(
            log_every_n_steps=1, strategy=SumOverRanks(), global_rank=rank, world_size=len(lives),
            loggers=[logger], global_step=3,
        )  # fmt: skip
        logs[rank].train_batches = 1
        logs[rank].reduce_totals(cast(Any, trainer), cast(Any, module), cast(Any, tracker))
        record = WindowRecord(
            0, "train", 0, 4, 0.0, 2.0, {"fake:0": 20.0}, 20.0, None, None, None, "counter",
            0.0, 0.0,
        )  # fmt: skip
        logs[rank].log_window(cast(Any, trainer), cast(Any, tracker), record)
    ((metrics, _),) = logger.calls
    return metrics


def _live(measured_j: float, predicted_j: float | None) -> LiveReadout:
    return LiveReadout(measured_j, predicted_j, None, 0.0, "counter", 1)


def test_ddp_total_predicted_counts_a_rank_without_a_prediction_at_its_measured_joules() -> None:
    # Rank 0 has predicted (30 J measured, 27 J predicted); rank 1 not yet (20 J measured). As
    # on one process, its unpredicted windows count at their measured joules, not at 0 J.
    metrics = _ranks_logged_totals([_live(30.0, 27.0), _live(20.0, None)])
    # 30 + 20 = 50 J measured
    assert metrics["energy/total_measured_J"] == pytest.approx(50.0)
    # 27 + 20 = 47 J predicted (27 J before: rank 1's 20 J read as a prediction of nothing)
    assert metrics["energy/total_predicted_J"] == pytest.approx(47.0)


def test_ddp_total_predicted_is_left_out_before_any_ranks_first_prediction() -> None:
    metrics = _ranks_logged_totals([_live(30.0, None), _live(20.0, None)])
    # 30 + 20 = 50 J measured, and no rank has predicted: no predicted total (it read 0 J)
    assert metrics["energy/total_measured_J"] == pytest.approx(50.0)
    assert "energy/total_predicted_J" not in metrics
