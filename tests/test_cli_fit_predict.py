"""``lightning-to-energy fit`` and ``predict`` on hand-built reports that follow a known law.

Every window of the reports below costs exactly ``50 W x duration_s + 1e-9 J/TO x tos``, so
the fitted coefficients, the leave-one-run-out precision and the predicted energy can be worked
out by hand.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from _records import bare_report
from lightning_to_energy import cli
from lightning_to_energy.calibration.data import Calibration
from lightning_to_energy.calibration.store import CalibrationStore, CalibrationWarning
from lightning_to_energy.counting.profile import StepProfile
from lightning_to_energy.counting.step import random_label_loss
from lightning_to_energy.hardware.identity import (
    HardwareInfo,
    hardware_fingerprint,
    hardware_section,
)
from lightning_to_energy.model.regression import OnlineEnergyModel
from lightning_to_energy.reporting.files import save_report
from lightning_to_energy.reporting.records import FLAG_SHORT, EnergyReport, SensorInfo, WindowRecord

STATIC_W = 50.0
J_PER_TO = 1e-9

# (duration_s, tos) per window. Within each run the TOs per second vary, so duration and TOs
# are not collinear and each run alone identifies both coefficients.
RUN_A = ((2.0, 1e10), (3.0, 4e10), (4.0, 2e10), (5.0, 8e10), (6.0, 3e10))
RUN_B = ((2.5, 6e10), (3.5, 1e10), (4.5, 5e10), (1.5, 2e10), (5.5, 9e10))


def law_j(duration_s: float, tos: float) -> float:
    """The energy every hand-built window follows."""
    return STATIC_W * duration_s + J_PER_TO * tos


def make_report(
    rows: Sequence[tuple[float, float]],
    *,
    flags: tuple[str, ...] = (),
    measured: bool = True,
    hardware: HardwareInfo | None = None,
    scale: float = 1.0,
    kind: str = "counter",
) -> EnergyReport:
    """A report whose train windows follow :func:`law_j`, with features (duration_s, tos).

    With ``hardware``, the report names it, and each window also carries a ``roofline_s``
    column of a quarter of its duration (as if the steps ran at 25 % of the roofline). With
    ``scale``, every window measures ``scale`` times the law. ``kind`` is its sensor's kind.
    """
    windows = []
    for i, (duration_s, tos) in enumerate(rows):
        energy = scale * law_j(duration_s, tos)
        features = {"duration_s": duration_s, "tos": tos}
        if hardware is not None:
            features["roofline_s"] = duration_s / 4
        windows.append(
            WindowRecord(
                index=i,
                loop="train",
                first_step=10 * i,
                steps=10,
                start_s=sum(d for d, _ in rows[:i]),
                duration_s=duration_s,
                energy_j={"gpu:0": energy} if measured else {},
                measured_j=energy if measured else None,
                predicted_j=None,
                low_j=None,
                high_j=None,
                prediction_source="none",
                tos=tos,
                flops=0.0,
                features=features,
                flags=flags,
            )
        )
    return bare_report(
        windows=tuple(windows),
        measured_j=sum(w.measured_j or 0.0 for w in windows),
        hardware={} if hardware is None else hardware_section(hardware),
        sensors=(SensorInfo("gpu:0", kind, "test", 0.1, 2.0),),
    )


def write(report: EnergyReport, directory: Path) -> str:
    """Save ``report`` as ``directory/energy_report.json`` and return the path."""
    return str(save_report(report, directory, plot=False).json_path)


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[str, str]:
    return write(make_report(RUN_A), tmp_path / "a"), write(make_report(RUN_B), tmp_path / "b")


def predicted_step() -> StepProfile:
    """The step ``predict _models:TinyMLP --input 8x16`` counts: cross-entropy on random labels
    over TinyMLP's 4 classes, backward, AdamW."""
    import torch

    from _models import TinyMLP
    from lightning_to_energy.counting import profile

    model, x = TinyMLP(), torch.randn(8, 16)
    loss_fn, target = random_label_loss(model, x)
    return profile(model, x, train=True, optimizer="adamw", loss_fn=loss_fn, target=target)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- fit -------------------------------------------------------------------------------------


def test_fit_json_recovers_the_law_and_scores_leave_one_run_out(
    capsys: pytest.CaptureFixture[str], two_runs: tuple[str, str]
) -> None:
    code, out, err = run(capsys, "fit", *two_runs, "--json")
    assert (code, err) == (0, "")
    result = json.loads(out)
    # 5 windows per report, 2 reports
    assert result["windows"] == 10
    assert result["features"] == ["duration_s", "tos"]
    assert result["units"] == {"duration_s": "W", "tos": "J/TO"}
    assert result["identifiable"] is True
    assert result["validation"] == "leave-one-run-out"
    coefficients = result["coefficients"]
    # the law: 50 W static power, 1e-9 J per TO
    assert coefficients["duration_s"] == pytest.approx(STATIC_W, rel=0.02)
    assert coefficients["tos"] == pytest.approx(J_PER_TO, rel=0.02)
    # each run is predicted by a fit on the other alone; both identify the same exact law
    assert result["accuracy"]["n"] == 10
    assert result["accuracy"]["precision_pct"] > 98.0


def test_fit_prints_coefficients_with_units_and_the_precision(
    capsys: pytest.CaptureFixture[str], two_runs: tuple[str, str]
) -> None:
    code, out, err = run(capsys, "fit", *two_runs)
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == (
        "fitted 10 windows of measured (counter) joules from 2 report(s) on ['duration_s', 'tos']"
    )
    watts = re.search(r"duration_s: ([0-9.]+) W$", out, re.M)
    nj_per_to = re.search(r"tos: ([0-9.]+) nJ/TO$", out, re.M)
    assert watts is not None and nj_per_to is not None, out
    # 50 W and 1e-9 J/TO = 1 nJ/TO, printed to 3 significant digits
    assert float(watts.group(1)) == pytest.approx(50.0, rel=0.02)
    assert float(nj_per_to.group(1)) == pytest.approx(1.0, rel=0.02)
    precision = re.search(r"precision \(leave-one-run-out\): ([0-9.]+) %", out)
    assert precision is not None, out
    assert float(precision.group(1)) > 98.0


