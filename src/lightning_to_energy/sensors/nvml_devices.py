"""Which NVML device a CUDA device is, and NVML's errors in this package's terms.

Torch's UUID or PCI bus id when known, else ``CUDA_VISIBLE_DEVICES`` and NVML's order; every
NVML error becomes a :class:`~lightning_to_energy.sensors.base.SensorError` here. The NVML module
itself is always passed in (``pynvml`` is imported by :mod:`lightning_to_energy.sensors.nvml`
only).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from lightning_to_energy.sensors.base import (
    SensorError,
    SensorUnavailable,
)

__all__ = [
    "GpuIdentity",
    "is_nvml_code",
    "mig_refusal",
    "nvml_call",
    "nvml_code",
    "nvml_text",
    "parse_visible_devices",
    "resolve_handle",
    "torch_gpu_identity",
    "translate_nvml_error",
]


def nvml_code(nvml: ModuleType, name: str) -> int | None:
    value = getattr(nvml, name, None)
    return value if isinstance(value, int) else None


def is_nvml_code(nvml: ModuleType, exc: BaseException, *names: str) -> bool:
    code = getattr(exc, "value", None)
    return code is not None and any(code == nvml_code(nvml, n) for n in names)


def translate_nvml_error(nvml: ModuleType, exc: Exception, what: str, domain: str) -> SensorError:
    """The one place NVML errors become SensorError (with a fix where one is known)."""
    if is_nvml_code(nvml, exc, "NVML_ERROR_LIBRARY_NOT_FOUND"):
        return SensorUnavailable(
            "GPU energy not measured: the NVIDIA driver library (libnvidia-ml.so.1) was not "
            "found, so there is no NVIDIA driver on this machine.",
            "install the NVIDIA driver (nvidia-smi must work); without an NVIDIA GPU there is "
            "nothing for NVML to measure.",
        )
    if is_nvml_code(nvml, exc, "NVML_ERROR_DRIVER_NOT_LOADED"):
        return SensorUnavailable(
            "GPU energy not measured: the NVIDIA kernel driver is not loaded.",
            "load the driver (`sudo modprobe nvidia`; nvidia-smi must work).",
        )
    if is_nvml_code(nvml, exc, "NVML_ERROR_LIB_RM_VERSION_MISMATCH"):
        return SensorUnavailable(
            "GPU energy not measured: the NVIDIA driver library (libnvidia-ml) and the loaded "
            "kernel module are different versions, as after a driver upgrade without a reboot.",
            "reboot, or reload the nvidia kernel modules; nvidia-smi must work.",
        )
    if is_nvml_code(nvml, exc, "NVML_ERROR_NO_PERMISSION"):
        return SensorUnavailable(
            f"{domain}: NVML {what} was refused: insufficient permissions.",
            "run as a user allowed to query the GPU (in a container, expose the device "
            "with --gpus).",
        )
    return SensorError(f"{domain}: NVML {what} failed: {exc}")


@dataclass(frozen=True)
class GpuIdentity:
    """What identifies a CUDA device to NVML.

    Attributes:
        uuid: the device UUID, with or without the ``GPU-`` / ``MIG-`` prefix.
        pci_bus_id: e.g. ``"00000000:17:00.0"``.
    """

    uuid: str | None = None
    pci_bus_id: str | None = None


def torch_gpu_identity(index: int) -> GpuIdentity | None:
    """The UUID and PCI bus id torch reports for CUDA device ``index``.

    Only consulted when torch is already imported (a training process): the CLI must not pay
    for importing torch. Returns None without CUDA.
    """
    torch: Any = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(index)
    uuid = getattr(props, "uuid", None)
    bus, dev = getattr(props, "pci_bus_id", None), getattr(props, "pci_device_id", None)
    dom = getattr(props, "pci_domain_id", 0) or 0
    pci = f"{dom:08X}:{bus:02X}:{dev:02X}.0" if bus is not None and dev is not None else None
    return GpuIdentity(uuid=str(uuid) if uuid is not None else None, pci_bus_id=pci)


def parse_visible_devices(value: str | None) -> list[int | str] | None:
    """Parse ``CUDA_VISIBLE_DEVICES`` the way CUDA does.

    Entries are indices, ``GPU-<uuid>`` (a unique prefix suffices) or ``MIG-<uuid>``; CUDA stops
    at the first entry it cannot read, ``-1`` hides every device, and a repeated entry hides
    them all (as ``torch.cuda._parse_visible_devices`` models it).

    Returns:
        None when the variable is unset (every device visible, in NVML order), else the entries.
    """
    if value is None:
        return None
    entries: list[int | str] = []
    for raw in value.split(","):
        token = raw.strip()
        entry: int | str
        if token.startswith(("GPU-", "MIG-")):
            entry = token
        else:
            match = re.match(r"\+?\d+", token)  # CUDA reads a leading integer, like strtoul
            if match is None:
                break
            entry = int(match.group())
        if entry in entries:  # CUDA then sees no device at all (rather than one GPU twice)
            return []
        entries.append(entry)
    return entries


def mig_refusal(domain: str, what: str) -> SensorUnavailable:
    return SensorUnavailable(
        f"{domain}: GPU energy not measured: {what} is a MIG instance (or a GPU in MIG mode). "
        "NVML reports energy and power only for the whole GPU, which all its MIG instances "
        "share, so this process's share cannot be measured.",
        "train on a GPU without MIG (`sudo nvidia-smi -i <gpu> -mig 0` on an idle GPU), or "
        "leave GPU energy unmeasured (sensors without 'nvml').",
    )


def resolve_handle(
    nvml: Any, domain: str, device_index: int, identity: GpuIdentity | None, visible: str | None
) -> tuple[Any, str]:
    """The NVML handle of CUDA device ``device_index``, and how it was found.

    By torch's UUID or PCI bus id when known, else through ``CUDA_VISIBLE_DEVICES``
    (``visible``) and NVML's order.

    Raises:
        SensorUnavailable: no such device, a MIG device, or an ambiguous UUID prefix.
        SensorError: another NVML failure.
    """

    def call(what: str, fn: Callable[..., Any], *args: Any) -> Any:
        return nvml_call(nvml, domain, what, fn, *args)

    entries = parse_visible_devices(visible)
    entry: int | str = device_index
    if entries is not None:
        if not 0 <= device_index < len(entries):
            raise SensorUnavailable(
                f"{domain}: no such CUDA device: CUDA_VISIBLE_DEVICES={visible!r} "
                f"makes {len(entries)} device(s) visible.",
                f"use a device index below {len(entries)}, or change CUDA_VISIBLE_DEVICES.",
            )
        entry = entries[device_index]
        if isinstance(entry, str) and entry.startswith("MIG-"):
            raise mig_refusal(domain, f"CUDA_VISIBLE_DEVICES entry {entry}")
    if identity is not None and identity.uuid:
        bare = re.sub(r"^(GPU-|MIG-)", "", identity.uuid)
        for prefix in ("GPU-", "MIG-"):
            try:
                handle = nvml.nvmlDeviceGetHandleByUUID(prefix + bare)
            except nvml.NVMLError as exc:
                if is_nvml_code(nvml, exc, "NVML_ERROR_NOT_FOUND", "NVML_ERROR_INVALID_ARGUMENT"):
                    continue
                raise translate_nvml_error(nvml, exc, "nvmlDeviceGetHandleByUUID", domain) from exc
            return handle, f"UUID {prefix}{bare}"
        raise SensorUnavailable(
            f"{domain}: NVML knows no GPU with the UUID {bare} that torch reported.",
            "check that the NVML driver and the CUDA runtime see the same GPUs (nvidia-smi -L).",
        )
    if identity is not None and identity.pci_bus_id:
        handle = call(
            "nvmlDeviceGetHandleByPciBusId",
            nvml.nvmlDeviceGetHandleByPciBusId,
            identity.pci_bus_id,
        )
        return handle, f"PCI bus id {identity.pci_bus_id}"
    if isinstance(entry, int):
        # NB: CUDA orders devices fastest first unless CUDA_DEVICE_ORDER=PCI_BUS_ID, NVML by
        # PCI bus id; without torch's UUID the two orders are assumed to agree.
        handle = call("nvmlDeviceGetHandleByIndex", nvml.nvmlDeviceGetHandleByIndex, entry)
        return handle, f"NVML index {entry}"
    count = call("nvmlDeviceGetCount", nvml.nvmlDeviceGetCount)
    matches = []
    for i in range(count):
        handle = call("nvmlDeviceGetHandleByIndex", nvml.nvmlDeviceGetHandleByIndex, i)
        uuid = nvml_text(call("nvmlDeviceGetUUID", nvml.nvmlDeviceGetUUID, handle))
        if uuid.startswith(entry):  # CUDA accepts any unique prefix of the UUID
            matches.append(handle)
    if len(matches) != 1:
        raise SensorUnavailable(
            f"{domain}: CUDA_VISIBLE_DEVICES entry {entry} matches {len(matches)} of "
            f"the {count} GPUs NVML sees; expected exactly one.",
            "use full GPU UUIDs from `nvidia-smi -L` in CUDA_VISIBLE_DEVICES.",
        )
    return matches[0], f"CUDA_VISIBLE_DEVICES entry {entry}"


def nvml_call(nvml: Any, domain: str, what: str, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, an NVML error translated into a :class:`SensorError` of ``domain``."""
    try:
        return fn(*args)
    except nvml.NVMLError as exc:
        raise translate_nvml_error(nvml, exc, what, domain) from exc


def nvml_text(value: Any) -> str:
    """An NVML string: older pynvml releases return bytes, newer ones str."""
    return value.decode() if isinstance(value, bytes) else str(value)
