"""A simulated GPU for ``calibrate``: time and energy follow the physical step model.

Each workload's iteration is counted on the ``meta`` device (no data, no arithmetic) for the
spec's CUDA target (``counting_for``: TF32 flags and CUDA's optimizer paths apply), as a real
bench counts it on the device, and the simulated device takes
``predict_step(profile, truth)``'s time and energy for it: the contract's per-kernel model
with known true parameters. The energy sensor behaves like NVML's counter: it changes only
every ``period_s`` (100 ms), and each window's power is off by a random factor (``jitter``
of 1 to 3 %, drawn per window). The clock is a ``FakeClock`` (tests/fakes/clock.py) that
running a workload advances, so a 150 s calibration takes well under a second of real time.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable, Collection, Mapping

import torch

from fakes.clock import FakeClock
from lightning_to_energy.calibrate.bench import Prepared, as_graph, count_step, graph_repeat
from lightning_to_energy.calibrate.workloads import Workload
from lightning_to_energy.calibration import HardwareInfo
from lightning_to_energy.counting.cost_model import NumberFormat
from lightning_to_energy.counting.profile import StepProfile
from lightning_to_energy.counting.target import counting_for, resolve_target
from lightning_to_energy.hardware.specs import HardwareSpec
from lightning_to_energy.model.physical import PhysicalParams, energy_at, predict_step
from lightning_to_energy.sensors.base import SensorKind

_COUNTED: dict[str, StepProfile] = {}  # workload name -> its counted step (same on every run)

PREPARE_S = 0.3
"""Simulated seconds a workload's preparation takes (allocation, count, capture)."""

IDLE_STEP_S = {"idle": 0.02, "host-wait": 0.002}
"""The host's sleep per iteration of the energy-only workloads (as in workloads.py); the
repeated idle windows (``idle-2``, ...) sleep as ``idle`` does."""


def truth_around(
    prior: PhysicalParams, rng: random.Random, names: Collection[str], spread: float = 0.3
) -> PhysicalParams:
    """True parameters: those in ``names`` up to ``spread`` (30 %) away from ``prior``, each
    drawn uniformly and kept inside the parameter's physical range; the others equal to it
    (no workload measures them, so no fit could)."""
    values = {}
    for name, value in prior.flat().items():
        if name in names:
            low, high = prior.range_of(name)
            drawn = value * (1.0 + rng.uniform(-spread, spread))
            values[name] = min(max(drawn, low * 1.02), high * 0.98)
    return prior.with_values(values)


class SimCounter:
    """An NVML-like energy counter of a :class:`SimGpu`: steps of ``period_s``."""

    kind = SensorKind.COUNTER
    host_wide = False

    def __init__(self, gpu: SimGpu, period_s: float, min_window_s: float) -> None:
        self.domain = "gpu:0"
        self.source = "simulated NVML energy counter"
        self.update_period_s = period_s
        self.min_window_s = min_window_s
        # NVML's enforced limit: a truth 30 % off the priors can model more than the 1 kW
        # default ceiling of a reading (ramps at +30 % draw, +30 % J/FLOP), never twice this
        self.power_limit_w = gpu.spec.tdp_w
        self._gpu = gpu
        self.reads = 0

    def read_j(self) -> float:
        self.reads += 1
        now = self._gpu.clock()
        tick = math.floor((now - self._gpu.phase_s) / self.update_period_s)
        return self._gpu.energy_at_s(self._gpu.phase_s + tick * self.update_period_s)

    def close(self) -> None:
        return None


