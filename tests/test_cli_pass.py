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


# --- one complete line per fault --------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["profile", "_models:TinyMLP", "--input", "8x16", "--target", "h999"],
        ["predict", "_models:TinyMLP", "--input", "8x16", "--steps", "10", "--target", "h999"],
        ["predict", "_models:TinyMLP", "--input", "8x16", "--steps", "10", "--hardware", "h999"],
    ],
)
def test_an_unknown_hardware_key_is_one_whole_line_naming_the_keys(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, out, len(err.splitlines())) == (2, "", 1)
    # the keys, what was found, and a fix that ends its sentence (profile used to cut the
    # table's message at its first line: "... with a TOML file such as.")
    assert "h100-sxm, h200" in err and "found 'h999'. Fix: use one of those keys" in err
    assert err.rstrip().endswith("(a TOML file, see docs/roofline.md).")
    assert "such as." not in err and "[[hardware]]" not in err


def test_predict_refuses_a_negative_top_as_profile_does(capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["profile"], ["predict", "--steps", "10"]):
        code, out, err = run(capsys, *command, "_models:TinyMLP", "--input", "8x16", "--top", "-1")
        assert (code, out) == (2, "")
        assert "expected --top as a number of modules >= 0, found -1. Fix: e.g. --top" in err


@pytest.mark.parametrize(
    ("content", "found"),
    [
        # a Python file passed by mistake (named .json): not JSON, its first line shown
        (b"import torch\n", "found a text file beginning 'import torch', not JSON. Fix:"),
        # some other JSON
        (b'{"a": 1}', "found JSON that is not one (expected a calibration (key 'schema_version'"),
        # not UTF-8 at all
        (b"\xff\xfe\x00", "expected a readable calibration file at"),
    ],
)
def test_predict_on_a_file_that_is_no_calibration_gives_one_fix(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes, found: str
) -> None:
    path = tmp_path / "cal.json"
    path.write_bytes(content)
    code, out, err = run(
        capsys, "predict", "_models:TinyMLP", "--input", "8x16", "--steps", "10",
        "--calibration", str(path),
    )  # fmt: skip
    assert (code, out, len(err.splitlines())) == (2, "", 1)
    assert found in err
    # one fix, for this command: not the store's "calibration=<...>" advice, nor ".."
    assert err.count("Fix:") == 1 and "calibration=" not in err and ".." not in err
    assert path.read_bytes() == content  # read only


def test_predict_names_its_inputs_as_profile_does(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys, "predict", "_models:TinyMLP", "--input", "8x16", "--input", "8x3",
        "--steps", "10", "--target", "h100-sxm",
    )  # fmt: skip
    # two inputs for a one-input forward: the model's own error, inputs as the user typed them
    assert code == 2 and "to train on inputs [8x16, 8x3], found TypeError" in err


def test_a_bad_device_name_says_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "profile", "_models:TinyMLP", "--input", "8x16", "--device", "gpu0")
    assert code == 2
    assert "expected a device such as 'cpu', 'cuda' or 'cuda:1', found 'gpu0'. Fix: " in err


# --- record: the command line's own words -----------------------------------------------------


@pytest.mark.parametrize("sensors", ["bogus", "nvml,", "rapl,nvm"])
def test_record_names_the_sensor_backends_in_the_command_lines_words(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, sensors: str
) -> None:
    out = tmp_path / "trace.csv"
    code, _, err = run(capsys, "record", "--seconds", "1", "--sensors", sensors, "--out", str(out))
    assert code == 2 and not out.exists()
    assert (
        "expected --sensors auto or a comma-separated list of nvml, rapl, estimate, fake, " in err
    )
    assert f"found {sensors!r}. Fix: e.g. --sensors nvml,rapl" in err
    assert "discover(" not in err  # the Python API's example, not an option


