"""The end-of-run energy report in the console: rich sections and :func:`render_report`.

The data lives in :class:`~lightning_to_energy.reporting.records.EnergyReport` (plain numbers and
strings); this module only renders it. It is the only module that imports ``rich``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lightning_to_energy.reporting.records import (
    FLAG_BOUNDARY,
    FLAG_COUNTER_RESET,
    FLAG_ESTIMATE,
    FLAG_FAULT,
    FLAG_IMPLAUSIBLE,
    FLAG_INTERRUPTED,
    FLAG_MISSED_WRAPS,
    FLAG_OUTLIER,
    FLAG_SHORT,
    FLAG_UNMEASURED,
    EnergyReport,
    PriorRecord,
    fit_worthy,
)
from lightning_to_energy.sensors.base import energy_word, update_period_shown

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
from lightning_to_energy.reporting.format import (
    format_duration,
    format_si,
    ordered_union,
    report_kind,
)

__all__ = [
    "REPORT_WIDTH",
    "SUMMARY_MAX_LINES",
    "prior_text",
    "render_report",
    "report_console",
    "report_sections",
    "roofline_share",
    "summary_lines",
]
"""Value of the ``format`` key that marks a JSON file as an energy report."""
"""The report schema this module writes and reads (``EnergyReport.version``)."""
"""The fixed leading CSV columns; ``energy_j[<domain>]`` and ``feature[<name>]`` follow."""


def _format_pct(fraction: float | None, *, decimals: int = 1) -> str:
    if fraction is None or math.isnan(fraction):
        return "n/a"
    return f"{100.0 * fraction:.{decimals}f} %"


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


# ----------------------------------------------------------------------------------------------
# Rendering (rich): each section is a pure function report -> renderable
# ----------------------------------------------------------------------------------------------

# How each sensor kind is shown. Anything that is not a hardware counter is marked.
_KIND_LABELS: dict[str, tuple[str, str]] = {
    "counter": ("counter", "green"),
    "power-integration": ("power-integration (integrated power)", "yellow"),
    "estimate": ("estimate (not measured)", "bold yellow"),
    "replay": ("replay (recorded trace)", "yellow"),
    "fake": ("fake (scripted, not measured)", "bold yellow"),
}

_FEATURE_LABELS: dict[str, str] = {
    "duration_s": "static power (per second of window)",
    "tos_matrix_full": "per TO, matrix units, fp64/fp32",
    "tos_matrix_reduced": "per TO, matrix units, reduced formats (tf32, bf16, fp16, fp8...)",
    "tos_vector": "per TO, vector units",
    "bytes": "per byte moved",
    "kernels": "per kernel launch",
    "intercept": "per window (constant)",
}


def _kind_text(kind: str) -> Any:
    from rich.text import Text

    label, style = _KIND_LABELS.get(kind, (f"{kind} (not a counter)", "yellow"))
    return Text(label, style=style)


def _domain_kinds(report: EnergyReport) -> dict[str, str]:
    return {s.domain: s.kind for s in report.sensors}


def _domain_label(domain: str, kinds: Mapping[str, str]) -> str:
    kind = kinds.get(domain)
    if kind is None or kind == "counter":
        return domain
    return f"{domain} ({kind})"


def _section_header(report: EnergyReport) -> RenderableType:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    for key, value in report.hardware.items():
        info.add_row(Text(str(key)), Text(str(value)))
    info.add_row("world size", Text(str(report.world_size)))
    info.add_row("created", Text(report.created))

    sensors = Table(title="Sensors behind the numbers", title_justify="left", expand=False)
    sensors.add_column("domain")
    sensors.add_column("kind")
    sensors.add_column("source")
    sensors.add_column("updates every", justify="right")
    sensors.add_column("min window", justify="right")
    for s in report.sensors:
        shown = update_period_shown(s.kind, s.update_period_s)
        sensors.add_row(
            Text(s.domain),
            _kind_text(s.kind),
            Text(s.source),
            "-" if shown is None else format_duration(shown),
            format_duration(s.min_window_s),
        )
    if not report.sensors:
        sensors.add_row(Text("none", style="yellow"), "", "no energy sensor was available", "", "")
    parts: list[RenderableType] = [Text("lightning-to-energy report", style="bold"), info, sensors]
    if report.skipped_sensors:
        skipped = Table(title="Skipped sensor backends", title_justify="left")
        skipped.add_column("backend")
        skipped.add_column("reason and fix")
        for backend, reason in report.skipped_sensors.items():
            skipped.add_row(Text(backend), Text(reason))
        parts.append(skipped)
    return Group(*parts)


def _windows_by_loop(report: EnergyReport) -> tuple[dict[str, int], dict[str, int]]:
    """The kept windows per loop, and how many of them had a prediction.

    The first windows of a run without a calibration are measured before the model can
    predict, so "predicted" then sums fewer windows than "measured" and must say so (the
    totals table and the summary alike), or a 25 % over-prediction reads as an
    under-prediction.
    """
    in_loop: dict[str, int] = {}
    predicted_in_loop: dict[str, int] = {}
    for w in report.windows:
        in_loop[w.loop] = in_loop.get(w.loop, 0) + 1
        if w.predicted_j is not None:
            predicted_in_loop[w.loop] = predicted_in_loop.get(w.loop, 0) + 1
    return in_loop, predicted_in_loop


def _partly_predicted(predicted: int, kept: int, total: int) -> bool:
    """Some but not all of a loop's ``total`` windows had a prediction, and that is known.

    NB: known only when every window is kept: a long run folds its oldest windows (the
    unpredicted first ones) into the totals, and then the count is unknown.
    """
    return 0 < predicted < kept == total


def _section_totals(report: EnergyReport) -> RenderableType:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    kinds = _domain_kinds(report)
    by_loop = Table(title="Totals per loop", title_justify="left")
    for name, justify in (
        ("loop", "left"),
        ("windows", "right"),
        ("steps", "right"),
        ("duration", "right"),
        (energy_word(report_kind(report)), "right"),  # "measured" only when measured
        ("predicted", "right"),
        ("avg power", "right"),
        ("TOs", "right"),
        ("FLOPs", "right"),
        ("J per TO", "right"),
    ):
        by_loop.add_column(name, justify=justify)  # type: ignore[arg-type]

    def row(
        label: str,
        windows: int,
        steps: int,
        dur: float,
        meas: float,
        pred: float,
        tos: float,
        flops: float,
    ) -> list[Any]:
        return [
            Text(label),
            f"{windows:,}",
            f"{steps:,}",
            format_duration(dur),
            format_si(meas, "J"),
            format_si(pred, "J"),
            format_si(_ratio(meas, dur), "W"),
            format_si(tos, "TO"),
            format_si(flops, "FLOP"),
            format_si(_ratio(meas, tos), "J/TO"),
        ]

    loops = list(report.loops.values())
    in_loop, predicted_in_loop = _windows_by_loop(report)
    partial = False

    def coverage(cells: list[Any], predicted: int, kept: int, total: int, pred_j: float) -> None:
        nonlocal partial
        if not report.windows:
            return
        if predicted == 0 and (kept == total or pred_j == 0):
            cells[5] = "n/a"  # no window had a prediction; 0 J would mislead
        elif _partly_predicted(predicted, kept, total):
            cells[5] = f"{cells[5]} ({predicted} of {total})"
            partial = True

    for lt in loops:
        cells = row(lt.loop, lt.windows, lt.steps, lt.duration_s, lt.measured_j, lt.predicted_j,
                    lt.tos, lt.flops)  # fmt: skip
        coverage(
            cells,
            predicted_in_loop.get(lt.loop, 0),
            in_loop.get(lt.loop, 0),
            lt.windows,
            lt.predicted_j,
        )
        by_loop.add_row(*cells)
    if len(loops) > 1:
        by_loop.add_section()
        cells = row(
            "all",
            sum(lt.windows for lt in loops),
            sum(lt.steps for lt in loops),
            sum(lt.duration_s for lt in loops),
            report.measured_j,
            report.predicted_j,
            sum(lt.tos for lt in loops),
            sum(lt.flops for lt in loops),
        )
        coverage(
            cells,
            sum(predicted_in_loop.values()),
            len(report.windows),
            sum(lt.windows for lt in loops),
            report.predicted_j,
        )
        by_loop.add_row(*cells)
    domains_used = ordered_union((lt.energy_j for lt in loops), first=list(kinds))
    by_loop.caption = (
        f"{energy_word(report_kind(report))} = sum over domains: "
        + ", ".join(_domain_label(d, kinds) for d in domains_used)
        + "; predicted = sum of per-window predictions made before each measurement"
        + (
            "; (k of n): only k of the n windows had a prediction (a run without a "
            "calibration measures its first windows before it can predict): compare "
            "Σ predicted / Σ measured under Prediction accuracy"
            if partial
            else ""
        )
        if domains_used
        else "no energy domain measured"
    )

    total_duration = sum(lt.duration_s for lt in loops)
    domain_totals = {d: sum(lt.energy_j.get(d, 0.0) for lt in loops) for d in domains_used}
    grand = sum(domain_totals.values())
    by_domain = Table(title="Totals per energy domain", title_justify="left")
    by_domain.add_column("domain")
    by_domain.add_column("kind")
    by_domain.add_column("energy", justify="right")
    by_domain.add_column("share", justify="right")
    by_domain.add_column("avg power", justify="right")
    for d, energy in domain_totals.items():
        by_domain.add_row(
            Text(d),
            _kind_text(kinds[d]) if d in kinds else Text("unknown", style="yellow"),
            format_si(energy, "J"),
            _format_pct(_ratio(energy, grand)),
            # NB: averaged over the summed loop durations; idle time between loops is excluded.
            format_si(_ratio(energy, total_duration), "W"),
        )
    return Group(by_loop, by_domain)


def _section_accuracy(report: EnergyReport) -> RenderableType:
    from rich.table import Table
    from rich.text import Text

    acc = report.accuracy
    table = Table(title="Prediction accuracy", title_justify="left")
    table.add_column("precision", justify="right")
    table.add_column("R²", justify="right")
    table.add_column("median error", justify="right")
    table.add_column("worst error", justify="right")
    table.add_column("windows", justify="right")
    table.add_column("Σ predicted / Σ measured", justify="right")

    def pct(key: str) -> str:
        v = acc.get(key)
        return "n/a" if v is None or math.isnan(v) else f"{v:.1f} %"

    r2 = acc.get("r2")
    n = acc.get("n")
    sources: dict[str, int] = {}
    for w in report.windows:
        # the windows the accuracy scored: predicted, then fitted (a short window's prediction
        # is not scored, so its source beside n would contradict it)
        if w.predicted_j is not None and fit_worthy(w.measured_j, w.flags):
            sources[w.prediction_source] = sources.get(w.prediction_source, 0) + 1
    # Totals compared over the same windows: those with both a prediction and a measurement.
    paired = [
        (w.predicted_j, w.measured_j)
        for w in report.windows
        if w.predicted_j is not None and w.measured_j is not None
    ]
    n_text = "n/a" if n is None or math.isnan(n) else f"{int(n):,}"
    if sources:
        n_text += " (" + ", ".join(f"{k} {v}" for k, v in sorted(sources.items())) + ")"
    table.add_row(
        pct("precision_pct"),
        "n/a" if r2 is None or math.isnan(r2) else f"{r2:.3f}",
        _format_pct(acc.get("median_rel_err")),
        _format_pct(acc.get("worst_rel_err")),
        Text(n_text),
        _format_pct(_ratio(sum(p for p, _ in paired), sum(m for _, m in paired))),
    )
    word = energy_word(report_kind(report))
    table.caption = (
        "precision = 100 × (1 − MAPE), MAPE = mean of |predicted − measured| / measured over "
        "windows predicted before their measurement was seen (prequential); errors are relative; "
        "Σ ratio over windows with both numbers"
        # an estimate scores the model against the estimate, not against the hardware
        + ("" if word == "measured" else f"; 'measured' here: the sensor's {word} joules")
    )
    if report.prior is None:  # an older report: it did not record its prior
        return table
    from rich.console import Group

    # Beside the accuracy: the first windows' predictions ("prior" above) come from it.
    line = Text("prior: ", style="bold")
    line.append(prior_text(report.prior))
    return Group(table, line)


def prior_text(prior: PriorRecord) -> str:
    """The calibration a run's model started from, in one line.

    E.g. ``"/home/me/.cache/.../h100.json (made on this hardware): 512 of its 2,048 stored
    windows, from 7 of its 40 runs, seeded the model"``, ``"none: the first run on this
    hardware (...)"``, or, when the physical step model gave the coefficients, ``"physical step
    model, datasheet priors for NVIDIA H100 SXM5 80GB (h100-sxm)"``.
    """
    physical = f"physical step model, {prior.physical}" if prior.physical else ""
    why = f"physical model not used: {prior.physical_note}" if prior.physical_note else ""
    if not prior.source:
        first = (
            [physical, prior.note]
            if physical
            else [f"none: {prior.note}" if prior.note else "none"]
        )
        return "; ".join(p for p in (*first, why) if p)
    made = (
        f"made on other hardware: {prior.hardware}"
        if prior.other_hardware
        else "made on this hardware"
    )
    seeded = (
        f"{prior.seed_windows:,} of its {prior.stored_windows:,} "
        f"stored windows, from {prior.seed_runs:,} of its {prior.stored_runs:,} "
        f"run{'' if prior.stored_runs == 1 else 's'}, seeded the model"
    )
    if physical and not prior.seed_windows:  # the file's physical model alone
        text = f"{physical} ({made})"
    elif physical:
        # The file seeded the model; the prior's coefficients came from a physical model (the
        # file's own, or a built-in one that was made neither from it nor on this hardware).
        text = f"{prior.source} ({made}): {seeded}; prior coefficients: {physical}"
    else:
        text = f"{prior.source} ({made}): {seeded}"
    parts = [text, *(p for p in (prior.note, why) if p)]
    return "; ".join(parts)


def _section_coefficients(report: EnergyReport) -> RenderableType | None:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    if not report.coefficients:
        return None
    table = Table(title="Fitted coefficients", title_justify="left")
    table.add_column("feature")
    table.add_column("value", justify="right")
    table.add_column("meaning")
    for name, value in report.coefficients.items():
        unit = report.coefficient_units.get(name, "")
        table.add_row(Text(name), format_si(value, unit), Text(_FEATURE_LABELS.get(name, "")))
    if report.identifiable:
        return table
    note = Text(
        "Note: the coefficients are not separately identifiable from this run's windows (their "
        "features moved together, e.g. every window ran the same step). Their combination predicts "
        "this workload, but individual values are not physical constants; vary batch size, model "
        "or precision to separate them.",
        style="yellow",
    )
    return Group(table, note)


def _share_table(title: str, label: str, values: Mapping[str, float]) -> Any:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left")
    table.add_column(label)
    table.add_column("TOs", justify="right")
    table.add_column("share", justify="right")
    total = sum(values.values())
    for key, v in sorted(values.items(), key=lambda kv: kv[1], reverse=True):
        table.add_row(Text(key), format_si(v, "TO"), _format_pct(_ratio(v, total)))
    return table


def _section_tos(report: EnergyReport) -> RenderableType | None:
    from rich.columns import Columns

    tables = [
        _share_table("TOs by class", "class", report.tos_by_class),
        _share_table("TOs by format", "format", report.tos_by_format),
        _share_table("TOs by phase", "phase", report.tos_by_phase),
    ]
    if not (report.tos_by_class or report.tos_by_format or report.tos_by_phase):
        return None
    return Columns(tables, padding=(0, 2))


def _section_modules(report: EnergyReport) -> RenderableType | None:
    from rich.table import Table
    from rich.text import Text

    if not report.top_modules:
        return None
    table = Table(title="Top modules by TOs (per step)", title_justify="left")
    table.add_column("module")
    table.add_column("TOs", justify="right")
    table.add_column("TO share", justify="right")
    table.add_column("time share", justify="right")
    table.add_column("dynamic", justify="right")
    table.add_column("static", justify="right")
    table.add_column("predicted per step", justify="right")
    for m in report.top_modules:
        total = None
        if m.predicted_j is not None or m.static_j is not None:
            total = (m.predicted_j or 0.0) + (m.static_j or 0.0)
        table.add_row(
            Text(m.name or "(root)"),
            format_si(m.tos, "TO"),
            _format_pct(m.share),
            _format_pct(m.time_share),
            format_si(m.predicted_j, "J"),
            format_si(m.static_j, "J"),
            format_si(total, "J"),
        )
    attributed = any(m.static_j is not None for m in report.top_modules)
    table.caption = (
        "dynamic: the module's share of a step's TOs times the step's predicted dynamic energy; "
        "static: its share of the step's roofline time times the step's predicted static "
        "energy (static power x step time)"
        + (
            ""
            if attributed
            else f"; static energy is not attributed to layers: {report.static_note or 'no data'}"
        )
    )
    return table


def _section_forecast(report: EnergyReport) -> RenderableType | None:
    from rich.text import Text

    fc = report.forecast
    if fc is None:
        return None
    done = _format_pct(_ratio(fc.steps_done, fc.steps_total))
    return Text.assemble(
        ("Forecast for the whole run: ", "bold"),
        f"{format_si(fc.total_j, 'J')} ({format_si(fc.low_j, 'J')} to "
        f"{format_si(fc.high_j, 'J')}) over {fc.steps_total:,} steps; "
        f"{fc.steps_done:,} done ({done})",
    )


def roofline_share(report: EnergyReport, loop: str = "train") -> tuple[float, float, int] | None:
    """``loop``'s roofline seconds, the seconds its steps took, over its windows that record
    a roofline (``roofline_s``), and how many windows that is; None without any.

    Their ratio is how close the steps came to the hardware's peaks: the rest of the time the
    device waits (kernel launches, Python, data loading, synchronisation) while still drawing
    its static power.
    """
    ws = [w for w in report.windows if w.loop == loop and "roofline_s" in w.features]
    if not ws:
        return None
    return (
        math.fsum(w.features["roofline_s"] for w in ws),
        math.fsum(w.duration_s for w in ws),
        len(ws),
    )


def _section_roofline(report: EnergyReport) -> RenderableType | None:
    from rich.text import Text

    share = roofline_share(report)
    if share is None or share[1] <= 0:
        return None
    roofline, took, n = share
    spec = report.hardware.get("roofline")
    on = f" of {spec}" if spec else ""
    return Text.assemble(
        ("Roofline: ", "bold"),
        f"over {n:,} train windows the steps took {format_duration(took)}; at the peaks{on} "
        f"they would take {format_duration(roofline)}, {_format_pct(roofline / took)} of that. "
        "The rest is time the device waits (launches, Python, data, synchronisation) while "
        "drawing static power: see docs/roofline.md.",
    )


def _window_warnings(report: EnergyReport) -> list[str]:
    counts: dict[str, int] = {}
    for w in report.windows:
        for flag in w.flags:
            counts[flag] = counts.get(flag, 0) + 1
    n = len(report.windows)
    out: list[str] = []
    messages = {
        FLAG_SHORT: "shorter than a sensor's minimum trustworthy window (joules noisy)",
        FLAG_FAULT: "had a sensor fault (a domain is missing from their joules)",
        FLAG_IMPLAUSIBLE: "had a reading that cannot be true (left out of their joules)",
        FLAG_COUNTER_RESET: "saw a counter reset (that domain's joules are unknown, left out)",
        FLAG_MISSED_WRAPS: "may have missed RAPL wraps (that domain's joules left out)",
        FLAG_ESTIMATE: "include estimated, not measured, joules",
        FLAG_UNMEASURED: "have no measured joules at all",
        FLAG_OUTLIER: "were measured but not used to fit the model",
        FLAG_BOUNDARY: "closed early at an epoch or loop boundary",
        FLAG_INTERRUPTED: "were open when the run was interrupted (measured, not fitted)",
    }
    for flag, text in messages.items():
        if counts.get(flag):
            out.append(f"{counts[flag]} of {n} windows {text} [{flag}]")
    for flag in sorted(set(counts) - set(messages)):
        out.append(f"{counts[flag]} of {n} windows flagged {flag!r}")
    return out


def _section_warnings(report: EnergyReport, *, max_ops: int = 10) -> RenderableType:
    from rich.console import Group
    from rich.text import Text

    lines: list[str] = [*_window_warnings(report), *report.warnings]
    if report.unmodelled_ops:
        ops = sorted(report.unmodelled_ops.items(), key=lambda kv: (-kv[1], kv[0]))
        shown = ", ".join(f"{name} ×{calls:,}" for name, calls in ops[:max_ops])
        more = f" and {len(ops) - max_ops} more" if len(ops) > max_ops else ""
        lines.append(
            f"{len(ops)} op(s) without a TO formula, given a flagged fallback estimate "
            f"(calls per step): {shown}{more}"
        )
    if not lines:
        return Text("Warnings: none", style="green")
    return Group(
        Text("Warnings", style="bold yellow"),
        *(Text(f"- {line}", style="yellow") for line in lines),
    )


def report_sections(report: EnergyReport) -> list[RenderableType]:
    """The report's rich renderables, in display order (sections with no data are left out)."""
    sections = [
        _section_header(report),
        _section_totals(report),
        _section_accuracy(report),
        _section_coefficients(report),
        _section_tos(report),
        _section_modules(report),
        _section_forecast(report),
        _section_roofline(report),
        _section_warnings(report),
    ]
    return [s for s in sections if s is not None]


