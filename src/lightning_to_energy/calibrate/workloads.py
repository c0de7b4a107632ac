"""What ``calibrate`` measures: microbenchmarks that each pin a few physical parameters.

A training step mixes FLOPs, bytes, kernels and host time in fixed proportions, so a fit on
training runs cannot tell their coefficients apart. Each workload below moves one of them
while holding the others small:

- ``idle`` and ``idle-2`` (a CUDA context, no kernel) and ``host-wait`` (one tiny kernel,
  then the host sleeps): base power; their duration is the host's sleep, not a modelled time,
  so they are energy-only samples (the energy fit only).
- ``matmul-<fmt>-<n>``: an ``n x n x n`` matrix product per supported format, at three sizes
  (the largest twice for the formats no convolution runs): the matrix unit's peak rate, the
  size at half that rate, and its joules per FLOP; across sizes, the ramp's share of the
  full-rate power (``ramp_share``).
- ``copy`` and ``elementwise`` at three sizes, ``reduction``, ``batchnorm`` (forward and
  backward) at the smallest and largest, ``depthwise`` (fp32) at the middle and largest:
  bandwidth, the size at half of it, joules per byte.
- ``conv-<fmt>-c<C>[-<batch>x<side>]`` and ``dwconv-<fmt>-c<C>``: 3x3 convolutions (one
  small enough to run on the convolution ramp) and depthwise ones, in TF32 and bf16, across
  channel counts: their efficiency curves.
- ``launch`` (8 windows): a CUDA graph of empty kernels (``torch.cuda._sleep(0)``): the
  device-side floor per launch, and the draw of a device that is busy doing nothing
  (``busy_w``, their draw less the idle windows').
- ``dispatch-<kind>-<m>``: ``m`` tiny ops dispatched eagerly by the host (forward ops, the
  autograd backward, foreach optimizer ops, autocast casts, ops outside any phase): the
  host's cost per kernel in each phase; forward ops at two sizes also pin its fixed cost per
  step.

Device-bound workloads are replayed as CUDA graphs of ``repeat`` calls, so the host's dispatch
cost does not hide their device time; their profile then says that no kernel was dispatched by
the host (its phase kernels are 0) while ``op_costs`` keep every kernel the device ran.

Each workload's ``build(device)`` returns its step: a function of ``phase`` (the counter's
``set_phase``, or a no-op when timed). On the ``meta`` device the same steps run without data,
so a simulated device counts exactly what a real one would (TF32 aside: the counter reads
TF32 only on CUDA tensors).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from lightning_to_energy.counting.cost_model import NumberFormat, Unit
from lightning_to_energy.counting.profile import StepProfile
from lightning_to_energy.counting.registry import OpCost

__all__ = [
    "CONV_FORMATS",
    "CONV_SHAPES",
    "DISPATCH_OPS",
    "DWCONV_CHANNELS",
    "FP32_MATMUL_SIZES",
    "GROUPS",
    "IDLE_WINDOWS",
    "LAUNCH_KERNELS",
    "LAUNCH_WINDOWS",
    "MATMUL_FORMATS",
    "MATMUL_SIZES",
    "MEMORY_ELEMENTS",
    "TF32_MATMUL_SIZES",
    "Phase",
    "Step",
    "Workload",
    "all_workloads",
    "param",
    "tf32",
]

Phase = Callable[[str], object]
"""Sets the counting phase (``OpCounter.set_phase``) or does nothing."""

Step = Callable[[Phase], object]
"""One iteration of a workload."""

GROUPS = ("idle", "matmul", "memory", "conv", "launch", "dispatch")
"""The classes of measurement; removing one leaves the parameters it pins unidentified."""

MATMUL_SIZES = (1024, 2048, 8192)
FP32_MATMUL_SIZES = (512, 1024, 8192)  # fp32 reaches half its peak at smaller sizes
# TF32's 1024^3 product is memory-bound in some devices within +-30 % of the H100 priors (its
# 12.6 MB against a 1.4e9-FLOP ramp), and 2048^3 runs at 90 to 95 % of the peak: 1536^3 runs
# compute-bound at 80 to 88 % in all of them, so the TF32 ramp is always seen
TF32_MATMUL_SIZES = (1024, 1536, 8192)
MEMORY_ELEMENTS = (1 << 20, 1 << 24, 1 << 28)  # fp32: 4 MiB, 64 MiB, 1 GiB per tensor
CONV_SHAPES = ((2, 256, 32), (32, 64, 56), (32, 256, 56))
"""3x3 convolutions as (batch, channels, side): input ``batch x channels x side x side``,
``channels`` out. The small one (2 x 256 x 32 x 32, 2.4 GFLOP in 6.6 MB) runs on the
convolution ramp, at 50 to 80 % of the asymptotic rate, and stays compute-bound at every truth
within +/-30 % of the H100 priors, even with the rate, share and bandwidth all 30 % against
it: 256 channels do 576 FLOPs per byte of activations. A few channels at 32 x 56 x 56 (16
channels: 12.9 MB for 0.46 GFLOP) did not: memory-bound or on the kink for most truths, no
TF32 window ran below ~85 % of its rate where they were, and ``conv_flop_half`` was not
identified (docs/calibrate.md)."""
DWCONV_CHANNELS = (64, 1024)
DISPATCH_OPS = (2, 100)  # 2: mostly the fixed cost per step; 100: mostly the per-kernel cost
LAUNCH_KERNELS = 2000
IDLE_WINDOWS = 2
"""Idle windows: base power, on its own (each window's joules are off by up to 3 %)."""
LAUNCH_WINDOWS = 8
"""Empty-launch windows: ``base_w + busy_w``. busy_w is their difference from the idle
windows, about a third of their draw, so each window pins it to about +/-4 % (1.2 % of
noise over a third): eight of them, with the idle and host-bound windows, bring it to about
+/-1.5 % (1 sigma), the most this budget can buy (docs/calibrate.md)."""

_FP8 = NumberFormat.FP8_E4M3
MATMUL_FORMATS = (
    NumberFormat.FP32,
    NumberFormat.TF32,
    NumberFormat.BF16,
    NumberFormat.FP16,
    _FP8,
)
CONV_FORMATS = (NumberFormat.TF32, NumberFormat.BF16)


def param(name: str, *key: str) -> str:
    """The name of a physical parameter as the calibration reports it.

    The flat names of :meth:`~lightning_to_energy.model.physical.PhysicalParams.flat`:
    ``param("peak_flop_s", "matrix", "bf16")`` is ``"peak_flop_s[matrix/bf16]"``; a scalar
    parameter is its field name (``"base_w"``).
    """
    return f"{name}[{'/'.join(key)}]" if key else name


def _curve(unit: Unit, fmt: NumberFormat) -> tuple[str, ...]:
    k = (unit.value, fmt.value)
    return (param("peak_flop_s", *k), param("flop_half", *k), param("j_per_flop", *k))


def _conv_curve(unit: Unit, fmt: NumberFormat) -> tuple[str, ...]:
    # convolutions run on their own curve: a share of the unit's rate and their own ramp
    k = (unit.value, fmt.value)
    return (*_curve(unit, fmt)[::2], param("conv_share", *k), param("conv_flop_half", *k))


_MEMORY = (param("bandwidth_b_s"), param("bytes_half"), param("j_per_byte"))


@dataclass(frozen=True)
class Workload:
    """One microbenchmark.

    Attributes:
        name: e.g. ``"matmul-bf16-2048"``.
        group: one of :data:`GROUPS`.
        pins: the parameters this workload's samples pin (see :func:`param`).
        build: makes the step on a device (tensors allocated once, outside the timing).
        graph: replay ``repeat`` steps as one CUDA graph (device-bound work), else run eagerly.
        energy_only: the step's duration is a host sleep, not a modelled time.
        priority: 0 = needed to pin its parameters; 1 = an extra point a short budget drops.
        fmt: the number format the device must support (None: any device).
        profile: the step's cost where the counter cannot see it (an empty kernel); None:
            counted by :class:`~lightning_to_energy.counting.OpCounter`.
    """

    name: str
    group: str
    pins: tuple[str, ...]
    build: Callable[[torch.device], Step]
    graph: bool = True
    energy_only: bool = False
    priority: int = 0
    fmt: NumberFormat | None = None
    profile: Callable[[], StepProfile] | None = None


@contextlib.contextmanager
def tf32(matmul: bool, conv: bool) -> Iterator[None]:
    """TF32 flags set for a step and restored after (the counter reads them per call)."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = matmul
    torch.backends.cudnn.allow_tf32 = conv
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _dtype(fmt: NumberFormat) -> torch.dtype:
    return {NumberFormat.BF16: torch.bfloat16, NumberFormat.FP16: torch.float16}.get(
        fmt, torch.float32
    )


# --- builders ----------------------------------------------------------------------------------


def _idle(device: torch.device) -> Step:
    def step(phase: Phase) -> None:
        time.sleep(0.02)  # nothing queued: the GPU holds its context and waits

    return step


def _host_wait(device: torch.device) -> Step:
    x = torch.zeros(1, device=device)

    def step(phase: Phase) -> None:
        x.add_(1.0)
        time.sleep(0.002)  # the GPU finished long ago and waits on the host

    return step


def _matmul(fmt: NumberFormat, n: int) -> Callable[[torch.device], Step]:
    def build(device: torch.device) -> Step:
        if fmt is _FP8:
            a = torch.randn(n, n, device=device).to(torch.float8_e4m3fn)
            b = torch.randn(n, n, device=device).to(torch.float8_e4m3fn).t()  # column-major
            one = torch.ones((), device=device)

            def fp8(phase: Phase) -> None:
                torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)

            return fp8
        a = torch.randn(n, n, device=device, dtype=_dtype(fmt))
        b = torch.randn(n, n, device=device, dtype=_dtype(fmt))

        def mm(phase: Phase) -> None:
            with tf32(matmul=fmt is NumberFormat.TF32, conv=True):
                torch.mm(a, b)

        return mm

    return build


def _conv(
    fmt: NumberFormat, channels: int, depthwise: bool, batch: int = 32, side: int = 56
) -> Callable[[torch.device], Step]:
    def build(device: torch.device) -> Step:
        dtype = _dtype(fmt)
        x = torch.randn(batch, channels, side, side, device=device, dtype=dtype)
        w = torch.randn(channels, 1 if depthwise else channels, 3, 3, device=device, dtype=dtype)
        groups = channels if depthwise else 1

        def conv(phase: Phase) -> None:
            with tf32(matmul=False, conv=fmt is NumberFormat.TF32):
                F.conv2d(x, w, padding=1, groups=groups)

        return conv

    return build


def _memory(kind: str, elements: int) -> Callable[[torch.device], Step]:
    def build(device: torch.device) -> Step:
        if kind in ("batchnorm", "depthwise"):
            # (N, 64, H, W) holding `elements` values: a realistic activation shape
            side = max(8, int((elements // (64 * 16)) ** 0.5))
            x = torch.randn(16, 64, side, side, device=device)
            if kind == "depthwise":
                w = torch.randn(64, 1, 3, 3, device=device)

                def dwconv(phase: Phase) -> None:
                    with tf32(matmul=False, conv=False):  # fp32: memory-bound on CUDA cores
                        F.conv2d(x, w, padding=1, groups=64)

                return dwconv
            xg = x.requires_grad_()
            mean, var = torch.zeros(64, device=device), torch.ones(64, device=device)
            gy = torch.ones_like(x)

            def batchnorm(phase: Phase) -> None:
                y = F.batch_norm(xg, mean, var, training=True)
                torch.autograd.grad(y, xg, gy)

            return batchnorm
        a = torch.randn(elements, device=device)
        b = torch.randn(elements, device=device)
        out = torch.empty(elements, device=device)

        def copy(phase: Phase) -> None:
            out.copy_(a)

        def elementwise(phase: Phase) -> None:
            torch.add(a, b, out=out)

        def reduction(phase: Phase) -> None:
            a.sum()

        return {"copy": copy, "elementwise": elementwise, "reduction": reduction}[kind]

    return build


def _launch(device: torch.device) -> Step:
    def step(phase: Phase) -> None:
        if device.type == "cuda":
            torch.cuda._sleep(0)  # a kernel that returns at once: nothing but its launch

    return step


def _launch_profile() -> StepProfile:
    """One empty kernel: no FLOPs, no bytes (the dispatch mode does not see ``_sleep``)."""
    return StepProfile(kernels=1, op_costs=((OpCost(kernels=1), 1.0),))


def _dispatch(kind: str, m: int) -> Callable[[torch.device], Step]:
    def build(device: torch.device) -> Step:
        x = torch.ones(16, device=device)
        if kind in ("forward", "other"):

            def ops(phase: Phase) -> None:
                phase(kind)
                y = x
                with torch.no_grad():
                    for _ in range(m):
                        y = y * 1.0001
                phase("other")

            return ops
        if kind == "backward":
            w = torch.ones(16, device=device, requires_grad=True)

            def backward(phase: Phase) -> None:
                phase("forward")
                y = x
                for _ in range(m // 2):  # each mul has one backward mul: m kernels in all
                    y = y * w
                y.sum().backward()  # the counter files autograd's kernels under "backward"
                phase("other")

            return backward
        if kind == "optimizer":
            params = [torch.zeros(16, device=device, requires_grad=True) for _ in range(m)]
            for p in params:
                p.grad = torch.zeros_like(p)
            opt = torch.optim.AdamW(params, lr=1e-3, foreach=True)

            def optimizer(phase: Phase) -> None:
                opt.step()  # the counter files Optimizer.step() under "optimizer"

            return optimizer
        # autocast: fp32 weights cast to bf16 on every call, as under bf16-mixed
        w16 = torch.ones(16, 16, device=device)

        def autocast(phase: Phase) -> None:
            phase("forward")
            if device.type == "cuda":
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    for _ in range(m // 3):
                        F.linear(x, w16)
            else:  # the meta device has no autocast: the casts it would insert, by hand
                for _ in range(m // 3):
                    F.linear(x.to(torch.bfloat16), w16.to(torch.bfloat16))
            phase("other")

        return autocast

    return build


# --- the list ----------------------------------------------------------------------------------


def all_workloads() -> tuple[Workload, ...]:
    """Every workload, in the order the schedule measures them (cheap and essential first)."""
    base = (param("base_w"),)
    # base power alone (energy only: their time is a host sleep); each window's joules carry
    # their own 1 to 3 % of noise, so more than one
    out: list[Workload] = [
        Workload(
            "idle" if i == 0 else f"idle-{i + 1}",
            "idle",
            base,
            _idle,
            graph=False,
            energy_only=True,
            priority=0 if i == 0 else 1,
        )
        for i in range(IDLE_WINDOWS)
    ]
    out.append(
        Workload("host-wait", "idle", base, _host_wait, graph=False, energy_only=True, priority=1)
    )
    # device-bound with no work: launch floor, and the draw of a busy device (busy_w); many
    # times, as busy_w is a third of these windows' joules (see LAUNCH_WINDOWS). The last
    # three come last: a shorter budget (gpu_session.sh gives 130 s) drops them before the
    # convolutions' curves
    launches = [
        Workload(
            "launch" if i == 0 else f"launch-{i + 1}",
            "launch",
            (param("launch_s"), param("busy_w")),
            _launch,
            priority=0 if i < 3 else 1,
            profile=_launch_profile,
        )
        for i in range(LAUNCH_WINDOWS)
    ]
    out += launches[:5]
    # host-bound: the device idles between tiny kernels, so these also pin base power
    host = (param("host_step_s"), param("base_w"))
    for kind in ("forward", "backward", "optimizer", "autocast", "other"):
        phase = "forward" if kind == "autocast" else kind
        pins = (*host, param("dispatch_s", phase))
        # two sizes in one phase pin the fixed cost per step; one size then pins each phase
        counts: tuple[int, ...] = DISPATCH_OPS if kind == "forward" else DISPATCH_OPS[-1:]
        for m in counts:
            out.append(
                Workload(f"dispatch-{kind}-{m}", "dispatch", pins, _dispatch(kind, m), graph=False)
            )
    sizes_of = {NumberFormat.FP32: FP32_MATMUL_SIZES, NumberFormat.TF32: TF32_MATMUL_SIZES}
    for fmt in MATMUL_FORMATS:
        # three sizes per format: the power at full rate and on the ramp tells J/FLOP from
        # the ramp's share of it (ramp_share, one for every format)
        curve = (*_curve(Unit.MATRIX, fmt), param("ramp_share"))
        sizes = sizes_of.get(fmt, MATMUL_SIZES)
        for i, n in enumerate(sizes):
            name = f"matmul-{fmt.value}-{n}"
            extra = 1 if i == 1 else 0
            out.append(Workload(name, "matmul", curve, _matmul(fmt, n), fmt=fmt, priority=extra))
        if fmt in CONV_FORMATS:
            continue  # the convolutions add full-rate windows of these formats
        # the largest again: most of a format's joules per FLOP rest on it, and each window's
        # energy carries its own 1 to 3 % of noise
        n = sizes[-1]
        out.append(
            Workload(
                f"matmul-{fmt.value}-{n}-again",
                "matmul",
                curve,
                _matmul(fmt, n),
                fmt=fmt,
                priority=1,
            )
        )
    for kind in ("copy", "elementwise", "reduction", "batchnorm", "depthwise"):
        for i, elements in enumerate(MEMORY_ELEMENTS):
            essential = kind in ("copy", "elementwise") and i != 1
            # the middle size of every kind would not fit the budget. The fp32 depthwise
            # convolution runs its middle size instead of the smallest: at 1 Mi elements its
            # few FLOPs sit on the convolution ramp (conv_flop_half[matrix/fp32], which no
            # workload pins), as long as its bytes take, and a window on that kink would pin
            # the fp32 rate through a curve nothing measured; at 16 Mi it is memory-bound by
            # 3x at the priors and by 8x with every rate 30 % against it
            smallest = 1 if kind == "depthwise" else 0
            if kind not in ("copy", "elementwise") and i != (smallest if i < 2 else 2):
                continue
            out.append(
                Workload(
                    f"{kind}-{elements}",
                    "memory",
                    _MEMORY,
                    _memory(kind, elements),
                    priority=0 if essential else 1,
                )
            )
    for fmt in CONV_FORMATS:
        curve = _conv_curve(Unit.MATRIX, fmt)
        for b, c, side in CONV_SHAPES:
            name = f"conv-{fmt.value}-c{c}" + ("" if (b, side) == (32, 56) else f"-{b}x{side}")
            conv = _conv(fmt, c, False, b, side)
            out.append(Workload(name, "conv", curve, conv, fmt=fmt, priority=1))
    # after every format's convolutions: a shorter budget drops these first
    for fmt in CONV_FORMATS:
        curve = _conv_curve(Unit.MATRIX, fmt)  # convolutions: their own curve
        for c in DWCONV_CHANNELS:  # few FLOPs per byte: memory-bound, a memory measurement
            name = f"dwconv-{fmt.value}-c{c}"
            both = (*_MEMORY, *curve)
            out.append(Workload(name, "memory", both, _conv(fmt, c, True), fmt=fmt, priority=1))
    return (*out, *launches[5:])