def test_record_of_a_named_backend_without_a_fix_of_its_own_gets_the_command_lines(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from lightning_to_energy.sensors import nvml as nvml_mod

    # no NVIDIA GPU at all (this VM): nothing to install, so the backend has no fix to offer
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setattr(nvml_mod, "nvidia_gpu_present", lambda: False)
    out = tmp_path / "trace.csv"
    code, _, err = run(capsys, "record", "--seconds", "1", "--sensors", "nvml", "--out", str(out))
    assert (code, len(err.splitlines())) == (2, 1) and not out.exists()
    assert "no NVIDIA GPU found (" in err
    assert "nvidia-smi). Fix: drop it from --sensors, or record what this machine has" in err


# --- fit and report on the wrong file or folder -----------------------------------------------


@pytest.mark.parametrize("command", ["fit", "report"])
def test_a_png_or_checkpoint_given_as_the_report_is_one_line_not_a_traceback(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str
) -> None:
    png = tmp_path / "energy_report.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")  # not UTF-8: fit raised UnicodeDecodeError
    code, out, err = run(capsys, command, str(png))
    assert (code, out, len(err.splitlines())) == (2, "", 1)
    assert f"{png}: expected a JSON energy report, found a binary file. Fix: pass the " in err
    # fit names the file once, not "cannot read report X: X: ..."
    assert err.count(str(png)) == 1


def test_fit_on_a_folder_of_run_directories_names_them(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    logs = tmp_path / "lightning_logs"
    for version in ("version_0", "version_1"):
        write(make_report(RUN_A), logs / version)
    code, out, err = run(capsys, "fit", str(logs))
    assert (code, out, len(err.splitlines())) == (2, "", 1)
    assert f"found neither in {logs}. Fix: pass the run directories themselves: " in err
    assert f"{logs / 'version_0'} {logs / 'version_1'}." in err
    # an empty folder: what it should hold, and that `study run` writes a study's
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, "fit", str(empty))
    assert code == 2 and "e.g. lightning_logs/version_0" in err and "study run DIR" in err


# --- study run: bad options refused before anything runs ---------------------------------------


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (["--windows", "0"], "expected --windows >= 1, found 0. Fix: e.g. --windows 3"),
        (["--min-seconds", "-1"], "expected --min-seconds >= 0, found -1.0. Fix: e.g. "),
        (["--min-seconds", "nan"], "expected --min-seconds >= 0, found nan. Fix: e.g. "),
        (["--budget-min", "0"], "expected --budget-min > 0 minutes, found 0.0. Fix: e.g. "),
        (["--hardware", "h999"], "found 'h999'. Fix: use one of those keys"),
    ],
)
def test_study_run_refuses_bad_options_in_one_line_before_running(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, option: list[str], expected: str
) -> None:
    out = tmp_path / "study"
    code, stdout, err = run(
        capsys, "study", "run", str(out), "--grid", "tiny", "--device", "cpu", *option
    )
    assert (code, stdout, len(err.splitlines())) == (2, "", 1)
    assert expected in err and not out.exists()  # nothing trained, nothing written


@pytest.mark.parametrize("budget", ["-1", "0", "inf", "nan"])
def test_calibrate_refuses_a_budget_before_opening_the_device(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, budget: str
) -> None:
    out = tmp_path / "cal.json"
    # --device cuda:0 on this CPU machine would fail too: the budget is checked first
    code, stdout, err = run(capsys, "calibrate", "--budget-s", budget, "--out", str(out))
    assert (code, stdout, len(err.splitlines())) == (2, "", 1)
    assert f"expected --budget-s > 0 seconds (finite), found {float(budget)}. Fix: " in err
    assert "CUDA" not in err and not out.exists()


# --- the user's own model code failing while it is built --------------------------------------

