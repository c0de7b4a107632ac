"""Find the energy sensors of this machine.

Auto mode probes NVML (for this process's CUDA devices), then RAPL, then, only if nothing
measures anything, the labelled CPU-time estimate. It never raises: each backend that cannot
work is recorded in :attr:`Discovery.skipped` with the reason and the fix. A backend requested
by name that cannot work raises :class:`SensorError` instead.

Distributed training: each rank passes the CUDA device it trains on (``devices=[i]``) and its
``local_rank``. Every rank then reads its own GPU; host-wide sensors (RAPL) are read by local
rank 0 only, so a host is never counted once per rank. The process-time estimate counts only
its own process, so every rank that needs it keeps it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from types import MappingProxyType, ModuleType

from lightning_to_energy.sensors.base import Sensor, SensorError, SensorUnavailable
from lightning_to_energy.sensors.estimate import DEFAULT_WATTS_PER_CORE, CpuTimeEstimateSensor
from lightning_to_energy.sensors.fake import FakeSensor
from lightning_to_energy.sensors.nvml import NvmlSensor, load_pynvml, visible_gpu_count
from lightning_to_energy.sensors.nvml_devices import GpuIdentity
from lightning_to_energy.sensors.rapl import find_rapl_zones, rapl_sensors

__all__ = [
    "BACKENDS",
    "Discovery",
    "discover",
]

#: Backend names accepted by :func:`discover`, in probing order.
BACKENDS = ("nvml", "rapl", "estimate", "fake")


@dataclass(frozen=True)
class Discovery:
    """The sensors found and why the others were not.

    Attributes:
        sensors: the sensors to read, GPU first.
        skipped: backend (``"nvml"``, ``"nvml gpu:1"``, ``"rapl"``...) -> the reason and fix.
        notes: non-fatal remarks (fallbacks taken, zones left out, estimates in use).
    """

    sensors: tuple[Sensor, ...]
    skipped: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    notes: tuple[str, ...] = ()

    def close(self) -> None:
        """Close every sensor (stops background threads). Idempotent.

        Raises:
            Exception: the first error a sensor raised in ``close()``, once every other sensor
                has been closed too (one failing sensor must not leave the others' threads
                running).
        """
        first: Exception | None = None
        for sensor in self.sensors:
            try:
                sensor.close()
            except Exception as exc:
                first = first or exc
        if first is not None:
            raise first


def parse_backends(mode: str | Sequence[str]) -> tuple[bool, list[str]]:
    """``(auto, names)`` of a mode: ``"auto"``, or backend names (a list, or one string of
    comma-separated names) from :data:`BACKENDS`.

    Raises:
        ValueError: an unknown name (the message lists the valid ones), or no name at all.
    """
    names = [m.strip() for m in mode.split(",")] if isinstance(mode, str) else list(mode)
    if names == ["auto"]:
        return True, []
    unknown = [n for n in names if n not in BACKENDS]
    if unknown or not names:
        raise ValueError(
            f"sensor backends must be 'auto' or names from {', '.join(BACKENDS)}; found "
            f"{unknown or names!r}. Example: discover(['nvml', 'rapl'])."
        )
    return False, names


def discover(
    mode: str | Sequence[str] = "auto",
    *,
    devices: Sequence[int] | None = None,
    local_rank: int = 0,
    identities: Mapping[int, GpuIdentity] | None = None,
    powercap_root: str | PathLike[str] | None = None,
    nvml: ModuleType | None = None,
    background: bool = True,
    watts_per_core: float = DEFAULT_WATTS_PER_CORE,
    fake_power_w: float = 100.0,
) -> Discovery:
    """Find the sensors to read in this process.

    Args:
        mode: ``"auto"``, or backend names (a list, or a comma-separated string) from
            :data:`BACKENDS`; named backends must work.
        devices: torch CUDA device indices this process uses (DDP: just the rank's device);
            None = every visible GPU; an empty sequence = none (training on CPU).
        local_rank: the process's rank on its host; host-wide sensors only on local rank 0.
        identities: device index -> UUID / PCI bus id, to override what torch reports.
        powercap_root: the powercap tree (default ``$LTE_POWERCAP_ROOT`` or
            ``/sys/class/powercap``).
        nvml: a ``pynvml`` module to use instead of importing it (tests).
        background: start the sensors' background samplers (default True). False suits
            short-lived listings such as ``lightning-to-energy sensors``; NVML power
            integration and RAPL wrap protection then rely on the caller reading often.
        watts_per_core: per-core power of the CPU-time estimate.
        fake_power_w: constant power of the ``"fake"`` backend.

    Returns:
        The sensors, the skipped backends with reasons, and notes.

    Raises:
        ValueError: an unknown backend name.
        SensorError: a backend requested by name cannot work (never in auto mode).
    """
    auto, names = parse_backends(mode)
    wanted = ["nvml", "rapl", "estimate"] if auto else names
    sensors: list[Sensor] = []
    skipped: dict[str, str] = {}
    notes: list[str] = []

    def fail(name: str, exc: Exception) -> None:
        if auto:
            skipped[name] = str(exc) if isinstance(exc, SensorError) else f"{exc!r}"
            return
        for sensor in sensors:
            sensor.close()
        fix = exc.fix if isinstance(exc, SensorUnavailable) else ""
        raise SensorUnavailable(
            f"sensor backend '{name.split()[0]}' was requested but cannot work: "
            f"{exc.reason if isinstance(exc, SensorUnavailable) else exc}",
            fix,
        ) from exc

    cpu_measured = False
    for name in wanted:
        if name == "nvml":
            try:
                module = nvml if nvml is not None else load_pynvml()
                indices = (
                    list(devices) if devices is not None else list(range(visible_gpu_count(module)))
                )
                if not indices:
                    raise SensorUnavailable(
                        "GPU energy not measured: "
                        + (
                            "this process uses no CUDA device."
                            if devices is not None
                            else "no NVIDIA GPU is visible to this process."
                        ),
                        "train on a CUDA device (and check CUDA_VISIBLE_DEVICES, nvidia-smi).",
                    )
            except Exception as exc:
                fail("nvml", exc)
                continue
            for index in indices:
                try:
                    gpu = NvmlSensor(
                        index,
                        identity=(identities or {}).get(index),
                        nvml=module,
                        background=background,
                    )
                except Exception as exc:
                    fail(f"nvml gpu:{index}" if len(indices) > 1 else "nvml", exc)
                    continue
                sensors.append(gpu)
                if gpu.note:
                    notes.append(gpu.note)
        elif name == "rapl":
            try:
                if local_rank != 0:
                    find_rapl_zones(powercap_root)  # is the CPU measured (by local rank 0)?
                    cpu_measured = True
                    skipped["rapl"] = (
                        "host-wide: RAPL is read by local rank 0 only (this process is local "
                        f"rank {local_rank}), so the host is counted once."
                    )
                    continue
                found, rapl_notes = rapl_sensors(powercap_root, background=background)
            except Exception as exc:
                fail("rapl", exc)
                continue
            sensors.extend(found)
            notes.extend(rapl_notes)
            cpu_measured = True
        elif name == "estimate":
            if auto and cpu_measured:
                notes.append("CPU energy is measured by RAPL, so the CPU-time estimate is off.")
                continue
            if auto and sensors:
                # A measured GPU beside an estimated CPU would make every total an estimate
                # (and the regression's target part guesswork): measure what can be measured.
                skipped["estimate"] = (
                    "not used: GPU energy is measured (NVML) and a CPU-time estimate beside it "
                    "would turn every total into an estimate, so the totals are the GPU's; the "
                    "CPU is not measured (see rapl). Fix: sensors='nvml,estimate' adds the "
                    "labelled estimate of this process's CPU."
                )
                continue
            sensors.append(CpuTimeEstimateSensor(watts_per_core=watts_per_core))
            notes.append(
                "CPU energy is an ESTIMATE (process CPU time x "
                f"{watts_per_core:g} W per busy core), labelled 'estimate'."
            )
        elif name == "fake":
            sensors.append(FakeSensor("fake:0", power_w=fake_power_w))
    return Discovery(tuple(sensors), MappingProxyType(skipped), tuple(notes))
