"""lightning-to-energy: transistor operations, measured joules and live energy prediction."""

from __future__ import annotations

__version__ = "0.1.0"
