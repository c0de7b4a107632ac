"""Small files the package reads (cost-model overrides, hardware) and writes atomically."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


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


def atomic_write_text(path: Path, text: str) -> None:
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
