"""RAPL through a fake powercap tree: zone choice, wraparound, background reads, permissions."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from fakes.clock import FakeClock
from fakes.powercap import FakePowercap
from lightning_to_energy.sensors import SensorError, SensorKind, SensorUnavailable, rapl
from lightning_to_energy.sensors.rapl import (
    PEEK_MAX_AGE_S,
    RaplSensor,
    find_rapl_zones,
    rapl_sensors,
)


def _wait_for_polls(sensor: RaplSensor, count: int, timeout_s: float = 5.0) -> None:
    """Wait until the background reader has finished ``count`` more polls.

    Two finished polls after a write guarantee one poll that started after it.
    """
    target = sensor.background_polls + count
    deadline = time.monotonic() + timeout_s
    while sensor.background_polls < target:
        assert time.monotonic() < deadline, "the background reader stopped polling"
        time.sleep(0.001)


def _one_zone_tree(tmp_path: Path, max_uj: int, start_uj: int) -> FakePowercap:
    # NB: sensors over a 1 J range take a frozen FakeClock: at the 1 kW ceiling such a range
    # wraps every 1 ms, so real gaps between reads would be (rightly) called missed wraps.
    tree = FakePowercap(tmp_path)
    tree.add_zone("intel-rapl:0", "package-0", energy_uj=start_uj, max_energy_range_uj=max_uj)
    return tree


def test_server_tree_gives_package_and_dram_per_socket(tmp_path: Path) -> None:
    tree = FakePowercap.intel_server(tmp_path, sockets=2)
    found = find_rapl_zones(tree.root)
    assert [z.domain for z in found.zones] == ["cpu:package-0", "dram:0", "cpu:package-1", "dram:1"]
    assert [z.name for z in found.zones] == ["package-0", "dram", "package-1", "dram"]
    assert not any("dram" in note for note in found.notes)


def test_nested_zones_and_mmio_duplicates_are_not_double_counted(tmp_path: Path) -> None:
    tree = FakePowercap.intel_client(tmp_path)
    found = find_rapl_zones(tree.root)
    # core/uncore sit inside the package, psys contains it, mmio:0 repeats it: package only.
    assert [z.domain for z in found.zones] == ["cpu:package-0"]
    assert found.zones[0].path.name == "intel-rapl:0"  # the MSR zone wins over MMIO
    notes = " | ".join(found.notes)
    assert "psys" in notes
    assert "intel-rapl:0:0 (core), intel-rapl:0:1 (uncore) skipped" in notes
    assert "intel-rapl-mmio:0 (package-0) skipped: the same domain as intel-rapl:0" in notes
    assert "no dram zone" in notes


def test_mmio_zone_is_used_when_it_is_the_only_package_zone(tmp_path: Path) -> None:
    tree = FakePowercap(tmp_path)
    tree.add_zone("intel-rapl-mmio:0", "package-0")
    found = find_rapl_zones(tree.root)
    assert [(z.domain, z.path.name) for z in found.zones] == [
        ("cpu:package-0", "intel-rapl-mmio:0")
    ]


def test_amd_tree_has_package_but_no_dram(tmp_path: Path) -> None:
    tree = FakePowercap.amd(tmp_path, sockets=2)
    found = find_rapl_zones(tree.root)
    assert [z.domain for z in found.zones] == ["cpu:package-0", "cpu:package-1"]
    assert any("DRAM energy not measured" in note for note in found.notes)


def test_env_var_moves_the_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = FakePowercap.intel_server(tmp_path, sockets=1)
    monkeypatch.setenv(rapl.POWERCAP_ROOT_ENV, str(tree.root))
    assert [z.domain for z in find_rapl_zones().zones] == ["cpu:package-0", "dram:0"]


def test_missing_tree_says_why_and_how_to_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the system's own tree missing (not Linux, a VM): the machine's case, with its fixes
    monkeypatch.delenv(rapl.POWERCAP_ROOT_ENV, raising=False)
    monkeypatch.setattr(rapl, "DEFAULT_POWERCAP_ROOT", tmp_path / "absent")
    with pytest.raises(SensorUnavailable) as info:
        find_rapl_zones()
    assert info.value.reason.startswith("CPU energy not measured: no powercap tree at")
    assert "modprobe intel_rapl_msr" in info.value.fix


def test_a_mistyped_root_is_named_as_a_path_that_does_not_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a root the user gave: a typo to fix, not "not Linux, or a VM"
    with pytest.raises(SensorUnavailable) as info:
        find_rapl_zones(tmp_path / "absent")
    assert info.value.reason == (
        f"CPU energy not measured: the powercap root {tmp_path / 'absent'}, given with "
        "--powercap-root (powercap_root=), does not exist."
    )
    assert info.value.fix == (
        "check the path; the system's tree is /sys/class/powercap, used when no root is given."
    )
    afile = tmp_path / "file"
    afile.write_text("")
    monkeypatch.setenv(rapl.POWERCAP_ROOT_ENV, str(afile))
    with pytest.raises(SensorUnavailable) as info:
        find_rapl_zones()
    assert info.value.reason.endswith(f"{afile}, set by $LTE_POWERCAP_ROOT, is not a folder.")
    assert "modprobe" not in info.value.fix and "not Linux" not in info.value.reason


def test_tree_without_package_zone_is_unavailable(tmp_path: Path) -> None:
    tree = FakePowercap(tmp_path)
    tree.add_zone("intel-rapl:0", "psys")
    with pytest.raises(SensorUnavailable, match="no RAPL package zone"):
        find_rapl_zones(tree.root)


def test_permission_denied_gives_the_reason_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = FakePowercap.intel_server(tmp_path, sockets=1)
    tree.deny("intel-rapl:0")
    tree.deny("intel-rapl:0:0")
    tree.enforce_permissions(monkeypatch)
    with pytest.raises(SensorUnavailable) as info:
        find_rapl_zones(tree.root)
    assert str(info.value).startswith("CPU energy not measured: permission denied")
    assert "CVE-2020-8694" in info.value.reason
    assert "udev rule" in info.value.fix and "chmod" in info.value.fix


def test_partly_denied_tree_keeps_the_readable_zones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = FakePowercap.intel_server(tmp_path, sockets=1)
    tree.deny("intel-rapl:0:0")
    tree.enforce_permissions(monkeypatch)
    found = find_rapl_zones(tree.root)
    assert [z.domain for z in found.zones] == ["cpu:package-0"]
    assert any("intel-rapl:0:0: permission denied" in note for note in found.notes)


def test_reads_are_joules_and_a_wrap_is_undone(tmp_path: Path) -> None:
    tree = _one_zone_tree(tmp_path, max_uj=1_000_000, start_uj=900_000)
    (zone,) = find_rapl_zones(tree.root).zones
    sensor = RaplSensor(zone, background=False, clock=FakeClock())
    assert sensor.kind is SensorKind.COUNTER and sensor.host_wide
    assert sensor.read_j() == 0.0
    tree.set_energy("intel-rapl:0", 950_000)
    # (950_000 - 900_000) µJ = 0.05 J
    assert sensor.read_j() == pytest.approx(0.05)
    tree.set_energy("intel-rapl:0", 100_000)
    # 0.05 J + (100_000 - 950_000) mod 1_000_000 µJ = 0.05 + 0.15 = 0.2 J
    assert sensor.read_j() == pytest.approx(0.2)


def test_two_wraps_in_one_gap_need_the_background_reads(tmp_path: Path) -> None:
    # True consumption 0.8 + 0.8 + 0.7 = 2.3 J on a counter that wraps every 1 J.
    raw_steps = [700_000, 500_000, 200_000]  # (900_000 + 800_000) mod 1e6 = 700_000, ...
    tree = _one_zone_tree(tmp_path, max_uj=1_000_000, start_uj=900_000)
    (zone,) = find_rapl_zones(tree.root).zones

    # Without intermediate reads only one wrap can be seen:
    # (200_000 - 900_000) mod 1_000_000 µJ = 300_000 µJ = 0.3 J instead of 2.3 J.
    lone = RaplSensor(zone, background=False, clock=FakeClock())
    tree.set_energy("intel-rapl:0", raw_steps[-1])
    assert lone.read_j() == pytest.approx(0.3)

    # With a read inside every wrap period (what the background reader does), nothing is lost.
    tree.set_energy("intel-rapl:0", 900_000)
    polled = RaplSensor(zone, background=False, clock=FakeClock())
    for raw in raw_steps:
        tree.set_energy("intel-rapl:0", raw)
        polled.poll()
    # 0.8 + 0.8 + 0.7 = 2.3 J
    assert polled.read_j() == pytest.approx(2.3)


def test_background_thread_catches_wraps_while_the_caller_sleeps(tmp_path: Path) -> None:
    tree = _one_zone_tree(tmp_path, max_uj=1_000_000, start_uj=900_000)
    (zone,) = find_rapl_zones(tree.root).zones
    sensor = RaplSensor(zone, poll_period_s=0.002, clock=FakeClock())
    try:
        for raw in (700_000, 500_000, 200_000):
            tree.set_energy("intel-rapl:0", raw)
            _wait_for_polls(sensor, 2)
        # 0.8 + 0.8 + 0.7 = 2.3 J, although read_j() was never called in between
        assert sensor.read_j() == pytest.approx(2.3)
    finally:
        sensor.close()


def test_background_period_follows_the_wrap_time(tmp_path: Path) -> None:
    tree = FakePowercap(tmp_path)
    tree.add_zone("intel-rapl:0", "package-0", max_energy_range_uj=262_143_328_850)
    tree.add_zone("intel-rapl:0:0", "dram", max_energy_range_uj=20_000_000)
    big, small = find_rapl_zones(tree.root).zones
    slow = RaplSensor(big, background=False, max_power_w=1000.0)
    # 262_143_328_850 µJ / (1000 W x 1e6) = 262.14 s; / 4 = 65.5 s; capped at 10 s
    assert slow.wrap_time_s == pytest.approx(262.14332885)
    assert slow.poll_period_s == 10.0
    fast = RaplSensor(small, background=False, max_power_w=1000.0)
    # 20_000_000 µJ / (1000 W x 1e6) = 0.02 s; / 4 = 0.005 s
    assert fast.poll_period_s == pytest.approx(0.005)


def test_failed_background_read_fails_the_next_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = _one_zone_tree(tmp_path, max_uj=1_000_000, start_uj=0)
    (zone,) = find_rapl_zones(tree.root).zones
    sensor = RaplSensor(zone, poll_period_s=0.002, clock=FakeClock())
    real_read = rapl._read_file
    try:

        def broken(path: Path) -> str:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(rapl, "_read_file", broken)
        _wait_for_polls(sensor, 2)
        monkeypatch.setattr(rapl, "_read_file", real_read)
        tree.set_energy("intel-rapl:0", 400_000)
        with pytest.raises(SensorError, match="background RAPL read failed"):
            sensor.read_j()
        # 400_000 µJ = 0.4 J, and the failure is reported only once
        assert sensor.read_j() == pytest.approx(0.4)
    finally:
        sensor.close()


def test_peek_rereads_the_file_at_most_every_peek_max_age(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A live display peeks on every step: each peek must not cost a sysfs read (and an MSR
    # read on another CPU); read_j() at window edges always reads.
    tree = _one_zone_tree(tmp_path, max_uj=1_000_000_000, start_uj=0)
    (zone,) = find_rapl_zones(tree.root).zones
    reads = []
    real_read = rapl._read_file

    def counting(path: Path) -> str:
        reads.append(path.name)
        return real_read(path)

    monkeypatch.setattr(rapl, "_read_file", counting)
    clock = FakeClock()
    sensor = RaplSensor(zone, background=False, clock=clock)
    assert reads == ["energy_uj"]  # the first reading, at creation
    tree.set_energy("intel-rapl:0", 5_000_000)
    for _ in range(100):  # 100 steps inside one PEEK_MAX_AGE_S: the creation reading serves
        assert sensor.peek_j() == 0.0
    assert len(reads) == 1
    clock.advance(PEEK_MAX_AGE_S)
    # 5_000_000 µJ = 5 J, read once for the next 0.1 s of peeks
    assert sensor.peek_j() == pytest.approx(5.0)
    assert sensor.peek_j() == pytest.approx(5.0)
    assert len(reads) == 2
    tree.set_energy("intel-rapl:0", 7_000_000)
    # read_j() reads at once: 7_000_000 µJ = 7 J; a peek right after shares that reading
    assert sensor.read_j() == pytest.approx(7.0)
    assert sensor.peek_j() == pytest.approx(7.0)
    assert len(reads) == 3


def test_rapl_sensors_builds_one_sensor_per_zone_and_closes(tmp_path: Path) -> None:
    tree = FakePowercap.intel_server(tmp_path, sockets=2)
    sensors, notes = rapl_sensors(tree.root)
    try:
        assert [s.domain for s in sensors] == ["cpu:package-0", "dram:0", "cpu:package-1", "dram:1"]
        assert notes == ()
        assert len(_rapl_threads()) == 4  # one background reader per zone
    finally:
        for s in sensors:
            s.close()
    assert _rapl_threads() == []


def _rapl_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("lte-rapl-")]


def test_a_failing_peek_gives_the_last_total_and_is_not_retried_every_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = _one_zone_tree(tmp_path, max_uj=1_000_000_000, start_uj=0)
    (zone,) = find_rapl_zones(tree.root).zones
    clock = FakeClock()
    sensor = RaplSensor(zone, background=False, clock=clock)
    tree.set_energy("intel-rapl:0", 3_000_000)
    assert sensor.read_j() == pytest.approx(3.0)  # 3_000_000 µJ = 3 J
    attempts = []

    def broken(path: Path) -> str:
        attempts.append(path.name)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(rapl, "_read_file", broken)
    clock.advance(PEEK_MAX_AGE_S)
    assert sensor.peek_j() == pytest.approx(3.0)  # the failed read: the last known total
    for _ in range(50):  # the following steps within PEEK_MAX_AGE_S do not retry the file
        assert sensor.peek_j() == pytest.approx(3.0)
    assert attempts == ["energy_uj"]


def test_dram_takes_the_number_of_its_package_not_of_its_zone(tmp_path: Path) -> None:
    # Zone numbers follow enumeration order, package ids the topology: they need not agree.
    tree = FakePowercap(tmp_path)
    tree.add_zone("intel-rapl:0", "package-1")
    tree.add_zone("intel-rapl:0:0", "dram")
    tree.add_zone("intel-rapl:1", "package-0")
    tree.add_zone("intel-rapl:1:0", "dram")
    found = find_rapl_zones(tree.root)
    # each dram is paired with the package it sits in: dram:1 under package-1, dram:0 under 0
    assert [(z.domain, z.path.name) for z in found.zones] == [
        ("cpu:package-1", "intel-rapl:0"),
        ("dram:1", "intel-rapl:0:0"),
        ("cpu:package-0", "intel-rapl:1"),
        ("dram:0", "intel-rapl:1:0"),
    ]


def test_unusable_zones_are_left_out_with_a_note(tmp_path: Path) -> None:
    tree = FakePowercap(tmp_path)
    tree.add_zone("intel-rapl:0", "package-0")
    tree.add_zone("intel-rapl:1", "package-1", max_energy_range_uj=0)  # a modulus of 0
    found = find_rapl_zones(tree.root)
    assert [z.domain for z in found.zones] == ["cpu:package-0"]
    assert (
        "left out, unreadable: intel-rapl:1: max_energy_range_uj is 0, expected > 0" in found.notes
    )
    tree.set_energy("intel-rapl:0", "garbage")  # type: ignore[arg-type]
    with pytest.raises(SensorUnavailable, match="no RAPL zone could be read") as info:
        find_rapl_zones(tree.root)
    assert "expected an integer; found 'garbage'" in str(info.value)
    assert "dmesg" in info.value.fix


def test_rapl_sensors_closes_the_opened_sensors_when_a_later_one_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = FakePowercap.intel_server(tmp_path, sockets=2)
    real_read = rapl._read_file
    reads = {"n": 0}

    def second_package_fails_after_the_scan(path: Path) -> str:
        if path.parent.name == "intel-rapl:1" and path.name == "energy_uj":
            reads["n"] += 1
            if reads["n"] > 1:  # the scan's read passes; the sensor's first read fails
                raise OSError(5, "Input/output error")
        return real_read(path)

    monkeypatch.setattr(rapl, "_read_file", second_package_fails_after_the_scan)
    with pytest.raises(SensorError, match="Input/output error"):
        rapl_sensors(tree.root)
    # package-0 and dram:0 had started their readers: both are stopped again
    _wait_until_no_rapl_threads()


def _wait_until_no_rapl_threads(timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while _rapl_threads():
        assert time.monotonic() < deadline, f"still running: {_rapl_threads()}"
        time.sleep(0.001)
