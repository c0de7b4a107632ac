"""Sensor benchmark: NVML counter vs integrated instant power, and the meter's cost per window.

Run: ``python benchmarks/sensors.py [--seconds 5] [--windows 2000]``.

On an NVIDIA GPU it runs a steady matmul load for ``--seconds`` and prints the energy from the
NVML total-energy counter next to the energy from integrating the instant-power field on a
background thread, with their ratio (goal: within 1 %). It then times what the training thread
spends per window on sensor reads (``Meter.open()`` + ``Meter.close()`` with the background
sampler; goal: under 0.1 ms), and the same with direct counter reads for contrast. Last, over
``--scatter-windows`` consecutive 2 s windows of the same load, it prints the spread of each
window's mean power as read at the edges three ways: direct counter reads, the background
sample brought forward with instant power (what the meter uses), and the raw background sample
(``peek_j``), to show what the extrapolation buys.

Without a GPU it says why it skipped that part, and still times the meter over the fake, RAPL
(when readable) and estimate sensors.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from itertools import pairwise
from typing import Any

from lightning_to_energy.sensors import (
    CpuTimeEstimateSensor,
    EnergyEstimateWarning,
    FakeSensor,
    Sensor,
    SensorError,
)
from lightning_to_energy.sensors.meter import Meter
from lightning_to_energy.sensors.nvml import NvmlSensor
from lightning_to_energy.sensors.rapl import rapl_sensors


def window_cost_us(sensors: Sequence[Sensor], windows: int, repeats: int = 5) -> float:
    """Median over ``repeats`` of the mean microseconds per open+close pair (no CUDA sync)."""
    meter = Meter(sensors)
    per_window_us = []
    for _ in range(repeats):
        start_s = time.perf_counter()
        for _ in range(windows):
            meter.open()
            meter.close()
        # s / windows x 1e6 = µs per window
        per_window_us.append((time.perf_counter() - start_s) / windows * 1e6)
    return statistics.median(per_window_us)


def window_scatter(
    direct: NvmlSensor,
    windows: int,
    work: Callable[[], object],
    sync: Callable[[], None],
    window_s: float = 2.0,
) -> None:
    """Spread of per-window mean power over consecutive windows of a steady load, read three
    ways at each edge: direct counter reads, extrapolated background samples, raw samples."""
    background = NvmlSensor(direct.device_index, method="counter", background=True)
    try:
        edges: list[tuple[float, float, float, float]] = []
        t_end = time.perf_counter()
        for _ in range(windows + 1):
            sync()
            raw = background.peek_j()
            edges.append((time.perf_counter(), direct.read_j(), background.read_j(), raw or 0.0))
            t_end += window_s
            while time.perf_counter() < t_end:
                for _ in range(4):
                    work()
                sync()
    finally:
        background.close()
    print(f"per-window mean power over {windows} consecutive {window_s:g} s windows:")
    for i, label in enumerate(
        ("direct counter reads", "background, extrapolated", "background, raw sample"), 1
    ):
        # W = J / s per window; spread = stdev / mean
        powers = [(end[i] - start[i]) / (end[0] - start[0]) for start, end in pairwise(edges)]
        mean_w = statistics.fmean(powers)
        spread = statistics.stdev(powers) / mean_w * 100
        print(f"  {label:<26} mean {mean_w:7.1f} W, spread {spread:5.2f} % (stdev / mean)")


def gpu_part(seconds: float, windows: int, scatter_windows: int = 8) -> str | None:
    """Run the GPU comparisons; return why they were skipped, or None when they ran."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    try:
        counter = NvmlSensor(0, method="counter", background=False)
        integrated = NvmlSensor(0, method="power-integration", background=True)
    except SensorError as exc:
        return f"NVML cannot measure GPU 0: {exc}"
    try:
        print(f"GPU: {counter.gpu_name} ({counter.gpu_uuid}), torch {torch.__version__}")
        n = 8192
        a = torch.randn(n, n, device="cuda", dtype=torch.float32)
        b = torch.randn(n, n, device="cuda", dtype=torch.float32)
        warm_until = time.perf_counter() + 1.0  # reach a steady clock and power first
        while time.perf_counter() < warm_until:
            torch.mm(a, b)
            torch.cuda.synchronize()

        torch.cuda.synchronize()
        c0_j, i0_j, t0_s = counter.read_j(), integrated.read_j(), time.perf_counter()
        while time.perf_counter() - t0_s < seconds:
            for _ in range(4):
                torch.mm(a, b)
            torch.cuda.synchronize()
        c1_j, i1_j, t1_s = counter.read_j(), integrated.read_j(), time.perf_counter()
        counter_j, integrated_j, elapsed_s = c1_j - c0_j, i1_j - i0_j, t1_s - t0_s
        print(f"steady {n}^3 fp32 matmul load for {elapsed_s:.2f} s:")
        print(f"  counter (nvmlDeviceGetTotalEnergyConsumption): {counter_j:10.1f} J")
        print(f"  integrated instant power:                      {integrated_j:10.1f} J")
        print(f"    ({integrated.source})")
        print(
            f"  ratio integrated / counter: {integrated_j / counter_j:.4f} "
            f"({(integrated_j / counter_j - 1) * 100:+.2f} %; goal within 1 %)"
        )
        print(f"  mean power from the counter: {counter_j / elapsed_s:.1f} W")
        if scatter_windows > 1:
            window_scatter(
                counter, scatter_windows, partial(torch.mm, a, b), torch.cuda.synchronize
            )
        del a, b
        torch.cuda.empty_cache()

        background = NvmlSensor(0, method="counter", background=True)
        try:
            bg_us = window_cost_us([background], windows)
        finally:
            background.close()
        direct_us = window_cost_us([counter], max(10, windows // 100), repeats=3)
        print("training-thread time per window on sensor reads (open + close, no CUDA sync):")
        print(f"  NVML counter, background sampler: {bg_us:9.2f} µs (goal < 100 µs)")
        print(f"  NVML counter, direct reads:       {direct_us:9.2f} µs (for contrast)")
    finally:
        counter.close()
        integrated.close()
    return None


def cpu_part(windows: int) -> None:
    """Time the meter over the sensors that need no GPU."""
    print("training-thread time per window on sensor reads (open + close):")
    cases: list[tuple[str, Callable[[], list[Any]]]] = [
        ("fake (constant power)", lambda: [FakeSensor("fake:0", power_w=100.0)]),
        ("estimate (process CPU time)", lambda: [CpuTimeEstimateSensor(announce=False)]),
        ("RAPL (all readable zones)", lambda: rapl_sensors()[0]),
    ]
    for label, make in cases:
        try:
            sensors = make()
        except SensorError as exc:
            print(f"  {label:<30} skipped: {exc}")
            continue
        try:
            cost_us = window_cost_us(sensors, windows)
        finally:
            for sensor in sensors:
                sensor.close()
        print(f"  {label:<30} {cost_us:9.2f} µs over {len(sensors)} sensor(s)")


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (``tests/test_benchmarks.py`` checks
    ``benchmarks/gpu_session.sh`` against it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the GPU load")
    parser.add_argument("--windows", type=int, default=2000, help="windows timed per case")
    parser.add_argument(
        "--scatter-windows", type=int, default=8, help="2 s windows for the spread (GPU)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.simplefilter("ignore", EnergyEstimateWarning)
    today = datetime.date.today().isoformat()
    print(f"benchmarks/sensors.py, {today}, {platform.node()}, Python {platform.python_version()}")
    skipped = gpu_part(args.seconds, args.windows, args.scatter_windows)
    if skipped is not None:
        print(f"GPU part skipped: {skipped}.")
    cpu_part(args.windows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
