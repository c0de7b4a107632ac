"""benchmarks/gpu_session.sh, rehearsed without a GPU: the GPU session must work on its first call.

Every command the session runs is parsed with the real argparse parser of its script (nothing
is run), and the script's own logic (stage names, the call's deadline, the study's time budget)
runs with a stub ``PYTHON`` that only records its arguments.
"""

from __future__ import annotations
import __future__

import argparse
import ast
import contextlib
import dataclasses
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SESSION = ROOT / "benchmarks" / "gpu_session.sh"
# Stand-ins for the shell variables of the commands (a new variable must be added here).
SHELL_VALUES = {"$dir": "gpu-results/nvidia-h100-80gb-hbm3", "$budget_min": "4.50"}
GPU = "NVIDIA H100 80GB HBM3"  # GPU_NAME for the stub runs (no nvidia-smi here)
SLUG = "nvidia-h100-80gb-hbm3"
# pytest's own options the session passes (the others must be conftest's)
PYTEST_OPTIONS = {"--junitxml"}

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="gpu_session.sh is a bash script")


def script_functions(relative: str, *names: str, **extra: object) -> dict[str, Any]:
    """The named top-level functions of ``benchmarks/x.py`` or ``examples/x.py``, unimported.

    Importing ``overhead.py`` or ``gpu_bf16.py`` imports Lightning (about 8 s of CPU here), so
    the functions' own code is compiled from the script instead, with the script's docstring,
    its literal constants (``VARIANTS = (...)``), ``argparse``, ``math``, ``statistics`` and
    ``extra`` as their globals: a name missing from those fails loudly (NameError) when called.
    """
    path = ROOT / relative
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    namespace: dict[str, Any] = {
        "__doc__": ast.get_docstring(tree, clean=False),
        "__name__": "script_" + path.stem,
        "argparse": argparse,
        "math": math,
        "statistics": statistics,
        **extra,
    }
    defs: list[ast.stmt] = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                with contextlib.suppress(ValueError):
                    namespace[target.id] = ast.literal_eval(node.value)
        elif isinstance(node, ast.FunctionDef) and node.name in names:
            defs.append(node)
    missing = set(names) - {d.name for d in defs if isinstance(d, ast.FunctionDef)}
    assert not missing, f"{relative}: no top-level function {sorted(missing)}"
    # annotations stay strings, as under the script's own `from __future__ import annotations`
    flags = __future__.annotations.compiler_flag
    code = compile(ast.Module(body=defs, type_ignores=[]), str(path), "exec", flags=flags)
    exec(code, namespace)
    return namespace


def build_parser(relative: str) -> argparse.ArgumentParser:
    """The real parser of a script (its ``build_parser()``), without importing the script."""
    # paper_study.py's defaults come from lightning_to_energy.study.runner (which imports
    # Lightning);
    # they are defaults only, so any value parses the same flags.
    extra = {"DEFAULT_MIN_SECONDS": 8.0, "DEFAULT_WINDOWS": 3}
    parser = script_functions(relative, "build_parser", **extra)["build_parser"]()
    assert isinstance(parser, argparse.ArgumentParser)
    return parser


def session_commands() -> dict[str, list[list[str]]]:
    """The Python commands each stage of gpu_session.sh runs (``run "$py" ...``), split."""
    text = SESSION.read_text(encoding="utf-8").replace("\\\n", " ")
    commands: dict[str, list[list[str]]] = {}
    stage = None
    for line in text.splitlines():
        label = re.fullmatch(r"\s{8}(\w+)\)", line)
        if label:
            stage = label.group(1)
        found = re.match(r'\s*(?:\w+="[^"]*"\s+)?run "\$py" (.*?)(?:\s*\|\|.*)?$', line)
        if found is None:
            continue
        body = found.group(1)
        for var, value in SHELL_VALUES.items():
            body = body.replace(var, value)
        assert "$" not in body, f"a shell variable without a stand-in in: {line.strip()}"
        assert stage is not None
        commands.setdefault(stage, []).append(shlex.split(body))
    return commands


