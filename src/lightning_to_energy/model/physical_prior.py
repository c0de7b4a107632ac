"""Priors of the physical model: the H100 microbenchmarks and datasheets, and ``prior_for``."""

from __future__ import annotations

from collections.abc import Mapping

from lightning_to_energy.counting.cost_model import AluOp, CostModel, NumberFormat, Unit
from lightning_to_energy.counting.profile import PHASES
from lightning_to_energy.hardware.specs import HardwareSpec
from lightning_to_energy.model.physical import CONV_SHARE_RANGE, Key, PhysicalParams, key_name

__all__ = [
    "BUSY_W_PRIOR",
    "H100_BARE_IDLE_W",
    "H100_CONV_MICROBENCHMARKS",
    "H100_MICROBENCHMARKS",
    "H100_SOURCE",
    "MEMORY_BOUND_W",
    "RAMP_SHARE_PRIOR",
    "prior_for",
]


# --- priors --------------------------------------------------------------------------------------

H100_MICROBENCHMARKS: Mapping[str, Mapping[str, float]] = {
    # 8192^3 matmuls, about 3 s each at the 700 W cap, one H100 80GB HBM3, 2026-11-25
    # (shared data h100-training-steps.json, format_microbenchmarks.matmul)
    "fp32": {"flop_s": 51.4e12, "mean_w": 698.3},
    "tf32": {"flop_s": 352.9e12, "mean_w": 720.3},
    "bf16": {"flop_s": 676.1e12, "mean_w": 696.7},
    "fp16": {"flop_s": 648.1e12, "mean_w": 698.2},
}
"""Achieved matmul rate and mean draw per format on the H100 (source of the priors)."""
H100_SOURCE = "H100 80GB HBM3 8192^3 matmul microbenchmarks, 2026-11-25 (shared data)"
H100_CONV_MICROBENCHMARKS: Mapping[str, Mapping[str, float]] = {
    # 3x3 convolution, 64x256x56x56 input, 256 output channels, about 3 s each at the 700 W
    # cap, same GPU and day (shared data, format_microbenchmarks.conv3x3). Against the matmuls
    # they reach 0.72 (tf32), 0.64 (bf16) and 0.52 (fp32) of the rate at the same draw: their
    # energy per FLOP is 1.35, 1.55 and 1.91x the matmuls', the inverse rate ratio within 3 %.
    "fp32": {"flop_s": 26.8e12, "mean_w": 695.9},
    "tf32": {"flop_s": 253.4e12, "mean_w": 703.6},
    "bf16": {"flop_s": 435.5e12, "mean_w": 694.8},
}
H100_CONV_SOURCE = "H100 80GB HBM3 3x3 convolution / 8192^3 matmul microbenchmark rates"
H100_BARE_IDLE_W = 72.7
"""H100 draw with no process attached, W (shared data): the low end of ``base_w``."""

_DATASHEET_SHARE = 0.7  # achieved / datasheet for formats without a microbenchmark
_FLOP_RAMP_S = 4e-6  # a kernel of peak x 4 us FLOPs reaches half its peak rate
_BYTES_RAMP_S = 2e-6  # a kernel of bandwidth x 2 us bytes reaches half the bandwidth
_BW_SHARE = 0.8  # achieved / datasheet bandwidth (STREAM-like copies on HBM reach 75 to 90 %)
BUSY_W_PRIOR = 60.0
"""Prior extra draw while kernels run, W (see docs/physical-model.md)."""
RAMP_SHARE_PRIOR = 0.5
"""Prior share of full-rate dynamic power drawn during a kernel's ramp (see PhysicalParams)."""
MEMORY_BOUND_W = 495.0
"""Mean draw of memory-bound H100 training steps, W (issue 11: 460 to 530 W, prototype)."""


