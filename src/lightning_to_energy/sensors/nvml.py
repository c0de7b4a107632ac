"""NVIDIA GPU energy through NVML (optional extra ``nvidia`` = ``nvidia-ml-py``).

Facts this module rests on (measured on an H100 80GB HBM3, driver 580.159.04, 2026-11-25; see
``docs/sensors.md``):

- ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since driver load, Volta and newer) changes about
  every 100 ms; one call takes about 3 ms (p99 about 15 ms). So it is never read per step: a
  background thread samples it and ``read_j()`` returns the latest sample at once, or (with
  ``background=False``) the meter reads it at window edges only.
- Windows need about 2 s or more to be trusted (2 s windows agreed within 0.3 %).
- ``nvmlDeviceGetPowerUsage`` is a 1 s average on Ampere and newer; instant power is the field
  ``NVML_FI_DEV_POWER_INSTANT``. Where the counter is missing, instant power is integrated on a
  background thread and labelled ``power-integration``.

``pynvml`` is imported here only, lazily, through :func:`load_pynvml`; every NVML error is
translated into :class:`SensorError` by
:func:`~lightning_to_energy.sensors.nvml_devices.translate_nvml_error`. Tests inject a fake
module with the ``nvml=`` argument.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any, Literal

from lightning_to_energy.sensors._background import Sampler
from lightning_to_energy.sensors.base import (
    ANOMALY_IMPLAUSIBLE,
    ReadingAnomaly,
    SensorError,
    SensorKind,
    SensorUnavailable,
    power_ceiling_w,
)
from lightning_to_energy.sensors.nvml_devices import (
    GpuIdentity,
    is_nvml_code,
    mig_refusal,
    nvml_call,
    nvml_code,
    nvml_text,
    parse_visible_devices,
    resolve_handle,
    torch_gpu_identity,
    translate_nvml_error,
)

__all__ = [
    "COUNTER_UPDATE_PERIOD_S",
    "DEFAULT_COUNTER_PERIOD_S",
    "DEFAULT_MIN_WINDOW_S",
    "DEFAULT_POWER_PERIOD_S",
    "DEFAULT_PROBE_S",
    "NVIDIA_EXTRA_FIX",
    "Method",
    "NvmlSensor",
    "instant_power_reader",
    "load_pynvml",
    "nvidia_gpu_present",
    "visible_gpu_count",
]

NVIDIA_EXTRA_FIX = "pip install 'lightning-to-energy[nvidia]'"

#: How often the NVML energy counter changes (measured on an H100, 2026-11-25).
COUNTER_UPDATE_PERIOD_S = 0.1
#: The shortest window whose NVML energy can be trusted (2 s windows agreed within 0.3 %).
DEFAULT_MIN_WINDOW_S = 2.0
#: Background read period of the counter. NB: each read costs about 3 ms of a background
#: thread (the ctypes call releases the GIL), about 3 % of one core at this period.
DEFAULT_COUNTER_PERIOD_S = 0.1
#: Background sampling period of power for integration (a power read costs about 2 µs).
DEFAULT_POWER_PERIOD_S = 0.02
#: How long the counter is watched for an increment before it is trusted (5 update periods).
DEFAULT_PROBE_S = 0.5
_PROBE_STEP_S = 0.02

Method = Literal["auto", "counter", "power-integration"]

# c_nvmlValue_t member for each NVML_VALUE_TYPE_* code.
_VALUE_ATTRS = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}


def nvidia_gpu_present(proc_root: str = "/proc/driver/nvidia", dev_root: str = "/dev") -> bool:
    """Whether this machine shows any sign of an NVIDIA GPU: the driver's ``/proc`` entry or a
    ``/dev/nvidia<N>`` device (Linux), or the ``nvidia-smi`` tool (elsewhere)."""
    import glob
    import os
    import shutil

    return (
        os.path.isdir(proc_root)
        or bool(glob.glob(os.path.join(dev_root, "nvidia[0-9]*")))
        or shutil.which("nvidia-smi") is not None
    )


def load_pynvml() -> ModuleType:
    """Import ``pynvml`` (from the ``nvidia-ml-py`` distribution).

    Raises:
        SensorUnavailable: it is not installed; the fix is the ``nvidia`` extra, unless the
            machine has no NVIDIA GPU at all (then there is nothing to fix).
    """
    try:
        return importlib.import_module("pynvml")
    except ImportError as exc:
        if not nvidia_gpu_present():
            # Advice to install the extra would send a CPU-only user on a useless errand.
            raise SensorUnavailable(
                "GPU energy not measured: no NVIDIA GPU found (no NVIDIA driver, no "
                "/dev/nvidia* device, no nvidia-smi)."
            ) from exc
        raise SensorUnavailable(
            "GPU energy not measured: NVML needs the Python package nvidia-ml-py "
            "(import pynvml), which is not installed.",
            NVIDIA_EXTRA_FIX,
        ) from exc


def instant_power_reader(nvml: Any, handle: Any) -> Callable[[], float] | None:
    """A reader of ``handle``'s instant power in W (field ``NVML_FI_DEV_POWER_INSTANT``), None
    when the driver or the GPU lacks it."""
    field = nvml_code(nvml, "NVML_FI_DEV_POWER_INSTANT")
    if field is None or not hasattr(nvml, "nvmlDeviceGetFieldValues"):
        return None

    def instant_w() -> float:
        values = nvml.nvmlDeviceGetFieldValues(handle, [field])
        value = values[0]
        if value.nvmlReturn != 0:  # NVML_SUCCESS
            raise nvml.NVMLError(value.nvmlReturn)
        milliwatts = getattr(value.value, _VALUE_ATTRS.get(value.valueType, "uiVal"))
        return float(milliwatts) / 1e3  # mW -> W

    try:
        instant_w()
    except nvml.NVMLError:
        return None
    return instant_w


class NvmlSensor:
    """Energy of one NVIDIA GPU.

    The total-energy counter is used when it exists and is seen to increment during a short
    probe (kind ``counter``); otherwise instant power is integrated on a background thread
    (kind ``power-integration``), with ``nvmlDeviceGetPowerUsage`` (a 1 s average) as the last
    resort.

    With ``background=True`` (the default) a thread samples the counter every
    ``counter_period_s``, and ``read_j()`` returns the latest sample brought forward to now
    with one instant-power read (about 2 us): sample + power x the sample's age. Without that
    step each window edge would carry its own lag of up to ``counter_period_s``; the two lags
    are independent, so at steady power a window's energy would be off by power x their
    difference (standard deviation ``counter_period_s / sqrt(6)``, about 41 ms: about 2 % of a
    2 s window; derived, not measured). What remains is the counter's own ~100 ms update lag,
    as with a direct read. NB: without the instant-power field the sample is returned as it
    is. With ``background=False`` each ``read_j()`` calls NVML on the calling thread (about
    3 ms): use it at window edges only.
    Power integration always needs regular samples: without the thread they are taken only
    when ``read_j()`` or :meth:`poll` is called.

    Args:
        device_index: the torch CUDA device index (after ``CUDA_VISIBLE_DEVICES``).
        identity: the device's UUID / PCI bus id; default from torch when torch is imported,
            else ``CUDA_VISIBLE_DEVICES`` and NVML's own order are used.
        method: ``"auto"``, ``"counter"`` (fail if the counter is unusable) or
            ``"power-integration"`` (skip the counter).
        background: sample on a background thread (see above).
        nvml: the ``pynvml`` module to use (tests inject a fake); default :func:`load_pynvml`.
        visible_devices: ``CUDA_VISIBLE_DEVICES``; default read from the environment.
        min_window_s: the shortest trustworthy window to report.
        counter_period_s: background period of counter reads.
        power_period_s: background period of power samples.
        probe_s: how long to watch the counter for an increment.
        clock: seconds, for integration and the probe.
        sleep: used by the probe (tests inject one that advances a fake clock).

    Raises:
        SensorUnavailable: no pynvml, no driver, the device is a MIG instance, or it does not
            exist; also for ``method="counter"`` when the counter is unusable.
        SensorError: any other NVML failure.
    """

    host_wide = False

    def __init__(
        self,
        device_index: int = 0,
        *,
        identity: GpuIdentity | None = None,
        method: Method = "auto",
        background: bool = True,
        nvml: ModuleType | None = None,
        visible_devices: str | None = None,
        min_window_s: float = DEFAULT_MIN_WINDOW_S,
        counter_period_s: float = DEFAULT_COUNTER_PERIOD_S,
        power_period_s: float = DEFAULT_POWER_PERIOD_S,
        probe_s: float = DEFAULT_PROBE_S,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if method not in ("auto", "counter", "power-integration"):
            raise ValueError(
                f"method must be 'auto', 'counter' or 'power-integration'; found {method!r}."
            )
        self.domain = f"gpu:{device_index}"
        self.device_index = device_index
        self.min_window_s = float(min_window_s)
        self.note: str | None = None  # why the counter was not used, when it was not
        self._nvml = nvml if nvml is not None else load_pynvml()
        self._clock = clock
        self._sampler: Sampler | None = None
        self._closed = False
        self._initialised = False
        self._call("initialisation (nvmlInit)", self._nvml.nvmlInit)
        self._initialised = True
        try:
            self._setup(
                identity,
                method,
                background,
                visible_devices,
                counter_period_s,
                power_period_s,
                probe_s,
                sleep,
            )
        except BaseException:
            self.close()
            raise

    # --- setup ----------------------------------------------------------------------------

    def _setup(
        self,
        identity: GpuIdentity | None,
        method: Method,
        background: bool,
        visible_devices: str | None,
        counter_period_s: float,
        power_period_s: float,
        probe_s: float,
        sleep: Callable[[float], None],
    ) -> None:
        nvml = self._nvml
        if identity is None:
            identity = torch_gpu_identity(self.device_index)
        if visible_devices is None:
            visible_devices = os.environ.get("CUDA_VISIBLE_DEVICES")
        self._handle, how = resolve_handle(
            self._nvml, self.domain, self.device_index, identity, visible_devices
        )
        self._refuse_mig(how)
        name = nvml_text(self._call("nvmlDeviceGetName", nvml.nvmlDeviceGetName, self._handle))
        uuid = nvml_text(self._call("nvmlDeviceGetUUID", nvml.nvmlDeviceGetUUID, self._handle))
        self.gpu_name, self.gpu_uuid = name, uuid
        self.power_limit_w = self._enforced_power_limit_w()
        # Power reads above this are garbage (an all-ones 0xFFFFFFFF mW is 4.3 MW): they are
        # never integrated nor extrapolated.
        self._ceiling_w = power_ceiling_w(self)
        problem: str | None = "the counter was not requested (method='power-integration')"
        if method != "power-integration":
            problem = self._probe_counter(probe_s, sleep)
        if problem is None:
            self.kind = SensorKind.COUNTER
            self.update_period_s = COUNTER_UPDATE_PERIOD_S
            self.source = f"NVML nvmlDeviceGetTotalEnergyConsumption, {name} {uuid}"
            self._poll_fn: Callable[[], None] = self._poll_counter
            period_s = counter_period_s
            # With a background sampler, a read extrapolates the latest sample to now with
            # instant power (about 2 us a read): see read_j.
            self._edge_power_w = (
                instant_power_reader(self._nvml, self._handle) if background else None
            )
        elif method == "counter":
            raise SensorUnavailable(
                f"{self.domain}: the NVML energy counter cannot be used: {problem}.",
                "use method='auto' or 'power-integration' to integrate power instead.",
            )
        else:
            if method == "auto":
                self.note = f"{self.domain}: {problem}; integrating power (power-integration)."
            self.kind = SensorKind.POWER_INTEGRATION
            self._power_w = self._choose_power_source()
            self.update_period_s = max(power_period_s, self._power_update_s)
            self.source = (
                f"NVML {self._power_desc} integrated every {power_period_s * 1e3:g} ms, "
                f"{name} {uuid}"
            )
            self._poll_fn = self._poll_power
            period_s = power_period_s
        self._latest_j = 0.0
        self._counter_sample = (0.0, self._clock())  # (joules, when the counter was read)
        self._read_floor_j = -math.inf  # the last read_j(): reads never go backwards
        self._floor_sample_j = -math.inf  # the counter sample that floor was extrapolated from
        self._rejected: str | None = None  # a power sample rejected since the last read
        self._last_error: Exception | None = None  # the latest sample failed (counter mode)
        self._missed: Exception | None = None  # a sample failed since the last read (power)
        self._power_state: tuple[float, float, float] | None = None  # (t_s, power_w, energy_j)
        self.poll()  # a first sample, so read_j() has a value at once
        if background:
            self._sampler = Sampler(self.poll, period_s, f"lte-nvml-{self.domain}", self._on_error)
            self._sampler.start()

    def _refuse_mig(self, how: str) -> None:
        nvml = self._nvml
        is_mig = self._optional(getattr(nvml, "nvmlDeviceIsMigDeviceHandle", None), self._handle)
        if is_mig is not None and getattr(is_mig, "value", is_mig):
            raise mig_refusal(self.domain, f"the device with {how}")
        mode = self._optional(getattr(nvml, "nvmlDeviceGetMigMode", None), self._handle)
        enabled = nvml_code(nvml, "NVML_DEVICE_MIG_ENABLE")
        if mode is not None and enabled is not None and mode[0] == enabled:
            raise mig_refusal(self.domain, f"the device with {how}")

    def _probe_counter(self, probe_s: float, sleep: Callable[[float], None]) -> str | None:
        """None when the counter exists and increments within ``probe_s``; else the problem."""
        nvml = self._nvml
        read = getattr(nvml, "nvmlDeviceGetTotalEnergyConsumption", None)
        if read is None:
            return "this pynvml has no nvmlDeviceGetTotalEnergyConsumption"
        try:
            first_mj = read(self._handle)
        except nvml.NVMLError as exc:
            if is_nvml_code(nvml, exc, "NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_FUNCTION_NOT_FOUND"):
                return "the total-energy counter is not supported (it needs Volta or newer)"
            raise translate_nvml_error(
                nvml, exc, "nvmlDeviceGetTotalEnergyConsumption", self.domain
            ) from exc
        start_s = self._clock()
        while self._clock() - start_s < probe_s:
            sleep(_PROBE_STEP_S)
            now_mj = self._call("nvmlDeviceGetTotalEnergyConsumption", read, self._handle)
            if now_mj < first_mj:
                return f"the total-energy counter went backwards ({first_mj} -> {now_mj} mJ)"
            if now_mj > first_mj:
                return None
        return f"the total-energy counter did not change during a {probe_s:g} s probe"

    def _enforced_power_limit_w(self) -> float | None:
        """The GPU's enforced power limit in W, None where NVML does not say."""
        fn = getattr(self._nvml, "nvmlDeviceGetEnforcedPowerLimit", None)
        try:
            milliwatts = self._optional(fn, self._handle)
        except SensorError:  # a limit is a bound on readings, not needed to measure
            return None
        if not isinstance(milliwatts, (int, float)) or not milliwatts > 0:
            return None
        return float(milliwatts) / 1e3  # mW -> W

    def _choose_power_source(self) -> Callable[[], float]:
        """Instant power if the field exists, else the 1 s average; returns a reader in W."""
        nvml = self._nvml
        instant_w = instant_power_reader(self._nvml, self._handle)
        if instant_w is not None:
            self._power_desc = "field NVML_FI_DEV_POWER_INSTANT"
            self._power_update_s = 0.0
            return instant_w
        try:
            self._call("nvmlDeviceGetPowerUsage", nvml.nvmlDeviceGetPowerUsage, self._handle)
        except SensorError as exc:
            raise SensorUnavailable(
                f"{self.domain}: GPU energy not measured: neither the energy counter nor a "
                f"power reading is available ({exc}).",
                "update the NVIDIA driver; some GPUs (and most vGPUs) report no power.",
            ) from exc
        self._power_desc = "nvmlDeviceGetPowerUsage (a 1 s average on Ampere and newer)"
        self._power_update_s = 1.0
        note = (
            f"{self.domain}: the instant-power field is not available; integrating "
            "nvmlDeviceGetPowerUsage, a 1 s moving average, so energy lags by about 0.5 s."
        )
        self.note = f"{self.note} {note}" if self.note else note
        return lambda: nvml.nvmlDeviceGetPowerUsage(self._handle) / 1e3  # mW -> W

    # --- sampling -------------------------------------------------------------------------

    @property
    def background_polls(self) -> int:
        """How many background samples have been taken (0 without a background sampler)."""
        return self._sampler.polls if self._sampler is not None else 0

    def poll(self) -> None:
        """Take one sample now (what the background thread does every period).

        Raises:
            SensorError: the NVML read failed.
        """
        self._poll_fn()

    def _poll_counter(self) -> None:
        read = self._nvml.nvmlDeviceGetTotalEnergyConsumption
        before_s = self._clock()
        millijoules = self._call("nvmlDeviceGetTotalEnergyConsumption", read, self._handle)
        # NB: the call takes about 3 ms; its midpoint stands for the moment of the reading.
        self._counter_sample = (millijoules / 1e3, 0.5 * (before_s + self._clock()))  # mJ -> J
        self._latest_j = millijoules / 1e3
        self._last_error = None

    def _poll_power(self) -> None:
        power_w = self._call("power read", self._power_w)
        if not 0.0 <= power_w <= self._ceiling_w:
            # Garbage: never integrated. The next good sample bridges the gap, and the next
            # read reports the interval as implausible, so its window is left out.
            self._rejected = (
                f"{self.domain}: a power sample read {power_w:.6g} W, above the "
                f"{self._ceiling_w:g} W ceiling (twice the {self.power_limit_w or 0:g} W power "
                "limit, else 1 kW); the energy around it is unknown"
            )
            return
        t_s = self._clock()
        state = self._power_state
        energy_j = 0.0
        if state is not None:
            t0_s, p0_w, e0_j = state
            # Trapezoid: J = J + (W + W) / 2 x s
            energy_j = e0_j + 0.5 * (p0_w + power_w) * max(0.0, t_s - t0_s)
        self._power_state = (t_s, power_w, energy_j)  # one assignment: readers see it whole
        self._latest_j = energy_j

    def _on_error(self, exc: Exception) -> None:
        if not isinstance(exc, SensorError):
            exc = SensorError(f"{self.domain}: background NVML sample failed: {exc!r}")
        if self.kind is SensorKind.COUNTER:
            self._last_error = exc  # cleared by the next good sample
        else:
            self._missed = exc  # cleared by the next read_j(), which reports it

    def read_j(self) -> float:
        """Cumulative joules (counter: since driver load; integration: since creation).

        Raises:
            ReadingAnomaly: a power sample since the previous read could not be true (it was
                left out; the value returned with the anomaly is good to go on from).
            SensorError: the latest counter sample failed, or a power sample failed since the
                previous read (the integral has a gap).
        """
        if self.kind is SensorKind.COUNTER:
            if self._sampler is None:
                self._poll_counter()
                return self._latest_j
            if self._last_error is not None:
                raise SensorError(str(self._last_error)) from self._last_error
            return self._extrapolated_j()
        missed, self._missed = self._missed, None
        if self._sampler is None:
            self._poll_power()
        if missed is not None:
            raise SensorError(
                f"{self.domain}: a power sample failed since the previous read ({missed}); "
                "energy over that interval is unknown."
            ) from missed
        value_j = self._latest_j if self._sampler is None else self._integral_to_now_j()
        rejected, self._rejected = self._rejected, None
        if rejected is not None:
            raise ReadingAnomaly(ANOMALY_IMPLAUSIBLE, rejected, value_j)
        return value_j

    def _integral_to_now_j(self) -> float:
        """The background integral, brought forward from its last sample to now.

        The last sample is up to ``power_period_s`` old, independently at each edge of a
        window: up to 2 x 20 ms of a 2 s window (2 %) missing or doubled. Extending it at
        the sample's power costs no NVML call. Reads never go backwards: the next trapezoid
        may end below an extension made at a power that then fell, and is held there.
        """
        state = self._power_state
        if state is None:
            return self._latest_j
        t_s, power_w, energy_j = state
        age_s = self._clock() - t_s
        if age_s > 0:
            energy_j += power_w * age_s  # J = W x s
        energy_j = max(energy_j, self._read_floor_j)
        self._read_floor_j = energy_j
        return energy_j

    def _extrapolated_j(self) -> float:
        """The latest counter sample, brought forward to now with instant power.

        A background sample is up to ``counter_period_s`` old, and the two edges of a window
        would carry independent lags (about 2 % of a 2 s window's energy, see the class
        docstring). Adding instant power x the sample's age leaves only the counter's own
        update lag, as a direct read at the edge would, for a 2 us power read instead of a
        3 ms counter read. Without the instant-power field, or if the read fails, the sample
        is returned as it is. Reads never go backwards: a later sample below an earlier
        extrapolation (power fell meanwhile) is held at that extrapolation; but a counter that
        itself went back (a reset) is passed on as it is, so the meter sees and labels it
        instead of every later window reading 0 J until the counter climbs back.
        """
        energy_j, sampled_s = self._counter_sample
        if energy_j < self._floor_sample_j:
            self._read_floor_j = -math.inf  # the counter went back: no floor survives a reset
        self._floor_sample_j = energy_j
        if self._edge_power_w is not None:
            age_s = self._clock() - sampled_s
            # a failed power read leaves the sample alone: at most one period stale
            if age_s > 0:
                with contextlib.suppress(self._nvml.NVMLError):
                    power_w = self._edge_power_w()
                    if 0.0 <= power_w <= self._ceiling_w:  # garbage is never extrapolated
                        energy_j += power_w * age_s  # J = W x s
        energy_j = max(energy_j, self._read_floor_j)
        self._read_floor_j = energy_j
        return energy_j

    def peek_j(self) -> float | None:
        """The latest sample, without calling NVML."""
        return self._latest_j

    def close(self) -> None:
        """Stop the sampler and release NVML. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._sampler is not None:
            self._sampler.stop()
        if self._initialised:
            self._initialised = False
            # Releasing a library must not hide the error that led here.
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()

    # --- helpers --------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        return nvml_call(self._nvml, self.domain, what, fn, *args)

    def _optional(self, fn: Callable[..., Any] | None, *args: Any) -> Any:
        """Call an NVML query that older drivers or GPUs may lack; None when they do."""
        if fn is None:
            return None
        nvml = self._nvml
        try:
            return fn(*args)
        except nvml.NVMLError as exc:
            if is_nvml_code(nvml, exc, "NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_FUNCTION_NOT_FOUND"):
                return None
            raise translate_nvml_error(
                nvml, exc, getattr(fn, "__name__", "query"), self.domain
            ) from exc


def visible_gpu_count(nvml: ModuleType | None = None, visible_devices: str | None = None) -> int:
    """How many CUDA devices this process can see, without importing torch.

    Uses torch when it is already imported; else ``CUDA_VISIBLE_DEVICES`` and NVML's count.

    Raises:
        SensorUnavailable: no pynvml or no driver.
        SensorError: another NVML failure.
    """
    torch: Any = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return int(torch.cuda.device_count())
    nvml = nvml if nvml is not None else load_pynvml()
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        raise translate_nvml_error(nvml, exc, "initialisation (nvmlInit)", "gpu") from exc
    try:
        count = int(nvml.nvmlDeviceGetCount())
    except nvml.NVMLError as exc:
        raise translate_nvml_error(nvml, exc, "nvmlDeviceGetCount", "gpu") from exc
    finally:
        nvml.nvmlShutdown()
    if visible_devices is None:
        visible_devices = os.environ.get("CUDA_VISIBLE_DEVICES")
    entries = parse_visible_devices(visible_devices)
    if entries is None:
        return count
    for position, entry in enumerate(entries):
        if isinstance(entry, int) and entry >= count:
            return position  # CUDA stops at the first index that names no GPU
    return min(count, len(entries))
