"""Rendering of the scaling-law evaluation: a rich table, JSON, CSV, a PNG and Markdown.

The data lives in :class:`~lightning_to_energy.study.evaluation.StudyResults`; this module only
writes and renders it. rich is imported when a table is printed, matplotlib (optional, extra
``plot``) when the PNG is drawn.

Files written by :func:`save_results`:

- ``results.json``: :meth:`StudyResults.to_dict`, read back by :meth:`StudyResults.from_dict`.
- ``predictions.csv``: one row per held-out prediction (model, split, run, family, dataset,
  dtype, predicted and measured joules per step, relative error).
- ``predicted_vs_measured.png``: predicted vs measured joules per step, one panel per split, log
  axes, coloured by family, one marker per model.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import typing
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_to_energy import notices
from lightning_to_energy._files import atomic_write
from lightning_to_energy.reporting.console import report_console
from lightning_to_energy.reporting.plot import (
    PLOT_INSTALL_HINT,
    MissingExtraError,
    import_matplotlib,
)
from lightning_to_energy.study.evaluation import (
    SPLITS,
    PredictionRow,
    Score,
    StudyResults,
    goals,
    verdict,
)

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "CSV_COLUMNS",
    "energy_caveat",
    "render_results",
    "results_markdown",
    "save_plot",
    "save_results",
]

CSV_COLUMNS: tuple[str, ...] = (
    "model",
    "split",
    "run_id",
    "family",
    "dataset",
    "dtype",
    "predicted_j",
    "measured_j",
    "rel_err",
)
_MARKERS = ("o", "s", "^", "v", "D", "x", "P", "*")


def _pct(value: float | None, decimals: int = 2) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{decimals}f}"


def _frac_pct(value: float | None, decimals: int = 1) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100.0 * value:.{decimals}f}"


def _r2(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


# ----------------------------------------------------------------------------------------------
# rich
# ----------------------------------------------------------------------------------------------


def _figure_cells(s: Score) -> list[str]:
    """n, precision, R², median and worst error of a score, as table cells."""
    if not s.evaluable:
        return ["0", "-", "-", "-", "-"]
    return [
        str(s.n),
        _pct(s.precision_pct),
        _r2(s.r2),
        _frac_pct(s.median_rel_err),
        _frac_pct(s.worst_rel_err),
    ]


def render_results(results: StudyResults, console: Console | None = None) -> None:
    """Print the results table, one verdict per split, and the goals.

    Args:
        results: what :func:`~lightning_to_energy.study.evaluation.evaluate` returned.
        console: where to print (default:
            :func:`~lightning_to_energy.reporting.console.report_console`).
    """
    from rich.table import Table

    out = console if console is not None else report_console()
    table = Table(
        title=f"Energy per training step on {results.hardware}: held-out configurations",
        caption="precision = 100 x (1 - mean relative error); in-sample is a reference only",
    )
    for name, justify in (
        ("model", "left"),
        ("split", "left"),
        ("n", "right"),
        ("precision %", "right"),
        ("R²", "right"),
        ("median %", "right"),
        ("worst %", "right"),
        ("note", "left"),
    ):
        table.add_column(name, justify=typing.cast(Any, justify))
    # Notes are long: the table carries a reference, the text is printed below it.
    notes: list[str] = []
    for split in results.splits:
        rows = [s for s in results.scores if s.split == split]
        for i, s in enumerate(rows):
            text = s.note if s.evaluable else f"not evaluable: {s.reason}"
            ref = ""
            if text:
                notes.append(text)
                ref = f"[{len(notes)}]"
            table.add_row(s.model, split, *_figure_cells(s), ref, end_section=i == len(rows) - 1)
    out.print(table)
    for i, text in enumerate(notes, 1):
        out.print(f"[{i}] {text}", highlight=False, markup=False)
    if results.effects:
        effects = Table(
            title="Design choices: measured energy per step, ratio to the reference",
            caption="runs that differ in this choice only; mean over the pairs",
        )
        for name, justify in (("choice", "left"), ("vs", "left"), ("pairs", "right")):
            effects.add_column(name, justify=typing.cast(Any, justify))
        effects.add_column("ratio", justify="right")
        effects.add_column("range", justify="right")
        for e in results.effects:
            effects.add_row(
                f"{e.knob} {e.value}",
                e.reference,
                str(e.pairs),
                f"{e.ratio:.3f}",
                f"{e.ratio_min:.3f} to {e.ratio_max:.3f}",
            )
        out.print(effects)
    caveat = energy_caveat(results)
    if caveat:
        out.print(f"[bold yellow]{caveat}[/bold yellow]")
    for split in results.splits:
        out.print(verdict(results, split).text, highlight=False)
    for g in goals(results):
        value = "n/a" if g.value_pct is None else f"{g.value_pct:.2f} %"
        colour = {True: "green", False: "red", None: "yellow"}[g.met]
        out.print(f"goal {g.text} ({g.split}): {value}: [{colour}]{g.status}[/{colour}]")


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------


def _csv_text(results: StudyResults) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for p in results.predictions:
        writer.writerow(
            [
                p.model,
                p.split,
                p.run_id,
                p.family,
                p.dataset,
                p.dtype,
                repr(p.predicted_j),
                repr(p.measured_j),
                repr(p.rel_err),
            ]
        )
    return buf.getvalue()


def save_plot(results: StudyResults, path: str | os.PathLike[str]) -> Path:
    """Draw predicted vs measured joules per step: one panel per split, log axes.

    Colour: family. Marker: model. The diagonal is a perfect prediction.

    Raises:
        MissingExtraError: matplotlib is not installed (the message names the pip command).
    """
    figure_cls, canvas_cls = import_matplotlib()
    splits = list(results.splits)
    cols = min(2, max(1, len(splits)))
    rows = max(1, math.ceil(len(splits) / cols))
    fig = figure_cls(figsize=(6.0 * cols, 5.0 * rows), layout="constrained")
    canvas_cls(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    families = sorted({r.family for r in results.runs})
    colours = {f: f"C{i % 10}" for i, f in enumerate(families)}
    markers = {m.name: _MARKERS[i % len(_MARKERS)] for i, m in enumerate(results.models)}
    for k, split in enumerate(splits):
        ax = axes[k // cols][k % cols]
        preds = [p for p in results.predictions if p.split == split and p.predicted_j > 0]
        groups: dict[tuple[str, str], list[PredictionRow]] = {}
        for p in preds:
            groups.setdefault((p.model, p.family), []).append(p)
        for (model, family), group in groups.items():
            ax.plot(
                [p.measured_j for p in group],
                [p.predicted_j for p in group],
                markers.get(model, "o"),
                color=colours.get(family, "gray"),
                markersize=5,
                alpha=0.75,
                linestyle="none",
            )
        values = [v for p in preds for v in (p.measured_j, p.predicted_j)]
        if values:
            lo, hi = min(values) / 1.5, max(values) * 1.5
            ax.plot([lo, hi], [lo, hi], "-", color="black", linewidth=0.8)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
        else:
            ax.text(0.5, 0.5, "nothing evaluable", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("measured energy per step (J)")
        ax.set_ylabel("predicted energy per step (J)")
        ax.set_title(f"{split}: {SPLITS.get(split, '')}", fontsize=9)
    for k in range(len(splits), rows * cols):
        axes[k // cols][k % cols].set_axis_off()
    # One legend for the figure: families by colour, models by marker.
    handles, labels = [], []
    ax0 = axes[0][0]
    for f in families:
        (h,) = ax0.plot([], [], "o", color=colours[f], linestyle="none")
        handles.append(h)
        labels.append(f)
    for m, mk in markers.items():
        (h,) = ax0.plot([], [], mk, color="gray", linestyle="none")
        handles.append(h)
        labels.append(m)
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    title = f"Predicted vs measured energy per training step ({results.hardware})"
    if energy_caveat(results):
        title += "\nsome energies are estimates, not measurements (see results.md)"
    fig.suptitle(title)

    def write(fh: typing.IO[bytes]) -> None:
        fig.savefig(fh, format="png", dpi=100)

    out = Path(path)
    atomic_write(out, write)
    return out


def save_results(results: StudyResults, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``results.json``, ``predictions.csv`` and, with matplotlib, the PNG.

    Args:
        results: the evaluation.
        out_dir: the directory (created if missing).

    Returns:
        ``{"json": ..., "csv": ..., "png": ...}``; without matplotlib there is no ``"png"`` key
        and a ``RuntimeWarning`` says why and how to install it.
    """
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    data = (json.dumps(results.to_dict(), indent=2, allow_nan=False) + "\n").encode("utf-8")
    paths["json"] = d / "results.json"
    atomic_write(paths["json"], lambda fh: fh.write(data))
    text = _csv_text(results).encode("utf-8")
    paths["csv"] = d / "predictions.csv"
    atomic_write(paths["csv"], lambda fh: fh.write(text))
    try:
        paths["png"] = save_plot(results, d / "predicted_vs_measured.png")
    except MissingExtraError as exc:
        notices.warn(
            f"predicted_vs_measured.png not written: {exc} (fix: {PLOT_INSTALL_HINT})",
            stacklevel=2,
        )
    return paths


