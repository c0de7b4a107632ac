"""The command line's one rule for output files (``_files.output_problem``), option by option:
every output option refuses the same faults with the same message, before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from _records import bare_report
from lightning_to_energy import cli
from lightning_to_energy._files import output_problem
from lightning_to_energy.reporting.files import save_report


def _argv(option: str, target: Path, tmp_path: Path) -> list[str]:
    """A command line whose only output is ``target`` under ``option``."""
    if option in ("report --csv", "report --plot"):
        saved = save_report(bare_report(), tmp_path / "run", plot=False)
        return ["report", str(saved.json_path), option.split()[1], str(target)]
    return {
        "record --out": ["record", "--seconds", "0.1", "--sensors", "fake", "--out", str(target)],
        # the inputs need not exist: the output is checked first
        "fit --out": ["fit", str(tmp_path / "absent.json"), "--out", str(target)],
        "calibrate --out": ["calibrate", "--device", "cpu", "--out", str(target)],
        "study eval --results-md": [
            "study", "eval", str(tmp_path / "absent"), "--results-md", str(target),
        ],
    }[option]  # fmt: skip


# every output option of the CLI with the extension of its kind
OUTPUTS = [
    ("record --out", ".csv"),
    ("report --csv", ".csv"),
    ("report --plot", ".png"),
    ("fit --out", ".json"),
    ("calibrate --out", ".json"),
    ("study eval --results-md", ".md"),
]


@pytest.mark.parametrize(("option", "suffix"), OUTPUTS)
def test_every_output_refuses_a_missing_folder_with_the_mkdir_that_creates_it(
    option: str, suffix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "typo" / "deeper"
    target = folder / f"out{suffix}"
    assert cli.main(_argv(option, target, tmp_path)) == 2
    out, err = capsys.readouterr()
    flag = option.split()[-1]
    # one line, one fault, nothing printed before it, no folder made
    assert err.count("\n") == 1 and err.endswith(
        f": error: expected {flag} in an existing folder, found no folder {folder}. Fix: create "
        f"it (mkdir -p {folder}), or name a file in an existing folder, e.g. {flag} "
        f"{_example(option)}.\n"
    )
    assert out == "" and not (tmp_path / "typo").exists()


@pytest.mark.parametrize(("option", "suffix"), OUTPUTS)
def test_every_output_refuses_a_wrong_extension_naming_the_expected_one(
    option: str, suffix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    precious = tmp_path / "notes.txt"
    precious.write_text("mine\n")
    assert cli.main(_argv(option, precious, tmp_path)) == 2
    out, err = capsys.readouterr()
    flag = option.split()[-1]
    assert err.count("\n") == 1 and err.endswith(
        f": error: expected {flag} to name a {suffix} file, found {precious} (an existing file "
        f"that it would overwrite). Fix: e.g. {flag} {tmp_path / ('notes' + suffix)}.\n"
    )
    assert out == "" and precious.read_text() == "mine\n"


def _example(option: str) -> str:
    return {
        "record --out": "trace.csv",
        "report --csv": "energy_report.csv",
        "report --plot": "energy_report.png",
        "fit --out": "calibration.json",
        "calibrate --out": "calibration.json",
        "study eval --results-md": "results.md",
    }[option]


def test_a_new_name_with_another_extension_is_refused_too(tmp_path: Path) -> None:
    # `fit --out cal.txt` once wrote a calibration into a .txt: the kind is the extension
    problem = output_problem(tmp_path / "cal.txt", "--out", "calibration.json")
    assert problem == (
        f"expected --out to name a .json file, found {tmp_path / 'cal.txt'} (that name). "
        f"Fix: e.g. --out {tmp_path / 'cal.json'}."
    )


def test_an_existing_file_of_the_kind_is_checked_by_the_kinds_own_reader(tmp_path: Path) -> None:
    notes = tmp_path / "notes.json"
    notes.write_text("{}")
    seen: list[Path] = []

    def not_mine(path: Path) -> str | None:
        seen.append(path)
        return "no 'schema_version'"

    problem = output_problem(notes, "--out", "c.json", existing=not_mine, kind="calibration")
    assert seen == [notes]
    assert problem is not None and problem.startswith(
        f"expected --out to name a new file or a calibration to update, found {notes}, which "
        "is not a calibration (no 'schema_version'): it would be overwritten"
    )
    # a file the kind's reader accepts is fine, and a new one is never read
    assert output_problem(notes, "--out", "c.json", existing=lambda p: None) is None
    assert output_problem(tmp_path / "new.json", "--out", "c.json", existing=not_mine) is None
    assert seen == [notes]


def test_a_directory_is_refused_with_a_file_in_it(tmp_path: Path) -> None:
    problem = output_problem(tmp_path, "--csv", "energy_report.csv")
    assert problem == (
        f"expected --csv to name a file, found the directory {tmp_path}. Fix: name a file "
        f"in it, e.g. --csv {tmp_path / 'energy_report.csv'}."
    )


def test_a_file_where_the_folder_would_be_is_named_not_given_a_mkdir(tmp_path: Path) -> None:
    precious = tmp_path / "precious.py"
    precious.write_text("import torch\n")
    # precious.py/sub/x.csv: `mkdir -p` would fail on the file, so the file is named instead
    problem = output_problem(precious / "sub" / "x.csv", "--csv", "energy_report.csv")
    assert problem == (
        f"expected --csv in a folder, found {precious}, which is a file, not a folder. Fix: "
        f"name a file in an existing folder, e.g. --csv energy_report.csv."
    )
    assert precious.read_text() == "import torch\n"
