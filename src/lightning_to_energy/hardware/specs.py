"""Hardware specs: peak rates per device, the datasheet table and hardware files.

:class:`HardwareSpec` holds one device's peaks (matrix and vector FLOP/s per number format,
memory bandwidth, launch cost). The table of common GPUs comes from vendor datasheets (dense
figures) and a CPU entry built from the machine; users add or override entries with
:func:`register_hardware` or :func:`load_hardware`. Every figure and its source are in
``docs/roofline.md``; the estimate itself is :mod:`lightning_to_energy.hardware.roofline`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from lightning_to_energy._files import check_toml_or_json_path, load_toml_or_json
from lightning_to_energy.counting.cost_model import NumberFormat, Unit, format_from_str
from lightning_to_energy.hardware.cpuinfo import read_cpuinfo

__all__ = [
    "CPU_CHANNELS",
    "CPU_CHANNEL_BW_BYTES_S",
    "CPU_GHZ",
    "CPU_LAUNCH_S",
    "GPU_LAUNCH_S",
    "HOW_TO_ADD",
    "HardwareSpec",
    "cpu_from_cpuinfo",
    "cpu_spec",
    "find_hardware",
    "hardware_table",
    "is_registered",
    "load_hardware",
    "match_hardware",
    "register_hardware",
]

_T = 1e12  # tera: datasheets quote TFLOPS / TOPS
_G = 1e9

GPU_LAUNCH_S = 5e-6
"""Fixed cost per GPU kernel: ``cudaLaunchKernel`` plus PyTorch's eager dispatch of one aten op.

NB: a rough floor; eager training loops often see 10 to 20 us per op on the host.
"""

CPU_LAUNCH_S = 5e-6
"""Fixed cost per CPU kernel: PyTorch's eager dispatch of one aten op (a few microseconds)."""

CPU_GHZ = 2.5
"""Default all-core clock of a CPU whose model name does not state one (GHz)."""

CPU_CHANNEL_BW_BYTES_S = 19.2e9
"""Peak bandwidth of one 64-bit DDR4-2400 channel: 2400 MT/s x 8 bytes."""

CPU_CHANNELS = 2
"""Default memory channels of a CPU (a desktop or laptop; servers have 6 to 12)."""

# Where a (unit, format) missing from a spec takes its peak from, and the factor applied.
# Every chain ends at (VECTOR, FP32), which every spec must list.
_FALLBACK: dict[tuple[Unit, NumberFormat], tuple[tuple[Unit, NumberFormat], float]] = {
    # matrix formats without a matrix rate of their own
    (Unit.MATRIX, NumberFormat.TF32): ((Unit.MATRIX, NumberFormat.FP32), 1.0),  # no TF32 cores
    (Unit.MATRIX, NumberFormat.FP8_E5M2): ((Unit.MATRIX, NumberFormat.FP8_E4M3), 1.0),
    # NB: without fp8 tensor cores the fp8 inputs are taken as upcast to fp16
    (Unit.MATRIX, NumberFormat.FP8_E4M3): ((Unit.MATRIX, NumberFormat.FP16), 1.0),
    (Unit.MATRIX, NumberFormat.BF16): ((Unit.MATRIX, NumberFormat.FP16), 1.0),
    # vector formats
    (Unit.VECTOR, NumberFormat.TF32): ((Unit.VECTOR, NumberFormat.FP32), 1.0),
    (Unit.VECTOR, NumberFormat.FP8_E4M3): ((Unit.VECTOR, NumberFormat.FP16), 1.0),
    (Unit.VECTOR, NumberFormat.FP8_E5M2): ((Unit.VECTOR, NumberFormat.FP16), 1.0),
    (Unit.VECTOR, NumberFormat.BF16): ((Unit.VECTOR, NumberFormat.FP16), 1.0),
    (Unit.VECTOR, NumberFormat.FP16): ((Unit.VECTOR, NumberFormat.FP32), 1.0),
    # NB: datacenter GPUs and CPU SIMD run fp64 at half the fp32 rate; consumer GPUs at 1/32
    # or 1/64, so the built-in entries list fp64.
    (Unit.VECTOR, NumberFormat.FP64): ((Unit.VECTOR, NumberFormat.FP32), 0.5),
    (Unit.VECTOR, NumberFormat.BOOL): ((Unit.VECTOR, NumberFormat.INT8), 1.0),
    (Unit.VECTOR, NumberFormat.INT8): ((Unit.VECTOR, NumberFormat.INT16), 1.0),
    (Unit.VECTOR, NumberFormat.INT16): ((Unit.VECTOR, NumberFormat.INT32), 1.0),
    # NB: 64-bit integers are emulated with 32-bit instructions (an add is 2, a multiply ~4)
    (Unit.VECTOR, NumberFormat.INT64): ((Unit.VECTOR, NumberFormat.INT32), 0.25),
    # CUDA cc 8.6 to 9.0 issue 64 int32 against 128 fp32 results per SM per cycle
    (Unit.VECTOR, NumberFormat.INT32): ((Unit.VECTOR, NumberFormat.FP32), 0.5),
}


