"""The meter with an injected clock and fake sensors: totals, short windows, faults, peeking."""

from __future__ import annotations

import dataclasses
import warnings

import pytest

from fakes.clock import FakeClock
from lightning_to_energy.sensors import FakeSensor, SensorKind
from lightning_to_energy.sensors.meter import Measurement, Meter


def _gpu_and_cpu(clock: FakeClock) -> list[FakeSensor]:
    return [
        FakeSensor("gpu:0", power_w=300.0, clock=clock, kind=SensorKind.COUNTER, min_window_s=2.0),
        FakeSensor("cpu:package-0", power_w=50.0, clock=clock, min_window_s=0.1),
    ]


def test_window_totals_kinds_and_sources() -> None:
    clock = FakeClock(10.0)
    syncs: list[float] = []
    meter = Meter(_gpu_and_cpu(clock), clock=clock, sync=lambda: syncs.append(clock()))
    meter.open()
    clock.advance(2.5)
    m = meter.close()
    assert m.start_s == 10.0 and m.duration_s == pytest.approx(2.5)
    # 300 W x 2.5 s = 750 J; 50 W x 2.5 s = 125 J; 750 + 125 = 875 J
    assert dict(m.energy_j) == pytest.approx({"gpu:0": 750.0, "cpu:package-0": 125.0})
    assert m.total_j == pytest.approx(875.0)
    # 875 J / 2.5 s = 350 W
    assert m.mean_power_w == pytest.approx(350.0)
    assert dict(m.kinds) == {"gpu:0": SensorKind.COUNTER, "cpu:package-0": SensorKind.FAKE}
    assert m.sources["gpu:0"] == "fake: constant 300 W"
    assert not m.short and not m.faults and not m.includes_estimate
    assert syncs == [10.0, 12.5]  # once per edge, not per read


def test_sync_happens_before_the_clock_and_the_reads() -> None:
    clock = FakeClock()
    gpu = FakeSensor("gpu:0", power_w=100.0, clock=clock)
    meter = Meter([gpu], clock=clock, sync=lambda: clock.advance(0.5))  # GPU work drains
    meter.open()  # sync -> t = 0.5, then read
    clock.advance(2.0)
    m = meter.close()  # sync -> t = 3.0, then read
    # 3.0 - 0.5 = 2.5 s; 100 W x 2.5 s = 250 J
    assert m.duration_s == pytest.approx(2.5)
    assert m.energy_j["gpu:0"] == pytest.approx(250.0)


def test_short_window_is_flagged_against_the_longest_minimum() -> None:
    clock = FakeClock()
    meter = Meter(_gpu_and_cpu(clock), clock=clock)
    assert meter.min_window_s == 2.0  # max(2.0, 0.1)
    meter.open()
    clock.advance(1.0)
    assert meter.close().short
    meter.open()
    clock.advance(2.0)
    assert not meter.close().short