_USER_MODULE = """
from torch import nn


class NeedsWidth(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.layer = nn.Linear(width, 2)


def factory():
    return {}["weights_path"]  # the user's own bug, inside a zero-argument factory
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "ltoe_pass_models.py").write_text(_USER_MODULE, encoding="utf-8")
    (tmp_path / "ltoe_pass_broken.py").write_text("raise RuntimeError('at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "ltoe_pass_models"


def test_a_factory_that_fails_inside_is_not_told_it_needs_no_arguments(
    capsys: pytest.CaptureFixture[str], user_module: str
) -> None:
    code, _, err = run(capsys, "profile", f"{user_module}:factory", "--input", "8x16")
    assert (code, len(err.splitlines())) == (2, 1)
    # it takes no arguments: the fault is in its body, and --traceback can show where
    assert f"expected {user_module}:factory() to build the model, found KeyError: " in err
    assert "'weights_path'. Fix: correct the constructor or factory (--traceback" in err
    assert "no arguments" not in err
    code, _, err = run(
        capsys, "profile", f"{user_module}:factory", "--input", "8x16", "--traceback"
    )
    assert code == 2 and "Traceback (most recent call last)" in err
    assert 'return {}["weights_path"]' in err  # the user's own line


def test_a_class_that_needs_arguments_is_told_so(
    capsys: pytest.CaptureFixture[str], user_module: str
) -> None:
    code, _, err = run(capsys, "profile", f"{user_module}:NeedsWidth", "--input", "8x16")
    assert code == 2
    assert "to build with no arguments, found that it needs some (missing a required " in err
    assert "'width')" in err


def test_a_module_that_fails_at_import_offers_the_traceback(
    capsys: pytest.CaptureFixture[str], user_module: str
) -> None:
    code, _, err = run(capsys, "profile", "ltoe_pass_broken:net", "--input", "8x16", "--traceback")
    assert code == 2 and "raise RuntimeError('at import')" in err
    assert err.rstrip().endswith(
        "found RuntimeError: at import. Fix: run `python -c 'import ltoe_pass_broken'` and fix "
        "the error it shows (--traceback shows where it failed)."
    )


@pytest.mark.parametrize(
    ("given", "found"),
    [
        (
            ["--step-time", "0.5"],
            "found --step-time 0.5, which it would ignore. Fix: drop --step-time,",
        ),
        (
            ["--step-time", "0.5", "--step-overhead", "0.01"],
            "found --step-time 0.5 and --step-overhead 0.01, which it would ignore. Fix: drop "
            "--step-time and --step-overhead,",
        ),
    ],
)
def test_predict_with_a_physical_calibration_refuses_a_step_time_it_would_ignore(
    capsys: pytest.CaptureFixture[str], given: list[str], found: str
) -> None:
    # the built-in h100-sxm calibration predicts the step's time itself: a 0.5 s step given by
    # the user planned exactly the same joules as none, without a word
    code, out, err = run(
        capsys, "predict", "_models:TinyMLP", "--input", "8x16", "--steps", "10",
        "--target", "h100-sxm", *given,
    )  # fmt: skip
    assert (code, out, len(err.splitlines())) == (2, "", 1)
    assert "with the built-in calibration: it carries the physical step model of h100-sxm" in err
    assert found in err


@pytest.mark.parametrize("features", ["", " , "])
def test_fit_refuses_empty_features_instead_of_fitting_the_defaults(
    capsys: pytest.CaptureFixture[str], two_runs: tuple[str, str], features: str
) -> None:
    code, out, err = run(capsys, "fit", *two_runs, "--features", features)
    assert (code, out, len(err.splitlines())) == (2, "", 1)
    assert f"expected --features as comma-separated feature names, found {features!r}." in err


def test_target_cuda_without_a_gpu_says_the_fix_in_options(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = run(capsys, "profile", "_models:TinyMLP", "--input", "8x16", "--target", "cuda")
    assert (code, len(err.splitlines())) == (2, 1)
    assert "expected a CUDA device for --target cuda, found none (torch " in err
    assert "(e.g. --target h100-sxm), or drop --target" in err and "hardware=" not in err


@pytest.mark.parametrize("command", ["fit", "report"])
def test_a_script_passed_for_a_report_is_named_not_called_damaged(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str
) -> None:
    script = tmp_path / "mymodel.py"
    script.write_text("import torch\nprint(1)\n")
    code, out, err = run(capsys, command, str(script))
    assert (code, out, err.count("\n")) == (2, "", 1)
    # what was expected, what the file is (its kind and first line), and the fix
    assert (
        f"{script}: expected a JSON energy report, found a Python file beginning "
        "'import torch', not JSON. Fix: pass the energy_report.json a run wrote" in err
    )
    assert "damaged" not in err


def test_predict_names_a_script_passed_for_a_calibration(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    script = tmp_path / "notes.txt"
    script.write_text("\n  my calibration notes, written by hand\n")
    code, _, err = run(
        capsys, "predict", "_models:TinyMLP", "--input", "8x16", "--steps", "10",
        "--calibration", str(script),
    )  # fmt: skip
    assert code == 2
    assert (
        f"at {script}, found a text file beginning 'my calibration notes, written by hand', "
        "not JSON. Fix:" in err
    )


def test_a_truncated_report_is_still_called_damaged(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cut = tmp_path / "energy_report.json"
    cut.write_text('{"format": "lightning-to-energy/report", "windows": [')
    code, _, err = run(capsys, "report", str(cut))
    assert code == 2 and "found invalid JSON (" in err and "damaged or truncated" in err
