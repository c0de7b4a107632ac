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
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from lightning_to_energy import notices
from lightning_to_energy._files import atomic_write_text, parse_json
from lightning_to_energy._files import output_problem as _output_problem
from lightning_to_energy.calibration.data import (
    DEFAULT_MAX_WINDOWS,
    Calibration,
    merge,
)
from lightning_to_energy.formats import REPORT_FORMAT, RUN_FORMAT
from lightning_to_energy.hardware.identity import hardware_fingerprint
from lightning_to_energy.notices import EnergyWarning

__all__ = [
    "APP_DIR",
    "CalibrationStore",
    "CalibrationWarning",
    "default_directory",
    "foreign_file",
    "output_problem",
]

APP_DIR = "lightning-to-energy"

_FINGERPRINT_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")


class CalibrationWarning(EnergyWarning, UserWarning):
    """A calibration file could not be used or written; training goes on without it."""


def output_problem(path: Path, option: str = "--out") -> str | None:
    """Why ``path`` cannot become a calibration file, said before any work; None when it can.

    The command line's one rule for output files
    (:func:`lightning_to_energy._files.output_problem`) for the calibration kind of
    ``fit --out`` and ``calibrate --out``: a new ``.json`` file in an existing folder, or an
    existing calibration (merged into).
    """
    return _output_problem(
        path, option, "calibration.json", existing=_not_a_calibration, kind="calibration"
    )


def _not_a_calibration(path: Path) -> str | None:
    """Why the existing file at ``path`` is not a calibration, or None when it is one."""
    try:
        Calibration.read(path)
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        return str(exc)
    return None


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
            # a physical model alone (`calibrate --out`, `fit` on published steps) is made to
            # travel to other machines with that GPU: its users check its target themselves
            and not (found.physical is not None and not found.windows)
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
                if isinstance(disk, Calibration) and disk.fingerprint != calibration.fingerprint:
                    # An explicit file of other hardware (a store's own files always match:
                    # see _read): its windows must never be filed under this machine.
                    beside = self._beside(path, disk, calibration)
                    if beside is None:
                        return None
                    if calibration.physical is None and disk.physical is not None:
                        # the file given carried a physical model (calibrate's, say): the one
                        # beside it, which the warning tells the user to pass next, keeps it
                        calibration = replace(calibration, physical=disk.physical)
                    path, disk = beside
                if isinstance(disk, Calibration):
                    merged = merge(disk, calibration, self.max_windows)
                else:
                    merged = merge(
                        replace(calibration, windows=(), runs=(), n_runs=0),
                        calibration,
                        self.max_windows,
                    )
                text = json.dumps(merged.to_dict(), indent=1, allow_nan=False) + "\n"
                atomic_write_text(path, text, durable=True)
        except OSError as exc:
            self._warn(
                f"calibration not saved: writing {path} failed ({exc}); fix: make "
                f"{path.parent} writable, or set XDG_CACHE_HOME or calibration=<path>.",
                stacklevel=3,
            )
            return None
        return path

    def _beside(
        self, path: Path, disk: Calibration, calibration: Calibration
    ) -> tuple[Path, Calibration | None] | None:
        """Where a run whose hardware differs from the explicit file's is saved instead: the
        file beside it named after this hardware (``cal.<fingerprint>.json``), with what that
        file holds; None (after a warning) when it is unusable. The explicit file is left as
        it is, and a warning says so."""
        # NB: beside it, so under the folder lock save() already holds (see _file_lock: the
        # reason the folder, not the file, is locked).
        other = path.with_name(f"{path.stem}.{calibration.fingerprint}{path.suffix or '.json'}")
        found = self._read(other)
        if found is _CORRUPT or (
            isinstance(found, Calibration) and found.fingerprint != calibration.fingerprint
        ):
            self._warn(
                f"calibration not saved: {path} holds another machine's calibration "
                f"({disk.hardware.label}), and {other}, where this machine's would go, is not "
                f"one of {calibration.hardware.label}. Both are left untouched; fix: pass "
                "calibration=<a new file> for this machine.",
                stacklevel=4,
            )
            return None
        self._warn(
            f"calibration {path} is another machine's ({disk.hardware.label}); this run on "
            f"{calibration.hardware.label} is saved beside it, to {other}, and {path} is left "
            "unchanged. Fix: pass calibration=<that file> to start from this machine's own.",
            stacklevel=4,
        )
        return other, found if isinstance(found, Calibration) else None

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
            data = parse_json(text)
            foreign = _foreign_file(data, path)
            if foreign is not None:
                return self._mark_corrupt(path, *foreign)
            found = Calibration.from_dict(data)
        except ValueError as exc:  # JSONDecodeError is a ValueError
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
        notices.warn(message, CalibrationWarning, stacklevel=stacklevel + 1)


_CORRUPT = object()


def foreign_file(data: Any, path: Path) -> tuple[str, Path] | None:
    """What a parsed JSON file at ``path`` is when it is another file of this package rather
    than a calibration: ``("an energy report" or "a study run", the path to fit a calibration
    on)``, else None."""
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

    The folder, not the file, is locked, on purpose:

    - the file cannot carry its own lock: the atomic write replaces it by a rename, so a
      process that opens it after the rename locks the new file while another still holds
      the old one's lock, both merge at once and one run's windows are lost; a lock file per
      calibration would be left behind in the user's folders;
    - one save may write two files: an explicit file of other hardware sends the run to the
      file beside it (:meth:`CalibrationStore._beside`), which another process may be saving
      to directly (the warning tells the user to pass it next); one lock over the folder
      covers both, where per-file locks would need two, taken in order;
    - the cost is small: the saves of different files in one folder wait for each other, and a
      save holds the lock only to read, merge and write one file, once per run.

    An ``flock`` lock is the kernel's, not a file's: it goes with the process that held it, so
    a run killed while saving leaves no stale lock behind. NB: POSIX ``flock`` only; where it is
    missing (Windows) or refused (some network file systems), saves are not serialised and
    concurrent runs may drop each other's windows, though the atomic write still keeps the
    file whole.

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
