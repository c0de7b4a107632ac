"""Long-run invariants of the framework-free tracker.

About a thousand steps of a tiny model against a simulated world (a clock and an energy counter
that only move inside steps), with validation interleaved, checkpoints every few steps (most of
them in the middle of a window), few windows kept one by one (older ones fold into the per-loop
archive) and resumes into fresh trackers. Every step lasts 0.25 s and draws 8 W in training and
4 W in validation, so a train step is 2 J and a validation step 1 J: every total below is a small
integer multiple of a power of two, exact in binary, and most assertions are exact.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from _models import TinyMLP
from lightning_to_energy import EnergyTracker, FakeSensor
from lightning_to_energy.counting import StepProfile
from lightning_to_energy.model import regression as regression_module
from lightning_to_energy.model.regression import OnlineEnergyModel
from lightning_to_energy.reporting.codec import load_report
from lightning_to_energy.reporting.files import save_report
from lightning_to_energy.reporting.records import EnergyReport, WindowRecord
from lightning_to_energy.tracking import ledger as ledger_module

STEP_S = 0.25
POWER_W = {"train": 8.0, "validate": 4.0}
STEP_J = {loop: power_w * STEP_S for loop, power_w in POWER_W.items()}  # 2 J and 1 J


class World:
    """Simulated time and cumulative energy; both advance only inside steps."""

    def __init__(self) -> None:
        self.t = 0.0
        self.energy_j = 0.0

    def clock(self) -> float:
        return self.t

    def advance(self, loop: str) -> None:
        self.t += STEP_S
        self.energy_j += POWER_W[loop] * STEP_S


class Run:
    """One training process: a tracker over a tiny MLP, SGD and the world's energy counter."""

    def __init__(
        self,
        world: World,
        *,
        max_windows: int,
        compute_always: bool = False,
        fail_at: Sequence[int] = (),
        **kwargs: Any,
    ) -> None:
        self.world = world
        self.compute_always = compute_always
        self.model = TinyMLP()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01)
        # min_window_s 0.5 s: a window of one step (a checkpoint right after a window edge)
        # is measured but short, so not fitted; windows of two steps and more are fitted.
        sensor = FakeSensor(
            "gpu:0",
            energy_fn=lambda: world.energy_j,
            clock=world.clock,
            min_window_s=0.5,
            fail_at=fail_at,
        )
        options: dict[str, Any] = {
            "window_s": 1.0,
            "calibration": None,
            "recheck_every": 1_000_000,
            **kwargs,
        }
        self.tracker = EnergyTracker(
            self.model,
            self.optimizer,
            sensors=[sensor],
            clock=world.clock,
            max_windows=max_windows,
            **options,
        )
        self.x = torch.randn(4, 16)
        self.y = torch.randint(0, 4, (4,))
        self.seen: dict[int, WindowRecord] = {}  # every window this process closed, by index
        self.ran: dict[str, int] = {}  # steps this process ran, by loop

    def event(self, loop: str) -> None:
        """One step of ``loop``: 0.25 s at that loop's power."""
        tracker, model = self.tracker, self.model
        # NB: only the first steps of each loop run the model: they are the ones counted
        # (a signature's first count is provisional, so two), and every later one replays
        # the cached count whatever the block does (recheck_every is out of reach). The
        # model's arithmetic would otherwise cost more than the tracker over 1000 steps.
        compute = self.compute_always or self.ran.get(loop, 0) < 3
        self.ran[loop] = self.ran.get(loop, 0) + 1
        if loop == "train":
            with tracker.step((self.x, self.y)):
                if compute:
                    loss = nn.functional.cross_entropy(model(self.x), self.y)
                    loss.backward()
                    self.optimizer.step()
                    self.optimizer.zero_grad()
                self.world.advance(loop)
        else:
            with torch.no_grad(), tracker.step(self.x, loop=loop, will_step=False):
                if compute:
                    model(self.x)
                self.world.advance(loop)
        # A step closes at most two windows (a loop boundary, then a due close) and a fold
        # keeps at least 90 % of max_windows, so no window leaves the list unseen.
        for w in tracker.windows:
            self.seen.setdefault(w.index, w)


