"""The end-of-run energy report: JSON/CSV/PNG files and rich rendering.

The data lives in :class:`~lightning_to_energy.reporting.records.EnergyReport` (plain numbers and
strings); this module only writes, reads and renders it. It is the only module that imports
``rich`` and ``matplotlib``; matplotlib is optional (extra ``plot``) and imported only when a
plot is drawn.

Files written by :func:`save_report` (``stem`` defaults to ``energy_report``):

- ``<stem>.json``: the whole report (:func:`report_to_dict`), read back by :func:`load_report`.
- ``<stem>.csv``: one row per window (:data:`CSV_BASE_COLUMNS`, then one column per energy
  domain and per regression feature).
- ``<stem>.png``: predicted vs measured joules per window, and cumulative energy over time.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import importlib
import io
import json
import math
import os
import tempfile
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_to_energy.reporting.records import (
    FLAG_BOUNDARY,
    FLAG_ESTIMATE,
    FLAG_FAULT,
    FLAG_OUTLIER,
    FLAG_SHORT,
    FLAG_UNMEASURED,
    EnergyReport,
    PriorRecord,
    WindowRecord,
)

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

__all__ = [
    "CSV_BASE_COLUMNS",
    "REPORT_FORMAT",
    "SCHEMA_VERSION",
    "MissingExtraError",
    "ReportFormatError",
    "SavedReport",
    "csv_columns",
    "format_duration",
    "format_si",
    "load_report",
    "prior_text",
    "relative_error",
    "render_report",
    "report_from_dict",
    "report_sections",
    "report_to_dict",
    "save_plot",
    "save_report",
    "write_csv",
]

REPORT_FORMAT = "lightning-to-energy/energy-report"
"""Value of the ``format`` key that marks a JSON file as an energy report."""

SCHEMA_VERSION = "1"
"""The report schema this module writes and reads (``EnergyReport.version``)."""

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
"""The fixed leading CSV columns; ``energy_j[<domain>]`` and ``feature[<name>]`` follow."""

PLOT_INSTALL_HINT = "pip install 'lightning-to-energy[plot]'"

# Non-finite floats are written as these strings so that the file stays strict JSON
# (``NaN`` is not JSON) and still reads back to the same float.
_NONFINITE_OUT = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_NONFINITE_IN = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


class ReportFormatError(ValueError):
    """A report file or dict is not a readable energy report (what, where, and the fix)."""


class MissingExtraError(ImportError):
    """An optional dependency needed by an explicitly requested feature is not installed."""


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


# ----------------------------------------------------------------------------------------------
# Number formatting
# ----------------------------------------------------------------------------------------------

_PREFIXES: tuple[tuple[int, str], ...] = (
    (18, "E"),
    (15, "P"),
    (12, "T"),
    (9, "G"),
    (6, "M"),
    (3, "k"),
    (0, ""),
    (-3, "m"),
    (-6, "µ"),
    (-9, "n"),
    (-12, "p"),
    (-15, "f"),
    (-18, "a"),
)


def format_si(value: float | None, unit: str, *, digits: int = 3) -> str:
    """Format a number with an SI prefix chosen so that 1 <= mantissa < 1000.

    The prefix attaches to the front of ``unit``: ``format_si(2.1e-12, "J/TO")`` is
    ``"2.10 pJ/TO"``, ``format_si(1.234e15, "TO")`` is ``"1.23 PTO"``,
    ``format_si(12345, "J")`` is ``"12.3 kJ"``.

    Args:
        value: the number in the unit's base (joules, watts, J per TO...). None gives ``"n/a"``.
        unit: the base unit symbol; may be empty.
        digits: significant digits shown (at least 1).

    Returns:
        The formatted text, e.g. ``"126 W"``; beyond the prefix table it falls back to
        scientific notation.
    """
    sep = " " if unit else ""
    if value is None:
        return "n/a"
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return f"{'-' if value < 0 else ''}inf{sep}{unit}"
    digits = max(1, digits)
    if value == 0:
        return f"0{sep}{unit}"
    # Round to the shown significant digits first, so 999.7 becomes 1.00 k, not 1000.
    rounded = float(f"{value:.{digits - 1}e}")
    exponent = math.floor(math.log10(abs(rounded)))
    power = 3 * math.floor(exponent / 3)
    if power > _PREFIXES[0][0] or power < _PREFIXES[-1][0]:
        return f"{value:.{digits - 1}e}{sep}{unit}"
    prefix = dict(_PREFIXES)[power]
    mantissa = rounded / 10.0**power
    decimals = max(0, digits - 1 - (exponent - power))
    text = f"{mantissa:.{decimals}f}"
    suffix = f"{prefix}{unit}"
    return f"{text} {suffix}" if suffix else text


def format_duration(seconds: float | None) -> str:
    """Format a duration: ``"850 ms"``, ``"12.3 s"``, ``"4 min 05 s"``, ``"2 h 03 min"``."""
    if seconds is None or math.isnan(seconds):
        return "n/a"
    if abs(seconds) < 60:
        return format_si(seconds, "s")
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {(whole % 3600) // 60:02d} min"


def _format_pct(fraction: float | None, *, decimals: int = 1) -> str:
    if fraction is None or math.isnan(fraction):
        return "n/a"
    return f"{100.0 * fraction:.{decimals}f} %"


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def relative_error(window: WindowRecord) -> float | None:
    """Signed relative error of a window's prediction: (predicted - measured) / measured.

    Returns:
        None when the window has no prediction, no measurement, or measured zero joules.
    """
    if window.predicted_j is None or window.measured_j is None or window.measured_j == 0:
        return None
    return (window.predicted_j - window.measured_j) / window.measured_j


# ----------------------------------------------------------------------------------------------
# JSON: encoding and validated decoding
# ----------------------------------------------------------------------------------------------


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return _encode(value.value)
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else _NONFINITE_OUT[repr(value)]
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    # numpy scalars and the like: keep the number, lose the type.
    if hasattr(value, "item"):
        return _encode(value.item())
    raise TypeError(f"cannot write {type(value).__name__} to a report: {value!r}")


def report_to_dict(report: EnergyReport) -> dict[str, Any]:
    """The report as JSON-ready builtins (dicts, lists, str, int, float, bool, None).

    The first key is ``format`` (:data:`REPORT_FORMAT`), then every field of
    :class:`EnergyReport` by name. Non-finite floats are written as ``"NaN"``, ``"Infinity"``
    and ``"-Infinity"`` so the result is strict JSON.
    """
    return {"format": REPORT_FORMAT, **_encode(report)}


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


class _DecodeError(Exception):
    def __init__(self, where: str, expected: str, found: str) -> None:
        super().__init__(where, expected, found)
        self.where = where
        self.expected = expected
        self.found = found


def _decode(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:  # pragma: no cover - the records use only `X | None`
            raise TypeError(f"unsupported union {tp}")
        return _decode(value, inner[0], where)
    if tp is bool:
        if not isinstance(value, bool):
            raise _DecodeError(where, "true or false", _describe(value))
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _DecodeError(where, "an integer", _describe(value))
        return value
    if tp is float:
        if isinstance(value, str) and value in _NONFINITE_IN:
            return _NONFINITE_IN[value]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _DecodeError(where, "a number", _describe(value))
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _DecodeError(where, "a string", _describe(value))
        return value
    if origin is Mapping or origin is dict:
        if not isinstance(value, dict):
            raise _DecodeError(where, "an object", _describe(value))
        key_type, value_type = args
        return {
            _decode(k, key_type, where): _decode(v, value_type, f"{where}[{k!r}]")
            for k, v in value.items()
        }
    if origin is tuple:
        if not isinstance(value, list):
            raise _DecodeError(where, "a list", _describe(value))
        # The records use only homogeneous `tuple[X, ...]`.
        return tuple(_decode(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return _decode_dataclass(value, typing.cast(type, tp), where)
    raise TypeError(f"unsupported type in a report record: {tp}")  # pragma: no cover


def _decode_dataclass(value: Any, cls: type, where: str) -> Any:
    if not isinstance(value, dict):
        raise _DecodeError(where or "the top level", "an object", _describe(value))
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    missing = []
    for f in dataclasses.fields(cls):
        if f.name not in value:
            has_default = (
                f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            )
            if not has_default:
                missing.append(f.name)
            continue
        sub = f"{where}.{f.name}" if where else f.name
        kwargs[f.name] = _decode(value[f.name], hints[f.name], sub)
    if missing:
        raise _DecodeError(
            where or "the top level",
            f"the key(s) {', '.join(repr(m) for m in missing)} of a {cls.__name__}",
            "them missing",
        )
    return cls(**kwargs)


def report_from_dict(data: Mapping[str, Any], *, source: str = "report") -> EnergyReport:
    """Rebuild an :class:`EnergyReport` from :func:`report_to_dict` output, with validation.

    Unknown keys are ignored, so fields added later within the same schema version do not break
    older readers; missing optional fields take their defaults.

    Args:
        data: the decoded JSON object.
        source: a name for the data in error messages (usually the file path).

    Raises:
        ReportFormatError: not an energy report, another schema version, a missing required
            key or a value of the wrong type. The message says where, what was expected, what
            was found and how to fix it.
    """
    if not isinstance(data, Mapping):
        raise ReportFormatError(
            f"{source}: expected a JSON object (an energy report), found {_describe(data)}. "
            "Fix: point at the energy_report.json a run wrote."
        )
    fmt = data.get("format")
    if fmt != REPORT_FORMAT:
        found = "no 'format' key" if "format" not in data else f"format {fmt!r}"
        raise ReportFormatError(
            f"{source}: expected an energy report (key 'format' = {REPORT_FORMAT!r}), found "
            f"{found}. Fix: point at the energy_report.json a run wrote; calibration files and "
            "window CSVs cannot be rendered as a report."
        )
    version = data.get("version")
    if version != SCHEMA_VERSION:
        raise ReportFormatError(
            f"{source}: expected report schema version {SCHEMA_VERSION!r}, found {version!r}. "
            "Fix: read it with the lightning-to-energy version that wrote it "
            "(upgrade with `pip install -U lightning-to-energy` if it is newer)."
        )
    body = {k: v for k, v in data.items() if k != "format"}
    try:
        report = _decode_dataclass(body, EnergyReport, "")
    except _DecodeError as exc:
        raise ReportFormatError(
            f"{source}: at {exc.where}: expected {exc.expected}, found {exc.found}. "
            "Fix: re-save the report with lightning-to-energy, or correct that value by hand."
        ) from None
    return typing.cast(EnergyReport, report)


def load_report(path: str | os.PathLike[str]) -> EnergyReport:
    """Read a report written by :func:`save_report`.

    Args:
        path: the ``.json`` file, or a directory holding ``energy_report.json``.

    Raises:
        FileNotFoundError: no such file.
        ReportFormatError: the file is not valid JSON or not an energy report.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "energy_report.json"
    text = p.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if p.suffix.lower() == ".csv":
            # Not damaged: the per-window CSV written beside the JSON, which holds the rest.
            raise ReportFormatError(
                f"{p}: expected the JSON energy report, found a CSV file (the per-window CSV "
                f"holds only the windows). Fix: pass {p.with_suffix('.json')}, written beside it."
            ) from None
        raise ReportFormatError(
            f"{p}: expected a JSON energy report, found invalid JSON ({exc.msg} at line "
            f"{exc.lineno}, column {exc.colno}). Fix: the file is damaged or truncated; use "
            "another copy or re-run to write it again."
        ) from None
    return report_from_dict(data, source=str(p))


