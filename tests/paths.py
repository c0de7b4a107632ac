"""Where the tests find data that lives beside the repository, not in it."""

from __future__ import annotations

from pathlib import Path

__all__ = ["SHARED_DATA"]

_CANDIDATES = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "h100-training-steps.json",
    Path("/work/shared/data/h100-training-steps.json"),
)
SHARED_DATA: Path | None = next((p for p in _CANDIDATES if p.is_file()), None)
"""The shared H100 training steps (``../shared/data``), or None where they are absent: tests
that need them skip with that reason."""