def test_fit_on_one_report_scores_prequentially(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write(make_report(RUN_A + RUN_B), tmp_path / "one")
    code, out, _ = run(capsys, "fit", path, "--json")
    assert code == 0
    result = json.loads(out)
    assert result["validation"] == "prequential"
    assert result["coefficients"]["duration_s"] == pytest.approx(STATIC_W, rel=0.02)
    assert result["coefficients"]["tos"] == pytest.approx(J_PER_TO, rel=0.02)


def test_fit_out_writes_a_calibration_for_this_hardware(
    capsys: pytest.CaptureFixture[str], two_runs: tuple[str, str], tmp_path: Path
) -> None:
    target = tmp_path / "calibration.json"
    code, out, _ = run(capsys, "fit", *two_runs, "--json", "--out", str(target))
    assert code == 0
    result = json.loads(out)
    assert result["calibration"] == str(target)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)  # same hardware: no mismatch warning
        calibration = CalibrationStore.from_path(target).load()
    assert calibration is not None
    assert calibration.fingerprint == hardware_fingerprint(HardwareInfo.detect())
    assert calibration.feature_names == ("duration_s", "tos")
    assert dict(calibration.coefficients) == pytest.approx(result["coefficients"])
    # every fitted window is stored: 5 + 5
    assert len(calibration.windows) == 10
    stored = {
        (w.features["duration_s"], w.features["tos"]): w.energy_j for w in calibration.windows
    }
    # e.g. the first window of run A: 50 x 2 + 1e-9 x 1e10 = 110 J
    assert stored[(2.0, 1e10)] == pytest.approx(110.0)
    # one run per report (predict holds out a run at a time), 5 windows each
    assert sorted(r.windows for r in calibration.runs) == [5, 5]
    assert {w.run_id for w in calibration.windows} == {r.run_id for r in calibration.runs}
    assert calibration.n_runs == 2


def test_fitting_the_same_reports_again_replaces_their_windows(
    capsys: pytest.CaptureFixture[str], two_runs: tuple[str, str], tmp_path: Path
) -> None:
    target = tmp_path / "calibration.json"
    for _ in range(2):
        code, _, _ = run(capsys, "fit", *two_runs, "--out", str(target))
        assert code == 0
    calibration = CalibrationStore.from_path(target).load()
    assert calibration is not None
    # a report keeps its run id: 10 windows of 2 runs, not a second copy under new ids (which
    # a leave-one-run-out would train on while holding out the first)
    assert (len(calibration.windows), calibration.n_runs, len(calibration.runs)) == (10, 2, 2)


def test_fit_text_mode_says_where_the_calibration_went(
    capsys: pytest.CaptureFixture[str], two_runs: tuple[str, str], tmp_path: Path
) -> None:
    target = tmp_path / "cal.json"
    code, out, _ = run(capsys, "fit", *two_runs, "--out", str(target))
    assert code == 0
    assert out.splitlines()[-1] == f"calibration written to {target}"
    assert target.is_file()


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        (make_report(RUN_A, flags=(FLAG_SHORT,)), "found none fit for fitting"),
        (make_report(RUN_A, measured=False), "found none fit for fitting"),
        (make_report(()), "found none fit for fitting"),
    ],
    ids=["all-short", "unmeasured", "no-windows"],
)
def test_fit_without_usable_windows_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, report: EnergyReport, expected: str
) -> None:
    path = write(report, tmp_path / "r")
    code, out, err = run(capsys, "fit", path)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert err.startswith("lightning-to-energy fit: error: expected measured windows")
    assert expected in err and "Fix:" in err


def test_fit_on_a_missing_file_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "nope.json"
    code, out, err = run(capsys, "fit", str(missing))
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert err.startswith(f"lightning-to-energy fit: error: cannot read report {missing}")
    assert "found none. Fix: pass the energy_report.json" in err


def test_fit_with_a_feature_the_windows_lack_exits_2(
    capsys: pytest.CaptureFixture[str], two_runs: tuple[str, str]
) -> None:
    code, _, err = run(capsys, "fit", *two_runs, "--features", "duration_s,flops")
    assert code == 2
    assert err.count("\n") == 1
    assert "missing in some windows: ['flops']" in err and "Fix: --features" in err


# --- predict ---------------------------------------------------------------------------------


@pytest.fixture
def calibration_file(
    capsys: pytest.CaptureFixture[str], two_runs: tuple[str, str], tmp_path: Path
) -> Path:
    """A calibration written by ``fit --out`` on this machine, features (duration_s, tos)."""
    target = tmp_path / "calibration.json"
    code, _, _ = run(capsys, "fit", *two_runs, "--out", str(target))
    assert code == 0
    return target