def _pytest_flags(args: list[str]) -> None:
    """``-m pytest``: the opt-in flag is conftest's, the marker is registered."""
    conftest = (ROOT / "tests" / "conftest.py").read_text(encoding="utf-8")
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    for flag in (a for a in args if a.startswith("--") and a not in PYTEST_OPTIONS):
        assert f'"{flag}"' in conftest, f"pytest {flag}: not an option of tests/conftest.py"
    for path in (a for a in args if a.startswith("tests/")):
        assert (ROOT / path).is_file(), f"pytest {path}: no such test file"
    marker = args[args.index("-m") + 1]
    assert f'"{marker}: ' in pyproject, f"pytest -m {marker}: not a marker of pyproject.toml"


def _parser_for(command: list[str]) -> tuple[Callable[[], argparse.ArgumentParser], list[str]]:
    if command[0] == "-m" and command[1] == "lightning_to_energy":
        from lightning_to_energy import cli

        return cli.build_parser, command[2:]
    script = command[0]
    assert (ROOT / script).is_file(), f"{script}: no such file"
    return partial(build_parser, script), command[1:]


def test_every_stage_runs_commands_its_scripts_accept() -> None:
    commands = session_commands()
    stages = ["calibrate", "converge", "overhead", "plan", "study", "tests", "traces"]
    assert sorted(commands) == stages
    parsed = 0
    for stage, stage_commands in commands.items():
        for command in stage_commands:
            if command[0] == "-c":
                continue  # an inline program
            if command[:2] == ["-m", "pytest"]:
                _pytest_flags(command[2:])
                continue
            if stage == "traces":
                script = ROOT / command[0]
                if not script.is_file():
                    continue  # written on another branch: the stage skips itself without it
                text = script.read_text(encoding="utf-8")
                if "def build_parser(" not in text:  # its parser is built inside main()
                    for flag in (a for a in command[1:] if a.startswith("--")):
                        assert f'add_argument("{flag}"' in text, f"{script}: no {flag}"
                    parsed += 1
                    continue
            build, args = _parser_for(command)
            try:
                build().parse_args(args)
            except SystemExit:
                pytest.fail(f"stage {stage}: {' '.join(command)}: rejected by its parser")
            parsed += 1
    # tests: the sensors CLI; calibrate; traces (when its script is here); 2 x overhead;
    # converge; plan; 2 x study (bf16 first, then the rest): 1 + 1 + 2 + 1 + 1 + 2 = 8, + 1
    # with traces
    traces = (ROOT / "benchmarks" / "record_cuda_traces.py").is_file()
    assert parsed == 8 + traces


def test_the_session_fits_one_seven_minute_call() -> None:
    text = SESSION.read_text(encoding="utf-8")
    caps = dict(re.findall(r"^\s+(\w+)\) echo (\d+) ;;", text, flags=re.MULTILINE))
    # 60 + 150 + 60 + 90 + 60 = 420 s = 7 minutes for the five stages; plan (45 s)
    # and the study take what they leave, under the same deadline
    assert {k: int(v) for k, v in caps.items() if k != "study"} == {
        "tests": 60,
        "calibrate": 150,
        "traces": 60,
        "overhead": 90,
        "converge": 60,
        "plan": 45,
    }
    assert 'call_s="${CALL_S:-420}"' in text
    (calibrate,) = session_commands()["calibrate"]
    from lightning_to_energy import cli

    args = cli.build_parser().parse_args(calibrate[2:])
    # its budget leaves the 150 s cap 20 s for the interpreter, CUDA and the fit
    assert args.budget_s == 130 and args.device == "cuda:0"


def test_the_overhead_stage_measures_the_cnn_in_fp32() -> None:
    # The header promises "bf16-mixed GPT and fp32 CNN"; on cuda the script's default
    # precision is bf16-mixed, so the CNN command must ask for 32-true itself.
    parser = build_parser("benchmarks/overhead.py")
    gpt, cnn = (parser.parse_args(c[1:]) for c in session_commands()["overhead"])
    assert (gpt.model, gpt.precision) == (None, None)  # main() picks gpt and bf16-mixed on cuda
    assert (cnn.model, cnn.precision) == ("cnn", "32-true")
    # TOEnergy and ThroughputMonitor in the same run: the ratio from one process
    assert gpt.variants == cnn.variants == "baseline,toenergy,throughput"


# --- the script's own logic, with a stub PYTHON ----------------------------------------------


