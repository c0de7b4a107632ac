"""The live callback's prior comes from the physical step model (tracking/live_prior.py): a
calibration's physical model for this hardware, else the built-in calibration of its GPU, else
datasheet priors for a GPU of the table, else what the calibration gave before. Fake hardware:
the roofline spec is patched in."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader

from lightning_to_energy import EnergyTracker, FakeSensor
from lightning_to_energy.calibration.builtin import builtin_calibration
from lightning_to_energy.calibration.data import Calibration
from lightning_to_energy.calibration.store import CalibrationStore
from lightning_to_energy.callbacks.display import PBAR_ERROR, bar_items, bar_unit
from lightning_to_energy.counting import OpCounter, StepProfile
from lightning_to_energy.hardware.identity import HardwareInfo
from lightning_to_energy.hardware.specs import find_hardware
from lightning_to_energy.model import (
    PhysicalModel,
    PhysicalParams,
    calibrated_strength,
    energy_at,
    prior_for,
)
from lightning_to_energy.model.physical_live import DATASHEET_STRENGTH
from lightning_to_energy.model.regression import OnlineEnergyModel
from lightning_to_energy.notices import EnergyWarning
from lightning_to_energy.reporting.console import prior_text, render_report
from lightning_to_energy.tracking import live_prior as live_prior_module
from lightning_to_energy.tracking import machine as machine_module

H100 = find_hardware("h100-sxm")
DATASHEET = f"datasheet priors for {H100.name} (h100-sxm)"


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _on_h100(monkeypatch: pytest.MonkeyPatch, builtin: bool = False) -> None:
    """This process's device is an H100 of the hardware table (its identity stays this CPU's);
    without ``builtin``, as if no calibration shipped for it (the datasheet priors' case)."""
    monkeypatch.setattr(machine_module, "detect_hardware", lambda device: H100)
    if not builtin:
        monkeypatch.setattr(live_prior_module, "builtin_calibration", lambda key: None)


def _tracker(model: nn.Module, clock: Clock, **kwargs: Any) -> EnergyTracker:
    """A started tracker over a 5 W fake sensor, SGD, 1 s windows (4 steps of 0.25 s)."""
    tracker = EnergyTracker(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        sensors=[FakeSensor(power_w=5.0, clock=clock)],
        window_s=1.0,
        clock=clock,
        **kwargs,
    )
    tracker.start()
    return tracker


def _loop(tracker: EnergyTracker, model: nn.Module, clock: Clock, steps: int) -> None:
    opt = tracker.optimizer
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    for _ in range(steps):
        with tracker.step((x, y)):
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
            clock.t += 0.25


def _count_one_step(model: nn.Module, optimizer: Any) -> StepProfile:
    """One step of :func:`_loop`, counted as the tracker counts it."""
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    with OpCounter(module=model) as counter:
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
    assert counter.profile is not None
    return counter.profile


def _static_only(base_w: float = 100.0, j_per_byte: float = 0.0) -> PhysicalParams:
    """The H100 priors with every dynamic term off but ``j_per_byte``: a window then costs
    ``base_w x seconds + j_per_byte x bytes``, by hand."""
    params = prior_for(H100)
    off = {n: 0.0 for n in params.flat() if n.startswith("j_per_flop[")}
    return params.with_values({**off, "busy_w": 0.0, "base_w": base_w, "j_per_byte": j_per_byte})


def _physical_file(
    path: Path,
    params: PhysicalParams,
    target: str = "h100-sxm",
    regression: OnlineEnergyModel | None = None,
    source: str = "test steps",
) -> None:
    """A calibration of this machine carrying a physical model (and a regression's windows)."""
    info = HardwareInfo.detect()
    physical = PhysicalModel(
        params=params,
        target=target,
        time_log_halfwidth=0.1,
        energy_log_halfwidth=0.2,
        level=0.9,
        basis="test",
        formats=(),
        flops_range=(1.0, 1e15),
        kernels_range=(1.0, 1e6),
        source=source,
    )
    if regression is not None:
        base = Calibration.from_model(regression, info, run_id="earlier")
        cal = Calibration(**{**base.__dict__, "physical": physical.to_dict()})
    else:
        cal = Calibration.of_physical(
            physical.to_dict(), info, run_id="calibrate", date="2026-12-07T00:00:00Z"
        )
    CalibrationStore.from_path(path).save(cal)


def test_a_gpu_without_a_calibration_starts_from_its_datasheet_priors(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _on_h100(monkeypatch)
    clock, model = Clock(), nn.Linear(4, 3)
    tracker = _tracker(model, clock, calibration=tmp_path / "new.json")
    _loop(tracker, model, clock, steps=4)  # one window of 4 steps, 1 s
    first = tracker.windows[0]
    # the first window is predicted, from the prior, before its joules are read
    assert first.prediction_source == "prior"
    assert first.predicted_j is not None
    # exact for a window of one signature: 4 steps of 0.25 s each, as the model has them
    step = _count_one_step(model, tracker.optimizer)
    assert first.predicted_j == pytest.approx(4 * energy_at(step, prior_for(H100), 0.25).energy_j)
    # the H100's static power alone is 126 W x 1 s = 126 J of it
    assert first.predicted_j > 126.0
    assert tracker.model.prior is not None
    assert tracker.model.prior.strength == DATASHEET_STRENGTH
    # and it counts in the accuracy: 5 W x 1 s = 5 J measured
    assert first.measured_j == pytest.approx(5.0)
    assert tracker.model.accuracy().n == 1
    # the bar shows the error from the first window: 100 x |predicted - 5| / 5
    live = tracker.live()
    assert live.recent_error_pct == pytest.approx(100 * (first.predicted_j - 5.0) / 5.0)
    assert PBAR_ERROR in bar_items(live, bar_unit(10.0))
    report = tracker.finish(save_calibration=False)
    assert report.prior is not None
    assert report.prior.physical == DATASHEET
    # and why no calibration gave it
    line = (
        f"physical step model, {DATASHEET}; {tmp_path / 'new.json'} does not exist yet (this "
        "run's windows start it)"
    )
    assert prior_text(report.prior) == line
    console = Console(file=io.StringIO(), width=400, color_system=None)
    render_report(report, console)
    assert f"prior: {line}" in console.file.getvalue()  # type: ignore[attr-defined]


def test_an_h100_without_a_calibration_starts_from_the_builtin_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _on_h100(monkeypatch, builtin=True)
    shipped = builtin_calibration("h100-sxm")
    assert shipped is not None and shipped.physical is not None
    physical = PhysicalModel.from_dict(shipped.physical)
    clock, model = Clock(), nn.Linear(4, 3)
    tracker = _tracker(model, clock, calibration=tmp_path / "new.json")
    _loop(tracker, model, clock, steps=4)  # one window of 4 steps, 1 s
    first = tracker.windows[0]
    assert first.prediction_source == "prior"
    # the shipped model's parameters, not the datasheet's: 4 steps of 0.25 s as it has them
    step = _count_one_step(model, tracker.optimizer)
    expected = 4 * energy_at(step, physical.params, 0.25).energy_j
    assert first.predicted_j == pytest.approx(expected)
    assert first.predicted_j != pytest.approx(4 * energy_at(step, prior_for(H100), 0.25).energy_j)
    # as strong as its held-out interval says, like a calibration's own physical model
    assert tracker.model.prior is not None
    assert tracker.model.prior.strength == calibrated_strength(physical.energy_log_halfwidth)
    prior = tracker.finish(save_calibration=False).prior
    assert prior is not None
    assert prior.physical.startswith("the built-in calibration of h100-sxm, fitted on ")
    assert prior.source == ""  # the run's calibration file gave nothing


def test_a_calibrations_physical_model_for_this_hardware_gives_the_prior(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _on_h100(monkeypatch)
    path = tmp_path / "h100.json"
    _physical_file(path, _static_only(base_w=100.0))
    clock, model = Clock(), nn.Linear(4, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a match: no warning
        tracker = _tracker(model, clock, calibration=path)
        _loop(tracker, model, clock, steps=4)
    first = tracker.windows[0]
    # static only: 100 W x 1 s = 100 J (no other term)
    assert (first.prediction_source, first.predicted_j) == ("prior", pytest.approx(100.0))
    # stronger than datasheet priors: (0.044 x 1.6449 / 0.2)^2 = 0.131 windows
    assert tracker.model.prior.strength == pytest.approx(calibrated_strength(0.2))  # type: ignore[union-attr]
    report = tracker.finish(save_calibration=False)
    label = f"{path}'s physical model fitted on test steps (h100-sxm)"
    assert report.prior is not None
    assert (report.prior.source, report.prior.physical, report.prior.seed_windows) == (
        str(path),
        label,
        0,
    )
    assert prior_text(report.prior) == f"physical step model, {label} (made on this hardware)"


def test_the_prior_line_names_a_fits_data_by_its_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # `fit` on the shared steps records the data's whole description as its source; the
    # report's prior line names the file (it went on for four lines, with a ". (h100-sxm)")
    _on_h100(monkeypatch)
    path = tmp_path / "h100.json"
    described = "h100-training-steps.json: Measured energy and time per training step, 2026-11-25."
    _physical_file(path, _static_only(), source=described)
    clock, model = Clock(), nn.Linear(4, 3)
    tracker = _tracker(model, clock, calibration=path)
    _loop(tracker, model, clock, steps=4)
    prior = tracker.finish(save_calibration=False).prior
    assert prior is not None
    assert (
        prior.physical == f"{path}'s physical model fitted on h100-training-steps.json (h100-sxm)"
    )


def test_its_energy_per_byte_is_the_prior_of_bytes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _on_h100(monkeypatch)
    path = tmp_path / "h100.json"
    _physical_file(path, _static_only(base_w=100.0, j_per_byte=1e-6))
    clock, model = Clock(), nn.Linear(4, 3)
    tracker = _tracker(model, clock, calibration=path)
    _loop(tracker, model, clock, steps=4)
    first = tracker.windows[0]
    # 100 W x 1 s + 1e-6 J/B x the window's bytes (4 steps' reads and writes)
    assert first.predicted_j == pytest.approx(100.0 + 1e-6 * first.features["bytes"])
    assert tracker.model.prior.coefficients["bytes"] == pytest.approx(1e-6)  # type: ignore[union-attr]


def test_another_targets_physical_model_warns_and_falls_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _on_h100(monkeypatch)
    path = tmp_path / "a100.json"
    _physical_file(path, _static_only(base_w=100.0), target="a100-sxm-80gb")
    clock, model = Clock(), nn.Linear(4, 3)
    with pytest.warns(EnergyWarning, match="is for 'a100-sxm-80gb' and this run's hardware"):
        tracker = _tracker(model, clock, calibration=path)
    _loop(tracker, model, clock, steps=4)
    # not its 100 W: no usable calibration, so the H100's datasheet priors (126 W and more)
    assert tracker.windows[0].prediction_source == "prior"
    assert tracker.windows[0].predicted_j > 126.0  # type: ignore[operator]
    prior = tracker.finish(save_calibration=False).prior
    assert prior is not None and prior.physical == DATASHEET
    # the file gave nothing: its empty regression, and another target's physical model
    assert prior.source == ""
    assert prior.note == f"{path} holds no regression windows or coefficients for this run"
    why = f"{path}'s physical model is for 'a100-sxm-80gb' and this run's hardware is 'h100-sxm'"
    assert prior.physical_note == why
    assert prior_text(prior).endswith(f"; physical model not used: {why}")


def test_on_a_cpu_another_targets_model_leaves_no_prior(tmp_path: Path) -> None:
    path = tmp_path / "h100.json"
    _physical_file(path, _static_only(base_w=100.0))  # for the H100, on this CPU
    clock, model = Clock(), nn.Linear(4, 3)
    with pytest.warns(EnergyWarning, match="is for 'h100-sxm'"):
        tracker = _tracker(model, clock, calibration=path)
    _loop(tracker, model, clock, steps=8)
    # no prior at all: not 0 J from the file's empty regression
    assert [w.prediction_source for w in tracker.windows] == ["none", "fit"]
    assert tracker.model.prior is None


def test_the_cpu_demo_path_is_unchanged(tmp_path: Path) -> None:
    clock, model = Clock(), nn.Linear(4, 3)
    tracker = _tracker(model, clock, calibration=tmp_path / "cal.json")
    _loop(tracker, model, clock, steps=8)
    # as before: no prediction until a window is fitted, then the fit
    assert [w.prediction_source for w in tracker.windows] == ["none", "fit"]
    assert tracker.model.prior is None
    prior = tracker.finish().prior  # saved: cal.json holds this run's windows now
    assert prior is not None and prior.physical == ""
    assert prior.physical_note.endswith(
        "is a CPU without a physical calibration (datasheet priors cover the GPUs of the "
        "hardware table)"
    )
    # the next run starts from the saved regression, as before
    second = _tracker(model, clock, calibration=tmp_path / "cal.json")
    _loop(second, model, clock, steps=4)
    assert second.windows[0].prediction_source == "fit"  # the seeded windows' fit
    assert second.finish(save_calibration=False).prior.physical_note == ""  # type: ignore[union-attr]


def test_a_regression_calibration_with_a_physical_model_keeps_its_seeds(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _on_h100(monkeypatch)
    # an earlier run's regression: 3 windows of this model (5 W, 4 steps of 0.25 s each)
    clock, model = Clock(), nn.Linear(4, 3)
    earlier = _tracker(model, clock, calibration=None)
    _loop(earlier, model, clock, steps=12)
    path = tmp_path / "h100.json"
    _physical_file(path, _static_only(base_w=10.0), regression=earlier.model)
    tracker = _tracker(model, clock, calibration=path)
    assert tracker.model.n_windows == 3  # the stored windows seeded the model
    _loop(tracker, model, clock, steps=4)
    # the prior's coefficients are the physical model's (10 W, nothing else)...
    coefficients = tracker.model.prior.coefficients  # type: ignore[union-attr]
    assert coefficients["duration_s"] == 10.0
    assert sum(coefficients.values()) == 10.0
    # ... and its first prediction is the fit of the 3 seeds (5 J each, at half weight) pulled
    # toward the prior (10 W x 1 s = 10 J): the data's 5 J weigh most
    assert tracker.windows[0].prediction_source == "fit"
    assert 5.0 < tracker.windows[0].predicted_j < 7.5  # type: ignore[operator]
    prior = tracker.finish(save_calibration=False).prior
    assert prior is not None
    assert (prior.seed_windows, prior.physical) == (
        3,
        f"{path}'s physical model fitted on test steps (h100-sxm)",
    )


def test_a_regression_calibration_without_one_is_used_as_before(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _on_h100(monkeypatch)
    clock, model = Clock(), nn.Linear(4, 3)
    path = tmp_path / "cal.json"
    earlier = _tracker(model, clock, calibration=path)
    _loop(earlier, model, clock, steps=12)
    earlier.finish()
    tracker = _tracker(model, clock, calibration=path)
    # no datasheet prior over a usable calibration: its coefficients, as before
    stored = CalibrationStore.from_path(path).load()
    assert stored is not None
    assert tracker.model.prior.coefficients == stored.to_prior(tracker.features).coefficients  # type: ignore[union-attr]
    _loop(tracker, model, clock, steps=4)
    assert tracker.model.prior.coefficients == stored.to_prior(tracker.features).coefficients  # type: ignore[union-attr]
    prior = tracker.finish(save_calibration=False).prior
    assert prior is not None and prior.physical == ""
    # and the line says why no physical model gave it (docs/regression.md, case 4)
    assert prior.physical_note == (
        f"{path}'s regression coefficients (measured windows) are kept over the datasheet "
        "priors of h100-sxm"
    )


def test_a_saved_regression_calibration_keeps_the_builtin_prior_under_its_seeds(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # An H100's first run starts from the built-in calibration and saves a regression (no
    # physical model) to cal.json. Its second run must not lose the built-in: one run's
    # coefficients are not identifiable (every window ran the same step), so the second run
    # keeps the saved windows as seeds and takes the prior's coefficients from the built-in.
    _on_h100(monkeypatch, builtin=True)
    shipped = builtin_calibration("h100-sxm")
    assert shipped is not None and shipped.physical is not None
    params = PhysicalModel.from_dict(shipped.physical).params
    clock, model = Clock(), nn.Linear(4, 3)
    path = tmp_path / "cal.json"
    first = _tracker(model, clock, calibration=path)
    _loop(first, model, clock, steps=12)  # 3 windows of 4 steps, 1 s each
    first.finish()
    saved = CalibrationStore.from_path(path).load()
    assert saved is not None and saved.physical is None and len(saved.windows) == 3
    second = _tracker(model, clock, calibration=path)
    assert second.model.n_windows == 3  # the saved windows seed the model, as before
    _loop(second, model, clock, steps=4)
    prior = second.model.prior
    assert prior is not None
    # the built-in's static power is the prior of duration_s (W), not the saved fit's
    assert prior.coefficients["duration_s"] == params.base_w
    assert prior.coefficients != saved.to_prior(second.features).coefficients
    # as strong as the built-in's held-out interval says, as on the first run
    assert prior.strength == calibrated_strength(
        PhysicalModel.from_dict(shipped.physical).energy_log_halfwidth
    )
    # the seeds' fit predicts the first window: 5 W x 1 s = 5 J each, pulled toward the
    # built-in's prediction (126 W x 1 s and more, 126.08 J) by a small part of the gap: the
    # prior weighs (0.044 x 1.645 / 0.234)^2 = 0.096 windows against 3 seeds x 0.5 weight;
    # 10 % of the gap bounds it (it is 6 %: 12.3 J)
    step = _count_one_step(model, second.optimizer)
    builtin_j = 4 * energy_at(step, params, 0.25).energy_j
    assert builtin_j > 126.0
    assert second.windows[0].prediction_source == "fit"
    assert 5.0 < second.windows[0].predicted_j < 5.0 + 0.1 * (builtin_j - 5.0)  # type: ignore[operator]
    record = second.finish(save_calibration=False).prior
    assert record is not None
    assert (record.source, record.seed_windows) == (str(path), 3)
    # the data's file name, not its whole description (the line goes on after it: no ".;")
    assert (
        record.physical
        == "the built-in calibration of h100-sxm, fitted on h100-training-steps.json"
    )
    # the line names the file that seeded the model, then where the coefficients' prior came
    # from: the built-in was not made from this file, nor "on this hardware"
    assert prior_text(record) == (
        f"{path} (made on this hardware): 3 of its 3 stored windows, from 1 of its 1 run, "
        f"seeded the model; prior coefficients: physical step model, {record.physical}"
    )


def test_a_mapping_failure_warns_once_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from lightning_to_energy.counting.cost_model import NumberFormat, Unit

    _on_h100(monkeypatch)
    h100 = prior_for(H100)
    bf16 = (Unit.MATRIX, NumberFormat.BF16)  # no rate for the fp32 work this step runs
    params = PhysicalParams(
        **{
            **{n: getattr(h100, n) for n in ("base_w", "bandwidth_b_s", "bytes_half")},
            **{n: getattr(h100, n) for n in ("launch_s", "host_step_s", "dispatch_s")},
            "peak_flop_s": {bf16: 1e15},
            "flop_half": {bf16: 1e9},
            "j_per_flop": {bf16: 1e-12},
            "j_per_byte": 1e-10,
        }
    )
    path = tmp_path / "h100.json"
    _physical_file(path, params)
    clock, model = Clock(), nn.Linear(4, 3)
    tracker = _tracker(model, clock, calibration=path)
    with pytest.warns(EnergyWarning, match="could not be mapped"):
        _loop(tracker, model, clock, steps=8)
    # training went on, as without it: no prediction, then the fit
    assert [w.prediction_source for w in tracker.windows] == ["none", "fit"]
    prior = tracker.finish(save_calibration=False).prior
    assert prior is not None and prior.physical == ""
    assert "could not be mapped" in prior.physical_note


def test_a_checkpoint_keeps_the_physical_prior(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _on_h100(monkeypatch)
    clock, model = Clock(), nn.Linear(4, 3)
    tracker = _tracker(model, clock, calibration=tmp_path / "new.json")
    _loop(tracker, model, clock, steps=2)  # half a window: the prior is set at the checkpoint
    state = json.loads(json.dumps(tracker.state_dict()))
    assert tracker.model.prior is not None
    assert state["model"]["prior"] == tracker.model.prior.to_dict()
    assert state["prior"]["physical"] == DATASHEET
    # resumed elsewhere (no calibration, a CPU): the model keeps the prior it started from
    monkeypatch.undo()
    resumed = EnergyTracker(model, sensors=None, calibration=None, clock=clock)
    resumed.load_state_dict(state)
    resumed.start()
    assert resumed.model.prior == tracker.model.prior
    assert resumed.build_report().prior.physical == DATASHEET  # type: ignore[union-attr]


class _Tiny(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(4, 3)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _HalfSecondSteps(Callback):
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def on_train_batch_end(self, *args: Any) -> None:
        self.clock.t += 0.5


class _ReadBar(Callback):
    def __init__(self, bar: TQDMProgressBar) -> None:
        self.bar, self.shown = bar, dict[str, Any]()

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.shown = self.bar.get_metrics(trainer, pl_module)


@pytest.mark.parametrize("gpu", [True, False])
def test_the_progress_bar_shows_the_error_from_the_first_window(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, gpu: bool
) -> None:
    from lightning_to_energy import TOEnergy

    if gpu:
        _on_h100(monkeypatch)
    clock = Clock()
    energy = TOEnergy(
        sensors=[FakeSensor("fake:0", power_w=5.0, clock=clock)],
        window_s=1.0,
        calibration=tmp_path / "new.json",
        clock=clock,
        print_report=False,
    )
    bar = TQDMProgressBar()
    read = _ReadBar(bar)
    trainer = Trainer(
        callbacks=[_HalfSecondSteps(clock), energy, bar, read],
        accelerator="cpu",
        max_steps=2,  # 2 steps of 0.5 s: one 1 s window, the first
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    data = [(torch.randn(4), torch.tensor(i % 3)) for i in range(32)]
    trainer.fit(_Tiny(), DataLoader(data, batch_size=8))  # type: ignore[arg-type]
    # On the H100 the first window was predicted from the datasheet priors, so the bar has
    # its error; on this CPU (no physical prior) the first window has no prediction, as before.
    assert (PBAR_ERROR in read.shown) is gpu
