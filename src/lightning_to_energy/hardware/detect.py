"""Which device this is: a torch device checked to exist, and its spec from the table."""

from __future__ import annotations

import os
from typing import Any

from lightning_to_energy.hardware.identity import HardwareInfo
from lightning_to_energy.hardware.specs import (
    HOW_TO_ADD,
    HardwareSpec,
    cpu_from_cpuinfo,
    cpu_spec,
    find_hardware,
    hardware_table,
    is_registered,
    match_hardware,
)
from lightning_to_energy.notices import warn as notify

__all__ = ["detect_hardware", "resolve_device", "resolve_spec", "spec_for"]


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


def resolve_device(device: Any, *, any_type: bool = False) -> Any:
    """``device`` as a torch device, checked to exist; ``"cuda"`` names the current one.

    Args:
        device: a ``torch.device`` or a name such as ``"cpu"``, ``"cuda"``, ``"cuda:1"``.
        any_type: accept device types other than ``cpu`` and ``cuda`` (``meta``, ``mps``) as
            they are; by default they are refused.

    Raises:
        ValueError: not a device name, a CUDA device that this machine lacks, or (without
            ``any_type``) another type of device.
    """
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"expected a device such as 'cpu', 'cuda' or 'cuda:1', found {device!r}. Fix: "
            "name a torch device type, with its index after ':' where there are several."
        ) from None
    if dev.type == "cuda":
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (dev.index or 0) >= available:
            raise ValueError(
                f"expected CUDA device {dev.index or 0}, found {available} CUDA device(s). "
                "Fix: run on a machine with an NVIDIA GPU and a CUDA build of torch, or use "
                "device 'cpu'."
            )
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    elif dev.type != "cpu" and not any_type:
        raise ValueError(
            f"expected a 'cpu' or 'cuda' device, found {device!r}. Fix: use 'cpu', or 'cuda' "
            "on a machine with an NVIDIA GPU."
        )
    return dev


def spec_for(info: HardwareInfo, *, same_machine: bool) -> HardwareSpec:
    """The roofline spec of the machine ``info`` identifies.

    A GPU is found by its NVML name in the hardware table; a CPU is this machine's when
    ``same_machine``, else a rough spec from its name and core count.

    Raises:
        ValueError: a GPU the hardware table does not know (the message says how to add it).
    """
    if info.gpus:
        return find_hardware(info.gpus[0])
    if same_machine:
        return detect_hardware("cpu")
    # NB: another machine's CPU, known by name and core count only: default clock and SIMD width.
    return cpu_spec(max(int(info.cpu_count), 1), name=info.cpu)


def resolve_spec(hardware: HardwareSpec | str | None, device: Any) -> HardwareSpec | None:
    """A hardware spec from a spec, a table key (``"h100-sxm"``) or, with None, the device.

    Detection is best effort: a device the table does not know gives None, with a warning
    saying how to add the hardware; an explicit key that the table does not know is an error.

    Raises:
        ValueError: ``hardware`` is a key or name the table does not know.
    """
    if isinstance(hardware, str):
        return find_hardware(hardware)
    if hardware is not None:
        return hardware
    try:
        return detect_hardware(device)
    except ValueError as exc:
        notify(
            f"lightning-to-energy study: no roofline for this device ({exc}); roofline_s will "
            "be null, so the 'ours' model cannot use these runs. Fix: pass hardware=KEY "
            "(--hardware KEY), or register the device with roofline.load_hardware().",
            stacklevel=2,
        )
        return None
