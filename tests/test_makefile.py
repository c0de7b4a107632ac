"""The Makefile's installs, read with `make -n` (nothing is built): the demo gets the runtime
and plot extras only, and `make test` still installs the dev extra after a `make demo`."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _dry_run(directory: Path, target: str) -> list[str]:
    done = subprocess.run(
        ["make", "-n", target], cwd=directory, capture_output=True, text=True, check=True
    )
    return done.stdout.splitlines()


def _installs(lines: list[str]) -> list[str]:
    return [line.split("install -q -e ")[1] for line in lines if "install -q -e " in line]


def _touch(path: Path, when: float) -> None:
    path.touch()
    os.utime(path, (when, when))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "Makefile", tmp_path)
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    old = time.time() - 100
    os.utime(tmp_path / "pyproject.toml", (old, old))
    return tmp_path


def test_demo_installs_runtime_and_plot_only(project: Path) -> None:
    lines = _dry_run(project, "demo")
    assert _installs(lines) == ['".[plot]"']
    assert lines[-1].endswith("examples/digits_demo.py")


def test_test_installs_dev_after_a_demo_and_nothing_twice(project: Path) -> None:
    venv = project / ".venv"
    venv.mkdir()
    now = time.time()
    # What `make demo` leaves behind: the venv, then the plot install.
    _touch(venv / ".base", now - 10)
    _touch(venv / ".installed-plot", now - 5)
    assert _installs(_dry_run(project, "demo")) == []  # the demo again: nothing to install
    assert _installs(_dry_run(project, "test")) == ['".[dev,plot]"']
    _touch(venv / ".installed-dev", now)
    assert _installs(_dry_run(project, "test")) == []
    assert _installs(_dry_run(project, "lint")) == []
    # A changed pyproject.toml reinstalls both, on their next use.
    _touch(project / "pyproject.toml", now + 10)
    assert _installs(_dry_run(project, "demo")) == ['".[plot]"']
    assert _installs(_dry_run(project, "test")) == ['".[dev,plot]"']
