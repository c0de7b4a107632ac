"""The study's run JSONs, read and checked: one :class:`StudyRun` per configuration.

Written by :mod:`lightning_to_energy.study.runner`; format in ``docs/dev/CONTRACTS.md``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_to_energy import notices
from lightning_to_energy._files import parse_json
from lightning_to_energy.formats import RUN_FORMAT

__all__ = [
    "PER_STEP_KEYS",
    "RUN_FORMAT",
    "RUN_SUFFIX",
    "RUN_VERSION",
    "StudyRun",
    "check_one_hardware",
    "field_error",
    "load_runs",
]

RUN_VERSION = 1
RUN_SUFFIX = ".run.json"

# The per-step scalars every run JSON carries (CONTRACTS.md, "Study run JSON").
PER_STEP_KEYS: tuple[str, ...] = (
    "tos",
    "flops",
    "tos_matrix_full",
    "tos_matrix_reduced",
    "tos_vector",
    "bytes",
    "kernels",
    "roofline_s",
)
# roofline_s may be null: the study ran on hardware the roofline table does not know.
_NULLABLE_PER_STEP = frozenset({"roofline_s"})


# ----------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyRun:
    """One measured configuration of the study, per training step.

    Attributes:
        id: the configuration id, e.g. ``"mlp-digits-w256-d4-relu-fp32"``.
        family: ``"mlp"``, ``"cnn"``, ``"transformer"``, ...
        dataset: the data set the configuration trained on.
        dtype: ``"fp32"`` or ``"bf16"`` (autocast).
        config: the whole ``config`` object of the run JSON (the family's knobs).
        features: the numeric ``per_step`` scalars (tos, flops, tos_matrix_full, ..., roofline_s);
            a null ``roofline_s`` is left out.
        energy_j: measured joules per training step (> 0).
        duration_s: measured seconds per training step (> 0).
        hardware: the hardware key, e.g. ``"h100-sxm"``.
        path: the file the run was read from (None for runs built in memory).
        kind: the weakest sensor kind behind ``energy_j`` (``"counter"``,
            ``"power-integration"``, ``"estimate"``, ...; ``"unknown"`` when not recorded).
    """

    id: str
    family: str
    dataset: str
    dtype: str
    config: Mapping[str, Any]
    features: Mapping[str, float]
    energy_j: float
    duration_s: float
    hardware: str
    path: Path | None = None
    kind: str = "unknown"

    def __post_init__(self) -> None:
        for name in ("energy_j", "duration_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise field_error(
                    f"study run {self.id!r}: {name}",
                    "a finite number > 0 (per training step)",
                    value,
                    "leave unmeasured runs out (load_runs skips them)",
                )

    def feature(self, name: str) -> float | None:
        """A model input by name: ``duration_s`` is the measured step time, anything else a
        ``per_step`` scalar; None when the run lacks it."""
        if name == "duration_s":
            return self.duration_s
        if name == "steps":
            return 1.0  # every figure of a run is per step
        return self.features.get(name)


def field_error(where: str, expected: str, found: Any, fix: str) -> ValueError:
    return ValueError(f"{where}: expected {expected}, found {found!r}; fix: {fix}.")


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _section(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = data.get(key)
    if not isinstance(value, Mapping):
        raise field_error(
            f"{where}: field {key!r}",
            "a JSON object",
            value if key in data else "<missing>",
            f"rewrite the run with `lightning-to-energy study` ({RUN_FORMAT} v{RUN_VERSION})",
        )
    return value


def _text_field(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise field_error(
            f"{where}: field {key!r}",
            "a non-empty string",
            value if key in data else "<missing>",
            "rewrite the run with `lightning-to-energy study`",
        )
    return value


def _parse_run(data: Any, where: str, path: Path | None) -> StudyRun | None:
    """One run JSON object -> StudyRun; None (with a warning) when it holds no measurement."""
    if not isinstance(data, Mapping):
        raise field_error(where, "a JSON object", type(data).__name__, "pass a *.run.json file")
    if data.get("format") != RUN_FORMAT:
        raise field_error(
            f"{where}: field 'format'",
            repr(RUN_FORMAT),
            data.get("format", "<missing>"),
            "pass a study run JSON written by `lightning-to-energy study`",
        )
    if data.get("version") != RUN_VERSION:
        raise field_error(
            f"{where}: field 'version'",
            f"{RUN_VERSION}",
            data.get("version", "<missing>"),
            "rerun the study with this version of lightning-to-energy, or read the run with the "
            "version that wrote it",
        )
    config = _section(data, "config", where)
    run_id = _text_field(config, "id", f"{where}: config")
    family = _text_field(config, "family", f"{where}: config")
    dataset = _text_field(config, "dataset", f"{where}: config")
    dtype = _text_field(config, "dtype", f"{where}: config")
    hardware = _text_field(_section(data, "hardware", where), "key", f"{where}: hardware")

    per_step = _section(data, "per_step", where)
    features: dict[str, float] = {}
    for key in PER_STEP_KEYS:
        raw = per_step.get(key)
        if raw is None and key in _NULLABLE_PER_STEP and key in per_step:
            continue
        value = _as_number(raw)
        if value is None or value < 0:
            raise field_error(
                f"{where}: per_step.{key}",
                "a finite number >= 0" + (" (or null)" if key in _NULLABLE_PER_STEP else ""),
                raw if key in per_step else "<missing>",
                "rerun this configuration with `lightning-to-energy study` (it counts one step)",
            )
        features[key] = value
    # Extra numeric scalars (a later study may add features) ride along; mappings do not.
    for key, raw in per_step.items():
        value = _as_number(raw)
        if key not in features and value is not None:
            features[str(key)] = value

    measured = _section(data, "measured", where)
    raw_energy = measured.get("energy_per_step_j")
    if raw_energy is None:
        notices.warn(
            f"{where}: skipped: measured.energy_per_step_j is "
            f"{'null' if 'energy_per_step_j' in measured else 'missing'} (no fit-worthy window "
            "was measured). Fix: rerun this configuration longer, or with a readable sensor.",
            stacklevel=3,
        )
        return None
    energy = _as_number(raw_energy)
    if energy is None or energy <= 0:
        raise field_error(
            f"{where}: measured.energy_per_step_j",
            "a finite number of joules > 0",
            raw_energy,
            "rerun this configuration (a zero or negative reading means a sensor fault), or "
            "delete the file",
        )
    duration = _as_number(measured.get("duration_per_step_s"))
    if duration is None:
        total_s = _as_number(measured.get("duration_s"))
        steps = _as_number(measured.get("steps"))
        if total_s is not None and steps is not None and steps > 0:
            duration = total_s / steps
    if duration is None or duration <= 0:
        raise field_error(
            f"{where}: measured.duration_per_step_s",
            "a finite number of seconds > 0 (or measured.duration_s and measured.steps)",
            measured.get("duration_per_step_s", "<missing>"),
            "rerun this configuration with `lightning-to-energy study`",
        )
    return StudyRun(
        id=run_id,
        family=family,
        dataset=dataset,
        dtype=dtype,
        config=dict(config),
        features=features,
        energy_j=energy,
        duration_s=duration,
        hardware=hardware,
        path=path,
        kind=str(measured.get("kind") or "unknown"),
    )


def load_runs(paths: Iterable[str | os.PathLike[str]]) -> list[StudyRun]:
    """Read study run JSONs from files and directories.

    A directory contributes every ``*.run.json`` directly inside it, sorted by name. A file given
    twice (or also inside a given directory) is read once. Runs without a measurement
    (``measured.energy_per_step_j`` missing or null) are skipped with a ``RuntimeWarning``.

    Args:
        paths: run files and/or directories.

    Returns:
        The runs, in the order given (directories expanded in sorted order).

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: a directory holds no run JSON, a file is not JSON, has another format or
            version, lacks a field, or holds a non-positive energy (the message names the file,
            what was expected, what was found and the fix).
    """
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(q for q in p.glob(f"*{RUN_SUFFIX}") if q.is_file())
            if not found:
                raise ValueError(
                    f"{p}: expected a directory holding *{RUN_SUFFIX} files, found none; fix: "
                    "point at the study's output directory, or run `lightning-to-energy study`."
                )
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(
                f"{p}: expected a run file or a directory of *{RUN_SUFFIX} files, found nothing "
                "at that path; fix: check the path."
            )
    runs: list[StudyRun] = []
    seen: set[Path] = set()
    for f in files:
        key = f.resolve()
        if key in seen:
            continue
        seen.add(key)
        try:
            data = parse_json(f.read_text(encoding="utf-8"))
        except ValueError as exc:  # bad UTF-8, bad JSON, or nesting too deep to parse
            raise ValueError(
                f"{f}: expected a study run JSON ({RUN_FORMAT}), found unreadable JSON ({exc}); "
                "fix: rerun this configuration, or delete the file."
            ) from None
        run = _parse_run(data, str(f), f)
        if run is not None:
            runs.append(run)
    return runs


def check_one_hardware(runs: Sequence[StudyRun]) -> str:
    if not runs:
        raise ValueError(
            "expected at least one measured study run, found none; fix: run "
            "`lightning-to-energy study` (runs without a measurement are skipped)."
        )
    keys = sorted({r.hardware for r in runs})
    if len(keys) > 1:
        raise ValueError(
            f"expected runs from one hardware (one energy law per machine), found {keys}; fix: "
            "evaluate each hardware's runs separately."
        )
    return keys[0]
