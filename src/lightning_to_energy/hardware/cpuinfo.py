"""The one reader of ``/proc/cpuinfo``: the CPU's model name and feature flags."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CPUINFO_PATH", "CpuInfo", "read_cpuinfo"]

CPUINFO_PATH = "/proc/cpuinfo"


@dataclass(frozen=True)
class CpuInfo:
    """What ``/proc/cpuinfo`` says about the first CPU.

    Attributes:
        model: the ``model name`` line, white space folded ("" when absent or unreadable).
        flags: the ``flags`` (x86) or ``Features`` (Arm) words (empty when absent).
    """

    model: str = ""
    flags: frozenset[str] = frozenset()


def read_cpuinfo(path: str | os.PathLike[str] = CPUINFO_PATH) -> CpuInfo:
    """The first ``model name`` and flag line of ``path``; an empty :class:`CpuInfo` when the
    file cannot be read (not Linux, or a sandbox). Never raises."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return CpuInfo()
    model, flags = "", frozenset[str]()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if sep and key == "model name" and not model:
            model = " ".join(value.split())
        elif sep and key in ("flags", "Features") and not flags:
            flags = frozenset(value.split())
    return CpuInfo(model=model, flags=flags)