def _fallback(unit: Unit, fmt: NumberFormat) -> tuple[tuple[Unit, NumberFormat], float]:
    found = _FALLBACK.get((unit, fmt))
    if found is not None:
        return found
    # any other matrix format (fp32, fp64, integers...) runs on the vector units
    return (Unit.VECTOR, fmt), 1.0


_KINDS = ("gpu", "cpu")


@dataclass(frozen=True)
class HardwareSpec:
    """Peak rates of one device, for the roofline estimate.

    Args:
        key: short identifier, e.g. ``"h100-sxm"``.
        name: product name.
        kind: ``"gpu"`` or ``"cpu"``.
        matrix_flops: dense peak FLOP/s (an FMA is 2 FLOPs) of matmul / convolution
            inner-product work per format, as the hardware really runs it: fp32 matmuls without
            TF32 run on the vector units at their fp32 rate. Keys are ``NumberFormat`` or
            their names (``"bf16"``).
        vector_flops: peak element-wise FLOP/s per format; must list ``fp32``.
        memory_bw_bytes_s: peak memory bandwidth, bytes per second.
        launch_s: fixed cost per kernel, seconds.
        idle_power_w: power when idle, watts (None if unknown).
        tdp_w: board power limit, watts (None if unknown).
        match: lower-case substrings of device names that identify this device.
        source: where the figures come from.
        compute_capability: CUDA compute capability ``(major, minor)`` of an NVIDIA GPU
            (``(9, 0)`` for Hopper), from NVIDIA's CUDA GPUs table; None for other devices.
            Counting for a target reads it where PyTorch's dispatch depends on it (which fused
            attention kernel runs).

    A (unit, format) missing from the spec takes a documented neighbour's rate (see
    :meth:`peak_flops`), never zero.

    Raises:
        ValueError: a field is missing or out of range (the message names it and the fix).
    """

    key: str
    name: str
    kind: str
    matrix_flops: Mapping[NumberFormat, float]
    vector_flops: Mapping[NumberFormat, float]
    memory_bw_bytes_s: float
    launch_s: float
    idle_power_w: float | None = None
    tdp_w: float | None = None
    match: tuple[str, ...] = ()
    source: str = ""
    compute_capability: tuple[int, int] | None = None
    _peaks: dict[tuple[Unit, NumberFormat], float] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        where = f"hardware {self.key!r}"
        if not isinstance(self.key, str) or not self.key.strip():
            raise ValueError(
                f"hardware spec: expected a non-empty string key; found {self.key!r}; "
                'fix: give a short identifier such as "my-gpu"'
            )
        if self.kind not in _KINDS:
            raise ValueError(
                f"{where}: expected kind in {_KINDS}; found {self.kind!r}; fix: use one of those"
            )
        object.__setattr__(self, "matrix_flops", _rates(self.matrix_flops, where, "matrix_flops"))
        object.__setattr__(self, "vector_flops", _rates(self.vector_flops, where, "vector_flops"))
        if NumberFormat.FP32 not in self.vector_flops:
            raise ValueError(
                f"{where}: expected vector_flops to list fp32 (every missing format falls back "
                f"to it); found {sorted(f.value for f in self.vector_flops)}; fix: add fp32"
            )
        _positive(self.memory_bw_bytes_s, where, "memory_bw_bytes_s")
        _positive(self.launch_s, where, "launch_s", zero_ok=True)
        for name in ("idle_power_w", "tdp_w"):
            if getattr(self, name) is not None:
                _positive(getattr(self, name), where, name, zero_ok=True)
        if isinstance(self.match, str) or not all(isinstance(m, str) for m in self.match):
            raise ValueError(
                f"{where}: expected match to be a list of strings; found {self.match!r}; "
                'fix: write match = ["h100 pcie"]'
            )
        object.__setattr__(self, "match", tuple(m.strip().lower() for m in self.match if m))
        cc = self.compute_capability
        if cc is not None:
            ok = (
                isinstance(cc, (tuple, list))
                and len(cc) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in cc)
            )
            if not ok:
                raise ValueError(
                    f"{where}: expected compute_capability as two non-negative integers "
                    f"(major, minor); found {cc!r}; fix: write compute_capability = [9, 0]"
                )
            object.__setattr__(self, "compute_capability", (int(cc[0]), int(cc[1])))

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # The rate tables are read-only views (MappingProxyType), which pickle and deepcopy
        # refuse: rebuild the spec from plain dicts. ddp_spawn pickles every callback, and a
        # tracker holds the spec of its device.
        return (
            HardwareSpec,
            (
                self.key,
                self.name,
                self.kind,
                dict(self.matrix_flops),
                dict(self.vector_flops),
                self.memory_bw_bytes_s,
                self.launch_s,
                self.idle_power_w,
                self.tdp_w,
                self.match,
                self.source,
                self.compute_capability,
            ),
        )

    def peak_flops(self, unit: Unit, fmt: NumberFormat) -> float:
        """Peak FLOP/s of ``fmt`` work on ``unit``, following the fallbacks where not listed.

        A matrix format without a matrix rate: TF32 -> FP32, fp8 e5m2 -> e4m3 -> FP16,
        BF16 -> FP16, else the same format on the vector units. A vector format without a
        rate: fp8 and BF16 -> FP16 -> FP32; FP64 -> FP32 x 1/2; bool -> int8 -> int16 ->
        int32 -> FP32 x 1/2; int64 -> int32 x 1/4.
        """
        peak = self._peaks.get((unit, fmt))
        if peak is None:
            peak = self._peaks[(unit, fmt)] = self._resolve(unit, fmt)
        return peak

    def _resolve(self, unit: Unit, fmt: NumberFormat) -> float:
        factor = 1.0
        for _ in range(2 * len(NumberFormat) + 2):  # every chain is shorter (ends at fp32)
            table = self.matrix_flops if unit is Unit.MATRIX else self.vector_flops
            if fmt in table:
                return table[fmt] * factor
            (unit, fmt), k = _fallback(unit, fmt)
            factor *= k
        raise AssertionError(f"no fallback chain ends for {unit}, {fmt}")  # pragma: no cover

    def to_dict(self) -> dict[str, Any]:
        """The spec as one entry of a hardware file (see :func:`load_hardware`)."""
        d: dict[str, Any] = {
            "key": self.key,
            "name": self.name,
            "kind": self.kind,
            "memory_bw_bytes_s": self.memory_bw_bytes_s,
            "launch_s": self.launch_s,
            "match": list(self.match),
            "source": self.source,
            "matrix_flops": {f.value: v for f, v in self.matrix_flops.items()},
            "vector_flops": {f.value: v for f, v in self.vector_flops.items()},
        }
        # TOML has no null: leave unknown powers out
        for name in ("idle_power_w", "tdp_w"):
            if getattr(self, name) is not None:
                d[name] = getattr(self, name)
        if self.compute_capability is not None:
            d["compute_capability"] = list(self.compute_capability)
        return d


