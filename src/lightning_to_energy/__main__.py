"""``python -m lightning_to_energy``: the command line."""

from __future__ import annotations

import sys

from lightning_to_energy.cli import main

sys.exit(main())
