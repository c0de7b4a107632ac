"""The report's files: JSON, CSV and (optional) PNG, written atomically next to each other.

Files written by :func:`save_report` (``stem`` defaults to ``energy_report``):

- ``<stem>.json``: the whole report (:func:`~lightning_to_energy.reporting.codec.report_to_dict`),
  read back by :func:`~lightning_to_energy.reporting.codec.load_report`.
- ``<stem>.csv``: one row per window (:data:`CSV_BASE_COLUMNS`, then one column per energy
  domain and per regression feature).
- ``<stem>.png``: predicted vs measured joules per window, and cumulative energy over time
  (:mod:`lightning_to_energy.reporting.plot`).
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_to_energy._files import atomic_write
from lightning_to_energy.reporting.records import (
    EnergyReport,
)

if TYPE_CHECKING:
    pass
from lightning_to_energy.reporting.codec import report_to_dict
from lightning_to_energy.reporting.format import ordered_union, relative_error
from lightning_to_energy.reporting.plot import PLOT_INSTALL_HINT, MissingExtraError, save_plot

__all__ = [
    "CSV_BASE_COLUMNS",
    "SavedReport",
    "csv_columns",
    "save_report",
    "write_csv",
]

CSV_BASE_COLUMNS: tuple[str, ...] = (
    "index",
    "loop",
    "rank",
    "first_step",
    "steps",
    "start_s",
    "duration_s",
    "measured_j",
    "predicted_j",
    "low_j",
    "high_j",
    "rel_error",
    "prediction_source",
    "tos",
    "flops",
    "flags",
)


@dataclass(frozen=True)
class SavedReport:
    """The files :func:`save_report` wrote.

    Attributes:
        json_path: the full report, readable by :func:`load_report`.
        csv_path: one row per window.
        png_path: the plot, or None when it was not written (see ``notes``).
        notes: why an optional file was not written, e.g. matplotlib missing in auto mode.
    """

    json_path: Path
    csv_path: Path
    png_path: Path | None
    notes: tuple[str, ...] = ()


def _csv_domains(report: EnergyReport) -> list[str]:
    used = ordered_union(w.energy_j for w in report.windows)
    # Sensor order first (as discovered), but only domains that appear in some window or sensor.
    return ordered_union([used], first=[s.domain for s in report.sensors])


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def csv_columns(report: EnergyReport) -> list[str]:
    """The CSV header for ``report``: the base columns, domains, then features."""
    features = ordered_union(w.features for w in report.windows)
    return [
        *CSV_BASE_COLUMNS,
        *(f"energy_j[{d}]" for d in _csv_domains(report)),
        *(f"feature[{f}]" for f in features),
    ]


def _csv_text(report: EnergyReport) -> str:
    domains = _csv_domains(report)
    features = ordered_union(w.features for w in report.windows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(csv_columns(report))
    for w in report.windows:
        row = [
            w.index,
            w.loop,
            w.rank,
            w.first_step,
            w.steps,
            w.start_s,
            w.duration_s,
            w.measured_j,
            w.predicted_j,
            w.low_j,
            w.high_j,
            relative_error(w),
            w.prediction_source,
            w.tos,
            w.flops,
            "|".join(w.flags),
            *(w.energy_j.get(d) for d in domains),
            *(w.features.get(f) for f in features),
        ]
        writer.writerow([_csv_cell(v) for v in row])
    return buf.getvalue()


def write_csv(report: EnergyReport, path: str | os.PathLike[str]) -> Path:
    """Write the per-window CSV (see :data:`CSV_BASE_COLUMNS`); empty cells mean "none".

    Returns:
        The path written.
    """
    p = Path(path)
    data = _csv_text(report).encode("utf-8")
    atomic_write(p, lambda fh: fh.write(data))
    return p


def save_report(
    report: EnergyReport,
    directory: str | os.PathLike[str],
    *,
    stem: str = "energy_report",
    plot: bool | None = None,
) -> SavedReport:
    """Write ``<stem>.json``, ``<stem>.csv`` and, when possible, ``<stem>.png`` to ``directory``.

    Each file is written atomically (temporary file, then rename); the directory is created.

    Args:
        report: the report.
        directory: where to write.
        stem: the file name without extension.
        plot: True: the PNG is required (raises without matplotlib). False: no PNG.
            None (auto, as at the end of a run): draw it when matplotlib is installed, otherwise
            skip quietly and say why in ``SavedReport.notes``.

    Raises:
        MissingExtraError: ``plot=True`` and matplotlib is not installed.
        OSError: a file could not be written.
    """
    out = Path(directory)
    json_path = out / f"{stem}.json"
    text = json.dumps(report_to_dict(report), indent=2, allow_nan=False) + "\n"
    atomic_write(json_path, lambda fh: fh.write(text.encode("utf-8")))
    csv_path = write_csv(report, out / f"{stem}.csv")
    png_path: Path | None = None
    notes: list[str] = []
    if plot is False:
        notes.append("PNG not written: not requested (plot=False).")
    elif plot is True:
        png_path = save_plot(report, out / f"{stem}.png")
    else:
        try:
            png_path = save_plot(report, out / f"{stem}.png")
        except MissingExtraError:
            notes.append(f"PNG not written: matplotlib is not installed ({PLOT_INSTALL_HINT}).")
        except Exception as exc:  # auto mode must never fail the end of a run over a plot
            notes.append(f"PNG not written: plotting failed ({type(exc).__name__}: {exc}).")
    return SavedReport(
        json_path=json_path, csv_path=csv_path, png_path=png_path, notes=tuple(notes)
    )