def test_predict_json_stays_strict_json_with_an_unbounded_interval(
    capsys: pytest.CaptureFixture[str], calibration_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    from lightning_to_energy import planning

    real_plan_run = planning.plan_run

    def unbounded(*args: Any, **kwargs: Any) -> Any:
        # a held-out run predicted at 0 J: an interval without an upper end
        return dataclasses.replace(real_plan_run(*args, **kwargs), high_j=math.inf)

    monkeypatch.setattr(planning, "plan_run", unbounded)
    code, out, err = run(
        capsys, "predict", "_models:TinyMLP", "--input", "8x16", "--calibration",
        str(calibration_file), "--step-time", "0.01", "--steps", "100", "--json",
    )  # fmt: skip
    assert (code, err) == (0, "")

    def refuse(token: str) -> None:
        raise AssertionError(f"not strict JSON: {token}")

    # a strict parser: the bare Infinity that json.dumps writes by default is refused
    result = json.loads(out, parse_constant=refuse)
    assert result["high_j"] == "Infinity"


def test_predict_applies_the_fitted_law_to_steps_x_step_cost(
    capsys: pytest.CaptureFixture[str], calibration_file: Path
) -> None:
    code, out, err = run(
        capsys, "predict", "_models:TinyMLP", "--input", "8x16", "--calibration",
        str(calibration_file), "--step-time", "0.01", "--steps", "100", "--json",
    )  # fmt: skip
    assert (code, err) == (0, "")
    result = json.loads(out)
    assert (result["steps"], result["step_time_s"], result["precision"]) == (100, 0.01, "fp32")
    assert result["calibration_windows"] == 10
    assert result["hardware"] == HardwareInfo.detect().label
    tos_per_step = result["tos_per_step"]
    assert tos_per_step > 0
    # 100 steps of 0.01 s: 1 s of static power and 100 x tos_per_step TOs.
    # With the law: 50 W x 1 s + 1e-9 J/TO x 100 x tos_per_step.
    by_law = STATIC_W * 1.0 + J_PER_TO * 100 * tos_per_step
    assert result["energy_j"] == pytest.approx(by_law, rel=0.02)
    # With the calibration's own coefficients. NB: predict re-fits the stored windows (at half
    # weight, with the stored coefficients as prior), so it agrees with them to the fit's
    # precision rather than bit for bit.
    stored = CalibrationStore.from_path(calibration_file).load()
    assert stored is not None
    c = stored.coefficients
    by_coefficients = c["duration_s"] * 1.0 + c["tos"] * 100 * tos_per_step
    assert result["energy_j"] == pytest.approx(by_coefficients, rel=1e-3)
    assert result["low_j"] <= result["energy_j"] <= result["high_j"]
    # two runs: the default factor 1.5, with no coverage claimed
    assert result["high_j"] == pytest.approx(1.5 * result["energy_j"])
    assert result["interval"] is None
    assert result["interval_basis"].startswith("default factor 1.5, no measured error")


def test_predict_from_five_reports_prints_a_leave_one_run_out_interval(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # 5 runs of the law, the last measuring 1.2 x it (each run's windows a little longer, so
    # every report is its own run)
    paths = [
        write(
            make_report([(d * (1 + r / 10), t) for d, t in RUN_A], scale=1.2 if r == 4 else 1.0),
            tmp_path / f"r{r}",
        )
        for r in range(5)
    ]
    target = tmp_path / "calibration.json"
    assert run(capsys, "fit", *paths, "--out", str(target))[0] == 0
    argv = ["predict", "_models:TinyMLP", "--input", "8x16", "--calibration", str(target),
            "--step-time", "0.01", "--steps", "100"]  # fmt: skip
    code, out, _ = run(capsys, *argv, "--json")
    assert code == 0
    result = json.loads(out)
    # Held out, the 1.2 x run is predicted by a fit on the exact runs alone: the law, score
    # ln 1.2. An exact run is predicted by a fit that the 1.2 x run pulls up by less than that.
    # 5 scores: k = min(ceil(6 x 0.9), 5) = 5, the largest: the interval is [p / 1.2, p x 1.2].
    assert result["high_j"] / result["energy_j"] == pytest.approx(1.2, rel=1e-3)
    assert result["energy_j"] / result["low_j"] == pytest.approx(1.2, rel=1e-3)
    # The largest of 5 held-out scores bounds a sixth with probability 5 / 6 = 0.833, not 0.9:
    # the coverage claimed is that one, printed rounded down (83 %), with the runs 90 % needs
    # (0.9 / (1 - 0.9) = 9).
    assert result["interval"] == pytest.approx(5 / 6)
    assert result["interval_basis"] == "leave-one-run-out over 5 runs; 90 % needs 9 runs"
    # 5 reports x 5 windows, each report its own run
    assert (result["calibration_windows"], result["calibration_runs"]) == (25, 5)
    code, out, _ = run(capsys, *argv)
    assert code == 0
    assert re.search(
        r"\(83 % interval [0-9.]+ k?J \.\. [0-9.]+ k?J, leave-one-run-out over 5 runs; 90 % "
        r"needs 9 runs\), from 25 calibration windows of 5 runs",
        out,
    ), out


def test_predict_text_output(capsys: pytest.CaptureFixture[str], calibration_file: Path) -> None:
    code, out, _ = run(
        capsys, "predict", "_models:TinyMLP", "--input", "8x16", "--calibration",
        str(calibration_file), "--step-time", "0.01", "--steps", "100",
    )  # fmt: skip
    assert code == 0
    first, timing, second, heading, *modules = out.splitlines()
    assert first.startswith("_models:TinyMLP: 100 steps x ")
    assert "10.0 ms per step on " + HardwareInfo.detect().label in first
    # where the step time came from, always said
    assert timing == "step time: --step-time 0.01 s"
    # two reports: two runs, too few to measure the interval; no coverage is claimed
    assert re.match(
        r"predicted energy: [0-9.]+ k?J \(range [0-9.]+ k?J \.\. [0-9.]+ k?J: default factor "
        r"1\.5, no measured error: the calibration holds windows of 2 runs, leave-one-run-out "
        r"needs 5\), from 10 calibration",
        second,
    )
    # fit wrote it from the reports' counter: measured joules, and its held-out precision
    assert "; joules measured (counter), held-out precision " in second
    assert "% interval" not in out
    assert heading.startswith("top modules by predicted joules")
    # TinyMLP's TOs lie in fc1, fc2, act and the loss outside any module: every one listed
    assert {line.split()[0] for line in modules} >= {"fc1", "fc2"}


def test_predict_without_a_calibration_for_this_hardware_exits_2_with_the_fix(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # conftest points XDG_CACHE_HOME at an empty folder: this hardware has no calibration
    code, out, err = run(
        capsys, "predict", "_models:TinyMLP", "--input", "8x16", "--step-time", "0.01",
        "--steps", "100",
    )  # fmt: skip
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    label = HardwareInfo.detect().label
    assert err.startswith(
        f"lightning-to-energy predict: error: expected a calibration for this hardware ({label})"
    )
    assert f"{hardware_fingerprint(HardwareInfo.detect())}.json, found none" in err
    assert "Fix: train once with TOEnergy()" in err
    assert "--calibration FILE written by `lightning-to-energy fit --out FILE`" in err


def test_predict_with_a_missing_calibration_file_exits_2_naming_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "none.json"
    code, _, err = run(
        capsys, "predict", "_models:TinyMLP", "--input", "8x16", "--calibration", str(missing),
        "--step-time", "0.01", "--steps", "100",
    )  # fmt: skip
    assert code == 2
    assert f"at {missing}, found nothing at that path. Fix:" in err


def test_predict_with_another_machines_calibration_warns_and_uses_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    model = OnlineEnergyModel(("duration_s", "tos"), history=10)
    for duration_s, tos in RUN_A + RUN_B:
        model.update({"duration_s": duration_s, "tos": tos}, law_j(duration_s, tos))
    other = HardwareInfo(
        gpus=("NVIDIA H100 80GB HBM3",), driver_version="1.0", cpu="x", cpu_count=2
    )
    path = tmp_path / "other.json"
    assert CalibrationStore.from_path(path).save(Calibration.from_model(model, other)) == path
    with pytest.warns(CalibrationWarning, match="was made on 'nvidia-h100-80gb-hbm3-x1-"):
        code, out, _ = run(
            capsys, "predict", "_models:TinyMLP", "--input", "8x16", "--calibration", str(path),
            "--step-time", "0.01", "--steps", "100", "--json",
        )  # fmt: skip
    assert code == 0
    result = json.loads(out)
    # the same law: 50 W x 1 s + 1e-9 J/TO x 100 x tos_per_step
    by_law = STATIC_W + J_PER_TO * 100 * result["tos_per_step"]
    assert result["energy_j"] == pytest.approx(by_law, rel=0.02)


def _h100_calibration(tmp_path: Path, features: tuple[str, str]) -> Path:
    """An H100 calibration (made elsewhere) following 50 W x time + 1e-9 J/TO x TOs."""
    model = OnlineEnergyModel(features, history=10)
    for duration_s, tos in RUN_A + RUN_B:
        model.update({features[0]: duration_s, "tos": tos}, law_j(duration_s, tos))
    h100 = HardwareInfo(gpus=("NVIDIA H100 80GB HBM3",), driver_version="1", cpu="x", cpu_count=2)
    path = tmp_path / "h100.json"
    assert CalibrationStore.from_path(path).save(Calibration.from_model(model, h100)) == path
    return path


def test_predict_plans_an_h100_run_here_from_the_roofline_without_timing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    from lightning_to_energy.cli import predict as _cli_predict
    from lightning_to_energy.hardware.roofline import roofline_s
    from lightning_to_energy.hardware.specs import find_hardware

    def no_timing(*args: object) -> float:
        raise AssertionError("a roofline calibration must not time steps on this machine")

    monkeypatch.setattr(_cli_predict, "_time_steps", no_timing)
    path = _h100_calibration(tmp_path, ("roofline_s", "tos"))
    with pytest.warns(CalibrationWarning, match="was made on"):
        code, out, _ = run(
            capsys, "predict", "_models:TinyMLP", "--input", "8x16", "--calibration", str(path),
            "--steps", "1000", "--json",
        )  # fmt: skip
    assert code == 0
    result = json.loads(out)
    assert (result["roofline_hardware"], result["step_time_s"]) == ("h100-sxm", None)
    step = predicted_step()
    per_step_s = roofline_s(step, find_hardware("h100-sxm"))
    assert result["roofline_s_per_step"] == pytest.approx(per_step_s)
    # The law with the roofline as the time: 50 W x 1000 x roofline_s + 1e-9 J/TO x 1000 x TOs
    by_law = STATIC_W * 1000 * per_step_s + J_PER_TO * 1000 * result["tos_per_step"]
    assert result["energy_j"] == pytest.approx(by_law, rel=0.02)


def test_predict_takes_another_gpus_step_time_from_its_step_model_plus_lightnings_overhead(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning_to_energy.cli import predict as _cli_predict
    from lightning_to_energy.hardware.roofline import roofline_s
    from lightning_to_energy.hardware.specs import find_hardware
    from lightning_to_energy.planning import DEFAULT_LIGHTNING_OVERHEAD_S

    def no_timing(*args: object) -> float:
        raise AssertionError("another machine's calibration must not time steps here")

    monkeypatch.setattr(_cli_predict, "_time_steps", no_timing)
    path = _h100_calibration(tmp_path, ("duration_s", "tos"))
    with pytest.warns(CalibrationWarning):
        code, out, err = run(
            capsys, "predict", "_models:TinyMLP", "--input", "8x16", "--calibration", str(path),
            "--steps", "10", "--json",
        )  # fmt: skip
    assert (code, err) == (0, "")
    result = json.loads(out)
    # no run of TinyMLP in it: the H100's roofline step plus the stated Lightning overhead
    expected = (
        roofline_s(predicted_step(), find_hardware("h100-sxm")) + DEFAULT_LIGHTNING_OVERHEAD_S
    )
    assert result["step_time_source"] == "step-model"
    assert result["step_time_s"] == pytest.approx(expected)
    assert "stated default" in result["step_time_detail"]
    # --step-overhead replaces the default: roofline + 0.25 s
    with pytest.warns(CalibrationWarning):
        code, out, _ = run(
            capsys, "predict", "_models:TinyMLP", "--input", "8x16", "--calibration", str(path),
            "--steps", "10", "--json", "--step-overhead", "0.25",
        )  # fmt: skip
    assert json.loads(out)["step_time_s"] == pytest.approx(
        expected - DEFAULT_LIGHTNING_OVERHEAD_S + 0.25
    )


def test_predict_refuses_to_time_here_for_another_cpus_measured_time_calibration(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    model = OnlineEnergyModel(("duration_s", "tos"), history=10)
    for duration_s, tos in RUN_A + RUN_B:
        model.update({"duration_s": duration_s, "tos": tos}, law_j(duration_s, tos))
    other = HardwareInfo(cpu="Some Other CPU", cpu_count=96)
    path = tmp_path / "xeon.json"
    assert CalibrationStore.from_path(path).save(Calibration.from_model(model, other)) == path
    with pytest.warns(CalibrationWarning):
        code, out, err = run(
            capsys, "predict", "_models:TinyMLP", "--input", "8x16", "--calibration", str(path),
            "--steps", "10",
        )  # fmt: skip
    assert (code, out) == (2, "")
    assert "would measure the wrong machine" in err and "--step-time" in err


def test_predict_with_an_unknown_hardware_key_exits_2_listing_the_known_ones(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = _h100_calibration(tmp_path, ("roofline_s", "tos"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, err = run(
            capsys, "predict", "_models:TinyMLP", "--input", "8x16", "--calibration", str(path),
            "--steps", "10", "--hardware", "h900",
        )  # fmt: skip
    assert code == 2 and "h100-sxm" in err and "'h900'" in err
    # refused before the calibration is read: one line, no note about its hardware on top
    assert len(err.splitlines()) == 1 and caught == []


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--steps", "0", "--step-time", "0.01"], "expected --steps >= 1, found 0"),
        (["--steps", "10", "--step-time", "0"], "expected --step-time > 0 seconds"),
        # inf passed the check and failed later as a window "feature", with a fix about windows
        (["--steps", "10", "--step-time", "inf"], "found inf. Fix: the target machine's"),
        # a measured-time calibration cannot plan another hardware's run, and says so
        (
            ["--steps", "10", "--step-time", "0.01", "--hardware", "h100-sxm"],
            "expected, with --target/--hardware h100-sxm, a calibration that can plan other",
        ),
    ],
)
def test_predict_argument_errors_exit_2(
    capsys: pytest.CaptureFixture[str], calibration_file: Path, argv: list[str], expected: str
) -> None:
    code, _, err = run(
        capsys, "predict", "_models:TinyMLP", "--input", "8x16", "--calibration",
        str(calibration_file), *argv,
    )  # fmt: skip
    assert code == 2
    assert err.count("\n") == 1 and expected in err


def test_predict_with_a_calibration_path_that_is_a_directory_says_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with warnings.catch_warnings():
        # refused before the store reads it: the store's warning would advise deleting the
        # "calibration file", which is the user's directory
        warnings.simplefilter("error", CalibrationWarning)
        code, _, err = run(
            capsys, "predict", "_models:TinyMLP", "--input", "8x16", "--calibration",
            str(tmp_path), "--step-time", "0.01", "--steps", "100",
        )  # fmt: skip
    assert code == 2 and err.count("\n") == 1
    # an explicit file is used whatever its hardware: "for this hardware" and "train once on
    # this machine" were the wrong diagnosis and the wrong fix
    assert f"expected a calibration file at {tmp_path}, found a directory. Fix:" in err
    assert "for this hardware" not in err and "Fix: pass --calibration FILE" in err


def test_predict_with_a_report_or_study_run_as_calibration_says_to_fit_it_first(
    capsys: pytest.CaptureFixture[str], two_runs: tuple[str, str], tmp_path: Path
) -> None:
    study_run = tmp_path / "study" / "mlp-x.run.json"
    study_run.parent.mkdir()
    study_run.write_text('{"format": "lightning-to-energy/study-run", "version": 1}')
    for given, found, fit_on in (
        (two_runs[0], "an energy report", two_runs[0]),
        (str(study_run), "a study run", str(study_run.parent)),
    ):
        with warnings.catch_warnings():
            # not "cannot be used (expected schema_version 1...); delete it": it is no
            # calibration of another version, and deleting it would lose the run
            warnings.simplefilter("error", CalibrationWarning)
            code, out, err = run(
                capsys, "predict", "_models:TinyMLP", "--input", "8x16", "--calibration", given,
                "--step-time", "0.01", "--steps", "100",
            )  # fmt: skip
        assert (code, out) == (2, "") and err.count("\n") == 1
        assert f"expected a calibration file at {given}, found {found}. Fix: fit" in err
        assert f"`lightning-to-energy fit {fit_on} --out cal.json`" in err


def test_predict_without_a_calibration_says_estimated_runs_save_none(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The automatic store takes only measured joules: on a machine whose energy is estimated
    # (most VMs), "train once with TOEnergy()" alone would send the user round in a circle.
    code, _, err = run(
        capsys, "predict", "_models:TinyMLP", "--input", "8x16", "--step-time", "0.01",
        "--steps", "100",
    )  # fmt: skip
    assert code == 2
    assert "estimated energy saves none" in err
    assert "`lightning-to-energy fit energy_report.json --out FILE`" in err


def test_fit_on_a_run_directory_reads_its_energy_report(
    capsys: pytest.CaptureFixture[str], two_runs: tuple[str, str]
) -> None:
    # `report DIR` takes a run's log directory; `fit DIR` took every directory for a study
    # and answered "expected a directory holding *.run.json files"
    directories = [str(Path(p).parent) for p in two_runs]
    code, out, err = run(capsys, "fit", *directories, "--json")
    assert (code, err) == (0, "")
    result = json.loads(out)
    # 5 + 5 windows of the two reports, scored as with the files themselves
    assert result["windows"] == 10 and result["validation"] == "leave-one-run-out"
    assert result["coefficients"]["duration_s"] == pytest.approx(STATIC_W, rel=0.02)


def test_fit_out_a_directory_exits_2_naming_a_file_in_it(
    capsys: pytest.CaptureFixture[str], two_runs: tuple[str, str], tmp_path: Path
) -> None:
    with warnings.catch_warnings():
        # the store's warning would call the directory an unusable calibration to delete
        warnings.simplefilter("error", CalibrationWarning)
        code, out, err = run(capsys, "fit", *two_runs, "--out", str(tmp_path))
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert f"found the directory {tmp_path}. Fix: name a file in it, e.g. --out " in err
    assert str(tmp_path / "calibration.json") in err


def test_fit_on_the_window_csv_names_the_json_beside_it(
    capsys: pytest.CaptureFixture[str], two_runs: tuple[str, str]
) -> None:
    csv_path = Path(two_runs[0]).with_suffix(".csv")
    assert csv_path.is_file()
    code, _, err = run(capsys, "fit", str(csv_path))
    assert code == 2
    # not "invalid JSON ... damaged or truncated"
    assert "found a CSV file" in err and f"Fix: pass {two_runs[0]}" in err
    assert "damaged" not in err


def test_fit_on_reports_of_other_features_names_the_ones_they_share(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import dataclasses

    a = dataclasses.replace(make_report(RUN_A), coefficients={"duration_s": 50.0, "tos": 1e-9})
    b = make_report(RUN_B)
    b = dataclasses.replace(
        b,
        windows=tuple(
            dataclasses.replace(w, features={"duration_s": w.duration_s, "kernels": 5.0})
            for w in b.windows
        ),
    )
    paths = write(a, tmp_path / "a"), write(b, tmp_path / "b")
    code, _, err = run(capsys, "fit", *paths)
    assert code == 2 and "missing in some windows: ['tos']" in err
    # the fix used to be "--features duration_s,tos": the very features that failed
    assert "Fix: --features duration_s (the names every window carries)" in err


# --- fit on reports' roofline time, then predict without timing ------------------------------

H100 = HardwareInfo(gpus=("NVIDIA H100 80GB HBM3",), driver_version="580.1", cpu="x", cpu_count=8)


def test_fit_roofline_on_reports_makes_an_h100_calibration_that_predict_applies_untimed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    a = write(make_report(RUN_A, hardware=H100), tmp_path / "a")
    b = write(make_report(RUN_B, hardware=H100), tmp_path / "b")
    out = tmp_path / "h100.json"
    code, text, err = run(capsys, "fit", a, b, "--roofline", "--out", str(out), "--json")
    assert (code, err) == (0, "")
    fitted = json.loads(text)
    assert fitted["features"] == ["roofline_s", "tos"]
    # 50 W x duration_s = 50 W x 4 x roofline_s: 200 W on the roofline time; 1e-9 J/TO as before
    assert fitted["coefficients"]["roofline_s"] == pytest.approx(4 * STATIC_W, rel=0.02)
    assert fitted["coefficients"]["tos"] == pytest.approx(J_PER_TO, rel=0.02)
    with pytest.warns(CalibrationWarning):  # made on the reports' H100, read on this machine
        calibration = CalibrationStore.from_path(out).load()
    assert calibration is not None
    # the reports' hardware, not the machine that ran fit
    assert calibration.fingerprint == hardware_fingerprint(H100)

    from lightning_to_energy.hardware.roofline import roofline_s
    from lightning_to_energy.hardware.specs import find_hardware

    with pytest.warns(CalibrationWarning):
        code, text, _ = run(
            capsys, "predict", "_models:TinyMLP", "--input", "8x16", "--calibration", str(out),
            "--steps", "1000", "--json",
        )  # fmt: skip
    assert code == 0  # no --step-time needed: the roofline gives the time
    result = json.loads(text)
    step = predicted_step()
    # 1000 steps x (200 W x H100 roofline seconds + 1e-9 J/TO x TOs)
    by_law = 1000 * (
        4 * STATIC_W * roofline_s(step, find_hardware("h100-sxm")) + J_PER_TO * step.tos
    )
    assert result["energy_j"] == pytest.approx(by_law, rel=0.02)


def test_fit_default_features_leave_the_roofline_column_out(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    a = write(make_report(RUN_A, hardware=H100), tmp_path / "a")
    code, text, _ = run(capsys, "fit", a, "--json")
    assert code == 0
    assert json.loads(text)["features"] == ["duration_s", "tos"]


def test_fit_refuses_reports_from_two_hardware(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    other = HardwareInfo(gpus=("NVIDIA A100-SXM4-80GB",), driver_version="580.1", cpu="x")
    a = write(make_report(RUN_A, hardware=H100), tmp_path / "a")
    b = write(make_report(RUN_B, hardware=other), tmp_path / "b")
    code, out, err = run(capsys, "fit", a, b, "--out", str(tmp_path / "c.json"))
    assert (code, out) == (2, "")
    assert "expected reports from one hardware (a calibration is per hardware), found 2" in err
    assert "Fix: fit each hardware's reports separately." in err
    assert not (tmp_path / "c.json").exists()


def test_fit_roofline_on_reports_without_the_column_exits_2_with_the_fix(
    capsys: pytest.CaptureFixture[str], two_runs: tuple[str, str]
) -> None:
    code, _, err = run(capsys, "fit", *two_runs, "--roofline")
    assert code == 2
    assert "expected a roofline_s column in every fitted window" in err
    assert "Fix: fit on measured time (drop --roofline)" in err


def test_fit_refuses_a_report_whose_hardware_was_edited(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = Path(write(make_report(RUN_A, hardware=H100), tmp_path / "a"))
    data = json.loads(path.read_text())
    data["hardware"]["gpus"] = "NVIDIA A100-SXM4-80GB"  # no longer matches its fingerprint
    path.write_text(json.dumps(data))
    code, _, err = run(capsys, "fit", str(path))
    assert code == 2
    assert f"cannot read the hardware of report {path}: expected hardware fields" in err


# --- fit on study runs, then predict from the roofline ----------------------------------------

ROOF_W = 300.0  # static power on the roofline time
J_PER_FULL_TO = 2e-12  # energy per full-precision matrix TO; every other feature costs 0


def study_run(
    run_id: str, family: str, roofline_s: float, tos_full: float, other: float
) -> dict[str, object]:
    """A study run JSON whose energy per step follows 300 W x roofline_s + 2e-12 J/TO x TOs."""
    h100 = HardwareInfo(gpus=("NVIDIA H100 80GB HBM3",), driver_version="1", cpu="x", cpu_count=2)
    energy = ROOF_W * roofline_s + J_PER_FULL_TO * tos_full
    return {
        "format": "lightning-to-energy/study-run",
        "version": 1,
        "config": {"id": run_id, "family": family, "dataset": "digits", "dtype": "fp32"},
        "hardware": {
            "key": "h100-sxm",
            "name": "NVIDIA H100 80GB HBM3",
            "fingerprint": {"id": hardware_fingerprint(h100), **h100.to_dict()},
        },
        "sensors": [{"domain": "nvml:0", "kind": "counter", "source": "test"}],
        "environment": {},
        "per_step": {
            "tos": tos_full * 1.5,
            "flops": tos_full / 1000,
            "tos_matrix_full": tos_full,
            "tos_matrix_reduced": 0.0,
            "tos_matrix_tf32": 0.0,
            "tos_matrix_low": 0.0,
            # features the law does not use vary on their own (``other``), so no column is a
            # multiple of another and every coefficient is identifiable
            "tos_vector": 1e11 * other,
            "bytes": 1e8 * (4.0 - other),
            "kernels": 50.0 + 30.0 * other * other,
            "roofline_s": roofline_s,
        },
        "measured": {
            "steps": 100,
            "energy_j": 100 * energy,
            "duration_s": 100 * roofline_s * 3,
            "windows": 3,
            "kind": "counter",
            "energy_per_step_j": energy,
            "duration_per_step_s": roofline_s * 3,
        },
        "report": f"{run_id}.report.json",
    }


def test_fit_on_study_runs_writes_a_roofline_calibration_that_predict_applies(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    study = tmp_path / "study"
    study.mkdir()
    # roofline_s and TOs vary independently, so both coefficients are identifiable
    grid = [
        (0.001, 1e12, 1),
        (0.004, 2e12, 3),
        (0.002, 6e12, 2),
        (0.008, 3e12, 1),
        (0.003, 9e12, 3),
    ]
    # three families, so that leaving one out still trains on 10 runs (6 coefficients)
    for family, scale in (("mlp", 1.0), ("cnn", 2.5), ("transformer", 0.6)):
        for i, (roof, tos, other) in enumerate(grid):
            data = study_run(f"{family}-{i}", family, roof * scale, tos / scale, other + i / 7)
            (study / f"{family}-{i}.run.json").write_text(json.dumps(data))
    out = tmp_path / "cal.json"
    code, text, err = run(capsys, "fit", str(study), "--out", str(out), "--json")
    assert (code, err) == (0, "")
    fitted = json.loads(text)
    assert fitted["runs"] == 15 and fitted["units"]["roofline_s"] == "W"
    assert fitted["coefficients"]["roofline_s"] == pytest.approx(ROOF_W, rel=0.01)
    assert fitted["coefficients"]["tos_matrix_full"] == pytest.approx(J_PER_FULL_TO, rel=0.01)
    assert fitted["accuracy"]["family"]["precision_pct"] > 99.0  # the law holds across families

    from lightning_to_energy.hardware.roofline import roofline_s
    from lightning_to_energy.hardware.specs import find_hardware

    with pytest.warns(CalibrationWarning):  # made on an H100, used here
        code, text, _ = run(
            capsys, "predict", "_models:TinyMLP", "--input", "8x16", "--calibration", str(out),
            "--steps", "1000", "--json",
        )  # fmt: skip
    assert code == 0
    result = json.loads(text)
    step = predicted_step()
    # 1000 steps x (300 W x roofline_s + 2e-12 J/TO x full-precision matrix TOs)
    by_law = 1000 * (
        ROOF_W * roofline_s(step, find_hardware("h100-sxm")) + J_PER_FULL_TO * step.tos_matrix_full
    )
    assert result["energy_j"] == pytest.approx(by_law, rel=0.02)
    # each study window is its configuration's run: the interval holds one out at a time
    stored = Calibration.from_dict(json.loads(out.read_text()))  # an H100's: read, not loaded
    ids = {f"{f}-{i}" for f in ("mlp", "cnn", "transformer") for i in range(5)}
    assert {w.run_id for w in stored.windows} == {r.run_id for r in stored.runs} == ids
    assert stored.n_runs == 15
    assert result["interval_basis"] == "leave-one-run-out over 15 runs"


def test_fit_refuses_reports_and_study_runs_together(
    capsys: pytest.CaptureFixture[str], two_runs: tuple[str, str], tmp_path: Path
) -> None:
    study = tmp_path / "study"  # a study directory: it holds *.run.json files
    study.mkdir()
    (study / "mlp.run.json").write_text("{}")
    code, _, err = run(capsys, "fit", two_runs[0], str(study))
    assert code == 2 and "found both" in err


def _tracked_run(calibration: Path | None) -> EnergyReport:
    """40 steps of TinyMLP (SGD) under an EnergyTracker: 0.1 s each at 200 W, 1 s windows."""
    import torch

    from _models import TinyMLP
    from lightning_to_energy import EnergyTracker, FakeSensor

    class Clock:
        t = 0.0

        def __call__(self) -> float:
            return self.t

    clock = Clock()
    model = TinyMLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tracker = EnergyTracker(
        model, opt, sensors=[FakeSensor(power_w=200.0, clock=clock)], window_s=1.0,
        calibration=calibration, clock=clock,
    )  # fmt: skip
    tracker.start()
    x, y = torch.randn(8, 16), torch.randint(0, 4, (8,))
    for _ in range(40):
        with tracker.step((x, y)):
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
            clock.t += 0.1
    return tracker.finish()  # saves the run to ``calibration`` where one is given


def test_a_tracker_runs_report_fits_on_its_roofline_column_end_to_end(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    report = _tracked_run(None)
    path = write(report, tmp_path / "run")
    per_step = {w.features["roofline_s"] / w.steps for w in report.windows}
    assert len(per_step) == 1  # every step replays one counted profile
    roofline_per_step = per_step.pop()
    out = tmp_path / "cal.json"
    code, text, err = run(
        capsys, "fit", path, "--roofline", "--features", "roofline_s", "--out", str(out), "--json",
        "--allow-estimates",  # its sensor is a FakeSensor
    )  # fmt: skip
    assert (code, err) == (0, "")
    fitted = json.loads(text)
    # 200 W x 0.1 s = 20 J a step, over roofline_per_step seconds of roofline a step. NB: the
    # ridge toward the zero prior (1e-3 windows' worth against 4 windows) pulls it about
    # 0.025 % low, hence rel=1e-3
    assert fitted["coefficients"]["roofline_s"] == pytest.approx(20.0 / roofline_per_step, rel=1e-3)
    # and predict applies it without timing anything, on this machine's roofline
    code, text, _ = run(
        capsys, "predict", "_models:TinyMLP", "--input", "8x16", "--calibration", str(out),
        "--steps", "100", "--optimizer", "sgd", "--json",
    )  # fmt: skip
    assert code == 0
    plan = json.loads(text)
    # 100 steps x the coefficient x the predicted step's own roofline seconds
    expected = 100 * fitted["coefficients"]["roofline_s"] * plan["roofline_s_per_step"]
    assert plan["energy_j"] == pytest.approx(expected, rel=1e-3)


def test_fit_into_the_calibration_a_run_saved_replaces_that_runs_windows(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    calibration = tmp_path / "cal.json"
    report = _tracked_run(calibration)  # saved to cal.json under the tracker's run id
    saved = CalibrationStore.from_path(calibration).load()
    assert saved is not None and len(saved.runs) == 1
    assert report.run_id == saved.runs[0].run_id
    path = write(report, tmp_path / "run")
    # --allow-estimates: the run's sensor is a FakeSensor
    code, _, err = run(capsys, "fit", path, "--out", str(calibration), "--allow-estimates")
    assert (code, err) == (0, "")
    merged = CalibrationStore.from_path(calibration).load()
    assert merged is not None
    # one run under one id: fitting the run's own report into its calibration replaces the
    # windows the run saved, rather than adding a copy under a second id that predict's
    # leave-one-run-out would train on while holding out the first
    assert [r.run_id for r in merged.runs] == [report.run_id]
    assert {w.run_id for w in merged.windows} == {report.run_id}


@pytest.mark.parametrize("how", ["same-path", "directory-and-file", "another-spelling"])
def test_fit_refuses_one_report_given_twice(
    capsys: pytest.CaptureFixture[str], two_runs: tuple[str, str], how: str
) -> None:
    a, b = two_runs
    again = {
        "same-path": a,
        "directory-and-file": str(Path(a).parent),
        "another-spelling": str(Path(a).parent / ".." / Path(a).parent.name / Path(a).name),
    }[how]
    code, out, err = run(capsys, "fit", a, b, again, "--json")
    # Before: "leave-one-run-out" over 15 windows, report a held out against a fit on its
    # own copy (precision 99.97 % on one report of an exact law, whatever its law).
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert f"expected each report once, found {Path(a).resolve()} twice" in err
    assert "Fix: pass it once." in err


def test_fit_refuses_two_copies_of_one_run(
    capsys: pytest.CaptureFixture[str], two_runs: tuple[str, str], tmp_path: Path
) -> None:
    import shutil

    a, b = two_runs
    copy = tmp_path / "copy" / "energy_report.json"
    copy.parent.mkdir()
    shutil.copy(a, copy)
    code, out, err = run(capsys, "fit", a, b, str(copy))
    # the same windows under the same run id: fitted twice, held out against each other
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert f"expected reports of distinct runs, found {a} and {copy} of the same run" in err
    assert "Fix: pass one of them" in err


# --- issue 14: sensor kind, precision floor, other hardware, CLI paper cuts ------------------


def test_fit_out_refuses_estimated_joules_unless_allowed_and_predict_says_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    a = write(make_report(RUN_A, kind="estimate"), tmp_path / "a")
    b = write(make_report(RUN_B, kind="estimate"), tmp_path / "b")
    target = tmp_path / "cal.json"
    code, out, err = run(capsys, "fit", a, b, "--out", str(target))
    # one message, before anything is written
    assert (code, out, len(err.splitlines())) == (2, "", 1)
    assert f"found joules that are not measured: {a} (estimate), {b} (estimate)" in err
    assert "--allow-estimates" in err and not target.exists()
    code, out, err = run(capsys, "fit", a, b, "--out", str(target), "--allow-estimates", "--json")
    assert (code, err) == (0, "")
    fitted = json.loads(out)
    assert (fitted["sensor_kind"], fitted["joules"]) == (
        "estimate",
        "estimated (estimate, not measured)",
    )
    saved = CalibrationStore.from_path(target).load()
    assert saved is not None and saved.sensor_kind == "estimate"
    # the law fits exactly: leave-one-run-out precision 100 %, stored with the calibration
    assert saved.precision_pct == pytest.approx(100.0, abs=0.5)
    assert saved.validation == "leave-one-run-out"
    code, out, _ = run(
        capsys, "predict", "_models:TinyMLP", "--input", "8x16", "--calibration", str(target),
        "--step-time", "0.01", "--steps", "100",
    )  # fmt: skip
    assert code == 0
    assert "joules estimated (estimate, not measured)" in out
    assert "note: the calibration's joules are estimated (estimate, not measured)" in out


def test_fit_out_refuses_a_calibration_below_70_percent_unless_allowed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # run B measures 3 x the law: fitted on A, B is predicted at 1/3 (error 2/3); fitted on
    # B, A is predicted at 3 x (error 2): precision 100 x (1 - (2/3 + 2) / 2) = -33.3 %
    a = write(make_report(RUN_A), tmp_path / "a")
    b = write(make_report(RUN_B, scale=3.0), tmp_path / "b")
    target = tmp_path / "cal.json"
    code, out, err = run(capsys, "fit", a, b, "--out", str(target))
    assert (code, out) == (2, "")
    assert "held-out precision is at least 70 %, found -33.3 % (leave-one-run-out" in err
    assert "--allow-imprecise" in err and not target.exists()
    code, _, err = run(capsys, "fit", a, b, "--out", str(target), "--allow-imprecise")
    assert (code, err) == (0, "")
    code, out, _ = run(
        capsys, "predict", "_models:TinyMLP", "--input", "8x16", "--calibration", str(target),
        "--step-time", "0.01", "--steps", "100", "--json",
    )  # fmt: skip
    plan = json.loads(out)
    assert plan["calibration_precision_pct"] == pytest.approx(-33.3, abs=0.1)
    assert any("held-out precision is -33.3 %" in n and "below 70 %" in n for n in plan["notes"])


def test_fit_out_never_overwrites_a_file_that_is_not_a_calibration(
    capsys: pytest.CaptureFixture[str], two_runs: tuple[str, str], tmp_path: Path
) -> None:
    precious = tmp_path / "precious.py"
    precious.write_text("print('mine')\n")
    code, out, err = run(capsys, "fit", *two_runs, "--out", str(precious))
    assert (code, out) == (2, "")
    # refused for its kind before anything is fitted: the calibration's extension is named
    assert f"expected --out to name a .json file, found {precious} (an existing file" in err
    assert f"Fix: e.g. --out {tmp_path / 'precious.json'}." in err
    assert precious.read_text() == "print('mine')\n"


def test_predict_for_other_hardware_than_the_calibrations_says_only_the_roofline_moves(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    a = write(make_report(RUN_A, hardware=HardwareInfo.detect()), tmp_path / "a")
    b = write(make_report(RUN_B, hardware=HardwareInfo.detect()), tmp_path / "b")
    target = tmp_path / "cpu.json"
    assert run(capsys, "fit", a, b, "--roofline", "--out", str(target))[0] == 0
    code, out, err = run(
        capsys, "predict", "_models:TinyMLP", "--input", "8x16", "--calibration", str(target),
        "--steps", "100", "--hardware", "h100-sxm",
    )  # fmt: skip
    assert (code, err) == (0, "")
    here = HardwareInfo.detect().label
    assert f"note: --target/--hardware h100-sxm: the calibration was measured on {here}" in out
    assert "only its roofline time term changes" in out
    # on its own hardware there is nothing to say
    code, out, _ = run(
        capsys, "predict", "_models:TinyMLP", "--input", "8x16", "--calibration", str(target),
        "--steps", "100",
    )  # fmt: skip
    assert code == 0 and "note:" not in out


def test_predict_on_an_unusable_calibration_gives_one_message_not_a_warning_too(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema_version": 1}')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = run(
            capsys, "predict", "_models:TinyMLP", "--input", "8x16", "--calibration",
            str(broken), "--steps", "10",
        )  # fmt: skip
    assert (code, out, len(err.splitlines())) == (2, "", 1)
    assert [w for w in caught if issubclass(w.category, CalibrationWarning)] == []
    # the file's own fault, then the one fix (not the store's advice for TOEnergy as well)
    assert "found JSON that is not one (windows: expected a value, found none)." in err
    assert err.count("Fix:") == 1 and "calibration=" not in err


def test_a_models_own_error_gets_a_traceback_on_request(
    capsys: pytest.CaptureFixture[str], calibration_file: Path
) -> None:
    argv = ["_models:RaisingMLP", "--input", "8x16"]
    for command in (["profile", *argv, "--train"], ["predict", *argv, "--steps", "10",
                    "--calibration", str(calibration_file), "--step-time", "0.01"]):  # fmt: skip
        code, _, err = run(capsys, *command)
        assert code == 2 and "Traceback" not in err
        assert "RuntimeError: user code says no" in err
        assert "(--traceback shows where it failed)" in err
        code, _, err = run(capsys, *command, "--traceback")
        # the traceback reaches into the user's module, then the one-line error
        assert code == 2 and err.startswith("Traceback (most recent call last):")
        assert "in _reject" in err and err.splitlines()[-1].startswith(
            f"lightning-to-energy {command[0]}: error: expected _models:RaisingMLP"
        )


def test_counts_accept_scientific_notation_and_the_version_is_printed(
    capsys: pytest.CaptureFixture[str], calibration_file: Path
) -> None:
    from lightning_to_energy import __version__
    from lightning_to_energy.cli import count_arg

    # 1e3 = 1000, 10_000 = 10000; the sign is the command's to check; 1.5 and 1e-3 are not whole
    assert (count_arg("1e3"), count_arg("10_000"), count_arg("-1")) == (1000, 10_000, -1)
    for bad in ("1.5", "1e-3", "many", "inf"):
        with pytest.raises(argparse.ArgumentTypeError):
            count_arg(bad)
    code, out, _ = run(
        capsys, "predict", "_models:TinyMLP", "--input", "8x16", "--calibration",
        str(calibration_file), "--step-time", "0.01", "--steps", "1e3", "--json",
    )  # fmt: skip
    assert code == 0 and json.loads(out)["steps"] == 1000
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"lightning-to-energy {__version__}\n"


def test_dtype_tf32_is_accepted_and_is_fp32_off_cuda(
    capsys: pytest.CaptureFixture[str], calibration_file: Path
) -> None:
    code, out, _ = run(
        capsys, "predict", "_models:TinyMLP", "--input", "8x16", "--calibration",
        str(calibration_file), "--step-time", "0.01", "--steps", "10", "--dtype", "tf32", "--json",
    )  # fmt: skip
    assert code == 0
    assert json.loads(out)["precision"] == "fp32 (tf32 applies to CUDA matmuls only)"


def test_fit_out_that_cannot_be_written_is_one_error_with_the_stores_reason(
    capsys: pytest.CaptureFixture[str],
    two_runs: tuple[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lightning_to_energy.calibration import store as cal_mod

    def full_disk(path: Path, text: str, *, durable: bool = False) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cal_mod, "atomic_write_text", full_disk)
    target = tmp_path / "cal.json"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = run(capsys, "fit", *two_runs, "--out", str(target))
    # no CalibrationWarning on top of the error: one message, naming the store's reason
    assert [w for w in caught if issubclass(w.category, CalibrationWarning)] == []
    assert (code, out, len(err.splitlines())) == (2, "", 1)
    assert f"calibration not written to {target}: calibration not saved: writing" in err
    assert "No space left on device" in err


def test_predict_help_names_the_optimizer_it_counts_by_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # predict counts an AdamW step unless told otherwise; a user planning an SGD run must be
    # able to learn that from --help (a 1024-4096-10 MLP, batch 64, on h100-sxm: 283 J for
    # 1000 AdamW steps against 184 J for SGD, predicted 2026-12-07)
    with pytest.raises(SystemExit):
        cli.main(["predict", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert (
        "--optimizer {sgd,adam,adamw} optimizer of the counted step (default: adamw)" in help_text
    )
