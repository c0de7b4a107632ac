"""The calibration record: what the energy model learned on one machine, run after run.

A :class:`Calibration` holds the fitted windows (most recent first, over runs), the latest
coefficients and the runs merged into it, for one hardware fingerprint. It turns into a prior
and seed windows for the next run's model (:meth:`Calibration.prior`); :func:`merge` lays a new
run's record over the one on disk. Files are kept by
:class:`~lightning_to_energy.calibration.store.CalibrationStore`.
"""

from __future__ import annotations

import itertools
import math
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lightning_to_energy._files import found_repr, parse_json
from lightning_to_energy.hardware.identity import HardwareInfo, hardware_fingerprint
from lightning_to_energy.model.regression import (
    DEFAULT_HISTORY,
    DEFAULT_INTERVAL,
    SEED_WEIGHT,
    OnlineEnergyModel,
    Prior,
    feature_unit,
)
from lightning_to_energy.sensors.base import (
    MEASURED_KINDS,
    UNKNOWN_KIND,
    energy_label,
    weakest_kind,
)

__all__ = [
    "DEFAULT_MAX_WINDOWS",
    "MAX_RUNS_LISTED",
    "MIN_PRECISION_PCT",
    "SCHEMA_VERSION",
    "Calibration",
    "CalibrationRun",
    "CalibrationWindow",
    "merge",
]

SCHEMA_VERSION = 1
# Below this cross-validated precision a calibration predicts worse than a guess within a
# factor of two would: ``fit`` refuses to write it without --allow-imprecise, ``predict`` warns.
MIN_PRECISION_PCT = 70.0
DEFAULT_MAX_WINDOWS = 2048  # windows kept per file, over all runs
MAX_RUNS_LISTED = 200  # run entries kept per file (n_runs keeps counting past it)


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class CalibrationWindow:
    """One fitted window: features by name and measured joules."""

    features: Mapping[str, float]
    energy_j: float
    run_id: str


@dataclass(frozen=True)
class CalibrationRun:
    """A run that contributed windows."""

    run_id: str
    date: str  # ISO 8601, UTC
    windows: int