def schedule(n_train: int, val_every: int = 37, val_steps: int = 3) -> list[str]:
    """``n_train`` train steps with ``val_steps`` validation steps after every ``val_every``.

    37 is odd against windows of 4 steps, so validation begins in the middle of windows.
    """
    events: list[str] = []
    for i in range(n_train):
        events.append("train")
        if (i + 1) % val_every == 0:
            events.extend(["validate"] * val_steps)
    return events


def leaves(value: Any) -> int:
    """Scalars in a JSON-like structure: a size that float formatting does not blur."""
    if isinstance(value, dict):
        return sum(leaves(v) for v in value.values())
    if isinstance(value, list):
        return sum(leaves(v) for v in value)
    return 1


def check_windows_chain(windows: Sequence[WindowRecord], steps: dict[str, int]) -> None:
    """Indices consecutive, each loop's steps and the run's time covered without a gap."""
    assert [w.index for w in windows] == list(range(windows[0].index, windows[-1].index + 1))
    for a, b in itertools.pairwise(windows):
        # Time only moves inside steps, so each window starts where the one before ended.
        assert b.start_s == a.start_s + a.duration_s, (a, b)
        # Every step lasts 0.25 s.
        assert b.duration_s == b.steps * STEP_S
    for loop, n in steps.items():
        ws = [w for w in windows if w.loop == loop]
        for a, b in itertools.pairwise(ws):
            assert b.first_step == a.first_step + a.steps, (a, b)
        # The loop's latest window ends at the loop's step count.
        assert ws[-1].first_step + ws[-1].steps == n


def check_totals(report: EnergyReport, events: Sequence[str]) -> None:
    """Per-loop steps, seconds and joules of a report against the events that ran."""
    for loop in ("train", "validate"):
        n = events.count(loop)
        totals = report.loops[loop]
        assert totals.steps == n
        # n steps x 0.25 s, and n x 2 J (train) or n x 1 J (validation): exact in binary
        assert totals.duration_s == n * STEP_S
        assert totals.measured_j == n * STEP_J[loop]
        assert dict(totals.energy_j) == {"gpu:0": n * STEP_J[loop]}
    assert report.measured_j == events.count("train") * 2.0 + events.count("validate") * 1.0


def test_checkpoints_and_folding_change_nothing_of_a_long_run() -> None:
    # 1100 train steps, 29 validation passes of 3 steps: 1187 steps.
    events = schedule(1100)
    assert (events.count("train"), events.count("validate")) == (1100, 87)
    # A: few windows kept and a checkpoint every 5 steps, most of them mid-window.
    # B: every window kept, no checkpoint. Same world, same steps.
    a = Run(World(), max_windows=4, total_steps=1100)
    b = Run(World(), max_windows=100_000, total_steps=1100)
    snapshots = 0
    for i, loop in enumerate(events):
        a.event(loop)
        b.event(loop)
        if (i + 1) % 5 == 0:
            state = a.tracker.state_dict()
            snapshots += state["n_windows"] - a.tracker.live().windows
            assert len(state["windows"]) <= 4 + 1  # the kept windows and the open one
        # The live readout counts every joule so far, the open window's included.
        assert a.tracker.live().measured_j == a.world.energy_j
    # 1187 // 5 = 237 checkpoints; windows of 4 steps end on few of them (207 fall inside a
    # window as written), so most checkpoints saved an open window.
    assert snapshots > 150
    report_a = a.tracker.finish(save_calibration=False)
    report_b = b.tracker.finish(save_calibration=False)
    all_windows = list(report_b.windows)
    assert len(all_windows) == b.tracker.live().windows

    # Checkpoints lapped A's meter and forked its model, folds archived its old windows:
    # A's kept windows are B's last ones, record for record (joules, predictions, flags).
    assert len(report_a.windows) <= 4
    assert list(report_a.windows) == all_windows[-len(report_a.windows) :]
    assert [w.index for w in all_windows] == list(range(len(all_windows)))
    assert a.tracker.live().windows == len(all_windows)
    assert {k: t.windows for k, t in report_a.loops.items()} == {
        k: t.windows for k, t in report_b.loops.items()
    }
    check_windows_chain(all_windows, {"train": 1100, "validate": 87})
    # train: 1100 x 2 J = 2200 J; validation: 87 x 1 J = 87 J; 2287 J in all
    check_totals(report_a, events)
    check_totals(report_b, events)
    assert report_a.measured_j == 2287.0 == a.world.energy_j

    # Predicted joules: the windows that had a prediction, and only those. Every window but
    # the first (nothing fitted yet, no calibration) has one; the first is left out, not
    # counted at its measured value.
    predicted = [w for w in all_windows if w.predicted_j is not None]
    assert all_windows[0].predicted_j is None and len(predicted) == len(all_windows) - 1
    expected_j = sum(w.predicted_j for w in predicted if w.predicted_j is not None)
    assert report_a.predicted_j == pytest.approx(expected_j, rel=1e-12)
    for loop in ("train", "validate"):
        loop_j = sum(w.predicted_j or 0.0 for w in all_windows if w.loop == loop)
        assert report_a.loops[loop].predicted_j == pytest.approx(loop_j, rel=1e-12)
        loop_tos = sum(w.tos for w in all_windows if w.loop == loop)
        assert report_a.loops[loop].tos == pytest.approx(loop_tos, rel=1e-12)
    # The live readout: predictions where there are some, the first window at its measured
    # value (4 steps x 2 J = 8 J): over the same windows as measured_j.
    assert all_windows[0].measured_j == 8.0
    assert a.tracker.live().predicted_j == pytest.approx(expected_j + 8.0, rel=1e-12)
    # At the end: no train step left, so the forecast is what was measured.
    assert report_a.forecast is not None and report_a.forecast.total_j == 2287.0
    # Every step's TOs are in the breakdowns, folded or not.
    loops_tos = report_a.loops["train"].tos + report_a.loops["validate"].tos
    assert sum(report_a.tos_by_phase.values()) == pytest.approx(loops_tos, rel=1e-9)