def test_fault_mid_run_leaves_the_domain_out_warns_once_and_carries_on() -> None:
    clock = FakeClock()
    # reads: 0 open w1, 1 close w1 (fails), 2 open w2, 3 close w2 (fails), 4 open w3, 5 close w3
    flaky = FakeSensor("gpu:0", readings=[0.0, 0.0, 10.0, 0.0, 40.0, 70.0], fail_at=(1, 3))
    steady = FakeSensor("cpu:package-0", power_w=50.0, clock=clock)
    meter = Meter([flaky, steady], clock=clock)
    meter.open()
    clock.advance(2.0)
    with pytest.warns(RuntimeWarning, match="energy sensor gpu:0 failed") as record:
        first = meter.close()
    assert len(record) == 1
    assert "gpu:0" not in first.energy_j
    assert first.faults["gpu:0"] == "gpu:0: scripted failure at read 1 (fail_at)."
    # 50 W x 2 s = 100 J: the healthy domain is still measured, and is the total
    assert first.total_j == pytest.approx(100.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning for gpu:0 would raise here
        meter.open()
        clock.advance(2.0)
        second = meter.close()
        meter.open()
        clock.advance(2.0)
        third = meter.close()
    assert "gpu:0" in second.faults
    # 70 J - 40 J = 30 J
    assert third.energy_j["gpu:0"] == pytest.approx(30.0) and not third.faults


def test_fault_at_open_is_reported_as_such() -> None:
    clock = FakeClock()
    sensor = FakeSensor("gpu:0", readings=[0.0, 5.0], fail_at=0)
    meter = Meter([sensor], clock=clock)
    with pytest.warns(RuntimeWarning):
        meter.open()
    m = meter.close()
    assert m.faults["gpu:0"].startswith("at window open: gpu:0: scripted failure at read 0")
    assert m.energy_j == {} and m.total_j == 0.0


def test_non_sensor_exceptions_and_backwards_energy_are_faults_not_crashes() -> None:
    clock = FakeClock()

    def broken() -> float:
        raise ZeroDivisionError("division by zero")

    backwards = FakeSensor("gpu:0", readings=[50.0, 20.0])
    crashing = FakeSensor("gpu:1", energy_fn=broken)
    meter = Meter([backwards, crashing], clock=clock)
    with pytest.warns(RuntimeWarning):
        meter.open()
        m = meter.close()
    assert m.faults["gpu:1"] == "at window open: ZeroDivisionError: division by zero"
    # 20 J - 50 J = -30 J: a counter that went back was reset; the window's joules are unknown
    assert "gpu:0" not in m.energy_j and "gpu:0" not in m.faults
    assert m.rejected["gpu:0"][0] == "counter-reset"
    assert m.rejected["gpu:0"][1].startswith("the counter went back by 30 J")


def test_lap_closes_and_opens_at_one_edge() -> None:
    clock = FakeClock()
    sensor = FakeSensor("gpu:0", readings=[0.0, 30.0, 75.0])
    meter = Meter([sensor], clock=clock)
    meter.open()
    clock.advance(2.0)
    first = meter.lap()
    clock.advance(3.0)
    second = meter.close()
    # 30 - 0 = 30 J, then 75 - 30 = 45 J, with three reads in all
    assert (first.energy_j["gpu:0"], second.energy_j["gpu:0"]) == (30.0, 45.0)
    assert sensor.reads == 3
    assert second.start_s == pytest.approx(2.0) and second.duration_s == pytest.approx(3.0)


def test_peek_reads_latest_samples_without_consuming_reads() -> None:
    clock = FakeClock()

    class NoPeek:
        domain, kind, update_period_s, min_window_s = "x:0", SensorKind.FAKE, 0.0, 0.0
        source, host_wide = "no peek", False

        def read_j(self) -> float:
            return 0.0

        def close(self) -> None:
            pass

    meter = Meter([*_gpu_and_cpu(clock), NoPeek()], clock=clock)
    assert meter.peek_j() == 0.0  # no window open
    meter.open()
    clock.advance(1.0)
    # 300 W x 1 s + 50 W x 1 s = 350 J; the sensor without peek_j is left out
    assert meter.peek_j() == pytest.approx(350.0)
    assert meter.is_open


def test_misuse_raises() -> None:
    clock = FakeClock()
    meter = Meter(_gpu_and_cpu(clock), clock=clock)
    with pytest.raises(RuntimeError, match="no window is open"):
        meter.close()
    meter.open()
    with pytest.raises(RuntimeError, match="already open"):
        meter.open()
    with pytest.raises(ValueError, match=r"\['gpu:0'\] more than once"):
        Meter([FakeSensor("gpu:0", power_w=1.0), FakeSensor("gpu:0", power_w=2.0)])


def test_measurement_is_frozen_and_serialisable() -> None:
    clock = FakeClock()
    estimate = FakeSensor("cpu:estimate", power_w=20.0, clock=clock, kind=SensorKind.ESTIMATE)
    meter = Meter([estimate], clock=clock)
    meter.open()
    clock.advance(0.5)
    m = meter.close()
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.total_j = 0.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        m.energy_j["cpu:estimate"] = 0.0  # type: ignore[index]
    assert m.includes_estimate
    # 20 W x 0.5 s = 10 J
    assert m.to_dict() == {
        "start_s": 0.0,
        "duration_s": 0.5,
        "energy_j": {"cpu:estimate": 10.0},
        "total_j": 10.0,
        "kinds": {"cpu:estimate": "estimate"},
        "sources": {"cpu:estimate": "fake: constant 20 W"},
        "short": False,
        "faults": {},
        "rejected": {},
    }
    assert isinstance(m, Measurement)


def test_meter_without_sensors_has_no_minimum_window() -> None:
    clock = FakeClock()
    meter = Meter([], clock=clock)
    meter.open()
    clock.advance(1.0)
    m = meter.close()
    assert meter.min_window_s == 0.0 and m.total_j == 0.0 and not m.short


def test_warnings_can_be_left_to_the_caller() -> None:
    clock = FakeClock()
    sensor = FakeSensor("gpu:0", readings=[0.0, 5.0], fail_at=1)
    meter = Meter([sensor], clock=clock, warn=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning would raise here
        meter.open()
        m = meter.close()
    assert m.faults == {"gpu:0": "gpu:0: scripted failure at read 1 (fail_at)."}


def test_a_counter_a_hair_lower_at_close_is_rejected_not_negative_joules() -> None:
    clock = FakeClock()
    sensor = FakeSensor("gpu:0", readings=[100.0, 99.9])
    meter = Meter([sensor], clock=clock, warn=False)
    meter.open()
    clock.advance(2.0)
    m = meter.close()
    # 99.9 J - 100.0 J = -0.1 J: any decrease is a reset, never a (negative) window energy
    assert m.energy_j == {} and m.total_j == 0.0
    assert m.rejected["gpu:0"][0] == "counter-reset"
    assert m.rejected["gpu:0"][1].startswith("the counter went back by 0.1 J in 2 s")


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_a_non_finite_reading_is_a_fault(bad: float) -> None:
    clock = FakeClock()
    sensor = FakeSensor("gpu:0", readings=[0.0, bad])
    steady = FakeSensor("cpu:package-0", power_w=50.0, clock=clock)
    meter = Meter([sensor, steady], clock=clock, warn=False)
    meter.open()
    clock.advance(2.0)
    m = meter.close()
    assert m.faults["gpu:0"] == f"read {bad!r} J, expected a finite number"
    # 50 W x 2 s = 100 J: the total stays finite
    assert dict(m.energy_j) == {"cpu:package-0": 100.0} and m.total_j == 100.0


def test_peek_leaves_out_a_counter_that_fell_and_a_domain_that_failed_at_open() -> None:
    clock = FakeClock()
    level = [500.0]
    reset = FakeSensor("gpu:0", energy_fn=lambda: level[0])
    failed_open = FakeSensor("gpu:1", power_w=100.0, clock=clock, fail_at=0)
    steady = FakeSensor("cpu:package-0", power_w=50.0, clock=clock)
    meter = Meter([reset, failed_open, steady], clock=clock, warn=False)
    meter.open()
    clock.advance(1.0)
    level[0] = 200.0  # the counter was reset mid-window
    # only the steady sensor: 50 W x 1 s = 50 J; gpu:0 would add 200 - 500 = -300 J, and
    # gpu:1 has no opening reading to subtract (peeking must not raise for it)
    assert meter.peek_j() == pytest.approx(50.0)


def test_an_estimate_that_failed_does_not_label_the_window_an_estimate() -> None:
    clock = FakeClock()
    gpu = FakeSensor("gpu:0", power_w=300.0, clock=clock, kind=SensorKind.COUNTER)
    estimate = FakeSensor("cpu:estimate", readings=[0.0], kind=SensorKind.ESTIMATE, fail_at=1)
    meter = Meter([gpu, estimate], clock=clock, warn=False)
    meter.open()
    clock.advance(2.0)
    m = meter.close()
    # the estimate's joules are not in total_j (it failed at close), so none of it is estimated
    assert "cpu:estimate" in m.faults and not m.includes_estimate


def test_a_zero_length_window_has_no_mean_power() -> None:
    clock = FakeClock()
    meter = Meter([FakeSensor("gpu:0", power_w=300.0, clock=clock)], clock=clock)
    meter.open()
    m = meter.close()  # the clock did not move: 0 s, 0 J
    assert m.duration_s == 0.0 and m.mean_power_w is None