def _rates(rates: Any, where: str, name: str) -> Mapping[NumberFormat, float]:
    if not isinstance(rates, Mapping):
        raise ValueError(
            f"{where}: expected {name} to be a table of format -> FLOP/s; found {rates!r}; "
            f"fix: write e.g. {name} = {{ fp32 = 6.7e13, bf16 = 9.9e14 }}"
        )
    out = {}
    for fmt, value in rates.items():
        try:
            parsed = format_from_str(fmt)
        except ValueError as exc:
            raise ValueError(f"{where}, {name}: {exc}") from None
        out[parsed] = _positive(value, where, f"{name}.{parsed.value}")
    return MappingProxyType(out)


def _positive(value: Any, where: str, name: str, *, zero_ok: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not zero_ok):
        expected = "a finite number >= 0" if zero_ok else "a positive finite number"
        raise ValueError(
            f"{where}: expected {name} to be {expected} (SI units: FLOP/s, bytes/s, s, W); "
            f"found {value!r}; fix: give {expected}"
        )
    return float(value)


# --- the built-in table ------------------------------------------------------------------------


def _gpu(
    key: str,
    name: str,
    *,
    fp32: float,
    fp64: float,
    fp16: float,
    bf16: float,
    int32: float,
    matrix: Mapping[NumberFormat, float],
    bw_gb_s: float,
    tdp_w: float | None,
    match: tuple[str, ...],
    source: str,
    idle_power_w: float | None = None,
    compute_capability: tuple[int, int] | None = None,
) -> HardwareSpec:
    """A GPU spec from datasheet figures in TFLOPS (dense) and GB/s."""
    vector = {
        NumberFormat.FP64: fp64,
        NumberFormat.FP32: fp32,
        NumberFormat.FP16: fp16,
        NumberFormat.BF16: bf16,
        NumberFormat.INT32: int32,
    }
    # fp32 matmuls without TF32 run on the CUDA cores at the fp32 rate
    matrix_all = {NumberFormat.FP32: fp32, **matrix}
    return HardwareSpec(
        key=key,
        name=name,
        kind="gpu",
        matrix_flops={f: v * _T for f, v in matrix_all.items()},
        vector_flops={f: v * _T for f, v in vector.items()},
        memory_bw_bytes_s=bw_gb_s * _G,
        launch_s=GPU_LAUNCH_S,
        idle_power_w=idle_power_w,
        tdp_w=tdp_w,
        match=match,
        source=source,
        compute_capability=compute_capability,
    )


_F = NumberFormat
_HALVED = "sparsity figures (marked *) halved to dense"


