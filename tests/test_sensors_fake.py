"""Fake, replay and estimate sensors: scripted readings, trace replay, the labelled estimate."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import lightning_to_energy.sensors as sensors_pkg
from fakes.clock import FakeClock
from lightning_to_energy.sensors import (
    CpuTimeEstimateSensor,
    EnergyEstimateWarning,
    FakeSensor,
    ReplaySensor,
    Sensor,
    SensorError,
    SensorKind,
    read_trace,
    sensor_info,
)
from lightning_to_energy.sensors import estimate as estimate_mod

# --- FakeSensor -------------------------------------------------------------------------------


def test_constant_power_follows_the_clock() -> None:
    clock = FakeClock(100.0)
    sensor = FakeSensor("gpu:0", power_w=250.0, clock=clock)
    assert isinstance(sensor, Sensor)
    assert sensor.read_j() == 0.0
    clock.advance(4.0)
    # 250 W x 4 s = 1000 J
    assert sensor.read_j() == pytest.approx(1000.0)


def test_scripted_function_and_readings() -> None:
    level = [3.0]
    assert FakeSensor(energy_fn=lambda: level[0]).read_j() == 3.0
    scripted = FakeSensor("dram:0", readings=[1.0, 2.5])
    assert scripted.peek_j() is None  # nothing read yet
    assert [scripted.read_j(), scripted.read_j()] == [1.0, 2.5]
    assert scripted.peek_j() == 2.5  # peeking consumes nothing
    with pytest.raises(SensorError, match="only 2 were scripted"):
        scripted.read_j()


def test_scripted_failures_hit_the_given_reads_only() -> None:
    sensor = FakeSensor(readings=[0.0, 1.0, 2.0], fail_at=[1])
    assert sensor.read_j() == 0.0
    with pytest.raises(SensorError, match="scripted failure at read 1"):
        sensor.read_j()
    assert sensor.read_j() == 2.0  # read 2 returns the third scripted value
    assert sensor.reads == 3
    sensor.close()
    assert sensor.closed


def test_fake_sensor_needs_exactly_one_script() -> None:
    with pytest.raises(ValueError, match="exactly one of power_w, energy_fn or readings"):
        FakeSensor()
    with pytest.raises(ValueError, match="found \\['power_w', 'readings'\\]"):
        FakeSensor(power_w=1.0, readings=[0.0])
    with pytest.raises(ValueError, match="power_w must be >= 0"):
        FakeSensor(power_w=-1.0)


def test_sensor_info_is_plain_data() -> None:
    sensor = FakeSensor("cpu:package-0", power_w=5.0, host_wide=True, min_window_s=0.5)
    assert sensor_info(sensor) == {
        "domain": "cpu:package-0",
        "kind": "fake",
        "update_period_s": 0.0,
        "min_window_s": 0.5,
        "source": "fake: constant 5 W",
        "host_wide": True,
    }


# --- ReplaySensor -----------------------------------------------------------------------------


def test_replay_interpolates_and_stops_at_the_end() -> None:
    clock = FakeClock(50.0)
    replay = ReplaySensor([1.0, 2.0, 4.0], [10.0, 30.0, 50.0], domain="gpu:0", clock=clock)
    assert replay.kind is SensorKind.REPLAY
    # sample spacings 1 s and 2 s: the median of two is the larger, 2 s
    assert replay.update_period_s == 2.0
    assert replay.read_j() == 0.0  # energy is relative to the first sample
    clock.advance(0.5)
    # halfway between 10 J and 30 J, relative to 10 J: 10 J
    assert replay.read_j() == pytest.approx(10.0)
    clock.advance(2.0)
    # at trace time 3.5 s: 30 + (50 - 30) x (3.5 - 2) / 2 = 45 J; minus 10 J = 35 J
    assert replay.read_j() == pytest.approx(35.0)
    clock.advance(1.0)
    with pytest.raises(SensorError, match=r"ended at 3\.000 s"):
        replay.read_j()
    assert replay.peek_j() is None


def test_replay_read_at_the_last_sample_is_the_last_energy() -> None:
    clock = FakeClock()
    replay = ReplaySensor([1.0, 2.0, 4.0], [10.0, 30.0, 50.0], domain="gpu:0", clock=clock)
    clock.advance(3.0)  # trace time 1 + 3 = 4 s: the last sample, not past it
    # 50 J - 10 J = 40 J
    assert replay.read_j() == pytest.approx(40.0)


@pytest.mark.parametrize(
    ("times", "energies", "message"),
    [
        ([0.0], [0.0], "at least two"),
        ([0.0, 0.0], [0.0, 1.0], "times must increase"),
        ([0.0, 1.0], [5.0, 4.0], "must not decrease"),
    ],
)
def test_replay_rejects_bad_traces(times: list[float], energies: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ReplaySensor(times, energies, domain="gpu:0")


def _write_trace(path: Path, rows: list[str]) -> Path:
    path.write_text("time_s,domain,energy_j,kind,source\n" + "\n".join(rows) + "\n")
    return path


def test_replay_from_csv_picks_a_domain(tmp_path: Path) -> None:
    trace = _write_trace(
        tmp_path / "trace.csv",
        [
            "0.0,gpu:0,0.0,counter,NVML H100",
            "0.0,dram:0,0.0,counter,RAPL dram",
            "1.0,gpu:0,300.0,counter,NVML H100",
            "1.0,dram:0,8.0,counter,RAPL dram",
        ],
    )
    assert sorted(read_trace(trace)) == ["dram:0", "gpu:0"]
    clock = FakeClock()
    gpu = ReplaySensor.from_csv(trace, "gpu:0", clock=clock, min_window_s=2.0)
    assert gpu.source == "replay of trace.csv (counter: NVML H100)" and gpu.min_window_s == 2.0
    clock.advance(0.25)
    # 300 J x 0.25 = 75 J
    assert gpu.read_j() == pytest.approx(75.0)
    with pytest.raises(SensorError, match="pass domain= to choose one"):
        ReplaySensor.from_csv(trace)
    with pytest.raises(SensorError, match="no domain 'cpu:package-0'"):
        ReplaySensor.from_csv(trace, "cpu:package-0")


def test_trace_errors_say_what_was_expected(tmp_path: Path) -> None:
    bad_header = tmp_path / "bad.csv"
    bad_header.write_text("t,domain,joules\n0,gpu:0,1\n")
    with pytest.raises(SensorError, match="missing time_s, energy_j, kind, source"):
        read_trace(bad_header)
    bad_value = _write_trace(tmp_path / "value.csv", ["zero,gpu:0,1.0,counter,x"])
    with pytest.raises(SensorError, match="line 2: expected numbers"):
        read_trace(bad_value)
    with pytest.raises(SensorError, match="could not be read"):
        read_trace(tmp_path / "absent.csv")


# --- the estimate -----------------------------------------------------------------------------


def test_estimate_is_cpu_time_times_per_core_power(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(estimate_mod, "_announced", True)  # silence the once-per-process notice
    clock = FakeClock()
    cpu_s = [7.0]
    sensor = CpuTimeEstimateSensor(
        watts_per_core=12.0, idle_w=30.0, cpu_time=lambda: cpu_s[0], clock=clock
    )
    assert sensor.kind is SensorKind.ESTIMATE and not sensor.host_wide
    assert "not a measurement" in sensor.source and "12 W per busy core" in sensor.source
    cpu_s[0] += 3.0  # three busy core-seconds ...
    clock.advance(2.0)  # ... within two seconds (two cores busy part of the time)
    # 12 W x 3 s + 30 W x 2 s = 36 + 60 = 96 J
    assert sensor.read_j() == pytest.approx(96.0)


def test_estimate_is_announced_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(estimate_mod, "_announced", False)
    with pytest.warns(EnergyEstimateWarning, match="CPU energy is an ESTIMATE"):
        CpuTimeEstimateSensor()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CpuTimeEstimateSensor()  # a second announcement would raise here


def test_estimate_rejects_negative_power() -> None:
    with pytest.raises(ValueError, match="must be >= 0 W"):
        CpuTimeEstimateSensor(watts_per_core=-1.0, announce=False)
    with pytest.raises(ValueError, match="must be >= 0 W"):
        CpuTimeEstimateSensor(idle_w=-1.0, announce=False)


# --- the package surface ----------------------------------------------------------------------


def test_public_api_is_stable() -> None:
    assert sensors_pkg.__all__ == [
        "BACKENDS",
        "TRACE_COLUMNS",
        "CpuTimeEstimateSensor",
        "Discovery",
        "EnergyEstimateWarning",
        "FakeSensor",
        "GpuIdentity",
        "ImplausibleReadingWarning",
        "NvmlSensor",
        "Peekable",
        "RaplSensor",
        "RaplZone",
        "ReadingAnomaly",
        "ReplaySensor",
        "Sensor",
        "SensorError",
        "SensorKind",
        "SensorUnavailable",
        "Trace",
        "discover",
        "find_rapl_zones",
        "read_trace",
        "sensor_info",
    ]


def test_importing_the_sensors_does_not_import_pynvml() -> None:
    code = (
        "import sys, lightning_to_energy.sensors, lightning_to_energy.sensors.meter; "
        "print('pynvml' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
