"""A device's physical energy parameters from designed microbenchmarks, in a few minutes.

``lightning-to-energy calibrate`` (or :func:`calibrate`) measures base power, matmuls per
number format at several sizes, memory-bound kernels, convolutions, empty launches and host
dispatch per phase (:mod:`.workloads`), each for one window of two seconds or more
(:mod:`.schedule`), and fits the physical step model's parameters to them (:mod:`.fit`).
Where the measurements run is a :class:`~.bench.Bench`: a CUDA device read through NVML, or a
simulated device in tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from .bench import Bench, CalibrationError, CpuBench, CudaBench, Prepared
from .fit import (
    Calibrated,
    designed_pins,
    fit_measurements,
    load_params,
    render,
    write_calibration,
)
from .schedule import MIN_WINDOW_S, Measured, Plan, Progress, plan, run_plan
from .workloads import GROUPS, Workload, all_workloads

DEFAULT_BUDGET_S = 150.0


def skip_reason(bench: Bench, workload: Workload) -> str | None:
    """Why ``bench`` cannot run ``workload``; None when it can."""
    if workload.fmt is not None and not bench.supports(workload.fmt):
        return f"this device does not run {workload.fmt.value}"
    fits = getattr(bench, "fits", None)
    if fits is not None and not fits(workload):
        return "too slow or not possible on this device"
    return None


def calibrate(
    bench: Bench,
    budget_s: float = DEFAULT_BUDGET_S,
    *,
    workloads: Sequence[Workload] | None = None,
    progress: Progress | None = None,
) -> Calibrated:
    """Measure ``bench`` within ``budget_s`` seconds and fit the physical parameters.

    Args:
        bench: the device (:class:`CudaBench`, or a simulated one).
        budget_s: seconds for the measurements (the fit takes a few more).
        workloads: what to measure (default :func:`all_workloads`); the parameters of the
            full list that these do not pin are reported as not identified.
        progress: called before each workload with (name, index, total).

    Raises:
        CalibrationError: the budget is too short, or the sensors do not measure energy.
    """
    from lightning_to_energy.model.physical_prior import prior_for

    chosen = tuple(all_workloads() if workloads is None else workloads)
    min_window_s = max([MIN_WINDOW_S, *(s.min_window_s for s in bench.sensors)])
    the_plan = plan(chosen, budget_s, lambda w: skip_reason(bench, w), min_window_s=min_window_s)
    started = bench.clock()
    measured, skipped = run_plan(bench, the_plan, progress)
    elapsed_s = bench.clock() - started
    pins = designed_pins(all_workloads()) | designed_pins(chosen)
    fit = fit_measurements(measured, prior_for(bench.spec), pins)
    return Calibrated(
        device_name=bench.device_name,
        hardware_key=bench.spec.key,
        hardware=bench.hardware_info(),
        plan=dataclasses.replace(the_plan, dropped=the_plan.dropped + skipped),
        measured=measured,
        fit=fit,
        pins=frozenset(pins),
        elapsed_s=elapsed_s,
    )


__all__ = [
    "DEFAULT_BUDGET_S",
    "GROUPS",
    "Bench",
    "Calibrated",
    "CalibrationError",
    "CpuBench",
    "CudaBench",
    "Measured",
    "Plan",
    "Prepared",
    "Workload",
    "all_workloads",
    "calibrate",
    "designed_pins",
    "fit_measurements",
    "load_params",
    "plan",
    "render",
    "run_plan",
    "skip_reason",
    "write_calibration",
]