# ----------------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def energy_caveat(results: StudyResults) -> str | None:
    """A warning when some runs' energy is not a hardware measurement, else None."""
    kinds: dict[str, int] = {}
    for r in results.runs:
        kinds[r.kind] = kinds.get(r.kind, 0) + 1
    weak = {k: n for k, n in kinds.items() if k in ("estimate", "unknown", "fake", "replay")}
    if not weak:
        return None
    listed = ", ".join(f"{n} {k}" for k, n in sorted(weak.items()))
    return (
        f"Not a measurement of energy ({listed} of {len(results.runs)} runs): an estimate "
        "(e.g. process CPU time x a constant power where no RAPL counter was readable) or an "
        "unrecorded kind. These figures check the pipeline, not an energy law."
    )


def results_markdown(results: StudyResults, machine: str, date: str) -> str:
    """A Markdown section for ``docs/results.md``: machine, date, table, goals, verdicts, runs.

    Args:
        results: the evaluation.
        machine: the machine in words (e.g. ``"NVIDIA H100 80GB HBM3, driver 550"``).
        date: when the study ran (e.g. ``"2026-11-25"``).

    Returns:
        The section, starting with a level-2 heading and ending with a newline.
    """
    lines = [
        f"## Energy scaling law on {results.hardware} ({date})",
        "",
        f"Machine: {machine}. Date: {date}. Held-out configurations: each prediction comes from a "
        "model fitted without the predicted configuration (except the in-sample rows, a "
        "reference). Precision = 100 × (1 − mean relative error); the paper does not define "
        'its "precision", this project reports this under that name.',
        "",
        "Energy: "
        + ", ".join(
            f"{sum(1 for r in results.runs if r.kind == k)} runs {k}"
            for k in sorted({r.kind for r in results.runs})
        )
        + " (sensor kind: counter = hardware energy counter, power-integration = integrated "
        "instant power, estimate = not a measurement).",
        "",
        *([f"**{caveat}**", ""] if (caveat := energy_caveat(results)) else []),
        "### Goals",
        "",
    ]
    for g in goals(results):
        value = "not evaluable" if g.value_pct is None else f"{g.value_pct:.2f} % (n = {g.n})"
        lines.append(f"- {g.text} (split `{g.split}`): {value}: **{g.status}**")
    lines += [
        "",
        "### Results",
        "",
        "| model | split | n | precision % | R² | median % | worst % | note |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for s in results.scores:
        note = (s.note or "") if s.evaluable else f"not evaluable: {s.reason}"
        cells = [*_figure_cells(s), _md_cell(note)]
        lines.append(f"| {s.model} | {s.split} | " + " | ".join(cells) + " |")
    lines += ["", "Verdicts (each on the runs every evaluable model of the split predicted):", ""]
    lines += [f"- {verdict(results, split).text}" for split in results.splits]
    lines += ["", "Models:", ""]
    lines += [
        f"- `{m.name}`: {m.formula}" + (" (needs a measurement)" if m.needs_measurement else "")
        for m in results.models
    ]
    lines += ["", "Splits:", ""]
    lines += [f"- `{s}`: {SPLITS.get(s, '')}" for s in results.splits]
    counts = Counter((r.family, r.dtype) for r in results.runs)
    dtypes = sorted({d for _, d in counts})
    families = sorted({f for f, _ in counts})
    lines += [
        "",
        f"Runs: {len(results.runs)} configurations.",
        "",
        "| family | " + " | ".join(dtypes) + " | total |",
        "|---|" + "---:|" * (len(dtypes) + 1),
    ]
    for fam in families:
        row = [str(counts.get((fam, d), 0)) for d in dtypes]
        total = sum(counts.get((fam, d), 0) for d in dtypes)
        lines.append(f"| {fam} | " + " | ".join(row) + f" | {total} |")
    datasets = Counter(r.dataset for r in results.runs)
    lines += [
        "",
        "Data sets: " + ", ".join(f"{k} ({v})" for k, v in sorted(datasets.items())) + ".",
        "",
    ]
    if results.effects:
        lines += [
            "### Design choices",
            "",
            "Measured energy per step of runs that differ in one choice only, as a ratio to the "
            "reference choice (mean over the pairs, and its range).",
            "",
            "| choice | vs | pairs | energy ratio | range |",
            "|---|---|---:|---:|---|",
        ]
        lines += [
            f"| {e.knob} {e.value} | {e.reference} | {e.pairs} | {e.ratio:.3f} | "
            f"{e.ratio_min:.3f} to {e.ratio_max:.3f} |"
            for e in results.effects
        ]
        lines.append("")
    return "\n".join(lines)
