"""The calibration shipped for h100-sxm: where it comes from, and `predict` falling back on it."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import pytest

from lightning_to_energy import cli
from lightning_to_energy.calibration import (
    BUILTIN_DIR,
    Calibration,
    CalibrationStore,
    CalibrationWarning,
    HardwareInfo,
    builtin_calibration,
    builtin_keys,
)
from lightning_to_energy.model import PhysicalModel
from lightning_to_energy.model.regression import OnlineEnergyModel
from paths import SHARED_DATA


def test_the_h100_calibration_ships_with_the_physical_model_and_its_provenance() -> None:
    assert "h100-sxm" in builtin_keys()
    cal = builtin_calibration("h100-sxm")
    assert cal is not None and cal.physical is not None
    model = PhysicalModel.from_dict(cal.physical)
    assert model.target == "h100-sxm"
    assert cal.sensor_kind == "counter"  # NVML's energy counter measured the shared steps
    assert cal.hardware.gpus == ("NVIDIA H100 80GB HBM3",)
    # its own held-out precision is stated, and clears the 70 % bar predict warns below
    assert cal.precision_pct is not None and cal.precision_pct > 70.0
    assert builtin_calibration("no-such-gpu") is None


@pytest.mark.skipif(SHARED_DATA is None, reason="the shared data (../shared/data) is not here")
def test_the_shipped_file_was_fitted_on_the_shared_data_as_they_are() -> None:
    # fit names its run "shared-" + the first 12 hex digits of the data file's SHA-256: a changed
    # data file without `make builtin-calibrations` fails here
    assert SHARED_DATA is not None
    digest = hashlib.sha256(SHARED_DATA.read_bytes()).hexdigest()[:12]
    cal = Calibration.read(BUILTIN_DIR / "h100-sxm.json")
    assert [r.run_id for r in cal.runs] == [f"shared-{digest}"]


def _predict(capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, object]:
    argv = ["predict", "_models:TinyMLP", "--input", "8x16", "--steps", "100", "--json", *extra]
    assert cli.main(argv) == 0
    out: dict[str, object] = json.loads(capsys.readouterr().out)
    return out


def test_predict_for_an_h100_from_a_laptop_uses_the_builtin_calibration(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # the cache is empty (conftest points XDG_CACHE_HOME at a fresh folder)
    builtin = _predict(capsys, "--target", "h100-sxm")
    # passed by hand, the same file plans the H100 from here, as it is meant to: no warning
    # to drop it (a physical model is for its target, from any machine); the output names the
    # hardware it was made on
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)
        given = _predict(capsys, "--calibration", str(BUILTIN_DIR / "h100-sxm.json"))
    assert "NVIDIA H100 80GB HBM3" in str(given["calibration_hardware"])
    assert builtin["model"] == "physical" and builtin["roofline_hardware"] == "h100-sxm"
    # the same plan as passing the shipped file by hand, and the output says where it came from
    assert builtin["energy_j"] == given["energy_j"]
    assert builtin["step_time_s"] == given["step_time_s"]
    notes = builtin["notes"]
    assert isinstance(notes, list) and notes[0].startswith(
        "calibration: the built-in one of h100-sxm"
    )
    assert not any("built-in" in n for n in given["notes"])  # type: ignore[union-attr]


def test_a_target_gpu_beats_this_machines_cached_calibration(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # this machine's own calibration (measured step time, no physical model) is in the cache
    here = HardwareInfo.detect()
    model = OnlineEnergyModel(("duration_s", "tos_vector"))
    for k in range(1, 4):
        model.update({"duration_s": float(k), "tos_vector": 1e9 * k}, 20.0 * k)
    CalibrationStore().save(Calibration.from_model(model, here, sensor_kind="counter"))
    assert CalibrationStore().load() is not None
    # --target h100-sxm plans the H100 from the shipped calibration, not from this machine's
    planned = _predict(capsys, "--target", "h100-sxm")
    assert planned["model"] == "physical" and planned["roofline_hardware"] == "h100-sxm"
    # without --target, this machine's own calibration is used, as before
    own = _predict(capsys, "--step-time", "0.01")
    assert own["model"] != "physical"


def test_an_explicit_calibration_is_never_replaced_by_the_builtin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "mine.json"
    argv = ["predict", "_models:TinyMLP", "--input", "8x16", "--steps", "9", "--target", "h100-sxm"]
    assert cli.main([*argv, "--calibration", str(missing)]) == 2
    assert "expected a calibration file at" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("target", "says"),
    [
        # an A100 of the table: nothing ships for it, and training on this CPU would not help
        (
            "a100-sxm-80gb",
            "expected a calibration for --target a100-sxm-80gb, found none: none was given and "
            "none ships for it (the package ships h100-sxm). Fix: on that GPU run "
            "`lightning-to-energy calibrate --out FILE` and pass --calibration FILE, or plan for "
            "--target h100-sxm.",
        ),
        # a name the table lacks: the table's keys, not "train on this machine"
        ("no-such-gpu", "no-such-gpu"),
    ],
)
def test_a_target_without_a_calibration_says_so_not_train_on_this_machine(
    capsys: pytest.CaptureFixture[str], target: str, says: str
) -> None:
    # the cache is empty (conftest): before, both said "expected a calibration for this
    # hardware (<this CPU>) ... Fix: train once with TOEnergy() on this machine"
    argv = ["predict", "_models:TinyMLP", "--input", "8x16", "--steps", "9", "--target", target]
    assert cli.main(argv) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert says in err
    assert "on this machine" not in err and "h100-sxm" in err
