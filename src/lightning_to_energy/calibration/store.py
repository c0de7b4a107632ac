"""The per-hardware calibration store: fitted windows and coefficients that outlive a run.

One JSON file per hardware fingerprint, by default in
``$XDG_CACHE_HOME/lightning-to-energy/calibration/`` (``~/.cache/...`` when the variable is unset).
Each save merges with what is on disk (the windows of earlier runs are kept, most recent first, up
to a bound) and is written atomically (temporary file in the same folder, fsync, ``os.replace``).
A file that cannot be read is reported with a :class:`CalibrationWarning` and never overwritten.

A new run turns the stored calibration into a prior and seeds its model with the stored windows
(at half the weight of its own windows), so it predicts from its first window. See
``docs/regression.md``.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import platform
import re
import tempfile
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lightning_to_energy.model.regression import (
    DEFAULT_HISTORY,
    DEFAULT_INTERVAL,
    SEED_WEIGHT,
    OnlineEnergyModel,
    Prior,
    feature_unit,
)

__all__ = [
    "APP_DIR",
    "DEFAULT_MAX_WINDOWS",
    "MAX_RUNS_LISTED",
    "SCHEMA_VERSION",
    "Calibration",
    "CalibrationRun",
    "CalibrationStore",
    "CalibrationWarning",
    "CalibrationWindow",
    "HardwareInfo",
    "default_directory",
    "foreign_file",
    "hardware_fingerprint",
    "hardware_from_section",
    "hardware_section",
    "merge",
]

SCHEMA_VERSION = 1
DEFAULT_MAX_WINDOWS = 2048  # windows kept per file, over all runs
MAX_RUNS_LISTED = 200  # run entries kept per file (n_runs keeps counting past it)
APP_DIR = "lightning-to-energy"

_FINGERPRINT_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")


class CalibrationWarning(UserWarning):
    """A calibration file could not be used or written; training goes on without it."""


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---- hardware -------------------------------------------------------------------------------


@dataclass(frozen=True)
class HardwareInfo:
    """What the calibration is specific to.

    Attributes:
        gpus: GPU model names as NVML reports them (empty without NVIDIA GPUs or NVML).
        driver_version: the NVIDIA driver version, or None.
        cpu: CPU model name.
        cpu_count: logical CPUs of the host.
    """

    gpus: tuple[str, ...] = ()
    driver_version: str | None = None
    cpu: str = "unknown"
    cpu_count: int = 0

    @classmethod
    def detect(
        cls, nvml: Any = None, cpuinfo_path: str | os.PathLike[str] = "/proc/cpuinfo"
    ) -> HardwareInfo:
        """Probe this machine. Never raises.

        Args:
            nvml: a module with pynvml's API (for tests); None imports ``pynvml`` (from the
                ``nvidia-ml-py`` package) if it is installed, and skips GPUs otherwise.
            cpuinfo_path: where to read the CPU ``model name`` (Linux).
        """
        gpus, driver = _nvml_devices(nvml)
        return cls(
            gpus=gpus,
            driver_version=driver,
            cpu=_cpu_model(Path(cpuinfo_path)),
            cpu_count=os.cpu_count() or 0,
        )

    @property
    def label(self) -> str:
        """One readable line, e.g. ``"1 x NVIDIA H100 80GB HBM3 (driver 580.159.04)"``."""
        cpu = f"{self.cpu} ({self.cpu_count} CPUs)"
        if not self.gpus:
            return cpu
        names = sorted(set(self.gpus))
        gpus = ", ".join(f"{self.gpus.count(n)} x {n}" for n in names)
        driver = f" (driver {self.driver_version})" if self.driver_version else ""
        return f"{gpus}{driver}; {cpu}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "gpus": list(self.gpus),
            "driver_version": self.driver_version,
            "cpu": self.cpu,
            "cpu_count": self.cpu_count,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HardwareInfo:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: a field has the wrong type.
        """
        gpus = d.get("gpus", [])
        driver = d.get("driver_version")
        cpu = d.get("cpu", "unknown")
        count = d.get("cpu_count", 0)
        if (
            not isinstance(gpus, list)
            or not all(isinstance(g, str) for g in gpus)
            or not (driver is None or isinstance(driver, str))
            or not isinstance(cpu, str)
            or isinstance(count, bool)
            or not isinstance(count, int)
        ):
            raise ValueError(
                "hardware: expected {gpus: [str], driver_version: str|null, cpu: str, "
                f"cpu_count: int}}, found {dict(d)!r}"
            )
        return cls(gpus=tuple(gpus), driver_version=driver, cpu=cpu, cpu_count=count)


