"""Where the workloads run: a real CUDA device (``CudaBench``) or any object of the same shape.

A bench prepares a workload (allocates its tensors, counts one step with our own
:class:`~lightning_to_energy.counting.OpCounter`, captures a CUDA graph where the workload is
device-bound) and runs it ``n`` times. It also owns the clock, the synchronisation and the
energy sensors that :mod:`~lightning_to_energy.calibrate.schedule` reads through a
:class:`~lightning_to_energy.sensors.meter.Meter`. Tests use a simulated bench with an injected
clock (``tests/fakes/sim_gpu.py``), so the schedule and the fit run without a GPU.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from lightning_to_energy.calibration import HardwareInfo
from lightning_to_energy.counting import OpCounter
from lightning_to_energy.counting.cost_model import NumberFormat
from lightning_to_energy.counting.profile import StepProfile
from lightning_to_energy.hardware.roofline import op_time_s
from lightning_to_energy.hardware.specs import HardwareSpec
from lightning_to_energy.sensors.base import MEASURED_KINDS, Sensor, SensorKind, SensorUnavailable

from .workloads import Step, Workload

__all__ = [
    "CPU_MAX_ITERATION_S",
    "GRAPH_TARGET_S",
    "MAX_REPEAT",
    "Bench",
    "CalibrationError",
    "CpuBench",
    "CudaBench",
    "Prepared",
    "as_graph",
    "check_sensors",
    "count_step",
    "graph_repeat",
]

GRAPH_TARGET_S = 0.01
"""A device-bound workload is replayed as a graph of about this many seconds of kernels."""

MAX_REPEAT = 4000


class CalibrationError(ValueError):
    """A calibration cannot run as asked: what was expected, what was found, and the fix."""


@dataclass(frozen=True)
class Prepared:
    """A workload ready to time.

    Attributes:
        workload: what it is.
        profile: the counted cost of one iteration (``repeat`` steps for a graph).
        run: runs ``n`` iterations (queued: the meter synchronises at window edges).
        repeat: steps per iteration (a CUDA graph of ``repeat`` steps; 1 when eager).
    """

    workload: Workload
    profile: StepProfile
    run: Callable[[int], None]
    repeat: int = 1


class Bench(Protocol):
    """A device to calibrate: names, sensors, a clock and prepared workloads."""

    device_name: str
    spec: HardwareSpec
    sensors: Sequence[Sensor]

    def clock(self) -> float:
        """Seconds (monotonic)."""
        ...

    def sync(self) -> None:
        """Wait for queued device work."""
        ...

    def supports(self, fmt: NumberFormat) -> bool:
        """Whether the device's matrix units run ``fmt``."""
        ...

    def prepare(self, workload: Workload) -> Prepared:
        """Allocate, count and warm ``workload`` up."""
        ...

    def hardware_info(self) -> HardwareInfo:
        """What the calibration file is specific to (its fingerprint)."""
        ...

    def close(self) -> None:
        """Release the sensors and memory."""
        ...


def _no_phase(name: str) -> None:
    return None


def count_step(step: Step, workload: Workload | None = None) -> StepProfile:
    """One step of a workload counted by :class:`OpCounter`, with its phases (or the
    workload's own profile, where the counter cannot see its kernel)."""
    if workload is not None and workload.profile is not None:
        return workload.profile()
    counter = OpCounter()
    counter.start()
    try:
        step(counter.set_phase)
    finally:
        profile = counter.stop()
    return profile


def as_graph(profile: StepProfile, repeat: int) -> StepProfile:
    """``repeat`` steps replayed as one CUDA graph: the device runs every kernel, the host
    dispatches none (its phase kernels are 0; ``op_costs`` keep the device's kernels)."""
    scaled = profile.scaled(repeat)
    phases = {
        name: dataclasses.replace(totals, kernels=0) for name, totals in scaled.by_phase.items()
    }
    return dataclasses.replace(scaled, by_phase=phases)


