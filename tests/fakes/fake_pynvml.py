"""A fake ``pynvml`` module: just enough of nvidia-ml-py's surface for the NVML backend.

Build one with :func:`make_fake_pynvml` and pass it as ``nvml=`` (or put it in
``sys.modules["pynvml"]``). Each :class:`FakeGpu` integrates a constant power over an injected
clock, so tests can work out expected joules by hand.

Example::

    clock = FakeClock()
    nvml = make_fake_pynvml([FakeGpu(power_w=200.0)], clock=clock)
    sensor = NvmlSensor(0, nvml=nvml, background=False, clock=clock, sleep=clock.sleep)
"""

from __future__ import annotations

import ctypes
import threading
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

# The real error codes and constants of nvidia-ml-py.
NVML_SUCCESS = 0
ERROR_CODES = {
    "NVML_ERROR_UNINITIALIZED": 1,
    "NVML_ERROR_INVALID_ARGUMENT": 2,
    "NVML_ERROR_NOT_SUPPORTED": 3,
    "NVML_ERROR_NO_PERMISSION": 4,
    "NVML_ERROR_NOT_FOUND": 6,
    "NVML_ERROR_DRIVER_NOT_LOADED": 9,
    "NVML_ERROR_TIMEOUT": 10,
    "NVML_ERROR_LIBRARY_NOT_FOUND": 12,
    "NVML_ERROR_FUNCTION_NOT_FOUND": 13,
    "NVML_ERROR_GPU_IS_LOST": 15,
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH": 18,
    "NVML_ERROR_UNKNOWN": 999,
}
NVML_FI_DEV_POWER_INSTANT = 186
NVML_DEVICE_MIG_ENABLE = 1
NVML_VALUE_TYPE_UNSIGNED_INT = 1
# c_nvmlValue_t member for each NVML_VALUE_TYPE_* code, as in nvidia-ml-py.
_VALUE_ATTRS = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}


