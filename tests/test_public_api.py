"""The public surface never drifts by accident."""

from __future__ import annotations

from pathlib import Path

import lightning_to_energy


def test_all_is_sorted_and_pinned() -> None:
    # Sorted the way ruff's RUF022 keeps it: constants, then classes, then functions.
    assert lightning_to_energy.__all__ == [
        "FEATURES",
        "AluOp",
        "Calibration",
        "CalibrationStore",
        "CostModel",
        "EnergyReport",
        "EnergyTracker",
        "EnergyWarning",
        "FakeSensor",
        "Measurement",
        "Meter",
        "NumberFormat",
        "OnlineEnergyModel",
        "OpCounter",
        "ReplaySensor",
        "RunPlan",
        "Sensor",
        "SensorError",
        "SensorKind",
        "StepProfile",
        "TOEnergy",
        "Unit",
        "WindowRecord",
        "discover",
        "hardware_fingerprint",
        "load_report",
        "plan_run",
        "profile",
        "render_report",
        "save_report",
    ]
    for name in lightning_to_energy.__all__:
        assert getattr(lightning_to_energy, name) is not None


def test_only_the_nvml_backend_imports_pynvml_and_only_the_report_matplotlib() -> None:
    # torch and Lightning may import either themselves, so check our own sources.
    package = Path(lightning_to_energy.__file__).parent
    owners = {"pynvml": {"sensors/nvml.py"}, "matplotlib": {"reporting/plot.py"}}
    for path in package.rglob("*.py"):
        text = path.read_text()
        rel = path.relative_to(package).as_posix()
        for lib, allowed in owners.items():
            imports = f"import {lib}" in text or f'import_module("{lib}' in text
            if imports:
                assert rel in allowed, f"{rel} imports {lib}; only {sorted(allowed)} may"


def test_every_export_is_resolvable_lazily() -> None:
    from lightning_to_energy import _EXPORTS

    assert sorted(_EXPORTS) == sorted(lightning_to_energy.__all__)


def test_documented_module_paths_still_import_the_objects_of_their_new_homes() -> None:
    # docs/cost-model.md, roofline.md, report.md, sensors.md and regression.md name these paths.
    from lightning_to_energy import cost_model, meter, records, regression, report, roofline
    from lightning_to_energy.calibration import Calibration, CalibrationStore, hardware_fingerprint
    from lightning_to_energy.counting import cost_model as new_cost_model
    from lightning_to_energy.hardware import detect, specs
    from lightning_to_energy.hardware import roofline as new_roofline
    from lightning_to_energy.model import regression as new_regression
    from lightning_to_energy.reporting import codec, console, files
    from lightning_to_energy.reporting import records as new_records
    from lightning_to_energy.sensors import meter as new_meter

    assert cost_model.CostModel is new_cost_model.CostModel
    assert roofline.roofline_s is new_roofline.roofline_s
    assert roofline.detect_hardware is detect.detect_hardware
    assert roofline.register_hardware is specs.register_hardware
    assert records.WindowRecord is new_records.WindowRecord
    assert report.load_report is codec.load_report
    assert report.save_report is files.save_report
    assert report.render_report is console.render_report
    assert meter.Meter is new_meter.Meter
    assert regression.OnlineEnergyModel is new_regression.OnlineEnergyModel
    assert (Calibration, CalibrationStore, hardware_fingerprint) == (
        lightning_to_energy.Calibration,
        lightning_to_energy.CalibrationStore,
        lightning_to_energy.hardware_fingerprint,
    )


def test_the_testing_module_gathers_the_fakes() -> None:
    from lightning_to_energy import testing
    from lightning_to_energy.sensors import fake

    assert testing.FakeSensor is fake.FakeSensor
    assert testing.ReplaySensor is fake.ReplaySensor