def _nvml_devices(nvml: Any) -> tuple[tuple[str, ...], str | None]:
    """GPU names and the driver version through NVML; ``((), None)`` when unavailable."""
    if nvml is None:
        # The NVML backend owns the vendor import (one place translates its absence).
        from lightning_to_energy.sensors.base import SensorError
        from lightning_to_energy.sensors.nvml import load_pynvml

        try:
            nvml = load_pynvml()
        except SensorError:
            return (), None
    try:
        nvml.nvmlInit()
    except Exception:  # NVML missing or no driver: no GPUs to fingerprint
        return (), None
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        names = tuple(
            _text(nvml.nvmlDeviceGetName(nvml.nvmlDeviceGetHandleByIndex(i)))
            for i in range(int(nvml.nvmlDeviceGetCount()))
        )
        return names, driver
    except Exception:  # a half-working driver: fingerprint the CPU only
        return (), None
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()


def _text(value: Any) -> str:
    # Older pynvml releases return bytes, newer ones str.
    return value.decode() if isinstance(value, bytes) else str(value)


def _cpu_model(cpuinfo: Path) -> str:
    try:
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == "model name" and value.strip():
                return " ".join(value.split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def hardware_section(info: HardwareInfo) -> dict[str, str]:
    """The report's ``hardware`` section: display strings (see :func:`hardware_from_section`)."""
    return {
        "fingerprint": hardware_fingerprint(info),
        "label": info.label,
        "cpu": info.cpu,
        "cpu_count": str(info.cpu_count),
        "gpus": ", ".join(info.gpus) or "none",
        "driver": info.driver_version or "n/a",
    }


def hardware_from_section(section: Mapping[str, str]) -> HardwareInfo | None:
    """The :class:`HardwareInfo` behind a report's ``hardware`` section, None without one.

    Raises:
        ValueError: the section's fields do not give back its own fingerprint (edited by hand).
    """
    if not section.get("fingerprint"):
        return None
    gpus = section.get("gpus", "none")
    count = section.get("cpu_count", "0")
    info = HardwareInfo(
        gpus=() if gpus == "none" else tuple(gpus.split(", ")),
        driver_version=None if section.get("driver", "n/a") == "n/a" else section["driver"],
        cpu=section.get("cpu", "unknown"),
        cpu_count=int(count) if count.isdigit() else -1,
    )
    if hardware_fingerprint(info) != section["fingerprint"]:
        raise ValueError(
            f"expected hardware fields that give back the fingerprint "
            f"{section['fingerprint']!r}, found {dict(section)}"
        )
    return info


def hardware_fingerprint(devices_info: HardwareInfo | Mapping[str, Any] | None = None) -> str:
    """A short, stable, file-name-safe identifier of the hardware.

    It is a readable slug of the main device (first GPU by name, else the CPU), the GPU count,
    and the first 10 hex digits of the SHA-256 of all of :class:`HardwareInfo` (GPU names,
    driver, CPU, CPU count), e.g. ``"nvidia-h100-80gb-hbm3-x1-3f2a9c1b0e"``. A driver update
    gives a new fingerprint.

    Args:
        devices_info: the hardware; a mapping in :meth:`HardwareInfo.to_dict` form; or None to
            detect this machine.
    """
    if devices_info is None:
        info = HardwareInfo.detect()
    elif isinstance(devices_info, HardwareInfo):
        info = devices_info
    else:
        info = HardwareInfo.from_dict(devices_info)
    canonical = info.to_dict()
    canonical["gpus"] = sorted(info.gpus)  # the same GPUs enumerated in another order
    digest = hashlib.sha256(
        json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()[:10]
    main = canonical["gpus"][0] if info.gpus else info.cpu
    slug = re.sub(r"[^a-z0-9]+", "-", main.lower()).strip("-")[:40].rstrip("-") or "unknown"
    if info.gpus:
        slug += f"-x{len(info.gpus)}"
    return f"{slug}-{digest}"


# ---- the calibration record -----------------------------------------------------------------


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
    ) -> Calibration:
        """This run's calibration: the model's own windows (not seeded ones) and coefficients.

        Args:
            model: the run's model.
            hardware: the hardware; None detects this machine.
            run_id: identifies the run, so saving the same run twice replaces its windows
                instead of duplicating them; None makes a new one.
            date: ISO 8601 date; None is now.
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
            "runs": [{"run_id": r.run_id, "date": r.date, "windows": r.windows} for r in self.runs],
            "windows": [
                {
                    "features": {k: float(v) for k, v in w.features.items()},
                    "energy_j": w.energy_j,
                    "run_id": w.run_id,
                }
                for w in self.windows
            ],
        }

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
        try:
            windows = tuple(
                CalibrationWindow(
                    features=_number_map(w["features"], "window features"),
                    energy_j=_number(w["energy_j"], "window energy_j", positive=True),
                    run_id=_string(w["run_id"], "window run_id"),
                )
                for w in d["windows"]
            )
            runs = tuple(
                CalibrationRun(
                    run_id=_string(r["run_id"], "run_id"),
                    date=_string(r["date"], "run date"),
                    windows=_count(r["windows"], "run windows"),
                )
                for r in d["runs"]
            )
            names = d["feature_names"]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError(f"feature_names: expected a list of strings, found {names!r}")
            return cls(
                fingerprint=_string(d["fingerprint"], "fingerprint"),
                hardware=HardwareInfo.from_dict(d["hardware"]),
                feature_names=tuple(names),
                windows=windows,
                coefficients=_number_map(d["coefficients"], "coefficients"),
                n_runs=_count(d["n_runs"], "n_runs"),
                updated=_string(d["updated"], "updated"),
                runs=runs,
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"missing or mistyped field: {exc!r}") from exc


def _number(value: Any, what: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what}: expected a number, found {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise ValueError(
            f"{what}: expected a finite number {'>' if positive else '>='} 0, found {v}"
        )
    return v


def _number_map(value: Any, what: str) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{what}: expected an object, found {value!r}")
    return {str(k): _number(v, f"{what}[{k!r}]") for k, v in value.items()}


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what}: expected a string, found {value!r}")
    return value


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what}: expected an int >= 0, found {value!r}")
    return value


def merge(
    disk: Calibration, new: Calibration, max_windows: int = DEFAULT_MAX_WINDOWS
) -> Calibration:
    """``new`` on top of ``disk``: newest windows first, runs of ``new`` replacing their old copy.

    The fingerprint, hardware, features and coefficients are ``new``'s (its model was already
    seeded with the stored windows, so its coefficients reflect both).
    """
    new_ids = {r.run_id for r in new.runs} | {w.run_id for w in new.windows}
    old_runs = tuple(r for r in disk.runs if r.run_id not in new_ids)
    replaced = len(disk.runs) - len(old_runs)
    old_windows = tuple(w for w in disk.windows if w.run_id not in new_ids)
    return replace(
        new,
        windows=(new.windows + old_windows)[:max_windows],
        runs=(old_runs + new.runs)[-MAX_RUNS_LISTED:],
        n_runs=max(disk.n_runs - replaced, 0) + new.n_runs,
    )


# ---- the store ------------------------------------------------------------------------------


def default_directory() -> Path:
    """``$XDG_CACHE_HOME/lightning-to-energy/calibration``, or ``~/.cache/...``.

    As the XDG spec says, a relative ``XDG_CACHE_HOME`` is ignored.
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / APP_DIR / "calibration"