def test_resumes_from_mid_window_checkpoints_lose_and_repeat_no_step(tmp_path: Path) -> None:
    # 800 train steps, 21 validation passes of 3: 863 steps. A checkpoint every 5 steps; the
    # process is killed 13 steps after the first mid-window checkpoint from step 300, and
    # again from step 610, and resumed from that checkpoint into a fresh tracker, which runs
    # those 13 steps again.
    events = schedule(800)
    assert len(events) == 863
    world = World()
    run = Run(world, max_windows=4, total_steps=800)
    kept: dict[int, WindowRecord] = {}  # the windows of the run as resumed, by index
    position = 0
    lost_j = 0.0  # joules of the steps that a killed process ran after its checkpoint
    resumed_at: list[int] = []
    for target in (300, 610, None):
        state: dict[str, Any] | None = None
        kill_at = len(events)
        i = position
        while i < kill_at:
            run.event(events[i])
            i += 1
            if i % 5 == 0:
                saved = run.tracker.state_dict()
                mid_window = saved["n_windows"] > run.tracker.live().windows
                if target is not None and state is None and i >= target and mid_window:
                    state = json.loads(json.dumps(saved, allow_nan=False))  # as a file would
                    energy_at_checkpoint = world.energy_j
                    resume_at, kill_at = i, i + 13
        if target is None:
            break
        assert state is not None
        resumed_at.append(resume_at)
        # The open window is saved as a boundary window of its steps so far, with the next
        # index; the checkpoint holds every step run so far.
        last = state["windows"][-1]
        assert "boundary" in last["flags"] and last["index"] == state["n_windows"] - 1
        assert last["steps"] in (1, 2, 3)
        assert sum(state["steps"].values()) == resume_at
        lost_before_j = lost_j
        lost_j += world.energy_j - energy_at_checkpoint
        kept.update({k: w for k, w in run.seen.items() if k < state["n_windows"] - 1})
        run = Run(world, max_windows=4, total_steps=800)
        run.tracker.start()
        run.tracker.load_state_dict(state)
        run.seen = {w.index: w for w in run.tracker.windows}
        position = resume_at
        # Nothing of the checkpoint is lost in the fresh tracker: the joules measured up to
        # the checkpoint are the world's, less what the killed processes ran after theirs.
        assert run.tracker.live().measured_j == energy_at_checkpoint - lost_before_j
    assert len(resumed_at) == 2 and resumed_at[0] < 320 and resumed_at[1] < 630
    report = run.tracker.finish(save_calibration=False)
    kept.update(run.seen)
    kept.update({w.index: w for w in report.windows})  # and the window finish() closed
    windows = [kept[k] for k in sorted(kept)]

    # 800 train steps x 2 J + 63 validation steps x 1 J = 1663 J, though 2 x 13 steps ran twice
    check_totals(report, events)
    assert report.measured_j == 1663.0 == world.energy_j - lost_j
    assert [w.index for w in windows] == list(range(run.tracker.live().windows))
    assert list(report.windows) == windows[-len(report.windows) :]
    check_windows_chain(windows, {"train": 800, "validate": 63})
    assert sum(w.steps for w in windows) == 863
    assert report.loops["train"].windows + report.loops["validate"].windows == len(windows)
    expected_j = sum(w.predicted_j for w in windows if w.predicted_j is not None)
    assert report.predicted_j == pytest.approx(expected_j, rel=1e-12)
    assert report.forecast is not None and report.forecast.total_j == 1663.0
    # The TOs of every step, restored or not, in the live total and in the breakdowns.
    loops_tos = report.loops["train"].tos + report.loops["validate"].tos
    assert loops_tos == pytest.approx(sum(w.tos for w in windows), rel=1e-12)
    assert run.tracker.live().tos == pytest.approx(loops_tos, rel=1e-12)
    assert sum(report.tos_by_phase.values()) == pytest.approx(loops_tos, rel=1e-9)

    # The report's JSON reads back with the same totals and windows.
    saved_report = save_report(report, tmp_path, plot=False)
    loaded = load_report(saved_report.json_path)
    assert loaded.loops == report.loops
    assert (loaded.measured_j, loaded.predicted_j) == (report.measured_j, report.predicted_j)
    assert loaded.windows == report.windows
    assert loaded.forecast == report.forecast
    assert loaded.run_id == report.run_id