class SimGpu:
    """A bench whose device follows the physical model with parameters ``truth``.

    Args:
        truth: the device's true parameters.
        spec: the datasheet it reports (for graph sizes and priors).
        seed: seeds the per-window jitter.
        jitter: (low, high): each window's power is off by a factor drawn uniformly within
            plus or minus ``a``, with ``a`` itself drawn in (low, high) per window.
        period_s: the counter's update period.
        formats: the matrix formats the device runs (default all but fp64).
    """

    def __init__(
        self,
        truth: PhysicalParams,
        spec: HardwareSpec,
        *,
        seed: int = 0,
        jitter: tuple[float, float] = (0.01, 0.03),
        period_s: float = 0.1,
        formats: frozenset[NumberFormat] | None = None,
    ) -> None:
        self.truth = truth
        self.spec = spec
        self.device_name = f"Simulated {spec.name}"
        self.clock = FakeClock(1000.0)
        self._rng = random.Random(seed)
        self._jitter = jitter
        self.phase_s = self._rng.uniform(0.0, period_s)  # the counter's ticks are not ours
        self._formats = formats
        self._t = [self.clock()]  # segment ends, seconds
        self._e = [0.0]  # true cumulative joules at those ends
        self.sensors = (SimCounter(self, period_s, 2.0),)
        self.prepared: list[str] = []
        self._factor = 1.0

    # --- the bench protocol ---------------------------------------------------------------

    def sync(self) -> None:
        return None

    def supports(self, fmt: NumberFormat) -> bool:
        if self._formats is None:
            return fmt is not NumberFormat.FP64
        return fmt in self._formats

    def prepare(self, workload: Workload) -> Prepared:
        self.prepared.append(workload.name)
        self._factor = 1.0
        self._advance(PREPARE_S, self.truth.base_w)
        profile = _COUNTED.get(workload.name)
        if profile is None:  # counting on meta is the slow part: once per test session
            # counted as CUDA runs it (TF32 flags read, foreach optimizers) on meta tensors
            with counting_for(resolve_target(self.spec.key)):
                profile = count_step(workload.build(torch.device("meta")), workload)
            _COUNTED[workload.name] = profile
        repeat = 1
        if workload.graph:
            repeat = graph_repeat(profile, self.spec)
            profile = as_graph(profile, repeat)
        if workload.energy_only:
            repeated = workload.name.startswith("idle-")  # idle-2, ...: sleeps as idle does
            time_s = IDLE_STEP_S["idle" if repeated else workload.name]
            energy_j = energy_at(profile, self.truth, time_s).energy_j
        else:
            prediction = predict_step(profile, self.truth)
            time_s, energy_j = prediction.time_s, prediction.energy_j
        low, high = self._jitter
        a = self._rng.uniform(low, high)
        self._factor = 1.0 + self._rng.uniform(-a, a)  # this window's power is off by it
        power_w = energy_j / time_s * self._factor

        def run(n: int) -> None:
            self._advance(n * time_s, power_w)

        return Prepared(workload, profile, run, repeat)

    def hardware_info(self) -> HardwareInfo:
        return HardwareInfo(gpus=(self.device_name,), driver_version="simulated")

    def close(self) -> None:
        return None

    # --- the energy timeline --------------------------------------------------------------

    def _advance(self, seconds: float, power_w: float) -> None:
        self.clock.advance(seconds)
        self._t.append(self.clock())
        self._e.append(self._e[-1] + power_w * seconds)  # J = W x s

    def energy_at_s(self, t_s: float) -> float:
        """True cumulative joules at ``t_s`` (linear within each segment)."""
        i = bisect.bisect_left(self._t, t_s)
        if i == 0:
            return 0.0
        if i >= len(self._t):
            return self._e[-1]
        t0, t1, e0, e1 = self._t[i - 1], self._t[i], self._e[i - 1], self._e[i]
        return e0 + (e1 - e0) * (t_s - t0) / (t1 - t0) if t1 > t0 else e1


def relative_errors(
    fitted: Mapping[str, float], truth: Mapping[str, float], names: Callable[[str], bool]
) -> dict[str, float]:
    """|fitted / true - 1| for the names ``names`` accepts."""
    return {n: abs(fitted[n] / truth[n] - 1.0) for n in fitted if names(n)}
