"""Every file loader survives any JSON; every written file follows the umask (issue 13: 8, 9)."""

from __future__ import annotations

import json
import os
import random
import stat
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lightning_to_energy import cli
from lightning_to_energy.calibration import CalibrationStore, CalibrationWarning
from lightning_to_energy.counting.cost_model import CostModel
from lightning_to_energy.hardware.specs import find_hardware, load_hardware
from lightning_to_energy.reporting.codec import load_report, report_to_dict
from lightning_to_energy.reporting.files import save_report, write_csv
from lightning_to_energy.study.runs import load_runs
from test_calibration import RUN_A, calib
from test_report import make_report
from test_scaling import run_json

# Deeper than json's C scanner recurses (the interpreter's limit, 1000 by default).
DEEP = 20_000


def _seeds() -> dict[str, Any]:
    return {
        "report": report_to_dict(make_report()),
        "calibration": calib(RUN_A, "run-a").to_dict(),
        "hardware": {"hardware": [find_hardware("h100-sxm").to_dict() | {"key": "fuzz-gpu"}]},
        "cost": {"tos": {"fma:fp32": 100.0, "add:bf16": 20}},
        "run": run_json("a"),
    }


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    r = rng.random()
    if depth > 3 or r < 0.5:
        return rng.choice(
            [None, True, False, 0, -1, 1.5, 1e308, -0.0, 2**70, "", "x", "fp32", [], {}]
        )
    if r < 0.75:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    keys = ["a", "key", "windows", "hardware", "format", "0"]
    return {rng.choice(keys): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*prefix, i))


def _mutate(doc: Any, rng: random.Random) -> Any:
    """``doc`` with one value (anywhere, any depth) replaced by a random one, or removed."""
    doc = json.loads(json.dumps(doc))
    path = rng.choice(list(_paths(doc)))
    if not path:
        return _random_value(rng)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if isinstance(parent, dict) and rng.random() < 0.2:
        del parent[path[-1]]
    else:
        parent[path[-1]] = _random_value(rng)
    return doc


def _load_calibration(path: Path) -> object:
    """The store's loader: an unusable file is None and a warning naming the file."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = CalibrationStore.from_path(path).load("fuzz")
    if found is None:
        messages = [str(w.message) for w in caught if issubclass(w.category, CalibrationWarning)]
        assert messages and str(path) in messages[0], messages
        raise ValueError(messages[0])
    return found


LOADERS: dict[str, tuple[str, Callable[[Path], object]]] = {
    "report": ("energy_report.json", load_report),
    "calibration": ("cal.json", _load_calibration),
    "hardware": ("hw.json", lambda p: load_hardware(p, register=False)),
    "cost": ("costs.json", CostModel.from_file),
    "run": ("a.run.json", lambda p: load_runs([p])),
}


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_every_loader_turns_any_json_into_a_result_or_one_error_naming_the_file(
    tmp_path: Path, kind: str
) -> None:
    name, load = LOADERS[kind]
    seed = _seeds()[kind]
    rng = random.Random(f"issue-13-{kind}")  # seeded: the same 60 documents every run
    path = tmp_path / name
    texts = [json.dumps(seed)]  # the valid document loads
    texts += [json.dumps(_mutate(seed, rng)) for _ in range(50)]
    texts += [json.dumps(_random_value(rng)) for _ in range(8)]
    texts.append("[" * DEEP + "]" * DEEP)  # too deep for the parser
    texts.append('{"a":' * DEEP + "1" + "}" * DEEP)
    errors = 0
    for text in texts:
        path.write_text(text)
        try:
            load(path)
        except ValueError as exc:  # the loaders' one documented error (ReportFormatError too)
            errors += 1
            # the first line says it all (a hardware or cost file's fix may add a TOML example)
            first = str(exc).splitlines()[0]
            assert str(path) in first and "expected" in first, first
    # at least the two deep documents fail; the valid seed loads (so not all 60 fail)
    assert 2 <= errors < len(texts)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    return code, capsys.readouterr().err


@pytest.mark.parametrize("command", ["report", "fit", "predict"])
@pytest.mark.parametrize("content", ["hardware-list", "deep"])
def test_malformed_files_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str, content: str
) -> None:
    path = tmp_path / "cal.json"
    if content == "deep":
        path.write_text("[" * DEEP + "]" * DEEP)
    else:
        doc = calib(RUN_A, "run-a").to_dict()
        doc["hardware"] = [1, 2]
        path.write_text(json.dumps(doc))
    predict = "predict _models:TinyMLP --input 8x16 --step-time 0.01 --steps 10 --calibration"
    argv = {
        "report": ["report", str(path)],
        "fit": ["fit", str(path), "--out", str(tmp_path / "out.json")],
        "predict": [*predict.split(), str(path)],
    }[command]
    code, err = _cli(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1, err  # one line: no traceback, no separate warning
    assert err.startswith(f"lightning-to-energy {command}: error: ")
    assert str(path) in err
    if command == "predict":  # the calibration loader names the JSON path and what it found
        assert ("hardware: expected a JSON object" in err) == (content == "hardware-list")


@pytest.fixture
def umask_027() -> Iterator[None]:
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")
def test_written_files_follow_the_umask_and_keep_a_replaced_files_mode(
    tmp_path: Path, umask_027: None
) -> None:
    report = make_report()
    saved = save_report(report, tmp_path / "run", plot=False)
    csv = write_csv(report, tmp_path / "windows.csv")
    store = CalibrationStore(tmp_path / "store")
    cal = store.save(calib(RUN_A, "run-a"))
    assert cal is not None
    # 0o666 & ~0o027 = 0o640 (what open() gives a new file), not mkstemp's 0o600
    for path in (saved.json_path, saved.csv_path, csv, cal):
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path
    # A file replaced keeps its own mode: a shared calibration stays readable by others.
    cal.chmod(0o644)
    store.save(calib(RUN_A, "run-b"))
    assert stat.S_IMODE(cal.stat().st_mode) == 0o644