def graph_repeat(profile: StepProfile, spec: HardwareSpec) -> int:
    """Steps per graph so that one replay takes about :data:`GRAPH_TARGET_S` on ``spec``."""
    step_s = math.fsum(op_time_s(cost, spec) * calls for cost, calls in profile.op_costs)
    if step_s <= 0:
        return 1
    return max(1, min(MAX_REPEAT, round(GRAPH_TARGET_S / step_s)))


class CudaBench:
    """One CUDA device, read through NVML's energy counter.

    The counter is read directly (no background sampler): the schedule waits for its
    updates at window edges, which a sample brought forward with instant power would hide.

    Args:
        device: ``"cuda"`` or ``"cuda:N"``.
        spec: the device's datasheet (default: detected from its name).

    Raises:
        CalibrationError: torch sees no such CUDA device, or NVML cannot read its energy.
    """

    def __init__(self, device: str = "cuda:0", spec: HardwareSpec | None = None) -> None:
        dev = torch.device(device)
        if dev.type != "cuda" or not torch.cuda.is_available():
            raise CalibrationError(
                f"expected a CUDA device, found {device!r} with torch.cuda.is_available() = "
                f"{torch.cuda.is_available()}. Fix: run on a machine with an NVIDIA GPU and a "
                "CUDA build of torch, and pass --device cuda:N."
            )
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise CalibrationError(
                f"expected a CUDA device index below {torch.cuda.device_count()}, found "
                f"{device!r}. Fix: pass --device cuda:0 (see nvidia-smi and "
                "CUDA_VISIBLE_DEVICES)."
            )
        self.device = torch.device("cuda", index)
        torch.cuda.set_device(self.device)
        torch.zeros(1, device=self.device)  # the CUDA context: base power includes it
        self.device_name = torch.cuda.get_device_name(self.device)
        if spec is None:
            from lightning_to_energy.hardware.detect import detect_hardware

            try:
                spec = detect_hardware(self.device)
            except ValueError as exc:  # a GPU the datasheet table does not list
                raise CalibrationError(str(exc)) from None
        self.spec = spec
        from lightning_to_energy.sensors.discover import discover

        try:
            found = discover(["nvml"], devices=[index], background=False)
        except SensorUnavailable as exc:
            raise CalibrationError(
                f"expected NVML to read the energy of {self.device_name}: {exc}"
            ) from exc
        self.sensors: Sequence[Sensor] = found.sensors
        self._discovery = found
        self._capability = torch.cuda.get_device_capability(self.device)

    def clock(self) -> float:
        return time.perf_counter()

    def sync(self) -> None:
        torch.cuda.synchronize(self.device)

    def supports(self, fmt: NumberFormat) -> bool:
        major, minor = self._capability
        if fmt is NumberFormat.FP8_E4M3:
            return (major, minor) >= (8, 9) and hasattr(torch, "_scaled_mm")
        if fmt in (NumberFormat.BF16, NumberFormat.TF32):
            return major >= 8
        return fmt in (NumberFormat.FP32, NumberFormat.FP16)

    def prepare(self, workload: Workload) -> Prepared:
        step = workload.build(self.device)
        step(_no_phase)  # a first call: cuBLAS / cuDNN choose their kernels outside the count
        profile = count_step(step, workload)
        if not workload.graph:

            def eager(n: int) -> None:
                for _ in range(n):
                    step(_no_phase)

            return Prepared(workload, profile, eager)
        repeat = graph_repeat(profile, self.spec)
        try:
            graph = self._capture(step, repeat)
        except RuntimeError as exc:
            # a step CUDA graphs refuse here: measured eagerly, its kernels dispatched by the
            # host and counted so (its device time may then hide behind the host's)
            warnings.warn(
                f"calibrate: {workload.name} could not be captured as a CUDA graph ({exc}); "
                "measured eagerly instead.",
                RuntimeWarning,
                stacklevel=2,
            )

            def eager_steps(n: int) -> None:
                for _ in range(n):
                    step(_no_phase)

            return Prepared(workload, profile, eager_steps)

        def replay(n: int) -> None:
            for _ in range(n):
                graph.replay()

        return Prepared(workload, as_graph(profile, repeat), replay, repeat)

    def _capture(self, step: Step, repeat: int) -> torch.cuda.CUDAGraph:
        graph = torch.cuda.CUDAGraph()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm-up on a side stream, as graph capture asks
            for _ in range(2):
                step(_no_phase)
        torch.cuda.current_stream(self.device).wait_stream(side)
        with torch.cuda.graph(graph):
            for _ in range(repeat):
                step(_no_phase)
        return graph

    def hardware_info(self) -> HardwareInfo:
        return HardwareInfo.detect()

    def close(self) -> None:
        self._discovery.close()
        torch.cuda.empty_cache()


