"""Fault injection: readings that cannot be true, lost intervals and gaps between windows.

Run: ``python benchmarks/fault_injection.py [--only NAME ...] [--json PATH]``.

Each scenario drives an :class:`~lightning_to_energy.EnergyTracker` (the core the Lightning
callback wraps) over the shipped fakes of ``tests/fakes``: a fake ``pynvml``, a fake powercap
tree and an injected clock, so no hardware is needed and every figure is known by hand. It then
compares the joules the run reports with the joules truly spent in the windows that may be kept,
and checks that the windows whose energy cannot be known are flagged and never fitted. The table
has one row per scenario: the issue's failure number, the expected and measured joules, the
windows left out (with their flags), the warnings raised, and the verdict (PASS or FAIL).

Adding a scenario: write a function that returns an :class:`Outcome` and decorate it with
``@scenario("short-name", failure="N")``; it then runs with the others, in the order defined.
The helpers :func:`drive` (steps, loading gaps and fault hooks over a tracker) and
:func:`kept_power_j` (constant power x the kept windows' seconds) cover most scenarios.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import platform
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# The fakes live with the tests: this script reuses them rather than keep a twin.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fakes.clock import FakeClock
from fakes.fake_pynvml import FakeGpu, make_fake_pynvml
from fakes.powercap import FakePowercap
from lightning_to_energy import EnergyTracker, FakeSensor
from lightning_to_energy.records import EnergyReport, WindowRecord
from lightning_to_energy.sensors.base import Sensor
from lightning_to_energy.sensors.nvml import NvmlSensor
from lightning_to_energy.sensors.rapl import RaplSensor, find_rapl_zones

#: Relative tolerance of the joule comparison: NVML counts whole millijoules.
REL_TOL = 1e-5


@dataclass(frozen=True)
class Outcome:
    """What one scenario found.

    Attributes:
        true_j: joules truly spent over the whole run (None for a refusal).
        expected_j: joules truly spent in the windows that may be kept; None where the
            scenario checks a refusal rather than a total.
        measured_j: joules the run reported (None where nothing was measured).
        left_out: flags of each window left out of the totals, e.g. ``("implausible",)``.
        warnings: the category names of the warnings raised, in order.
        ok: the scenario's own checks passed (flags, fitting, refusal text).
        note: what was checked, in a few words.
    """

    true_j: float | None
    expected_j: float | None
    measured_j: float | None
    left_out: tuple[tuple[str, ...], ...] = ()
    warnings: tuple[str, ...] = ()
    ok: bool = True
    note: str = ""

    @property
    def verdict(self) -> str:
        """PASS when the checks hold and the joules agree within :data:`REL_TOL`."""
        if not self.ok:
            return "FAIL"
        if self.expected_j is None:
            return "PASS"
        if self.measured_j is None:
            return "FAIL"
        close = math.isclose(self.measured_j, self.expected_j, rel_tol=REL_TOL, abs_tol=1e-9)
        return "PASS" if close else "FAIL"


@dataclass(frozen=True)
class Scenario:
    """One registered scenario: its name, the issue's failure number, and its function."""

    name: str
    failure: str
    run: Callable[[], Outcome]


SCENARIOS: list[Scenario] = []


def scenario(
    name: str, *, failure: str
) -> Callable[[Callable[[], Outcome]], Callable[[], Outcome]]:
    """Register a scenario function under ``name`` (unique) for failure ``failure``."""

    def register(fn: Callable[[], Outcome]) -> Callable[[], Outcome]:
        if any(s.name == name for s in SCENARIOS):
            raise ValueError(f"scenario {name!r} is registered twice; give it another name.")
        SCENARIOS.append(Scenario(name, failure, fn))
        return fn

    return register


# --- helpers ------------------------------------------------------------------------------


@dataclass
class Run:
    """A finished drive: the report, the tracker, the warnings and the clock's span."""

    report: EnergyReport
    tracker: EnergyTracker
    warnings: list[warnings.WarningMessage]
    span_s: float  # from the first step's start to the end of the run
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def kept(self) -> list[WindowRecord]:
        return [w for w in self.report.windows if not _left_out(w)]

    @property
    def left_out(self) -> tuple[tuple[str, ...], ...]:
        return tuple(w.flags for w in self.report.windows if _left_out(w))

    @property
    def warning_names(self) -> tuple[str, ...]:
        return tuple(w.category.__name__ for w in self.warnings)


