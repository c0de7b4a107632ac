"""The roofline estimate, the hardware table, hardware files and StepProfile.op_costs."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from lightning_to_energy.counting import StepProfile, profile
from lightning_to_energy.counting.cost_model import AluOp, NumberFormat, Unit
from lightning_to_energy.counting.registry import OpCost
from lightning_to_energy.hardware import specs as roofline
from lightning_to_energy.hardware.detect import detect_hardware
from lightning_to_energy.hardware.roofline import (
    compute_time_s,
    memory_time_s,
    op_time_s,
    roofline_breakdown,
    roofline_s,
)
from lightning_to_energy.hardware.specs import (
    HardwareSpec,
    cpu_from_cpuinfo,
    cpu_spec,
    find_hardware,
    hardware_table,
    load_hardware,
    register_hardware,
)

FMA, ADD, EXP = AluOp.FMA, AluOp.ADD, AluOp.EXP
F = NumberFormat
MATRIX, VECTOR = Unit.MATRIX, Unit.VECTOR


@pytest.fixture(autouse=True)
def _isolated_table() -> Iterator[None]:
    """Registrations in a test must not leak into the next."""
    table = dict(roofline._table())
    registered = set(roofline._REGISTERED)
    yield
    roofline._TABLE.clear()
    roofline._TABLE.update(table)
    roofline._REGISTERED.clear()
    roofline._REGISTERED.update(registered)


def _round_spec(**kw: object) -> HardwareSpec:
    """A made-up device with round figures, for hand arithmetic."""
    args: dict[str, object] = {
        "key": "round",
        "name": "Round Numbers GPU",
        "kind": "gpu",
        "matrix_flops": {F.BF16: 1e15},
        "vector_flops": {F.FP32: 1e13},
        "memory_bw_bytes_s": 1e12,
        "launch_s": 1e-5,
    }
    args.update(kw)
    return HardwareSpec(**args)  # type: ignore[arg-type]


# --- one op --------------------------------------------------------------------------------------

BIG_MATMUL = OpCost({(FMA, F.BF16, MATRIX): 1e10}, bytes_read=2_000_000, bytes_written=1_000_000)
BIG_ADD = OpCost({(ADD, F.FP32, VECTOR): 1e6}, bytes_read=8_000_000, bytes_written=4_000_000)
TINY_ADD = OpCost({(ADD, F.FP32, VECTOR): 10}, bytes_read=80, bytes_written=40)


def test_compute_bound_op() -> None:
    spec = _round_spec()
    # 1e10 FMAs x 2 FLOPs / 1e15 FLOP/s = 2e-5 s
    assert compute_time_s(BIG_MATMUL, spec) == pytest.approx(2e-5)
    # (2e6 + 1e6) bytes / 1e12 B/s = 3e-6 s
    assert memory_time_s(BIG_MATMUL, spec) == pytest.approx(3e-6)
    # max(2e-5, 3e-6, 1 kernel x 1e-5) = 2e-5
    assert op_time_s(BIG_MATMUL, spec) == pytest.approx(2e-5)


def test_memory_bound_op() -> None:
    spec = _round_spec()
    # an add takes one FMA issue slot: 1e6 x 2 / 1e13 = 2e-7 s
    assert compute_time_s(BIG_ADD, spec) == pytest.approx(2e-7)
    # max(2e-7, 12e6 / 1e12 = 1.2e-5, 1e-5) = 1.2e-5
    assert op_time_s(BIG_ADD, spec) == pytest.approx(1.2e-5)


def test_launch_bound_op() -> None:
    spec = _round_spec()
    # compute 10 x 2 / 1e13 = 2e-12, memory 120 / 1e12 = 1.2e-10, launch 1 x 1e-5
    assert op_time_s(TINY_ADD, spec) == pytest.approx(1e-5)
    three_kernels = OpCost(TINY_ADD.ops, 80, 40, kernels=3)
    # 3 kernels x 1e-5 = 3e-5
    assert op_time_s(three_kernels, spec) == pytest.approx(3e-5)


def test_special_functions_cost_eight_fma_slots() -> None:
    spec = _round_spec()
    exps = OpCost({(EXP, F.FP32, VECTOR): 1e9}, 0, 0, kernels=0)
    # 1e9 exps x 16 FLOP-equivalents / 1e13 = 1.6e-3 s
    assert op_time_s(exps, spec) == pytest.approx(1.6e-3)


def test_every_op_class_takes_its_issue_slots() -> None:
    spec = _round_spec()
    per_class = {
        op: compute_time_s(OpCost({(op, F.FP32, VECTOR): 1e9}, 0, 0, kernels=0), spec)
        for op in AluOp
    }
    # fma, add, mul, cmp: one FMA slot, 2 FLOP-equivalents: 1e9 x 2 / 1e13 = 2e-4 s
    # div, sqrt, exp: 8 slots, 16 FLOP-equivalents: 1e9 x 16 / 1e13 = 1.6e-3 s
    assert per_class == pytest.approx(
        {
            AluOp.FMA: 2e-4,
            AluOp.ADD: 2e-4,
            AluOp.MUL: 2e-4,
            AluOp.CMP: 2e-4,
            AluOp.DIV: 1.6e-3,
            AluOp.SQRT: 1.6e-3,
            AluOp.EXP: 1.6e-3,
        }
    )


def test_h100_sxm_bf16_matmul() -> None:
    h100 = find_hardware("h100-sxm")
    # 1e10 x 2 / 989.5e12 = 2.0212e-5 s; memory 3e6 / 3.35e12 = 8.96e-7; launch 5e-6
    assert op_time_s(BIG_MATMUL, h100) == pytest.approx(2e10 / 989.5e12)
    fp32 = OpCost({(FMA, F.FP32, MATRIX): 1e10}, 2_000_000, 1_000_000)
    # fp32 matmul without TF32 runs on the CUDA cores: 2e10 / 67e12 = 2.985e-4 s
    assert op_time_s(fp32, h100) == pytest.approx(2e10 / 67e12)


# --- fallbacks -----------------------------------------------------------------------------------


def test_missing_formats_fall_back_to_neighbours() -> None:
    spec = _round_spec(vector_flops={F.FP32: 1e13, F.FP16: 2e13})
    # BF16 vector -> FP16 vector: 2e13
    assert spec.peak_flops(VECTOR, F.BF16) == 2e13
    # fp8 vector -> FP16 vector: 2e13
    assert spec.peak_flops(VECTOR, F.FP8_E5M2) == 2e13
    # FP64 vector -> FP32 x 1/2 = 5e12
    assert spec.peak_flops(VECTOR, F.FP64) == 5e12
    # INT16 -> INT32 -> FP32 x 1/2 = 5e12
    assert spec.peak_flops(VECTOR, F.INT16) == 5e12
    # INT64 -> INT32 x 1/4 -> FP32 x 1/2: 1e13 / 8 = 1.25e12
    assert spec.peak_flops(VECTOR, F.INT64) == 1.25e12
    # TF32 matrix -> FP32 matrix (absent) -> FP32 vector: 1e13
    assert spec.peak_flops(MATRIX, F.TF32) == 1e13
    # FP16 matrix -> FP16 vector: 2e13
    assert spec.peak_flops(MATRIX, F.FP16) == 2e13
    # fp8 e5m2 matrix -> e4m3 -> FP16 matrix -> FP16 vector: 2e13
    assert spec.peak_flops(MATRIX, F.FP8_E5M2) == 2e13
    every = [spec.peak_flops(u, f) for u in Unit for f in NumberFormat]
    assert all(p > 0 and math.isfinite(p) for p in every)


def test_fallbacks_take_the_nearest_listed_neighbour() -> None:
    spec = _round_spec(
        matrix_flops={F.FP32: 2e13, F.FP16: 4e13, F.FP8_E4M3: 8e13},
        vector_flops={F.FP32: 1e13, F.INT8: 3e13, F.INT32: 5e12},
    )
    # TF32 matrix -> FP32 matrix (listed here): 2e13, not the vector rate
    assert spec.peak_flops(MATRIX, F.TF32) == 2e13
    # BF16 matrix -> FP16 matrix: 4e13
    assert spec.peak_flops(MATRIX, F.BF16) == 4e13
    # fp8 e5m2 matrix -> e4m3 matrix: 8e13
    assert spec.peak_flops(MATRIX, F.FP8_E5M2) == 8e13
    # bool vector -> INT8 vector: 3e13; INT16 vector -> INT32 vector: 5e12
    assert spec.peak_flops(VECTOR, F.BOOL) == 3e13
    assert spec.peak_flops(VECTOR, F.INT16) == 5e12


def test_every_builtin_spec_has_a_positive_peak_for_every_format() -> None:
    for spec in hardware_table().values():
        for unit in Unit:
            for fmt in NumberFormat:
                assert spec.peak_flops(unit, fmt) > 0, (spec.key, unit, fmt)
        assert spec.source


def test_spec_validation_errors() -> None:
    with pytest.raises(ValueError, match="fp32"):
        _round_spec(vector_flops={F.FP16: 1e13})
    with pytest.raises(ValueError, match="memory_bw_bytes_s"):
        _round_spec(memory_bw_bytes_s=0)
    with pytest.raises(ValueError, match="kind"):
        _round_spec(kind="tpu")
    with pytest.raises(ValueError, match="number format"):
        _round_spec(matrix_flops={"fp7": 1e15})


# --- StepProfile.op_costs ------------------------------------------------------------------------


def _linear_step(d_in: int = 64, d_out: int = 32, batch: int = 16) -> StepProfile:
    torch.manual_seed(0)
    model = torch.nn.Linear(d_in, d_out)
    return profile(model, torch.randn(batch, d_in), train=True, optimizer="sgd")


def test_op_costs_cover_the_step() -> None:
    p = _linear_step()
    assert p.op_costs
    assert math.isclose(sum(c.kernels * n for c, n in p.op_costs), p.kernels)
    assert math.isclose(sum((c.bytes_read + c.bytes_written) * n for c, n in p.op_costs), p.bytes)
    assert "op_costs" not in p.to_dict()


def test_op_costs_add_scale_and_sum() -> None:
    p = _linear_step()
    doubled = p + p
    # the same OpCost objects: calls add, no new entries
    assert [id(c) for c, _ in doubled.op_costs] == [id(c) for c, _ in p.op_costs]
    assert [n for _, n in doubled.op_costs] == [2 * n for _, n in p.op_costs]
    assert [n for _, n in p.scaled(0.5).op_costs] == [0.5 * n for _, n in p.op_costs]
    three = StepProfile.sum([p, p, p])
    assert [n for _, n in three.op_costs] == [3 * n for _, n in p.op_costs]
    # distinct objects stay distinct, even when equal
    other = StepProfile(op_costs=((OpCost(dict(TINY_ADD.ops), 80, 40), 1),))
    assert len((p + other).op_costs) == len(p.op_costs) + 1
    assert (StepProfile() + p).op_costs == p.op_costs


# --- the roofline of a step ----------------------------------------------------------------------


def test_hand_made_profile_roofline_and_breakdown() -> None:
    spec = _round_spec()
    p = StepProfile(op_costs=((BIG_MATMUL, 3), (BIG_ADD, 2), (TINY_ADD, 1)))
    # 3 x 2e-5 + 2 x 1.2e-5 + 1 x 1e-5 = 6e-5 + 2.4e-5 + 1e-5 = 9.4e-5 s
    assert roofline_s(p, spec) == pytest.approx(9.4e-5)
    b = roofline_breakdown(p, spec)
    assert b.total_s == pytest.approx(9.4e-5)
    assert b.compute_bound_s == pytest.approx(6e-5)
    assert b.memory_bound_s == pytest.approx(2.4e-5)
    assert b.launch_bound_s == pytest.approx(1e-5)


def test_breakdown_ties_go_to_compute_then_memory() -> None:
    spec = _round_spec()
    # compute 5e5 x 2 / 1e13 = 1e-7 s, memory 1e5 / 1e12 = 1e-7 s, no launch: a tie
    even = OpCost({(ADD, F.FP32, VECTOR): 5e5}, bytes_read=100_000, bytes_written=0, kernels=0)
    # compute 0, memory 1e7 / 1e12 = 1e-5 s, launch 1 x 1e-5 s: a tie
    level = OpCost({}, bytes_read=10_000_000, bytes_written=0, kernels=1)
    b = roofline_breakdown(StepProfile(op_costs=((even, 1), (level, 1))), spec)
    assert (b.compute_bound_s, b.memory_bound_s, b.launch_bound_s) == (1e-7, 1e-5, 0.0)


def test_real_step_roofline_is_the_sum_over_op_costs() -> None:
    p = _linear_step()
    h100 = find_hardware("h100-sxm")
    expected = math.fsum(op_time_s(c, h100) * n for c, n in p.op_costs)
    assert roofline_s(p, h100) == pytest.approx(expected)
    assert expected > 0
    # each kernel takes at least its launch cost
    assert roofline_s(p, h100) >= p.kernels * h100.launch_s
    b = roofline_breakdown(p, h100)
    assert b.compute_bound_s + b.memory_bound_s + b.launch_bound_s == pytest.approx(b.total_s)


def test_bigger_model_has_larger_roofline() -> None:
    cpu = cpu_spec(cores=4, ghz=2.0)
    small, big = _linear_step(64, 64, 128), _linear_step(512, 512, 128)
    assert roofline_s(big, cpu) > roofline_s(small, cpu)


def test_bf16_autocast_matmul_computes_faster_on_h100() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(256, 256)
    x = torch.randn(64, 256)
    fp32 = profile(model, x, train=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = profile(model, x, train=True)
    assert any(f is F.BF16 and u is MATRIX for _, f, u in bf16.counts)
    h100 = find_hardware("h100-sxm")

    def compute_s(p: StepProfile) -> float:
        return math.fsum(compute_time_s(c, h100) * n for c, n in p.op_costs)

    assert compute_s(bf16) < compute_s(fp32)


def test_profile_without_op_costs_is_refused() -> None:
    assert roofline_s(StepProfile(), find_hardware("h100-sxm")) == 0.0
    hand_made = StepProfile(kernels=3, bytes_read=100)
    with pytest.raises(ValueError, match="op_costs"):
        roofline_s(hand_made, find_hardware("h100-sxm"))


# --- the table, lookup, detection ----------------------------------------------------------------


def test_builtin_table_figures() -> None:
    table = hardware_table()
    for key in (
        "h100-sxm", "h100-pcie", "h200", "a100-sxm-80gb", "a100-sxm-40gb", "a100-pcie-80gb",
        "v100-sxm2", "l4", "l40s", "a10", "t4", "rtx-4090", "rtx-3090", "cpu",
    ):  # fmt: skip
        assert key in table
    h100 = table["h100-sxm"]
    # datasheet: TF32 989 TFLOPS with sparsity -> 494.5 dense; BF16 1979* -> 989.5; FP8 3958*
    assert h100.peak_flops(MATRIX, F.TF32) == pytest.approx(494.5e12)
    assert h100.peak_flops(MATRIX, F.BF16) == pytest.approx(989.5e12)
    assert h100.peak_flops(MATRIX, F.FP8_E4M3) == pytest.approx(1979e12)
    assert h100.peak_flops(MATRIX, F.INT8) == pytest.approx(1979e12)
    assert h100.peak_flops(MATRIX, F.FP64) == pytest.approx(67e12)
    assert h100.peak_flops(VECTOR, F.FP64) == pytest.approx(34e12)
    # non-tensor bf16 packed two per lane: 2 x 67 = 134 TFLOPS
    assert h100.peak_flops(VECTOR, F.BF16) == pytest.approx(134e12)
    assert h100.memory_bw_bytes_s == pytest.approx(3.35e12)


@pytest.mark.parametrize(
    ("device_name", "key"),
    [
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        ("NVIDIA H100 NVL", "h100-nvl"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA A100-SXM4-40GB", "a100-sxm-40gb"),
        ("NVIDIA A100 80GB PCIe", "a100-pcie-80gb"),
        ("NVIDIA A10", "a10"),  # not the A100: matches are whole tokens
        ("NVIDIA L4", "l4"),
        ("NVIDIA L40S", "l40s"),
        ("Tesla T4", "t4"),
        ("NVIDIA GeForce RTX 4090", "rtx-4090"),
    ],
)
def test_find_hardware_by_device_name(device_name: str, key: str) -> None:
    assert find_hardware(device_name).key == key


def test_find_hardware_unknown_name() -> None:
    with pytest.raises(ValueError) as err:
        find_hardware("NVIDIA Quantum Flux 9000")
    text = str(err.value)
    assert "'NVIDIA Quantum Flux 9000'" in text
    assert "h100-sxm" in text and "rtx-3090" in text  # the known keys
    assert "register_hardware" in text and "[[hardware]]" in text  # the fix


def test_detect_cuda_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 PCIe")
    assert detect_hardware().key == "h100-pcie"
    assert detect_hardware(0).key == "h100-pcie"
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA Mystery GPU")
    with pytest.raises(ValueError, match="load_hardware"):
        detect_hardware("cuda:0")


def _cpuinfo(tmp_path: Path, model: str, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    block = f"processor\t: 0\nmodel name\t: {model}\nflags\t\t: {flags}\n\n"
    path.write_text(block * 2, encoding="utf-8")
    return path


def test_cpu_from_cpuinfo(tmp_path: Path) -> None:
    path = _cpuinfo(tmp_path, "Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz", "fpu sse avx avx2 fma")
    spec = cpu_from_cpuinfo(path, cores=4)
    assert spec.kind == "cpu" and "E5-2686" in spec.name
    # AVX2 + FMA: 4 cores x 2.3e9 Hz x (2 FMA units x 8 lanes x 2 FLOPs = 32) = 2.944e11
    assert spec.peak_flops(VECTOR, F.FP32) == pytest.approx(2.944e11)
    assert spec.peak_flops(MATRIX, F.FP32) == pytest.approx(2.944e11)
    # two DDR4-2400 channels: 2 x 19.2e9 = 3.84e10 B/s
    assert spec.memory_bw_bytes_s == pytest.approx(3.84e10)
    amx = cpu_from_cpuinfo(
        _cpuinfo(tmp_path, "Intel(R) Xeon(R) Platinum 8480+", "avx2 fma avx512f amx_bf16"),
        cores=2,
    )
    # no clock in the name: 2.5 GHz; AMX bf16: 2 x 2.5e9 x 1024 = 5.12e12
    assert amx.peak_flops(MATRIX, F.BF16) == pytest.approx(5.12e12)
    # AVX-512: 2 x 2.5e9 x 64 = 3.2e11
    assert amx.peak_flops(VECTOR, F.FP32) == pytest.approx(3.2e11)
    missing = cpu_from_cpuinfo(tmp_path / "absent", cores=1)
    # SSE only: 1 x 2.5e9 x 8 = 2e10
    assert missing.peak_flops(VECTOR, F.FP32) == pytest.approx(2e10)


def test_detect_cpu_and_registered_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = _cpuinfo(tmp_path, "AMD EPYC 7R13 Processor", "avx avx2 fma")
    assert "EPYC 7R13" in detect_hardware(cpuinfo_path=path).name
    mine = cpu_spec(cores=8, ghz=3.0, memory_bw_bytes_s=100e9, name="my workstation")
    register_hardware(mine)
    assert detect_hardware("cpu", cpuinfo_path=path) is mine
    assert find_hardware("cpu") is mine


def test_register_hardware_overrides_and_matches() -> None:
    spec = _round_spec(key="h100-sxm", match=("h100 80gb hbm3",))
    register_hardware(spec)
    assert find_hardware("h100-sxm") is spec
    assert find_hardware("NVIDIA H100 80GB HBM3") is spec
    with pytest.raises(TypeError, match="HardwareSpec"):
        register_hardware({"key": "x"})  # type: ignore[arg-type]


# --- hardware files ------------------------------------------------------------------------------

TOML = """
[[hardware]]
key = "my-gpu"
name = "My GPU"
kind = "gpu"
memory_bw_bytes_s = 1.0e12
launch_s = 4e-6
tdp_w = 300
match = ["my gpu"]
source = "vendor datasheet"
[hardware.matrix_flops]
bf16 = 3.0e14
float32 = 2.0e13
[hardware.vector_flops]
fp32 = 2.0e13
"""


def test_load_hardware_toml(tmp_path: Path) -> None:
    path = tmp_path / "hw.toml"
    path.write_text(TOML, encoding="utf-8")
    (spec,) = load_hardware(path)
    assert spec.matrix_flops == {F.BF16: 3e14, F.FP32: 2e13}
    assert spec.launch_s == 4e-6 and spec.tdp_w == 300 and spec.idle_power_w is None
    assert find_hardware("my-gpu") is spec
    assert find_hardware("ACME My GPU rev 2") is spec


def test_load_hardware_json_round_trip(tmp_path: Path) -> None:
    original = find_hardware("a100-sxm-80gb")
    entry = {**original.to_dict(), "key": "a100-copy", "match": ["a100 copy"]}
    path = tmp_path / "hw.json"
    path.write_text(json.dumps({"hardware": [entry]}), encoding="utf-8")
    (spec,) = load_hardware(path, register=False)
    assert spec.key == "a100-copy" and "a100-copy" not in hardware_table()
    for name in ("matrix_flops", "vector_flops", "memory_bw_bytes_s", "launch_s", "tdp_w"):
        assert getattr(spec, name) == getattr(original, name)


@pytest.mark.parametrize(
    ("suffix", "text", "expected"),
    [
        (".toml", "[[hardware]\nkey = ", "expected valid TOML"),
        (".json", '{"hardware": {}}', "non-empty list 'hardware'"),
        (".json", '{"gpus": []}', "found \\['gpus'\\]"),
        (".toml", TOML.replace("memory_bw_bytes_s = 1.0e12\n", ""), "missing \\['memory_bw"),
        (".toml", TOML.replace("tdp_w = 300", "tdp_watts = 300"), "unknown \\['tdp_watts'\\]"),
        (".toml", TOML.replace("fp32 = 2.0e13", "fp16 = 2.0e13"), "to list fp32"),
        (".toml", TOML.replace("bf16 = 3.0e14", "bf17 = 3.0e14"), "number format"),
        (".toml", TOML.replace("bf16 = 3.0e14", 'bf16 = "fast"'), "positive finite"),
    ],
)
def test_load_hardware_malformed(tmp_path: Path, suffix: str, text: str, expected: str) -> None:
    path = tmp_path / f"hw{suffix}"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=expected) as err:
        load_hardware(path)
    assert str(path) in str(err.value) and "fix:" in str(err.value)


def test_load_hardware_bad_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="check the path"):
        load_hardware(tmp_path / "absent.toml")
    with pytest.raises(ValueError, match=r"\.toml or \.json"):
        load_hardware(tmp_path / "hw.yaml")


def test_a_spec_pickles_and_deep_copies() -> None:
    import copy
    import pickle

    # ddp_spawn pickles what its workers need; the read-only rate tables made pickle refuse
    # every spec ("cannot pickle 'mappingproxy' object"), built-in or registered.
    for spec in (find_hardware("h100-sxm"), detect_hardware("cpu")):
        again = pickle.loads(pickle.dumps(spec))
        assert again == spec and copy.deepcopy(spec) == spec
        # the same peaks after the round trip (h100-sxm: dense bf16 matrix 989.5 TFLOP/s)
        assert again.peak_flops(Unit.MATRIX, NumberFormat.BF16) == spec.peak_flops(
            Unit.MATRIX, NumberFormat.BF16
        )