def _hopper(
    fp64: float, fp64_tc: float, fp32: float, tf32: float, bf16: float, fp8: float
) -> dict[str, Any]:
    """Hopper figures: non-tensor fp16/bf16 at 2x fp32 (packed), int32 at half fp32."""
    return {
        "fp32": fp32,
        "fp64": fp64,
        "fp16": 2 * fp32,
        "bf16": 2 * fp32,
        "int32": fp32 / 2,
        "matrix": {
            _F.FP64: fp64_tc,
            _F.TF32: tf32,
            _F.BF16: bf16,
            _F.FP16: bf16,
            _F.FP8_E4M3: fp8,
            _F.FP8_E5M2: fp8,
            _F.INT8: fp8,  # INT8 TOPS equal the FP8 TFLOPS on Hopper
        },
    }


def _a100(bw_gb_s: float, tdp_w: float) -> dict[str, Any]:
    """A100 figures (same for SXM and PCIe): fp16 vector 78, bf16 vector 39 (whitepaper)."""
    return {
        "fp32": 19.5,
        "fp64": 9.7,
        "fp16": 78.0,
        "bf16": 39.0,
        "int32": 19.5,  # GA100: 64 INT32 and 64 FP32 lanes per SM
        "matrix": {_F.FP64: 19.5, _F.TF32: 156.0, _F.BF16: 312.0, _F.FP16: 312.0, _F.INT8: 624.0},
        "bw_gb_s": bw_gb_s,
        "tdp_w": tdp_w,
    }


_H100_SRC = "NVIDIA H100 Tensor Core GPU datasheet; " + _HALVED
_H200_SRC = "NVIDIA H200 Tensor Core GPU datasheet; " + _HALVED
_A100_SRC = "NVIDIA A100 Tensor Core GPU datasheet and A100 architecture whitepaper (dense)"
_V100_SRC = "NVIDIA Tesla V100 datasheet; bf16 has no tensor cores on Volta (fp32 rate)"