# Flags that keep a window's joules (or some of them) out of the totals.
_LEFT_OUT = {"implausible", "counter-reset", "missed-wraps", "sensor-fault", "unmeasured"}


def _left_out(w: WindowRecord) -> bool:
    return bool(_LEFT_OUT.intersection(w.flags))


def drive(
    sensors: Sequence[Sensor],
    clock: FakeClock,
    *,
    steps: int = 80,
    step_s: float = 0.25,
    load_s: float = 0.0,
    window_s: float = 2.0,
    before: Callable[[int], None] | None = None,
    after: Callable[[int], None] | None = None,
) -> Run:
    """Run ``steps`` steps of ``step_s`` seconds (plus ``load_s`` of batch loading after each)
    over a tracker with the given sensors; ``before(i)`` / ``after(i)`` inject faults around
    step ``i`` (``after`` runs before the loading gap)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker = EnergyTracker(
            None,
            sensors=list(sensors),
            window_s=window_s,
            calibration=None,
            clock=clock,
            features=("duration_s", "steps"),
        )
        tracker.start()
        t0_s = clock()
        for i in range(steps):
            if before is not None:
                before(i)
            with tracker.step(None):
                clock.advance(step_s)
            if after is not None:
                after(i)
            clock.advance(load_s)
        report = tracker.finish(save_calibration=False)
    return Run(report, tracker, list(caught), clock() - t0_s)


class LinkedClock(FakeClock):
    """A fake clock that calls ``on_advance(now_s)`` after each advance: a fake powercap tree
    follows it, as the kernel's counters follow real time."""

    on_advance: Callable[[float], None] | None = None

    def advance(self, seconds: float) -> None:
        super().advance(seconds)
        if self.on_advance is not None:
            self.on_advance(self())


def kept_power_j(run: Run, power_w: float) -> float:
    """Constant ``power_w`` x the seconds of the windows that may be kept (J = W x s)."""
    return math.fsum(power_w * w.duration_s for w in run.kept)


def _nvml(
    gpu: FakeGpu, clock: FakeClock, *, background: bool = False, method: str = "auto"
) -> NvmlSensor:
    fake = make_fake_pynvml([gpu], clock=clock)
    return NvmlSensor(
        0,
        nvml=fake,
        background=background,
        counter_period_s=3600.0,  # the scenario polls itself, deterministically
        power_period_s=0.02,  # the update period reported; no thread without background
        method=method,  # type: ignore[arg-type]
        clock=clock,
        sleep=clock.sleep,
    )


def _outcome(run: Run, power_w: float, ok: bool, note: str) -> Outcome:
    """The outcome of a run at constant ``power_w``: true joules over the whole span."""
    return Outcome(
        true_j=power_w * run.span_s,  # J = W x s
        expected_j=kept_power_j(run, power_w),
        measured_j=run.report.measured_j,
        left_out=run.left_out,
        warnings=run.warning_names,
        ok=ok,
        note=note,
    )


def _left_out_as(run: Run, flag: str, windows: int) -> bool:
    """Exactly ``windows`` windows left out, each flagged ``flag`` and not fitted."""
    out = [w for w in run.report.windows if _left_out(w)]
    unfitted = {"not-fitted", "unmeasured"}  # a window with no joules left has none to fit
    return len(out) == windows and all(flag in w.flags and unfitted & set(w.flags) for w in out)


# --- failure 1: garbage readings ----------------------------------------------------------


@scenario("nvml-counter-2^64-1", failure="1")
def nvml_counter_all_ones() -> Outcome:
    clock = FakeClock()
    gpu = FakeGpu(power_w=300.0)  # limit 700 W: ceiling 1400 W
    sensor = _nvml(gpu, clock)
    nvml: Any = sensor._nvml
    real_read = nvml.nvmlDeviceGetTotalEnergyConsumption
    reads = [0]

    def read(handle: Any) -> int:
        reads[0] += 1  # without a sampler, the counter is read at window edges only
        return 2**64 - 1 if reads[0] == 6 else int(real_read(handle))

    nvml.nvmlDeviceGetTotalEnergyConsumption = read
    run = drive([sensor], clock)
    # edge read 6 closes window 4 and opens window 5 (reads 1 to 5 open window 0 and close
    # windows 0 to 3): both left out, the rest exact
    ok = _left_out_as(run, "implausible", 2)
    return _outcome(run, 300.0, ok, "one all-ones counter read")


