"""An explicit calibration of other hardware is never rewritten under this machine's identity
(issue 13, failure 7)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import torch
from torch import nn

from lightning_to_energy import EnergyTracker
from lightning_to_energy.calibration import (
    Calibration,
    CalibrationStore,
    CalibrationWarning,
    HardwareInfo,
    hardware_fingerprint,
)
from lightning_to_energy.sensors.fake import FakeSensor
from test_calibration import H100, RUN_A, RUN_B, calib

XEON = HardwareInfo((), None, "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", 64)


def _h100_file(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "h100.json"
    assert CalibrationStore.from_path(path).save(calib(RUN_A, "h100-run")) == path
    path.chmod(0o644)
    return path, path.read_bytes()


def test_saving_another_machines_run_into_an_explicit_file_saves_beside_it(
    tmp_path: Path,
) -> None:
    path, before = _h100_file(tmp_path)
    xeon_run = Calibration.from_model(RUN_B, XEON, run_id="xeon-run")
    store = CalibrationStore.from_path(path)
    with pytest.warns(CalibrationWarning, match="saved beside it"):
        written = store.save(xeon_run)
    beside = tmp_path / f"h100.{hardware_fingerprint(XEON)}.json"
    assert written == beside
    # the H100 file: the same bytes and mode; no Xeon window in it
    assert path.read_bytes() == before
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    saved = CalibrationStore.from_path(beside).load(hardware_fingerprint(XEON))
    assert saved is not None and saved.fingerprint == hardware_fingerprint(XEON)
    assert {w.run_id for w in saved.windows} == {"xeon-run"}
    # A second Xeon run merges into the file beside: 2 runs there, the H100 file untouched.
    with pytest.warns(CalibrationWarning, match="saved beside it"):
        store.save(Calibration.from_model(RUN_B, XEON, run_id="xeon-run-2"))
    again = CalibrationStore.from_path(beside).load(hardware_fingerprint(XEON))
    assert again is not None and again.n_runs == 2
    assert path.read_bytes() == before


def test_a_tracker_given_another_machines_calibration_leaves_it_unchanged(tmp_path: Path) -> None:
    path, before = _h100_file(tmp_path)
    here = HardwareInfo.detect()
    assert hardware_fingerprint(here) != hardware_fingerprint(H100)  # no H100 in a test run
    t = [0.0]
    sensor = FakeSensor("fake:0", power_w=30.0, clock=lambda: t[0])
    model = nn.Linear(4, 2)
    tracker = EnergyTracker(
        model, sensors=[sensor], window_s=1.0, calibration=path, clock=lambda: t[0]
    )
    # warned twice: made on another machine (used as asked); saved beside it
    with pytest.warns(CalibrationWarning):
        tracker.start()
        for _ in range(8):
            with tracker.step(torch.randn(2, 4)):
                model(torch.randn(2, 4)).sum().backward()
                t[0] += 0.5
        tracker.close()
    assert tracker.model.n_updates > 0  # windows were fitted, so a calibration was saved
    assert path.read_bytes() == before
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert tracker.calibration_path == tmp_path / f"h100.{hardware_fingerprint(here)}.json"
    assert any("saved beside it" in w for w in tracker.build_report().warnings)


def test_the_file_saved_beside_keeps_the_given_files_physical_model(tmp_path: Path) -> None:
    from dataclasses import replace

    from lightning_to_energy.calibration import BUILTIN_DIR

    # a `calibrate --out` file of an H100 machine (its physical model), used on this Xeon
    shipped = Calibration.read(BUILTIN_DIR / "h100-sxm.json")
    path = tmp_path / "h100.json"
    assert CalibrationStore.from_path(path).save(replace(shipped, runs=(), n_runs=0)) == path
    before = path.read_bytes()
    store = CalibrationStore.from_path(path)
    with pytest.warns(CalibrationWarning, match="saved beside it"):
        written = store.save(Calibration.from_model(RUN_B, XEON, run_id="xeon-run"))
    assert written == tmp_path / f"h100.{hardware_fingerprint(XEON)}.json"
    assert path.read_bytes() == before  # the given file untouched
    saved = CalibrationStore.from_path(written).load(hardware_fingerprint(XEON))
    # the file the warning says to pass next holds this run's windows and the physical model
    assert saved is not None and {w.run_id for w in saved.windows} == {"xeon-run"}
    assert saved.physical == shipped.physical
