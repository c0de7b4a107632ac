"""``lightning-to-energy sensors`` and ``record``, and the replay of what record wrote."""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import pytest

from fakes.fake_pynvml import FakeGpu, make_fake_pynvml
from fakes.powercap import FakePowercap
from lightning_to_energy import cli
from lightning_to_energy.sensors import ReplaySensor
from lightning_to_energy.sensors import estimate as estimate_mod
from lightning_to_energy.sensors import rapl as rapl_mod


@pytest.fixture(autouse=True)
def _only_sensor_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    # Build the parser with this module's subcommands only, so these tests do not depend on
    # the other subcommands' modules.
    monkeypatch.setattr(cli, "_SUBCOMMANDS", ("sensors", "record"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(estimate_mod, "_announced", True)


@pytest.fixture
def bare_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No pynvml and no powercap tree: nothing can be measured (a GPU without its package)."""
    from lightning_to_energy.sensors import nvml as nvml_mod

    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setattr(nvml_mod, "nvidia_gpu_present", lambda: True)
    # the system's own tree missing, as on a VM (a root the user gave is another message)
    monkeypatch.delenv("LTE_POWERCAP_ROOT", raising=False)
    monkeypatch.setattr(rapl_mod, "DEFAULT_POWERCAP_ROOT", tmp_path / "no-powercap")


@pytest.mark.usefixtures("bare_machine")
def test_sensors_on_a_bare_machine_prints_both_reasons(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["sensors"]) == 0
    out = capsys.readouterr().out
    assert "Not available:" in out
    assert "  nvml:\n" in out and "pip install 'lightning-to-energy[nvidia]'" in out
    assert "  rapl:\n" in out and "no powercap tree" in out
    assert "cpu:estimate  estimate" in out  # the fallback is listed with its kind


@pytest.mark.usefixtures("bare_machine")
def test_sensors_without_any_nvidia_gpu_says_so_instead_of_the_extra(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning_to_energy.sensors import nvml as nvml_mod

    monkeypatch.setattr(nvml_mod, "nvidia_gpu_present", lambda: False)
    assert cli.main(["sensors"]) == 0
    out = capsys.readouterr().out
    assert "GPU energy not measured: no NVIDIA GPU found" in out
    assert "lightning-to-energy[nvidia]" not in out


def test_sensors_with_rapl_denied_prints_the_permission_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = FakePowercap.intel_server(tmp_path, sockets=1)
    tree.deny("intel-rapl:0")
    tree.deny("intel-rapl:0:0")
    tree.enforce_permissions(monkeypatch)
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert cli.main(["sensors", "--powercap-root", str(tree.root)]) == 0
    out = capsys.readouterr().out
    assert "CPU energy not measured: permission denied" in out
    assert "udev rule" in out


@pytest.mark.usefixtures("bare_machine")
def test_sensors_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["sensors", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert [s["domain"] for s in payload["sensors"]] == ["cpu:estimate"]
    assert payload["sensors"][0]["kind"] == "estimate"
    assert sorted(payload["skipped"]) == ["nvml", "rapl"]


def test_sensors_lists_what_it_finds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = FakePowercap.intel_server(tmp_path, sockets=1)
    monkeypatch.setitem(
        sys.modules, "pynvml", make_fake_pynvml([FakeGpu()], clock=time.perf_counter)
    )
    monkeypatch.setenv("LTE_POWERCAP_ROOT", str(tree.root))
    assert cli.main(["sensors"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Energy sensors found (3):")
    lines = out.splitlines()
    assert lines[1].split() == ["domain", "kind", "update", "min", "window", "source"]
    assert lines[2].split()[:6] == ["gpu:0", "counter", "100", "ms", "2", "s"]
    assert lines[3].split()[:4] == ["cpu:package-0", "counter", "1", "ms"]
    assert "[host-wide: local rank 0 only]" in lines[3]
    assert "Not available" not in out


def test_record_writes_a_trace_that_replays(tmp_path: Path) -> None:
    out = tmp_path / "trace.csv"
    argv = ["record", "--seconds", "0.3", "--interval", "0.05", "--sensors", "fake", "--out"]
    assert cli.main([*argv, str(out)]) == 0
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["time_s", "domain", "energy_j", "kind", "source"]
    assert {r["domain"] for r in rows} == {"fake:0"} and rows[0]["kind"] == "fake"
    times = [float(r["time_s"]) for r in rows]
    energies = [float(r["energy_j"]) for r in rows]
    # at most one sample per 0.05 s tick over 0.3 s: 0.3 / 0.05 + 1 = 7 rows (fewer if late)
    assert 2 <= len(rows) <= 7 and times[0] == 0.0 and times[-1] >= 0.3
    assert times == sorted(times)
    for t_s, e_j in zip(times, energies, strict=True):
        # the fake draws 100 W: 100 W x t; clock and sensor are read microseconds apart
        assert e_j == pytest.approx(100.0 * t_s, abs=0.05)

    now = [0.0]
    replay = ReplaySensor.from_csv(out, clock=lambda: now[0])
    for t_s, e_j in zip(times, energies, strict=True):
        now[0] = t_s
        assert replay.read_j() == pytest.approx(e_j)  # the samples come back exactly
    now[0] = (times[1] + times[2]) / 2
    # halfway between two samples: their mean
    assert replay.read_j() == pytest.approx((energies[1] + energies[2]) / 2)


@pytest.mark.usefixtures("bare_machine")
def test_record_with_only_the_estimate_says_it_counts_the_recorder_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # On a bare machine `auto` finds only the CPU-time estimate, which counts this process:
    # the recorder, which sleeps between samples. "cpu:estimate (estimate): 0.002 J" alone
    # reads as the machine's energy over the recording.
    out = tmp_path / "trace.csv"
    argv = ["record", "--seconds", "0.1", "--interval", "0.05", "--out", str(out)]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "  cpu:estimate (estimate): " in captured.out
    assert captured.err.startswith(
        "note: cpu:estimate is estimated from the CPU time of this recording process alone"
    )
    assert "Fix: record on a machine with a readable RAPL or NVML counter" in captured.err


def test_record_with_a_measuring_sensor_adds_no_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "trace.csv"
    argv = ["record", "--seconds", "0.1", "--interval", "0.05", "--sensors", "fake"]
    assert cli.main([*argv, "--out", str(out)]) == 0
    assert "note:" not in capsys.readouterr().err


@pytest.mark.usefixtures("bare_machine")
def test_record_refuses_bad_arguments_and_unusable_sensors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "trace.csv")
    assert cli.main(["record", "--seconds", "0", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "expected --seconds > 0 seconds, found 0.0. Fix: e.g." in err
    assert cli.main(["record", "--seconds", "1", "--sensors", "nvml", "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lightning-to-energy record: error: sensor backend 'nvml'")
    assert "pip install" in err
    assert not Path(out).exists()


@pytest.mark.usefixtures("bare_machine")
def test_a_reader_that_goes_away_ends_the_command_quietly(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning_to_energy.cli import sensors as _cli_sensors

    def closed_pipe(args: object) -> int:  # what `... | head` does to a long listing
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(_cli_sensors, "run", closed_pipe)
    # 128 + SIGPIPE (13) = 141, as a shell reports it; no traceback, nothing on stderr
    assert cli.main(["sensors"]) == 141
    assert capsys.readouterr().err == ""


def test_record_never_overwrites_a_file_of_another_kind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    precious = tmp_path / "notes.txt"
    precious.write_text("mine\n")
    argv = ["record", "--seconds", "0.1", "--sensors", "fake", "--out", str(precious)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"expected --out to name a .csv file, found {precious} (an existing file" in err
    assert precious.read_text() == "mine\n"


@pytest.mark.usefixtures("bare_machine")
def test_a_mistyped_powercap_root_is_named_and_sensors_still_succeeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    absent = tmp_path / "powercapp"
    # sensors lists what it found and why not the rest: exit 0, as documented
    assert cli.main(["sensors", "--powercap-root", str(absent), "--json"]) == 0
    skipped = json.loads(capsys.readouterr().out)["skipped"]
    assert skipped["rapl"].startswith(
        f"CPU energy not measured: the powercap root {absent}, given with --powercap-root"
    )
    assert "not Linux" not in skipped["rapl"]
    # record --sensors rapl cannot work without it: one line naming the path
    argv = ["record", "--seconds", "0.1", "--sensors", "rapl", "--powercap-root", str(absent)]
    assert cli.main([*argv, "--out", str(tmp_path / "t.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"the powercap root {absent}, given with" in err
    assert "does not exist. Fix: check the path;" in err


@pytest.mark.usefixtures("bare_machine")
def test_the_estimate_shows_no_update_period(capsys: pytest.CaptureFixture[str]) -> None:
    # its clock's nominal 1 ns resolution is not an update period: nothing is shown
    assert cli.main(["sensors"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("  cpu:estimate"))
    assert row.split()[:4] == ["cpu:estimate", "estimate", "-", "0"]
    assert "ns" not in row
