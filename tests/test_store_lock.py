"""The calibration store's folder lock: why one lock per folder, and that it is never stale.

``CalibrationStore.save`` locks the file's folder (see ``_file_lock``'s docstring). These tests
pin the two reasons that choice rests on: a save into an explicit file of other hardware writes
the file beside it, which another process may be saving to directly (one folder lock covers
both), and a lock held by a killed process is gone with it.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from lightning_to_energy.calibration.data import Calibration
from lightning_to_energy.calibration.store import CalibrationStore, CalibrationWarning
from lightning_to_energy.hardware.identity import HardwareInfo, hardware_fingerprint
from test_calibration import H100, RUN_A, RUN_B, calib

A100 = HardwareInfo(("NVIDIA A100-SXM4-40GB",), "535.54.03", "AMD EPYC 7742", 256)

# A child that takes the folder's flock, says so, and waits for a line on stdin (or its death).
_HOLDER = (
    "import fcntl, os, sys\n"
    "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
    "fcntl.flock(fd, fcntl.LOCK_EX)\n"
    "print('locked', flush=True)\n"
    "sys.stdin.readline()\n"
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX only")


def _slow_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Widen the gap between reading a file and replacing it, where unserialised saves race."""
    original = CalibrationStore._read

    def slow_read(self: CalibrationStore, path: Path) -> Any:
        found = original(self, path)
        time.sleep(0.2)
        return found

    monkeypatch.setattr(CalibrationStore, "_read", slow_read)


def test_a_save_redirected_beside_a_file_and_a_direct_save_there_both_land(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    explicit = tmp_path / "cal.json"
    other = Calibration.from_model(RUN_A, A100, run_id="a100", date="2026-11-25T08:00:00+00:00")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        assert CalibrationStore.from_path(explicit).save(other) == explicit
    beside = tmp_path / f"cal.{hardware_fingerprint(H100)}.json"
    _slow_reads(monkeypatch)
    # run-a goes to cal.json (the A100's): saved beside it; run-b names that file directly.
    # A lock on each named file alone would let them merge into `beside` at once.
    saves = [
        threading.Thread(target=CalibrationStore.from_path(path).save, args=(calib(model, run),))
        for path, model, run in ((explicit, RUN_A, "run-a"), (beside, RUN_B, "run-b"))
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)  # "saved beside it": expected
        for thread in saves:
            thread.start()
        for thread in saves:
            thread.join()
    loaded = CalibrationStore.from_path(beside).load(hardware_fingerprint(H100))
    assert loaded is not None
    # serialised: both runs, 3 + 2 windows (one run's 3 or 2 if they raced)
    assert sorted(r.run_id for r in loaded.runs) == ["run-a", "run-b"]
    assert len(loaded.windows) == 5
    # the A100's file is left as it was: its one run
    kept = CalibrationStore.from_path(explicit).load(hardware_fingerprint(A100))
    assert kept is not None and [r.run_id for r in kept.runs] == ["a100"]


def _start_holder(folder: Path) -> subprocess.Popen[str]:
    """A process that takes the folder lock of ``folder`` (``_HOLDER``), prints "locked", and
    lets it go at the next line on its stdin."""
    return subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_a_save_of_another_file_in_the_folder_waits_for_the_lock(tmp_path: Path) -> None:
    holder = _start_holder(tmp_path)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        written: list[Path | None] = []
        save = threading.Thread(
            target=lambda: written.append(CalibrationStore(tmp_path).save(calib(RUN_A, "run-a")))
        )
        save.start()
        save.join(timeout=0.5)
        # still waiting: the folder is locked by the holder, whatever file it merges
        assert save.is_alive() and written == []
    finally:
        assert holder.stdin is not None
        holder.stdin.write("release\n")
        holder.stdin.flush()
        holder.wait(timeout=30)
    save.join(timeout=30)
    assert written == [tmp_path / f"{hardware_fingerprint(H100)}.json"]


def test_a_lock_held_by_a_killed_process_does_not_block_the_next_save(tmp_path: Path) -> None:
    holder = _start_holder(tmp_path)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    holder.kill()  # killed mid-save: SIGKILL, no cleanup of its own
    holder.wait(timeout=30)
    holder.stdout.close()
    assert holder.stdin is not None
    holder.stdin.close()
    written: list[Path | None] = []
    save = threading.Thread(
        target=lambda: written.append(CalibrationStore(tmp_path).save(calib(RUN_A, "run-a")))
    )
    save.start()
    save.join(timeout=30)
    # the kernel dropped the dead process's lock: the save went through (a stale lock would
    # leave the thread waiting and nothing written)
    assert not save.is_alive()
    assert written == [tmp_path / f"{hardware_fingerprint(H100)}.json"]
