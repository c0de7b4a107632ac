"""Formulas for matrix work: matmuls, convolutions, fused attention and fused RNN/transformer ops.

Inner products count one FMA per multiply-accumulate on :attr:`Unit.MATRIX`, in the format
the matrix units run in (:func:`matmul_format`: TF32 for fp32 CUDA tensors where PyTorch's
flags allow it). Bias adds, alpha/beta scaling and the softmax of attention are vector work.
Bytes are the tensors read and written once each, a batch dim broadcast with stride 0 read
once (:func:`~lightning_to_energy.counting.registry.matrix_read_bytes`); each call is one kernel
unless noted.

The ``flops`` field equals what ``torch.utils.flop_counter.FlopCounterMode`` reports for the
same call, quirks included (it ignores causal masks, bias adds and the ``groups`` factor of
a convolution's weight gradient, reads the raw ``_flash/_efficient_attention_*`` kernels'
[B, L, H, E] shapes as [B, H, L, E], and has no formula for the CPU flash-attention kernel,
``mv``, ``dot``, fused RNNs or the transformer fast paths), so the two can be compared
directly. TOs count the work honestly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from math import prod
from typing import Any, NamedTuple

import torch
from torch.utils.flop_counter import flop_registry

from lightning_to_energy.counting.cost_model import AluOp, NumberFormat, Unit
from lightning_to_energy.counting.registry import (
    CONV,
    MATMUL,
    OpCall,
    OpCost,
    OpKey,
    dtype_format,
    formula_for,
    io_bytes,
    matmul_format,
    nbytes,
    on_cuda,
    register,
    value_dependent,
)

__all__ = [
    "addmm",
    "aten",
    "attention_backward",
    "attention_backward_ops",
    "attention_forward",
    "attention_forward_ops",
    "baddbmm",
    "bmm",
    "convolution",
    "convolution_backward",
    "cudnn_rnn",
    "cudnn_rnn_backward",
    "kept_scores",
    "matrix_vector",
    "mkldnn_rnn_layer",
    "mkldnn_rnn_layer_backward",
    "mm",
    "native_multi_head_attention",
    "scaled_mm",
    "transformer_encoder_layer",
]

aten = torch.ops.aten

FMA, ADD, MUL, CMP, DIV, EXP = AluOp.FMA, AluOp.ADD, AluOp.MUL, AluOp.CMP, AluOp.DIV, AluOp.EXP
MATRIX, VECTOR = Unit.MATRIX, Unit.VECTOR


def _add(ops: dict[OpKey, float], key: OpKey, n: float) -> None:
    if n:
        ops[key] = ops.get(key, 0.0) + n


def _scaling(ops: dict[OpKey, float], n_out: int, fmt: NumberFormat, alpha: Any, beta: Any) -> None:
    """Vector work of ``beta * self + alpha * (a @ b)`` on ``n_out`` output elements."""
    if beta != 0:
        _add(ops, (ADD, fmt, VECTOR), n_out)
        if beta != 1:
            _add(ops, (MUL, fmt, VECTOR), n_out)
    if alpha != 1:
        _add(ops, (MUL, fmt, VECTOR), n_out)


# --- matmuls --------------------------------------------------------------------------------


@register(aten.mm)
def mm(call: OpCall) -> OpCost:
    # a: [m, k] @ b: [k, n] -> out: [m, n]: m * n * k multiply-accumulates
    a, b = call.args[0], call.args[1]
    m, k = a.shape
    n = b.shape[1]
    fma = m * n * k
    read, written = io_bytes(call, matrix=True)
    fmt = matmul_format(a.dtype, on_cuda=on_cuda(a))
    return OpCost({(FMA, fmt, MATRIX): fma}, read, written, 1, 2 * fma, kind=MATMUL)


@register(aten.addmm)
def addmm(call: OpCall) -> OpCost:
    # beta * self (broadcast to [m, n]) + alpha * (a: [m, k] @ b: [k, n]) -> out: [m, n]
    a, b = call.args[1], call.args[2]
    m, k = a.shape
    n = b.shape[1]
    fma = m * n * k
    ops: dict[OpKey, float] = {(FMA, matmul_format(a.dtype, on_cuda=on_cuda(a)), MATRIX): fma}
    beta, alpha = call.kwargs.get("beta", 1), call.kwargs.get("alpha", 1)
    _scaling(ops, m * n, dtype_format(call.out.dtype), alpha, beta)
    read, written = io_bytes(call, matrix=True)
    return OpCost(ops, read, written, 1, 2 * fma, kind=MATMUL)


@register(aten.bmm)
def bmm(call: OpCall) -> OpCost:
    # a: [b, m, k] @ c: [b, k, n] -> out: [b, m, n]: b * m * n * k multiply-accumulates
    a, c = call.args[0], call.args[1]
    bs, m, k = a.shape
    n = c.shape[2]
    fma = bs * m * n * k
    read, written = io_bytes(call, matrix=True)
    fmt = matmul_format(a.dtype, on_cuda=on_cuda(a))
    return OpCost({(FMA, fmt, MATRIX): fma}, read, written, 1, 2 * fma, kind=MATMUL)


@register(aten.baddbmm)
def baddbmm(call: OpCall) -> OpCost:
    # beta * self (broadcast to [b, m, n]) + alpha * (a: [b, m, k] @ c: [b, k, n])
    a, c = call.args[1], call.args[2]
    bs, m, k = a.shape
    n = c.shape[2]
    fma = bs * m * n * k
    ops: dict[OpKey, float] = {(FMA, matmul_format(a.dtype, on_cuda=on_cuda(a)), MATRIX): fma}
    beta, alpha = call.kwargs.get("beta", 1), call.kwargs.get("alpha", 1)
    _scaling(ops, bs * m * n, dtype_format(call.out.dtype), alpha, beta)
    read, written = io_bytes(call, matrix=True)
    return OpCost(ops, read, written, 1, 2 * fma, kind=MATMUL)


@register(aten._scaled_mm)
def scaled_mm(call: OpCall) -> OpCost:
    # fp8 a: [m, k] @ b: [k, n] -> [m, n], then out = acc * scale_a * scale_b (+ bias)
    a, b = call.args[0], call.args[1]
    m, k = a.shape
    n = b.shape[1]
    fma = m * n * k
    ops: dict[OpKey, float] = {(FMA, dtype_format(a.dtype), MATRIX): fma}
    # NB: the scaling and bias run on the fp32 accumulator, two multiplies per output.
    _add(ops, (MUL, NumberFormat.FP32, VECTOR), 2 * m * n)
    if call.arg("bias") is not None:
        _add(ops, (ADD, NumberFormat.FP32, VECTOR), m * n)
    read, written = io_bytes(call, matrix=True)
    return OpCost(ops, read, written, 1, 2 * fma, kind=MATMUL)


@register(aten.mv, aten.addmv, aten.dot, aten.vdot)
def matrix_vector(call: OpCall) -> OpCost:
    # mv: [m, n] @ [n] -> [m]: m * n FMA; addmv adds beta * self; dot/vdot: [n] . [n]: n FMA
    # NB: GEMV and dot products reuse no operand, so they run on the vector units (cuBLAS
    # gemv does not use tensor cores). FlopCounterMode counts nothing for them: flops 0.
    first = 1 if call.packet is aten.addmv else 0
    mat = call.args[first]
    fmt = dtype_format(mat.dtype)
    fma = mat.numel()
    ops: dict[OpKey, float] = {(FMA, fmt, VECTOR): fma}
    if call.packet is aten.addmv:
        beta, alpha = call.kwargs.get("beta", 1), call.kwargs.get("alpha", 1)
        _scaling(ops, call.out.numel(), fmt, alpha, beta)
    read, written = io_bytes(call, matrix=True)
    return OpCost(ops, read, written, 1, 0)


# --- convolutions ---------------------------------------------------------------------------


def _conv_fma(
    x_shape: Sequence[int], w_shape: Sequence[int], out_shape: Sequence[int], transposed: bool
) -> int:
    """Multiply-accumulates of a (possibly grouped, possibly transposed) convolution.

    Regular: w: [C_out, C_in/g, *k], out: [N, C_out, *o] -> N * prod(o) * C_out * C_in/g * prod(k).
    Transposed: w: [C_in, C_out/g, *k], x: [N, C_in, *i] -> N * prod(i) * C_in * C_out/g * prod(k).
    """
    # NB: taps that fall on zero padding count as work, as implicit-GEMM kernels do them.
    spatial = x_shape[2:] if transposed else out_shape[2:]
    return x_shape[0] * prod(spatial) * w_shape[0] * w_shape[1] * prod(w_shape[2:])


@register(aten.convolution, aten._convolution)
def convolution(call: OpCall) -> OpCost:
    # (input, weight, bias, stride, padding, dilation, transposed, output_padding, groups, ...)
    x, w, bias = call.args[0], call.args[1], call.args[2]
    out = call.out
    fma = _conv_fma(x.shape, w.shape, out.shape, bool(call.args[6]))
    ops: dict[OpKey, float] = {
        (FMA, matmul_format(x.dtype, conv=True, on_cuda=on_cuda(x)), MATRIX): fma
    }
    if bias is not None:
        # one add per output element: N * C_out * prod(o)
        _add(ops, (ADD, dtype_format(out.dtype), VECTOR), out.numel())
    read, written = io_bytes(call, matrix=True)
    kernels, vector_kernels = 1, 0  # no bias, or one fused into the kernel (oneDNN)
    if bias is not None and on_cuda(x):
        # cuDNN convolves without the bias; PyTorch then adds it in a second kernel
        # (output.add_(bias) in ATen's _convolution), reading and writing the output again:
        # a vector kernel (vector_kernels), with no share in the convolution's matrix work.
        # NB: the native depthwise kernels fuse it; counted like cuDNN. oneDNN (CPU) fuses it.
        kernels, vector_kernels = 2, 1
        read += nbytes(out)
        written += nbytes(out)
    return OpCost(ops, read, written, kernels, 2 * fma, kind=CONV, vector_kernels=vector_kernels)


@register(aten.convolution_backward)
def convolution_backward(call: OpCall) -> OpCost:
    # (grad_output, input, weight, bias_sizes, stride, padding, dilation, transposed,
    #  output_padding, groups, output_mask) -> (grad_input, grad_weight, grad_bias)
    grad_out, x, w = call.args[0], call.args[1], call.args[2]
    transposed, groups, mask = bool(call.args[7]), call.args[9], call.args[10]
    grad_input, grad_weight, grad_bias = call.out
    # grad_input is a transposed convolution of grad_output with the weight, and grad_weight
    # a convolution of the input with grad_output: each does the forward's multiply-accumulates.
    fma_fwd = _conv_fma(x.shape, w.shape, grad_out.shape, transposed)
    mat_fmt = matmul_format(grad_out.dtype, conv=True, on_cuda=on_cuda(grad_out))
    g_bytes = nbytes(grad_out)
    ops: dict[OpKey, float] = {}
    read = written = kernels = flops = vector_kernels = 0
    if mask[0]:
        _add(ops, (FMA, mat_fmt, MATRIX), fma_fwd)
        read += g_bytes + nbytes(w)
        written += nbytes(grad_input)
        kernels += 1
        flops += 2 * fma_fwd
    if mask[1]:
        _add(ops, (FMA, mat_fmt, MATRIX), fma_fwd)
        read += g_bytes + nbytes(x)
        written += nbytes(grad_weight)
        kernels += 1
        # NB: FlopCounterMode's grad_weight formula drops the 1/groups factor; match it.
        flops += 2 * fma_fwd * groups
    if mask[2]:
        # grad_bias sums grad_output over batch and space: one add per grad_output element
        _add(ops, (ADD, dtype_format(grad_out.dtype), VECTOR), grad_out.numel())
        read += g_bytes
        written += nbytes(grad_bias)
        kernels += 1
        vector_kernels = 1  # a reduction on the vector units, no share in the matrix work
    return OpCost(ops, read, written, kernels, flops, kind=CONV, vector_kernels=vector_kernels)


# --- fused scaled-dot-product attention -----------------------------------------------------

# How a kernel masks scores: none, causal aligned top-left (PyTorch's ``is_causal``), or causal
# aligned bottom-right (memory-efficient attention's ``custom_mask_type == 2``).
NO_MASK, CAUSAL_TOP_LEFT, CAUSAL_BOTTOM_RIGHT = 0, 1, 2


def kept_scores(lq: int, lk: int, mask: int) -> int:
    """Scores per (batch, head) that a kernel computes: all, or those a causal mask keeps.

    Query row ``i`` keeps key columns ``0 .. i + c - 1`` clipped to ``[0, lk]``, where
    ``c = 1`` top-left and ``c = 1 + lk - lq`` bottom-right. For ``lq == lk`` both keep
    ``lq * (lq + 1) / 2`` of the ``lq * lq`` scores: about half.
    """
    if mask == NO_MASK:
        return lq * lk
    c = 1 if mask == CAUSAL_TOP_LEFT else 1 + lk - lq
    # rows whose kept count i + c lies in [1, lk] contribute i + c: an arithmetic series
    lo, hi = max(c, 1), min(lq - 1 + c, lk)
    kept = (lo + hi) * (hi - lo + 1) // 2 if hi >= lo else 0
    # rows with i + c > lk keep all lk columns
    return kept + lk * max(0, lq - max(0, lk - c + 1))


class _Heads(NamedTuple):
    """One attention problem: bh = batch * query heads, query/key lengths, head dims."""

    bh: int
    lq: int
    lk: int
    e: int
    ev: int


def _bhld(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> list[_Heads]:
    # q: [B, Hq, Lq, E], k: [B, Hkv, Lk, E], v: [B, Hkv, Lk, Ev]
    b, h, lq, e = q.shape
    return [_Heads(b * h, lq, k.shape[2], e, v.shape[3])]


def _blhd(call: OpCall, cum_q: str, cum_k: str) -> list[_Heads]:
    """Shapes of the ``_flash/_efficient_attention_*`` kernels, whose layout is [B, L, H, E].

    Varlen (packed) calls carry cumulative sequence offsets; each sequence is then its own
    problem with batch 1.
    """
    q, k, v = call.arg("query"), call.arg("key"), call.arg("value")
    offsets_q, offsets_k = call.arg(cum_q), call.arg(cum_k)
    h, e, ev = q.shape[-2], q.shape[-1], v.shape[-1]
    if offsets_q is None or offsets_q.numel() == 0:
        b, lq = q.shape[0], q.shape[1]
        return [_Heads(b * h, lq, k.shape[1], e, ev)]
    # NB: like FlopCounterMode, reading varlen offsets syncs the device once per call.
    lqs = offsets_q.diff().tolist()
    lks = offsets_k.diff().tolist()
    return [_Heads(h, int(lq), int(lk), e, ev) for lq, lk in zip(lqs, lks, strict=True)]


class _AttentionOp(NamedTuple):
    """How an attention op names its arguments (forward and backward share the names)."""

    causal: str  # "is_causal" (bool), or "custom_mask_type" (0 none, 1 top-left, 2 bottom-right)
    bias: str | None  # an additive bias or mask, if the op takes one
    varlen: tuple[str, str] | None = None  # cumulative offsets of the [B, L, H, E] kernels


_SDPA = _AttentionOp("is_causal", None)
_SDPA_BIAS = _AttentionOp("is_causal", "attn_bias")
_SDPA_CPU = _AttentionOp("is_causal", "attn_mask")
_FLASH = _AttentionOp("is_causal", None, ("cum_seq_q", "cum_seq_k"))
_EFFICIENT = _AttentionOp("custom_mask_type", "bias", ("cu_seqlens_q", "cu_seqlens_k"))

_ATTENTION_FORWARD: dict[Any, _AttentionOp] = {
    aten._scaled_dot_product_flash_attention: _SDPA,
    aten._scaled_dot_product_efficient_attention: _SDPA_BIAS,
    aten._scaled_dot_product_cudnn_attention: _SDPA_BIAS,
    aten._scaled_dot_product_flash_attention_for_cpu: _SDPA_CPU,
    aten._flash_attention_forward: _FLASH,
    aten._efficient_attention_forward: _EFFICIENT,
}

_ATTENTION_BACKWARD: dict[Any, _AttentionOp] = {
    aten._scaled_dot_product_flash_attention_backward: _SDPA,
    aten._scaled_dot_product_efficient_attention_backward: _SDPA_BIAS,
    aten._scaled_dot_product_cudnn_attention_backward: _SDPA_BIAS,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _SDPA_CPU,
    aten._flash_attention_backward: _FLASH,
    aten._efficient_attention_backward: _EFFICIENT,
}


def _attention_setup(call: OpCall, spec: _AttentionOp) -> tuple[list[_Heads], int, bool, bool]:
    if spec.varlen is None:
        heads = _bhld(call.arg("query"), call.arg("key"), call.arg("value"))
    else:
        heads = _blhd(call, *spec.varlen)
    causal = call.arg(spec.causal, 0)
    if spec.causal == "custom_mask_type":
        mask = int(causal)
    else:
        mask = CAUSAL_TOP_LEFT if causal else NO_MASK
    dropout = bool(call.arg("dropout_p", 0.0))
    bias = spec.bias is not None and call.arg(spec.bias) is not None
    return heads, mask, dropout, bias


def _formats(q: torch.Tensor) -> tuple[NumberFormat, NumberFormat]:
    # NB: fused kernels keep scores and softmax in fp32 (fp64 for fp64 inputs) whatever the
    # input format; the two inner products run in the matrix units' format.
    vec = NumberFormat.FP64 if q.dtype == torch.float64 else NumberFormat.FP32
    return matmul_format(q.dtype, on_cuda=on_cuda(q)), vec


def _fcm_flops(call: OpCall) -> int:
    fn = flop_registry.get(call.packet)
    if fn is None:
        return 0  # NB: e.g. the CPU flash kernel, which FlopCounterMode does not count
    return int(fn(*call.args, out_val=call.out, **call.kwargs))


def attention_forward_ops(
    heads: Sequence[_Heads],
    mask: int,
    *,
    mat: NumberFormat,
    vec: NumberFormat,
    dropout: bool = False,
    bias: bool = False,
) -> dict[OpKey, float]:
    """ALU ops of one fused attention forward, per the flash-attention algorithm.

    Per (batch, head) with ``s`` kept scores (:func:`kept_scores`):
    S = Q K^T: s * E FMA; O = P V: s * Ev FMA (matrix unit); scaling: s MUL; softmax: s CMP
    (row max), 2 s ADD (subtract max, row sum), s EXP; normalising O: Lq * Ev DIV; the
    log-sum-exp saved for backward: Lq EXP + Lq ADD; a bias or mask: s ADD; dropout:
    s CMP + s MUL.
    """
    ops: dict[OpKey, float] = {}
    for h in heads:
        s = h.bh * kept_scores(h.lq, h.lk, mask)
        rows = h.bh * h.lq
        _add(ops, (FMA, mat, MATRIX), s * (h.e + h.ev))
        _add(ops, (MUL, vec, VECTOR), s * (2 if dropout else 1))
        _add(ops, (CMP, vec, VECTOR), s * (2 if dropout else 1))
        _add(ops, (ADD, vec, VECTOR), s * (3 if bias else 2) + rows)
        _add(ops, (EXP, vec, VECTOR), s + rows)
        _add(ops, (DIV, vec, VECTOR), rows * h.ev)
    return ops


def attention_backward_ops(
    heads: Sequence[_Heads],
    mask: int,
    *,
    mat: NumberFormat,
    vec: NumberFormat,
    dropout: bool = False,
) -> dict[OpKey, float]:
    """ALU ops of one fused attention backward, which recomputes the scores.

    Per (batch, head) with ``s`` kept scores: S = Q K^T: s * E; dV = P^T dO: s * Ev;
    dP = dO V^T: s * Ev; dQ = dS K: s * E; dK = dS^T Q: s * E FMA (matrix unit), i.e.
    s * (3 E + 2 Ev). Recomputing P: s MUL (scale), s ADD (minus log-sum-exp), s EXP;
    D = rowsum(dO * O): Lq * Ev FMA; dS = P * (dP - D) * scale: s ADD + 2 s MUL; dropout:
    s CMP (regenerate the mask) + s MUL.
    """
    # NB: the gradient of an additive bias (efficient attention) and the head-group sums of
    # grouped-query attention are not counted.
    ops: dict[OpKey, float] = {}
    for h in heads:
        s = h.bh * kept_scores(h.lq, h.lk, mask)
        rows = h.bh * h.lq
        _add(ops, (FMA, mat, MATRIX), s * (3 * h.e + 2 * h.ev))
        _add(ops, (FMA, vec, VECTOR), rows * h.ev)
        _add(ops, (MUL, vec, VECTOR), s * (4 if dropout else 3))
        _add(ops, (ADD, vec, VECTOR), 2 * s)
        _add(ops, (EXP, vec, VECTOR), s)
        if dropout:
            _add(ops, (CMP, vec, VECTOR), s)
    return ops


# the varlen kernels read their sequence offsets
value_dependent(
    aten._flash_attention_forward,
    aten._efficient_attention_forward,
    aten._flash_attention_backward,
    aten._efficient_attention_backward,
)


@register(*_ATTENTION_FORWARD)
def attention_forward(call: OpCall) -> OpCost:
    spec = _ATTENTION_FORWARD[call.packet]
    heads, mask, dropout, bias = _attention_setup(call, spec)
    mat, vec = _formats(call.arg("query"))
    ops = attention_forward_ops(heads, mask, mat=mat, vec=vec, dropout=dropout, bias=bias)
    read, written = io_bytes(call, matrix=True)
    return OpCost(ops, read, written, 1, _fcm_flops(call), kind=MATMUL)


@register(*_ATTENTION_BACKWARD)
def attention_backward(call: OpCall) -> OpCost:
    spec = _ATTENTION_BACKWARD[call.packet]
    heads, mask, dropout, _bias = _attention_setup(call, spec)
    mat, vec = _formats(call.arg("query"))
    ops = attention_backward_ops(heads, mask, mat=mat, vec=vec, dropout=dropout)
    read, written = io_bytes(call, matrix=True)
    # NB: flash backward launches a small pre-processing kernel too; counted as one kernel.
    return OpCost(ops, read, written, 1, _fcm_flops(call), kind=MATMUL)


# --- fused transformer fast paths (nn.MultiheadAttention / nn.TransformerEncoderLayer) --------
# In eval mode without grad, these modules call one fused aten op each. Its parts are counted
# like the ops the training path runs: projections and attention here, layer norms and the
# activation by the formulas registered for native_layer_norm / gelu / relu (applied to meta
# tensors of the right shapes).


def _meta_like(shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    return torch.empty(tuple(shape), dtype=like.dtype, device="meta")


def _part(packet: Any, args: tuple[Any, ...], out: Any) -> OpCost:
    """The cost of one part of a fused op, by the formula registered for ``packet``."""
    formula = formula_for(packet)
    if formula is None:
        return OpCost(kernels=0)
    return formula(OpCall(packet.default, args, {}, out))


def _mha_ops(
    b: int,
    lq: int,
    lk: int,
    e: int,
    heads: int,
    *,
    x: torch.Tensor,
    self_attention: bool,
    mask: bool,
) -> dict[OpKey, float]:
    """In-projection, attention and out-projection of multi-head attention.

    Projections: self-attention [b*lq, e] @ [e, 3e]; otherwise q [b*lq, e] @ [e, e] and k, v
    [b*lk, e] @ [e, e] each; plus one bias add per projected element. Attention over
    ``heads`` heads of width e / heads (:func:`attention_forward_ops`, a mask as a bias).
    Out-projection: [b*lq, e] @ [e, e] plus its bias.
    """
    mat, vec = matmul_format(x.dtype, on_cuda=on_cuda(x)), dtype_format(x.dtype)
    projected = 3 * b * lq * e if self_attention else b * lq * e + 2 * b * lk * e
    ops = attention_forward_ops(
        [_Heads(b * heads, lq, lk, e // heads, e // heads)],
        NO_MASK,
        mat=mat,
        vec=NumberFormat.FP64 if x.dtype == torch.float64 else NumberFormat.FP32,
        bias=mask,
    )
    _add(ops, (FMA, mat, MATRIX), projected * e + b * lq * e * e)
    _add(ops, (ADD, vec, VECTOR), projected + b * lq * e)
    return ops


def _merge(*costs: OpCost) -> dict[OpKey, float]:
    ops: dict[OpKey, float] = {}
    for cost in costs:
        for key, n in cost.ops.items():
            _add(ops, key, n)
    return ops


@register(aten._native_multi_head_attention)
def native_multi_head_attention(call: OpCall) -> OpCost:
    # (query [B, L, E], key [B, S, E], value [B, S, E], embed_dim, num_head, qkv_weight [3E, E],
    #  qkv_bias, proj_weight [E, E], proj_bias, mask, need_weights, ...) -> (out, weights)
    q, k = call.arg("query"), call.arg("key")
    b, lq, e = q.shape
    ops = _mha_ops(
        b,
        lq,
        k.shape[1],
        e,
        call.arg("num_head"),
        x=q,
        self_attention=q is k and k is call.arg("value"),
        mask=call.arg("mask") is not None,
    )
    read, written = io_bytes(call, matrix=True)
    # NB: in-projection, attention and out-projection: three kernels; the projected q, k, v
    # and the attention output are intermediate traffic, not counted. FlopCounterMode has no
    # formula for this fused op: flops 0.
    return OpCost(ops, read, written, 3, 0, kind=MATMUL)


def _encoder_layer_ops(call: OpCall, src: torch.Tensor, b: int, length: int) -> dict[OpKey, float]:
    """ALU ops of one encoder layer on ``b`` sequences of ``length`` tokens each."""
    # x = x + MHA(LN1(x)); x = x + FFN(LN2(x)) with FFN [E -> F -> E] and gelu or relu
    # (norm_first), or LN after each residual add (post-norm): the same work.
    e = src.size(-1)
    f = call.arg("ffn_weight_1").shape[0]
    mat, vec = matmul_format(src.dtype, on_cuda=on_cuda(src)), dtype_format(src.dtype)
    x = _meta_like((b, length, e), src)
    rows = _meta_like((b, length, 1), src)
    w = _meta_like((e,), src)
    norm = _part(aten.native_layer_norm, (x, [e], w, w, call.arg("eps")), (x, rows, rows))
    hidden = _meta_like((b, length, f), src)
    act = (
        _part(aten.gelu, (hidden,), hidden)
        if call.arg("use_gelu")
        else _part(aten.relu, (hidden,), hidden)
    )
    ops = _merge(norm, norm, act)
    for key, n in _mha_ops(
        b,
        length,
        length,
        e,
        call.arg("num_heads"),
        x=src,
        self_attention=True,
        mask=call.arg("mask") is not None,
    ).items():
        _add(ops, key, n)
    # FFN: [b*L, e] @ [e, f] and [b*L, f] @ [f, e], bias adds on f and e; 2 residual adds
    _add(ops, (FMA, mat, MATRIX), 2 * b * length * e * f)
    _add(ops, (ADD, vec, VECTOR), b * length * (f + 3 * e))
    return ops


@register(aten._transformer_encoder_layer_fwd)
def transformer_encoder_layer(call: OpCall) -> OpCost:
    # src [B, L, E], or a nested tensor of B sequences [L_i, E] (nn.TransformerEncoder in eval
    # with a src_key_padding_mask drops the padding): each sequence is its own problem.
    src = call.arg("src")
    if src.is_nested:
        # NB: the sizes of a nested tensor are host metadata; reading them needs no sync.
        ops: dict[OpKey, float] = {}
        # every term is linear in the batch: one call per distinct length, k sequences each
        lengths = Counter(int(n) for n in src._nested_tensor_size()[:, 0].tolist())
        for length, k in lengths.items():
            for key, n in _encoder_layer_ops(call, src, k, length).items():
                _add(ops, key, n)
    else:
        ops = _encoder_layer_ops(call, src, src.shape[0], src.shape[1])
    read, written = io_bytes(call, matrix=True)
    # NB: 2 norms, 3 attention kernels, 2 FFN matmuls, the activation and 2 residual adds:
    # ten kernels; intermediate activations are not counted as traffic. FlopCounterMode has
    # no formula for this fused op: flops 0.
    return OpCost(ops, read, written, 10, 0, kind=MATMUL)


# --- fused recurrent layers (nn.LSTM / nn.GRU / nn.RNN on oneDNN and cuDNN) ------------------
# Modes as PyTorch passes them to both libraries: 0 RNN_RELU, 1 RNN_TANH, 2 LSTM, 3 GRU.
# Gate math per time step, batch element and hidden unit, biases aside:
# LSTM: i, f, o sigmoids (EXP + ADD + DIV each), g and tanh(c) (EXP each), the 4 sums of the
# input and hidden products (ADD), c = f*c + i*g (2 MUL, 1 ADD), h = o*tanh(c) (1 MUL).
# GRU: r, z sigmoids, their 2 sums, n = tanh(x_n + r*h_n) (MUL, ADD, EXP), h = (1-z)*n + z*h
# (2 ADD, 2 MUL). Plain RNN: one sum, then tanh (EXP) or relu (CMP).
_RNN_GATES: dict[int, dict[AluOp, float]] = {
    0: {ADD: 1, CMP: 1},
    1: {ADD: 1, EXP: 1},
    2: {ADD: 8, MUL: 3, EXP: 5, DIV: 3},
    3: {ADD: 7, MUL: 3, EXP: 3, DIV: 2},
}


def _rnn_ops(
    steps: int,
    layers: Sequence[tuple[torch.Tensor, torch.Tensor, bool]],
    mode: int,
    x: torch.Tensor,
) -> dict[OpKey, float]:
    """Forward ALU ops of recurrent layers over ``steps`` (time x batch) positions.

    Per layer and direction with w_ih [G*H, I] and w_hh [G*H, R] (R = H, or the projection
    size): steps * G*H * (I + R) FMA for the two products, 2 * steps * G*H bias adds when the
    layer has biases, and the gate math of :data:`_RNN_GATES` on steps * H hidden units.
    """
    # cuDNN (and MIOpen) RNNs take their TF32 flag from cuDNN, not from the matmul flag: fp32
    # LSTMs on CUDA run in TF32 by default. oneDNN's CPU tensors are never TF32.
    mat = matmul_format(x.dtype, on_cuda=on_cuda(x), rnn=True)
    vec = dtype_format(x.dtype)
    gates = _RNN_GATES.get(mode, _RNN_GATES[1])
    ops: dict[OpKey, float] = {}
    for w_ih, w_hh, has_bias in layers:
        rows = w_ih.shape[0]  # G * H
        hidden = rows // {2: 4, 3: 3}.get(mode, 1)
        _add(ops, (FMA, mat, MATRIX), steps * rows * (w_ih.shape[1] + w_hh.shape[1]))
        if has_bias:
            _add(ops, (ADD, vec, VECTOR), 2 * steps * rows)
        for op, n in gates.items():
            _add(ops, (op, vec, VECTOR), n * steps * hidden)
    return ops


def _rnn_backward_ops(forward: dict[OpKey, float], data: bool, weight: bool) -> dict[OpKey, float]:
    """Backward of recurrent layers from their forward ops.

    The products run again for the data gradients (input and hidden state) and once more for
    the weight gradients. NB: the gate math's backward is taken as twice its forward.
    """
    passes = int(data) + int(weight)
    return {key: n * (passes if key[2] is MATRIX else 2) for key, n in forward.items() if passes}


def _steps(x: torch.Tensor) -> int:
    # [T, B, I] or [B, T, I]: T * B positions; packed [sum(batch_sizes), I]: its rows
    return x.shape[0] if x.dim() == 2 else x.shape[0] * x.shape[1]


def _cudnn_layers(call: OpCall) -> list[tuple[torch.Tensor, torch.Tensor, bool]]:
    # weight: per layer and direction [w_ih, w_hh, (b_ih, b_hh), (w_hr)]
    weights = call.arg("weight")
    per = len(weights) // (call.arg("num_layers") * (2 if call.arg("bidirectional") else 1))
    has_bias = per >= 4
    return [(weights[i], weights[i + 1], has_bias) for i in range(0, len(weights), per)]


@register(aten._cudnn_rnn, aten.miopen_rnn)
def cudnn_rnn(call: OpCall) -> OpCost:
    x = call.arg("input")
    ops = _rnn_ops(_steps(x), _cudnn_layers(call), call.arg("mode"), x)
    read, written = io_bytes(call, matrix=True)
    # NB: one launch per layer and direction is counted as one kernel. FlopCounterMode has
    # no formula for fused RNNs: flops 0.
    return OpCost(ops, read, written, 1, 0, kind=MATMUL)


@register(aten._cudnn_rnn_backward)
def cudnn_rnn_backward(call: OpCall) -> OpCost:
    x = call.arg("input")
    forward = _rnn_ops(_steps(x), _cudnn_layers(call), call.arg("mode"), x)
    mask = call.arg("output_mask")
    ops = _rnn_backward_ops(forward, any(mask[:3]), bool(mask[3]))
    read, written = io_bytes(call, matrix=True)
    return OpCost(ops, read, written, int(any(mask[:3])) + int(mask[3]), 0, kind=MATMUL)


@register(aten.mkldnn_rnn_layer)
def mkldnn_rnn_layer(call: OpCall) -> OpCost:
    # one layer, one direction: (input, w_ih, w_hh, b_ih, b_hh, hx, cx, reverse, ...)
    x = call.arg("input")
    layer = (call.arg("weight0"), call.arg("weight1"), bool(call.arg("has_biases")))
    ops = _rnn_ops(_steps(x), [layer], call.arg("mode"), x)
    read, written = io_bytes(call, matrix=True)
    return OpCost(ops, read, written, 1, 0, kind=MATMUL)


@register(aten.mkldnn_rnn_layer_backward)
def mkldnn_rnn_layer_backward(call: OpCall) -> OpCost:
    x = call.arg("input")
    layer = (call.arg("weight1"), call.arg("weight2"), bool(call.arg("has_biases")))
    forward = _rnn_ops(_steps(x), [layer], call.arg("mode"), x)
    read, written = io_bytes(call, matrix=True)
    return OpCost(_rnn_backward_ops(forward, True, True), read, written, 2, 0, kind=MATMUL)