# ----------------------------------------------------------------------------------------------
# Files: JSON, CSV, PNG
# ----------------------------------------------------------------------------------------------


def _atomic_write(path: Path, write: typing.Callable[[typing.IO[bytes]], object]) -> None:
    """Write through a temporary file in the same directory, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _ordered_union(keys: Iterable[Iterable[str]], first: Sequence[str] = ()) -> list[str]:
    seen: dict[str, None] = dict.fromkeys(first)
    for group in keys:
        for k in group:
            seen.setdefault(k, None)
    return list(seen)


def _csv_domains(report: EnergyReport) -> list[str]:
    used = _ordered_union(w.energy_j for w in report.windows)
    # Sensor order first (as discovered), but only domains that appear in some window or sensor.
    return _ordered_union([used], first=[s.domain for s in report.sensors])


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def csv_columns(report: EnergyReport) -> list[str]:
    """The CSV header for ``report``: the base columns, domains, then features."""
    features = _ordered_union(w.features for w in report.windows)
    return [
        *CSV_BASE_COLUMNS,
        *(f"energy_j[{d}]" for d in _csv_domains(report)),
        *(f"feature[{f}]" for f in features),
    ]


def _csv_text(report: EnergyReport) -> str:
    domains = _csv_domains(report)
    features = _ordered_union(w.features for w in report.windows)
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
    _atomic_write(p, lambda fh: fh.write(data))
    return p


def _import_matplotlib() -> tuple[Any, Any]:
    """Import matplotlib's Figure and Agg canvas (no pyplot, no global backend switch).

    Raises:
        MissingExtraError: matplotlib is not installed.
    """
    try:
        importlib.import_module("matplotlib")
        figure = importlib.import_module("matplotlib.figure")
        backend_agg = importlib.import_module("matplotlib.backends.backend_agg")
    except ImportError as exc:
        raise MissingExtraError(
            "a plot of the energy report was requested, but matplotlib is not installed "
            f"({exc}). Fix: {PLOT_INSTALL_HINT}"
        ) from exc
    return figure.Figure, backend_agg.FigureCanvasAgg


def save_plot(report: EnergyReport, path: str | os.PathLike[str]) -> Path:
    """Draw the report's PNG: per-window predicted vs measured joules, and cumulative energy.

    Top panel: measured joules per window (dots) and the prequential prediction with its
    interval as error bars. Bottom panel: cumulative measured and predicted joules against the
    time each window ended.

    Raises:
        MissingExtraError: matplotlib is not installed (the message names the pip command).
    """
    figure_cls, canvas_cls = _import_matplotlib()
    p = Path(path)
    fig = figure_cls(figsize=(9.0, 7.0), layout="constrained")
    canvas_cls(fig)
    ax_win, ax_cum = fig.subplots(2, 1)
    windows = list(report.windows)

    xs_m = [w.index for w in windows if w.measured_j is not None]
    ys_m = [w.measured_j for w in windows if w.measured_j is not None]
    predicted = [w for w in windows if w.predicted_j is not None]
    xs_p = [w.index for w in predicted]
    ys_p = [typing.cast(float, w.predicted_j) for w in predicted]
    # yerr shape: (2, n) = distances below and above each prediction, clipped at 0.
    below: list[float] = []
    above: list[float] = []
    for w, y in zip(predicted, ys_p, strict=True):
        below.append(max(0.0, y - w.low_j) if w.low_j is not None else 0.0)
        above.append(max(0.0, w.high_j - y) if w.high_j is not None else 0.0)
    yerr = [below, above]
    ax_win.plot(xs_m, ys_m, "o", color="tab:blue", label="measured", markersize=4)
    if predicted:
        ax_win.errorbar(
            xs_p, ys_p, yerr=yerr, fmt="x", color="tab:orange", capsize=2, label="predicted"
        )
    ax_win.xaxis.get_major_locator().set_params(integer=True)
    ax_win.set_xlabel("window")
    ax_win.set_ylabel("energy per window (J)")
    precision = report.accuracy.get("precision_pct")
    title = "Predicted (before measuring) vs measured energy per window"
    if precision is not None and math.isfinite(precision):
        title += f": precision {precision:.1f} %"
    ax_win.set_title(title)
    if not windows:
        ax_win.text(0.5, 0.5, "no windows", ha="center", va="center", transform=ax_win.transAxes)
    if xs_m or xs_p:
        ax_win.legend(loc="best")

    def cumulative(
        items: Sequence[WindowRecord], value: typing.Callable[[WindowRecord], float]
    ) -> tuple[list[float], list[float]]:
        ordered = sorted(items, key=lambda w: w.start_s + w.duration_s)
        # Each curve starts from zero joules at its first window's start.
        ts: list[float] = [ordered[0].start_s] if ordered else []
        out: list[float] = [0.0] if ordered else []
        total = 0.0
        for w in ordered:
            total += value(w)
            ts.append(w.start_s + w.duration_s)
            out.append(total)
        return ts, out

    t_m, c_m = cumulative(
        [w for w in windows if w.measured_j is not None], lambda w: typing.cast(float, w.measured_j)
    )
    t_p, c_p = cumulative(predicted, lambda w: typing.cast(float, w.predicted_j))
    ax_cum.plot(t_m, c_m, "-", color="tab:blue", label="measured")
    if predicted:
        ax_cum.plot(t_p, c_p, "--", color="tab:orange", label="predicted")
        _, c_lo = cumulative(predicted, lambda w: w.low_j if w.low_j is not None else 0.0)
        _, c_hi = cumulative(predicted, lambda w: w.high_j if w.high_j is not None else 0.0)
        # NB: summing per-window bounds gives a conservative band (errors are not independent).
        if all(w.low_j is not None and w.high_j is not None for w in predicted):
            ax_cum.fill_between(
                t_p, c_lo, c_hi, color="tab:orange", alpha=0.2, label="sum of intervals"
            )
    ax_cum.set_xlabel("time since start (s)")
    ax_cum.set_ylabel("cumulative energy (J)")
    ax_cum.set_title("Cumulative energy")
    if t_m or t_p:
        ax_cum.legend(loc="best")

    def write(fh: typing.IO[bytes]) -> None:
        fig.savefig(fh, format="png", dpi=110)

    _atomic_write(p, write)
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
    _atomic_write(json_path, lambda fh: fh.write(text.encode("utf-8")))
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
        sensors.add_row(
            Text(s.domain),
            _kind_text(s.kind),
            Text(s.source),
            format_duration(s.update_period_s),
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
        ("measured", "right"),
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
    # Windows per loop, and how many of them had a prediction: the first windows of a run
    # without a calibration are measured before the model can predict, so "predicted" then
    # sums fewer windows than "measured" and must say so, or a 25 % over-prediction reads as
    # an under-prediction.
    in_loop: dict[str, int] = {}
    predicted_in_loop: dict[str, int] = {}
    for w in report.windows:
        in_loop[w.loop] = in_loop.get(w.loop, 0) + 1
        if w.predicted_j is not None:
            predicted_in_loop[w.loop] = predicted_in_loop.get(w.loop, 0) + 1
    partial = False

    def coverage(cells: list[Any], predicted: int, kept: int, total: int, pred_j: float) -> None:
        nonlocal partial
        if not report.windows:
            return
        if predicted == 0 and (kept == total or pred_j == 0):
            cells[5] = "n/a"  # no window had a prediction; 0 J would mislead
        elif predicted < kept == total:
            # NB: only when every window is kept: a long run folds its oldest windows (the
            # unpredicted first ones) into the totals, and then the count is unknown.
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
    domains_used = _ordered_union((lt.energy_j for lt in loops), first=list(kinds))
    by_loop.caption = (
        "measured = sum over domains: "
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
        if w.predicted_j is not None:
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
    table.caption = (
        "precision = 100 × (1 − MAPE), MAPE = mean of |predicted − measured| / measured over "
        "windows predicted before their measurement was seen (prequential); errors are relative; "
        "Σ ratio over windows with both numbers"
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
    windows, from 7 of its 40 runs, seeded the model"``, or ``"none: the first run on this
    hardware (...)"``.
    """
    if not prior.source:
        return f"none: {prior.note}" if prior.note else "none"
    made = (
        f"made on other hardware: {prior.hardware}"
        if prior.other_hardware
        else "made on this hardware"
    )
    text = (
        f"{prior.source} ({made}): {prior.seed_windows:,} of its {prior.stored_windows:,} "
        f"stored windows, from {prior.seed_runs:,} of its {prior.stored_runs:,} "
        f"run{'' if prior.stored_runs == 1 else 's'}, seeded the model"
    )
    return f"{text}; {prior.note}" if prior.note else text


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
    table.add_column("share", justify="right")
    table.add_column("predicted per step", justify="right")
    for m in report.top_modules:
        table.add_row(
            Text(m.name or "(root)"),
            format_si(m.tos, "TO"),
            _format_pct(m.share),
            format_si(m.predicted_j, "J"),
        )
    table.caption = (
        "predicted per step: the module's share of a step's TOs times the step's predicted "
        "dynamic energy (static power is not attributed to layers)"
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
        FLAG_ESTIMATE: "include estimated, not measured, joules",
        FLAG_UNMEASURED: "have no measured joules at all",
        FLAG_OUTLIER: "were measured but not used to fit the model",
        FLAG_BOUNDARY: "closed early at an epoch or loop boundary",
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