def _builtin_specs() -> list[HardwareSpec]:
    return [
        _gpu(
            "h100-sxm",
            "NVIDIA H100 SXM5 80GB",
            compute_capability=(9, 0),
            **_hopper(fp64=34, fp64_tc=67, fp32=67, tf32=494.5, bf16=989.5, fp8=1979),
            bw_gb_s=3350,
            tdp_w=700,
            # measured with a process attached on an H100 80GB HBM3 for this project
            idle_power_w=126,
            match=("h100 80gb hbm3", "h100 sxm", "h100-sxm", "h100 sxm5", "h100"),
            source=_H100_SRC + "; idle power measured on one H100 80GB HBM3",
        ),
        _gpu(
            "h100-pcie",
            "NVIDIA H100 PCIe 80GB",
            compute_capability=(9, 0),
            **_hopper(fp64=26, fp64_tc=51, fp32=51, tf32=378, bf16=756.5, fp8=1513),
            bw_gb_s=2000,
            tdp_w=350,
            match=("h100 pcie", "h100-pcie"),
            source=_H100_SRC,
        ),
        _gpu(
            "h100-nvl",
            "NVIDIA H100 NVL 94GB",
            compute_capability=(9, 0),
            **_hopper(fp64=30, fp64_tc=60, fp32=60, tf32=417.5, bf16=835.5, fp8=1670.5),
            bw_gb_s=3900,
            tdp_w=400,
            match=("h100 nvl", "h100-nvl"),
            source=_H100_SRC,
        ),
        _gpu(
            "h200",
            "NVIDIA H200 SXM 141GB",
            compute_capability=(9, 0),
            **_hopper(fp64=34, fp64_tc=67, fp32=67, tf32=494.5, bf16=989.5, fp8=1979),
            bw_gb_s=4800,
            tdp_w=700,
            match=("h200", "h200 sxm", "h200-sxm"),
            source=_H200_SRC,
        ),
        _gpu(
            "h200-nvl",
            "NVIDIA H200 NVL 141GB",
            compute_capability=(9, 0),
            **_hopper(fp64=30, fp64_tc=60, fp32=60, tf32=417.5, bf16=835.5, fp8=1670.5),
            bw_gb_s=4800,
            tdp_w=600,
            match=("h200 nvl", "h200-nvl"),
            source=_H200_SRC,
        ),
        _gpu(
            "a100-sxm-80gb",
            "NVIDIA A100 SXM4 80GB",
            compute_capability=(8, 0),
            **_a100(bw_gb_s=2039, tdp_w=400),
            match=("a100-sxm4-80gb", "a100 sxm4 80gb", "a100-sxm-80gb", "a100"),
            source=_A100_SRC,
        ),
        _gpu(
            "a100-sxm-40gb",
            "NVIDIA A100 SXM4 40GB",
            compute_capability=(8, 0),
            **_a100(bw_gb_s=1555, tdp_w=400),
            match=("a100-sxm4-40gb", "a100 sxm4 40gb", "a100-sxm-40gb"),
            source=_A100_SRC,
        ),
        _gpu(
            "a100-pcie-80gb",
            "NVIDIA A100 PCIe 80GB",
            compute_capability=(8, 0),
            **_a100(bw_gb_s=1935, tdp_w=300),
            match=("a100 80gb pcie", "a100-pcie-80gb", "a100 pcie 80gb"),
            source=_A100_SRC,
        ),
        _gpu(
            "a100-pcie-40gb",
            "NVIDIA A100 PCIe 40GB",
            compute_capability=(8, 0),
            **_a100(bw_gb_s=1555, tdp_w=250),
            match=("a100-pcie-40gb", "a100 pcie 40gb", "a100-pcie", "a100 pcie"),
            source=_A100_SRC,
        ),
        _gpu(
            "v100-sxm2",
            "NVIDIA Tesla V100 SXM2",
            compute_capability=(7, 0),
            fp32=15.7,
            fp64=7.8,
            fp16=31.4,
            bf16=15.7,  # no native bf16 arithmetic: fp32 rate
            int32=15.7,
            matrix={_F.FP16: 125.0, _F.BF16: 15.7},
            bw_gb_s=900,
            tdp_w=300,
            match=("v100-sxm2", "v100 sxm2", "v100"),
            source=_V100_SRC,
        ),
        _gpu(
            "v100-pcie",
            "NVIDIA Tesla V100 PCIe",
            compute_capability=(7, 0),
            fp32=14.0,
            fp64=7.0,
            fp16=28.0,
            bf16=14.0,
            int32=14.0,
            matrix={_F.FP16: 112.0, _F.BF16: 14.0},
            bw_gb_s=900,
            tdp_w=250,
            match=("v100-pcie", "v100 pcie"),
            source=_V100_SRC,
        ),
        _gpu(
            "v100s-pcie",
            "NVIDIA Tesla V100S PCIe",
            compute_capability=(7, 0),
            fp32=16.4,
            fp64=8.2,
            fp16=32.8,
            bf16=16.4,
            int32=16.4,
            matrix={_F.FP16: 130.0, _F.BF16: 16.4},
            bw_gb_s=1134,
            tdp_w=250,
            match=("v100s-pcie", "v100s pcie", "v100s"),
            source="NVIDIA Tesla V100S datasheet; bf16 has no tensor cores on Volta (fp32 rate)",
        ),
        _gpu(
            "t4",
            "NVIDIA T4",
            compute_capability=(7, 5),
            fp32=8.1,
            fp64=8.1 / 32,  # TU104: fp64 at 1/32 of fp32
            fp16=16.2,
            bf16=8.1,  # no bf16 hardware on Turing: fp32 rate
            int32=8.1,
            matrix={_F.FP16: 65.0, _F.BF16: 8.1, _F.INT8: 130.0},
            bw_gb_s=320,
            tdp_w=70,
            match=("tesla t4", "t4"),
            source="NVIDIA T4 Tensor Core GPU datasheet (dense); Turing whitepaper for fp64",
        ),
        _gpu(
            "l4",
            "NVIDIA L4",
            compute_capability=(8, 9),
            fp32=30.3,
            fp64=30.3 / 64,  # Ada: fp64 at 1/64 of fp32
            fp16=30.3,  # Ada: non-tensor fp16 at the fp32 rate
            bf16=30.3,
            int32=30.3 / 2,
            matrix={
                _F.TF32: 60.0,
                _F.BF16: 121.0,
                _F.FP16: 121.0,
                _F.FP8_E4M3: 242.5,
                _F.FP8_E5M2: 242.5,
                _F.INT8: 242.5,
            },
            bw_gb_s=300,
            tdp_w=72,
            match=("l4",),
            source="NVIDIA L4 Tensor Core GPU datasheet; " + _HALVED,
        ),
        _gpu(
            "l40s",
            "NVIDIA L40S",
            compute_capability=(8, 9),
            fp32=91.6,
            fp64=91.6 / 64,
            fp16=91.6,
            bf16=91.6,
            int32=91.6 / 2,
            matrix={
                _F.TF32: 183.0,
                _F.BF16: 362.05,
                _F.FP16: 362.05,
                _F.FP8_E4M3: 733.0,
                _F.FP8_E5M2: 733.0,
                _F.INT8: 733.0,
            },
            bw_gb_s=864,
            tdp_w=350,
            match=("l40s",),
            source="NVIDIA L40S datasheet (dense figures)",
        ),
        _gpu(
            "l40",
            "NVIDIA L40",
            compute_capability=(8, 9),
            fp32=90.5,
            fp64=90.5 / 64,
            fp16=90.5,
            bf16=90.5,
            int32=90.5 / 2,
            matrix={
                _F.TF32: 90.5,
                _F.BF16: 181.05,
                _F.FP16: 181.05,
                _F.FP8_E4M3: 362.0,
                _F.FP8_E5M2: 362.0,
                _F.INT8: 362.0,
            },
            bw_gb_s=864,
            tdp_w=300,
            match=("l40",),
            source="NVIDIA L40 datasheet; " + _HALVED,
        ),
        _gpu(
            "a10",
            "NVIDIA A10",
            compute_capability=(8, 6),
            fp32=31.2,
            fp64=31.2 / 64,  # GA102: fp64 at 1/64 of fp32
            fp16=31.2,  # GA102: non-tensor fp16 at the fp32 rate
            bf16=31.2,
            int32=31.2 / 2,
            matrix={_F.TF32: 62.5, _F.BF16: 125.0, _F.FP16: 125.0, _F.INT8: 250.0},
            bw_gb_s=600,
            tdp_w=150,
            match=("a10",),
            source="NVIDIA A10 Tensor Core GPU datasheet (dense); GA102 whitepaper for fp64",
        ),
        _gpu(
            "rtx-4090",
            "NVIDIA GeForce RTX 4090",
            compute_capability=(8, 9),
            fp32=82.6,
            fp64=82.6 / 64,
            fp16=82.6,
            bf16=82.6,
            int32=82.6 / 2,
            # GeForce tensor rates with fp32 accumulation, as PyTorch's GEMMs accumulate
            matrix={
                _F.TF32: 82.6,
                _F.BF16: 165.2,
                _F.FP16: 165.2,
                _F.FP8_E4M3: 330.3,
                _F.FP8_E5M2: 330.3,
                _F.INT8: 660.6,
            },
            bw_gb_s=1008,
            tdp_w=450,
            match=("rtx 4090", "rtx-4090"),
            source="NVIDIA Ada Lovelace GPU architecture whitepaper, appendix (dense, fp32 "
            "accumulate)",
        ),
        _gpu(
            "rtx-3090",
            "NVIDIA GeForce RTX 3090",
            compute_capability=(8, 6),
            fp32=35.6,
            fp64=35.6 / 64,
            fp16=35.6,
            bf16=35.6,
            int32=35.6 / 2,
            matrix={_F.TF32: 35.6, _F.BF16: 71.0, _F.FP16: 71.0, _F.INT8: 284.0},
            bw_gb_s=936,
            tdp_w=350,
            match=("rtx 3090", "rtx-3090"),
            source="NVIDIA Ampere GA102 GPU architecture whitepaper (dense, fp32 accumulate)",
        ),
    ]


