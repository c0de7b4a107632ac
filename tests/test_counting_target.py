"""Counting a step for a target device, on meta tensors, with CUDA's dispatch rules."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

from lightning_to_energy.counting import profile
from lightning_to_energy.counting.cost_model import AluOp, NumberFormat, Unit
from lightning_to_energy.counting.target import (
    CountTarget,
    MetaCountingError,
    active_target,
    counting_for,
    resolve_target,
)
from lightning_to_energy.hardware.specs import HardwareSpec, find_hardware, hardware_table

FP32, TF32 = NumberFormat.FP32, NumberFormat.TF32
FMA, MATRIX = AluOp.FMA, Unit.MATRIX


@pytest.fixture
def default_tf32() -> Iterator[None]:
    """PyTorch's defaults (cuDNN TF32 on, matmul TF32 off), restored afterwards."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = True
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _convnet() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


def test_hardware_table_gpus_carry_compute_capability() -> None:
    assert find_hardware("h100-sxm").compute_capability == (9, 0)
    assert find_hardware("a100-sxm-80gb").compute_capability == (8, 0)
    assert find_hardware("t4").compute_capability == (7, 5)
    gpus = [s for s in hardware_table().values() if s.kind == "gpu"]
    assert gpus and all(s.compute_capability is not None for s in gpus)


def test_compute_capability_survives_to_dict_and_is_checked() -> None:
    spec = find_hardware("l4")
    assert spec.to_dict()["compute_capability"] == [8, 9]
    with pytest.raises(ValueError, match="compute_capability"):
        HardwareSpec(
            key="x",
            name="x",
            kind="gpu",
            matrix_flops={"fp32": 1e12},
            vector_flops={"fp32": 1e12},
            memory_bw_bytes_s=1e12,
            launch_s=0.0,
            compute_capability=(9,),  # type: ignore[arg-type]
        )


def test_resolve_target() -> None:
    assert resolve_target(None) is None
    t = resolve_target("h100-sxm")
    assert t == CountTarget("h100-sxm", find_hardware("h100-sxm").name, True, (9, 0))
    assert resolve_target(find_hardware("cpu")).cuda is False  # type: ignore[union-attr]


def test_bad_target_lists_the_known_keys() -> None:
    with pytest.raises(ValueError, match="h100-sxm") as info:
        profile(nn.Linear(2, 2), torch.randn(1, 2), hardware="h900")
    assert "a100-sxm-80gb" in str(info.value)
    with pytest.raises(ValueError, match="HardwareSpec"):
        resolve_target(42)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_cuda_target_without_a_gpu_says_what_to_do() -> None:
    with pytest.raises(ValueError, match="hardware='h100-sxm'"):
        resolve_target("cuda")


def test_counting_for_nests_and_restores() -> None:
    t = CountTarget("h100-sxm", "H100", True, (9, 0))
    with counting_for(t):
        assert active_target() is t
        with counting_for(None):
            assert active_target() is None
        assert active_target() is t
    assert active_target() is None


def test_h100_counts_conv_as_tf32_and_matmul_as_fp32(default_tf32: None) -> None:
    x = torch.randn(2, 3, 8, 8)
    model = _convnet()
    here = profile(model, x)
    h100 = profile(model, x, hardware="h100-sxm")
    # conv: N * prod(out) * C_out * C_in * k*k = 2 * 36 * 4 * 3 * 9 = 7776 FMA
    assert h100.counts[(FMA, TF32, MATRIX)] == 7776
    # linear: 2 * 144 * 5 = 1440 FMA, fp32 (matmul TF32 is off by default)
    assert h100.counts[(FMA, FP32, MATRIX)] == 1440
    assert (FMA, TF32, MATRIX) not in here.counts
    # the CPU counts both in fp32: 7776 + 1440 = 9216
    assert here.counts[(FMA, FP32, MATRIX)] == 9216
    # FLOPs do not depend on the format: 2 * 9216 = 18432
    assert h100.flops == here.flops == 18432
    # cuDNN's bias add is a second kernel: conv 2 + relu 1 + addmm 1 = 4 (CPU: 3)
    assert h100.kernels == 4
    assert here.kernels == 3


