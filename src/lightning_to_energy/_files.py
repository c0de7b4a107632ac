"""Files: reading the small TOML or JSON files users hand the package (cost-model overrides,
hardware), and the one atomic writer every report, plot, CSV, calibration and study run goes
through."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import stat
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_write",
    "atomic_write_text",
    "check_toml_or_json_path",
    "describe_not_json",
    "found_repr",
    "load_toml_or_json",
    "new_file_mode",
    "output_problem",
    "parse_json",
]

_UMASK_LOCK = threading.Lock()


def check_toml_or_json_path(path: Path, what: str) -> None:
    """Refuse a ``path`` that cannot be a ``what`` (e.g. ``"cost file"``) before reading it.

    Raises:
        ValueError: a suffix other than ``.toml`` or ``.json``.
        FileNotFoundError: no file at ``path``.
    """
    if path.suffix not in (".toml", ".json"):
        raise ValueError(f"expected a .toml or .json {what}; found {str(path)!r}; fix: rename it")
    if not path.is_file():
        raise FileNotFoundError(
            f"expected a {what} at {str(path)!r}; found nothing; fix: check the path"
        )


def output_problem(
    path: Path,
    option: str,
    example: str,
    *,
    existing: Callable[[Path], str | None] | None = None,
    kind: str | None = None,
) -> str | None:
    """Why ``path`` cannot receive the output ``option`` names, said before any work; None
    when it can. The one rule of every output file of the command line (README, "Command
    line"); the first fault found is the one message.

    1. A file, never a directory.
    2. The kind's extension (``example``'s suffix, any case): a CSV never replaces
       ``precious.py``, and a calibration is never written into ``cal.txt``.
    3. An existing file of that kind is replaced, or, where ``existing`` is given, must be of
       the kind (a calibration is merged into, never overwritten by one).
    4. Its folder exists: a mistyped folder would otherwise grow a stray tree where nobody
       looks, so it is refused with the exact ``mkdir -p`` that creates it.
    5. The folder, and an existing file, can be written.

    Args:
        path: the path given.
        option: the option that named it (``"--csv"``).
        example: a file name of the right kind (``"energy_report.csv"``).
        existing: why an existing file at ``path`` is not of the kind (a short reason), or
            None when it is.
        kind: the kind's name in messages (``"calibration"``); default ``"<suffix> file"``.
    """
    suffix = Path(example).suffix
    name = kind or f"{suffix} file"
    if path.is_dir():
        return (
            f"expected {option} to name a file, found the directory {path}. Fix: name a file "
            f"in it, e.g. {option} {path / example}."
        )
    if path.suffix.lower() != suffix:
        state = "an existing file that it would overwrite" if path.exists() else "that name"
        return (
            f"expected {option} to name a {suffix} file, found {path} ({state}). Fix: e.g. "
            f"{option} {path.with_suffix(suffix) if path.name else example}."
        )
    if existing is not None and path.exists():
        reason = existing(path)
        if reason is not None:
            return (
                f"expected {option} to name a new file or a {name} to update, found {path}, "
                f"which is not a {name} ({reason}): it would be overwritten, so it is left "
                f"untouched. Fix: choose another file name, e.g. {option} {example}."
            )
    folder = path.parent
    blocking = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        # mkdir -p cannot help: a file stands where the folder would be
        return (
            f"expected {option} in a folder, found {blocking}, which is a file, not a folder. "
            f"Fix: name a file in an existing folder, e.g. {option} {example}."
        )
    if not folder.is_dir():
        return (
            f"expected {option} in an existing folder, found no folder {folder}. Fix: create "
            f"it (mkdir -p {shlex.quote(str(folder))}), or name a file in an existing folder, "
            f"e.g. {option} {example}."
        )
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        where = path if path.exists() else folder
        return (
            f"expected {option} where you can write, found {where} not writable. Fix: name a "
            f"file in a folder you can write, e.g. {option} {example}."
        )
    return None


# What a text file is, by extension, when a JSON file of this package was expected.
_TEXT_KINDS = {
    ".py": "a Python file",
    ".csv": "a CSV file",
    ".md": "a Markdown file",
    ".toml": "a TOML file",
    ".yaml": "a YAML file",
    ".yml": "a YAML file",
    ".txt": "a text file",
    ".log": "a log file",
}


def describe_not_json(path: Path, text: str) -> str | None:
    """What the text read from ``path`` is when it does not even begin like JSON: its kind (by
    extension) and its first characters, e.g. ``"a Python file beginning 'import torch'"``;
    None when it begins like a JSON object or array, so that a parse error means damage."""
    head = text.lstrip("\ufeff \t\r\n")
    if head[:1] in ("{", "["):
        return None
    if not head:
        return "an empty file"
    kind = _TEXT_KINDS.get(path.suffix.lower(), "a text file")
    first = head.splitlines()[0]
    return f"{kind} beginning {first[:40]!r}{'...' if len(first) > 40 else ''}"


def parse_json(text: str) -> Any:
    """``json.loads``, with nesting too deep for it reported as the syntax errors are.

    Raises:
        ValueError: not JSON, or nested deeper than Python's parser recurses (thousands of
            levels: no file of this package comes near).
    """
    try:
        return json.loads(text)
    except RecursionError:
        # NB: json's C scanner recurses per level and gives up at the interpreter's
        # recursion limit; such a file is never one of ours, so it is refused like bad syntax.
        raise ValueError(
            f"expected JSON nested at most {sys.getrecursionlimit()} levels deep, found deeper "
            "nesting (the parser gave up); fix: point at a file this package wrote"
        ) from None


def load_toml_or_json(path: Path) -> Any:
    """The parsed content of ``path``: JSON if it ends in ``.json``, else TOML.

    Raises:
        OSError: the file cannot be read.
        ValueError: a syntax error (the message names the format and the error).
    """
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            return parse_json(text)
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        return tomllib.loads(text)
    except ValueError as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        kind = path.suffix.lstrip(".").upper() or "TOML"
        raise ValueError(f"expected valid {kind}; found a syntax error ({exc})") from exc


def _umask() -> int:
    """The process's umask (read without changing it where Linux allows)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    # NB: elsewhere os.umask is the only reader, and it sets while it reads: a file another
    # thread creates in between gets mode 0o022-masked, which is what most umasks give anyway.
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def new_file_mode(path: Path) -> int:
    """The permission bits a file written at ``path`` gets: those of the file it replaces, or
    0o666 less the umask for a new one, as ``open()`` would give (``mkstemp`` alone gives 0o600)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~_umask()


def atomic_write(
    path: Path, write: Callable[[IO[bytes]], object], *, durable: bool = False
) -> None:
    """Write ``path`` so that readers see the old file or the new one, never half of it.

    The bytes go to a temporary file in the same folder (created if missing), renamed over
    ``path``; the file keeps the mode of the one it replaces, or follows the umask.

    Args:
        path: the file to write.
        write: writes the content to the binary file object it is given.
        durable: fsync the file and its folder (calibrations: a crash must not lose them).

    Raises:
        OSError: the folder cannot be created or written; no temporary file is left behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = new_file_mode(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            write(fh)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        # Make the rename itself durable; not every platform lets a folder be opened.
        with contextlib.suppress(OSError):
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def atomic_write_text(path: Path, text: str, *, durable: bool = False) -> None:
    """:func:`atomic_write` of ``text`` in UTF-8."""
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")), durable=durable)


def found_repr(value: Any) -> str:
    """A found value in an error: its type, and the value itself when it is short."""
    text = repr(value)
    return text if len(text) <= 60 else f"{type(value).__name__} {text[:57]}..."
