"""Reading the small TOML or JSON files users hand the package (cost-model overrides, hardware)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = [
    "check_toml_or_json_path",
    "load_toml_or_json",
]


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
