"""Formulas for ops that do no arithmetic: views, metadata, allocation, fills and copies.

Three kinds:

- free: views, reshapes, metadata queries and uninitialised allocation (``empty``) move no
  data and launch no kernel: no ALU ops, no bytes, no kernels. The counter skips them
  without calling a formula (see :func:`is_free`).
- fills: ``zeros``, ``ones``, ``full``, ``fill_``, ``arange``... write their output once:
  bytes written, one kernel, no ALU ops.
- copies: ``clone``, ``copy_``, ``_to_copy``, the ``*_copy`` view variants, scatters of one
  slice into zeros (``select_backward``...), concatenation and padding: they read their
  inputs and write their output, one kernel, no ALU ops except a dtype conversion in
  ``copy_``/``_to_copy`` (one ADD-class op per element, :func:`vector.cast_ops`).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from lightning_to_energy.counting.formulas.vector import cast_ops
from lightning_to_energy.counting.registry import (
    OpCall,
    OpCost,
    io_bytes,
    nbytes,
    read_bytes,
    register,
)

__all__ = [
    "COPY_OPS",
    "FILL_OPS",
    "FREE_OPS",
    "aten",
    "copy",
    "fill",
    "free",
    "is_free",
]

aten = torch.ops.aten


def _packets(names: str, namespace: Any = aten) -> list[Any]:
    # Skip names an older torch lacks, so the registry imports on every supported version.
    found = []
    for name in names.split():
        with contextlib.suppress(AttributeError, RuntimeError):
            found.append(getattr(namespace, name))
    return found


# Not here: ``reshape`` and ``contiguous`` copy when the input's strides do not allow a view.
# They reach the counter only under inference_mode (elsewhere autograd decomposes them
# first); without a formula the counter runs their composite kernel, and counts the ``view``
# or the ``clone`` it does, as under no_grad.
FREE_OPS = _packets(
    """
    view _unsafe_view _reshape_alias view_as as_strided as_strided_ alias lift_fresh
    detach detach_ t t_ transpose transpose_ permute expand expand_as numpy_T mT mH adjoint
    matrix_H squeeze squeeze_ unsqueeze unsqueeze_ slice select split split_with_sizes
    unsafe_split unsafe_split_with_sizes unbind chunk narrow diagonal movedim unfold
    view_as_real view_as_complex real imag _neg_view _conj conj
    _indices _values indices values crow_indices col_indices ccol_indices row_indices
    empty empty_like empty_strided new_empty new_empty_strided empty_permuted resize_ set_
    is_same_size size stride sym_size sym_stride sym_numel numel dim is_contiguous
    storage_offset sym_storage_offset is_non_overlapping_and_dense is_strides_like_format
    record_stream _local_scalar_dense
    """
)

# profiler markers that optimizers and user code emit (``torch.profiler.record_function``)
FREE_OPS += _packets(
    "_record_function_enter _record_function_enter_new _record_function_exit", torch.ops.profiler
)

# NB: arange, linspace and eye compute each element from its index; that index arithmetic
# is not counted, only the write.
FILL_OPS = _packets(
    """
    zeros zeros_like ones ones_like full full_like new_zeros new_ones new_full
    fill fill_ zero zero_ scalar_tensor arange linspace eye
    """
)

COPY_OPS = _packets(
    """
    clone copy copy_ _to_copy lift_fresh_copy _copy_from _copy_from_and_resize
    view_copy permute_copy transpose_copy t_copy expand_copy squeeze_copy unsqueeze_copy
    slice_copy select_copy split_copy split_with_sizes_copy unbind_copy detach_copy alias_copy
    as_strided_copy diagonal_copy unfold_copy view_as_real_copy view_as_complex_copy
    _reshape_alias_copy
    select_backward slice_backward diagonal_backward
    as_strided_scatter slice_scatter select_scatter diagonal_scatter
    cat stack constant_pad_nd
    """
)

_FREE = OpCost(kernels=0)


@register(*FREE_OPS)
def free(call: OpCall) -> OpCost:
    """No ALU ops, no bytes, no kernel."""
    return _FREE


def is_free(formula: Any) -> bool:
    """True for the formula of free ops, which the counter may skip without calling."""
    return formula is free


@register(*FILL_OPS)
def fill(call: OpCall) -> OpCost:
    # writes every output element once: numel * element_size bytes
    out = call.out
    return OpCost(bytes_written=nbytes(out) if isinstance(out, torch.Tensor) else 0)


@register(*COPY_OPS)
def copy(call: OpCall) -> OpCost:
    # reads every distinct input element once (a broadcast one from cache) and writes every
    # output element once
    packet = call.packet
    if packet is aten.copy_:
        # copy_(self, src): self is only written; a dtype change converts every element
        dst, src = call.args[0], call.args[1]
        return OpCost(cast_ops(src, dst), bytes_read=read_bytes(src), bytes_written=nbytes(dst))
    read, written = io_bytes(call)
    ops = cast_ops(call.args[0], call.out) if packet is aten._to_copy else {}
    return OpCost(ops, bytes_read=read, bytes_written=written)
