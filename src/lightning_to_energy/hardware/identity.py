"""What a calibration, a report and a study run are specific to: the machine's identity.

:class:`HardwareInfo` (GPU names, driver, CPU model and count), its stable file-name-safe
:func:`hardware_fingerprint`, and the report's ``hardware`` section written from it and read
back. The one place that says which machine this is; peak rates are in
:mod:`lightning_to_energy.hardware.specs`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lightning_to_energy._files import found_repr
from lightning_to_energy.hardware.cpuinfo import CPUINFO_PATH, read_cpuinfo
from lightning_to_energy.sensors.base import SensorError
from lightning_to_energy.sensors.nvml import load_pynvml
from lightning_to_energy.sensors.nvml_devices import nvml_text

__all__ = [
    "HardwareInfo",
    "hardware_fingerprint",
    "hardware_from_section",
    "hardware_section",
]


@dataclass(frozen=True)
class HardwareInfo:
    """What the calibration is specific to.

    Attributes:
        gpus: GPU model names as NVML reports them (empty without NVIDIA GPUs or NVML).
        driver_version: the NVIDIA driver version, or None.
        cpu: CPU model name.
        cpu_count: logical CPUs of the host.
    """

    gpus: tuple[str, ...] = ()
    driver_version: str | None = None
    cpu: str = "unknown"
    cpu_count: int = 0

    @classmethod
    def detect(
        cls, nvml: Any = None, cpuinfo_path: str | os.PathLike[str] = CPUINFO_PATH
    ) -> HardwareInfo:
        """Probe this machine. Never raises.

        Args:
            nvml: a module with pynvml's API (for tests); None imports ``pynvml`` (from the
                ``nvidia-ml-py`` package) if it is installed, and skips GPUs otherwise.
            cpuinfo_path: where to read the CPU ``model name`` (Linux).
        """
        gpus, driver = _nvml_devices(nvml)
        return cls(
            gpus=gpus,
            driver_version=driver,
            cpu=_cpu_model(cpuinfo_path),
            cpu_count=os.cpu_count() or 0,
        )

    @property
    def label(self) -> str:
        """One readable line, e.g. ``"1 x NVIDIA H100 80GB HBM3 (driver 580.159.04)"``."""
        cpu = f"{self.cpu} ({self.cpu_count} CPUs)"
        if not self.gpus:
            return cpu
        names = sorted(set(self.gpus))
        gpus = ", ".join(f"{self.gpus.count(n)} x {n}" for n in names)
        driver = f" (driver {self.driver_version})" if self.driver_version else ""
        if self.cpu_count < 1 and self.cpu == "unknown":
            return f"{gpus}{driver}"  # a GPU known from published data: its host was not named
        return f"{gpus}{driver}; {cpu}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "gpus": list(self.gpus),
            "driver_version": self.driver_version,
            "cpu": self.cpu,
            "cpu_count": self.cpu_count,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "hardware") -> HardwareInfo:
        """Inverse of :meth:`to_dict`; ``where`` names the JSON path of ``d`` in errors.

        Raises:
            ValueError: a field has the wrong type.
        """
        if not isinstance(d, Mapping):
            raise ValueError(
                f"{where}: expected a JSON object {{gpus, driver_version, cpu, cpu_count}}, "
                f"found {found_repr(d)}"
            )
        gpus = d.get("gpus", [])
        driver = d.get("driver_version")
        cpu = d.get("cpu", "unknown")
        count = d.get("cpu_count", 0)
        if (
            not isinstance(gpus, list)
            or not all(isinstance(g, str) for g in gpus)
            or not (driver is None or isinstance(driver, str))
            or not isinstance(cpu, str)
            or isinstance(count, bool)
            or not isinstance(count, int)
        ):
            raise ValueError(
                f"{where}: expected {{gpus: [str], driver_version: str|null, cpu: str, "
                f"cpu_count: int}}, found {found_repr(dict(d))}"
            )
        return cls(gpus=tuple(gpus), driver_version=driver, cpu=cpu, cpu_count=count)


def _cpu_model(cpuinfo_path: str | os.PathLike[str]) -> str:
    model = read_cpuinfo(cpuinfo_path).model
    return model or platform.processor() or platform.machine() or "unknown"


def hardware_section(info: HardwareInfo) -> dict[str, str]:
    """The report's ``hardware`` section: display strings (see :func:`hardware_from_section`)."""
    return {
        "fingerprint": hardware_fingerprint(info),
        "label": info.label,
        "cpu": info.cpu,
        "cpu_count": str(info.cpu_count),
        "gpus": ", ".join(info.gpus) or "none",
        "driver": info.driver_version or "n/a",
    }


