"""Tests of the vector-unit formulas (counting/formulas/vector.py).

Each test captures the real aten call of a tiny snippet (tests/_capture.py), applies the formula
registered for its packet and compares with counts worked out by hand in the comment above.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from _capture import capture, one_call
from lightning_to_energy.counting.cost_model import AluOp, NumberFormat, Unit
from lightning_to_energy.counting.formulas import vector
from lightning_to_energy.counting.registry import OpCall, OpCost, OpKey, formula_for

aten = torch.ops.aten
FP32, BF16, INT32, INT64 = (
    NumberFormat.FP32,
    NumberFormat.BF16,
    NumberFormat.INT32,
    NumberFormat.INT64,
)


def ops(fmt: NumberFormat = FP32, **counts: float) -> dict[OpKey, float]:
    """Expected counts, e.g. ``ops(cmp=6)`` -> {(CMP, fp32, vector): 6}."""
    return {(AluOp(name), fmt, Unit.VECTOR): float(n) for name, n in counts.items() if n}


def cost_of(snippet: Callable[[], Any], packet: Any) -> OpCost:
    call = one_call(snippet, packet)
    formula = formula_for(packet)
    assert formula is not None, f"no formula registered for {packet}"
    return formula(call)


def apply(call: OpCall) -> OpCost:
    formula = formula_for(call.packet)
    assert formula is not None, f"no formula registered for {call.packet}"
    return formula(call)


def x23(dtype: torch.dtype = torch.float32, grad: bool = False) -> torch.Tensor:
    return torch.randn(2, 3, dtype=dtype).requires_grad_(grad)


# --- element-wise --------------------------------------------------------------------------


def test_relu_counts_one_compare_per_element_and_its_bytes() -> None:
    c = cost_of(lambda: torch.relu(x23()), aten.relu)
    # relu on 2x3: 6 elements x 1 cmp
    assert c.ops == ops(cmp=6)
    # 6 fp32 elements read and written: 6 * 4 = 24 bytes each way
    assert (c.bytes_read, c.bytes_written, c.kernels, c.flops) == (24, 24, 1, 0)


def test_relu_sigmoid_and_both_gelus_count_differently() -> None:
    relu = cost_of(lambda: torch.relu(x23()), aten.relu)
    sigmoid = cost_of(lambda: torch.sigmoid(x23()), aten.sigmoid)
    gelu = cost_of(lambda: F.gelu(x23()), aten.gelu)
    gelu_tanh = cost_of(lambda: F.gelu(x23(), approximate="tanh"), aten.gelu)
    # sigmoid = 1/(1+exp(-x)) on 2x3: 6 x (1 exp, 1 add, 1 div)
    assert sigmoid.ops == ops(exp=6, add=6, div=6)
    # gelu (erf) = 0.5*x*(1+erf(x/sqrt2)) on 2x3: 6 x (3 mul, 1 add, 1 exp)
    assert gelu.ops == ops(mul=18, add=6, exp=6)
    # gelu (tanh) = 0.5*x*(1+tanh(k*(x+c*x^3))) on 2x3: 6 x (6 mul, 2 add, 1 exp)
    assert gelu_tanh.ops == ops(mul=36, add=12, exp=6)
    assert len({str(sorted(c.ops.items())) for c in (relu, sigmoid, gelu, gelu_tanh)}) == 4


def test_in_place_and_out_of_place_agree() -> None:
    out_of_place = cost_of(lambda: torch.add(x23(), x23(), alpha=2), aten.add)
    in_place = cost_of(lambda: x23().add_(x23(), alpha=2), aten.add_)
    # a + 2*b on 2x3: 6 x (1 add, 1 mul)
    assert out_of_place.ops == in_place.ops == ops(add=6, mul=6)
    # both read two 2x3 fp32 tensors (48 bytes) and write one (24 bytes)
    assert (in_place.bytes_read, in_place.bytes_written) == (48, 24)
    relu_ = cost_of(lambda: x23().relu_(), aten.relu_)
    # relu_ on 2x3: 6 x 1 cmp, as relu
    assert relu_.ops == ops(cmp=6)


def test_broadcasting_counts_output_elements_and_reads_each_input_once() -> None:
    c = cost_of(lambda: torch.randn(4, 1) * torch.randn(1, 3), aten.mul)
    # (4,1) * (1,3) -> (4,3): 12 output elements x 1 mul
    assert c.ops == ops(mul=12)
    # reads 4 + 3 fp32 elements (28 bytes), writes 12 (48 bytes)
    assert (c.bytes_read, c.bytes_written) == (28, 48)
    expanded = cost_of(lambda: torch.randn(1, 3).expand(4, 3) + torch.randn(4, 3), aten.add)
    # an expanded (stride-0) operand is read once: 3 + 12 elements * 4 bytes = 60
    assert expanded.bytes_read == 60


def test_bf16_counts_in_bf16() -> None:
    c = cost_of(lambda: torch.sigmoid(x23(torch.bfloat16)), aten.sigmoid)
    # sigmoid on 2x3 bf16: 6 x (1 exp, 1 add, 1 div) in bf16; 6 * 2 bytes each way
    assert c.ops == ops(BF16, exp=6, add=6, div=6)
    assert (c.bytes_read, c.bytes_written) == (12, 12)


def test_integer_and_bool_dtypes_count_in_their_formats() -> None:
    ints = torch.arange(6, dtype=torch.int32).reshape(2, 3)
    c = cost_of(lambda: ints + ints, aten.add)
    # int32 add on 2x3: 6 x 1 add in int32 (x + x reads x once: 24 bytes)
    assert c.ops == ops(INT32, add=6)
    assert c.bytes_read == 24
    cmp = cost_of(lambda: x23() > 0.5, aten.gt)
    # a comparison computes in its inputs' format: 6 x 1 cmp in fp32; writes 6 bools (6 bytes)
    assert cmp.ops == ops(cmp=6)
    assert cmp.bytes_written == 6
    mask = torch.ones(2, 3, dtype=torch.bool)
    logic = cost_of(lambda: torch.logical_and(mask, mask), aten.logical_and)
    # logical_and on 2x3 bools: 6 x 1 cmp in bool
    assert logic.ops == ops(NumberFormat.BOOL, cmp=6)


def test_unsigned_integers_count_in_their_width_not_fp32() -> None:
    # uint16/32/64 were counted as fp32 (the default for dtypes the table did not list)
    for dtype, fmt in (
        (torch.uint8, NumberFormat.INT8),
        (torch.uint16, NumberFormat.INT16),
        (torch.uint32, NumberFormat.INT32),
        (torch.uint64, NumberFormat.INT64),
    ):
        u = torch.ones(2, 3, dtype=dtype)
        c = cost_of(functools.partial(torch.bitwise_and, u, u), aten.bitwise_and)
        # bitwise_and on 2x3: 6 x 1 cmp-class op in the unsigned type's width
        assert c.ops == ops(fmt, cmp=6), dtype


@pytest.mark.parametrize(
    ("snippet", "packet", "expected"),
    [
        # x ** 2 on 2x3: 6 x 1 mul
        (lambda: x23() ** 2, aten.pow, ops(mul=6)),
        # x ** 3 on 2x3: 6 x 2 mul
        (lambda: x23() ** 3, aten.pow, ops(mul=12)),
        # x ** 0.5 on 2x3: 6 x 1 sqrt
        (lambda: x23().abs() ** 0.5, aten.pow, ops(sqrt=6)),
        # x ** 2.5 = exp(2.5 * log x) on 2x3: 6 x (2 exp, 1 mul)
        (lambda: x23().abs() ** 2.5, aten.pow, ops(exp=12, mul=6)),
        # x ** y = exp(y * log x) on 2x3: 6 x (2 exp, 1 mul)
        (lambda: torch.pow(x23().abs(), x23()), aten.pow, ops(exp=12, mul=6)),
        # 2 ** x = exp(x * log 2), log 2 once: 6 x (1 exp, 1 mul)
        (lambda: torch.pow(2.0, x23()), aten.pow, ops(exp=6, mul=6)),
    ],
    ids=["square", "cube", "sqrt", "general", "tensor-tensor", "scalar-base"],
)
def test_pow(snippet: Callable[[], Any], packet: Any, expected: dict[OpKey, float]) -> None:
    assert cost_of(snippet, packet).ops == expected


@pytest.mark.parametrize(
    ("snippet", "packet", "expected"),
    [
        # x + 1 (Scalar overload) on 2x3: 6 x 1 add
        (lambda: torch.add(x23(), 1.0), aten.add, ops(add=6)),
        # 1 - x (rsub) on 2x3: 6 x 1 add
        (lambda: torch.rsub(x23(), 1.0), aten.rsub, ops(add=6)),
        # x / y on 2x3: 6 x 1 div
        (lambda: x23() / x23(), aten.div, ops(div=6)),
        # floor(x / 2) on 2x3: 6 x (1 div, 1 add-class rounding)
        (lambda: torch.div(x23(), 2.0, rounding_mode="floor"), aten.div, ops(div=6, add=6)),
        # x + 2*y*z on 2x3: 6 x (2 mul, 1 add)
        (lambda: torch.addcmul(x23(), x23(), x23(), value=2), aten.addcmul, ops(mul=12, add=6)),
        # x + y/z (value 1) on 2x3: 6 x (1 div, 1 add)
        (lambda: torch.addcdiv(x23(), x23(), x23()), aten.addcdiv, ops(div=6, add=6)),
        # a + 0.3*(b - a) on 2x3: 6 x (2 add, 1 mul)
        (lambda: torch.lerp(x23(), x23(), 0.3), aten.lerp, ops(add=12, mul=6)),
        # clamp(x, min=0) on 2x3: 6 x 1 cmp; clamp(x, -1, 1): 6 x 2 cmp
        (lambda: x23().clamp(min=0), aten.clamp, ops(cmp=6)),
        (lambda: x23().clamp(-1, 1), aten.clamp, ops(cmp=12)),
        # where(c, x, y) on 2x3: 6 x 1 select (cmp) in the output's format
        (lambda: torch.where(x23() > 0, x23(), x23()), aten.where, ops(cmp=6)),
        # masked_fill on 2x3: 6 x 1 select
        (lambda: x23().masked_fill(x23() > 0, 0.0), aten.masked_fill, ops(cmp=6)),
        # maximum(x, y) on 2x3: 6 x 1 cmp
        (lambda: torch.maximum(x23(), x23()), aten.maximum, ops(cmp=6)),
        # sin on 2x3: 6 x 1 exp-class transcendental
        (lambda: torch.sin(x23()), aten.sin, ops(exp=6)),
        # sign on 2x3: 6 x 2 cmp
        (lambda: torch.sign(x23()), aten.sign, ops(cmp=12)),
        # rsqrt on 2x3: 6 x 1 sqrt-class
        (lambda: torch.rsqrt(x23().abs()), aten.rsqrt, ops(sqrt=6)),
    ],
    ids=[
        "add-scalar",
        "rsub",
        "div",
        "div-floor",
        "addcmul",
        "addcdiv",
        "lerp",
        "clamp-min",
        "clamp-both",
        "where",
        "masked_fill",
        "maximum",
        "sin",
        "sign",
        "rsqrt",
    ],
)
def test_binary_and_unary_arithmetic(
    snippet: Callable[[], Any], packet: Any, expected: dict[OpKey, float]
) -> None:
    assert cost_of(snippet, packet).ops == expected


@pytest.mark.parametrize(
    ("forward", "packet", "expected"),
    [
        # relu backward = threshold_backward: 6 x 1 cmp
        (torch.relu, aten.threshold_backward, ops(cmp=6)),
        # g*y*(1-y): 6 x (1 add, 2 mul)
        (torch.sigmoid, aten.sigmoid_backward, ops(add=6, mul=12)),
        # g*(1-y*y): 6 x (2 mul, 1 add)
        (torch.tanh, aten.tanh_backward, ops(mul=12, add=6)),
        # erf gelu backward: 6 x (7 mul, 2 add, 2 exp)
        (F.gelu, aten.gelu_backward, ops(mul=42, add=12, exp=12)),
        # tanh gelu backward: 6 x (12 mul, 5 add, 1 exp)
        (
            lambda t: F.gelu(t, approximate="tanh"),
            aten.gelu_backward,
            ops(mul=72, add=30, exp=6),
        ),
        # g*s*(1+x*(1-s)): 6 x (1 exp, 3 add, 1 div, 3 mul)
        (F.silu, aten.silu_backward, ops(exp=6, add=18, div=6, mul=18)),
        # x>0 ? g : s*g: 6 x (1 cmp, 1 mul)
        (F.leaky_relu, aten.leaky_relu_backward, ops(cmp=6, mul=6)),
        # elu backward from the input: 6 x (1 cmp, 1 exp, 4 mul)
        (F.elu, aten.elu_backward, ops(cmp=6, exp=6, mul=24)),
        # -3<x<=3 selects g*(x/3+0.5): 6 x (2 cmp, 2 mul, 1 add)
        (F.hardswish, aten.hardswish_backward, ops(cmp=12, mul=12, add=6)),
        # lo<x<hi ? g : 0: 6 x 2 cmp
        (F.hardtanh, aten.hardtanh_backward, ops(cmp=12)),
        # g*z/(z+1): 6 x (2 mul, 1 cmp, 1 exp, 1 add, 1 div)
        (F.softplus, aten.softplus_backward, ops(mul=12, cmp=6, exp=6, add=6, div=6)),
        # g*(t + x*s*(1-t*t)): 6 x (4 exp, 3 add, 1 div, 4 mul)
        (F.mish, aten.mish_backward, ops(exp=24, add=18, div=6, mul=24)),
    ],
    ids=[
        "relu",
        "sigmoid",
        "tanh",
        "gelu",
        "gelu-tanh",
        "silu",
        "leaky_relu",
        "elu",
        "hardswish",
        "hardtanh",
        "softplus",
        "mish",
    ],
)
def test_activation_backward(
    forward: Callable[[torch.Tensor], torch.Tensor], packet: Any, expected: dict[OpKey, float]
) -> None:
    x = x23(grad=True)
    c = cost_of(lambda: forward(x).sum().backward(), packet)
    assert c.ops == expected
    # reads the gradient of sum() (one scalar expanded to 2x3, read once: 4 bytes) and the saved
    # 2x3 tensor (24 bytes) = 28; writes the 2x3 gradient (24 bytes)
    assert (c.bytes_read, c.bytes_written) == (28, 24)


def test_cast_ops_count_one_add_in_the_destination_format() -> None:
    src = x23()
    # fp32 -> bf16 on 2x3: 6 x 1 add-class conversion in bf16; same dtype: no ops
    assert vector.cast_ops(src, src.to(torch.bfloat16)) == ops(BF16, add=6)
    assert vector.cast_ops(src, src.clone()) == {}


# --- reductions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("snippet", "packet", "expected"),
    [
        # sum of 2x3 over dim 1: 6 adds
        (lambda: x23().sum(1), aten.sum, ops(add=6)),
        # sum in fp64 of an fp32 2x3: 6 adds in fp64 (the accumulation format)
        (lambda: x23().sum(dtype=torch.float64), aten.sum, ops(NumberFormat.FP64, add=6)),
        # mean over dim 1: 6 adds + 2 outputs x 1 mul (1/N)
        (lambda: x23().mean(1), aten.mean, ops(add=6, mul=2)),
        # amax over dim 1: 6 cmp
        (lambda: x23().amax(1), aten.amax, ops(cmp=6)),
        # argmax returns int64 but compares fp32: 6 cmp in fp32
        (lambda: x23().argmax(1), aten.argmax, ops(cmp=6)),
        # prod over dim 1: 6 mul
        (lambda: x23().prod(1), aten.prod, ops(mul=6)),
        # cumsum over dim 1: 6 adds
        (lambda: x23().cumsum(1), aten.cumsum, ops(add=6)),
        # var over dim 1: 6 x (3 add, 1 mul) + 2 x 2 div
        (lambda: x23().var(1), aten.var, ops(add=18, mul=6, div=4)),
        # std over dim 1: as var + 2 x 1 sqrt
        (lambda: x23().std(1), aten.std, ops(add=18, mul=6, div=4, sqrt=2)),
        # var_mean over dim 1: as var (the mean is a by-product)
        (lambda: torch.var_mean(x23(), 1), aten.var_mean, ops(add=18, mul=6, div=4)),
        # 2-norm of all 6: 6 x (1 mul, 1 add) + 1 sqrt
        (
            lambda: torch.linalg.vector_norm(x23()),
            aten.linalg_vector_norm,
            ops(mul=6, add=6, sqrt=1),
        ),
        # 1-norm: 6 x (1 cmp (abs), 1 add)
        (lambda: torch.linalg.vector_norm(x23(), 1), aten.linalg_vector_norm, ops(cmp=6, add=6)),
        # inf-norm: 6 x 2 cmp
        (
            lambda: torch.linalg.vector_norm(x23(), float("inf")),
            aten.linalg_vector_norm,
            ops(cmp=12),
        ),
        # 3-norm: 6 x (1 cmp, 2 exp, 1 mul, 1 add) + 1 x (2 exp, 1 mul)
        (
            lambda: torch.linalg.vector_norm(x23(), 3),
            aten.linalg_vector_norm,
            ops(cmp=6, exp=14, mul=7, add=6),
        ),
        # logsumexp over dim 1: 6 x (1 cmp, 2 add, 1 exp) + 2 x (1 exp, 1 add)
        (lambda: x23().logsumexp(1), aten.logsumexp, ops(cmp=6, add=14, exp=8)),
    ],
    ids=[
        "sum",
        "sum-fp64",
        "mean",
        "amax",
        "argmax",
        "prod",
        "cumsum",
        "var",
        "std",
        "var_mean",
        "norm2",
        "norm1",
        "norm-inf",
        "norm3",
        "logsumexp",
    ],
)
def test_reductions(snippet: Callable[[], Any], packet: Any, expected: dict[OpKey, float]) -> None:
    assert cost_of(snippet, packet).ops == expected


def test_max_binary_overload_counts_like_maximum() -> None:
    # max(a, b) decomposes to maximum before a mode sees it; the formula still handles it
    a, b = x23(), x23()
    c = apply(OpCall(aten.max.other, (a, b), {}, torch.maximum(a, b)))
    # 2x3 output: 6 x 1 cmp
    assert c.ops == ops(cmp=6)


def test_max_dim_writes_values_and_indices() -> None:
    c = cost_of(lambda: x23().max(1), aten.max)
    # max over dim 1 of 2x3: 6 cmp; writes 2 fp32 values + 2 int64 indices = 8 + 16 bytes
    assert c.ops == ops(cmp=6)
    assert (c.bytes_read, c.bytes_written) == (24, 24)


# --- softmax and cross entropy ---------------------------------------------------------------


def test_softmax_and_log_softmax_forward_and_backward() -> None:
    x = x23(grad=True)
    calls = capture(lambda: (F.softmax(x, -1).sum() + F.log_softmax(x, -1).sum()).backward())
    by_packet = {c.packet: apply(c) for c in calls if c.packet is not aten.sum}
    # softmax on 2x3 over dim -1: 6 x (1 cmp, 2 add, 1 exp, 1 div)
    assert by_packet[aten._softmax].ops == ops(cmp=6, add=12, exp=6, div=6)
    # log_softmax: 6 x (1 cmp, 3 add, 1 exp) + 2 rows x 1 exp (log)
    assert by_packet[aten._log_softmax].ops == ops(cmp=6, add=18, exp=8)
    # y*(g - sum(g*y)): 6 x (2 mul, 2 add)
    assert by_packet[aten._softmax_backward_data].ops == ops(mul=12, add=12)
    # g - exp(y)*sum(g): 6 x (2 add, 1 exp, 1 mul)
    assert by_packet[aten._log_softmax_backward_data].ops == ops(add=12, exp=6, mul=6)


def test_cross_entropy_is_log_softmax_plus_nll_loss() -> None:
    logits = torch.randn(4, 5, requires_grad=True)
    target = torch.tensor([1, 2, 3, 0])
    calls = capture(lambda: F.cross_entropy(logits, target).backward())
    packets = {c.packet for c in calls}
    assert {aten._log_softmax, aten.nll_loss_forward, aten.nll_loss_backward} <= packets
    fwd = apply(next(c for c in calls if c.packet is aten.nll_loss_forward))
    # 4 targets: 4 cmp (ignore_index) in int64, 4 adds in fp32, 1 div (mean)
    assert fwd.ops == {**ops(INT64, cmp=4), **ops(add=4, div=1)}
    # reads 4 int64 targets (32 bytes) + one fp32 log-prob per target (16 bytes)
    assert fwd.bytes_read == 48
    bwd = apply(next(c for c in calls if c.packet is aten.nll_loss_backward))
    # 4 targets: 4 cmp in int64, 4 mul in fp32; writes the whole 4x5 fp32 gradient (80 bytes)
    assert bwd.ops == {**ops(INT64, cmp=4), **ops(mul=4)}
    assert bwd.bytes_written == 80


def test_nll_loss2d() -> None:
    logits = torch.randn(2, 3, 2, 2, requires_grad=True)
    target = torch.zeros(2, 2, 2, dtype=torch.long)
    c = cost_of(lambda: F.cross_entropy(logits, target), aten.nll_loss2d_forward)
    # 2*2*2 = 8 targets: 8 cmp in int64, 8 adds in fp32, 1 div (mean)
    assert c.ops == {**ops(INT64, cmp=8), **ops(add=8, div=1)}


# --- normalisation layers ------------------------------------------------------------------


def test_layer_norm_forward_and_backward() -> None:
    x = torch.randn(2, 3, 4, requires_grad=True)
    ln = torch.nn.LayerNorm(4)
    calls = capture(lambda: ln(x).sum().backward())
    fwd = apply(next(c for c in calls if c.packet is aten.native_layer_norm))
    # 24 elements in 6 rows of 4. Per element: stats (3 add, 1 mul) + normalise (1 add, 1 mul)
    # + affine (1 mul, 1 add) = 5 add, 3 mul -> 120 add, 72 mul; per row 2 mul, 1 add, 1 sqrt
    # -> 12 mul, 6 add, 6 sqrt. Total: 126 add, 84 mul, 6 sqrt.
    assert fwd.ops == ops(add=126, mul=84, sqrt=6)
    bwd = apply(next(c for c in calls if c.packet is aten.native_layer_norm_backward))
    # dx: 24 x (5 add, 5 mul with the weight) + 6 rows x 2 mul; dw: 24 x (1 add, 1 mul);
    # db: 24 x 1 add -> add 24*7 = 168, mul 24*6 + 12 = 156
    assert bwd.ops == ops(add=168, mul=156)
    # dx and dw/db are 2 kernels
    assert bwd.kernels == 2


def test_batch_norm_training_eval_and_backward() -> None:
    x = torch.randn(2, 3, 2, 2, requires_grad=True)
    bn = torch.nn.BatchNorm2d(3)
    calls = capture(lambda: bn(x).sum().backward())
    fwd = apply(next(c for c in calls if c.packet is aten.native_batch_norm))
    # 24 elements, 3 channels. Per element 5 add, 3 mul (stats, normalise, affine) -> 120, 72;
    # per channel 2 mul, 1 add, 1 sqrt -> 6, 3, 3; running stats 5 mul, 2 add -> 15, 6.
    # Total add 120+3+6 = 129, mul 72+6+15 = 93, sqrt 3.
    assert fwd.ops == ops(add=129, mul=93, sqrt=3)
    assert fwd.kernels == 2
    bwd = apply(next(c for c in calls if c.packet is aten.native_batch_norm_backward))
    # training backward with dx: 24 x (6 add, 4 mul) = 144 add, 96 mul
    assert bwd.ops == ops(add=144, mul=96)
    bn.eval()
    with torch.no_grad():
        ev = cost_of(lambda: bn(x), aten.native_batch_norm)
    # eval: 24 x (1 add, 1 mul) normalise + 24 x (1 mul, 1 add) affine + 3 x (1 add, 1 sqrt)
    # -> add 48 + 3 = 51, mul 48, sqrt 3
    assert ev.ops == ops(add=51, mul=48, sqrt=3)


def test_batch_norm_variants_share_the_formula() -> None:
    x = torch.randn(2, 3, 2, 2)
    w, b, rm, rv = torch.ones(3), torch.zeros(3), torch.zeros(3), torch.ones(3)
    no_training = cost_of(
        lambda: aten._native_batch_norm_legit_no_training(x, w, b, rm, rv, 0.1, 1e-5),
        aten._native_batch_norm_legit_no_training,
    )
    # as BatchNorm eval above: add 51, mul 48, sqrt 3
    assert no_training.ops == ops(add=51, mul=48, sqrt=3)
    legit = cost_of(
        lambda: aten._native_batch_norm_legit(x, w, b, rm, rv, True, 0.1, 1e-5),
        aten._native_batch_norm_legit,
    )
    # as BatchNorm training above: add 129, mul 93, sqrt 3
    assert legit.ops == ops(add=129, mul=93, sqrt=3)
    # cudnn_batch_norm only runs on CUDA: apply the formula to a hand-built call
    out = (torch.empty_like(x), torch.empty(3), torch.empty(3), torch.empty(0))
    cudnn = apply(
        OpCall(aten.cudnn_batch_norm.default, (x, w, b, rm, rv, True, 0.1, 1e-5), {}, out)
    )
    assert cudnn.ops == legit.ops


def test_group_norm_forward_and_backward() -> None:
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    gn = torch.nn.GroupNorm(2, 4)
    calls = capture(lambda: gn(x).sum().backward())
    fwd = apply(next(c for c in calls if c.packet is aten.native_group_norm))
    # 72 elements in N*groups = 4 rows: 72 x (5 add, 3 mul) + 4 x (2 mul, 1 add, 1 sqrt)
    # -> add 360 + 4 = 364, mul 216 + 8 = 224, sqrt 4
    assert fwd.ops == ops(add=364, mul=224, sqrt=4)
    bwd = apply(next(c for c in calls if c.packet is aten.native_group_norm_backward))
    # as layer norm backward: add 72*7 = 504, mul 72*6 + 4*2 = 440
    assert bwd.ops == ops(add=504, mul=440)


def test_rms_norm_arrives_decomposed_on_cpu_and_every_part_is_counted() -> None:
    x = torch.randn(2, 4)
    rms = torch.nn.RMSNorm(4)
    with torch.no_grad():
        calls = capture(lambda: rms(x))
    counted = [apply(c) for c in calls]
    total: dict[OpKey, float] = vector.merge_ops(*(c.ops for c in counted))
    # pow(x, 2): 8 mul; mean over 4: 8 add + 2 mul; + eps: 2 add; rsqrt: 2 sqrt;
    # x * rstd: 8 mul; * weight: 8 mul -> mul 8+2+8+8 = 26, add 10, sqrt 2
    assert total == ops(mul=26, add=10, sqrt=2)


def test_fused_rms_norm_formula() -> None:
    # _fused_rms_norm only runs as one op on CUDA: apply the formula to a hand-built call
    x, w = torch.randn(2, 4), torch.ones(4)
    out = (torch.empty(2, 4), torch.empty(2, 1))
    fwd = apply(OpCall(aten._fused_rms_norm.default, (x, [4], w, 1e-6), {}, out))
    # 8 elements x (3 mul, 1 add) + 2 rows x (1 mul, 1 add, 1 sqrt) -> mul 26, add 10, sqrt 2
    assert fwd.ops == ops(mul=26, add=10, sqrt=2)
    g, rstd = torch.randn(2, 4), torch.ones(2, 1)
    grads = (torch.empty(2, 4), torch.empty(4))
    bwd = apply(
        OpCall(aten._fused_rms_norm_backward.default, (g, x, [4], rstd, w, [True, True]), {}, grads)
    )
    # xhat 8 x 1 mul; dx 8 x (4 mul, 2 add) + 2 rows x 1 mul; dw 8 x (1 mul, 1 add)
    # -> mul 8 + 32 + 2 + 8 = 50, add 16 + 8 = 24
    assert bwd.ops == ops(mul=50, add=24)


# --- losses --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loss", "forward_packet", "forward", "backward_packet", "backward"),
    [
        # mse (mean) on 2x3: 6 x (1 add, 1 mul) + 6 adds (reduce) + 1 div;
        # backward 6 x (1 add, 2 mul)
        (
            F.mse_loss,
            aten.mse_loss,
            ops(add=12, mul=6, div=1),
            aten.mse_loss_backward,
            ops(add=6, mul=12),
        ),
        # smooth_l1: 6 x (2 add, 2 cmp, 2 mul) + 6 adds + 1 div; backward 6 x (1 add, 2 cmp, 2 mul)
        (
            F.smooth_l1_loss,
            aten.smooth_l1_loss,
            ops(add=18, cmp=12, mul=12, div=1),
            aten.smooth_l1_loss_backward,
            ops(add=6, cmp=12, mul=12),
        ),
        # huber: 6 x (2 add, 2 cmp, 3 mul) + 6 adds + 1 div; backward 6 x (1 add, 2 cmp, 2 mul)
        (
            F.huber_loss,
            aten.huber_loss,
            ops(add=18, cmp=12, mul=18, div=1),
            aten.huber_loss_backward,
            ops(add=6, cmp=12, mul=12),
        ),
        # bce on probabilities: 6 x (2 exp, 2 cmp, 3 add, 2 mul) + 6 adds + 1 div;
        # backward 6 x (2 add, 2 mul, 1 cmp, 1 div)
        (
            lambda x, y: F.binary_cross_entropy(x.sigmoid(), y.sigmoid()),
            aten.binary_cross_entropy,
            ops(exp=12, cmp=12, add=24, mul=12, div=1),
            aten.binary_cross_entropy_backward,
            ops(add=12, mul=12, cmp=6, div=6),
        ),
    ],
    ids=["mse", "smooth_l1", "huber", "bce"],
)
def test_losses(
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    forward_packet: Any,
    forward: dict[OpKey, float],
    backward_packet: Any,
    backward: dict[OpKey, float],
) -> None:
    x, y = x23(grad=True), x23()
    calls = capture(lambda: loss(x, y).backward())
    assert apply(next(c for c in calls if c.packet is forward_packet)).ops == forward
    assert apply(next(c for c in calls if c.packet is backward_packet)).ops == backward


def test_bce_with_logits() -> None:
    c = cost_of(
        lambda: F.binary_cross_entropy_with_logits(x23(), x23().sigmoid()),
        aten.binary_cross_entropy_with_logits,
    )
    # 6 x (3 add, 1 mul, 2 cmp, 2 exp) + 6 adds (reduce) + 1 div (mean)
    assert c.ops == ops(add=24, mul=6, cmp=12, exp=12, div=1)


def test_weighted_bce_counts_a_multiply_per_element_for_its_weight() -> None:
    x, y, w = x23(grad=True), x23().sigmoid(), x23().abs()
    calls = capture(lambda: F.binary_cross_entropy(x.sigmoid(), y, weight=w).backward())
    forward = apply(next(c for c in calls if c.packet is aten.binary_cross_entropy))
    backward = apply(next(c for c in calls if c.packet is aten.binary_cross_entropy_backward))
    # unweighted 6 x (2 exp, 2 cmp, 3 add, 2 mul) + 6 adds + 1 div, and 6 x 1 mul for the
    # weight: exp 12, cmp 12, add 24, mul 12 + 6 = 18, div 1
    assert forward.ops == ops(exp=12, cmp=12, add=24, mul=18, div=1)
    # backward 6 x (2 add, 2 mul, 1 cmp, 1 div), and 6 x 1 mul for the weight: mul 18
    assert backward.ops == ops(add=12, mul=18, cmp=6, div=6)


def test_bce_with_logits_counts_weight_and_pos_weight() -> None:
    c = cost_of(
        lambda: F.binary_cross_entropy_with_logits(
            x23(), x23().sigmoid(), weight=x23().abs(), pos_weight=torch.ones(3)
        ),
        aten.binary_cross_entropy_with_logits,
    )
    # unweighted 6 x (3 add, 1 mul, 2 cmp, 2 exp) + 6 adds + 1 div; the weight 6 x 1 mul; the
    # pos_weight 6 x (1 add, 2 mul): add 24 + 6 = 30, mul 6 + 6 + 12 = 24
    assert c.ops == ops(add=30, mul=24, cmp=12, exp=12, div=1)


# --- pooling -------------------------------------------------------------------------------


def test_max_and_avg_pool_forward_and_backward() -> None:
    x = torch.randn(1, 2, 4, 4, requires_grad=True)
    calls = capture(lambda: (F.max_pool2d(x, 2).sum() + F.avg_pool2d(x, 2).sum()).backward())
    got = {c.packet: apply(c) for c in calls if c.packet is not aten.sum}
    # 2x2 pooling of 1x2x4x4 -> 1x2x2x2 = 8 outputs
    # max: 8 x 4 cmp; writes 8 fp32 values + 8 int64 indices = 32 + 64 bytes
    assert got[aten.max_pool2d_with_indices].ops == ops(cmp=32)
    assert got[aten.max_pool2d_with_indices].bytes_written == 96
    # max backward: 8 adds (scatter to the argmax); writes the 32-element fp32 gradient
    assert got[aten.max_pool2d_with_indices_backward].ops == ops(add=8)
    assert got[aten.max_pool2d_with_indices_backward].bytes_written == 128
    # avg: 8 x (4 add, 1 div); backward 8 x (1 div, 4 add)
    assert got[aten.avg_pool2d].ops == ops(add=32, div=8)
    assert got[aten.avg_pool2d_backward].ops == ops(add=32, div=8)


def test_pool_1d_and_3d() -> None:
    x = torch.randn(1, 2, 6)
    c = cost_of(lambda: F.max_pool1d(x, 3), aten.max_pool2d_with_indices)
    # 1d pooling arrives as 2d with a (1, 3) kernel: 1x2x1x2 = 4 outputs x 3 cmp
    assert c.ops == ops(cmp=12)
    # max_pool1d is composite on CPU; apply its formula to a hand-built call
    direct = apply(OpCall(aten.max_pool1d.default, (x, [3]), {}, torch.empty(1, 2, 2)))
    # same 4 outputs x 3 cmp
    assert direct.ops == ops(cmp=12)
    x3 = torch.randn(1, 1, 2, 4, 4)
    c3 = cost_of(lambda: F.avg_pool3d(x3, 2), aten.avg_pool3d)
    # 2x2x2 pooling of 2x4x4 -> 1x2x2 = 4 outputs x (8 add, 1 div)
    assert c3.ops == ops(add=32, div=4)


def test_adaptive_pools_count_their_uneven_windows() -> None:
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    calls = capture(
        lambda: (F.adaptive_avg_pool2d(x, 3).sum() + F.adaptive_max_pool2d(x, 3).sum()).backward()
    )
    got = {c.packet: apply(c) for c in calls if c.packet is not aten.sum}
    # windows of 5 -> 3: [0,2), [1,4), [3,5) = 2 + 3 + 2 = 7 per dim, 7*7 = 49 per plane,
    # 2 planes -> 98 window elements; 2*3*3 = 18 outputs
    assert got[aten._adaptive_avg_pool2d].ops == ops(add=98, div=18)
    assert got[aten.adaptive_max_pool2d].ops == ops(cmp=98)
    # avg backward: 18 div + 98 adds; max backward: 18 adds
    assert got[aten._adaptive_avg_pool2d_backward].ops == ops(add=98, div=18)
    assert got[aten.adaptive_max_pool2d_backward].ops == ops(add=18)


# --- dropout and random numbers ------------------------------------------------------------


def rng(n: int) -> dict[OpKey, float]:
    # one uniform per element: 5 int32 mul, 15 int32 add, 1 fp32 mul (see RNG_OPS_PER_ELEMENT)
    return {
        (AluOp.MUL, INT32, Unit.VECTOR): 5.0 * n,
        (AluOp.ADD, INT32, Unit.VECTOR): 15.0 * n,
        (AluOp.MUL, FP32, Unit.VECTOR): 1.0 * n,
    }


def test_dropout_on_cpu_is_bernoulli_then_scale() -> None:
    x = x23(grad=True)
    calls = capture(lambda: F.dropout(x, 0.5).sum().backward())
    bern = apply(next(c for c in calls if c.packet is aten.bernoulli_))
    # 6 elements: 6 random numbers + 6 cmp (u < p) in fp32
    assert bern.ops == vector.merge_ops(rng(6), ops(cmp=6))
    # bernoulli_ overwrites its 2x3 fp32 buffer: reads nothing, writes 24 bytes
    assert (bern.bytes_read, bern.bytes_written) == (0, 24)


def test_native_dropout_and_backward() -> None:
    x = x23()
    c = cost_of(lambda: aten.native_dropout(x, 0.5, True), aten.native_dropout)
    # 6 elements: 6 random numbers + 6 x (1 cmp, 1 mul) in fp32
    assert c.ops == vector.merge_ops(rng(6), ops(cmp=6, mul=6))
    # writes 6 fp32 outputs + 6 bool mask bytes = 30
    assert c.bytes_written == 30
    off = cost_of(lambda: aten.native_dropout(x, 0.5, False), aten.native_dropout)
    # not training: a copy, no ops
    assert off.ops == {}
    mask = x > 0
    b = cost_of(lambda: aten.native_dropout_backward(x, mask, 2.0), aten.native_dropout_backward)
    # g * mask * scale: 6 x 2 mul
    assert b.ops == ops(mul=12)


# --- embedding, gather and scatter ---------------------------------------------------------


def test_embedding_forward_and_backward() -> None:
    emb = torch.nn.Embedding(10, 4)
    idx = torch.tensor([[1, 2, 3]])
    calls = capture(lambda: emb(idx).sum().backward())
    fwd = apply(next(c for c in calls if c.packet is aten.embedding))
    # no arithmetic; reads 3 int64 indices (24 bytes) + 3 rows of 4 fp32 (48), writes 48
    assert fwd.ops == {}
    assert (fwd.bytes_read, fwd.bytes_written) == (72, 48)
    bwd = apply(next(c for c in calls if c.packet is aten.embedding_dense_backward))
    # 3 cmp (padding_idx) in int64 + 12 grad elements x 1 add; writes the 10x4 fp32 grad (160)
    assert bwd.ops == {**ops(INT64, cmp=3), **ops(add=12)}
    assert bwd.bytes_written == 160


def test_gather_scatter_and_index_ops() -> None:
    w = torch.randn(5, 3, requires_grad=True)
    idx = torch.tensor([[0], [1], [2], [0], [1]])
    calls = capture(lambda: w.gather(1, idx).sum().backward())
    gather = apply(next(c for c in calls if c.packet is aten.gather))
    # reads 5 int64 indices (40 bytes) + 5 gathered fp32 (20 bytes)
    assert (gather.ops, gather.bytes_read, gather.bytes_written) == ({}, 60, 20)
    scatter_add = apply(next(c for c in calls if c.packet is aten.scatter_add))
    # the backward scatters 5 grads into zeros: 5 adds
    assert scatter_add.ops == ops(add=5)
    rows = torch.tensor([1, 2])
    calls = capture(lambda: w.index_select(0, rows).sum().backward())
    index_add = apply(next(c for c in calls if c.packet is aten.index_add))
    # the backward adds 2 rows of 3: 6 adds
    assert index_add.ops == ops(add=6)
    put = cost_of(
        lambda: torch.zeros(5, 3).index_put((rows,), torch.ones(2, 3), accumulate=True),
        aten.index_put,
    )
    # accumulate 2x3 values: 6 adds
    assert put.ops == ops(add=6)


# --- coverage ------------------------------------------------------------------------------


def _unregistered(calls: list[OpCall]) -> set[str]:
    # Ops outside the aten namespace (profiler markers) are the counting mode's concern.
    return {
        str(c.packet)
        for c in calls
        if str(c.packet).startswith("aten.") and formula_for(c.packet) is None
    }


def test_every_op_of_small_training_steps_has_a_formula() -> None:
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(
        torch.nn.Linear(8, 16),
        torch.nn.LayerNorm(16),
        torch.nn.GELU(),
        torch.nn.Dropout(0.1),
        torch.nn.Linear(16, 4),
    )
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 4, 3, padding=1),
        torch.nn.SiLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    )
    target = torch.tensor([0, 1])
    calls = capture(lambda: F.cross_entropy(mlp(torch.randn(2, 8)), target).backward())
    calls += capture(lambda: F.cross_entropy(cnn(torch.randn(2, 3, 8, 8)), target).backward())
    assert _unregistered(calls) == set()


def test_every_named_packet_exists_in_this_torch() -> None:
    # A name missing here is a typo, not an older torch: torch 2.13 has all of them.
    assert vector.MISSING_PACKETS == []


def test_a_well_known_unusual_op_stays_unmodelled() -> None:
    # The framework tests its fallback with these; no formula may claim them.
    assert formula_for(aten.cholesky) is None
    assert formula_for(aten.linalg_eigh) is None


def test_embedding_bag_forward_and_backward() -> None:
    bag = torch.nn.EmbeddingBag(10, 4, mode="mean")
    idx = torch.tensor([1, 2, 4, 5, 4, 3])
    offsets = torch.tensor([0, 4])  # bags [1, 2, 4, 5] and [4, 3]
    calls = capture(lambda: bag(idx, offsets).sum().backward())
    fwd = apply(next(c for c in calls if c.packet is aten._embedding_bag))
    # 6 indices x 4 = 24 gathered fp32 elements, 1 add each; mean: 2 bags x 4 = 8 divs
    assert fwd.ops == ops(add=24, div=8)
    assert fwd.modelled
    # reads 6 int64 indices (48) + 2 int64 offsets (16) + 24 gathered fp32 (96) = 160 bytes
    assert fwd.bytes_read == 160
    bwd = apply(next(c for c in calls if c.packet is aten._embedding_bag_backward))
    # each of the 6 indices adds a 4-wide slice, divided by its bag size (mean): 24 add, 24 div
    assert bwd.ops == ops(add=24, div=24)


# --- mutation-testing follow-ups: each test below failed on a deliberate mutant of vector.py -----


def test_tanh_counts_one_exp_class_op() -> None:
    c = cost_of(lambda: torch.tanh(x23()), aten.tanh)
    # tanh on 2x3: 6 x 1 exp-class op; 6 * 4 = 24 bytes each way
    assert c.ops == ops(exp=6)
    assert (c.bytes_read, c.bytes_written) == (24, 24)


def test_log_softmax_over_a_leading_dim_counts_its_rows() -> None:
    c = cost_of(lambda: F.log_softmax(torch.randn(4, 6), 0), aten._log_softmax)
    # over dim 0 of 4x6: 24 x (1 cmp, 3 add, 1 exp) + 6 rows (the other dim) x 1 exp (log)
    # -> cmp 24, add 72, exp 24 + 6 = 30
    assert c.ops == ops(cmp=24, add=72, exp=30)


def test_layer_norm_without_affine_and_its_weight_gradient_alone() -> None:
    x = torch.randn(2, 3, 4, requires_grad=True)
    plain = torch.nn.LayerNorm(4, elementwise_affine=False)
    calls = capture(lambda: plain(x).sum().backward())
    fwd = apply(next(c for c in calls if c.packet is aten.native_layer_norm))
    # 24 elements in 6 rows, no weight or bias: 24 x (4 add, 2 mul) + 6 x (2 mul, 1 add,
    # 1 sqrt) -> add 96 + 6 = 102, mul 48 + 12 = 60, sqrt 6
    assert fwd.ops == ops(add=102, mul=60, sqrt=6)
    bwd = apply(next(c for c in calls if c.packet is aten.native_layer_norm_backward))
    # dx only, no weight: 24 x (5 add, 4 mul) + 6 rows x 2 mul -> add 120, mul 96 + 12 = 108
    assert (bwd.ops, bwd.kernels) == (ops(add=120, mul=108), 1)

    ln = torch.nn.LayerNorm(4, bias=False)
    frozen = torch.randn(2, 3, 4)  # no input gradient: output_mask [False, True, False]
    g = torch.randn(2, 3, 4)
    calls = capture(lambda: torch.autograd.grad(ln(frozen), tuple(ln.parameters()), g))
    dw = apply(next(c for c in calls if c.packet is aten.native_layer_norm_backward))
    # xhat 24 x (1 add, 1 mul) + dw 24 x (1 add, 1 mul) -> add 48, mul 48
    assert dw.ops == ops(add=48, mul=48)
    # one kernel reading g 96 + x 96 + mean 24 + rstd 24 + w 16 = 256 bytes
    assert (dw.kernels, dw.bytes_read) == (1, 256)


def test_layer_norm_backward_reads_its_inputs_once_per_kernel() -> None:
    x, g = torch.randn(2, 3, 4, requires_grad=True), torch.randn(2, 3, 4)
    ln = torch.nn.LayerNorm(4, bias=False)
    calls = capture(lambda: torch.autograd.grad(ln(x), (x, *ln.parameters()), g))
    bwd = apply(next(c for c in calls if c.packet is aten.native_layer_norm_backward))
    # dx and dw kernels each read g 96 + x 96 + mean 24 + rstd 24 + w 16 = 256 bytes
    assert (bwd.kernels, bwd.bytes_read) == (2, 2 * 256)
    # writes dx 96 + dw 16 = 112 bytes
    assert bwd.bytes_written == 112


def test_batch_norm_bytes_kernels_and_eval_weight_gradient() -> None:
    x = torch.randn(2, 3, 2, 2, requires_grad=True)
    bn = torch.nn.BatchNorm2d(3)
    g = torch.randn(2, 3, 2, 2)
    calls = capture(lambda: torch.autograd.grad(bn(x), (x, *bn.parameters()), g))
    fwd = apply(next(c for c in calls if c.packet is aten.native_batch_norm))
    # training forward: 2 kernels (statistics, normalise) each reading x (96 B), plus w, b,
    # running mean and var once: 2 * 96 + 4 * 12 = 240 B; writes y 96 + save_mean 12 +
    # save_invstd 12, then the running mean and var in place 12 + 12 = 144 B
    assert (fwd.kernels, fwd.bytes_read, fwd.bytes_written) == (2, 240, 144)
    bwd = apply(next(c for c in calls if c.packet is aten.native_batch_norm_backward))
    # training backward: 2 kernels (channel sums, element-wise dx)
    assert bwd.kernels == 2

    bn.eval()
    frozen = torch.randn(2, 3, 2, 2)  # no input gradient: output_mask [False, True, True]
    calls = capture(lambda: torch.autograd.grad(bn(frozen), tuple(bn.parameters()), g))
    ev = apply(next(c for c in calls if c.packet is aten.native_batch_norm_backward))
    # eval backward without dx: dw 24 x (xhat 1 add 1 mul, then 1 mul 1 add), db 24 x 1 add
    # -> mul 48, add 72
    assert ev.ops == ops(mul=48, add=72)


def test_weighted_summed_nll_loss() -> None:
    logits = torch.randn(4, 5, requires_grad=True)
    target, weight = torch.tensor([1, 2, 3, 0]), torch.ones(5)
    calls = capture(
        lambda: F.cross_entropy(logits, target, weight=weight, reduction="sum").backward()
    )
    fwd = apply(next(c for c in calls if c.packet is aten.nll_loss_forward))
    # 4 targets: 4 cmp in int64; weighted: 4 x (2 add, 1 mul) in fp32; a sum: no div
    assert fwd.ops == {**ops(INT64, cmp=4), **ops(add=8, mul=4)}
    # reads targets 32 + one log-prob per target 16 + the weight 20 = 68 bytes
    assert fwd.bytes_read == 68
    bwd = apply(next(c for c in calls if c.packet is aten.nll_loss_backward))
    # reads grad 4 + targets 32 + weight 20 + total_weight 4 = 60 bytes, not the log-probs
    assert (bwd.bytes_read, bwd.bytes_written) == (60, 80)


def test_embedding_backward_scaled_by_frequency_divides_each_gradient_element() -> None:
    emb = torch.nn.Embedding(10, 4, scale_grad_by_freq=True)
    idx = torch.tensor([[1, 2, 2]])
    calls = capture(lambda: emb(idx).sum().backward())
    bwd = apply(next(c for c in calls if c.packet is aten.embedding_dense_backward))
    # 3 cmp (padding_idx) in int64; 12 grad elements x (1 add, 1 div by the index's count)
    assert bwd.ops == {**ops(INT64, cmp=3), **ops(add=12, div=12)}


def test_a_summed_loss_adds_but_does_not_divide_and_an_unreduced_one_does_neither() -> None:
    x, y = x23(), x23()
    summed = cost_of(lambda: F.mse_loss(x, y, reduction="sum"), aten.mse_loss)
    # mse on 2x3, summed: 6 x (1 add, 1 mul) + 6 adds (reduce), no div
    assert summed.ops == ops(add=12, mul=6)
    unreduced = cost_of(lambda: F.mse_loss(x, y, reduction="none"), aten.mse_loss)
    # unreduced: 6 x (1 add, 1 mul) only
    assert unreduced.ops == ops(add=6, mul=6)


def test_addcmul_with_value_one_skips_the_value_multiply() -> None:
    plain = cost_of(lambda: torch.addcmul(x23(), x23(), x23()), aten.addcmul)
    # x + a*b on 2x3: 6 x (1 mul, 1 add) (value=2 costs a second mul: test_binary_and_unary_...)
    assert plain.ops == ops(mul=6, add=6)
