"""The per-hardware calibration store: fingerprints, atomic merged saves, corrupt files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from lightning_to_energy.calibration import data as cal_mod
from lightning_to_energy.calibration.data import Calibration
from lightning_to_energy.calibration.store import (
    CalibrationStore,
    CalibrationWarning,
    default_directory,
)
from lightning_to_energy.hardware.identity import HardwareInfo, hardware_fingerprint
from lightning_to_energy.model.regression import OnlineEnergyModel

NAMES = ("duration_s", "tos")
H100 = HardwareInfo(("NVIDIA H100 80GB HBM3",), "580.159.04", "AMD EPYC 9454 48-Core Processor", 96)


def law_j(duration_s: float, tos: float) -> float:
    return 300.0 * duration_s + 2e-12 * tos


def trained_model(durations: list[float], tos: list[float]) -> OnlineEnergyModel:
    model = OnlineEnergyModel(NAMES)
    for d, t in zip(durations, tos, strict=True):
        model.update({"duration_s": d, "tos": t}, law_j(d, t))
    return model


RUN_A = trained_model([2.0, 3.0, 4.0], [1e14, 5e14, 2e14])
RUN_B = trained_model([5.0, 2.5], [3e14, 8e14])


def calib(
    model: OnlineEnergyModel, run_id: str, date: str = "2026-11-25T08:00:00+00:00"
) -> Calibration:
    return Calibration.from_model(model, H100, run_id=run_id, date=date)


def fake_nvml(names: list[Any], driver: Any = "580.159.04", fail_init: bool = False) -> Any:
    calls: list[str] = []

    def init() -> None:
        calls.append("init")
        if fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    return SimpleNamespace(
        calls=calls,
        nvmlInit=init,
        nvmlShutdown=lambda: calls.append("shutdown"),
        nvmlSystemGetDriverVersion=lambda: driver,
        nvmlDeviceGetCount=lambda: len(names),
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda h: names[h],
    )


# ---- hardware -------------------------------------------------------------------------------


def test_detect_reads_nvml_and_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC  9454 48-Core Processor\n")
    nvml = fake_nvml([b"NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"], driver=b"580.159.04")
    info = HardwareInfo.detect(nvml=nvml, cpuinfo_path=cpuinfo)
    assert info.gpus == ("NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3")
    assert info.driver_version == "580.159.04"
    assert info.cpu == "AMD EPYC 9454 48-Core Processor"
    assert info.cpu_count == (os.cpu_count() or 0)
    assert nvml.calls == ["init", "shutdown"]
    assert info.label.startswith("2 x NVIDIA H100 80GB HBM3 (driver 580.159.04); AMD EPYC")


def test_detect_without_nvml_or_cpuinfo(tmp_path: Path) -> None:
    info = HardwareInfo.detect(nvml=fake_nvml([], fail_init=True), cpuinfo_path=tmp_path / "no")
    assert info.gpus == () and info.driver_version is None
    assert info.cpu  # platform.processor() / machine(), or "unknown"


def test_fingerprint_is_stable_and_tells_hardware_apart() -> None:
    fp = hardware_fingerprint(H100)
    assert fp == hardware_fingerprint(H100.to_dict())
    assert fp.startswith("nvidia-h100-80gb-hbm3-x1-")
    assert len(fp.rsplit("-", 1)[1]) == 10
    # another GPU, another driver, two GPUs, no GPU: four other fingerprints
    others = {
        hardware_fingerprint(HardwareInfo(("NVIDIA A100-SXM4-40GB",), "580.159.04", H100.cpu, 96)),
        hardware_fingerprint(HardwareInfo(H100.gpus, "570.86.15", H100.cpu, 96)),
        hardware_fingerprint(HardwareInfo(H100.gpus * 2, "580.159.04", H100.cpu, 96)),
        hardware_fingerprint(HardwareInfo((), None, H100.cpu, 96)),
    }
    assert len(others) == 4 and fp not in others
    # GPU enumeration order does not matter
    mixed = HardwareInfo(("A", "B"), "1", "cpu", 4)
    assert hardware_fingerprint(mixed) == hardware_fingerprint(
        HardwareInfo(("B", "A"), "1", "cpu", 4)
    )
    assert hardware_fingerprint(mixed).startswith("a-x2-")


# ---- store location -------------------------------------------------------------------------


def test_xdg_cache_home_is_honoured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert CalibrationStore().directory == tmp_path / "xdg" / "lightning-to-energy" / "calibration"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_directory() == tmp_path / "home" / ".cache" / "lightning-to-energy" / (
        "calibration"
    )
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_directory() == tmp_path / "home" / ".cache" / "lightning-to-energy" / (
        "calibration"
    )


def test_unsafe_fingerprint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fix: use hardware_fingerprint"):
        CalibrationStore(tmp_path).path_for("../etc/passwd")


# ---- save, load, merge ----------------------------------------------------------------------


def test_save_load_round_trip_leaves_no_temp_files(tmp_path: Path) -> None:
    store = CalibrationStore(tmp_path / "cal")
    assert store.load(hardware_fingerprint(H100)) is None
    path = store.save(calib(RUN_A, "run-a"))
    assert path == tmp_path / "cal" / f"{hardware_fingerprint(H100)}.json"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    loaded = store.load(hardware_fingerprint(H100))
    assert loaded is not None
    assert loaded.hardware == H100
    assert loaded.n_runs == 1
    assert loaded.coefficients == RUN_A.coefficients
    assert loaded.units == {"duration_s": "W", "tos": "J/TO"}
    # most recent first: RUN_A's last window was 4 s, 2e14 TO
    assert loaded.windows[0].features == {"duration_s": 4.0, "tos": 2e14}
    assert [w.energy_j for w in loaded.windows] == [law_j(4, 2e14), law_j(3, 5e14), law_j(2, 1e14)]
    assert json.loads(path.read_text())["label"] == H100.label


def test_failed_write_keeps_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CalibrationStore(tmp_path)
    path = store.save(calib(RUN_A, "run-a"))
    assert path is not None
    before = path.read_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.warns(CalibrationWarning, match="disk full"):
        assert store.save(calib(RUN_B, "run-b")) is None
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_two_saves_merge_most_recent_first(tmp_path: Path) -> None:
    store = CalibrationStore(tmp_path)
    store.save(calib(RUN_A, "run-a", "2026-11-24T10:00:00+00:00"))
    store.save(calib(RUN_B, "run-b", "2026-11-25T10:00:00+00:00"))
    merged = CalibrationStore(tmp_path).load(hardware_fingerprint(H100))
    assert merged is not None
    # 3 windows of run A + 2 of run B
    assert len(merged.windows) == 5
    assert [w.run_id for w in merged.windows] == ["run-b"] * 2 + ["run-a"] * 3
    assert merged.windows[0].features == {"duration_s": 2.5, "tos": 8e14}
    assert merged.n_runs == 2
    assert [(r.run_id, r.date, r.windows) for r in merged.runs] == [
        ("run-a", "2026-11-24T10:00:00+00:00", 3),
        ("run-b", "2026-11-25T10:00:00+00:00", 2),
    ]
    assert merged.updated == "2026-11-25T10:00:00+00:00"
    assert merged.coefficients == RUN_B.coefficients


def test_saving_a_run_again_replaces_its_windows(tmp_path: Path) -> None:
    store = CalibrationStore(tmp_path)
    store.save(calib(RUN_A, "run-a"))
    store.save(calib(RUN_B, "run-b"))
    store.save(calib(RUN_B, "run-b"))
    merged = store.load(hardware_fingerprint(H100))
    assert merged is not None
    # still 3 + 2 windows and 2 runs
    assert (len(merged.windows), merged.n_runs, len(merged.runs)) == (5, 2, 2)


def test_windows_are_bounded(tmp_path: Path) -> None:
    store = CalibrationStore(tmp_path, max_windows=4)
    store.save(calib(RUN_A, "run-a"))
    store.save(calib(RUN_B, "run-b"))
    merged = store.load(hardware_fingerprint(H100))
    assert merged is not None
    # 2 of run B, then the 2 most recent of run A; the oldest (2 s, 1e14 TO) is dropped
    assert [w.run_id for w in merged.windows] == ["run-b", "run-b", "run-a", "run-a"]
    assert {"duration_s": 2.0, "tos": 1e14} not in [w.features for w in merged.windows]


# ---- corrupt files --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b'{"schema_version": 1, "windows": []}',
        b'{"schema_version": 99}',
        b"\xff\xfe",
    ],
)
def test_corrupt_file_warns_and_is_never_overwritten(tmp_path: Path, content: bytes) -> None:
    store = CalibrationStore(tmp_path)
    fp = hardware_fingerprint(H100)
    path = store.path_for(fp)
    path.write_bytes(content)
    with pytest.warns(CalibrationWarning, match="left untouched") as record:
        assert store.load(fp) is None
    message = str(record[0].message)
    assert str(path) in message and "delete it" in message and "calibration=" in message
    with pytest.warns(CalibrationWarning, match="calibration not saved"):
        assert store.save(calib(RUN_A, "run-a")) is None
    assert path.read_bytes() == content
    # a fresh store that never loaded it reads it before merging, and also refuses
    with pytest.warns(CalibrationWarning, match="left untouched"):
        assert CalibrationStore(tmp_path).save(calib(RUN_A, "run-a")) is None
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_negative_energy_in_file_is_corrupt(tmp_path: Path) -> None:
    store = CalibrationStore(tmp_path)
    path = store.save(calib(RUN_A, "run-a"))
    assert path is not None
    data = json.loads(path.read_text())
    data["windows"][0]["energy_j"] = -1.0
    path.write_text(json.dumps(data))
    with pytest.warns(CalibrationWarning, match="energy_j"):
        assert CalibrationStore(tmp_path).load(hardware_fingerprint(H100)) is None


# ---- explicit file and seeding a model ------------------------------------------------------


def test_from_path_uses_the_given_file_whatever_the_hardware(tmp_path: Path) -> None:
    target = tmp_path / "mine.json"
    store = CalibrationStore.from_path(target)
    assert store.save(calib(RUN_A, "run-a")) == target
    with pytest.warns(CalibrationWarning, match="Using it as asked"):
        loaded = store.load("some-other-machine-0123456789")
    assert loaded is not None and loaded.fingerprint == hardware_fingerprint(H100)
    assert store.load(hardware_fingerprint(H100)) is not None


def test_a_physical_model_alone_travels_to_other_machines_without_a_warning(
    tmp_path: Path,
) -> None:
    import warnings

    from lightning_to_energy.calibration import BUILTIN_DIR

    # the shipped H100 model: a physical model, no regression windows, made on another machine
    store = CalibrationStore.from_path(BUILTIN_DIR / "h100-sxm.json")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)
        loaded = store.load("some-other-machine-0123456789")
    assert loaded is not None and loaded.physical is not None and not loaded.windows
    # a file with regression windows of another machine still says so (see the test above)


def test_to_prior_and_seeded_model_predict_from_the_first_window() -> None:
    merged = cal_mod.merge(calib(RUN_A, "run-a"), calib(RUN_B, "run-b"))
    prior = merged.to_prior(("duration_s", "tos", "bytes"))
    assert dict(prior.coefficients) == RUN_B.coefficients  # no stored coefficient for bytes
    model = merged.to_model()
    assert model.n_windows == 5 and model.n_updates == 0
    assert model.history_windows() == []  # all seeded, none of this run's
    x = {"duration_s": 3.0, "tos": 4e14}
    pred = model.update(x, law_j(3.0, 4e14))
    # 300 x 3 + 2e-12 x 4e14 = 900 + 800 = 1700 J, predicted before this run's first window
    assert pred.source == "fit"
    assert pred.energy_j == pytest.approx(1700.0, rel=0.01)
    # a feature the stored windows lack: they cannot seed it, only the prior remains
    other = merged.to_model(("duration_s", "bytes"))
    assert other.n_windows == 0 and other.predict({"duration_s": 1.0, "bytes": 1.0}).source == (
        "prior"
    )


def test_two_runs_saving_at_once_both_land_in_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    original = CalibrationStore._read

    def slow_read(self: CalibrationStore, path: Path) -> Any:
        found = original(self, path)
        time.sleep(0.2)  # widen the gap between reading the file and replacing it
        return found

    monkeypatch.setattr(CalibrationStore, "_read", slow_read)
    saves = [
        threading.Thread(target=CalibrationStore(tmp_path).save, args=(calib(model, run_id),))
        for model, run_id in ((RUN_A, "run-a"), (RUN_B, "run-b"))
    ]
    for thread in saves:
        thread.start()
    for thread in saves:
        thread.join()
    loaded = CalibrationStore(tmp_path).load(hardware_fingerprint(H100))
    assert loaded is not None
    # Unserialised, both read an empty store and the second write dropped the first run:
    # 1 run. Serialised: both runs, 3 + 2 windows.
    assert loaded.n_runs == 2
    assert sorted(r.run_id for r in loaded.runs) == ["run-a", "run-b"]
    assert len(loaded.windows) == 5


def test_a_file_of_other_hardware_in_the_store_is_never_a_prior(tmp_path: Path) -> None:
    other = HardwareInfo(("NVIDIA A100-SXM4-40GB",), "535.54.03", "AMD EPYC 7742", 256)
    mine = hardware_fingerprint(H100)
    store = CalibrationStore(tmp_path)
    written = store.save(calib(RUN_A, "run-a"))  # H100's file ...
    assert written is not None
    copied = tmp_path / f"{hardware_fingerprint(other)}.json"
    written.rename(copied)  # ... copied over the A100's name
    before = copied.read_bytes()
    fresh = CalibrationStore(tmp_path)
    with pytest.warns(CalibrationWarning, match=f"found one of '{mine}'"):
        assert fresh.load(hardware_fingerprint(other)) is None
    with pytest.warns(CalibrationWarning, match="left untouched"):
        assert fresh.save(Calibration.from_model(RUN_B, other, run_id="run-b")) is None
    assert copied.read_bytes() == before


def test_usage_note_says_what_a_model_of_other_features_takes() -> None:
    cal = calib(RUN_A, "a")  # features (duration_s, tos), 3 windows
    assert cal.usage_note(("tos", "duration_s")) is None  # the same features, another order
    note = cal.usage_note(("duration_s", "flops"))
    assert note is not None
    # duration_s's prior applies, flops has none and tos is left over; no stored window has
    # flops, so 0 of the 3 seed the model
    assert "prior coefficients are used for ['duration_s']" in note
    assert "none for ['flops']" in note
    assert "coefficients for ['tos'] are left unused" in note
    assert "0 of its 3 stored windows" in note
    assert "Fix: features=['duration_s', 'tos']" in note
    # a subset of the stored features: every stored window has them, so all 3 seed the model
    note = cal.usage_note(("duration_s",))
    assert note is not None and "3 of its 3 stored windows" in note
    assert "none for" not in note


# ---- files that are no calibration ----------------------------------------------------------


def test_from_path_refuses_a_directory_at_once(tmp_path: Path) -> None:
    # A run's log directory is not a calibration file: before, the store warned at the first
    # load that it "cannot be used (unreadable: Is a directory)" and told the user to delete it.
    with pytest.raises(ValueError, match="expected a calibration file, found the directory") as e:
        CalibrationStore.from_path(tmp_path)
    assert "Fix: pass a JSON file path" in str(e.value) and "delete" not in str(e.value)


@pytest.mark.parametrize(
    ("name", "content", "found", "fit_on"),
    [
        (
            "energy_report.json",
            '{"format": "lightning-to-energy/energy-report", "version": "1"}',
            "an energy report",
            "energy_report.json",
        ),
        (
            "study/mlp-x.run.json",
            '{"format": "lightning-to-energy/study-run", "version": 1}',
            "a study run",
            "study",  # the scaling calibration is fitted over the study's runs: its folder
        ),
    ],
)
def test_a_report_or_study_run_given_as_calibration_says_what_it_is_and_stays_intact(
    tmp_path: Path, name: str, content: str, found: str, fit_on: str
) -> None:
    path = tmp_path / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(content)
    store = CalibrationStore.from_path(path)
    with pytest.warns(CalibrationWarning) as record:
        assert store.load(hardware_fingerprint(H100)) is None
    message = str(record[0].message)
    # Before: "expected schema_version 1, found None (written by another version of
    # lightning-to-energy) ... Fix: delete it": deleting it would lose the user's run.
    assert f"expected a calibration, found {found}" in message
    assert f"`lightning-to-energy fit {tmp_path / fit_on} --out cal.json`" in message
    assert "then pass calibration=cal.json" in message
    assert "another version" not in message and "delete" not in message
    with pytest.warns(CalibrationWarning, match="calibration not saved") as record:
        assert store.save(calib(RUN_A, "run-a")) is None
    assert "delete" not in str(record[0].message)
    assert path.read_text() == content
    # every warning the store gave is kept for the run's report
    assert len(store.warnings) == 2 and store.warnings[0] == message


def test_a_json_file_without_schema_version_is_not_called_another_version(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text('{"lr": 0.1}')
    with pytest.warns(CalibrationWarning) as record:
        assert CalibrationStore.from_path(path).load(hardware_fingerprint(H100)) is None
    message = str(record[0].message)
    assert "found a JSON object without one (keys: ['lr'])" in message
    # some file of the user's, not a damaged calibration: point to another path, not delete
    assert "another version" not in message and "delete" not in message
    assert "calibration=<a calibration file>" in message
    assert path.read_text() == '{"lr": 0.1}'


# ---- second mutation pass -------------------------------------------------------------------


def test_runs_listed_are_the_latest_and_n_runs_counts_past_them(tmp_path: Path) -> None:
    merged = calib(RUN_A, "run-0")
    for i in range(1, cal_mod.MAX_RUNS_LISTED + 5):
        merged = cal_mod.merge(merged, calib(RUN_B, f"run-{i}"))
    # 205 runs merged; the file lists the latest 200 (run-5 .. run-204), oldest first
    assert cal_mod.MAX_RUNS_LISTED == 200
    assert merged.n_runs == 205
    assert [r.run_id for r in merged.runs] == [f"run-{i}" for i in range(5, 205)]
    # the default bound on stored windows, as docs/regression.md says
    assert CalibrationStore(tmp_path).max_windows == 2048


@pytest.mark.parametrize(
    ("path", "value", "found"),
    [
        # a fitted window measured something: 0 J is no fit-worthy window
        (("windows", 0, "energy_j"), 0.0, "expected a finite number > 0, found 0.0"),
        (("windows", 0, "energy_j"), float("inf"), "expected a finite number > 0, found inf"),
        (("coefficients", "tos"), float("nan"), "expected a finite number >= 0, found nan"),
        (("runs", 0, "windows"), True, "runs[0].windows: expected an int >= 0, found True"),
        (("hardware", "cpu_count"), True, "cpu_count: int}, found"),
    ],
)
def test_out_of_range_or_mistyped_values_make_a_file_corrupt(
    tmp_path: Path, path: tuple[Any, ...], value: Any, found: str
) -> None:
    store = CalibrationStore(tmp_path)
    written = store.save(calib(RUN_A, "run-a"))
    assert written is not None
    data = json.loads(written.read_text())
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    written.write_text(json.dumps(data))  # NaN and Infinity as Python's json writes them
    with pytest.warns(CalibrationWarning) as record:
        assert CalibrationStore(tmp_path).load(hardware_fingerprint(H100)) is None
    assert found in str(record[0].message)


def test_seeded_windows_are_the_most_recent_history_oldest_first() -> None:
    merged = cal_mod.merge(calib(RUN_A, "run-a"), calib(RUN_B, "run-b"))
    # stored most recent first: B's (2.5 s, 5 s), then A's (4 s, 3 s, 2 s)
    stored = [w.features["duration_s"] for w in merged.windows]
    assert stored == [2.5, 5.0, 4.0, 3.0, 2.0]
    # the 2 most recent, most recent first
    assert [w.features["duration_s"] for w in merged.model_windows(NAMES, history=2)] == [2.5, 5.0]
    # seed_windows: oldest first
    assert [f["duration_s"] for f, _ in merged.seed_windows(NAMES)] == [2.0, 3.0, 4.0, 5.0, 2.5]
    # the model is seeded oldest first, so its history ends with the most recent window
    model = merged.to_model(history=3)
    seeded = [f["duration_s"] for f, _ in model.history_windows(include_seeded=True)]
    assert seeded == [4.0, 5.0, 2.5]


def test_an_explicit_file_that_is_a_damaged_calibration_may_be_deleted(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    path.write_text('{"schema_version": 1, "fingerprint": "x"}')
    with pytest.warns(CalibrationWarning) as record:
        assert CalibrationStore.from_path(path).load(hardware_fingerprint(H100)) is None
    # a calibration of the user's, damaged: deleting it (or another path) is the fix
    assert "Fix: delete it to start a new calibration" in str(record[0].message)


def test_a_seeded_run_saves_only_its_own_windows_and_a_new_file_is_bounded(
    tmp_path: Path,
) -> None:
    seeded = calib(RUN_A, "run-a").to_model()  # 3 stored windows seeded
    seeded.update({"duration_s": 6.0, "tos": 1e14}, law_j(6.0, 1e14))
    # this run's 1 window, not the 3 seeded ones again
    assert [w.features["duration_s"] for w in calib(seeded, "run-b").windows] == [6.0]
    # a new file keeps max_windows too: RUN_A's 3 windows, the 2 most recent kept
    store = CalibrationStore(tmp_path, max_windows=2)
    store.save(calib(RUN_A, "run-a"))
    loaded = store.load(hardware_fingerprint(H100))
    assert loaded is not None
    assert [w.features["duration_s"] for w in loaded.windows] == [4.0, 3.0]


# --- the sensor kind and the precision a calibration carries (issue 14) ----------------------


def test_the_sensor_kind_and_precision_round_trip_and_old_files_load_as_unknown(
    tmp_path: Path,
) -> None:
    import dataclasses

    path = tmp_path / "cal.json"
    made = dataclasses.replace(
        Calibration.from_model(RUN_A, H100, run_id="a", sensor_kind="estimate"),
        precision_pct=81.5,
        validation="leave-one-run-out",
    )
    assert CalibrationStore.from_path(path).save(made) == path
    loaded = CalibrationStore.from_path(path).load(hardware_fingerprint(H100))
    assert loaded is not None
    assert (loaded.sensor_kind, loaded.precision_pct, loaded.validation) == (
        "estimate",
        81.5,
        "leave-one-run-out",
    )
    assert (loaded.measured, loaded.energy_label) == (False, "estimated (estimate, not measured)")
    # a file of an earlier release has none of the three keys: it loads, and says it is unknown
    data = json.loads(path.read_text())
    for key in ("sensor_kind", "precision_pct", "validation"):
        del data[key]
    old = Calibration.from_dict(data)
    assert (old.sensor_kind, old.precision_pct, old.validation, old.measured) == (
        "unknown",
        None,
        "",
        False,
    )
    assert old.energy_label.startswith("unverified (sensor kind not recorded")
    data["precision_pct"] = "high"
    with pytest.raises(ValueError, match="precision_pct: expected a finite number or null"):
        Calibration.from_dict(data)


def test_one_estimated_run_makes_the_merged_file_estimated(tmp_path: Path) -> None:
    store = CalibrationStore(tmp_path)
    fp = hardware_fingerprint(H100)
    store.save(Calibration.from_model(RUN_A, H100, run_id="a", sensor_kind="counter"))
    loaded = store.load(fp)
    assert loaded is not None and (loaded.sensor_kind, loaded.measured) == ("counter", True)
    assert loaded.energy_label == "measured (counter)"
    store.save(Calibration.from_model(RUN_B, H100, run_id="b", sensor_kind="estimate"))
    merged = store.load(fp)
    # counter + estimate: the weaker kind labels the file's joules
    assert merged is not None and merged.sensor_kind == "estimate"
    # NB: the kind is the file's, not each run's: once estimated, a file stays labelled so
    # (conservative) even when the estimated run is saved again as measured
    store.save(Calibration.from_model(RUN_B, H100, run_id="b", sensor_kind="counter"))
    again = store.load(fp)
    assert again is not None and again.sensor_kind == "estimate"