class CalibrationStore:
    """Per-hardware calibration files in one folder, or one explicit file.

    Args:
        directory: the folder; None is :func:`default_directory` (read when the store is made).
        max_windows: windows kept per file over all runs, most recent first.

    Attributes:
        warnings: the text of every :class:`CalibrationWarning` this store gave, in order (a
            run's report repeats them).

    Raises:
        ValueError: ``max_windows`` is not an int >= 1.

    Example:
        >>> store = CalibrationStore(tmp_path)  # doctest: +SKIP
        >>> cal = store.load(hardware_fingerprint())  # None on the first run  # doctest: +SKIP
        >>> model = cal.to_model() if cal else OnlineEnergyModel()  # doctest: +SKIP
        >>> store.save(Calibration.from_model(model))  # doctest: +SKIP
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        max_windows: int = DEFAULT_MAX_WINDOWS,
    ) -> None:
        if isinstance(max_windows, bool) or not isinstance(max_windows, int) or max_windows < 1:
            raise ValueError(
                f"max_windows: expected an int >= 1, found {max_windows!r}; "
                f"fix: use e.g. {DEFAULT_MAX_WINDOWS}."
            )
        self.directory = (
            Path(directory).expanduser() if directory is not None else (default_directory())
        )
        self.max_windows = max_windows
        self._path: Path | None = None  # set by from_path
        # Files found unusable, with the fix to give: never written by this store.
        self._corrupt: dict[Path, str] = {}
        self._warned_mismatch = False
        self.warnings: list[str] = []  # every CalibrationWarning this store gave, in order

    def __repr__(self) -> str:
        where = self._path if self._path is not None else self.directory
        return f"CalibrationStore({str(where)!r}, max_windows={self.max_windows})"

    @classmethod
    def from_path(
        cls, path: str | os.PathLike[str], *, max_windows: int = DEFAULT_MAX_WINDOWS
    ) -> CalibrationStore:
        """A store bound to one file (``TOEnergy(calibration=path)``), whatever the hardware.

        The file need not exist yet: the first save creates it.

        Raises:
            ValueError: ``path`` is a directory.
        """
        p = Path(path).expanduser()
        if p.is_dir():
            raise ValueError(
                f"calibration: expected a calibration file, found the directory {str(p)!r}. "
                "Fix: pass a JSON file path (saved by TOEnergy, written by `lightning-to-energy "
                f"fit --out FILE`, or a new one such as {str(p / 'calibration.json')!r}), "
                "or 'auto' for this hardware's own."
            )
        store = cls(p.parent, max_windows=max_windows)
        store._path = p
        return store

    @property
    def path(self) -> Path | None:
        """The explicit file of a :meth:`from_path` store, else None."""
        return self._path

    def path_for(self, fingerprint: str) -> Path:
        """The file for ``fingerprint`` (the explicit file for a :meth:`from_path` store).

        Raises:
            ValueError: the fingerprint is not a safe file name.
        """
        if self._path is not None:
            return self._path
        if not _FINGERPRINT_RE.match(fingerprint):
            raise ValueError(
                f"fingerprint: expected lower-case letters, digits, '.', '_' or '-', found "
                f"{fingerprint!r}; fix: use hardware_fingerprint()."
            )
        return self.directory / f"{fingerprint}.json"

    def load(self, fingerprint: str | None = None) -> Calibration | None:
        """The stored calibration, or None when there is none or it cannot be read.

        Args:
            fingerprint: the hardware; None detects this machine. A :meth:`from_path` store
                loads its file whatever the fingerprint, warning once when they differ.

        Warns:
            CalibrationWarning: the file is unreadable, corrupt, or another kind of file (an
                energy report or a study run: the warning says how to fit a calibration on
                it); it is left untouched and this store will never overwrite it. Or an
                explicit file is for other hardware.
        """
        fp = fingerprint if fingerprint is not None else hardware_fingerprint()
        path = self.path_for(fp)
        found = self._read(path)
        if (
            isinstance(found, Calibration)
            and self._path is not None
            and found.fingerprint != fp
            and not self._warned_mismatch
        ):
            self._warned_mismatch = True
            self._warn(
                f"calibration file {path} was made on {found.fingerprint!r} "
                f"({found.hardware.label}); this machine is {fp!r}. Using it as asked; "
                "fix: drop calibration=... to use this machine's own calibration.",
                stacklevel=3,
            )
        return found if isinstance(found, Calibration) else None

    def save(self, calibration: Calibration) -> Path | None:
        """Merge ``calibration`` into its file and write it atomically.

        Returns:
            The file written, or None when nothing was written (a warning says why).

        Warns:
            CalibrationWarning: the file on disk is corrupt (left untouched), or writing failed.
        """
        path = self.path_for(calibration.fingerprint)
        if path in self._corrupt:
            self._warn(
                f"calibration not saved: {path} could not be used as a calibration and is left "
                f"untouched. {self._corrupt[path]}",
                stacklevel=3,
            )
            return None
        try:
            # Read, merge and write under one lock: two runs (or two jobs on one machine)
            # saving at once must both land in the file, not the last one alone.
            with _file_lock(path):
                disk = self._read(path)
                if disk is _CORRUPT:
                    return None
                if isinstance(disk, Calibration):
                    merged = merge(disk, calibration, self.max_windows)
                else:
                    merged = merge(
                        replace(calibration, windows=(), runs=(), n_runs=0),
                        calibration,
                        self.max_windows,
                    )
                text = json.dumps(merged.to_dict(), indent=1, allow_nan=False) + "\n"
                _atomic_write_text(path, text)
        except OSError as exc:
            self._warn(
                f"calibration not saved: writing {path} failed ({exc}); fix: make "
                f"{path.parent} writable, or set XDG_CACHE_HOME or calibration=<path>.",
                stacklevel=3,
            )
            return None
        return path

    def _read(self, path: Path) -> Calibration | object | None:
        """The file's calibration; None if absent; ``_CORRUPT`` (after a warning) if unusable."""
        if path in self._corrupt:
            return _CORRUPT
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            return self._mark_corrupt(path, f"unreadable: {exc}", self._fix_for(path, None))
        data: Any = None
        try:
            data = json.loads(text)
            foreign = _foreign_file(data, path)
            if foreign is not None:
                return self._mark_corrupt(path, *foreign)
            found = Calibration.from_dict(data)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            return self._mark_corrupt(path, str(exc), self._fix_for(path, data))
        if self._path is None and found.fingerprint != path.stem:
            # A file copied or renamed into the store: another machine's windows must never
            # be this machine's prior, nor be merged into its file.
            return self._mark_corrupt(
                path,
                f"expected the calibration of {path.stem!r} as its name says, found one of "
                f"{found.fingerprint!r} ({found.hardware.label})",
                self._fix_for(path, None),
            )
        return found

    def _fix_for(self, path: Path, data: Any) -> str:
        """The fix for an unusable ``path`` whose parsed content is ``data`` (None: unparsed)."""
        ours = self._path is None  # a file of the store's own folder, named by fingerprint
        looks_like_one = isinstance(data, Mapping) and (
            "schema_version" in data or "fingerprint" in data
        )
        if ours or looks_like_one:
            return "Fix: delete it to start a new calibration, or pass calibration=<another path>."
        # An explicit file that is no calibration at all may be anything of the user's:
        # deleting it is not the fix.
        return (
            "Fix: pass calibration=<a calibration file> (saved by TOEnergy or written by "
            "`lightning-to-energy fit --out FILE`), or a path that does not exist yet to start "
            "one there."
        )

    def _mark_corrupt(self, path: Path, reason: str, fix: str) -> object:
        self._corrupt[path] = fix
        self._warn(
            f"calibration file {path} cannot be used ({reason}); it is left untouched and will "
            f"not be overwritten. {fix}",
            stacklevel=4,
        )
        return _CORRUPT

    def _warn(self, message: str, *, stacklevel: int) -> None:
        """Warn, and keep the message for the run's report (:attr:`warnings`)."""
        self.warnings.append(message)
        warnings.warn(message, CalibrationWarning, stacklevel=stacklevel + 1)


