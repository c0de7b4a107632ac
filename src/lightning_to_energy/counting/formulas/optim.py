"""Optimizer formulas: the ``_foreach_*`` list ops, fused Adam/AdamW/SGD/Adagrad, AMP scaling.

PyTorch optimizers take one of three paths, all seen by a dispatch mode:

- ``foreach=True`` (the default on CUDA): ``_foreach_*`` ops over lists of parameters. Each is
  counted as the element-wise op it applies (the tables in :mod:`.vector`), summed over the list.
- ``foreach=False``: per-parameter in-place ops (``mul_``, ``add_``, ``lerp_``, ``addcmul_``,
  ``sqrt``, ``div``, ``addcdiv_``, ``maximum``), counted by :mod:`.vector`'s element-wise formulas.
- ``fused=True``: one ``_fused_adam_`` / ``_fused_adamw_`` / ``_fused_sgd_`` call per step whose
  whole update is decomposed below.

Counts are per element in the parameter's format on the vector unit; FLOPs are 0 (FlopCounterMode
counts none of these).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from lightning_to_energy.counting.cost_model import AluOp
from lightning_to_energy.counting.formulas.vector import (
    POINTWISE,
    PerElement,
    PerElementSpec,
    aten_packets,
    call_arg,
    cast_ops,
    count_ops,
    input_tensors,
    merge_ops,
    norm_ops,
    per_element_ops,
    read_bytes,
    written_tensors,
)
from lightning_to_energy.counting.registry import (
    Formula,
    OpCall,
    OpCost,
    OpKey,
    dtype_format,
    nbytes,
    register,
)

__all__ = [
    "adagrad_per_element",
    "adam_per_element",
    "foreach_packets",
    "sgd_per_element",
]

aten = torch.ops.aten

ADD, MUL, CMP, DIV, SQRT = AluOp.ADD, AluOp.MUL, AluOp.CMP, AluOp.DIV, AluOp.SQRT


def _groups(tensors: Sequence[torch.Tensor]) -> int:
    # NB: a foreach op launches about ceil(elements / chunk) kernels per (device, dtype) group on
    # CUDA (multi_tensor_apply); counted as 1 per group.
    return len({(t.device, t.dtype) for t in tensors})


def _list_cost(
    call: OpCall,
    outs: Sequence[torch.Tensor],
    ops: Mapping[OpKey, float],
    *,
    read: int | None = None,
) -> OpCost:
    if read is None:
        read = sum(read_bytes(t) for t in input_tensors(call))
    return OpCost(
        ops=ops,
        bytes_read=read,
        bytes_written=sum(nbytes(t) for t in outs),
        kernels=_groups(outs),
        flops=0,
    )


# --- _foreach_* -------------------------------------------------------------------------------


def _foreach(spec: PerElementSpec) -> Formula:
    """``_foreach_<op>``: the element-wise ``spec`` on every output element of every list entry.

    Outputs are the returned list, the ``out=`` list, or (in-place) the ``self`` list.
    """

    def formula(call: OpCall) -> OpCost:
        outs = written_tensors(call)
        per_element = per_element_ops(spec, call)
        ops = merge_ops(*(count_ops(dtype_format(t.dtype), per_element, t.numel()) for t in outs))
        return _list_cost(call, outs, ops)

    return formula


def foreach_packets(name: str) -> list[Any]:
    """The ``_foreach_<name>`` and ``_foreach_<name>_`` packets this torch has."""
    return [
        getattr(aten, variant)
        for variant in (f"_foreach_{name}", f"_foreach_{name}_")
        if hasattr(aten, variant)
    ]


# Every element-wise op with a foreach twin (add, sub, mul, div, addcmul, addcdiv, lerp, sqrt,
# neg, reciprocal, pow, maximum, clamp_min, exp, sign, ...) reuses vector.py's decomposition.
for _name, _spec in POINTWISE.items():
    _packets = foreach_packets(_name)
    if _packets:
        register(*_packets)(_foreach(_spec))


# _foreach_zero_(xs): writes every element, reads nothing, no arithmetic.
@register(*foreach_packets("zero"))
def foreach_zero(call: OpCall) -> OpCost:
    outs = written_tensors(call)
    return _list_cost(call, outs, {}, read=0)


# _foreach_copy_(dsts, srcs): reads srcs, writes dsts; a cast (1 add-class op per element in the
# destination format) where the dtypes differ.
@register(*foreach_packets("copy"))
def foreach_copy(call: OpCall) -> OpCost:
    dsts = list(call_arg(call, "self"))
    srcs = list(call_arg(call, "src"))
    ops = merge_ops(*(cast_ops(s, d) for s, d in zip(srcs, dsts, strict=True)))
    return _list_cost(call, dsts, ops, read=sum(read_bytes(s) for s in srcs))


# _foreach_norm(xs, ord): one vector norm per list entry (vector.norm_ops: for ord 2, per element
# 1 mul and 1 add, per tensor 1 sqrt). NB: CUDA runs a partial and a final reduction kernel.
@register(*foreach_packets("norm"))
def foreach_norm(call: OpCall) -> OpCost:
    xs = list(call_arg(call, "self"))
    per_input, per_output = norm_ops(call_arg(call, "ord"))
    ops = merge_ops(
        *(count_ops(dtype_format(x.dtype), per_input, x.numel()) for x in xs),
        *(count_ops(dtype_format(x.dtype), per_output, 1) for x in xs),
    )
    return _list_cost(call, written_tensors(call), ops)


# _foreach_max(xs): 1 cmp per element of each tensor.
@register(*foreach_packets("max"))
def foreach_max(call: OpCall) -> OpCost:
    xs = list(call_arg(call, "self"))
    ops = merge_ops(*(count_ops(dtype_format(x.dtype), {CMP: 1}, x.numel()) for x in xs))
    return _list_cost(call, written_tensors(call), ops)


# --- AMP gradient scaling ---------------------------------------------------------------------


# _amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inv_scale): per element 1 mul
# (g * inv_scale) and 1 cmp (isfinite); writes the grads and found_inf.
@register(*aten_packets("_amp_foreach_non_finite_check_and_unscale_"))
def amp_unscale(call: OpCall) -> OpCost:
    grads = list(call_arg(call, "self"))
    ops = merge_ops(*(count_ops(dtype_format(g.dtype), {MUL: 1, CMP: 1}, g.numel()) for g in grads))
    cost = _list_cost(call, written_tensors(call), ops)
    return OpCost(cost.ops, cost.bytes_read, cost.bytes_written, max(_groups(grads), 1), 0)


# _amp_update_scale_(scale, growth_tracker, found_inf, ...): on one element 2 cmp (found_inf,
# tracker == interval), 1 mul (grow or back off), 1 add (tracker + 1).
@register(*aten_packets("_amp_update_scale_"))
def amp_update_scale(call: OpCall) -> OpCost:
    scale = call_arg(call, "self")
    ops = count_ops(dtype_format(scale.dtype), {CMP: 2, MUL: 1, ADD: 1}, 1)
    return _list_cost(call, written_tensors(call), ops)


# --- fused optimizers -------------------------------------------------------------------------


def _bump(table: dict[AluOp, float], op: AluOp, k: float = 1.0) -> None:
    table[op] = table.get(op, 0.0) + k


def _pre_update(call: OpCall) -> dict[AluOp, float]:
    # Shared gradient preparation: g / grad_scale (1 div) when AMP passes a scale; -g (1 add)
    # when maximizing.
    table: dict[AluOp, float] = {}
    if call_arg(call, "grad_scale") is not None:
        _bump(table, DIV)
    if call_arg(call, "maximize", False):
        _bump(table, ADD)
    return table


def adam_per_element(call: OpCall) -> PerElement:
    """Per-element ops of one fused Adam/AdamW update (ATen's ``fused_adam_utils.cuh``).

    m = b1*m + (1-b1)*g:                       2 mul, 1 add
    v = b2*v + (1-b2)*g*g:                     3 mul, 1 add
    denom = sqrt(v) / sqrt(bc2) + eps:         1 sqrt, 1 div, 1 add
    p = p - (lr/bc1) * m / denom:              1 mul, 1 div, 1 add
    -> 6 mul, 4 add, 2 div, 1 sqrt; plus
    weight decay: Adam g = g + wd*p, AdamW p = p - (lr*wd)*p: 1 mul, 1 add each;
    amsgrad: vmax = max(vmax, v), used in denom: 1 cmp;
    grad_scale: 1 div; maximize: 1 add.
    The per-tensor scalars (bias corrections bc1 = 1 - b1^t, bc2 = 1 - b2^t, lr/bc1) are not
    counted. NB: the CPU kernel computes m with a lerp (1 mul, 2 add); CUDA's form is counted.
    """
    table = _pre_update(call)
    for op, k in {MUL: 6, ADD: 4, DIV: 2, SQRT: 1}.items():
        _bump(table, op, k)
    if call_arg(call, "weight_decay", 0.0):
        _bump(table, MUL)
        _bump(table, ADD)
    if call_arg(call, "amsgrad", False):
        _bump(table, CMP)
    return table


def sgd_per_element(call: OpCall) -> PerElement:
    """Per-element ops of one fused SGD update (ATen's ``FusedSgdKernel.cu``).

    weight decay: g = g + wd*p:                               1 mul, 1 add
    momentum (not first step): b = m*b + (1-dampening)*g:     2 mul, 1 add (first step: b = g)
    nesterov: g = g + m*b (else g = b):                       1 mul, 1 add
    p = p - lr*g:                                             1 mul, 1 add
    grad_scale: 1 div; maximize: 1 add.
    """
    table = _pre_update(call)
    if call_arg(call, "weight_decay", 0.0):
        _bump(table, MUL)
        _bump(table, ADD)
    if call_arg(call, "momentum", 0.0):
        if not call_arg(call, "is_first_step", False):
            _bump(table, MUL, 2)
            _bump(table, ADD)
        if call_arg(call, "nesterov", False):
            _bump(table, MUL)
            _bump(table, ADD)
    _bump(table, MUL)
    _bump(table, ADD)
    return table


def adagrad_per_element(call: OpCall) -> PerElement:
    """Per-element ops of one fused Adagrad update (ATen's ``FusedAdagradKernel``).

    weight decay: g = g + wd*p:          1 mul, 1 add
    s = s + g*g:                         1 mul, 1 add
    std = sqrt(s) + eps:                 1 sqrt, 1 add
    p = p - clr * g / std:               1 div, 1 mul, 1 add
    grad_scale: 1 div; maximize: 1 add. (clr = lr / (1 + (t-1)*lr_decay) is per tensor.)
    """
    table = _pre_update(call)
    for op, k in {MUL: 2, ADD: 3, SQRT: 1, DIV: 1}.items():
        _bump(table, op, k)
    if call_arg(call, "weight_decay", 0.0):
        _bump(table, MUL)
        _bump(table, ADD)
    return table


def _fused(
    per_element: Callable[[OpCall], PerElement],
    read_lists: Callable[[OpCall], Sequence[str]],
    write_lists: Callable[[OpCall], Sequence[str]],
) -> Formula:
    """A fused optimizer step: ``per_element`` ops on every parameter element, one kernel per
    (device, dtype) group; reads and writes the named tensor lists (state steps and the AMP
    scalars are read too)."""

    def formula(call: OpCall) -> OpCost:
        params = list(call_arg(call, "self"))
        table = per_element(call)
        ops = merge_ops(*(count_ops(dtype_format(p.dtype), table, p.numel()) for p in params))
        read = sum(read_bytes(t) for name in read_lists(call) for t in _list(call, name))
        written = sum(nbytes(t) for name in write_lists(call) for t in _list(call, name))
        return OpCost(ops, read, written, _groups(params), 0)

    return formula


def _list(call: OpCall, name: str) -> list[torch.Tensor]:
    value = call_arg(call, name)
    if isinstance(value, torch.Tensor):
        return [value]
    return [t for t in value or () if isinstance(t, torch.Tensor)]


def _adam_lists(call: OpCall) -> tuple[list[str], list[str]]:
    state = ["exp_avgs", "exp_avg_sqs"]
    if call_arg(call, "amsgrad", False):
        state.append("max_exp_avg_sqs")
    written = ["self", *state]
    return [*written, "grads", "state_steps", "grad_scale", "found_inf"], written


def _sgd_lists(call: OpCall) -> tuple[list[str], list[str]]:
    uses_buffer = bool(call_arg(call, "momentum", 0.0))
    first = bool(call_arg(call, "is_first_step", False))
    written = ["self", "momentum_buffer_list"] if uses_buffer else ["self"]
    read = ["self", "grads", "grad_scale", "found_inf"]
    if uses_buffer and not first:
        read.append("momentum_buffer_list")
    return read, written


def _adagrad_lists(call: OpCall) -> tuple[list[str], list[str]]:
    written = ["self", "state_sums"]
    return [*written, "grads", "state_steps", "grad_scale", "found_inf"], written


# _fused_adam_/_fused_adamw_ (and their functional forms): see adam_per_element.
register(*aten_packets("_fused_adam_", "_fused_adamw_", "_fused_adam", "_fused_adamw"))(
    _fused(adam_per_element, lambda c: _adam_lists(c)[0], lambda c: _adam_lists(c)[1])
)
# _fused_sgd_ (and its functional form): see sgd_per_element.
register(*aten_packets("_fused_sgd_", "_fused_sgd"))(
    _fused(sgd_per_element, lambda c: _sgd_lists(c)[0], lambda c: _sgd_lists(c)[1])
)
# _fused_adagrad_ (and its functional form): see adagrad_per_element.
register(*aten_packets("_fused_adagrad_", "_fused_adagrad"))(
    _fused(adagrad_per_element, lambda c: _adagrad_lists(c)[0], lambda c: _adagrad_lists(c)[1])
)