@scenario("nvml-instant-0xFFFFFFFF-mW", failure="1")
def nvml_instant_all_ones() -> Outcome:
    clock = FakeClock()
    gpu = FakeGpu(power_w=300.0, has_counter=False)  # integrates instant power
    sensor = _nvml(gpu, clock)

    def after(i: int) -> None:
        gpu.instant_mw = 0xFFFFFFFF if i == 8 * 3 + 2 else None
        sensor.poll()  # what the background sampler does, once a step

    run = drive([sensor], clock, after=after)
    ok = _left_out_as(run, "implausible", 1)
    return _outcome(run, 300.0, ok, "one all-ones power sample")


@scenario("fake-one-off-1e18-J", failure="1")
def fake_one_off() -> Outcome:
    clock = FakeClock()
    reads = [0]

    def energy_j() -> float:
        reads[0] += 1
        return 1e18 if reads[0] == 6 else 50.0 * clock()  # J = W x s

    run = drive([FakeSensor("gpu:0", energy_fn=energy_j)], clock)
    fitted = run.tracker.model.n_updates
    # read 6 closes window 4 and opens window 5: both left out and never fitted
    ok = _left_out_as(run, "implausible", 2) and fitted <= len(run.report.windows) - 2
    return _outcome(run, 50.0, ok, "one scripted 1e18 J reading")


@scenario("rapl-reset-not-a-wrap", failure="1")
def rapl_reset() -> Outcome:
    clock = LinkedClock()
    start_uj, power_w, reset_s = 201_000_000_000, 40.0, 10.4
    with tempfile.TemporaryDirectory() as tmp:
        tree = FakePowercap(Path(tmp))
        tree.add_zone("intel-rapl:0", "package-0", energy_uj=start_uj)

        def counter(now_s: float) -> None:
            # 40 W, and energy_uj reset to 0 at 10.4 s (mid-window 5): taken as a wrap,
            # (262_143 - 201_000 - 0.4) kJ in at most 2 s is over 30 kW
            uj = (
                start_uj + power_w * now_s * 1e6
                if now_s < reset_s
                else power_w * (now_s - reset_s) * 1e6
            )  # W x s x 1e6 µJ/J = µJ
            tree.set_energy("intel-rapl:0", int(uj))

        clock.on_advance = counter
        (zone,) = find_rapl_zones(tree.root).zones
        run = drive([RaplSensor(zone, background=False, clock=clock)], clock)
    ok = _left_out_as(run, "counter-reset", 1)
    return _outcome(run, power_w, ok, "energy_uj reset to 0 mid-window")


# --- failure 2: an NVML counter reset hidden by "never lower" -----------------------------


@scenario("nvml-counter-reset", failure="2")
def nvml_reset() -> Outcome:
    clock = FakeClock()
    gpu = FakeGpu(power_w=300.0)
    sensor = _nvml(gpu, clock, background=True)  # reads extrapolate the latest sample

    def after(i: int) -> None:
        if i == 20:  # the counter restarts from 0 (a driver reload)
            gpu.counter_offset_mj = -gpu_counter_mj(sensor)
        sensor.poll()  # what the background sampler does, once a step

    run = drive([sensor], clock, after=after)
    ok = _left_out_as(run, "counter-reset", 1)
    return _outcome(run, 300.0, ok, "counter went back to 0")


def gpu_counter_mj(sensor: NvmlSensor) -> int:
    """The fake counter's value now, in mJ (one uncounted read of the fake device)."""
    nvml: Any = sensor._nvml
    return int(nvml.nvmlDeviceGetTotalEnergyConsumption(nvml.nvmlDeviceGetHandleByIndex(0)))


# --- failure 3: RAPL wraps missed while the process was stopped ---------------------------