_CORRUPT = object()


def foreign_file(data: Any, path: Path) -> tuple[str, Path] | None:
    """What a parsed JSON file at ``path`` is when it is another file of this package rather
    than a calibration: ``("an energy report" or "a study run", the path to fit a calibration
    on)``, else None."""
    # Imported here: the formats belong to the report and the study modules.
    from lightning_to_energy.reporting.console import REPORT_FORMAT
    from lightning_to_energy.study.evaluation import RUN_FORMAT

    kind = data.get("format") if isinstance(data, Mapping) else None
    if kind == REPORT_FORMAT:
        return "an energy report", path
    if kind == RUN_FORMAT:
        # A calibration fits the scaling model over a study's runs: fit the whole folder.
        return "a study run", path.parent
    return None


def _foreign_file(data: Any, path: Path) -> tuple[str, str] | None:
    """``(reason, fix)`` for :meth:`CalibrationStore` when ``data`` is not a calibration but
    another file of this package (:func:`foreign_file`), else None."""
    foreign = foreign_file(data, path)
    if foreign is None:
        return None
    found, source = foreign
    return (
        f"expected a calibration, found {found}",
        f"Fix: fit a calibration on it first (`lightning-to-energy fit {source} --out "
        "cal.json`), then pass calibration=cal.json.",
    )


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path``'s folder while its file is merged.

    The folder itself is locked, so no lock file is left behind (and every file of the folder
    waits on the same lock: saves take milliseconds, once per run). NB: POSIX ``flock`` only;
    where it is missing (Windows) or refused (some network file systems), saves are not
    serialised and concurrent runs may drop each other's windows, though the atomic write
    still keeps the file whole.

    Raises:
        OSError: the folder cannot be created.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half.

    Raises:
        OSError: the folder cannot be created or written; no temporary file is left behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # Make the rename itself durable; not every platform lets a folder be opened.
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
