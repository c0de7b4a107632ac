"""Roofline duration estimate: how long a counted step takes at the hardware's peaks.

Each distinct kernel of a :class:`~lightning_to_energy.counting.StepProfile` (its ``op_costs``)
takes the largest of three times: its arithmetic at the peak rate of the unit and number format
it runs in, its bytes at the peak memory bandwidth, and its kernel launches at a fixed cost
each. The step's estimate is the sum over kernels. No measurement is needed, so the estimate
can stand in for duration (static power x time) when predicting a run before it starts.

Peaks come from :mod:`lightning_to_energy.hardware.specs`.

NB: dense peaks are rarely reached; the estimate is a feature for the energy regression (its
coefficient absorbs the gap to real throughput), not a prediction of wall time by itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from lightning_to_energy.counting.cost_model import AluOp
from lightning_to_energy.counting.profile import StepProfile
from lightning_to_energy.counting.registry import OpCost
from lightning_to_energy.hardware.specs import HardwareSpec

__all__ = [
    "OP_FLOPS",
    "RooflineBreakdown",
    "compute_time_s",
    "memory_time_s",
    "module_time_shares",
    "op_time_s",
    "roofline_breakdown",
    "roofline_s",
]

OP_FLOPS: Mapping[AluOp, float] = MappingProxyType(
    {
        # One issue slot of the FMA pipe. Peak FLOP/s count an FMA as 2 FLOPs, so one slot is
        # worth 2 FLOPs of peak time, and an add, a multiply or a compare, which take the same
        # slot as an FMA (CUDA C++ Programming Guide, "Arithmetic Instructions": 32-bit float
        # add, multiply and multiply-add all run at 128 results per SM per cycle on cc 9.0; on
        # x86 add, mul and FMA share the same two ports), cost 2 as well.
        AluOp.FMA: 2.0,
        AluOp.ADD: 2.0,
        AluOp.MUL: 2.0,
        AluOp.CMP: 2.0,
        # Special functions: 8 slots. The GPU's special-function units return 16 reciprocals,
        # reciprocal square roots or exp2s per SM per cycle against 128 fp32 FMAs (same
        # table), i.e. 8 FMA slots each, and IEEE division and square root (torch builds
        # without fast math) add a Newton step of FMAs; exp adds range-reduction FMAs. On
        # x86, vdivps / vsqrtps ymm issue once per 5 to 6 cycles against 2 FMAs per cycle
        # (Agner Fog, instruction tables), and a vectorised exp is about 10 FMAs.
        AluOp.DIV: 16.0,
        AluOp.SQRT: 16.0,
        AluOp.EXP: 16.0,
    }
)
"""Peak-FLOP equivalents of one scalar operation of each class (an FMA is 2)."""


def compute_time_s(cost: OpCost, spec: HardwareSpec) -> float:
    """Seconds of ``cost``'s arithmetic at peak: sum of count x OP_FLOPS / peak(unit, format)."""
    return math.fsum(
        n * OP_FLOPS[op] / spec.peak_flops(unit, fmt) for (op, fmt, unit), n in cost.ops.items()
    )


def memory_time_s(cost: OpCost, spec: HardwareSpec) -> float:
    """Seconds of ``cost``'s bytes at peak bandwidth: (read + written) / bandwidth."""
    return (cost.bytes_read + cost.bytes_written) / spec.memory_bw_bytes_s


def op_time_s(cost: OpCost, spec: HardwareSpec) -> float:
    """Roofline seconds of one call: max(compute time, memory time, kernels x launch_s)."""
    return max(compute_time_s(cost, spec), memory_time_s(cost, spec), cost.kernels * spec.launch_s)


@dataclass(frozen=True)
class RooflineBreakdown:
    """A step's roofline time split by what bounds each op.

    Args:
        total_s: the roofline estimate (sum over ops of the largest of the three times).
        compute_bound_s: seconds of ops whose arithmetic takes longest.
        memory_bound_s: seconds of ops whose bytes take longest.
        launch_bound_s: seconds of ops whose launches take longest (ties go to compute, then
            memory).
    """

    total_s: float
    compute_bound_s: float
    memory_bound_s: float
    launch_bound_s: float


def _check_profile(profile: StepProfile) -> None:
    if not profile.op_costs and (profile.kernels or profile.bytes or profile.counts):
        raise ValueError(
            "roofline: expected a profile with op_costs (per-kernel costs, filled by the "
            "counter); found one with work but no op_costs (built by hand or by an older "
            "version); fix: count the step with lightning_to_energy.counting.profile(...) or "
            "OpCounter"
        )


def roofline_breakdown(profile: StepProfile, spec: HardwareSpec) -> RooflineBreakdown:
    """The roofline time of ``profile`` on ``spec``, split by bound (see RooflineBreakdown).

    Raises:
        ValueError: the profile has work but no ``op_costs``.
    """
    _check_profile(profile)
    compute, memory, launch = [], [], []
    for cost, calls in profile.op_costs:
        c, m, k = (
            compute_time_s(cost, spec),
            memory_time_s(cost, spec),
            cost.kernels * spec.launch_s,
        )
        if c >= m and c >= k:
            compute.append(c * calls)
        elif m >= k:
            memory.append(m * calls)
        else:
            launch.append(k * calls)
    c_s, m_s, k_s = math.fsum(compute), math.fsum(memory), math.fsum(launch)
    return RooflineBreakdown(
        total_s=math.fsum(compute + memory + launch),
        compute_bound_s=c_s,
        memory_bound_s=m_s,
        launch_bound_s=k_s,
    )


def roofline_s(profile: StepProfile, spec: HardwareSpec) -> float:
    """Roofline seconds of ``profile`` on ``spec``: sum of op_time_s x calls over op_costs.

    Raises:
        ValueError: the profile has work but no ``op_costs``.
    """
    _check_profile(profile)
    return math.fsum(op_time_s(cost, spec) * calls for cost, calls in profile.op_costs)


def module_time_shares(profile: StepProfile, spec: HardwareSpec) -> dict[str, float]:
    """Each module's share of the step's roofline time on ``spec`` (shares sum to 1).

    A module's time is the longest of its FLOPs at the step's mean compute rate, its bytes at
    peak bandwidth and its kernels' launches. NB: the step's op costs are not kept per module,
    so a module's FLOPs run at the step's mean rate (seconds of arithmetic per FLOP over the
    whole step), not at its own formats' rates; element-wise modules (no FLOPs) are timed by
    their bytes and launches, which is what bounds them.

    Returns:
        Module name to share; empty when the profile has no time at all (or no op costs).
    """
    if not profile.op_costs:
        return {}
    compute_s = math.fsum(compute_time_s(cost, spec) * calls for cost, calls in profile.op_costs)
    s_per_flop = compute_s / profile.flops if profile.flops > 0 else 0.0
    times = {
        name: max(
            m.flops * s_per_flop,
            (m.bytes_read + m.bytes_written) / spec.memory_bw_bytes_s,
            m.kernels * spec.launch_s,
        )
        for name, m in profile.by_module.items()
    }
    total = math.fsum(times.values())
    return {name: t / total for name, t in times.items()} if total > 0 else {}