class NVMLError(Exception):
    """Like pynvml's: carries the numeric code in ``value``."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        names = {v: k for k, v in ERROR_CODES.items()}
        return names.get(self.value, f"NVML error {self.value}")


@dataclass
class FakeGpu:
    """One fake device.

    Attributes:
        uuid: ``"GPU-..."`` for a whole GPU, ``"MIG-..."`` for a MIG instance.
        pci_bus_id: NVML's form, e.g. ``"00000000:17:00.0"``.
        name: the product name.
        power_w: constant power; the counter reports its integral over the clock.
        has_counter: False makes the energy counter NOT_SUPPORTED (pre-Volta).
        counter_frozen: the counter exists but never changes.
        has_instant_field: False makes NVML_FI_DEV_POWER_INSTANT NOT_SUPPORTED.
        mig_mode: the current MIG mode (1 = enabled); None = NOT_SUPPORTED (pre-Ampere).
        mig_pending: the MIG mode after the next GPU reset; None = the same as ``mig_mode``.
        value_type: the NVML_VALUE_TYPE_* code field values come back in (1 = uiVal).
        read_s: seconds one energy-counter read takes on the clock (needs ``advance=``): half
            pass before the counter is sampled, half after, as an NVML call of about 3 ms does.
        failing: while True, energy and power reads raise NVML_ERROR_GPU_IS_LOST.
        power_limit_w: the enforced power limit; None makes it NOT_SUPPORTED.
        counter_offset_mj: added to the energy counter (a reset: minus the counter's value).
        counter_value_mj: while set, the energy counter reads exactly this (a garbage value).
        instant_mw: while set, the instant-power field reads exactly this (a garbage value).
    """

    uuid: str = "GPU-11111111-2222-3333-4444-555555555555"
    pci_bus_id: str = "00000000:17:00.0"
    name: str = "NVIDIA H100 80GB HBM3"
    power_w: float = 100.0
    has_counter: bool = True
    counter_frozen: bool = False
    has_instant_field: bool = True
    mig_mode: int | None = 0
    mig_pending: int | None = None
    value_type: int = NVML_VALUE_TYPE_UNSIGNED_INT
    read_s: float = 0.0
    failing: bool = False
    power_limit_w: float | None = 700.0
    counter_offset_mj: int = 0
    counter_value_mj: int | None = None
    instant_mw: int | None = None
    energy_reads: int = field(default=0, init=False)
    power_reads: int = field(default=0, init=False)


@dataclass(frozen=True)
class _Handle:
    gpu: FakeGpu


class FakePynvml(types.ModuleType):
    """The module type :func:`make_fake_pynvml` returns (typed attributes for tests)."""

    NVMLError = NVMLError
    NVML_SUCCESS = NVML_SUCCESS
    NVML_FI_DEV_POWER_INSTANT = NVML_FI_DEV_POWER_INSTANT
    NVML_DEVICE_MIG_ENABLE = NVML_DEVICE_MIG_ENABLE
    init_calls = 0
    shutdown_calls = 0


def make_fake_pynvml(
    gpus: Sequence[FakeGpu],
    *,
    clock: Callable[[], float],
    library_missing: bool = False,
    init_error: str | None = None,
    energy_origin_mj: int = 5_000_000,
    advance: Callable[[float], None] | None = None,
) -> FakePynvml:
    """Build a module object that behaves like ``pynvml`` for the given devices.

    Args:
        gpus: the devices; those whose UUID starts with ``MIG-`` are MIG instances, reachable
            by UUID only (as in NVML, they are not enumerated by index).
        clock: seconds; energy counters report ``origin + power_w * (clock() - clock_at_build)``.
        library_missing: nvmlInit raises NVML_ERROR_LIBRARY_NOT_FOUND (no driver).
        init_error: the name of an error code nvmlInit raises, e.g.
            ``"NVML_ERROR_LIB_RM_VERSION_MISMATCH"``.
        energy_origin_mj: the counter value at build time (energy since "driver load").
        advance: moves ``clock`` forward by some seconds; lets a read take ``FakeGpu.read_s``.

    Returns:
        The module. ``module.init_calls`` / ``module.shutdown_calls`` count init and shutdown.
    """
    mod = FakePynvml("pynvml")
    t0_s = clock()
    whole = [g for g in gpus if not g.uuid.startswith("MIG-")]
    lock = threading.Lock()
    counts = {"init": 0, "shutdown": 0}

    def check_init() -> None:
        if counts["init"] <= counts["shutdown"]:
            raise NVMLError(ERROR_CODES["NVML_ERROR_UNINITIALIZED"])

    def nvmlInit() -> None:
        if library_missing:
            raise NVMLError(ERROR_CODES["NVML_ERROR_LIBRARY_NOT_FOUND"])
        if init_error is not None:
            raise NVMLError(ERROR_CODES[init_error])
        with lock:
            counts["init"] += 1
        mod.init_calls = counts["init"]

    def nvmlShutdown() -> None:
        check_init()
        with lock:
            counts["shutdown"] += 1
        mod.shutdown_calls = counts["shutdown"]

    def nvmlDeviceGetCount() -> int:
        check_init()
        return len(whole)

    def nvmlDeviceGetHandleByIndex(index: int) -> _Handle:
        check_init()
        if not 0 <= index < len(whole):
            raise NVMLError(ERROR_CODES["NVML_ERROR_INVALID_ARGUMENT"])
        return _Handle(whole[index])

    def nvmlDeviceGetHandleByUUID(uuid: str) -> _Handle:
        check_init()
        for gpu in gpus:
            if gpu.uuid == uuid:
                return _Handle(gpu)
        raise NVMLError(ERROR_CODES["NVML_ERROR_NOT_FOUND"])

    def nvmlDeviceGetHandleByPciBusId(bus_id: str) -> _Handle:
        check_init()
        for gpu in whole:
            if gpu.pci_bus_id.lower() == bus_id.lower():
                return _Handle(gpu)
        raise NVMLError(ERROR_CODES["NVML_ERROR_NOT_FOUND"])

    def nvmlDeviceGetName(handle: _Handle) -> str:
        return handle.gpu.name

    def nvmlDeviceGetUUID(handle: _Handle) -> str:
        return handle.gpu.uuid

    def nvmlDeviceIsMigDeviceHandle(handle: _Handle) -> ctypes.c_uint:
        # nvidia-ml-py returns the ctypes object itself here, not its .value
        return ctypes.c_uint(int(handle.gpu.uuid.startswith("MIG-")))

    def nvmlDeviceGetMigMode(handle: _Handle) -> list[int]:
        if handle.gpu.mig_mode is None:
            raise NVMLError(ERROR_CODES["NVML_ERROR_NOT_SUPPORTED"])
        pending = handle.gpu.mig_pending
        return [handle.gpu.mig_mode, handle.gpu.mig_mode if pending is None else pending]

    def _check_read(gpu: FakeGpu) -> None:
        check_init()
        if gpu.failing:
            raise NVMLError(ERROR_CODES["NVML_ERROR_GPU_IS_LOST"])

    def nvmlDeviceGetTotalEnergyConsumption(handle: _Handle) -> int:
        gpu = handle.gpu
        gpu.energy_reads += 1
        if not gpu.has_counter:
            raise NVMLError(ERROR_CODES["NVML_ERROR_NOT_SUPPORTED"])
        _check_read(gpu)
        if gpu.counter_frozen:
            return energy_origin_mj
        if gpu.counter_value_mj is not None:
            return gpu.counter_value_mj
        if advance is not None and gpu.read_s:
            advance(gpu.read_s / 2)
        # W x s x 1e3 mJ/J = mJ
        millijoules = energy_origin_mj + round(gpu.power_w * (clock() - t0_s) * 1e3)
        millijoules += gpu.counter_offset_mj
        if advance is not None and gpu.read_s:
            advance(gpu.read_s / 2)
        return millijoules

    def nvmlDeviceGetEnforcedPowerLimit(handle: _Handle) -> int:
        check_init()
        if handle.gpu.power_limit_w is None:
            raise NVMLError(ERROR_CODES["NVML_ERROR_NOT_SUPPORTED"])
        return round(handle.gpu.power_limit_w * 1e3)  # W -> mW

    def nvmlDeviceGetPowerUsage(handle: _Handle) -> int:
        handle.gpu.power_reads += 1
        _check_read(handle.gpu)
        return round(handle.gpu.power_w * 1e3)  # W -> mW

    def nvmlDeviceGetFieldValues(
        handle: _Handle, field_ids: list[int]
    ) -> list[types.SimpleNamespace]:
        handle.gpu.power_reads += 1
        _check_read(handle.gpu)
        values = []
        gpu = handle.gpu
        milliwatts = round(gpu.power_w * 1e3) if gpu.instant_mw is None else gpu.instant_mw
        for field_id in field_ids:
            supported = field_id == NVML_FI_DEV_POWER_INSTANT and handle.gpu.has_instant_field
            status = NVML_SUCCESS if supported else ERROR_CODES["NVML_ERROR_NOT_SUPPORTED"]
            values.append(
                types.SimpleNamespace(
                    fieldId=field_id,
                    nvmlReturn=status,
                    valueType=handle.gpu.value_type,
                    value=types.SimpleNamespace(
                        **{_VALUE_ATTRS[handle.gpu.value_type]: milliwatts}
                    ),
                )
            )
        return values

    for name, code in ERROR_CODES.items():
        setattr(mod, name, code)
    for fn in (
        nvmlInit,
        nvmlShutdown,
        nvmlDeviceGetCount,
        nvmlDeviceGetHandleByIndex,
        nvmlDeviceGetHandleByUUID,
        nvmlDeviceGetHandleByPciBusId,
        nvmlDeviceGetName,
        nvmlDeviceGetUUID,
        nvmlDeviceIsMigDeviceHandle,
        nvmlDeviceGetMigMode,
        nvmlDeviceGetTotalEnergyConsumption,
        nvmlDeviceGetEnforcedPowerLimit,
        nvmlDeviceGetPowerUsage,
        nvmlDeviceGetFieldValues,
    ):
        setattr(mod, fn.__name__, fn)
    return mod