@scenario("rapl-double-wrap-stopped-3.6s", failure="3")
def rapl_double_wrap() -> Outcome:
    clock = LinkedClock()
    range_uj, power_w = 75_000_000, 50.0  # a 75 J range wraps every 1.5 s at 50 W
    with tempfile.TemporaryDirectory() as tmp:
        tree = FakePowercap(Path(tmp))
        # a stated 30 W maximum: ceiling 60 W, a whole range every 1.25 s at the ceiling
        tree.add_zone(
            "intel-rapl:0",
            "package-0",
            energy_uj=0,
            max_energy_range_uj=range_uj,
            max_power_uw=30_000_000,
        )
        clock.on_advance = lambda now_s: tree.set_energy(
            "intel-rapl:0",
            int(power_w * now_s * 1e6) % range_uj,  # W x s x 1e6 µJ/J = µJ
        )
        (zone,) = find_rapl_zones(tree.root).zones
        sensor = RaplSensor(zone, background=False, clock=clock)

        def after(i: int) -> None:
            if i == 30:
                clock.advance(3.6)  # SIGSTOP: 180 J, two wraps and 30 J, and no read at all
            sensor.poll()  # the background reader, every 0.25 s while the process runs

        run = drive([sensor], clock, after=after)
    ok = _left_out_as(run, "missed-wraps", 1)
    return _outcome(run, power_w, ok, "3.6 s without a read, 75 J range")


# --- failure 6: windows that tile time ----------------------------------------------------


@scenario("gaps-between-windows", failure="6")
def gaps() -> Outcome:
    clock = FakeClock()
    run = drive([FakeSensor("gpu:0", power_w=100.0, clock=clock)], clock, step_s=0.2, load_s=0.05)
    # every second from the first step to the end is in a window: kept = 100 W x the span
    ok = not run.left_out and math.isclose(
        math.fsum(w.duration_s for w in run.report.windows), run.span_s, rel_tol=1e-9
    )
    return _outcome(run, 100.0, ok, "0.05 s of loading after each 0.2 s step")


def _refusal(window_s: float, sensors: Callable[[FakeClock], list[Sensor]], needle: str) -> Outcome:
    clock = FakeClock()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            EnergyTracker(None, sensors=sensors(clock), window_s=window_s, calibration=None)
        except ValueError as exc:
            return Outcome(None, None, None, ok=needle in str(exc), note=str(exc)[:60])
    names = tuple(w.category.__name__ for w in caught)
    return Outcome(None, None, None, warnings=names, ok=False, note="accepted")


@scenario("window_s=0-refused", failure="6")
def window_zero() -> Outcome:
    return _refusal(0.0, lambda c: [FakeSensor("gpu:0", power_w=1.0, clock=c)], "> 0")


@scenario("window_s-below-nvml-update-refused", failure="6")
def window_below_update() -> Outcome:
    return _refusal(0.05, lambda c: [_nvml(FakeGpu(), c)], "update period of gpu:0 (0.1 s)")


@scenario("window_s=1-on-nvml-warns", failure="6")
def window_short_nvml() -> Outcome:
    clock = FakeClock()
    run = drive([_nvml(FakeGpu(power_w=300.0), clock)], clock, steps=16, window_s=1.0)
    said = any("below the minimum trustworthy window" in str(w.message) for w in run.warnings)
    # 1 s windows on a 2 s sensor: kept in the totals, flagged short, never fitted
    short = all("short" in w.flags for w in run.report.windows)
    return _outcome(run, 300.0, said and short, "warned, windows short")


# --- failures 4, 5, 7, 8, 9, 10: runs that end early, arguments, files, DDP (i13b) ----------


class _Boom(RuntimeError):
    """The error a scenario's step raises."""


def _interrupted_drive(
    sensor: Sensor, clock: FakeClock, error: BaseException, *, steps: int = 10, at: int = 6
) -> tuple[EnergyTracker, list[warnings.WarningMessage], float, BaseException | None]:
    """``steps`` steps of 0.25 s in a ``with tracker:`` block; step ``at`` raises ``error``
    halfway through (0.125 s spent). Returns the tracker, the warnings, the span and what
    escaped the block."""
    escaped: BaseException | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker = EnergyTracker(
            None, sensors=[sensor], window_s=0.5, calibration=None, clock=clock,
            features=("duration_s", "steps"),
        )  # fmt: skip
        t0_s = clock()
        try:
            with tracker:
                for i in range(steps):
                    with tracker.step(None):
                        clock.advance(0.125)
                        if i == at:
                            raise error
                        clock.advance(0.125)
        except BaseException as exc:  # the scenario checks it is the injected one
            escaped = exc
    return tracker, list(caught), clock() - t0_s, escaped