# --- the CPU entry -----------------------------------------------------------------------------


def cpu_spec(
    cores: int,
    ghz: float = CPU_GHZ,
    simd_fp32_per_cycle: float = 32.0,
    *,
    memory_bw_bytes_s: float = CPU_CHANNELS * CPU_CHANNEL_BW_BYTES_S,
    bf16_matrix_per_cycle: float | None = None,
    int8_matrix_per_cycle: float | None = None,
    name: str = "CPU",
    key: str = "cpu",
    launch_s: float = CPU_LAUNCH_S,
    match: tuple[str, ...] = (),
) -> HardwareSpec:
    """A rough CPU spec from its core count, clock and SIMD width.

    Peak fp32 = cores x GHz x ``simd_fp32_per_cycle`` (FLOPs per core per cycle, an FMA = 2):
    AVX2 with FMA is 2 FMA units x 8 fp32 lanes x 2 = 32; AVX-512 is 64; AVX without FMA 16
    (one 8-wide add and one 8-wide multiply); SSE 8. Matmuls (MKL / oneDNN) run on the same
    SIMD units, so the matrix fp32 rate is the vector one. fp64 runs at half the fp32 rate.
    NB: bf16 / fp16 without AMX or AVX512-BF16 are converted to fp32, at the fp32 rate; the
    conversions themselves are not counted.

    Args:
        cores: physical or logical cores used for compute.
        ghz: all-core clock under SIMD load (GHz).
        simd_fp32_per_cycle: fp32 FLOPs per core per cycle.
        memory_bw_bytes_s: peak memory bandwidth (default: two DDR4-2400 channels,
            2 x 19.2 GB/s).
        bf16_matrix_per_cycle: bf16 matrix FLOPs per core per cycle where the CPU has them
            (AMX: 1024; AVX512-BF16: 2 x ``simd_fp32_per_cycle``).
        int8_matrix_per_cycle: int8 matrix ops per core per cycle (AMX: 2048).
        name: product name.
        key: table key.
        launch_s: fixed cost per aten op.
        match: name substrings that identify it.

    Raises:
        ValueError: a non-positive core count, clock or rate.
    """
    if not isinstance(cores, int) or cores < 1:
        raise ValueError(
            f"cpu_spec: expected a core count >= 1; found {cores!r}; fix: pass cores=os.cpu_count()"
        )
    cycles = cores * _positive(ghz, f"cpu {key!r}", "ghz") * _G
    fp32 = cycles * _positive(simd_fp32_per_cycle, f"cpu {key!r}", "simd_fp32_per_cycle")
    matrix = {NumberFormat.FP32: fp32, NumberFormat.FP64: fp32 / 2}
    if bf16_matrix_per_cycle is not None:
        matrix[NumberFormat.BF16] = cycles * bf16_matrix_per_cycle
    if int8_matrix_per_cycle is not None:
        matrix[NumberFormat.INT8] = cycles * int8_matrix_per_cycle
    ghz_text = f"{ghz:g} GHz"
    return HardwareSpec(
        key=key,
        name=name,
        kind="cpu",
        matrix_flops=matrix,
        vector_flops={NumberFormat.FP32: fp32, NumberFormat.FP64: fp32 / 2},
        memory_bw_bytes_s=memory_bw_bytes_s,
        launch_s=launch_s,
        match=match,
        source=(
            f"rough estimate: {cores} cores x {ghz_text} x {simd_fp32_per_cycle:g} fp32 "
            f"FLOPs/cycle, {memory_bw_bytes_s / _G:g} GB/s; override with cpu_spec() and "
            "register_hardware()"
        ),
    )


