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