@scenario("step-raises", failure="4")
def step_raises() -> Outcome:
    clock = FakeClock()
    sensor = FakeSensor("fake:0", power_w=50.0, clock=clock)
    tracker, caught, span_s, escaped = _interrupted_drive(sensor, clock, _Boom("boom"))
    report = tracker.build_report()
    last = report.windows[-1]
    ok = (
        isinstance(escaped, _Boom)
        and sensor.closed
        and report.interrupted == "_Boom: boom"
        and "interrupted" in last.flags
        and "not-fitted" in last.flags
    )
    # 6.5 steps x 0.25 s... the raising step spent 0.125 s: 6 x 0.25 + 0.125 = 1.625 s x 50 W
    return Outcome(
        true_j=50.0 * span_s,
        expected_j=50.0 * span_s,
        measured_j=report.measured_j,
        warnings=tuple(w.category.__name__ for w in caught),
        ok=ok,
        note="partial report marked interrupted, sensor closed",
    )


@scenario("ctrl-c-nvml-sampler", failure="4")
def ctrl_c_nvml_sampler() -> Outcome:
    import threading
    import time

    clock = FakeClock()
    gpu = FakeGpu(power_w=300.0)
    before = {t.ident for t in threading.enumerate()}
    sensor = _nvml(gpu, clock, background=True)
    nvml: Any = sensor._nvml
    started = bool({t.ident for t in threading.enumerate()} - before)
    tracker, caught, _, escaped = _interrupted_drive(sensor, clock, KeyboardInterrupt())
    report = tracker.build_report()
    for _ in range(500):  # the sampler thread ends within its poll period
        if not {t.ident for t in threading.enumerate()} - before:
            break
        time.sleep(0.01)
    left = {t.ident for t in threading.enumerate()} - before
    ok = (
        started
        and isinstance(escaped, KeyboardInterrupt)
        and not left
        and nvml.shutdown_calls == 1
        and report.interrupted == "KeyboardInterrupt"
    )
    return Outcome(
        true_j=None,
        expected_j=None,
        measured_j=report.measured_j,
        warnings=tuple(w.category.__name__ for w in caught),
        ok=ok,
        note=f"sampler thread stopped ({len(left)} left), NVML shut down once",
    )


@scenario("callback-reused-after-failure", failure="4")
def callback_reused_after_failure() -> Outcome:
    import torch
    from lightning.pytorch import Trainer
    from torch.utils.data import DataLoader

    from lightning_to_energy import TOEnergy
    from test_callback import AdvanceClock, Rows, Tiny
    from test_callback import FakeClock as StepClock

    class Raises(Tiny):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            if batch_idx == 5:
                raise _Boom("boom")
            return super().training_step(batch, batch_idx)

    clock = StepClock()
    energy = TOEnergy(
        sensors=lambda rank, device: [FakeSensor("fake:0", power_w=10.0, clock=clock)],
        window_s=1.0, calibration=None, clock=clock, print_report=False, plot=False,
        report_dir=Path(tempfile.mkdtemp()),
    )  # fmt: skip
    options: dict[str, Any] = {
        "accelerator": "cpu", "logger": False, "enable_checkpointing": False,
        "enable_progress_bar": False, "enable_model_summary": False,
        "default_root_dir": tempfile.mkdtemp(),
    }  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = Trainer(callbacks=[AdvanceClock(clock, low=0.5, high=0.5), energy],
                        max_epochs=1, **options)  # fmt: skip
        with contextlib.suppress(_Boom):  # the failed fit: its report is read below
            first.fit(Raises(), DataLoader(Rows(64), batch_size=8))
        partial = energy.report
        second = Trainer(callbacks=[AdvanceClock(clock, low=0.5, high=0.5), energy],
                         max_steps=3, **options)  # fmt: skip
        second.fit(Tiny(), DataLoader(Rows(64), batch_size=8))
    report = energy.report
    ok = (
        partial is not None
        and partial.interrupted == "_Boom: boom"
        and partial.loops["train"].steps == 5
        and report is not None
        and report.loops["train"].steps == 3
    )
    # the second fit alone: 3 steps x 0.5 s x 10 W = 15 J (its first run's 25 J not carried)
    return Outcome(
        true_j=15.0,
        expected_j=15.0,
        measured_j=None if report is None else report.measured_j,
        warnings=tuple(sorted({w.category.__name__ for w in caught})),
        ok=ok,
        note="5-step failed fit, then a 3-step fit reports 3 steps",
    )