_GHZ_IN_NAME = re.compile(r"@\s*([0-9.]+)\s*ghz", re.IGNORECASE)


def cpu_from_cpuinfo(
    cpuinfo_path: str | os.PathLike[str] = "/proc/cpuinfo", cores: int | None = None
) -> HardwareSpec:
    """The machine's CPU spec: cores, clock and SIMD width read where possible.

    Cores: ``cores`` or the CPUs this process may run on. The model name and flags come
    from ``cpuinfo_path`` when readable: the clock from a model name's "@ 2.30GHz"
    (else :data:`CPU_GHZ`), the SIMD width from the flags (avx512f: 64, avx2 and fma: 32,
    avx: 16, else 8 fp32 FLOPs per cycle), AMX and AVX512-BF16 bf16 rates from theirs.
    Memory bandwidth is the default of :func:`cpu_spec` (it cannot be read from the OS).
    """
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cores = os.cpu_count() or 1
    info = read_cpuinfo(cpuinfo_path)
    model, flags = info.model, info.flags
    found = _GHZ_IN_NAME.search(model)
    ghz = float(found.group(1)) if found else CPU_GHZ
    if "avx512f" in flags:
        simd = 64.0
    elif "avx2" in flags and "fma" in flags:
        simd = 32.0
    elif "avx" in flags:
        simd = 16.0
    else:
        simd = 8.0
    bf16 = None
    if "amx_bf16" in flags:
        bf16 = 1024.0  # AMX: 16 x 32 bf16 products per cycle per core, x 2 FLOPs
    elif "avx512_bf16" in flags:
        bf16 = 2 * simd  # vdpbf16ps: two bf16 products per fp32 lane
    int8 = 2048.0 if "amx_int8" in flags else None
    return cpu_spec(
        cores,
        ghz,
        simd,
        bf16_matrix_per_cycle=bf16,
        int8_matrix_per_cycle=int8,
        name=f"{model or 'CPU (model unknown)'} x {cores} cores",
    )


# --- the process-wide table --------------------------------------------------------------------

_TABLE: dict[str, HardwareSpec] = {}
_REGISTERED: set[str] = set()  # keys registered by users, over the built-in table


def _table() -> dict[str, HardwareSpec]:
    if not _TABLE:
        for spec in _builtin_specs():
            _TABLE[spec.key] = spec
        _TABLE.setdefault("cpu", cpu_from_cpuinfo())
    return _TABLE


def hardware_table() -> dict[str, HardwareSpec]:
    """Every known spec by key: the built-in GPUs, this machine's CPU (``"cpu"``) and any
    registered ones (a copy: change the table with :func:`register_hardware`)."""
    return dict(_table())


def is_registered(key: str) -> bool:
    """Whether a user registered a spec under ``key`` (over the built-in table)."""
    _table()
    return key in _REGISTERED


def register_hardware(spec: HardwareSpec) -> None:
    """Add ``spec`` to the process-wide table, replacing any spec with the same key.

    A registered spec wins over the built-in ones when both match a device name equally well.

    Raises:
        TypeError: ``spec`` is not a :class:`HardwareSpec`.
    """
    if not isinstance(spec, HardwareSpec):
        raise TypeError(
            f"register_hardware: expected a HardwareSpec; found {type(spec).__name__}; fix: "
            "build one with HardwareSpec(...) or cpu_spec(...), or use load_hardware(path)"
        )
    table = _table()
    table.pop(spec.key, None)  # re-insert at the end: later entries win ties in matching
    table[spec.key] = spec
    _REGISTERED.add(spec.key)


def match_hardware(name: str, kind: str | None = None) -> HardwareSpec | None:
    """The spec whose ``match`` substring is the longest found in ``name`` as a whole token.

    Args:
        name: a device name, e.g. ``"NVIDIA H100 80GB HBM3"``.
        kind: ``"gpu"`` or ``"cpu"`` to consider only specs of that kind; None for any.

    Returns:
        The best match (a registered spec wins ties), or None when no spec matches.
    """
    low = name.lower()
    best: tuple[int, HardwareSpec] | None = None
    for spec in reversed(list(_table().values())):  # latest registered first: it wins ties
        if kind is not None and spec.kind != kind:
            continue
        for m in spec.match:
            if re.search(rf"(?<![a-z0-9]){re.escape(m)}(?![a-z0-9])", low) and (
                best is None or len(m) > best[0]
            ):
                best = (len(m), spec)
    return best[1] if best else None