def prior_for(spec: HardwareSpec, cost_model: CostModel | None = None) -> PhysicalParams:
    """Priors of every parameter for ``spec``, each with its range and a note on its source.

    Rates: the H100 microbenchmarks' achieved/datasheet ratio per format times ``spec``'s
    datasheet peak (0.7 for formats without a microbenchmark). Energy per FLOP: the
    microbenchmarks' draw above base and busy power over their rate for fp32 (the vector units),
    TF32, bf16 and fp16; other formats scaled from the nearest measured format by the cost
    model's transistor ratio of an FMA. No other hardware has measurements here: their
    energies per FLOP are the H100's, and the notes say so.
    """
    cm = cost_model or CostModel.default()
    h100 = spec.key.startswith("h100")
    base_w = spec.idle_power_w if spec.idle_power_w else 0.18 * (spec.tdp_w or 300.0)
    cap_w = spec.tdp_w or 10 * base_w
    bare_w = H100_BARE_IDLE_W if h100 else 0.5 * base_w
    ranges: dict[str, tuple[float, float]] = {}
    notes: dict[str, str] = {}

    def put(name: str, value: float, low: float, high: float, note: str) -> float:
        ranges[name], notes[name] = (low, high), note
        return value

    datasheet = "datasheet" if not h100 else "H100 datasheet"
    put(
        "base_w",
        base_w,
        bare_w,
        cap_w,
        f"{spec.name}: idle with a process attached ({spec.source})",
    )
    put(
        "busy_w",
        BUSY_W_PRIOR,
        1.0,
        cap_w - bare_w,
        "prior: host-bound H100 steps draw 145-170 W against 126 W base",
    )
    put(
        "ramp_share",
        RAMP_SHARE_PRIOR,
        0.01,
        1.0,
        "prior: SMs stay clocked and issuing through a kernel's partial waves",
    )
    bw = _BW_SHARE * spec.memory_bw_bytes_s
    put(
        "bandwidth_b_s",
        bw,
        0.45 * spec.memory_bw_bytes_s,
        spec.memory_bw_bytes_s,
        f"{_BW_SHARE:.0%} of the {datasheet} bandwidth",
    )
    put(
        "bytes_half",
        bw * _BYTES_RAMP_S,
        bw * 0.1e-6,
        bw * 50e-6,
        "prior: half bandwidth at a 2 us kernel",
    )
    put("launch_s", 3e-6, 0.5e-6, 20e-6, "prior: back-to-back small CUDA kernels take 2 to 4 us")
    put("host_step_s", 50e-6, 1e-6, 5e-3, "prior: fixed Python cost of a step (zero_grad, loss)")
    # a memory-bound kernel streams at the achieved bandwidth and draws MEMORY_BOUND_W
    j_per_byte = (MEMORY_BOUND_W - base_w - BUSY_W_PRIOR) / bw if h100 else 60e-12
    put(
        "j_per_byte",
        j_per_byte,
        20e-12,
        300e-12,
        f"({MEMORY_BOUND_W:g} W memory-bound H100 draw - base - busy) / bandwidth"
        if h100
        else "prior: HBM ~4 pJ/bit (31 pJ/B) plus on-chip transport",
    )
    dispatch: dict[str, float] = {}
    for phase in PHASES:
        dispatch[phase] = put(
            f"dispatch_s[{phase}]",
            40e-6,
            2e-6,
            300e-6,
            "prior: H100 prototype fit, ~44 us per eager kernel",
        )

    peak: dict[Key, float] = {}
    half: dict[Key, float] = {}
    jpf: dict[Key, float] = {}
    conv_share: dict[Key, float] = {}
    conv_half: dict[Key, float] = {}
    dyn_w = {f: m["mean_w"] - base_w - BUSY_W_PRIOR for f, m in H100_MICROBENCHMARKS.items()}
    for unit in Unit:
        for fmt in NumberFormat:
            key = (unit, fmt)
            name = key_name(key)
            sheet = spec.peak_flops(unit, fmt)
            bench = H100_MICROBENCHMARKS.get(fmt.value) if unit is Unit.MATRIX else None
            # fp32 matmuls run on the vector units: their benchmark is the vector fp32 rate
            if unit is Unit.VECTOR and fmt is NumberFormat.FP32:
                bench = H100_MICROBENCHMARKS["fp32"]
            share = bench["flop_s"] / _h100_sheet(unit, fmt) if bench else _DATASHEET_SHARE
            rate = share * sheet
            peak[key] = put(
                f"peak_flop_s[{name}]",
                rate,
                0.02 * rate,
                max(sheet, rate),
                f"{share:.2f} x datasheet peak"
                + (f" ({H100_SOURCE})" if bench else " (no benchmark)"),
            )
            half[key] = put(
                f"flop_half[{name}]",
                rate * _FLOP_RAMP_S,
                rate * 0.1e-6,
                rate * 100e-6,
                "prior: half peak at a 4 us kernel",
            )
            cref = _energy_reference(Unit.MATRIX, fmt)
            cref = cref if cref in H100_CONV_MICROBENCHMARKS else "bf16"
            cshare = (
                H100_CONV_MICROBENCHMARKS[cref]["flop_s"] / H100_MICROBENCHMARKS[cref]["flop_s"]
                if unit is Unit.MATRIX
                else 1.0
            )
            conv_share[key] = put(
                f"conv_share[{name}]",
                cshare,
                *CONV_SHARE_RANGE,
                (
                    f"{H100_CONV_SOURCE} of {cref}"
                    + ("" if cref == fmt.value else " (nearest measured format)")
                    if unit is Unit.MATRIX
                    else "no convolution runs on the vector units: the matmul curve"
                ),
            )
            conv_half[key] = put(
                f"conv_flop_half[{name}]",
                rate * _FLOP_RAMP_S,
                rate * 0.1e-6,
                rate * 300e-6,
                "prior: half the convolution rate at a 4 us kernel, as matmuls",
            )
            ref = _energy_reference(unit, fmt)
            ratio = cm.tos(AluOp.FMA, fmt) / cm.tos(AluOp.FMA, NumberFormat(ref))
            j = dyn_w[ref] / H100_MICROBENCHMARKS[ref]["flop_s"] * ratio
            how = (
                f"({H100_SOURCE}: mean W - base - busy) / rate of {ref}"
                + (f" x transistor ratio {ratio:.3g}" if ref != fmt.value else "")
                + ("" if h100 else "; measured on an H100, not on this hardware")
            )
            jpf[key] = put(f"j_per_flop[{name}]", j, j / 5, j * 5, how)
    return PhysicalParams(
        base_w=base_w,
        peak_flop_s=peak,
        flop_half=half,
        bandwidth_b_s=bw,
        bytes_half=bw * _BYTES_RAMP_S,
        launch_s=3e-6,
        host_step_s=50e-6,
        dispatch_s=dispatch,
        j_per_flop=jpf,
        j_per_byte=j_per_byte,
        busy_w=BUSY_W_PRIOR,
        ramp_share=RAMP_SHARE_PRIOR,
        conv_share=conv_share,
        conv_flop_half=conv_half,
        ranges=ranges,
        notes=notes,
    )


def _h100_sheet(unit: Unit, fmt: NumberFormat) -> float:
    from lightning_to_energy.hardware.specs import find_hardware

    return find_hardware("h100-sxm").peak_flops(unit, fmt)


def _energy_reference(unit: Unit, fmt: NumberFormat) -> str:
    """The measured format whose energy per FLOP a format's prior scales from."""
    if unit is Unit.VECTOR:
        return "fp32"  # element-wise work runs on the CUDA cores, benchmarked by fp32 matmuls
    if fmt.value in H100_MICROBENCHMARKS:
        return fmt.value
    if fmt in (NumberFormat.FP64,):
        return "fp32"
    return "bf16"  # fp8 and integer tensor-core formats