@scenario("sensor-names", failure="5")
def sensor_names() -> Outcome:
    from lightning_to_energy import TOEnergy

    refused: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for spec in ("bogus", "nvml,bogus", 123):
            try:
                EnergyTracker(None, sensors=spec)  # type: ignore[arg-type]
            except ValueError as exc:
                refused.append(str(exc))
        try:
            TOEnergy(sensors=["rapl"], clock="x")  # type: ignore[arg-type]
        except ValueError as exc:
            refused.append(str(exc))
        tracker = EnergyTracker(None, sensors="estimate", calibration=None)
        tracker.start()
        kinds = [s.kind.value for s in tracker.sensors]
        tracker.close(save_calibration=False)
    ok = (
        len(refused) == 4
        and all("'nvml', 'rapl', 'estimate', 'fake'" in r for r in refused[:3])
        and "clock" in refused[3]
        and kinds == ["estimate"]
    )
    return Outcome(
        true_j=None, expected_j=None, measured_j=None,
        warnings=tuple(sorted({w.category.__name__ for w in caught})), ok=ok,
        note="3 bad specs and a bad clock refused at construction; 'estimate' opens 1 sensor",
    )  # fmt: skip


@scenario("foreign-calibration", failure="7")
def foreign_calibration() -> Outcome:
    import stat

    from lightning_to_energy.calibration import (
        Calibration,
        CalibrationStore,
        HardwareInfo,
        hardware_fingerprint,
    )
    from test_calibration import H100, RUN_A, RUN_B

    folder = Path(tempfile.mkdtemp())
    path = folder / "h100.json"
    CalibrationStore.from_path(path).save(Calibration.from_model(RUN_A, H100, run_id="h100"))
    path.chmod(0o644)
    before = path.read_bytes()
    xeon = HardwareInfo((), None, "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", 64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = CalibrationStore.from_path(path).save(
            Calibration.from_model(RUN_B, xeon, run_id="xeon")
        )
    ok = (
        path.read_bytes() == before
        and stat.S_IMODE(path.stat().st_mode) == 0o644
        and written == folder / f"h100.{hardware_fingerprint(xeon)}.json"
    )
    return Outcome(
        true_j=None, expected_j=None, measured_j=None,
        warnings=tuple(w.category.__name__ for w in caught), ok=ok,
        note="H100 file unchanged (bytes, mode 0644); Xeon run saved beside it",
    )  # fmt: skip


@scenario("malformed-json-cli", failure="8")
def malformed_json_cli() -> Outcome:
    import io

    from lightning_to_energy import cli
    from test_calibration import RUN_A, calib

    folder = Path(tempfile.mkdtemp())
    deep = folder / "deep.json"
    deep.write_text("[" * 20_000 + "]" * 20_000)
    listed = folder / "hardware-list.json"
    doc = calib(RUN_A, "a").to_dict()
    doc["hardware"] = [1, 2]
    listed.write_text(json.dumps(doc))
    results: list[tuple[int, int]] = []
    for path in (deep, listed):
        for argv in (
            ["report", str(path)],
            ["fit", str(path), "--out", str(folder / "out.json")],
            ["predict", "_models:TinyMLP", "--input", "8x16", "--step-time", "0.01",
             "--steps", "10", "--calibration", str(path)],
        ):  # fmt: skip
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = cli.main(argv)
            results.append((code, err.getvalue().count("\n")))
    ok = all(r == (2, 1) for r in results)
    return Outcome(
        true_j=None, expected_j=None, measured_j=None, ok=ok,
        note=f"{sum(r == (2, 1) for r in results)} of 6 commands exit 2 with one line",
    )  # fmt: skip


@scenario("files-follow-umask", failure="9")
def files_follow_umask() -> Outcome:
    import os
    import stat

    from lightning_to_energy.calibration import CalibrationStore
    from lightning_to_energy.report import save_report, write_csv
    from test_calibration import RUN_A, calib
    from test_report import make_report

    folder = Path(tempfile.mkdtemp())
    old = os.umask(0o027)
    try:
        saved = save_report(make_report(), folder / "run", plot=False)
        csv = write_csv(make_report(), folder / "w.csv")
        cal = CalibrationStore(folder / "store").save(calib(RUN_A, "a"))
    finally:
        os.umask(old)
    modes = {stat.S_IMODE(p.stat().st_mode) for p in (saved.json_path, saved.csv_path, csv, cal)}
    return Outcome(
        true_j=None, expected_j=None, measured_j=None, ok=modes == {0o640},
        note=f"umask 027: modes {sorted(oct(m) for m in modes)} (0o640 expected)",
    )  # fmt: skip


@scenario("ddp-rank-sensors", failure="10")
def ddp_rank_sensors() -> Outcome:
    import os
    import subprocess

    from lightning_to_energy.report import load_report

    out = Path(tempfile.mkdtemp())
    script = Path(__file__).resolve().parents[1] / "tests" / "scripts" / "tiny_run.py"
    done = subprocess.run(
        [sys.executable, str(script), "ddp", str(out)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    if done.returncode != 0:
        return Outcome(None, 520.0, None, ok=False, note=done.stderr[-200:])
    report = load_report(out / "energy_report.json")
    kinds = {s.domain: s.kind for s in report.sensors}
    domains = {d for w in report.windows for d in w.energy_j}
    # rank 0: 10 W x 4 s + host 100 W x 4 s; rank 1: 20 W x 4 s = 40 + 400 + 80 = 520 J
    return Outcome(
        true_j=520.0, expected_j=520.0, measured_j=report.measured_j,
        ok=domains == set(kinds) and "unknown" not in kinds.values(),
        note=f"2 CPU ranks: sensors listed {sorted(kinds)}",
    )  # fmt: skip


# --- the table ----------------------------------------------------------------------------


def run_all(names: Sequence[str] = ()) -> list[tuple[Scenario, Outcome]]:
    """Run the registered scenarios (those named, or all) and return their outcomes."""
    unknown = sorted(set(names) - {s.name for s in SCENARIOS})
    if unknown:
        raise SystemExit(
            f"unknown scenario(s) {unknown}; known: {', '.join(s.name for s in SCENARIOS)}"
        )
    chosen = [s for s in SCENARIOS if not names or s.name in names]
    results = []
    for sc in chosen:
        try:
            outcome = sc.run()
        except Exception as exc:  # a crashing scenario is a failed one, and the table goes on
            outcome = Outcome(None, None, None, ok=False, note=f"{type(exc).__name__}: {exc}"[:80])
        results.append((sc, outcome))
    return results


def _j(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def render(results: Sequence[tuple[Scenario, Outcome]]) -> str:
    """A plain-text table, one row per scenario."""
    header = (
        "scenario",
        "fail.",
        "true J",
        "expected J",
        "measured J",
        "left out",
        "warnings",
        "verdict",
    )
    rows = [header]
    for sc, o in results:
        left = ", ".join("+".join(f for f in flags if f != "not-fitted") for flags in o.left_out)
        counts: dict[str, int] = {}
        for name in o.warnings:
            counts[name] = counts.get(name, 0) + 1
        warned = ", ".join(f"{n} x{c}" for n, c in counts.items()) or "none"
        verdict = o.verdict if o.verdict == "PASS" else f"FAIL ({o.note})"
        rows.append(
            (
                sc.name,
                sc.failure,
                _j(o.true_j),
                _j(o.expected_j),
                _j(o.measured_j),
                left or "-",
                warned,
                verdict,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", default=(), help="scenario names to run")
    parser.add_argument("--json", type=Path, help="also write the outcomes to this JSON file")
    args = parser.parse_args(argv)
    results = run_all(args.only)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"fault injection, {stamp}, {platform.node()} ({platform.machine()}, "
          f"{platform.python_version()})")  # fmt: skip
    print(render(results))
    failed = [sc.name for sc, o in results if o.verdict != "PASS"]
    print(f"{len(results) - len(failed)} of {len(results)} scenarios pass" + (
        f"; failed: {', '.join(failed)}" if failed else ""))  # fmt: skip
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                [
                    {"scenario": sc.name, "failure": sc.failure, **asdict(o), "verdict": o.verdict}
                    for sc, o in results
                ],
                indent=2,
            )
        )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