def test_user_tf32_flags_decide(default_tf32: None) -> None:
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = False
    p = profile(_convnet(), torch.randn(2, 3, 8, 8), hardware="h100-sxm")
    # now the conv's 7776 FMA stay fp32 and the linear's 1440 run in TF32
    assert p.counts[(FMA, FP32, MATRIX)] == 7776
    assert p.counts[(FMA, TF32, MATRIX)] == 1440


def test_cpu_target_applies_no_cuda_rule(default_tf32: None) -> None:
    p = profile(_convnet(), torch.randn(2, 3, 8, 8), hardware="cpu")
    # 7776 + 1440 = 9216 FMA, all fp32, and one conv kernel
    assert p.counts[(FMA, FP32, MATRIX)] == 9216
    assert p.kernels == 3


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_optimizer_takes_the_foreach_path_on_cuda(name: str) -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(3, 4)
    here = profile(model, x, train=True, optimizer=name)
    h100 = profile(model, x, train=True, optimizer=name, hardware="h100-sxm")
    opt_ops_h100 = {k for k in h100.by_op if k.startswith("aten._foreach")}
    assert opt_ops_h100, sorted(h100.by_op)
    assert not any(k.startswith("aten._foreach") for k in here.by_op)
    # foreach launches one kernel per op over the 4 parameters; the CPU loop one per parameter
    assert h100.by_phase["optimizer"].kernels < here.by_phase["optimizer"].kernels
    # the same arithmetic either way, and the same model FLOPs
    assert h100.flops == here.flops
    assert h100.by_phase["optimizer"].tos == pytest.approx(here.by_phase["optimizer"].tos)


@pytest.mark.parametrize(
    ("cls", "op"),
    [(torch.optim.AdamW, "aten._fused_adamw_"), (torch.optim.SGD, "aten._fused_sgd_")],
)
def test_fused_optimizer_is_counted_as_its_fused_kernel(cls: type, op: str) -> None:
    model = nn.Linear(4, 2)
    opt = cls(model.parameters(), lr=1e-3, fused=True)
    p = profile(model, torch.randn(3, 4), train=True, optimizer=opt, hardware="h100-sxm")
    # one fused kernel for the two parameters (weight, bias) of one dtype and device
    assert p.by_op[op].calls == 1
    assert p.by_op[op].kernels == 1
    assert p.unmodelled_ops == {}
    assert not opt.state  # the user's optimizer never stepped


def test_user_model_and_optimizer_are_untouched() -> None:
    model = nn.Linear(4, 2)
    before = [t.clone() for t in model.state_dict().values()]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    profile(model, torch.randn(3, 4), train=True, optimizer=opt, hardware="h100-sxm")
    assert all(p.grad is None for p in model.parameters())
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.state_dict().values(), strict=True))
    assert not opt.state


def test_meta_built_model_counts_without_materialising() -> None:
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 4))
    x = torch.empty(8, 16, device="meta")
    p = profile(model, x, train=True, optimizer="adamw", hardware="h100-sxm")
    # forward FLOPs 2 * 8 * (16*32 + 32*4) = 10240; backward twice that except the first
    # layer's input grad (x needs none): 2 * 8 * (16*32 + 2*32*4) = 12288; total 22528
    assert p.flops == 22528
    assert all(t.device.type == "meta" for t in model.parameters())
    assert all(t.grad is None for t in model.parameters())


def test_meta_counts_equal_real_counts_for_a_cpu_target() -> None:
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    x = torch.randn(4, 6)
    here = profile(model, x, train=True)
    meta = profile(model, x, train=True, hardware="cpu")
    assert meta.same_work(here)
    assert dict(meta.by_module) == dict(here.by_module)


class _Masked(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        y = self.proj(x)
        return y if mask is None else y * mask


@pytest.mark.parametrize("hardware", [None, "h100-sxm"])
def test_keyword_inputs_reach_the_model(hardware: str | None) -> None:
    x, mask = torch.randn(2, 4), torch.ones(2, 4)
    plain = profile(_Masked(), x, hardware=hardware)
    masked = profile(_Masked(), x, kwargs={"mask": mask}, hardware=hardware)
    # the mask adds one multiply per output element: 2 * 4 = 8
    assert (
        masked.counts[(AluOp.MUL, FP32, Unit.VECTOR)]
        - plain.counts.get((AluOp.MUL, FP32, Unit.VECTOR), 0)
        == 8
    )


# --- the CLI ----------------------------------------------------------------------------------


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any], str]:
    from lightning_to_energy import cli

    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else {}), err