HOW_TO_ADD = (
    "fix: register one with lightning_to_energy.roofline.register_hardware(HardwareSpec(...)) "
    "or load_hardware(path) with a TOML file such as\n"
    "  [[hardware]]\n"
    '  key = "my-gpu"\n'
    '  name = "My GPU"\n'
    '  kind = "gpu"\n'
    "  memory_bw_bytes_s = 1.0e12\n"
    "  launch_s = 5e-6\n"
    '  match = ["my gpu"]\n'
    '  source = "vendor datasheet"\n'
    "  [hardware.matrix_flops]\n"
    "  bf16 = 3.0e14\n"
    "  [hardware.vector_flops]\n"
    "  fp32 = 2.0e13\n"
    "(see docs/roofline.md)"
)


def find_hardware(name_or_key: str) -> HardwareSpec:
    """The spec with key ``name_or_key``, else the one whose ``match`` fits it as a device name.

    Raises:
        ValueError: no spec has that key or matches that name (the message lists the keys).
    """
    table = _table()
    key = str(name_or_key).strip().lower()
    if key in table:
        return table[key]
    found = match_hardware(key)
    if found is not None:
        return found
    raise ValueError(
        f"expected a known hardware key or device name ({', '.join(sorted(table))}); found "
        f"{name_or_key!r}; {HOW_TO_ADD}"
    )


# --- hardware files ----------------------------------------------------------------------------

_REQUIRED = ("key", "name", "kind", "matrix_flops", "vector_flops", "memory_bw_bytes_s")
_OPTIONAL = ("launch_s", "idle_power_w", "tdp_w", "match", "source", "compute_capability")


def load_hardware(path: str | os.PathLike[str], *, register: bool = True) -> list[HardwareSpec]:
    """Read hardware specs from a TOML (``[[hardware]]`` tables) or JSON
    (``{"hardware": [...]}``) file, and register them unless ``register`` is False.

    Each entry has the fields of :class:`HardwareSpec` (``key``, ``name``, ``kind``,
    ``matrix_flops`` and ``vector_flops`` as tables of format name -> FLOP/s,
    ``memory_bw_bytes_s``; optional ``launch_s`` (default by kind), ``idle_power_w``,
    ``tdp_w``, ``match``, ``source``, ``compute_capability`` as ``[major, minor]``).
    :meth:`HardwareSpec.to_dict` writes one entry.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a suffix other than .toml / .json, a syntax error, or an entry with
            missing, unknown or bad fields (the message says which and how to fix it).
    """
    path = Path(path)
    check_toml_or_json_path(path, "hardware file")
    try:
        data = load_toml_or_json(path)
        entries = data.get("hardware") if isinstance(data, dict) else None
        if not isinstance(entries, list) or not entries:
            found = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValueError(
                f"expected a non-empty list 'hardware' of entries ([[hardware]] in TOML, "
                f'{{"hardware": [...]}} in JSON); found {found}'
            )
        specs = [_entry(i, e) for i, e in enumerate(entries)]
    except ValueError as exc:
        fix = "" if "fix:" in str(exc) else "; fix: " + HOW_TO_ADD.removeprefix("fix: ")
        raise ValueError(f"hardware file {str(path)!r}: {exc}{fix}") from exc
    if register:
        for spec in specs:
            register_hardware(spec)
    return specs


def _entry(i: int, entry: Any) -> HardwareSpec:
    where = f"entry {i}"
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected a table of fields; found {entry!r}")
    where = f"entry {i} ({entry.get('key', 'no key')!r})"
    missing = [k for k in _REQUIRED if k not in entry]
    unknown = sorted(set(entry) - set(_REQUIRED) - set(_OPTIONAL))
    if missing or unknown:
        raise ValueError(
            f"{where}: expected the fields {list(_REQUIRED)} and optionally {list(_OPTIONAL)}; "
            f"found missing {missing} and unknown {unknown}"
        )
    kind = entry["kind"]
    default_launch = CPU_LAUNCH_S if kind == "cpu" else GPU_LAUNCH_S
    match = entry.get("match", ())
    if not isinstance(match, (list, tuple)):
        raise ValueError(
            f"{where}: expected match to be a list of strings; found {type(match).__name__} "
            f"{match!r}"
        )
    return HardwareSpec(
        key=entry["key"],
        name=str(entry["name"]),
        kind=kind,
        matrix_flops=entry["matrix_flops"],
        vector_flops=entry["vector_flops"],
        memory_bw_bytes_s=entry["memory_bw_bytes_s"],
        launch_s=entry.get("launch_s", default_launch),
        idle_power_w=entry.get("idle_power_w"),
        tdp_w=entry.get("tdp_w"),
        match=tuple(match),
        source=str(entry.get("source", "")),
        compute_capability=entry.get("compute_capability"),
    )