@dataclass(frozen=True)
class Calibration:
    """What one hardware's file holds.

    Attributes:
        fingerprint: :func:`hardware_fingerprint` of ``hardware``.
        hardware: the hardware it was measured on.
        feature_names: the features of the latest model.
        windows: fitted windows, most recent first, over runs.
        coefficients: the latest model's coefficients (physical units, see ``units``).
        n_runs: runs merged into the file.
        updated: ISO 8601 date (UTC) of the latest save.
        runs: the runs, oldest first (the last ``MAX_RUNS_LISTED``).
        schema_version: file format version.
        sensor_kind: the weakest sensor kind behind the windows' joules (a ``SensorKind``
            value: ``"counter"`` and ``"power-integration"`` are measured, ``"estimate"`` is
            not), or ``"unknown"`` in a file written before it was recorded.
        precision_pct: the calibration's own cross-validated precision (``fit`` writes it:
            leave-one-run-out, or held-out configurations for study runs), None when not
            scored (a file saved by ``TOEnergy``, or an earlier release).
        validation: how ``precision_pct`` was measured, in words (``""`` without it).
        physical: the physical step model fitted for this hardware
            (:meth:`lightning_to_energy.model.PhysicalModel.to_dict`), or None; where present,
            ``plan_run`` and ``predict`` use it.
    """

    fingerprint: str
    hardware: HardwareInfo
    feature_names: tuple[str, ...]
    windows: tuple[CalibrationWindow, ...]
    coefficients: Mapping[str, float]
    n_runs: int
    updated: str
    runs: tuple[CalibrationRun, ...] = ()
    schema_version: int = SCHEMA_VERSION
    sensor_kind: str = UNKNOWN_KIND
    precision_pct: float | None = None
    validation: str = ""

    @property
    def measured(self) -> bool:
        """True when every joule behind the windows was measured by hardware."""
        return self.sensor_kind in MEASURED_KINDS

    @property
    def energy_label(self) -> str:
        """How its joules are named wherever they are shown: ``"measured"`` only when measured.

        E.g. ``"measured (counter)"``, ``"estimated (estimate, not measured)"``, or ``"sensor
        kind not recorded (a file of an earlier release)"``.
        """
        return energy_label(self.sensor_kind)

    physical: Mapping[str, Any] | None = None

    @property
    def units(self) -> dict[str, str]:
        """Unit of each coefficient."""
        return {n: feature_unit(n) for n in self.coefficients}

    @classmethod
    def from_model(
        cls,
        model: OnlineEnergyModel,
        hardware: HardwareInfo | None = None,
        *,
        run_id: str | None = None,
        date: str | None = None,
        sensor_kind: str = UNKNOWN_KIND,
    ) -> Calibration:
        """This run's calibration: the model's own windows (not seeded ones) and coefficients.

        Args:
            model: the run's model.
            hardware: the hardware; None detects this machine.
            run_id: identifies the run, so saving the same run twice replaces its windows
                instead of duplicating them; None makes a new one.
            date: ISO 8601 date; None is now.
            sensor_kind: the weakest sensor kind behind the run's joules (see
                :attr:`sensor_kind`).
        """
        hw = hardware if hardware is not None else HardwareInfo.detect()
        rid = run_id or uuid.uuid4().hex[:12]
        when = date or _now_iso()
        own = model.history_windows(include_seeded=False)
        windows = tuple(CalibrationWindow(f, e, rid) for f, e in reversed(own))
        return cls(
            fingerprint=hardware_fingerprint(hw),
            hardware=hw,
            feature_names=model.feature_names,
            windows=windows,
            coefficients=model.coefficients,
            n_runs=1,
            updated=when,
            runs=(CalibrationRun(rid, when, len(windows)),),
            sensor_kind=sensor_kind,
        )

    @classmethod
    def of_physical(
        cls,
        physical: Mapping[str, Any],
        hardware: HardwareInfo,
        *,
        run_id: str,
        date: str | None = None,
        sensor_kind: str = UNKNOWN_KIND,
        precision_pct: float | None = None,
        validation: str = "",
    ) -> Calibration:
        """A calibration carrying a physical step model alone, no regression windows: what
        ``fit`` on published training steps and ``calibrate`` write.

        Args:
            physical: :meth:`lightning_to_energy.model.PhysicalModel.to_dict`'s output.
            hardware: the hardware it was measured on.
            run_id: names the measurement in ``runs``.
            date: ISO 8601 date; None is now.
            sensor_kind, precision_pct, validation: see the class.
        """
        when = date or _now_iso()
        return cls(
            fingerprint=hardware_fingerprint(hardware),
            hardware=hardware,
            feature_names=(),
            windows=(),
            coefficients={},
            n_runs=1,
            updated=when,
            runs=(CalibrationRun(run_id, when, 0),),
            sensor_kind=sensor_kind,
            precision_pct=precision_pct,
            validation=validation,
            physical=dict(physical),
        )

    def to_prior(
        self, feature_names: Sequence[str] | None = None, strength: float | None = None
    ) -> Prior:
        """The stored coefficients as a prior for a model with ``feature_names``.

        Features the calibration has no coefficient for get a prior of 0.
        """
        names = self.feature_names if feature_names is None else tuple(feature_names)
        coefs = {n: float(self.coefficients[n]) for n in names if n in self.coefficients}
        return Prior(coefficients=coefs, strength=strength)

    def seed_windows(self, feature_names: Sequence[str]) -> list[tuple[dict[str, float], float]]:
        """Stored windows that have every one of ``feature_names``, oldest first."""
        names = tuple(feature_names)
        return [
            ({n: float(w.features[n]) for n in names}, w.energy_j)
            for w in reversed(self.windows)
            if all(n in w.features for n in names)
        ]

    def model_windows(
        self, feature_names: Sequence[str], history: int = DEFAULT_HISTORY
    ) -> tuple[CalibrationWindow, ...]:
        """The stored windows :meth:`to_model` seeds a model on ``feature_names`` with.

        Those that have every one of ``feature_names``, the most recent ``history`` of them,
        most recent first.
        """
        names = tuple(feature_names)
        usable = (w for w in self.windows if all(n in w.features for n in names))
        return tuple(itertools.islice(usable, max(history, 0)))

    def usage_note(self, feature_names: Sequence[str]) -> str | None:
        """What a model on ``feature_names`` takes from this calibration, when it is not all.

        Returns:
            None when ``feature_names`` are the calibration's own (in any order); else one
            line saying which prior coefficients apply, which features start from 0, how many
            stored windows seed the model, and the fix.
        """
        names = tuple(feature_names)
        if set(names) == set(self.feature_names):
            return None
        used = [n for n in names if n in self.coefficients]
        unused = [n for n in names if n not in self.coefficients]
        ignored = [n for n in self.feature_names if n not in names]
        seeded = len(self.seed_windows(names))
        parts = [
            f"the calibration was fitted on features {list(self.feature_names)} and this run's "
            f"are {list(names)}: its prior coefficients are used for {used}"
        ]
        if unused:
            parts.append(f"none for {unused} (they start at 0 and are learnt from this run)")
        if ignored:
            parts.append(f"its coefficients for {ignored} are left unused")
        parts.append(
            f"{seeded} of its {len(self.windows)} stored windows have this run's features "
            "and seed the model"
        )
        return (
            "; ".join(parts) + f". Fix: features={list(self.feature_names)!r} to use all of it, "
            "or calibration=<another path> for a calibration of these features."
        )

    def to_model(
        self,
        feature_names: Sequence[str] | None = None,
        *,
        history: int = DEFAULT_HISTORY,
        weight: float = SEED_WEIGHT,
        prior_strength: float | None = None,
        interval: float = DEFAULT_INTERVAL,
    ) -> OnlineEnergyModel:
        """A model with this calibration as its prior, seeded with the stored windows.

        The most recent stored windows (up to ``history``) are seeded with ``weight`` (default
        0.5: an earlier run's window counts half as much as one of this run's), so the model
        predicts from its first window and this run's data take over as they arrive.
        """
        names = self.feature_names if feature_names is None else tuple(feature_names)
        model = OnlineEnergyModel(
            names,
            history=history,
            prior=self.to_prior(names),
            prior_strength=prior_strength,
            interval=interval,
        )
        used = self.model_windows(names, history)
        # oldest first, as seed() takes them
        model.seed(
            [({n: float(w.features[n]) for n in names}, w.energy_j) for w in reversed(used)],
            weight=weight,
        )
        return model

    def to_dict(self) -> dict[str, Any]:
        """The JSON file's content."""
        return {
            "schema_version": self.schema_version,
            "fingerprint": self.fingerprint,
            "hardware": self.hardware.to_dict(),
            "label": self.hardware.label,
            "updated": self.updated,
            "n_runs": self.n_runs,
            "feature_names": list(self.feature_names),
            "coefficients": {k: float(v) for k, v in self.coefficients.items()},
            "units": self.units,
            "sensor_kind": self.sensor_kind,
            "precision_pct": self.precision_pct,
            "validation": self.validation,
            "runs": [{"run_id": r.run_id, "date": r.date, "windows": r.windows} for r in self.runs],
            "windows": [
                {
                    "features": {k: float(v) for k, v in w.features.items()},
                    "energy_j": w.energy_j,
                    "run_id": w.run_id,
                }
                for w in self.windows
            ],
            # optional: files without it (and readers before it) hold the regression only
            **({"physical": dict(self.physical)} if self.physical is not None else {}),
        }

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Calibration:
        """The calibration in the file at ``path`` (no store rules: any hardware, any name).

        Raises:
            OSError: the file cannot be read.
            ValueError: it is not UTF-8 JSON (nested too deep counts), or not a calibration.
        """
        return cls.from_dict(parse_json(Path(path).read_text(encoding="utf-8")))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        """Parse and check a file's content.

        Raises:
            ValueError: anything missing, mistyped, negative or non-finite.
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"expected a JSON object, found {type(d).__name__}")
        version = d.get("schema_version")
        if version is None:
            # No version at all is some other JSON, not a calibration of another release.
            raise ValueError(
                f"expected a calibration (key 'schema_version' = {SCHEMA_VERSION}), found a "
                f"JSON object without one (keys: {sorted(map(str, d))[:8]})"
            )
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"expected schema_version {SCHEMA_VERSION}, found {version!r} (written by "
                "another version of lightning-to-energy)"
            )
        # Every field checked where it is read, each error naming its JSON path.
        windows = []
        for i, w in enumerate(_list(d, "windows")):
            where = f"windows[{i}]"
            w = _object(w, where)
            windows.append(
                CalibrationWindow(
                    features=_number_map(_field(w, "features", where), f"{where}.features"),
                    energy_j=_number(
                        _field(w, "energy_j", where), f"{where}.energy_j", positive=True
                    ),
                    run_id=_string(_field(w, "run_id", where), f"{where}.run_id"),
                )
            )
        runs = []
        for i, r in enumerate(_list(d, "runs")):
            where = f"runs[{i}]"
            r = _object(r, where)
            runs.append(
                CalibrationRun(
                    run_id=_string(_field(r, "run_id", where), f"{where}.run_id"),
                    date=_string(_field(r, "date", where), f"{where}.date"),
                    windows=_count(_field(r, "windows", where), f"{where}.windows"),
                )
            )
        names = _list(d, "feature_names")
        for i, n in enumerate(names):
            _string(n, f"feature_names[{i}]")
        # Optional since they were added: a file of an earlier release loads with the kind
        # "unknown" and no precision, and says so wherever it is used.
        precision = d.get("precision_pct")
        if precision is not None and (
            isinstance(precision, bool)
            or not isinstance(precision, (int, float))
            or not math.isfinite(precision)
        ):
            raise ValueError(
                f"precision_pct: expected a finite number or null, found {precision!r}"
            )
        return cls(
            fingerprint=_string(_field(d, "fingerprint"), "fingerprint"),
            hardware=HardwareInfo.from_dict(_object(_field(d, "hardware"), "hardware")),
            feature_names=tuple(names),
            windows=tuple(windows),
            coefficients=_number_map(_field(d, "coefficients"), "coefficients"),
            n_runs=_count(_field(d, "n_runs"), "n_runs"),
            updated=_string(_field(d, "updated"), "updated"),
            runs=tuple(runs),
            sensor_kind=_string(d.get("sensor_kind", UNKNOWN_KIND), "sensor_kind"),
            precision_pct=None if precision is None else float(precision),
            validation=_string(d.get("validation", ""), "validation"),
            physical=_physical(d.get("physical")),
        )


def _physical(value: Any) -> dict[str, Any] | None:
    """A calibration's ``physical`` section, checked by parsing it (None when absent)."""
    if value is None:
        return None
    from lightning_to_energy.model import PhysicalModel

    if not isinstance(value, Mapping):
        raise ValueError(f"physical: expected a JSON object, found {type(value).__name__}")
    PhysicalModel.from_dict(value)  # raises ValueError naming what is wrong
    return dict(value)