def test_profile_target_counts_on_meta_as_the_gpu_runs_it(
    capsys: pytest.CaptureFixture[str], default_tf32: None
) -> None:
    argv = ["profile", "_models:TinyCNN", "--input", "4x3x16x16", "--train", "--optimizer", "sgd"]
    code, here, err = _cli(capsys, *argv, "--json")
    assert (code, err) == (0, "")
    code, h100, err = _cli(capsys, *argv, "--target", "h100-sxm", "--json")
    assert (code, err) == (0, "")
    assert (h100["device"], h100["counted_for"]) == ("meta", "h100-sxm")
    assert (here["device"], here["counted_for"]) == ("cpu", None)
    # same FLOPs; on the H100 the convolutions run in TF32 and the linear head in fp32
    assert h100["flops"] == here["flops"]
    assert h100["tos_matrix_tf32"] > 0 and here["tos_matrix_tf32"] == 0
    assert any(op.startswith("aten._foreach") for op in h100["by_op"])


def test_profile_target_errors(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(capsys, "profile", "_models:TinyMLP", "--input", "8x16", "--target", "h900")
    assert code == 2 and "h100-sxm" in err and "'h900'" in err
    code, _, err = _cli(
        capsys, "profile", "_models:TinyMLP", "--input", "8x16", "--target", "h100-sxm",
        "--device", "cuda",
    )  # fmt: skip
    assert code == 2 and "found both" in err


def test_named_inputs_on_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["profile", "test_counting_target:_Masked", "--input", "2x4", "--json"]
    code, plain, err = _cli(capsys, *base)
    assert (code, err) == (0, "")
    code, masked, err = _cli(capsys, *base, "--input", "mask=2x4")
    assert (code, err) == (0, "")
    # the mask multiplies each of the 2 * 4 = 8 outputs once
    assert masked["counts"]["mul:fp32:vector"] - plain["counts"].get("mul:fp32:vector", 0) == 8
    code, _, err = _cli(capsys, *base, "--input", "2bad=2x4")
    assert code == 2 and "NAME=SHAPE" in err


# --- models that cannot run on meta -------------------------------------------------------------


class _DataDependent(nn.Module):
    """Keeps the positive activations only: an output size that depends on values."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x)
        return y[torch.nonzero(y > -1e9, as_tuple=True)].sum()


def test_an_op_that_cannot_run_on_meta_is_named() -> None:
    with pytest.raises(MetaCountingError, match=r"aten\.nonzero") as info:
        profile(_DataDependent(), torch.randn(2, 4), train=True, hardware="h100-sxm")
    assert info.value.op.startswith("aten.nonzero")
    assert "fallback='cpu'" in str(info.value)


def test_cpu_fallback_counts_with_the_targets_rules(default_tf32: None) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), _DataDependentHead())
    x = torch.randn(2, 3, 8, 8)
    with pytest.warns(RuntimeWarning, match=r"aten\.nonzero.*on the CPU instead"):
        p = profile(model, x, train=True, optimizer="sgd", hardware="h100-sxm", fallback="cpu")
    # conv: 2 * 36 * 4 * 3 * 9 = 7776 FMA forward and 7776 for the weight gradient (the input
    # needs none): 15552, in TF32 (the H100's default); SGD on the foreach path
    assert p.counts[(FMA, TF32, MATRIX)] == 15552
    assert "aten._foreach_add_" in p.by_op
    assert all(t.grad is None for t in model.parameters())
    with torch.device("meta"):
        on_meta = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), _DataDependentHead())
    with pytest.warns(RuntimeWarning, match="on the CPU instead"):
        q = profile(on_meta, x, train=True, hardware="h100-sxm", fallback="cpu")
    assert q.counts[(FMA, TF32, MATRIX)] == 15552
    assert all(t.device.type == "meta" for t in on_meta.parameters())


class _DataDependentHead(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[torch.nonzero(x > -1e9, as_tuple=True)].sum()
