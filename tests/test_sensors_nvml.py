"""The NVML backend against a fake pynvml: counter, fallbacks, failures, MIG, device mapping."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fakes.clock import FakeClock
from fakes.fake_pynvml import FakeGpu, make_fake_pynvml
from lightning_to_energy.sensors import SensorError, SensorKind, SensorUnavailable
from lightning_to_energy.sensors.nvml import NvmlSensor, visible_gpu_count
from lightning_to_energy.sensors.nvml_devices import GpuIdentity, parse_visible_devices

UUIDS = (
    "GPU-aaaaaaaa-0000-0000-0000-000000000000",
    "GPU-bbbbbbbb-0000-0000-0000-000000000000",
    "GPU-cccccccc-0000-0000-0000-000000000000",
)


@pytest.fixture(autouse=True)
def _no_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def _three_gpus() -> list[FakeGpu]:
    return [
        FakeGpu(uuid=u, pci_bus_id=f"00000000:{0x17 + i:02X}:00.0", power_w=100.0 * (i + 1))
        for i, u in enumerate(UUIDS)
    ]


def _sensor(nvml: object, clock: FakeClock, index: int = 0, **kwargs: object) -> NvmlSensor:
    options: dict[str, object] = {"background": False, "clock": clock, "sleep": clock.sleep}
    options.update(kwargs)
    return NvmlSensor(index, nvml=nvml, **options)  # type: ignore[arg-type]


def _wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


def _wait_for_polls(sensor: NvmlSensor, count: int) -> None:
    """Two finished polls after a change guarantee one poll that started after it."""
    target = sensor.background_polls + count
    _wait_until(lambda: sensor.background_polls >= target)


# --- the counter ------------------------------------------------------------------------------


def test_counter_is_used_when_it_increments() -> None:
    clock = FakeClock()
    gpu = FakeGpu(power_w=200.0)
    nvml = make_fake_pynvml([gpu], clock=clock)
    sensor = _sensor(nvml, clock)
    assert sensor.kind is SensorKind.COUNTER and sensor.note is None
    assert sensor.domain == "gpu:0" and not sensor.host_wide
    assert sensor.update_period_s == 0.1 and sensor.min_window_s == 2.0
    assert "nvmlDeviceGetTotalEnergyConsumption" in sensor.source
    assert "NVIDIA H100 80GB HBM3" in sensor.source
    start_j = sensor.read_j()
    clock.advance(2.0)
    # 200 W x 2 s = 400 J
    assert sensor.read_j() - start_j == pytest.approx(400.0)
    sensor.close()
    sensor.close()  # idempotent
    assert nvml.init_calls == nvml.shutdown_calls == 1


def test_background_counter_read_extrapolates_the_sample_with_instant_power() -> None:
    clock = FakeClock()
    gpu = FakeGpu(power_w=200.0)
    sensor = _sensor(
        make_fake_pynvml([gpu], clock=clock), clock, background=True, counter_period_s=60.0
    )
    try:
        reads = gpu.energy_reads
        first_j = sensor.read_j()
        clock.advance(1.0)
        # No counter sample was taken since (the counter is not read again), but the edge is
        # brought forward with instant power: 200 W x 1 s = 200 J after the first read.
        assert sensor.read_j() == pytest.approx(first_j + 200.0)
        assert gpu.energy_reads == reads
        # the progress bar's peek reads nothing at all: the latest sample as it is
        assert sensor.peek_j() == pytest.approx(first_j)
    finally:
        sensor.close()


def test_background_counter_read_without_instant_power_returns_the_sample() -> None:
    clock = FakeClock()
    gpu = FakeGpu(power_w=200.0, has_instant_field=False)
    sensor = _sensor(
        make_fake_pynvml([gpu], clock=clock), clock, background=True, counter_period_s=60.0
    )
    try:
        first_j = sensor.read_j()
        clock.advance(1.0)
        # nothing to extrapolate with: the sample, up to one period stale
        assert sensor.read_j() == first_j
    finally:
        sensor.close()


def test_background_counter_reads_never_go_backwards() -> None:
    clock = FakeClock()
    gpu = FakeGpu(power_w=200.0)
    sensor = _sensor(
        make_fake_pynvml([gpu], clock=clock), clock, background=True, counter_period_s=60.0
    )
    try:
        clock.advance(1.0)
        extrapolated_j = sensor.read_j()  # the sample + 200 W x 1 s
        # A lagging counter: its next sample has caught up only 100 J of those 200 J
        # (the origin is 5_000_000 mJ; + 100 J = + 100_000 mJ).
        gpu.counter_value_mj = 5_000_000 + 100_000
        sensor.poll()  # a new sample: 100 J below that extrapolated read
        # held at the earlier read (a meter would call a decrease a counter reset)
        assert sensor.read_j() == extrapolated_j
    finally:
        sensor.close()


def test_missing_counter_falls_back_to_instant_power_integration() -> None:
    clock = FakeClock()
    gpu = FakeGpu(power_w=200.0, has_counter=False)
    sensor = _sensor(make_fake_pynvml([gpu], clock=clock), clock)
    assert sensor.kind is SensorKind.POWER_INTEGRATION
    assert sensor.note is not None and "not supported" in sensor.note
    assert "NVML_FI_DEV_POWER_INSTANT" in sensor.source
    assert sensor.read_j() == 0.0
    clock.advance(1.0)
    # 200 W x 1 s = 200 J
    assert sensor.read_j() == pytest.approx(200.0)
    gpu.power_w = 300.0
    clock.advance(1.0)
    # trapezoid: 200 J + (200 W + 300 W) / 2 x 1 s = 450 J
    assert sensor.read_j() == pytest.approx(450.0)


def test_frozen_counter_is_not_trusted() -> None:
    clock = FakeClock()
    gpu = FakeGpu(counter_frozen=True)
    sensor = _sensor(make_fake_pynvml([gpu], clock=clock), clock, probe_s=0.5)
    assert sensor.kind is SensorKind.POWER_INTEGRATION
    assert sensor.note is not None and "did not change during a 0.5 s probe" in sensor.note
    # the probe watched for 0.5 s in 0.02 s steps: 25 reads after the first
    assert gpu.energy_reads == 26


def test_without_instant_field_the_one_second_average_is_integrated_and_said_so() -> None:
    clock = FakeClock()
    gpu = FakeGpu(power_w=150.0, has_counter=False, has_instant_field=False)
    sensor = _sensor(make_fake_pynvml([gpu], clock=clock), clock)
    assert sensor.kind is SensorKind.POWER_INTEGRATION
    assert "nvmlDeviceGetPowerUsage (a 1 s average" in sensor.source
    assert sensor.note is not None and "1 s moving average" in sensor.note
    assert sensor.update_period_s == 1.0
    sensor.read_j()
    clock.advance(4.0)
    # 150 W x 4 s = 600 J
    assert sensor.read_j() == pytest.approx(600.0)


def test_counter_method_refuses_a_gpu_without_counter() -> None:
    clock = FakeClock()
    nvml = make_fake_pynvml([FakeGpu(has_counter=False)], clock=clock)
    with pytest.raises(SensorUnavailable, match="energy counter cannot be used"):
        _sensor(nvml, clock, method="counter")
    assert nvml.init_calls == nvml.shutdown_calls == 1


def test_power_integration_can_be_forced() -> None:
    clock = FakeClock()
    sensor = _sensor(make_fake_pynvml([FakeGpu()], clock=clock), clock, method="power-integration")
    assert sensor.kind is SensorKind.POWER_INTEGRATION
    assert sensor.note is None  # asked for, so nothing to explain


# --- failures in the middle of a run ----------------------------------------------------------


def test_error_mid_run_is_a_sensor_error_and_the_sensor_recovers() -> None:
    clock = FakeClock()
    gpu = FakeGpu(power_w=100.0)
    sensor = _sensor(make_fake_pynvml([gpu], clock=clock), clock)
    start_j = sensor.read_j()
    gpu.failing = True
    with pytest.raises(SensorError, match="NVML_ERROR_GPU_IS_LOST") as info:
        sensor.read_j()
    assert info.value.args[0].startswith("gpu:0: NVML nvmlDeviceGetTotalEnergyConsumption failed")
    gpu.failing = False
    clock.advance(3.0)
    # 100 W x 3 s = 300 J: the counter is cumulative, so nothing is lost
    assert sensor.read_j() - start_j == pytest.approx(300.0)


def test_background_counter_error_fails_reads_until_a_good_sample() -> None:
    clock = FakeClock()
    gpu = FakeGpu(power_w=100.0)
    sensor = _sensor(
        make_fake_pynvml([gpu], clock=clock), clock, background=True, counter_period_s=0.002
    )
    try:
        start_j = sensor.read_j()
        gpu.failing = True
        _wait_for_polls(sensor, 2)
        with pytest.raises(SensorError, match="GPU_IS_LOST"):
            sensor.read_j()
        assert sensor.peek_j() is not None  # the live display still gets the last value
        gpu.failing = False
        clock.advance(2.0)
        _wait_for_polls(sensor, 2)
        # 100 W x 2 s = 200 J
        assert sensor.read_j() - start_j == pytest.approx(200.0)
    finally:
        sensor.close()


def test_background_power_integral_is_brought_forward_to_the_read() -> None:
    clock = FakeClock()
    gpu = FakeGpu(power_w=200.0, has_counter=False)
    sensor = _sensor(
        make_fake_pynvml([gpu], clock=clock), clock, background=True, power_period_s=60.0
    )
    try:
        assert sensor.kind is SensorKind.POWER_INTEGRATION
        first_j = sensor.read_j()
        clock.advance(0.5)
        # No sample since the first (the next is 60 s away), but the read extends the integral
        # at the last sample's power: 200 W x 0.5 s = 100 J after the first read.
        assert sensor.read_j() == pytest.approx(first_j + 100.0)
        gpu.power_w = 0.0
        sensor.poll()  # trapezoid over those 0.5 s: (200 + 0) / 2 W x 0.5 s = 50 J < 100 J
        # held at the earlier read: a meter would call a decrease a sensor fault
        assert sensor.read_j() == pytest.approx(first_j + 100.0)
        clock.advance(1.0)
        # at 0 W the integral stays at 50 J, below the floor: still held
        assert sensor.read_j() == pytest.approx(first_j + 100.0)
    finally:
        sensor.close()


def test_background_power_gap_fails_exactly_the_next_read() -> None:
    clock = FakeClock()
    gpu = FakeGpu(power_w=100.0, has_counter=False)
    sensor = _sensor(
        make_fake_pynvml([gpu], clock=clock), clock, background=True, power_period_s=0.002
    )
    try:
        gpu.failing = True
        _wait_for_polls(sensor, 2)
        gpu.failing = False
        _wait_for_polls(sensor, 2)
        with pytest.raises(SensorError, match="a power sample failed since the previous read"):
            sensor.read_j()
        sensor.read_j()  # reported once; the integral goes on
    finally:
        sensor.close()


# --- MIG --------------------------------------------------------------------------------------


def test_mig_entry_in_cuda_visible_devices_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-12345678-aaaa-bbbb-cccc-000000000000")
    nvml = make_fake_pynvml([FakeGpu()], clock=clock)
    with pytest.raises(SensorUnavailable, match="is a MIG instance") as info:
        _sensor(nvml, clock)
    assert "whole GPU" in info.value.reason and "-mig 0" in info.value.fix
    assert nvml.init_calls == nvml.shutdown_calls == 1


def test_mig_uuid_from_torch_is_refused() -> None:
    clock = FakeClock()
    mig = FakeGpu(uuid="MIG-12345678-aaaa-bbbb-cccc-000000000000")
    nvml = make_fake_pynvml([FakeGpu(), mig], clock=clock)
    # torch reports the bare UUID; NVML knows it with its MIG- prefix
    identity = GpuIdentity(uuid="12345678-aaaa-bbbb-cccc-000000000000")
    with pytest.raises(SensorUnavailable, match="is a MIG instance"):
        _sensor(nvml, clock, identity=identity)


def test_gpu_in_mig_mode_is_refused() -> None:
    clock = FakeClock()
    nvml = make_fake_pynvml([FakeGpu(mig_mode=1)], clock=clock)
    with pytest.raises(SensorUnavailable, match="MIG"):
        _sensor(nvml, clock)


def test_gpu_with_mig_pending_after_a_reset_is_still_measured() -> None:
    # NVML gives [current, pending]: MIG is switched on for the next reset, not yet in force
    clock = FakeClock()
    sensor = _sensor(make_fake_pynvml([FakeGpu(mig_mode=0, mig_pending=1)], clock=clock), clock)
    assert sensor.kind is SensorKind.COUNTER


def test_gpu_without_mig_support_is_accepted() -> None:
    clock = FakeClock()
    sensor = _sensor(make_fake_pynvml([FakeGpu(mig_mode=None)], clock=clock), clock)
    assert sensor.kind is SensorKind.COUNTER


# --- device mapping ---------------------------------------------------------------------------


def test_cuda_visible_devices_remaps_by_index(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    nvml = make_fake_pynvml(_three_gpus(), clock=clock)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    assert _sensor(nvml, clock, 0).gpu_uuid == UUIDS[2]
    assert _sensor(nvml, clock, 1).gpu_uuid == UUIDS[0]
    with pytest.raises(SensorUnavailable, match="makes 2 device"):
        _sensor(nvml, clock, 2)


def test_cuda_visible_devices_remaps_by_uuid_and_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    nvml = make_fake_pynvml(_three_gpus(), clock=clock)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{UUIDS[1]},GPU-cccc")
    assert _sensor(nvml, clock, 0).gpu_uuid == UUIDS[1]
    assert _sensor(nvml, clock, 1).gpu_uuid == UUIDS[2]  # a unique prefix, as CUDA allows
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-")
    with pytest.raises(SensorUnavailable, match="matches 3 of the 3 GPUs"):
        _sensor(nvml, clock, 0)


def test_injected_identity_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    nvml = make_fake_pynvml(_three_gpus(), clock=clock)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    by_uuid = _sensor(nvml, clock, identity=GpuIdentity(uuid=UUIDS[1].removeprefix("GPU-")))
    assert by_uuid.gpu_uuid == UUIDS[1]
    by_bus = _sensor(nvml, clock, identity=GpuIdentity(pci_bus_id="00000000:19:00.0"))
    assert by_bus.gpu_uuid == UUIDS[2]  # 0x17 + 2 = 0x19
    with pytest.raises(SensorUnavailable, match="no GPU with the UUID"):
        _sensor(nvml, clock, identity=GpuIdentity(uuid="ffffffff-0000-0000-0000-000000000000"))


def test_parse_visible_devices_follows_cuda() -> None:
    assert parse_visible_devices(None) is None
    assert parse_visible_devices("") == []
    assert parse_visible_devices("0,2") == [0, 2]
    assert parse_visible_devices(" 1gpu , 3") == [1, 3]  # a leading integer, like strtoul
    assert parse_visible_devices("0,-1,2") == [0]  # CUDA stops at the first bad entry
    assert parse_visible_devices("GPU-ab,MIG-cd") == ["GPU-ab", "MIG-cd"]
    # A repeated entry makes CUDA see no device, not one GPU twice (two sensors, double joules)
    assert parse_visible_devices("0,1,0") == []
    assert parse_visible_devices("GPU-ab,GPU-ab") == []


def test_visible_gpu_count_honours_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    nvml = make_fake_pynvml(_three_gpus(), clock=clock)
    assert visible_gpu_count(nvml) == 3
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert visible_gpu_count(nvml) == 1
    assert nvml.init_calls == nvml.shutdown_calls == 2


def test_visible_gpu_count_stops_at_the_first_index_that_names_no_gpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    nvml = make_fake_pynvml(_three_gpus(), clock=clock)
    # 3 GPUs: CUDA keeps 2 and 0 and stops at 7, so 2 devices (not min(3, 4) = 3)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0,7,1")
    assert visible_gpu_count(nvml) == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,0")
    assert visible_gpu_count(nvml) == 0


# --- no library, no driver --------------------------------------------------------------------


def test_missing_pynvml_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_to_energy.sensors import nvml as nvml_mod

    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` fail
    monkeypatch.setattr(nvml_mod, "nvidia_gpu_present", lambda: True)
    with pytest.raises(SensorUnavailable) as info:
        NvmlSensor(0)
    assert info.value.fix == "pip install 'lightning-to-energy[nvidia]'"
    assert "nvidia-ml-py" in info.value.reason


def test_missing_pynvml_on_a_machine_without_an_nvidia_gpu_says_so_without_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lightning_to_energy.sensors import nvml as nvml_mod

    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setattr(nvml_mod, "nvidia_gpu_present", lambda: False)
    with pytest.raises(SensorUnavailable) as info:
        NvmlSensor(0)
    # nothing to install: the machine has no NVIDIA GPU
    assert (info.value.fix, "no NVIDIA GPU found" in info.value.reason) == ("", True)
    assert "pip install" not in str(info.value)


def test_nvidia_gpu_present_reads_the_driver_entry_or_a_device_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from lightning_to_energy.sensors.nvml import nvidia_gpu_present

    monkeypatch.setattr(shutil, "which", lambda name: None)  # no nvidia-smi either
    proc, dev = tmp_path / "proc-nvidia", tmp_path / "dev"
    dev.mkdir()
    assert not nvidia_gpu_present(str(proc), str(dev))
    (dev / "nvidia0").touch()
    assert nvidia_gpu_present(str(proc), str(dev))
    (dev / "nvidia0").unlink()
    proc.mkdir()
    assert nvidia_gpu_present(str(proc), str(dev))


def test_missing_driver_library_is_explained() -> None:
    clock = FakeClock()
    nvml = make_fake_pynvml([], clock=clock, library_missing=True)
    with pytest.raises(SensorUnavailable, match=r"libnvidia-ml\.so\.1"):
        _sensor(nvml, clock)


def test_driver_version_mismatch_says_reboot() -> None:
    # After a driver upgrade without a reboot, nvmlInit fails with LIB_RM_VERSION_MISMATCH.
    clock = FakeClock()
    nvml = make_fake_pynvml(
        [FakeGpu()], clock=clock, init_error="NVML_ERROR_LIB_RM_VERSION_MISMATCH"
    )
    with pytest.raises(SensorUnavailable, match="different versions") as info:
        _sensor(nvml, clock)
    assert "reboot" in info.value.fix


def test_a_counter_going_backwards_in_the_probe_is_not_trusted() -> None:
    clock = FakeClock()
    gpu = FakeGpu(power_w=-50.0)  # the fake counter then falls: 50 W x each second
    sensor = _sensor(make_fake_pynvml([gpu], clock=clock), clock)
    assert sensor.kind is SensorKind.POWER_INTEGRATION
    # first read 5_000_000 mJ, then 0.02 s later 5_000_000 - 50 W x 0.02 s x 1e3 mJ/J
    # = 5_000_000 - 1_000 = 4_999_000 mJ
    assert sensor.note is not None
    assert "went backwards (5000000 -> 4999000 mJ)" in sensor.note


def test_power_integration_adds_nothing_when_the_clock_steps_back() -> None:
    clock = FakeClock(10.0)
    gpu = FakeGpu(power_w=200.0, has_counter=False)
    sensor = _sensor(make_fake_pynvml([gpu], clock=clock), clock)
    clock.advance(1.0)
    # 200 W x 1 s = 200 J
    assert sensor.read_j() == pytest.approx(200.0)
    clock.advance(-0.5)  # a clock that stepped back: no negative interval is integrated
    assert sensor.read_j() == pytest.approx(200.0)


def test_instant_power_is_read_from_the_member_its_value_type_names() -> None:
    clock = FakeClock()
    gpu = FakeGpu(
        power_w=200.0, has_counter=False, value_type=3
    )  # NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
    sensor = _sensor(make_fake_pynvml([gpu], clock=clock), clock)
    assert "NVML_FI_DEV_POWER_INSTANT" in sensor.source
    clock.advance(1.0)
    # ullVal 200_000 mW = 200 W; 200 W x 1 s = 200 J
    assert sensor.read_j() == pytest.approx(200.0)


def test_counter_update_period_is_the_counters_not_the_sampling_period() -> None:
    clock = FakeClock()
    sensor = _sensor(make_fake_pynvml([FakeGpu()], clock=clock), clock, counter_period_s=0.5)
    # the counter itself changes about every 0.1 s, however often it is read
    assert sensor.update_period_s == 0.1


def test_a_slow_counter_read_is_timed_at_its_midpoint() -> None:
    clock = FakeClock()
    gpu = FakeGpu(power_w=200.0, read_s=0.004)  # each counter read takes 4 ms of the clock
    nvml = make_fake_pynvml([gpu], clock=clock, advance=clock.advance)
    sensor = _sensor(nvml, clock, background=True, counter_period_s=60.0)
    try:
        clock.advance(1.0)
        # The sample holds the energy at the read's midpoint; brought forward from there with
        # 200 W it is the energy now: 5_000_000 mJ / 1e3 + 200 W x t = 5000 J + 200 x t.
        # Timed at the call's start instead it would be 200 W x 2 ms = 0.4 J too high.
        assert sensor.read_j() == pytest.approx(5000.0 + 200.0 * clock(), abs=0.01)
    finally:
        sensor.close()