def _number(value: Any, what: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what}: expected a number, found {found_repr(value)}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise ValueError(
            f"{what}: expected a finite number {'>' if positive else '>='} 0, found {v}"
        )
    return v


def _number_map(value: Any, what: str) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{what}: expected a JSON object, found {found_repr(value)}")
    return {str(k): _number(v, f"{what}[{k!r}]") for k, v in value.items()}


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{what}: expected a JSON object, found {found_repr(value)}")
    return value


def _field(d: Mapping[str, Any], key: str, where: str = "") -> Any:
    if key not in d:
        raise ValueError(f"{where + '.' if where else ''}{key}: expected a value, found none")
    return d[key]


def _list(d: Mapping[str, Any], key: str) -> list[Any]:
    value = _field(d, key)
    if not isinstance(value, list):
        raise ValueError(f"{key}: expected a JSON list, found {found_repr(value)}")
    return value


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what}: expected a string, found {found_repr(value)}")
    return value


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what}: expected an int >= 0, found {found_repr(value)}")
    return value


def merge(
    disk: Calibration, new: Calibration, max_windows: int = DEFAULT_MAX_WINDOWS
) -> Calibration:
    """``new`` on top of ``disk``: newest windows first, runs of ``new`` replacing their old copy.

    The fingerprint, hardware, features, coefficients and precision are ``new``'s (its model was
    already seeded with the stored windows, so its coefficients reflect both); the sensor kind
    is the weaker of the two when the disk's windows or runs are kept: one estimated run makes
    the whole file's joules estimated (NB: the kind is the file's, not each run's, so the file
    stays labelled so until it is started afresh). The physical model is ``new``'s where it has
    one, else ``disk``'s.
    """
    new_ids = {r.run_id for r in new.runs} | {w.run_id for w in new.windows}
    old_runs = tuple(r for r in disk.runs if r.run_id not in new_ids)
    replaced = len(disk.runs) - len(old_runs)
    old_windows = tuple(w for w in disk.windows if w.run_id not in new_ids)
    windows = (new.windows + old_windows)[:max_windows]
    kinds = {new.sensor_kind, disk.sensor_kind} if old_runs or old_windows else {new.sensor_kind}
    return replace(
        new,
        windows=windows,
        sensor_kind=weakest_kind(kinds),
        runs=(old_runs + new.runs)[-MAX_RUNS_LISTED:],
        n_runs=max(disk.n_runs - replaced, 0) + new.n_runs,
        # a run's regression saved into a file keeps the file's physical model
        physical=new.physical if new.physical is not None else disk.physical,
    )