def hardware_from_section(section: Mapping[str, str]) -> HardwareInfo | None:
    """The :class:`HardwareInfo` behind a report's ``hardware`` section, None without one.

    Raises:
        ValueError: the section's fields do not give back its own fingerprint (edited by hand).
    """
    if not section.get("fingerprint"):
        return None
    gpus = section.get("gpus", "none")
    count = section.get("cpu_count", "0")
    info = HardwareInfo(
        gpus=() if gpus == "none" else tuple(gpus.split(", ")),
        driver_version=None if section.get("driver", "n/a") == "n/a" else section["driver"],
        cpu=section.get("cpu", "unknown"),
        cpu_count=int(count) if count.isdigit() else -1,
    )
    if hardware_fingerprint(info) != section["fingerprint"]:
        raise ValueError(
            f"expected hardware fields that give back the fingerprint "
            f"{section['fingerprint']!r}, found {dict(section)}"
        )
    return info


def hardware_fingerprint(devices_info: HardwareInfo | Mapping[str, Any] | None = None) -> str:
    """A short, stable, file-name-safe identifier of the hardware.

    It is a readable slug of the main device (first GPU by name, else the CPU), the GPU count,
    and the first 10 hex digits of the SHA-256 of all of :class:`HardwareInfo` (GPU names,
    driver, CPU, CPU count), e.g. ``"nvidia-h100-80gb-hbm3-x1-3f2a9c1b0e"``. A driver update
    gives a new fingerprint.

    Args:
        devices_info: the hardware; a mapping in :meth:`HardwareInfo.to_dict` form; or None to
            detect this machine.
    """
    if devices_info is None:
        info = HardwareInfo.detect()
    elif isinstance(devices_info, HardwareInfo):
        info = devices_info
    else:
        info = HardwareInfo.from_dict(devices_info)
    canonical = info.to_dict()
    canonical["gpus"] = sorted(info.gpus)  # the same GPUs enumerated in another order
    digest = hashlib.sha256(
        json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()[:10]
    main = canonical["gpus"][0] if info.gpus else info.cpu
    slug = re.sub(r"[^a-z0-9]+", "-", main.lower()).strip("-")[:40].rstrip("-") or "unknown"
    if info.gpus:
        slug += f"-x{len(info.gpus)}"
    return f"{slug}-{digest}"


def _nvml_devices(nvml: Any = None) -> tuple[tuple[str, ...], str | None]:
    """GPU names and the driver version through NVML; ``((), None)`` when unavailable.

    Args:
        nvml: a module with pynvml's API (for tests); None imports it with
            :func:`~lightning_to_energy.sensors.nvml.load_pynvml`.

    Never raises: a machine without NVML, without a driver, or with a half-working one has
    no GPUs to name.
    """
    if nvml is None:
        try:
            nvml = load_pynvml()
        except SensorError:
            return (), None
    try:
        nvml.nvmlInit()
    except Exception:  # NVML missing or no driver: no GPUs to fingerprint
        return (), None
    try:
        driver = nvml_text(nvml.nvmlSystemGetDriverVersion())
        names = tuple(
            nvml_text(nvml.nvmlDeviceGetName(nvml.nvmlDeviceGetHandleByIndex(i)))
            for i in range(int(nvml.nvmlDeviceGetCount()))
        )
        return names, driver
    except Exception:  # a half-working driver: fingerprint the CPU only
        return (), None
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()
