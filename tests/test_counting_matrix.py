"""Hand-worked counts of the matrix formulas: matmuls, convolutions and fused attention.

Each test runs the real aten op under an ``OpCounter`` (module-less, so nothing but the op is
attributed) and checks its ALU ops, bytes, kernels and FLOPs. The CUDA-only attention kernels
run on the ``meta`` device, which has their shape functions.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from lightning_to_energy.counting import OpCounter, StepProfile
from lightning_to_energy.counting.cost_model import AluOp, NumberFormat, Unit
from lightning_to_energy.counting.formulas.matrix import (
    CAUSAL_BOTTOM_RIGHT,
    CAUSAL_TOP_LEFT,
    NO_MASK,
    convolution,
    cudnn_rnn,
    kept_scores,
)
from lightning_to_energy.counting.registry import CONV, OpCall, formula_for, matmul_format

aten = torch.ops.aten
FMA, ADD, MUL, CMP, DIV, EXP = AluOp.FMA, AluOp.ADD, AluOp.MUL, AluOp.CMP, AluOp.DIV, AluOp.EXP
FP32 = NumberFormat.FP32
MATRIX, VECTOR = Unit.MATRIX, Unit.VECTOR


def count(fn: Callable[[], Any]) -> StepProfile:
    with OpCounter() as counter:
        fn()
    assert counter.profile is not None
    return counter.profile


def fcm_flops(fn: Callable[[], Any]) -> int:
    with FlopCounterMode(display=False) as fcm:
        fn()
    return int(fcm.get_total_flops())


class _CudaTensor(torch.Tensor):
    """Metadata of a CUDA tensor without a GPU, for formulas that read shapes only."""

    @classmethod
    def __torch_dispatch__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        raise NotImplementedError(f"{func} on a metadata-only CUDA tensor")


def cuda_tensor(*shape: int) -> torch.Tensor:
    return torch.Tensor._make_wrapper_subclass(  # type: ignore[attr-defined]
        _CudaTensor, shape, dtype=torch.float32, device="cuda"
    )


def by_class(p: StepProfile, unit: Unit | None = None) -> dict[AluOp, float]:
    out: dict[AluOp, float] = {}
    for (op, _fmt, u), n in p.counts.items():
        if unit is None or u is unit:
            out[op] = out.get(op, 0.0) + n
    return out


# --- matmuls --------------------------------------------------------------------------------


def test_mm() -> None:
    a, b = torch.randn(4, 6), torch.randn(6, 5)
    p = count(lambda: torch.mm(a, b))
    # m * n * k = 4 * 5 * 6 = 120 multiply-accumulates in fp32 on the matrix unit
    assert p.counts == {(FMA, FP32, MATRIX): 120}
    # 2 * 120 = 240, as FlopCounterMode
    assert p.flops == 240 == fcm_flops(lambda: torch.mm(a, b))
    # read (4*6 + 6*5) * 4 B = 216; write 4*5 * 4 B = 80
    assert (p.bytes_read, p.bytes_written, p.kernels) == (216, 80, 1)
    assert p.by_op["aten.mm"].calls == 1


def test_addmm_bias_and_scaling() -> None:
    bias, a, b = torch.randn(5), torch.randn(4, 6), torch.randn(6, 5)
    p = count(lambda: torch.addmm(bias, a, b))
    # 120 FMA; beta=1 alpha=1: one bias add per output element, 4 * 5 = 20
    assert p.counts == {(FMA, FP32, MATRIX): 120, (ADD, FP32, VECTOR): 20}
    # read (5 + 24 + 30) * 4 = 236, write 20 * 4 = 80
    assert (p.bytes_read, p.bytes_written) == (236, 80)
    assert p.flops == 240 == fcm_flops(lambda: torch.addmm(bias, a, b))

    scaled = count(lambda: torch.addmm(bias, a, b, beta=0.5, alpha=2.0))
    # 20 adds, 20 multiplies by beta and 20 by alpha
    assert scaled.counts == {
        (FMA, FP32, MATRIX): 120,
        (ADD, FP32, VECTOR): 20,
        (MUL, FP32, VECTOR): 40,
    }


def test_bmm_and_baddbmm() -> None:
    a, b = torch.randn(3, 4, 6), torch.randn(3, 6, 5)
    p = count(lambda: torch.bmm(a, b))
    # b * m * n * k = 3 * 4 * 5 * 6 = 360
    assert p.counts == {(FMA, FP32, MATRIX): 360}
    assert p.flops == 720 == fcm_flops(lambda: torch.bmm(a, b))

    c = torch.randn(3, 4, 5)
    p = count(lambda: torch.baddbmm(c, a, b))
    # 360 FMA plus one add per output element: 3 * 4 * 5 = 60
    assert p.counts == {(FMA, FP32, MATRIX): 360, (ADD, FP32, VECTOR): 60}
    assert p.flops == 720 == fcm_flops(lambda: torch.baddbmm(c, a, b))
    # beta = 0 ignores self: no add
    assert count(lambda: torch.baddbmm(c, a, b, beta=0)).counts == {(FMA, FP32, MATRIX): 360}


def test_tf32_format_follows_flags_only_on_cuda() -> None:
    old = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
    )
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        torch.backends.cudnn.allow_tf32 = True
        assert matmul_format(torch.float32, on_cuda=True) is NumberFormat.FP32
        assert matmul_format(torch.float32, conv=True, on_cuda=True) is NumberFormat.TF32
        assert matmul_format(torch.float32, conv=True, on_cuda=False) is NumberFormat.FP32
        torch.set_float32_matmul_precision("high")
        assert matmul_format(torch.float32, on_cuda=True) is NumberFormat.TF32
        assert matmul_format(torch.bfloat16, on_cuda=True) is NumberFormat.BF16
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old[0]
        torch.backends.cudnn.allow_tf32 = old[1]
        torch.set_float32_matmul_precision(old[2])


# --- convolutions ---------------------------------------------------------------------------


def test_conv2d_forward() -> None:
    x, w, b = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3), torch.randn(4)
    p = count(lambda: F.conv2d(x, w, b, padding=1))
    # N * prod(out) * C_out * C_in * prod(k) = 2 * 64 * 4 * 3 * 9 = 13824 FMA;
    # bias: one add per output element, 2 * 4 * 64 = 512
    assert p.counts == {(FMA, FP32, MATRIX): 13824, (ADD, FP32, VECTOR): 512}
    assert p.flops == 27648 == fcm_flops(lambda: F.conv2d(x, w, b, padding=1))
    # read (384 + 108 + 4) * 4 = 1984 B, write 512 * 4 = 2048 B
    assert (p.bytes_read, p.bytes_written, p.kernels) == (1984, 2048, 1)
    # oneDNN fuses the bias: the one kernel does all the work, none is vector-only
    assert [c.vector_kernels for c, _ in p.op_costs] == [0]


def test_cuda_conv_adds_its_bias_in_a_second_kernel() -> None:
    # ATen's cuDNN path runs cudnn_convolution, then output.add_(bias): two kernels, and the
    # output read and written once more
    x, w, b = cuda_tensor(2, 3, 8, 8), cuda_tensor(4, 3, 3, 3), cuda_tensor(4)
    out = cuda_tensor(2, 4, 8, 8)
    args = (x, w, b, [1, 1], [1, 1], [1, 1], False, [0, 0], 1)
    cost = convolution(OpCall(aten.convolution.default, args, {}, out))
    # as on the CPU (test_conv2d_forward): read 1984 B, write 2048 B, plus the bias kernel
    # reading and writing the 2048-byte output
    assert (cost.bytes_read, cost.bytes_written, cost.kernels) == (1984 + 2048, 2048 + 2048, 2)
    # of the two, the bias add is a vector kernel (its ramp is the vector one)
    assert cost.vector_kernels == 1
    # without a bias: read (384 + 108) * 4 = 1968 B, one kernel, doing the matrix work
    cost = convolution(OpCall(aten.convolution.default, (x, w, None, *args[3:]), {}, out))
    assert (cost.bytes_read, cost.bytes_written, cost.kernels) == (1968, 2048, 1)
    assert cost.vector_kernels == 0


def test_grouped_and_transposed_conv_forward() -> None:
    x, w = torch.randn(2, 6, 8, 8), torch.randn(6, 2, 3, 3)
    p = count(lambda: F.conv2d(x, w, padding=1, groups=3))
    # C_in / groups = 2: 2 * 64 * 6 * 2 * 9 = 13824
    assert p.counts == {(FMA, FP32, MATRIX): 13824}
    assert p.flops == fcm_flops(lambda: F.conv2d(x, w, padding=1, groups=3))

    xt, wt = torch.randn(2, 4, 5, 5), torch.randn(4, 3, 3, 3)
    p = count(lambda: F.conv_transpose2d(xt, wt))
    # every input pixel meets the whole kernel: N * prod(in) * C_in * C_out * prod(k)
    # = 2 * 25 * 4 * 3 * 9 = 5400
    assert p.counts == {(FMA, FP32, MATRIX): 5400}
    assert p.flops == 10800 == fcm_flops(lambda: F.conv_transpose2d(xt, wt))


def _conv_backward(groups: int) -> tuple[StepProfile, int]:
    x = torch.randn(2, 6, 8, 8, requires_grad=True)
    w = torch.randn(6, 6 // groups, 3, 3, requires_grad=True)
    b = torch.randn(6, requires_grad=True)
    y = F.conv2d(x, w, b, padding=1, groups=groups)
    g = torch.ones_like(y)
    p = count(lambda: torch.autograd.grad(y, (x, w, b), g, retain_graph=True))
    return p, fcm_flops(lambda: torch.autograd.grad(y, (x, w, b), g, retain_graph=True))


def test_conv2d_backward() -> None:
    p, fcm = _conv_backward(groups=1)
    conv = p.by_op["aten.convolution_backward"]
    # grad_input and grad_weight each redo the forward's 2 * 64 * 6 * 6 * 9 = 41472 FMA
    assert by_class(p, MATRIX) == {FMA: 2 * 41472}
    # grad_bias sums grad_output: one add per element, 2 * 6 * 64 = 768
    assert by_class(p, VECTOR) == {ADD: 768}
    # one kernel per produced gradient
    assert (conv.calls, conv.kernels) == (1, 3)
    # of which grad_bias, a reduction, is a vector kernel
    (cost,) = [c for c, _ in p.op_costs if c.kind == CONV]
    assert cost.vector_kernels == 1
    # 2 * 41472 per gradient, as FlopCounterMode
    assert conv.flops == 4 * 41472 == fcm
    # read: grad_out (3072 B) three times, weight (1296 B), input (3072 B);
    # write: grad_input 3072 + grad_weight 1296 + grad_bias 24 bytes
    assert conv.bytes_read == 3 * 3072 + 1296 + 3072
    assert conv.bytes_written == 3072 + 1296 + 24


def test_grouped_conv_backward_counts_honestly_but_matches_flop_counter() -> None:
    p, fcm = _conv_backward(groups=3)
    # C_in / groups = 2: forward 2 * 64 * 6 * 2 * 9 = 13824 FMA, done for each of 2 grads
    assert by_class(p, MATRIX) == {FMA: 2 * 13824}
    # FlopCounterMode leaves out 1/groups for grad_weight: 2 * 13824 + 2 * 13824 * 3
    assert p.flops == 2 * 13824 + 2 * 13824 * 3 == fcm


# --- attention ------------------------------------------------------------------------------


def test_kept_scores() -> None:
    assert kept_scores(4, 5, NO_MASK) == 20
    # causal lq = lk = 4 keeps 1 + 2 + 3 + 4 = 10
    assert kept_scores(4, 4, CAUSAL_TOP_LEFT) == 10
    assert kept_scores(4, 4, CAUSAL_BOTTOM_RIGHT) == 10
    # top-left, 4 queries over 2 keys: rows keep 1, 2, 2, 2 = 7
    assert kept_scores(4, 2, CAUSAL_TOP_LEFT) == 7
    # bottom-right, 2 queries over 4 keys: rows keep 3 and 4 = 7
    assert kept_scores(2, 4, CAUSAL_BOTTOM_RIGHT) == 7
    # bottom-right, 4 queries over 2 keys: rows keep 0, 0, 1, 2 = 3
    assert kept_scores(4, 2, CAUSAL_BOTTOM_RIGHT) == 3


# q, k, v: [B=2, H=3, L=4, E=8]; per step, s kept scores and B * H * L = 24 query rows.
B, H, L, E = 2, 3, 4, 8
S_FULL = B * H * L * L  # 96
S_CAUSAL = B * H * 10  # 60
ROWS = B * H * L  # 24


def forward_counts(s: int) -> dict[AluOp, float]:
    # FMA s * (E + Ev); scale s MUL; row max s CMP; subtract and sum 2 s ADD + log-sum-exp
    # rows ADD; exp s + rows EXP; normalising the output rows * Ev DIV
    return {
        FMA: s * 16,
        MUL: s,
        CMP: s,
        ADD: 2 * s + ROWS,
        EXP: s + ROWS,
        DIV: ROWS * E,
    }


def backward_counts(s: int) -> dict[AluOp, float]:
    # FMA: s * (3 E + 2 Ev) on the matrix unit plus rowsum(dO * O): rows * Ev on vectors;
    # recompute P: s MUL + s ADD + s EXP; dS = P * (dP - D) * scale: s ADD + 2 s MUL
    return {FMA: s * 40 + ROWS * E, MUL: 3 * s, ADD: 2 * s, EXP: s}


@pytest.mark.parametrize(("causal", "s"), [(False, S_FULL), (True, S_CAUSAL)])
def test_cpu_flash_attention_forward_and_backward(causal: bool, s: int) -> None:
    q, k, v = (torch.randn(B, H, L, E, requires_grad=True) for _ in range(3))
    fwd = count(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal))
    assert set(fwd.by_op) == {"aten._scaled_dot_product_flash_attention_for_cpu"}
    assert by_class(fwd) == forward_counts(s)
    # the score and output products are matrix work: s * 16 FMA
    assert by_class(fwd, MATRIX) == {FMA: s * 16}
    # FlopCounterMode has no formula for the CPU flash kernel: 0, matched
    assert (
        fwd.flops
        == 0
        == fcm_flops(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal))
    )

    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    g = torch.ones_like(out)
    bwd = count(lambda: torch.autograd.grad(out, (q, k, v), g, retain_graph=True))
    op = bwd.by_op["aten._scaled_dot_product_flash_attention_for_cpu_backward"]
    assert op.calls == 1
    assert by_class(bwd, MATRIX) == {FMA: s * 40}
    assert by_class(bwd) == backward_counts(s)


def test_causal_attention_costs_about_half() -> None:
    q = torch.randn(1, 1, 64, 8)
    full = count(lambda: F.scaled_dot_product_attention(q, q, q))
    causal = count(lambda: F.scaled_dot_product_attention(q, q, q, is_causal=True))
    # 64 * 65 / 2 = 2080 of 64 * 64 = 4096 scores: ratio 65 / 128
    assert by_class(causal, MATRIX)[FMA] / by_class(full, MATRIX)[FMA] == 65 / 128


def _meta_qkv() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(torch.empty(B, H, L, E, device="meta") for _ in range(3))  # type: ignore[return-value]


CUDA_FORWARDS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor, bool], Any]] = {
    "flash": lambda q, k, v, c: aten._scaled_dot_product_flash_attention(q, k, v, 0.0, c),
    "efficient": lambda q, k, v, c: aten._scaled_dot_product_efficient_attention(
        q, k, v, None, True, 0.0, c
    ),
    "cudnn": lambda q, k, v, c: aten._scaled_dot_product_cudnn_attention(
        q, k, v, None, True, 0.0, c
    ),
    # the raw kernels take [B, L, H, E]
    "_flash": lambda q, k, v, c: aten._flash_attention_forward(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), None, None, L, L, 0.0, c, False
    ),
    "_efficient": lambda q, k, v, c: aten._efficient_attention_forward(
        q.transpose(1, 2),
        k.transpose(1, 2),
        v.transpose(1, 2),
        None,
        None,
        None,
        L,
        L,
        0.0,
        int(c),
    ),
}


@pytest.mark.parametrize("kernel", sorted(CUDA_FORWARDS))
@pytest.mark.parametrize(("causal", "s"), [(False, S_FULL), (True, S_CAUSAL)])
def test_cuda_attention_forwards(kernel: str, causal: bool, s: int) -> None:
    q, k, v = _meta_qkv()
    call = CUDA_FORWARDS[kernel]
    p = count(lambda: call(q, k, v, causal))
    assert by_class(p) == forward_counts(s)
    assert p.unmodelled_ops == {}
    # FLOPs as FlopCounterMode reports them: it ignores the causal mask (and misreads the
    # raw kernels' [B, L, H, E] layout); the TOs above count the kept scores
    assert p.flops == fcm_flops(lambda: call(q, k, v, causal))


def test_cuda_attention_backward() -> None:
    q, k, v = _meta_qkv()
    out, lse, *_ = aten._scaled_dot_product_flash_attention(q, k, v, 0.0, True)
    g = torch.empty_like(out)
    seed = torch.empty(2, dtype=torch.int64, device="meta")

    def backward() -> Any:
        return aten._scaled_dot_product_flash_attention_backward(
            g, q, k, v, out, lse, None, None, L, L, 0.0, True, seed, seed
        )

    p = count(backward)
    assert by_class(p) == backward_counts(S_CAUSAL)
    # 5 products of 2 * B * H * L * L * E = 1536 each, causal mask ignored: 7680
    assert p.flops == 7680 == fcm_flops(backward)


def test_fused_multi_head_attention_fast_path() -> None:
    mha = torch.nn.MultiheadAttention(32, 4, batch_first=True).eval()
    x = torch.randn(2, 10, 32)
    with torch.inference_mode():
        p = count(lambda: mha(x, x, x))
    assert set(p.by_op) == {"aten._native_multi_head_attention"}
    # in-projection [20, 32] @ [32, 96]: 61440; attention over 2 * 4 head-batches of
    # 10 x 10 scores and width 8: 800 * (8 + 8) = 12800; out-projection [20, 32] @ [32, 32]:
    # 20480
    assert by_class(p, MATRIX) == {FMA: 61440 + 12800 + 20480}
    # bias adds on 3 * 20 * 32 projected and 20 * 32 output elements, 2 * 800 softmax adds
    # and 2 * 4 * 10 log-sum-exp rows
    assert by_class(p, VECTOR)[ADD] == 1920 + 640 + 1600 + 80


def test_encoder_layer_fast_path_on_padding_masked_nested_input() -> None:
    layer = torch.nn.TransformerEncoderLayer(16, 4, 32, batch_first=True)
    encoder = torch.nn.TransformerEncoder(layer, 1, enable_nested_tensor=True).eval()
    x = torch.randn(2, 6, 16)
    padding = torch.zeros(2, 6, dtype=torch.bool)
    padding[1, 4:] = True  # sequence 0 has 6 tokens, sequence 1 has 4
    with torch.inference_mode(), warnings.catch_warnings():
        # the formula raised on the nested tensor (no sizes) and warned; now it must not
        warnings.filterwarnings("error", message="lightning-to-energy")
        warnings.filterwarnings("ignore", message=".*nested", category=UserWarning)
        p = count(lambda: encoder(x, src_key_padding_mask=padding))
    assert "aten._transformer_encoder_layer_fwd" not in p.unmodelled_ops
    # per sequence of L tokens (E 16, F 32, 4 heads of width 4): in-projection 3 * L * 16 * 16,
    # out-projection L * 16 * 16, FFN 2 * L * 16 * 32 = 2048 L, attention 4 * L * L * (4 + 4)
    # = 32 L^2; L = 6: 12288 + 1152 = 13440, L = 4: 8192 + 512 = 8704 (padding not counted)
    assert by_class(p, MATRIX) == {FMA: 13440 + 8704}


def test_fused_lstm_forward_and_backward() -> None:
    lstm = torch.nn.LSTM(8, 16, batch_first=True)
    x = torch.randn(2, 5, 8)
    p = count(lambda: lstm(x))
    assert p.unmodelled_ops == {}
    # 2 * 5 = 10 positions, 4 gates * 16 units = 64 rows, input 8 + hidden 16:
    # 10 * 64 * 24 = 15360 FMA
    assert by_class(p, MATRIX) == {FMA: 15360}
    # per position and unit (160): 8 adds, 3 mul, 5 exp, 3 div; 2 bias adds on 10 * 64 rows
    assert by_class(p, VECTOR) == {ADD: 8 * 160 + 2 * 640, MUL: 480, EXP: 800, DIV: 480}

    out, _ = lstm(x)
    g = torch.ones_like(out)
    params = tuple(lstm.parameters())
    bwd = count(lambda: torch.autograd.grad(out, params, g, retain_graph=True))
    # data gradients and weight gradients each redo the 15360 multiply-accumulates
    assert by_class(bwd, MATRIX) == {FMA: 2 * 15360}


def test_cudnn_rnn_format_follows_the_cudnn_tf32_flag() -> None:
    # cuDNN RNNs take TF32 from torch.backends.cudnn.allow_tf32 (True by default), not from
    # the matmul flag (False by default): an fp32 LSTM on CUDA runs its gate products in TF32
    x = cuda_tensor(5, 2, 8)  # [T, B, I]
    weights = [cuda_tensor(64, 8), cuda_tensor(64, 16)]
    kwargs = {"input": x, "weight": weights, "mode": 2, "num_layers": 1, "bidirectional": False}
    call = OpCall(aten._cudnn_rnn.default, (), kwargs, None)
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = True
        # 5 * 2 = 10 positions, 4 gates * 16 units = 64 rows, input 8 + hidden 16:
        # 10 * 64 * 24 = 15360 FMA, in TF32
        assert cudnn_rnn(call).ops[(FMA, NumberFormat.TF32, MATRIX)] == 15360
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = False
        assert cudnn_rnn(call).ops[(FMA, FP32, MATRIX)] == 15360
        assert matmul_format(torch.float32, on_cuda=True, rnn=True) is FP32
        assert matmul_format(torch.float32, on_cuda=False, rnn=True) is FP32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def test_a_broadcast_matmul_operand_is_read_once() -> None:
    a, w = torch.randn(8, 16, 32), torch.randn(32, 64)
    p = count(lambda: torch.bmm(a, w.expand(8, 32, 64)))
    # a: 8 * 16 * 32 * 4 = 16384 bytes; w, batch stride 0: its 32 * 64 * 4 = 8192 bytes once
    # (not 8 * 8192 = 65536); out: 8 * 16 * 64 * 4 = 32768 bytes written
    assert (p.bytes_read, p.bytes_written) == (16384 + 8192, 32768)
    # a stride-0 row is no batch broadcast: GEMMs take a materialised copy of that matrix, so
    # it counts whole: a [16, 32] @ w [32, 64] with w's rows broadcast from [1, 64]: 2048 + 8192
    row = torch.randn(1, 64)
    p = count(lambda: torch.mm(a[0], row.expand(32, 64)))
    assert (p.bytes_read, p.bytes_written) == (2048 + 8192, 16 * 64 * 4)


# --- mutation-testing follow-ups: each test below failed on a deliberate mutant of matrix.py -----


def _with_tf32_flags(*, matmul: bool, cudnn: bool, check: Callable[[], None]) -> None:
    old = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
    )
    try:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.set_float32_matmul_precision("high" if matmul else "highest")
        torch.backends.cudnn.allow_tf32 = cudnn
        check()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old[0]
        torch.backends.cudnn.allow_tf32 = old[1]
        torch.set_float32_matmul_precision(old[2])


def test_cuda_addmm_and_convolutions_each_take_tf32_from_their_own_flag() -> None:
    bias, a, b, mm_out = cuda_tensor(5), cuda_tensor(4, 6), cuda_tensor(6, 5), cuda_tensor(4, 5)
    addmm_call = OpCall(aten.addmm.default, (bias, a, b), {}, mm_out)
    x, w, conv_out = cuda_tensor(2, 3, 8, 8), cuda_tensor(4, 3, 3, 3), cuda_tensor(2, 4, 8, 8)
    conv_args = (x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1)
    conv_call = OpCall(aten.convolution.default, conv_args, {}, conv_out)
    bw_args = (conv_out, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [True, True, False])
    bw_call = OpCall(aten.convolution_backward.default, bw_args, {}, (x, w, None))
    addmm_f = formula_for(aten.addmm)
    conv_bw_f = formula_for(aten.convolution_backward)
    assert addmm_f is not None and conv_bw_f is not None
    TF32 = NumberFormat.TF32

    def matmul_only() -> None:
        # matmul TF32 on, cuDNN TF32 off: addmm's 4 * 5 * 6 = 120 FMA in TF32, the bias add
        # (4 * 5 = 20) stays fp32; the convolution's 2 * 64 * 4 * 3 * 9 = 13824 FMA stay fp32
        assert addmm_f(addmm_call).ops == {(FMA, TF32, MATRIX): 120, (ADD, FP32, VECTOR): 20}
        assert convolution(conv_call).ops == {(FMA, FP32, MATRIX): 13824}
        # backward: grad_input and grad_weight, 13824 each, fp32
        assert conv_bw_f(bw_call).ops == {(FMA, FP32, MATRIX): 2 * 13824}

    def cudnn_only() -> None:
        # the PyTorch defaults: matmuls in fp32, cuDNN convolutions (and their backward) in TF32
        assert addmm_f(addmm_call).ops == {(FMA, FP32, MATRIX): 120, (ADD, FP32, VECTOR): 20}
        assert convolution(conv_call).ops == {(FMA, TF32, MATRIX): 13824}
        assert conv_bw_f(bw_call).ops == {(FMA, TF32, MATRIX): 2 * 13824}

    _with_tf32_flags(matmul=True, cudnn=False, check=matmul_only)
    _with_tf32_flags(matmul=False, cudnn=True, check=cudnn_only)


def test_bf16_addmm_adds_its_bias_in_bf16() -> None:
    bf16 = torch.bfloat16
    bias, a, b = (
        torch.randn(5, dtype=bf16),
        torch.randn(4, 6, dtype=bf16),
        torch.randn(6, 5, dtype=bf16),
    )
    p = count(lambda: torch.addmm(bias, a, b))
    # 4 * 5 * 6 = 120 FMA and 4 * 5 = 20 bias adds, both in bf16 (the output's format)
    BF16 = NumberFormat.BF16
    assert p.counts == {(FMA, BF16, MATRIX): 120, (ADD, BF16, VECTOR): 20}


def test_bmm_counts_a_matrix_with_a_stride_0_row_whole() -> None:
    # a [3, 4, 6] whose rows are broadcast from [3, 1, 6] (strides (6, 0, 1)): the GEMM gets a
    # materialised copy of each matrix, so it reads 3 * 4 * 6 * 4 = 288 bytes (not 3 * 6 * 4 = 72)
    a, b = torch.randn(3, 1, 6).expand(3, 4, 6), torch.randn(3, 6, 5)
    p = count(lambda: torch.bmm(a, b))
    # + b 3 * 6 * 5 * 4 = 360 bytes; writes 3 * 4 * 5 * 4 = 240 bytes
    assert (p.bytes_read, p.bytes_written) == (288 + 360, 240)
    # 3 * 4 * 5 * 6 = 360 FMA
    assert p.counts == {(FMA, FP32, MATRIX): 360}


def test_mv_and_dot_run_on_the_vector_units() -> None:
    m, v = torch.randn(4, 6), torch.randn(6)
    p = count(lambda: torch.mv(m, v))
    # [4, 6] @ [6]: 4 * 6 = 24 FMA on the vector unit (GEMV reuses no operand), flops 0
    assert (p.counts, p.flops) == ({(FMA, FP32, VECTOR): 24}, 0)
    # read (24 + 6) * 4 = 120 bytes, write 4 * 4 = 16 bytes
    assert (p.bytes_read, p.bytes_written) == (120, 16)
    # [6] . [6]: 6 FMA on the vector unit
    assert count(lambda: torch.dot(v, v)).counts == {(FMA, FP32, VECTOR): 6}


def test_scaled_mm_counts_fp8_products_and_fp32_scaling() -> None:
    e4m3 = torch.float8_e4m3fn
    a = torch.empty(16, 32, dtype=e4m3, device="meta")
    b = torch.empty(32, 8, dtype=e4m3, device="meta")
    scale = torch.empty((), device="meta")
    out = torch.empty(16, 8, dtype=torch.bfloat16, device="meta")
    formula = formula_for(aten._scaled_mm)
    assert formula is not None
    cost = formula(OpCall(aten._scaled_mm.default, (a, b, scale, scale), {}, out))
    # 16 * 8 * 32 = 4096 FMA in fp8 e4m3; the fp32 accumulator times scale_a and scale_b:
    # 2 * 16 * 8 = 256 MUL; no bias, no add
    assert cost.ops == {
        (FMA, NumberFormat.FP8_E4M3, MATRIX): 4096,
        (MUL, FP32, VECTOR): 256,
    }
    # 2 * 4096 = 8192 FLOPs; read 16*32 + 32*8 bytes of fp8 + 2 fp32 scales = 776 bytes;
    # write 16 * 8 * 2 = 256 bytes of bf16
    assert (cost.flops, cost.bytes_read, cost.bytes_written) == (8192, 776, 256)


def test_bf16_attention_keeps_its_softmax_in_fp32() -> None:
    q = torch.randn(1, 2, 8, 4, dtype=torch.bfloat16)
    p = count(lambda: F.scaled_dot_product_attention(q, q, q))
    BF16 = NumberFormat.BF16
    # 2 head-batches of 8 x 8 = 128 scores, width 4: 128 * (4 + 4) = 1024 FMA in bf16
    assert {k: n for k, n in p.counts.items() if k[2] is MATRIX} == {(FMA, BF16, MATRIX): 1024}
    # the fused kernel's softmax runs in fp32 whatever the input format: no bf16 vector work;
    # 128 scores + 16 rows of log-sum-exp = 144 EXP
    assert {k[1] for k in p.counts if k[2] is VECTOR} == {FP32}
    assert p.counts[(EXP, FP32, VECTOR)] == 144


def test_fused_lstm_backward_counts_twice_the_gate_math() -> None:
    lstm = torch.nn.LSTM(8, 16, batch_first=True)
    x = torch.randn(2, 5, 8)
    out, _ = lstm(x)
    g = torch.ones_like(out)
    bwd = count(lambda: torch.autograd.grad(out, tuple(lstm.parameters()), g, retain_graph=True))
    # the forward's vector work (test_fused_lstm_forward_and_backward): add 8 * 160 + 2 * 640
    # = 2560, mul 480, exp 800, div 480; its backward is taken as twice that
    assert by_class(bwd, VECTOR) == {ADD: 5120, MUL: 960, EXP: 1600, DIV: 960}


def test_an_out_buffer_counts_as_written_not_read() -> None:
    a, b, o = torch.randn(4, 6), torch.randn(6, 5), torch.empty(4, 5)
    p = count(lambda: torch.mm(a, b, out=o))
    # as test_mm: read (4*6 + 6*5) * 4 = 216 bytes; the out= buffer is written, 4*5*4 = 80
    assert (p.bytes_read, p.bytes_written) == (216, 80)
