"""Files: the one atomic writer, and the reader of the small TOML or JSON files users hand the
package (cost-model overrides, hardware)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_write",
    "atomic_write_text",
    "check_toml_or_json_path",
    "load_toml_or_json",
]


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write ``path`` so that readers see the old file or the new one, never half of either.

    ``write`` fills a temporary file in the same folder, which is flushed to disk and renamed
    over ``path``; the folder is then synced so that the rename itself survives a crash.

    Args:
        path: the file to write; its folder is created when missing.
        write: called once with the temporary file, opened for binary writing.

    Raises:
        OSError: the folder cannot be created or written; no temporary file is left behind.
        Exception: whatever ``write`` raises; ``path`` is then untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # Not every platform lets a folder be opened (Windows): the rename is then left to the OS.
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write` of ``text`` in UTF-8."""
    data = text.encode("utf-8")
    atomic_write(path, lambda fh: fh.write(data))


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


def load_toml_or_json(path: Path) -> Any:
    """The parsed content of ``path``: JSON if it ends in ``.json``, else TOML.

    Raises:
        OSError: the file cannot be read.
        ValueError: a syntax error (the message names the format and the error).
    """
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            return json.loads(text)
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        return tomllib.loads(text)
    except ValueError as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        kind = path.suffix.lstrip(".").upper() or "TOML"
        raise ValueError(f"expected valid {kind}; found a syntax error ({exc})") from exc
