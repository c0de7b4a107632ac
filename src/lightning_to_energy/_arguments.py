"""Checks of the arguments ``EnergyTracker`` and ``TOEnergy`` share, run at construction.

One owner for both, so that ``TOEnergy(...)`` refuses a bad argument when it is built, the way
``EnergyTracker`` does, without building a tracker to find out. Each error says what was
expected, what was found, and the fix.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import torch

__all__ = [
    "check_bool",
    "check_calibration",
    "check_callable",
    "check_clock",
    "check_device",
    "check_directory_arg",
    "check_features",
    "check_module",
    "check_optimizer",
    "check_positive_int",
    "check_rank",
    "check_total_steps",
    "check_window_s",
]


def check_window_s(window_s: Any) -> None:
    """``window_s``: None, or a finite number of seconds > 0 (the sensors' update periods
    are checked where the sensors are known: see ``tracking.config.check_window_against``)."""
    ok = window_s is None or (
        isinstance(window_s, (int, float))
        and not isinstance(window_s, bool)
        and math.isfinite(window_s)
        and window_s > 0
    )
    if not ok:
        raise ValueError(
            f"window_s must be a finite number of seconds > 0, found {window_s!r}: a "
            "window of no length measures nothing (every reading would be noise); pass "
            "e.g. window_s=2.0, or None for the sensors' minimum trustworthy window."
        )


def check_positive_int(name: str, value: Any, example: int) -> None:
    """``name`` is an int >= 1 (a bool is no count)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"{name} must be a positive int, found {value!r}; pass e.g. {name}={example:_}."
        )


def check_features(features: Any, known: Sequence[str]) -> tuple[str, ...]:
    """The regression features as a tuple: ``duration_s`` and names from ``known``."""
    if isinstance(features, str) or not isinstance(features, Sequence):
        names: list[Any] = [features]
    else:
        names = list(features)
    unknown = [f for f in names if f != "duration_s" and f not in known]
    if unknown or "duration_s" not in names or isinstance(features, str):
        raise ValueError(
            f"features must include 'duration_s' and names from {sorted(known)}; "
            f"found {features!r}. Fix the names or leave the default."
        )
    return tuple(names)


def check_calibration(calibration: Any) -> None:
    """``calibration``: ``"auto"``, a path, or None (a directory is refused by the store)."""
    if not (calibration is None or isinstance(calibration, (str, os.PathLike))):
        raise ValueError(
            "calibration: expected 'auto', a calibration JSON file path or None; found "
            f"{calibration!r}. Fix: pass calibration='auto' (this hardware's own), a path, "
            "or None."
        )


def check_callable(name: str, value: Any, *, optional: bool, example: str) -> None:
    """``name`` is a callable (or None where ``optional``)."""
    if not (callable(value) or (optional and value is None)):
        expected = "a callable or None" if optional else "a callable"
        raise ValueError(
            f"{name} must be {expected}, found {value!r} ({type(value).__name__}); "
            f"pass e.g. {name}={example}."
        )


def check_clock(clock: Any) -> None:
    """``clock``: a callable returning monotonic seconds (not called here: a test's scripted
    clock must not lose a reading)."""
    check_callable("clock", clock, optional=False, example="time.perf_counter")


def check_rank(name: str, value: Any) -> None:
    """``name`` is an int >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, found {value!r}; pass e.g. {name}=0.")


def check_total_steps(total_steps: Any) -> None:
    """``total_steps``: None (unknown) or an int >= 0."""
    if total_steps is not None:
        check_rank("total_steps", total_steps)


def check_device(device: Any) -> torch.device | None:
    """``device``: None, a :class:`torch.device`, or a string or CUDA index torch understands."""
    if device is None or isinstance(device, torch.device):
        return device
    if isinstance(device, (str, int)) and not isinstance(device, bool):
        try:
            return torch.device(device)
        except RuntimeError as exc:
            raise ValueError(
                f"device: expected a torch device such as 'cuda:0' or 'cpu', found {device!r} "
                f"({exc}). Fix: pass the device the model trains on."
            ) from None
    raise ValueError(
        f"device: expected None, a torch.device, a string such as 'cuda:0' or an index, found "
        f"{device!r} ({type(device).__name__})."
    )


def check_module(module: Any) -> None:
    """``module``: a :class:`torch.nn.Module` or None."""
    if not (module is None or isinstance(module, torch.nn.Module)):
        raise ValueError(
            f"module: expected a torch.nn.Module (the model whose steps are counted) or None, "
            f"found {type(module).__name__}. Fix: pass the model."
        )


def check_optimizer(optimizer: Any) -> None:
    """``optimizer``: None, or an object with ``param_groups`` (a torch optimizer)."""
    if optimizer is not None and not hasattr(optimizer, "param_groups"):
        raise ValueError(
            f"optimizer: expected a torch optimizer (with param_groups) or None, found "
            f"{type(optimizer).__name__}. Fix: pass the optimizer, or None."
        )


def check_bool(name: str, value: Any) -> None:
    """``name`` is True or False."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, found {value!r}.")


def check_directory_arg(name: str, value: Any) -> None:
    """``name``: None or a path (str or os.PathLike)."""
    if not (value is None or isinstance(value, (str, os.PathLike))):
        raise ValueError(
            f"{name}: expected a folder path or None, found {value!r} ({type(value).__name__})."
        )