def check_sensors(sensors: Sequence[Sensor], device_name: str) -> None:
    """Refuse sensors that do not measure: an estimate cannot calibrate.

    Raises:
        CalibrationError: no sensor, or one whose kind is not a hardware measurement.
    """
    if not sensors:
        raise CalibrationError(
            f"expected an energy sensor for {device_name}, found none. Fix: see "
            "`lightning-to-energy sensors` for why."
        )
    for sensor in sensors:
        kind = SensorKind(sensor.kind).value
        if kind not in MEASURED_KINDS and kind != SensorKind.FAKE.value:
            raise CalibrationError(
                f"expected measured energy ({', '.join(sorted(MEASURED_KINDS))}), found "
                f"{sensor.domain} of kind {kind!r} ({sensor.source}): an estimate cannot "
                "calibrate. Fix: calibrate a GPU (NVML) or a CPU with readable RAPL."
            )


CPU_MAX_ITERATION_S = 0.5
"""A CPU workload whose roofline iteration exceeds this is left out (8192^3 fp32 takes
seconds on a laptop, and a window must hold several iterations)."""


class CpuBench:
    """This machine's CPU, read through RAPL (package and DRAM zones).

    Every workload runs eagerly (no CUDA graphs: ``launch`` is left out) in fp32 or bf16, and
    workloads estimated at more than :data:`CPU_MAX_ITERATION_S` an iteration are left out.

    Args:
        powercap_root: the powercap tree (default ``$LTE_POWERCAP_ROOT`` or
            ``/sys/class/powercap``).
        spec: the CPU's spec (default: built from ``/proc/cpuinfo``).

    Raises:
        CalibrationError: RAPL is not readable here (the reason and the fix): the CPU-time
            estimate is a model, and an estimate cannot calibrate.
    """

    def __init__(self, powercap_root: str | None = None, spec: HardwareSpec | None = None) -> None:
        from lightning_to_energy.hardware.detect import detect_hardware
        from lightning_to_energy.sensors.rapl import rapl_sensors

        try:
            sensors, _ = rapl_sensors(powercap_root, background=False)
        except SensorUnavailable as exc:
            raise CalibrationError(
                f"expected RAPL to measure this CPU's energy: {exc} An estimate cannot "
                "calibrate (it is a model of CPU time, not a measurement)."
            ) from exc
        self.device = torch.device("cpu")
        self.spec = spec if spec is not None else detect_hardware("cpu")
        self.device_name = self.spec.name
        self.sensors: Sequence[Sensor] = tuple(sensors)

    def clock(self) -> float:
        return time.perf_counter()

    def sync(self) -> None:
        return None

    def supports(self, fmt: NumberFormat) -> bool:
        return fmt in (NumberFormat.FP32, NumberFormat.BF16)

    def fits(self, workload: Workload) -> bool:
        """Whether ``workload`` runs on a CPU in reasonable time (see the class docstring)."""
        if workload.graph and workload.group == "launch":
            return False
        profile = count_step(workload.build(torch.device("meta")), workload)
        step_s = math.fsum(op_time_s(c, self.spec) * n for c, n in profile.op_costs)
        return step_s <= CPU_MAX_ITERATION_S

    def prepare(self, workload: Workload) -> Prepared:
        step = workload.build(self.device)
        step(_no_phase)
        profile = count_step(step, workload)

        def eager(n: int) -> None:
            for _ in range(n):
                step(_no_phase)

        return Prepared(workload, profile, eager)

    def hardware_info(self) -> HardwareInfo:
        return HardwareInfo.detect()

    def close(self) -> None:
        for sensor in self.sensors:
            sensor.close()