@pytest.fixture
def stub_python(tmp_path: Path) -> Path:
    """A PYTHON that appends its arguments to calls.txt and exits 0 (``sleep`` sleeps first)."""
    stub = tmp_path / "python"
    stub.write_text(
        '#!/bin/sh\necho "$*" >> "$(dirname "$0")/calls.txt"\n'
        '[ -n "$STUB_SLEEP" ] && sleep "$STUB_SLEEP"\nexit 0\n'
    )
    stub.chmod(0o755)
    return stub


def session(
    stages: str, out: Path, stub: Path, **env: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    done = subprocess.run(
        ["bash", str(SESSION), stages, str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHON": str(stub), "GPU_NAME": GPU, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    calls_file = stub.parent / "calls.txt"
    calls = calls_file.read_text().splitlines() if calls_file.exists() else []
    return done, calls


def test_an_unknown_stage_or_a_bad_deadline_runs_nothing(tmp_path: Path, stub_python: Path) -> None:
    out = tmp_path / "out"
    done, calls = session("calibrate,bogus", out, stub_python)
    assert done.returncode == 2
    assert "unknown stage 'bogus'" in done.stderr
    done, more = session("calibrate", out, stub_python, CALL_S="9m")
    assert done.returncode == 2
    assert "expected CALL_S to be a whole number of seconds > 0" in done.stderr
    assert "found '9m'" in done.stderr and "fix: e.g. CALL_S=420" in done.stderr
    assert calls == more == [] and not out.exists()


def test_results_are_labelled_with_the_real_gpu_and_packed_after_each_stage(
    tmp_path: Path, stub_python: Path
) -> None:
    import tarfile

    out, pack = tmp_path / "out", tmp_path / "results.tgz"
    done, calls = session(
        "calibrate,converge", out, stub_python, GPU_NAME="NVIDIA H200", PACK=str(pack)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    gpu_dir = out / "nvidia-h200"  # an H200 lent under the H100 kind is labelled an H200
    assert "gpu: NVIDIA H200" in (gpu_dir / "session.txt").read_text()
    rows = (gpu_dir / "stages.csv").read_text().splitlines()
    assert rows[0] == "stage,exit,seconds,utc"
    assert [r.split(",")[:2] for r in rows[1:]] == [["calibrate", "0"], ["converge", "0"]]
    (gpu_dir / "converge" / "plot.png").write_bytes(b"png")  # a figure: never packed
    with tarfile.open(pack) as tar:
        names = set(tar.getnames())
    assert {
        "nvidia-h200/calibrate.log",
        "nvidia-h200/converge.log",
        "nvidia-h200/stages.csv",
    } <= names
    assert calls[0].split()[:3] == ["-m", "lightning_to_energy", "calibrate"]
    assert f"--out {gpu_dir}/calibration.json" in calls[0]


def test_the_study_trains_for_the_time_left_in_the_call(tmp_path: Path, stub_python: Path) -> None:
    out = tmp_path / "out"
    done, calls = session("study", out, stub_python, CALL_S="300")
    assert done.returncode == 0, done.stdout + done.stderr
    bf16, rest = calls  # the bf16 configurations first, then (time left) all the others
    parser = build_parser("benchmarks/paper_study.py")
    first, second = parser.parse_args(bf16.split()[1:]), parser.parse_args(rest.split()[1:])
    # 300 s - 20 s for Python's start = 280 s = 4 min 40 s = 4.66 min (4.65 if a second passed)
    assert first.budget_min in (4.66, 4.65) and first.only == "bf16"
    assert second.budget_min in (4.66, 4.65, 4.63) and second.only is None
    assert first.out == second.out == f"{out}/{SLUG}/study"


def test_the_study_is_not_started_without_time_for_one_configuration(
    tmp_path: Path, stub_python: Path
) -> None:
    done, calls = session("study", tmp_path / "out", stub_python, CALL_S="120")
    # 120 s - 20 s = 100 s < the 110 s paper_study.py needs (its minimum budget is 106 s)
    assert done.returncode == 3
    assert calls == []
    log = (tmp_path / "out" / SLUG / "study.log").read_text()
    # a loaded machine may tick one second between the deadline's start and the stage
    assert re.search(r"not started: (120|119) s left in this call \(CALL_S=120 s\)", log)
    assert re.search(r"== stage study: exit 3 after [01] s", log)


def test_a_stage_past_the_deadline_is_stopped_and_the_next_not_started(
    tmp_path: Path, stub_python: Path
) -> None:
    out = tmp_path / "out"
    t0 = time.monotonic()
    done, calls = session("calibrate,converge", out, stub_python, CALL_S="3", STUB_SLEEP="20")
    # stopped after at most 3 s, not after the stub's 20 s (3 s: a loaded machine may spend a
    # second before the first command, which a 1 s deadline would leave unstarted)
    assert time.monotonic() - t0 < 12
    assert done.returncode == 124
    assert [c.split()[2] for c in calls] == ["calibrate"]
    log = (out / SLUG / "calibrate.log").read_text()
    assert "stopped at the stage's cap or the call's deadline (CALL_S=3 s" in log
    converge = (out / SLUG / "converge.log").read_text()
    assert "not started: the stage's cap or the call's deadline (CALL_S=3 s) has passed" in converge
    assert "== stage converge: exit 124" in converge


def test_converge_starts_from_an_empty_calibration_store(tmp_path: Path) -> None:
    stub = tmp_path / "python"
    stub.write_text('#!/bin/sh\necho "$XDG_CACHE_HOME" > "$(dirname "$0")/calls.txt"\n')
    stub.chmod(0o755)
    out = tmp_path / "out"
    cache = out / SLUG / "converge" / "cache"
    (cache / "old").mkdir(parents=True)  # a store from an earlier call
    done, calls = session("converge", out, stub)
    assert done.returncode == 0, done.stdout + done.stderr
    assert calls == [str(cache)]
    assert not (cache / "old").exists()


# --- overhead.py: did the timed steps see a window close? --------------------------------------


def test_timed_closes_counts_train_windows_that_end_inside_the_timed_steps() -> None:
    from lightning_to_energy.reporting.records import WindowRecord

    def window(index: int, first_step: int, steps: int, loop: str = "train") -> WindowRecord:
        return WindowRecord(
            index, loop, first_step, steps, 0.0, 1.0, {}, None, None, None, None, "none", 0, 0
        )

    timed_closes = script_functions("benchmarks/overhead.py", "timed_closes")["timed_closes"]
    windows = [
        window(0, first_step=0, steps=4),
        window(1, first_step=4, steps=11),
        window(2, first_step=15, steps=13),
        window(3, first_step=28, steps=12),
        window(4, loop="validate", first_step=0, steps=20),
    ]
    # timed steps 5..39; train windows end at steps 0 + 4 - 1 = 3, 4 + 11 - 1 = 14,
    # 15 + 13 - 1 = 27 and 28 + 12 - 1 = 39; 3 is a warm-up step, and the window ending at the
    # last timed step 39 is not a boundary window: it fell due and closed in that step's hooks,
    # inside the timed span: 14, 27 and 39 -> 3
    assert timed_closes(windows, (5, 39)) == 3
    # the same last window closed by the end of training (flag "boundary"): 14 and 27 -> 2
    windows[3] = dataclasses.replace(windows[3], flags=("boundary",))
    assert timed_closes(windows, (5, 39)) == 2


def test_the_summary_warns_when_no_window_closed_inside_the_timed_steps() -> None:
    closes_line = script_functions(
        "benchmarks/overhead.py", "closes_line", DEFAULT_MIN_WINDOW_S=2.0
    )["closes_line"]
    none, two = SimpleNamespace(closes=0), SimpleNamespace(closes=2)  # RunResult.closes
    args = argparse.Namespace(warmup=5, steps=140)
    line = closes_line({"baseline": [none], "toenergy": [none]}, args, 0.01)
    # 140 - 5 = 135 timed steps x 10 ms = 1.35 s; two 2 s windows need 5 + 4 s / 10 ms = 405
    assert line.startswith("window closes inside the timed steps, median per run: toenergy 0\n")
    assert "timed span 1.35 s" in line and "Fix: --steps 405 or more." in line
    line = closes_line({"toenergy": [two, none, two], "toe-fake": [two]}, args, 0.01)
    # median of 2, 0, 2 = 2: no warning
    assert line == "window closes inside the timed steps, median per run: toenergy 2, toe-fake 2"
