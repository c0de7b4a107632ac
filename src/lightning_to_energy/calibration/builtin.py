"""Calibrations shipped with the package, so a laptop can plan a run on a GPU it never saw.

Each is a calibration file (the format :meth:`Calibration.read` reads) carrying the physical
step model of one datasheet key, fitted on published measurements of that GPU and regenerated
by one command (``make builtin-calibrations``). A user's own calibration (``--calibration``,
the cache's file for this machine, ``calibrate`` on the GPU) always comes first.

- ``h100-sxm``: ``lightning-to-energy fit ../shared/data/h100-training-steps.json``: 54 fp32
  SGD training steps of MLP, CNN and transformer configurations measured with NVML's energy
  counter on one NVIDIA H100 80GB HBM3 (2026-11-25), and that GPU's per-format matmul
  microbenchmarks. Its run id is ``shared-`` + the first 12 hex digits of the data file's
  SHA-256, so a test can tell the file was fitted on the data as they are.
"""

from __future__ import annotations

from pathlib import Path

from lightning_to_energy.calibration.data import Calibration

__all__ = ["BUILTIN_DIR", "builtin_calibration", "builtin_keys", "builtin_note"]

BUILTIN_DIR = Path(__file__).with_name("builtin")
"""Where the shipped calibration files are: ``<datasheet key>.json``."""


def builtin_keys() -> tuple[str, ...]:
    """The datasheet keys with a shipped calibration, sorted (``("h100-sxm",)``)."""
    return tuple(sorted(p.stem for p in BUILTIN_DIR.glob("*.json")))


def builtin_calibration(key: str) -> Calibration | None:
    """The shipped calibration of datasheet key ``key``, or None when none ships.

    Raises:
        ValueError: the shipped file is unreadable (a broken install: reinstall the package).
    """
    path = BUILTIN_DIR / f"{key}.json"
    if not path.is_file():
        return None
    try:
        return Calibration.read(path)
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"the built-in calibration {path}: expected a calibration file, found {exc}; fix: "
            "reinstall lightning-to-energy, or pass --calibration FILE of your own"
        ) from None


def builtin_note(key: str, calibration: Calibration) -> str:
    """One line saying a prediction rests on the shipped calibration of ``key``, and on what."""
    source = (calibration.physical or {}).get("source", "") or "published measurements"
    measured_on = ", ".join(calibration.hardware.gpus) or calibration.hardware.label
    return (
        f"calibration: the built-in one of {key}, shipped with the package (measured on "
        f"{measured_on}; {source.rstrip('.')}). For a figure of your own GPU, run "
        "`lightning-to-energy calibrate --out FILE` on it and pass --calibration FILE."
    )
