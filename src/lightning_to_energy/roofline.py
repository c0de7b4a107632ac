"""``lightning_to_energy.roofline``: a documented import path, kept; hardware specs and the
roofline estimate live in :mod:`lightning_to_energy.hardware.specs`,
:mod:`lightning_to_energy.hardware.roofline`, :mod:`lightning_to_energy.hardware.detect`.
"""

from __future__ import annotations

from lightning_to_energy.hardware.detect import (
    detect_hardware,
    resolve_device,
    resolve_spec,
    spec_for,
)
from lightning_to_energy.hardware.roofline import (
    OP_FLOPS,
    RooflineBreakdown,
    compute_time_s,
    memory_time_s,
    op_time_s,
    roofline_breakdown,
    roofline_s,
)
from lightning_to_energy.hardware.specs import (
    CPU_CHANNEL_BW_BYTES_S,
    CPU_CHANNELS,
    CPU_GHZ,
    CPU_LAUNCH_S,
    GPU_LAUNCH_S,
    HOW_TO_ADD,
    HardwareSpec,
    cpu_from_cpuinfo,
    cpu_spec,
    find_hardware,
    hardware_table,
    is_registered,
    load_hardware,
    match_hardware,
    register_hardware,
)

__all__ = [
    "CPU_CHANNELS",
    "CPU_CHANNEL_BW_BYTES_S",
    "CPU_GHZ",
    "CPU_LAUNCH_S",
    "GPU_LAUNCH_S",
    "HOW_TO_ADD",
    "OP_FLOPS",
    "HardwareSpec",
    "RooflineBreakdown",
    "compute_time_s",
    "cpu_from_cpuinfo",
    "cpu_spec",
    "detect_hardware",
    "find_hardware",
    "hardware_table",
    "is_registered",
    "load_hardware",
    "match_hardware",
    "memory_time_s",
    "op_time_s",
    "register_hardware",
    "resolve_device",
    "resolve_spec",
    "roofline_breakdown",
    "roofline_s",
    "spec_for",
]
