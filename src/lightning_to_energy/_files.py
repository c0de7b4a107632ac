"""Reading the small TOML or JSON files users hand the package (cost-model overrides, hardware)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


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
