"""CUDA's dispatch choices applied to a step counted on meta tensors for a CUDA target."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_to_energy.counting import profile
from lightning_to_energy.counting.cost_model import AluOp, NumberFormat, Unit
from lightning_to_energy.counting.cuda_rules import EFFICIENT, FLASH, MATH, sdpa_backend

BF16, FP32 = NumberFormat.BF16, NumberFormat.FP32


def _qkv(dtype: torch.dtype, d: int = 64, s_q: int = 16, s_k: int = 16) -> list[torch.Tensor]:
    return [torch.empty(2, 4, s, d, dtype=dtype, device="meta") for s in (s_q, s_k, s_k)]


def _backend(
    dtype: torch.dtype,
    cc: tuple[int, int] | None = (9, 0),
    *,
    d: int = 64,
    mask: bool = False,
    causal: bool = False,
    s_k: int = 16,
) -> str:
    q, k, v = _qkv(dtype, d, s_k=s_k)
    m = torch.empty(2, 4, 16, s_k, dtype=torch.bool, device="meta") if mask else None
    return sdpa_backend(
        q, k, v, attn_mask=m, dropout_p=0.0, is_causal=causal, enable_gqa=False,
        compute_capability=cc, needs_grad=True,
    )  # fmt: skip


@pytest.fixture
def sdp_flags() -> Iterator[None]:
    old = (
        torch.backends.cuda.flash_sdp_enabled(),
        torch.backends.cuda.mem_efficient_sdp_enabled(),
    )
    yield
    torch.backends.cuda.enable_flash_sdp(old[0])
    torch.backends.cuda.enable_mem_efficient_sdp(old[1])


def test_sdpa_backend_follows_cuda_selection(sdp_flags: None) -> None:
    # flash needs fp16/bf16; fp32 goes to the memory-efficient kernel on sm90
    assert _backend(torch.bfloat16) == FLASH
    assert _backend(torch.float32) == EFFICIENT
    # flash takes no mask and no causal mask with s_q != s_k
    assert _backend(torch.bfloat16, mask=True) == EFFICIENT
    assert _backend(torch.bfloat16, causal=True, s_k=32) == EFFICIENT
    # below sm80: no flash, and the efficient kernel has no bf16
    assert _backend(torch.float16, (7, 5)) == EFFICIENT
    assert _backend(torch.bfloat16, (7, 5)) == MATH
    # fp32 on sm80+ needs the head dim aligned to 4: 6 % 4 != 0
    assert _backend(torch.float32, d=6) == MATH
    # head dims above 256 rule flash out
    assert _backend(torch.bfloat16, d=512) == EFFICIENT
    torch.backends.cuda.enable_flash_sdp(False)
    assert _backend(torch.bfloat16) == EFFICIENT
    torch.backends.cuda.enable_mem_efficient_sdp(False)
    assert _backend(torch.bfloat16) == MATH


class _Attention(nn.Module):
    def __init__(self, dim: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mha(x, x, x, need_weights=False)[0]


def test_fp32_attention_counts_the_efficient_kernel_and_its_flops() -> None:
    model, x = _Attention(), torch.randn(2, 8, 8)
    h100 = profile(model, x, train=True, hardware="h100-sxm")
    math_path = profile(model, x, train=True, hardware="cpu")
    assert "aten._scaled_dot_product_efficient_attention" in h100.by_op
    assert "aten._scaled_dot_product_efficient_attention_backward" in h100.by_op
    assert "aten.bmm" not in h100.by_op and "aten.bmm" in math_path.by_op
    # b * h * s_q * s_k * d = 2 * 2 * 8 * 8 * 4 = 1024; the fused backward recomputes
    # Q K^T (2 * 1024 FLOPs more than the math path's backward, as FlopCounterMode counts it)
    assert h100.flops - math_path.flops == 2048


def test_dropout_is_one_native_dropout_kernel() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    x = torch.randn(3, 4)
    h100 = profile(model, x, train=True, hardware="h100-sxm")
    here = profile(model, x, train=True, hardware="cpu")
    assert h100.by_op["aten.native_dropout"].calls == 1
    assert h100.by_op["aten.native_dropout_backward"].calls == 1
    assert "aten.bernoulli_" not in h100.by_op and "aten.bernoulli_" in here.by_op
    model.eval()  # no dropout kernel at all in eval mode
    assert "aten.native_dropout" not in profile(model, x, hardware="h100-sxm").by_op


def test_cuda_autocast_keeps_layer_norm_in_fp32() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8))
    x = torch.randn(4, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        p = profile(model, x, hardware="h100-sxm")
    # the linear runs in bf16: 4 * 8 * 8 = 256 FMA, none in fp32
    assert p.counts[(AluOp.FMA, BF16, Unit.MATRIX)] == 256
    assert (AluOp.FMA, FP32, Unit.MATRIX) not in p.counts
    # casts: the linear's input, weight and bias to bf16 (3), layer norm's input back to fp32 (1)
    assert p.by_op["aten._to_copy"].calls == 4
    # without autocast nothing is cast
    assert "aten._to_copy" not in profile(model, x, hardware="h100-sxm").by_op


def test_autocast_casts_a_tied_weight_once_per_step() -> None:
    lin = nn.Linear(8, 8, bias=False)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        p = profile(model, torch.randn(2, 8), hardware="h100-sxm")
    # the input once and the shared weight once (cached), not twice: 2 casts
    assert p.by_op["aten._to_copy"].calls == 2


class _LinearInBackward(torch.autograd.Function):
    """Identity forward; a backward that runs ``F.linear`` (a composite on autocast's list)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(w)
        return x.clone()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        (w,) = ctx.saved_tensors
        return F.linear(g, w), None


def test_backward_runs_outside_the_autocast_region() -> None:
    w = torch.randn(4, 4)
    x = torch.randn(2, 4, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        p = profile(lambda x: _LinearInBackward.apply(x, w), x, train=True, hardware="h100-sxm")
    # backward's linear: [2, 4] x [4, 4] = 2 * 4 * 4 = 32 FMA, kept in fp32 (no cast)
    assert p.counts[(AluOp.FMA, FP32, Unit.MATRIX)] == 32
    assert (AluOp.FMA, BF16, Unit.MATRIX) not in p.counts
