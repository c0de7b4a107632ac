"""A new user's pass over the CLI: the defects it found, each pinned by a test.

``predict --json`` keeps each label beside the figure it qualifies; unknown hardware keys, bad
devices and bad paths get one complete line (what was expected, what was found, the fix).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_cli_fit_predict import RUN_A, RUN_B, calibration_file, make_report, run, two_runs, write

__all__ = ["calibration_file", "two_runs"]  # fixtures used here, imported from their owner


# --- predict --json: the labels beside their figures -----------------------------------------


def _predict_json(capsys: pytest.CaptureFixture[str], calibration: Path) -> dict[str, object]:
    code, out, err = run(
        capsys, "predict", "_models:TinyMLP", "--input", "8x16", "--calibration",
        str(calibration), "--step-time", "0.01", "--steps", "100", "--json",
    )  # fmt: skip
    assert (code, err) == (0, "")
    result: dict[str, object] = json.loads(out)
    return result


def test_predict_json_puts_the_energy_label_beside_the_energy(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    a = write(make_report(RUN_A, kind="estimate"), tmp_path / "a")
    b = write(make_report(RUN_B, kind="estimate"), tmp_path / "b")
    target = tmp_path / "cal.json"
    code, _, _ = run(capsys, "fit", a, b, "--out", str(target), "--allow-estimates")
    assert code == 0
    result = _predict_json(capsys, target)
    keys = list(result)
    at = keys.index("energy_j")
    # the figure, its interval, then what its joules are: 6 keys in a row
    assert keys[at : at + 6] == [
        "energy_j", "low_j", "high_j", "sensor_kind", "energy_label", "energy_measured",
    ]  # fmt: skip
    assert (result["sensor_kind"], result["energy_measured"]) == ("estimate", False)
    assert result["energy_label"] == "estimated (estimate, not measured)"
    # the step time and where it came from, side by side
    at = keys.index("step_time_s")
    assert keys[at : at + 3] == ["step_time_s", "step_time_source", "step_time_detail"]
    assert (result["step_time_s"], result["step_time_source"]) == (0.01, "given")
    # the plan's own "model" no longer hides which model was counted
    assert (result["counted_model"], result["model"]) == ("_models:TinyMLP", "regression")


def test_predict_json_says_measured_for_a_counter_calibration(
    capsys: pytest.CaptureFixture[str], calibration_file: Path
) -> None:
    result = _predict_json(capsys, calibration_file)
    # make_report's default sensor is a counter: measured joules
    assert (result["sensor_kind"], result["energy_measured"]) == ("counter", True)
    assert result["energy_label"] == "measured (counter)"