@pytest.fixture
def small_bounds(monkeypatch: pytest.MonkeyPatch) -> Callable[[EnergyTracker], None]:
    """Model bounds small enough for a short test to reach them: 8 windows of history, 16
    prequential records (the defaults, 512 and 1024, take a run of thousands of windows)."""
    monkeypatch.setattr(regression_module, "RECORDS_KEPT", 16)

    def shrink(tracker: EnergyTracker) -> None:
        tracker.model = OnlineEnergyModel(tracker.features, history=8)

    return shrink


def test_checkpoint_size_and_close_work_stop_growing_once_the_bounds_are_reached(
    small_bounds: Callable[[EnergyTracker], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Work of each window close, counted: rows of the regression's refit, and windows summed
    # when old windows fold into the archive.
    refit_rows: list[int] = []
    folded: list[int] = []
    design = OnlineEnergyModel._scaled_design
    sum_windows = ledger_module.sum_windows

    def counting_design(self: OnlineEnergyModel) -> Any:
        refit_rows.append(self.n_windows)
        return design(self)

    def counting_sum(loop: str, ws: Sequence[WindowRecord]) -> Any:
        folded.append(len(ws))
        return sum_windows(loop, ws)

    monkeypatch.setattr(OnlineEnergyModel, "_scaled_design", counting_design)
    monkeypatch.setattr(ledger_module, "sum_windows", counting_sum)

    events = schedule(1200)
    run = Run(World(), max_windows=4)
    small_bounds(run.tracker)
    early: list[int] = []
    late: list[int] = []
    work_marks: list[tuple[int, int]] = []
    for i, loop in enumerate(events):
        run.event(loop)
        if (i + 1) % 5 == 0:
            state = run.tracker.state_dict()
            # A checkpoint is plain JSON: a Lightning checkpoint or a file can hold it.
            json.dumps(state, allow_nan=False)
            if 300 <= i < 600:
                early.append(leaves(state))
            elif i >= len(events) - 300:
                late.append(leaves(state))
        if i in (300, 600, len(events) - 300):
            work_marks.append((len(refit_rows), len(folded)))
    # Windows of 4 steps: about 75 closes in each span, past the 8 + 16 + 4 bounds by far.
    # The kept windows come and go (3 to 5 with the open one), so compare the largest.
    assert len(early) == len(late) == 60
    assert max(late) <= max(early)
    state = run.tracker.state_dict()
    assert len(state["model"]["windows"]["energy_j"]) <= 8
    assert len(state["model"]["records"]["predicted_j"]) <= 16
    # Work per close: as many rows refitted and windows folded late as early in the run.
    (r0, f0), (r1, f1), (r2, f2) = work_marks
    early_rows, late_rows = refit_rows[r0:r1], refit_rows[r2:]
    early_folds, late_folds = folded[f0:f1], folded[f2:]
    assert len(early_rows) > 50 and len(late_rows) > 50 and early_folds and late_folds
    assert max(late_rows) <= max(early_rows) == 8
    assert max(late_folds) <= max(early_folds)


def test_recounts_of_the_same_work_do_not_grow_the_checkpoint_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # recheck_every=3: one step in 3 is re-counted; TinyMLP's steps always do the same work.
    calls: list[int] = []  # profiles summed by each StepProfile.sum
    original = StepProfile.sum.__func__  # type: ignore[attr-defined]

    def counting(cls: type[StepProfile], profiles: Any) -> StepProfile:
        items = list(profiles)
        calls.append(len(items))
        return original(cls, items)

    monkeypatch.setattr(StepProfile, "sum", classmethod(counting))
    run = Run(World(), max_windows=4, recheck_every=3, compute_always=True)
    work: list[int] = []
    for i in range(120):
        run.event("train")
        if i + 1 in (30, 120):
            calls.clear()
            run.tracker.state_dict()
            work.append(sum(calls))  # step profiles summed by one checkpoint
    # Counted: steps 1 and 2 (the first count is provisional), then every third step from
    # step 5 to step 119: 2 + (119 - 5) / 3 + 1 = 41 counts, ...
    assert run.tracker.cache.counts == 41
    assert not run.tracker.cache.changed_signatures  # ... all of the same work
    # One signature, one profile: a checkpoint after 120 steps sums as many profiles as one
    # after 30. The defect: one per count, 2 + (29 - 5) / 3 + 1 = 11 after 30 steps, 41 after
    # 120.
    assert work[1] == work[0]


def test_a_checkpoint_in_the_middle_of_a_step_loses_no_completed_step() -> None:
    world = World()
    run = Run(world, max_windows=100)
    for _ in range(10):
        run.event("train")  # windows [0, 4) and [4, 8) closed, steps 8 and 9 in the open one
    run.tracker.begin_step((run.x, run.y))  # step 10 begins, and a checkpoint is taken
    state = run.tracker.state_dict()
    assert state["steps"]["train"] == 10  # steps 0..9 completed: the resumed run starts at 10
    resumed = Run(world, max_windows=100)
    resumed.tracker.start()
    resumed.tracker.load_state_dict(state)
    for _ in range(10):
        resumed.event("train")  # steps 10..19
    report = resumed.tracker.finish(save_calibration=False)
    # 20 steps in all, each 0.25 s at 8 W = 2 J: 20 x 2 J = 40 J (the defect: 18 steps, 36 J;
    # steps 8 and 9 are counted in tracker.steps() but in no window)
    assert resumed.tracker.steps("train") == 20
    assert report.loops["train"].steps == 20
    assert report.measured_j == 40.0
    check_windows_chain(report.windows, {"train": 20})


def test_a_fault_that_recurs_after_each_resume_is_reported_once() -> None:
    world = World()
    # Read 3 (the second window's closing edge) fails in every process: the same fault,
    # with the same text, once per process.
    run = Run(world, max_windows=4, fail_at=[3])
    with pytest.warns(RuntimeWarning, match="scripted failure at read 3"):
        for _ in range(12):
            run.event("train")
    state = run.tracker.state_dict()
    for _ in range(3):  # three resumes, each running 12 more steps
        run = Run(world, max_windows=4, fail_at=[3])
        run.tracker.start()
        run.tracker.load_state_dict(state)
        with pytest.warns(RuntimeWarning, match="scripted failure at read 3"):
            for _ in range(12):
                run.event("train")
        state = run.tracker.state_dict()
    report = run.tracker.finish(save_calibration=False)
    text = "sensor gpu:0 failed: gpu:0: scripted failure at read 3 (fail_at)."
    # 1 original run + 3 resumes = 4 processes with the same fault: one line, not 4
    assert report.warnings.count(text) == 1
    assert state["warnings"].count(text) == 1