# Columns of a report printed to a file or a pipe (a cluster job's log): rich's 80 squeezes the
# totals table until its headers read "wind…" and "dura…"; 120 fits every table whole.
REPORT_WIDTH = 120


def report_console() -> Console:
    """A console on stdout for reports: the terminal's width, or :data:`REPORT_WIDTH` columns
    when stdout is not a terminal and ``COLUMNS`` does not say otherwise."""
    from rich.console import Console as _Console

    console = _Console()
    if not console.is_terminal and not console.is_jupyter and "COLUMNS" not in os.environ:
        console = _Console(width=REPORT_WIDTH)
    return console


def render_report(report: EnergyReport, console: Console | None = None) -> None:
    """Print the report with rich.

    Args:
        report: the report.
        console: where to print; :func:`report_console` (stdout) when None. Use
            ``Console(record=True)`` and ``export_text()`` to capture it as text.
    """
    if console is None:
        console = report_console()
    for section in report_sections(report):
        console.print(section)
        console.print()


# ----------------------------------------------------------------------------------------------
# The end-of-run summary (plain text): what a run prints by default
# ----------------------------------------------------------------------------------------------

SUMMARY_MAX_LINES = 15
"""The summary, files lines included, never runs longer than this."""


def _joules_label(report: EnergyReport) -> str:
    """``"measured"``, or what the joules are instead: ``"estimated (cpu:estimate)"``."""
    from lightning_to_energy.sensors.base import MEASURED_KINDS

    weak = [s for s in report.sensors if s.kind not in MEASURED_KINDS]
    if not report.sensors:
        return "not measured (no sensor)"
    if not weak:
        return "measured"
    word = {"estimate": "estimated, not measured", "fake": "from a fake sensor, not measured"}
    kinds = sorted({s.kind for s in weak})
    label = (
        word.get(kinds[0], f"{kinds[0]}, not a hardware counter")
        if len(kinds) == 1
        else ("partly not measured")
    )
    return f"{label} ({', '.join(s.domain for s in weak)})"


