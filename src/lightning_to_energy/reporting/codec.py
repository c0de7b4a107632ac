"""The report's JSON schema: strict JSON out (:func:`report_to_dict`), checked JSON in.

:func:`load_report` reads what :func:`~lightning_to_energy.reporting.files.save_report` wrote and
refuses, with a message naming the field, what was expected and the fix, any file that is not a
report of this schema. Non-finite numbers travel as the strings ``"NaN"``, ``"Infinity"`` and
``"-Infinity"`` (:func:`to_json_value`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import types
import typing
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_to_energy._files import describe_not_json, parse_json
from lightning_to_energy.formats import REPORT_FORMAT
from lightning_to_energy.reporting.records import (
    EnergyReport,
)

if TYPE_CHECKING:
    pass

__all__ = [
    "REPORT_FORMAT",
    "SCHEMA_VERSION",
    "ReportFormatError",
    "load_report",
    "report_from_dict",
    "report_to_dict",
    "to_json_value",
]


SCHEMA_VERSION = "1"

# Non-finite floats are written as these strings so that the file stays strict JSON
# (``NaN`` is not JSON) and still reads back to the same float.
_NONFINITE_OUT = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_NONFINITE_IN = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


class ReportFormatError(ValueError):
    """A report file or dict is not a readable energy report (what, where, and the fix)."""


# ----------------------------------------------------------------------------------------------
# JSON: encoding and validated decoding
# ----------------------------------------------------------------------------------------------


def to_json_value(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return to_json_value(value.value)
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else _NONFINITE_OUT[repr(value)]
    if isinstance(value, Mapping):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [to_json_value(v) for v in value]
    # numpy scalars and the like: keep the number, lose the type.
    if hasattr(value, "item"):
        return to_json_value(value.item())
    raise TypeError(f"cannot write {type(value).__name__} to a report: {value!r}")


def report_to_dict(report: EnergyReport) -> dict[str, Any]:
    """The report as JSON-ready builtins (dicts, lists, str, int, float, bool, None).

    The first key is ``format`` (:data:`REPORT_FORMAT`), then every field of
    :class:`EnergyReport` by name. Non-finite floats are written as ``"NaN"``, ``"Infinity"``
    and ``"-Infinity"`` so the result is strict JSON.
    """
    return {"format": REPORT_FORMAT, **to_json_value(report)}


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
        ReportFormatError: the file is binary, not valid JSON or not an energy report.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "energy_report.json"
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        # A PNG or a checkpoint passed for the report: say what it is, not where UTF-8 failed.
        raise ReportFormatError(
            f"{p}: expected a JSON energy report, found a binary file. Fix: pass the "
            "energy_report.json a run wrote (not the PNG or a checkpoint)."
        ) from None
    try:
        data = parse_json(text)
    except ValueError as exc:  # JSONDecodeError, or nesting too deep to parse
        if not isinstance(exc, json.JSONDecodeError):
            raise ReportFormatError(f"{p}: {exc}") from None
        if p.suffix.lower() == ".csv":
            # Not damaged: the per-window CSV written beside the JSON, which holds the rest.
            raise ReportFormatError(
                f"{p}: expected the JSON energy report, found a CSV file (the per-window CSV "
                f"holds only the windows). Fix: pass {p.with_suffix('.json')}, written beside it."
            ) from None
        found = describe_not_json(p, text)
        if found is not None:
            # Another kind of file altogether (a script passed for the report): not damage.
            raise ReportFormatError(
                f"{p}: expected a JSON energy report, found {found}, not JSON. Fix: pass the "
                "energy_report.json a run wrote (in its log directory, e.g. "
                "lightning_logs/version_0/)."
            ) from None
        raise ReportFormatError(
            f"{p}: expected a JSON energy report, found invalid JSON ({exc.msg} at line "
            f"{exc.lineno}, column {exc.colno}). Fix: the file is damaged or truncated; use "
            "another copy or re-run to write it again."
        ) from None
    return report_from_dict(data, source=str(p))
