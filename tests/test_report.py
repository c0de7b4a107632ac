"""Tests for the end-of-run report: JSON round trip, CSV, PNG, rich rendering and the CLI."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import re
import sys
from pathlib import Path

import pytest
from rich.console import Console

from lightning_to_energy.cli import CliError
from lightning_to_energy.cli import report as _cli_report
from lightning_to_energy.reporting.codec import (
    ReportFormatError,
    load_report,
    report_from_dict,
    report_to_dict,
)
from lightning_to_energy.reporting.console import render_report, roofline_share
from lightning_to_energy.reporting.files import CSV_BASE_COLUMNS, save_report
from lightning_to_energy.reporting.format import format_duration, format_si, relative_error
from lightning_to_energy.reporting.plot import PLOT_INSTALL_HINT, MissingExtraError, save_plot
from lightning_to_energy.reporting.records import (
    FLAG_ESTIMATE,
    FLAG_OUTLIER,
    FLAG_SHORT,
    EnergyReport,
    Forecast,
    LoopTotals,
    ModuleEnergy,
    PriorRecord,
    SensorInfo,
    WindowRecord,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _window(
    index: int,
    loop: str,
    first_step: int,
    steps: int,
    start_s: float,
    duration_s: float,
    gpu_j: float,
    cpu_j: float,
    predicted: tuple[float, float, float] | None,
    source: str,
    tos: float,
    flags: tuple[str, ...],
) -> WindowRecord:
    pred, low, high = predicted if predicted is not None else (None, None, None)
    return WindowRecord(
        index=index,
        loop=loop,
        first_step=first_step,
        steps=steps,
        start_s=start_s,
        duration_s=duration_s,
        energy_j={"gpu:0": gpu_j, "cpu:0": cpu_j},
        measured_j=gpu_j + cpu_j,
        predicted_j=pred,
        low_j=low,
        high_j=high,
        prediction_source=source,
        tos=tos,
        flops=tos / 2,
        features={"duration_s": duration_s, "tos_vector": tos},
        flags=flags,
    )


def make_report() -> EnergyReport:
    """Three windows (two train, one validate) on a GPU counter and an estimated CPU."""
    windows = (
        # 80 + 20 = 100 J measured, 110 J predicted from the prior.
        _window(0, "train", 0, 10, 0.0, 2.0, 80.0, 20.0, (110.0, 100.0, 120.0), "prior", 1e12,
                (FLAG_ESTIMATE,)),
        # 160 + 40 = 200 J measured, 190 J predicted by the fit.
        _window(1, "train", 10, 10, 2.0, 2.0, 160.0, 40.0, (190.0, 180.0, 200.0), "fit", 2e12,
                (FLAG_ESTIMATE,)),
        # 40 + 10 = 50 J measured, short, no prediction.
        _window(2, "validate", 0, 5, 4.0, 1.0, 40.0, 10.0, None, "none", 0.5e12,
                (FLAG_SHORT, FLAG_ESTIMATE, FLAG_OUTLIER)),
    )  # fmt: skip
    loops = {
        "train": LoopTotals(
            loop="train",
            windows=2,
            steps=20,
            duration_s=4.0,
            measured_j=300.0,
            predicted_j=300.0,
            tos=3e12,
            flops=1.5e12,
            energy_j={"gpu:0": 240.0, "cpu:0": 60.0},
        ),
        "validate": LoopTotals(
            loop="validate",
            windows=1,
            steps=5,
            duration_s=1.0,
            measured_j=50.0,
            predicted_j=0.0,
            tos=0.5e12,
            flops=0.25e12,
            energy_j={"gpu:0": 40.0, "cpu:0": 10.0},
        ),
    }
    return EnergyReport(
        created="2026-11-25T12:00:00+00:00",
        hardware={"gpu": "NVIDIA H100 80GB HBM3", "driver": "580.159.04"},
        sensors=(
            SensorInfo("gpu:0", "counter", "NVML total energy, NVIDIA H100", 0.1, 2.0),
            SensorInfo("cpu:0", "estimate", "CPU time x per-core power", 0.01, 0.0),
        ),
        skipped_sensors={"rapl": "permission denied on energy_uj; fix: run as root"},
        windows=windows,
        loops=loops,
        measured_j=350.0,
        predicted_j=300.0,
        # |110-100|/100 = 0.10 and |190-200|/200 = 0.05: MAPE 0.075, precision 92.5 %,
        # R^2 = 1 - (10^2 + 10^2) / (50^2 + 50^2) = 0.96.
        accuracy={
            "n": 2.0,
            "precision_pct": 92.5,
            "mape": 0.075,
            "r2": 0.96,
            "median_rel_err": 0.075,
            "worst_rel_err": 0.10,
        },
        coefficients={
            "duration_s": 126.0, "tos_vector": 2.1e-11, "bytes": 3.5e-12, "kernels": 4.2e-6
        },
        coefficient_units={
            "duration_s": "W", "tos_vector": "J/TO", "bytes": "J/B", "kernels": "J/kernel"
        },
        identifiable=False,
        tos_by_class={"fma": 3e12, "add": 1e12},
        tos_by_format={"fp32": 3.5e12, "bf16": 0.5e12},
        tos_by_phase={"forward": 1e12, "backward": 2e12, "optimizer": 0.5e12, "other": 0.5e12},
        top_modules=(
            ModuleEnergy("encoder.layers[0]", 2e11, 0.5, 4.2),
            ModuleEnergy("head", 1e11, 0.25, None),
        ),
        unmodelled_ops={"aten.foo": 3, "aten.bar": 12},
        warnings=("CPU energy is an estimate: RAPL not readable",),
        forecast=Forecast(total_j=12000.0, low_j=10000.0, high_j=14000.0, steps_total=1000,
                          steps_done=25),
        world_size=1,
    )  # fmt: skip


def render_text(report: EnergyReport) -> str:
    console = Console(record=True, width=120, file=io.StringIO())
    render_report(report, console)
    return console.export_text()


def has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


# --- format_si --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        # 1.234e15 = 1.234 x 10^15 -> P, 3 significant digits
        (1.234e15, "TO", "1.23 PTO"),
        # 4.5e9 -> G
        (4.5e9, "FLOP", "4.50 GFLOP"),
        # 12345 J = 12.345 kJ -> 12.3 kJ
        (12345.0, "J", "12.3 kJ"),
        (126.0, "W", "126 W"),
        # 2.1e-11 J/TO = 21 x 10^-12 -> pJ
        (2.1e-11, "J/TO", "21.0 pJ/TO"),
        (3.5e-12, "J/B", "3.50 pJ/B"),
        # 4.2e-6 J = 4.2 µJ
        (4.2e-6, "J/kernel", "4.20 µJ/kernel"),
        # 999.7 rounds to 1000 at 3 digits, so it moves to the next prefix: 1.00 k
        (999.7, "J", "1.00 kJ"),
        (0.0, "J", "0 J"),
        (-0.0032, "W", "-3.20 mW"),
        (1234.0, "", "1.23 k"),
        (float("nan"), "J", "n/a"),
        (None, "J", "n/a"),
        (float("inf"), "J", "inf J"),
        # beyond exa: scientific notation
        (1e22, "J", "1.00e+22 J"),
    ],
)
def test_format_si(value: float | None, unit: str, expected: str) -> None:
    assert format_si(value, unit) == expected


def test_format_duration() -> None:
    # 0.85 s -> 850 ms
    assert format_duration(0.85) == "850 ms"
    assert format_duration(12.34) == "12.3 s"
    # 245 s = 4 min 05 s
    assert format_duration(245.0) == "4 min 05 s"
    # 7380 s = 2 h 3 min
    assert format_duration(7380.0) == "2 h 03 min"


def test_relative_error() -> None:
    report = make_report()
    # (110 - 100) / 100 = 0.10
    assert relative_error(report.windows[0]) == pytest.approx(0.10)
    # (190 - 200) / 200 = -0.05
    assert relative_error(report.windows[1]) == pytest.approx(-0.05)
    assert relative_error(report.windows[2]) is None


# --- JSON -------------------------------------------------------------------------------------


def test_json_round_trip_is_exact(tmp_path: Path) -> None:
    report = make_report()
    assert report_from_dict(json.loads(json.dumps(report_to_dict(report)))) == report
    saved = save_report(report, tmp_path, plot=False)
    assert load_report(saved.json_path) == report
    # A directory holding energy_report.json is accepted too.
    assert load_report(tmp_path) == report


def test_json_round_trip_keeps_non_finite_floats_and_strict_json() -> None:
    report = dataclasses.replace(make_report(), accuracy={"r2": float("nan"), "n": 1.0})
    text = json.dumps(report_to_dict(report), allow_nan=False)
    back = report_from_dict(json.loads(text))
    assert math.isnan(back.accuracy["r2"])
    assert back.accuracy["n"] == 1.0


def test_from_dict_fills_defaults_and_ignores_unknown_keys() -> None:
    data = report_to_dict(make_report())
    del data["world_size"], data["forecast"]
    data["added_later"] = 1
    back = report_from_dict(data)
    assert back.world_size == 1
    assert back.forecast is None


def test_from_dict_errors_say_expected_found_fix() -> None:
    data = report_to_dict(make_report())
    with pytest.raises(ReportFormatError, match=r"expected report schema version '1', found '9'"):
        report_from_dict({**data, "version": "9"})
    with pytest.raises(ReportFormatError, match=r"expected an energy report .*found no 'format'"):
        report_from_dict({k: v for k, v in data.items() if k != "format"})
    missing = {k: v for k, v in data.items() if k not in ("windows", "loops")}
    with pytest.raises(ReportFormatError, match=r"'windows', 'loops'.*Fix:"):
        report_from_dict(missing)
    bad = json.loads(json.dumps(data))
    bad["windows"][1]["energy_j"]["gpu:0"] = "lots"
    with pytest.raises(
        ReportFormatError,
        match=r"at windows\[1\]\.energy_j\['gpu:0'\]: expected a number, found 'lots'.*Fix:",
    ):
        report_from_dict(bad)
    with pytest.raises(ReportFormatError, match="expected a JSON object"):
        report_from_dict([1, 2])  # type: ignore[arg-type]


def test_load_report_corrupt_json(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text('{"format": "lightning-to-energy/energy-report", "vers', encoding="utf-8")
    with pytest.raises(ReportFormatError, match=r"invalid JSON.*Fix:"):
        load_report(path)


# --- CSV --------------------------------------------------------------------------------------


def test_csv_rows_and_columns(tmp_path: Path) -> None:
    saved = save_report(make_report(), tmp_path, plot=False)
    with saved.csv_path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
        fh.seek(0)
        header = next(csv.reader(fh))
    assert header == [
        *CSV_BASE_COLUMNS,
        # sensor order first: gpu:0, cpu:0; then features in first-seen order
        "energy_j[gpu:0]",
        "energy_j[cpu:0]",
        "feature[duration_s]",
        "feature[tos_vector]",
    ]
    assert len(rows) == 3
    first, second, third = rows
    # predicted 110 J vs measured 80 + 20 = 100 J: (110 - 100) / 100 = 0.10
    assert float(first["rel_error"]) == pytest.approx(0.10)
    assert float(first["measured_j"]) == 100.0
    assert first["loop"] == "train"
    assert first["prediction_source"] == "prior"
    assert first["energy_j[gpu:0]"] == "80.0"
    assert first["feature[tos_vector]"] == "1000000000000.0"
    # (190 - 200) / 200 = -0.05
    assert float(second["rel_error"]) == pytest.approx(-0.05)
    assert second["first_step"] == "10"
    # no prediction: the prediction cells are empty; flags joined by '|'
    assert third["predicted_j"] == third["low_j"] == third["rel_error"] == ""
    assert third["flags"] == "short|estimate|not-fitted"
    # 0.5e12 TOs / 2 = 0.25e12 FLOPs
    assert float(third["flops"]) == 0.25e12
    assert not saved.png_path
    assert saved.notes == ("PNG not written: not requested (plot=False).",)


# --- PNG --------------------------------------------------------------------------------------


@pytest.mark.skipif(not has_matplotlib(), reason="matplotlib (extra 'plot') not installed")
def test_png_written_when_matplotlib_present(tmp_path: Path) -> None:
    saved = save_report(make_report(), tmp_path)
    assert saved.png_path == tmp_path / "energy_report.png"
    assert saved.png_path.read_bytes()[:8] == PNG_MAGIC
    assert saved.notes == ()
    empty = dataclasses.replace(make_report(), windows=(), loops={})
    out = save_plot(empty, tmp_path / "empty.png")
    assert out.read_bytes()[:8] == PNG_MAGIC


def _hide_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes `import matplotlib` raise ImportError.
    monkeypatch.setitem(sys.modules, "matplotlib", None)


def test_missing_matplotlib_explicit_plot_names_install_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _hide_matplotlib(monkeypatch)
    with pytest.raises(MissingExtraError, match=r"pip install 'lightning-to-energy\[plot\]'"):
        save_report(make_report(), tmp_path, plot=True)
    with pytest.raises(MissingExtraError, match="matplotlib is not installed"):
        save_plot(make_report(), tmp_path / "x.png")


def test_missing_matplotlib_auto_plot_skips_with_note(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _hide_matplotlib(monkeypatch)
    saved = save_report(make_report(), tmp_path, stem="run")
    assert saved.png_path is None
    assert saved.json_path == tmp_path / "run.json"
    assert saved.csv_path.exists()
    assert not (tmp_path / "run.png").exists()
    assert saved.notes == (f"PNG not written: matplotlib is not installed ({PLOT_INSTALL_HINT}).",)


# --- rendering --------------------------------------------------------------------------------


def test_render_contains_key_numbers() -> None:
    text = render_text(make_report())
    # header: hardware, sensors, kinds; the estimate is marked, the skipped backend listed
    assert "NVIDIA H100 80GB HBM3" in text
    assert "world size" in text
    assert "estimate (not measured)" in text
    assert "cpu:0 (estimate)" in text
    assert "permission denied on energy_uj" in text
    # totals: train 300 J over 4 s = 75 W; 300 J / 3e12 TO = 100 pJ/TO
    assert "300 J" in text
    assert "75.0 W" in text
    assert "100 pJ/TO" in text
    assert "3.00 TTO" in text
    # all loops: 350 J measured
    assert "350 J" in text
    # per domain: gpu 240 + 40 = 280 J (80 %), cpu 60 + 10 = 70 J (20 %); 280 J / 5 s = 56 W
    assert "280 J" in text
    assert "80.0 %" in text
    assert "56.0 W" in text
    # accuracy and its definition
    assert "92.5 %" in text
    assert "0.960" in text
    assert "precision = 100 × (1 − MAPE)" in text
    # median 0.075 -> 7.5 %, worst 0.10 -> 10.0 %; sum predicted / measured over the two
    # predicted windows: (110 + 190) / (100 + 200) = 100.0 %
    assert "7.5 %" in text
    assert "10.0 %" in text
    assert "100.0 %" in text
    # coefficients in physical units
    assert "126 W" in text
    assert "21.0 pJ/TO" in text
    assert "3.50 pJ/B" in text
    assert "4.20 µJ/kernel" in text
    assert "not separately identifiable" in text
    # TOs by class: fma 3e12 of 4e12 = 75 %; phase backward 2e12 of 4e12 = 50 %
    assert "75.0 %" in text
    assert "50.0 %" in text
    # top modules: brackets in names survive rich markup; 4.2 J per step
    assert "encoder.layers[0]" in text
    assert "4.20 J" in text
    # forecast: 12 kJ (10 to 14 kJ), 25 of 1000 steps = 2.5 %
    assert "12.0 kJ" in text
    assert "10.0 kJ to 14.0 kJ" in text
    assert "(2.5 %)" in text
    # validate had no predicted window: its predicted cell is "n/a", not 0 J
    validate_row = next(line for line in text.splitlines() if line.startswith("│ validate"))
    assert "n/a" in validate_row
    # warnings: 1 short window of 3, unmodelled ops by calls
    assert "1 of 3 windows shorter" in text
    assert "aten.bar ×12, aten.foo ×3" in text
    assert "CPU energy is an estimate" in text


def _first_window_unpredicted(base: EnergyReport) -> EnergyReport:
    """``base`` (make_report's) whose first train window, measured at 100 J, had no
    prediction: train's predicted joules are the second window's 190 J alone."""
    first = dataclasses.replace(
        base.windows[0], predicted_j=None, low_j=None, high_j=None, prediction_source="none"
    )
    return dataclasses.replace(
        base,
        windows=(first, *base.windows[1:]),
        loops={**base.loops, "train": dataclasses.replace(base.loops["train"], predicted_j=190.0)},
        predicted_j=190.0,
    )


def test_totals_say_when_predicted_covers_fewer_windows_than_measured() -> None:
    base = make_report()
    # A run without a calibration: the first train window (100 J) is measured before the
    # model can predict, so predicted sums only the second window's 190 J against 300 J
    # measured over both; without a count, 190 J next to 300 J reads as a 37 % under-
    # prediction, where the one window predicted was 190 J for 200 J.
    report = _first_window_unpredicted(base)
    text = render_text(report)
    rows = text.splitlines()
    train_row = next(line for line in rows if line.startswith("│ train"))
    # 1 of the 2 train windows had a prediction
    assert "190 J (1 of 2)" in train_row
    # all loops: 1 of 3 windows (validate's one window had none)
    all_row = next(line for line in rows if line.startswith("│ all"))
    assert "190 J (1 of 3)" in all_row
    # validate: no window predicted, still n/a (not "0 J (0 of 1)")
    validate_row = next(line for line in rows if line.startswith("│ validate"))
    assert "n/a" in validate_row and "of 1" not in validate_row
    assert "(k of n): only k of the n windows had a prediction" in " ".join(text.split())
    # every train window predicted (the base report): no count in the train row
    full_train = next(line for line in render_text(base).splitlines() if line.startswith("│ train"))
    assert "300 J" in full_train and " of 2)" not in full_train
    # a long run folded its 3 oldest train windows into the totals (5 windows, 2 kept): how
    # many of the 5 had a prediction is unknown, so no count is claimed
    folded = dataclasses.replace(
        report,
        loops={**report.loops, "train": dataclasses.replace(report.loops["train"], windows=5)},
    )
    folded_train = next(
        line for line in render_text(folded).splitlines() if line.startswith("│ train")
    )
    assert "190 J" in folded_train and " of " not in folded_train


def test_a_report_printed_to_a_pipe_is_120_columns_and_keeps_its_headers(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    render_report(make_report())  # stdout is pytest's capture: not a terminal, as in a job log
    lines = capsys.readouterr().out.splitlines()
    # rich would use 80 columns and squeeze the totals table's headers to "wind…", "dura…";
    # at 120 the widest table (117 columns here) fits whole
    assert 80 < max(map(len, lines)) <= 120
    header = next(line for line in lines if "loop" in line and "steps" in line)
    assert "windows" in header and "duration" in header and "…" not in header
    monkeypatch.setenv("COLUMNS", "100")  # the user's width wins
    render_report(make_report())
    assert max(map(len, capsys.readouterr().out.splitlines())) <= 100


def test_render_empty_report_does_not_fail() -> None:
    empty = dataclasses.replace(
        make_report(),
        sensors=(),
        skipped_sensors={},
        windows=(),
        loops={},
        measured_j=0.0,
        predicted_j=0.0,
        accuracy={},
        coefficients={},
        tos_by_class={},
        tos_by_format={},
        tos_by_phase={},
        top_modules=(),
        unmodelled_ops={},
        warnings=(),
        forecast=None,
    )
    text = render_text(empty)
    assert "no energy sensor was available" in text
    assert "Warnings: none" in text
    assert "Fitted coefficients" not in text


# --- CLI --------------------------------------------------------------------------------------


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lightning-to-energy")
    sub = parser.add_subparsers(dest="command")
    _cli_report.add_parser(sub)
    return parser.parse_args(argv)


def test_cli_report_renders_and_exports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    saved = save_report(make_report(), tmp_path / "run", plot=False)
    out_csv = tmp_path / "again.csv"
    args = _parse(["report", str(saved.json_path), "--csv", str(out_csv)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "92.5 %" in out
    assert f"wrote {out_csv}" in out
    assert out_csv.read_text(encoding="utf-8") == saved.csv_path.read_text(encoding="utf-8")


@pytest.mark.skipif(not has_matplotlib(), reason="matplotlib (extra 'plot') not installed")
def test_cli_report_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    saved = save_report(make_report(), tmp_path, plot=False)
    out_png = tmp_path / "out.png"
    args = _parse(["report", str(saved.json_path), "--plot", str(out_png)])
    assert args.func(args) == 0
    assert out_png.read_bytes()[:8] == PNG_MAGIC


def test_cli_report_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json", encoding="utf-8")
    args = _parse(["report", str(corrupt)])
    with pytest.raises(CliError, match=r"expected a JSON energy report.*found invalid JSON.*Fix:"):
        args.func(args)
    args = _parse(["report", str(tmp_path / "missing.json")])
    with pytest.raises(CliError, match=r"found no such file.*Fix:"):
        args.func(args)
    binary = tmp_path / "plot.png"
    binary.write_bytes(PNG_MAGIC + b"\xff\xfe\x00")
    args = _parse(["report", str(binary)])
    with pytest.raises(CliError, match="found a binary file"):
        args.func(args)
    saved = save_report(make_report(), tmp_path / "ok", plot=False)
    # A directory without a report is not "no such file"; the CSV beside the JSON is not
    # "damaged or truncated" JSON: each message names what was found and the file to pass.
    args = _parse(["report", str(tmp_path)])
    with pytest.raises(CliError, match=r"found a directory without it: .*Fix:"):
        args.func(args)
    args = _parse(["report", str(saved.csv_path)])
    with pytest.raises(
        CliError, match=r"found the per-window CSV .*Fix: pass .*energy_report\.json"
    ):
        args.func(args)
    _hide_matplotlib(monkeypatch)
    args = _parse(["report", str(saved.json_path), "--plot", str(tmp_path / "p.png")])
    with pytest.raises(CliError, match=r"pip install 'lightning-to-energy\[plot\]'"):
        args.func(args)


def test_cli_report_output_that_is_a_directory_fails_before_printing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = save_report(make_report(), tmp_path / "run", plot=False)
    for option, example in (("--csv", "energy_report.csv"), ("--plot", "energy_report.png")):
        args = _parse(["report", str(saved.json_path), option, str(tmp_path)])
        # not "[Errno 21] Is a directory: '/.../.tmp.x.tmp' -> '...'" below the whole report
        with pytest.raises(CliError) as caught:
            args.func(args)
        assert str(caught.value) == (
            f"expected {option} to name a file, found the directory {tmp_path}. Fix: name a "
            f"file in it, e.g. {option} {tmp_path / example}."
        )
        assert capsys.readouterr().out == ""


def _main_or_skip() -> object:
    from lightning_to_energy import cli

    try:
        cli.build_parser()
    except ModuleNotFoundError as exc:  # TODO(lead): remove once every _cli_<name> exists
        pytest.skip(f"another CLI subcommand is not written yet: {exc}")
    return cli.main


def test_cli_main_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main = _main_or_skip()
    saved = save_report(make_report(), tmp_path, plot=False)
    assert main(["report", str(saved.json_path)]) == 0  # type: ignore[operator]
    assert "92.5 %" in capsys.readouterr().out


def test_cli_main_report_corrupt_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main = _main_or_skip()
    corrupt = tmp_path / "run.json"
    corrupt.write_text('{"format": "lightning-to-energy/energy-report"', encoding="utf-8")
    assert main(["report", str(corrupt)]) == 2  # type: ignore[operator]
    captured = capsys.readouterr()
    assert "lightning-to-energy report: error: " in captured.err
    assert "Traceback" not in captured.err


def test_roofline_line_compares_the_train_steps_with_the_hardware_peaks() -> None:
    report = make_report()
    with_roofline = tuple(
        dataclasses.replace(w, features={**w.features, "roofline_s": 0.25}) for w in report.windows
    )
    report = dataclasses.replace(
        report, windows=with_roofline, hardware={**report.hardware, "roofline": "H100 SXM"}
    )
    # the two train windows: 0.25 + 0.25 = 0.5 s of roofline over 2 + 2 = 4 s taken: 12.5 %
    # (the validate window is not a train step)
    assert roofline_share(report) == (0.5, 4.0, 2)
    text = " ".join(render_text(report).split())
    assert "Roofline: over 2 train windows the steps took 4.00 s;" in text
    assert "at the peaks of H100 SXM they would take 500 ms, 12.5 % of that." in text
    # without the column (an older report, or a device missing from the table): no line
    assert roofline_share(make_report()) is None
    assert "Roofline:" not in render_text(make_report())


def test_the_prior_is_said_beside_the_accuracy_and_older_reports_load_without_it() -> None:
    from lightning_to_energy.reporting.records import PriorRecord

    prior = PriorRecord(
        source="/cache/h100.json",
        seed_windows=512,
        seed_runs=7,
        stored_windows=2048,
        stored_runs=40,
        hardware="1 x NVIDIA H100 80GB HBM3",
        other_hardware=True,
    )
    report = dataclasses.replace(make_report(), prior=prior)
    assert report_from_dict(json.loads(json.dumps(report_to_dict(report)))) == report
    text = render_text(report)
    # the line follows the accuracy table, whose windows say "prior" for the ones it predicted
    assert (
        text.index("Prediction accuracy")
        < text.index("prior: /cache/h100.json")
        < text.index("Fitted coefficients")
    )
    # (wrapped at the console's 120 columns)
    assert (
        "prior: /cache/h100.json (made on other hardware: 1 x NVIDIA H100 80GB HBM3): 512 of its "
        "2,048 stored windows, from 7 of its 40 runs, seeded the model"
    ) in " ".join(text.split())
    first = dataclasses.replace(report, prior=PriorRecord(note="calibration=None"))
    assert "prior: none: calibration=None" in render_text(first)
    # a report written before the field: it loads, and claims nothing about its prior
    data = report_to_dict(report)
    del data["prior"]
    older = report_from_dict(data)
    assert older.prior is None
    assert "prior:" not in render_text(older)


# --- second mutation pass ---------------------------------------------------------------------


def test_a_folded_loop_with_unpredicted_kept_windows_shows_its_predicted_joules() -> None:
    base = make_report()
    # the validate loop: 4 windows folded into the totals (their predictions 120 J), and the
    # one kept window (50 J, no prediction): 120 J were predicted, not "n/a"
    report = dataclasses.replace(
        base,
        loops={
            **base.loops,
            "validate": dataclasses.replace(base.loops["validate"], windows=5, predicted_j=120.0),
        },
    )
    validate_row = next(
        line for line in render_text(report).splitlines() if line.startswith("│ validate")
    )
    assert "120 J" in validate_row and "n/a" not in validate_row and " of " not in validate_row


def test_unmeasured_zero_joule_and_instant_windows_render() -> None:
    base = make_report()
    # an unmeasured window (a sensor failed) that was predicted, and a window that read 0 J
    unmeasured = dataclasses.replace(base.windows[1], index=3, energy_j={}, measured_j=None)
    zero = dataclasses.replace(
        base.windows[1], index=4, energy_j={"gpu:0": 0.0, "cpu:0": 0.0}, measured_j=0.0
    )
    # a relative error over 0 J measured is undefined, not a ZeroDivisionError
    assert relative_error(zero) is None and relative_error(unmeasured) is None
    # a loop of 0 s: its average power is undefined
    instant = dataclasses.replace(base.loops["validate"], duration_s=0.0)
    report = dataclasses.replace(
        base,
        windows=(*base.windows, unmeasured, zero),
        loops={**base.loops, "validate": instant},
    )
    text = render_text(report)
    # Σ predicted / Σ measured over windows with both: (110 + 190 + 190) / (100 + 200 + 0) J
    # = 163.3 %; the unmeasured window's 190 J prediction is left out, not set against 0 J
    assert "163.3 %" in text
    validate_row = next(line for line in text.splitlines() if line.startswith("│ validate"))
    assert "50.0 W" not in validate_row and validate_row.count("n/a") == 2


def test_format_duration_at_the_hour() -> None:
    # 3600 s is 1 h, not 60 min
    assert format_duration(3600.0) == "1 h 00 min"
    # 3599.4 s rounds to 3599 s = 59 min 59 s
    assert format_duration(3599.4) == "59 min 59 s"


def test_a_bool_is_no_integer_in_a_report() -> None:
    data = json.loads(json.dumps(report_to_dict(make_report())))
    data["world_size"] = True
    with pytest.raises(ReportFormatError, match=r"at world_size: expected an integer, found True"):
        report_from_dict(data)


def test_one_stored_run_is_said_in_the_singular() -> None:
    from lightning_to_energy.reporting.console import prior_text

    one = PriorRecord("/cache/cal.json", 3, 1, 3, 1, "cpu", False, "")
    # "1 run", not "1 runs"
    assert prior_text(one) == (
        "/cache/cal.json (made on this hardware): 3 of its 3 stored windows, from 1 of its 1 "
        "run, seeded the model"
    )


def test_csv_domain_columns_follow_the_sensors_order(tmp_path: Path) -> None:
    base = make_report()
    # the windows list the CPU's joules first; the sensors list the GPU first
    windows = tuple(
        dataclasses.replace(
            w, energy_j={"cpu:0": w.energy_j["cpu:0"], "gpu:0": w.energy_j["gpu:0"]}
        )
        for w in base.windows
    )
    saved = save_report(dataclasses.replace(base, windows=windows), tmp_path, plot=False)
    with saved.csv_path.open(newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh))
    assert [c for c in header if c.startswith("energy_j[")] == [
        "energy_j[gpu:0]",
        "energy_j[cpu:0]",
    ]


def test_accuracy_counts_windows_by_source_and_warnings_list_unknown_flags() -> None:
    base = make_report()
    fitted = dataclasses.replace(base.windows[0], prediction_source="fit", flags=("custom",))
    text = " ".join(
        render_text(dataclasses.replace(base, windows=(fitted, *base.windows[1:]))).split()
    )
    # both predicted windows came from the fit: "2 (fit 2)", not "(fit 1)"
    assert "2 (fit 2)" in text
    # a flag this release has no message for is still counted, by name: 1 of the 3 windows
    assert "1 of 3 windows flagged 'custom'" in text


def test_accuracy_counts_by_source_only_the_windows_it_scored() -> None:
    # A run's last window is predicted by the fit but short: not scored (n = 1, the prior's
    # window only), so its source must not be counted beside that 1 ("1 (fit 1, prior 1)").
    base = make_report()
    short = dataclasses.replace(base.windows[1], flags=(FLAG_SHORT, FLAG_OUTLIER))
    # |110 - 100| / 100 = 0.10 over the one scored window: precision 90 %
    accuracy = {"n": 1.0, "precision_pct": 90.0, "mape": 0.1, "median_rel_err": 0.1}
    report = dataclasses.replace(
        base, windows=(base.windows[0], short, base.windows[2]), accuracy=accuracy
    )
    text = " ".join(render_text(report).split())
    assert "1 (prior 1)" in text
    assert "fit 1" not in text
    # and the summary's line is in the singular: 1 window
    from lightning_to_energy.reporting.console import summary_lines

    assert "  predicted before measuring: precision 90.0 %, median error 10.0 % over 1 window" in (
        summary_lines(report)
    )


def test_summary_is_short_names_the_joules_kind_and_leaves_the_identifiability_note_out() -> None:
    from lightning_to_energy.reporting.console import SUMMARY_MAX_LINES, summary_lines

    report = make_report()
    lines = summary_lines(report)
    # head, 2 loops, accuracy, per step, notices: 6 lines (no roofline in these windows)
    assert len(lines) == 6 <= SUMMARY_MAX_LINES
    # 350 J over 4 s + 1 s = 5 s: 70 W; the CPU domain is an estimate.
    assert lines[0] == (
        "lightning-to-energy: 350 J estimated, not measured (cpu:0) in 5.00 s (70.0 W average)"
    )
    assert lines[1] == "  train          20 steps in     4.00 s: 300 J, predicted 300 J"
    assert lines[2] == "  validate        5 steps in     1.00 s: 50.0 J"
    assert (
        lines[3]
        == "  predicted before measuring: precision 92.5 %, median error 7.5 % over 2 windows"
    )
    # 300 J / 20 steps = 15 J; 3e12 TO / 20 = 150 GTO; the top module holds 50 % of the TOs
    assert (
        lines[4] == "  per train step: 15.0 J, 150 GTO; most TOs: encoder.layers[0] 50 %, head 25 %"
    )
    # window flags: short, estimate, not-fitted (3) + 1 warning + unmodelled ops (1) = 5
    assert lines[5] == "  5 notice(s) in the full report (window flags, calibration, ops)"
    # the report is not identifiable, which the full report says under its coefficients once
    assert not any("identifiable" in line for line in lines)
    assert render_text(report).count("not separately identifiable") == 1


# --- issue 14: report --json, outputs of their own kind, "measured" only when measured -------


def test_cli_report_json_prints_the_report_and_keeps_stdout_one_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lightning_to_energy.reporting.codec import report_to_dict

    report = make_report()
    saved = save_report(report, tmp_path / "run", plot=False)
    out_csv = tmp_path / "again.csv"
    args = _parse(["report", str(saved.json_path), "--json", "--csv", str(out_csv)])
    assert args.func(args) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == json.loads(json.dumps(report_to_dict(report)))
    assert err == f"wrote {out_csv}\n"


def test_cli_report_never_overwrites_a_file_of_another_kind_and_checks_before_printing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning_to_energy import cli as cli_mod

    saved = save_report(make_report(), tmp_path / "run", plot=False)
    precious = tmp_path / "precious.py"
    precious.write_text("print('mine')\n")
    args = _parse(["report", str(saved.json_path), "--csv", str(precious)])
    with pytest.raises(CliError) as caught:
        args.func(args)
    assert str(caught.value) == (
        f"expected --csv to name a .csv file, found {precious} (an existing file that it would "
        f"overwrite). Fix: e.g. --csv {tmp_path / 'precious.csv'}."
    )
    assert precious.read_text() == "print('mine')\n" and capsys.readouterr().out == ""
    args = _parse(["report", str(saved.json_path), "--plot", str(tmp_path / "new.csv")])
    with pytest.raises(CliError, match=r"expected --plot to name a \.png file"):
        args.func(args)
    args = _parse(["report", str(saved.json_path), "--csv", str(tmp_path / "no" / "x.csv")])
    with pytest.raises(CliError, match=r"found no folder .*no\. Fix:"):
        args.func(args)
    # an unwritable folder is named before the report is printed (not a temporary file after)
    monkeypatch.setattr(cli_mod.os, "access", lambda path, mode: False)
    args = _parse(["report", str(saved.json_path), "--csv", str(tmp_path / "x.csv")])
    with pytest.raises(CliError, match=f"found {re.escape(str(tmp_path))} not writable"):
        args.func(args)
    assert capsys.readouterr().out == ""


def test_the_totals_table_says_measured_only_when_every_sensor_measured() -> None:
    import dataclasses

    from lightning_to_energy.reporting.console import report_kind

    mixed = make_report()  # an NVML counter and a CPU-time estimate: estimated in part
    assert report_kind(mixed) == "estimate"
    text = render_text(mixed)
    header = next(line for line in text.splitlines() if "┃ loop" in line)
    assert "estimated" in header and "measured" not in header
    assert "estimated = sum over domains: gpu:0, cpu:0 (estimate)" in text
    counted = dataclasses.replace(mixed, sensors=mixed.sensors[:1])
    assert report_kind(counted) == "counter"
    header = next(line for line in render_text(counted).splitlines() if "┃ loop" in line)
    assert "measured" in header
    # the accuracy's caption: against estimated joules, it says what "measured" stands for
    assert "'measured' here: the sensor's estimated joules" in " ".join(text.split())
    assert "'measured' here" not in render_text(counted)


def test_the_sensor_table_shows_no_update_period_for_an_estimate() -> None:
    text = render_text(make_report())
    counter = next(line for line in text.splitlines() if "gpu:0" in line and "NVML" in line)
    estimate = next(line for line in text.splitlines() if "cpu:0" in line and "CPU time" in line)
    # the counter's 0.1 s is its update period; the estimate's nominal figure (0.01 s here,
    # a CPU clock's 1 ns in a real run) is not one, so its cell is "-"
    assert "100 ms" in counter
    assert "10 ms" not in estimate and " - " in estimate


def test_summary_says_when_predicted_covers_fewer_windows_than_measured() -> None:
    # The first hour on a CPU: the summary said "22.5 J, predicted 15.7 J" for a train loop
    # whose two predicted windows had over-predicted 2x; the first window (no prediction yet)
    # was measured only. The summary must count the windows as the totals table does.
    from lightning_to_energy.reporting.console import summary_lines

    base = make_report()
    report = _first_window_unpredicted(base)
    lines = summary_lines(report)
    # 1 of the 2 train windows had a prediction: 190 J against 300 J measured over both
    assert lines[1] == (
        "  train          20 steps in     4.00 s: 300 J, predicted 190 J (1 of 2 windows)"
    )
    # every train window predicted (the base report): no count
    assert (
        summary_lines(base)[1] == "  train          20 steps in     4.00 s: 300 J, predicted 300 J"
    )
    # 3 oldest train windows folded into the totals (5 windows, 2 kept): the count is unknown
    folded = dataclasses.replace(
        report,
        loops={**report.loops, "train": dataclasses.replace(report.loops["train"], windows=5)},
    )
    assert summary_lines(folded)[1].endswith(": 300 J, predicted 190 J")


def test_summary_without_a_sensor_says_not_measured_instead_of_0_j() -> None:
    # TOEnergy(sensors=None) printed "0 J not measured (no sensor) in 4.06 s (0 W average)",
    # "train 22 steps in 3.71 s: 0 J" and "per train step: 0 J, 45.8 GTO".
    from lightning_to_energy.reporting.console import summary_lines

    base = make_report()
    loops = {
        name: dataclasses.replace(lt, measured_j=0.0, predicted_j=0.0, energy_j={})
        for name, lt in base.loops.items()
    }
    report = dataclasses.replace(
        base, sensors=(), loops=loops, measured_j=0.0, predicted_j=0.0, accuracy={}
    )
    lines = summary_lines(report)
    # 4 s + 1 s of loops
    assert lines[0] == "lightning-to-energy: energy not measured (no sensor) in 5.00 s"
    assert lines[1] == "  train          20 steps in     4.00 s: not measured"
    assert lines[2] == "  validate        5 steps in     1.00 s: not measured"
    # 3e12 TO / 20 steps = 150 GTO, and no joules
    assert lines[3].startswith("  per train step: 150 GTO; most TOs: encoder.layers[0] 50 %")
    assert not any(" 0 J" in line or "0 W" in line for line in lines)


@pytest.mark.skipif(not has_matplotlib(), reason="matplotlib (extra 'plot') not installed")
def test_png_title_fits_and_predicted_curve_counts_unpredicted_windows_as_measured() -> None:
    # The first hour: the PNG's title ran past the figure's right edge on an estimated run
    # ("... precision -83.2 '"), and the cumulative predicted curve started at 0 J at the
    # first predicted window while the measured one already held the first window's joules.
    from lightning_to_energy.reporting.plot import plot_figure

    base = make_report()
    first = dataclasses.replace(
        base.windows[0], predicted_j=None, low_j=None, high_j=None, prediction_source="none"
    )
    report = dataclasses.replace(
        base,
        windows=(first, *base.windows[1:]),
        accuracy={**base.accuracy, "precision_pct": -83.2},
    )
    fig = plot_figure(report)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax_win, ax_cum = fig.axes
    title = ax_win.title.get_window_extent(renderer)
    assert ax_win.get_title().endswith("\nprecision -83.2 %")
    assert title.x0 >= 0 and title.x1 <= fig.bbox.x1
    predicted = next(line for line in ax_cum.get_lines() if line.get_label() == "predicted")
    # windows end at 2 s, 4 s and 5 s: the first (100 J measured, no prediction) at 100 J,
    # then the second's 190 J prediction, then validate's 50 J measured, unpredicted:
    # 0, 100, 100 + 190 = 290, 290 + 50 = 340
    assert list(predicted.get_xdata()) == [0.0, 2.0, 4.0, 5.0]
    assert list(predicted.get_ydata()) == pytest.approx([0.0, 100.0, 290.0, 340.0])


def test_summary_says_1_step_in_the_singular() -> None:
    # fast_dev_run=True: the summary said "train           1 steps in   306 ms".
    from lightning_to_energy.reporting.console import summary_lines

    base = make_report()
    one = dataclasses.replace(base.loops["validate"], steps=1)
    lines = summary_lines(dataclasses.replace(base, loops={**base.loops, "validate": one}))
    # the padding keeps the columns of the other loops' lines
    assert lines[2] == "  validate        1 step  in     1.00 s: 50.0 J"
    assert lines[1].index(" in ") == lines[2].index(" in ")