def summary_lines(report: EnergyReport, *, max_modules: int = 3) -> list[str]:
    """The report in a few plain lines (at most :data:`SUMMARY_MAX_LINES` minus the files
    lines the caller adds): totals, why the run was interrupted (when it was), accuracy, the
    step's cost and top layers, the roofline, and how many notices the full report holds."""
    loops = list(report.loops.values())
    duration = math.fsum(lt.duration_s for lt in loops)
    # Without a sensor nothing was measured: "0 J" and "0 W average" would read as a
    # measurement of nothing, so the summary says "not measured" where joules would go.
    measured = bool(report.sensors)

    def joules(value: float) -> str:
        return format_si(value, "J") if measured else "not measured"

    lines = [
        f"lightning-to-energy: {format_si(report.measured_j, 'J')} {_joules_label(report)}"
        f" in {format_duration(duration)} ({format_si(_ratio(report.measured_j, duration), 'W')}"
        " average)"
        if measured
        else f"lightning-to-energy: energy {_joules_label(report)} in {format_duration(duration)}"
    ]
    if report.interrupted is not None:
        # Printed after Ctrl-C or an exception too: say first that the figures are partial.
        lines.append(
            f"  interrupted ({report.interrupted}): a partial report of the steps run until then"
        )
    in_loop, predicted_in_loop = _windows_by_loop(report)
    for lt in loops:
        predicted = f", predicted {format_si(lt.predicted_j, 'J')}" if lt.predicted_j else ""
        n_predicted = predicted_in_loop.get(lt.loop, 0)
        if predicted and _partly_predicted(n_predicted, in_loop.get(lt.loop, 0), lt.windows):
            # As in the totals table: predicted then sums fewer windows than measured.
            predicted += f" ({n_predicted} of {lt.windows} windows)"
        lines.append(
            f"  {lt.loop:<9} {lt.steps:>7,} {'step ' if lt.steps == 1 else 'steps'} in "
            f"{format_duration(lt.duration_s):>10}: "
            f"{joules(lt.measured_j)}{predicted}"
        )
    acc = report.accuracy
    precision = acc.get("precision_pct")
    if precision is not None and math.isfinite(precision):
        n = acc.get("n", math.nan)
        lines.append(
            f"  predicted before measuring: precision {precision:.1f} %, median error "
            f"{_format_pct(acc.get('median_rel_err'))}"
            + (f" over {int(n):,} window{'' if int(n) == 1 else 's'}" if math.isfinite(n) else "")
        )
    train = report.loops.get("train")
    if train is not None and train.steps > 0:
        per_step = "  per train step: " + (
            f"{format_si(train.measured_j / train.steps, 'J')}, " if measured else ""
        )
        per_step += format_si(train.tos / train.steps, "TO")
        if report.top_modules:
            top = ", ".join(
                f"{m.name or '(root)'} {_format_pct(m.share, decimals=0)}"
                for m in report.top_modules[:max_modules]
            )
            per_step += f"; most TOs: {top}"
        lines.append(per_step)
    share = roofline_share(report)
    if share is not None and share[1] > 0:
        lines.append(
            f"  roofline: the steps ran at {_format_pct(share[0] / share[1])} of the hardware's "
            "peaks; the rest of the time is spent waiting, at static power"
        )
    notices = len(_window_warnings(report)) + len(report.warnings) + bool(report.unmodelled_ops)
    if notices:
        lines.append(f"  {notices} notice(s) in the full report (window flags, calibration, ops)")
    return lines
