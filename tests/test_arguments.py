"""Every argument of TOEnergy and EnergyTracker is checked at construction; sensor names are
parsed, never ignored (issue 13, failure 5)."""

from __future__ import annotations

import importlib
import time
from typing import Any

import pytest
from torch import nn

from lightning_to_energy import EnergyTracker, TOEnergy
from lightning_to_energy.sensors.base import SensorError
from lightning_to_energy.sensors.fake import FakeSensor
from lightning_to_energy.tracking import tracker as tracker_module


def test_backend_names_are_opened_not_ignored() -> None:
    # "estimate" alone (the CPU-time estimate needs no hardware): one estimate sensor
    tracker = EnergyTracker(nn.Linear(2, 2), sensors="estimate", calibration=None)
    tracker.start()
    assert [s.kind.value for s in tracker.sensors] == ["estimate"]
    tracker.close()
    # the same as a list
    tracker = EnergyTracker(nn.Linear(2, 2), sensors=["estimate"], calibration=None)
    tracker.start()
    assert len(tracker.sensors) == 1
    tracker.close()


def test_a_named_backend_that_cannot_work_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    # no NVIDIA library here (a missing pynvml is what this VM has; forced for any machine)
    discover_module = importlib.import_module("lightning_to_energy.sensors.discover")

    def no_nvml() -> Any:
        raise SensorError("GPU energy not measured: pynvml is not installed")

    monkeypatch.setattr(discover_module, "load_pynvml", no_nvml)
    tracker = EnergyTracker(nn.Linear(2, 2), sensors="nvml,estimate", calibration=None)
    with pytest.raises(SensorError, match="sensor backend 'nvml' was requested but cannot work"):
        tracker.start()


@pytest.mark.parametrize("spec", ["bogus", "nvml,bogus", ["rapl", "bogus"], "", []])
def test_unknown_backend_names_are_refused_listing_the_valid_ones(spec: Any) -> None:
    for build in (
        lambda: EnergyTracker(sensors=spec),
        lambda: TOEnergy(sensors=spec),
    ):
        with pytest.raises(ValueError, match="valid: 'nvml', 'rapl', 'estimate', 'fake'"):
            build()


def test_sensor_forms_parse() -> None:
    from lightning_to_energy.sensors.spec import parse_sensors  # new in issue 13

    sensor = FakeSensor("fake:0", power_w=1.0)
    assert parse_sensors("auto").auto
    assert parse_sensors("nvml, estimate").backends == ("nvml", "estimate")
    assert parse_sensors(["rapl"]).backends == ("rapl",)
    assert parse_sensors([sensor]).sensors == (sensor,)
    assert not parse_sensors(None).discovers
    factory = parse_sensors(lambda rank, device: [sensor], factory_ok=True).factory
    assert factory is not None and list(factory(0, None)) == [sensor]
    with pytest.raises(ValueError, match="found 'rapl' \\(str\\) in \\[<"):
        parse_sensors([sensor, "rapl"])  # names and objects mixed
    with pytest.raises(ValueError, match="found 123 \\(int\\)"):
        parse_sensors(123)
    with pytest.raises(ValueError, match="sensors: expected"):
        parse_sensors(lambda rank, device: [])  # a plain tracker takes no factory


COMMON_BAD: list[tuple[str, Any]] = [
    ("window_s", "2"),
    ("window_s", True),
    ("window_s", float("nan")),
    ("features", "duration_s"),
    ("features", ("duration_s", "joules")),
    ("calibration", 3),
    ("cost_model", 42),
    ("recheck_every", True),
    ("recheck_every", 0),
    ("max_windows", 1.5),
    ("clock", "x"),
    ("sensors", 123),
]


@pytest.mark.parametrize(("name", "value"), COMMON_BAD)
def test_callback_arguments_are_checked_at_construction(name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=name if name != "cost_model" else "cost"):
        TOEnergy(**{name: value})


@pytest.mark.parametrize(
    ("name", "value"),
    [("report_dir", 5), ("print_report", "yes"), ("plot", None), ("sensors", ["rapl", 1])],
)
def test_callback_only_arguments_are_checked_at_construction(name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=name):
        TOEnergy(**{name: value})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        *COMMON_BAD,
        ("module", "model"),
        ("optimizer", 5),
        ("sync", 3),
        ("device", "gpu-please"),
        ("device", 1.5),
        ("local_rank", -1),
        ("rank", "0"),
        ("total_steps", -5),
    ],
)
def test_tracker_arguments_are_checked_at_construction(name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=name if name != "cost_model" else "cost"):
        EnergyTracker(**{name: value})


def test_toenergy_validates_without_building_a_tracker_and_keeps_no_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[Any] = []
    original = tracker_module.EnergyTracker.__init__

    def counting_init(self: Any, *args: Any, **kwargs: Any) -> None:
        built.append(kwargs)
        original(self, *args, **kwargs)

    monkeypatch.setattr(tracker_module.EnergyTracker, "__init__", counting_init)
    energy = TOEnergy(sensors=["estimate"], clock=time.monotonic, calibration=None)
    assert built == []  # 0 throwaway trackers
    assert not hasattr(energy, "_clock")  # the clock is the tracker's, not the callback's
