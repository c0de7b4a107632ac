"""Which device this is: a torch device checked to exist, and its spec from the table."""

from __future__ import annotations

import os
from typing import Any

from lightning_to_energy.hardware.specs import (
    HOW_TO_ADD,
    HardwareSpec,
    cpu_from_cpuinfo,
    hardware_table,
    is_registered,
    match_hardware,
)

__all__ = ["detect_hardware"]


def detect_hardware(
    device: Any = None, *, cpuinfo_path: str | os.PathLike[str] = "/proc/cpuinfo"
) -> HardwareSpec:
    """The spec of ``device``: a CUDA device by its name, or this machine's CPU.

    Args:
        device: a ``torch.device``, ``"cuda:0"``, ``"cpu"``, a CUDA index, or None for the
            current CUDA device when CUDA is available, else the CPU.
        cpuinfo_path: where to read the CPU model and flags (Linux).

    Returns:
        The matching spec; for the CPU, the registered ``"cpu"`` spec if one was registered,
        else one built from this machine (:func:`cpu_from_cpuinfo`).

    Raises:
        ValueError: a CUDA device whose name matches no spec (the message shows how to add
            one).
    """
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device) if not isinstance(device, int) else torch.device("cuda", device)
    if dev.type != "cuda":
        if is_registered("cpu"):
            return hardware_table()["cpu"]
        return cpu_from_cpuinfo(cpuinfo_path)
    name = torch.cuda.get_device_name(dev)
    found = match_hardware(name, kind="gpu")
    if found is None:
        raise ValueError(
            f"expected a GPU listed in the hardware table ({', '.join(sorted(hardware_table()))}); "
            f"found {name!r}, which matches none; {HOW_TO_ADD}"
        )
    return found
