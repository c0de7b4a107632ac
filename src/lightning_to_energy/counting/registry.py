"""The op-formula registry: one small pure formula per aten op packet.

A formula receives an :class:`OpCall` (the op, its arguments and its output as the dispatch
mode saw them) and returns an :class:`OpCost`: ALU operation counts keyed by
(operation class, number format, unit), bytes read and written, kernels launched, and the FLOPs
``torch.utils.flop_counter.FlopCounterMode`` would report for the same call (0 where it reports
nothing). Registering a second formula for the same packet is an error.

Formulas must be pure functions of the call's metadata (shapes, dtypes, strides of the tensors,
whether they are on CUDA, the non-tensor arguments) and of PyTorch's TF32 flags: the counter
memoises their results. The memo tells float arguments apart only as one of
:data:`SPECIAL_FLOATS` or "any other float" (so an optimizer's step-dependent scalars do not
defeat it): a formula may branch on ``alpha == 1`` or ``p == 2.0``, not on a float's exact
value otherwise. A formula that reads
tensor values must say so with :func:`value_dependent`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._pytree import tree_flatten

from lightning_to_energy.counting.cost_model import AluOp, NumberFormat, Unit
from lightning_to_energy.counting.target import active_target

__all__ = [
    "CONV",
    "KINDS",
    "MATMUL",
    "SPECIAL_FLOATS",
    "DuplicateFormulaError",
    "Formula",
    "OpCall",
    "OpCost",
    "OpKey",
    "dtype_format",
    "formula_for",
    "io_bytes",
    "is_value_dependent",
    "matmul_format",
    "matrix_read_bytes",
    "nbytes",
    "on_cuda",
    "read_bytes",
    "register",
    "registered_packets",
    "registry_version",
    "tensors_of",
    "tf32_allowed",
    "value_dependent",
]

OpKey = tuple[AluOp, NumberFormat, Unit]

MATMUL = "matmul"
"""Kind of a GEMM-like kernel: mm, addmm, bmm, baddbmm, scaled mm, fused attention, RNNs."""
CONV = "conv"
"""Kind of a convolution kernel (cuDNN or native), forward or backward."""
KINDS = (MATMUL, CONV)
"""The kernel kinds a formula may name; element-wise and other work has kind None."""


@dataclass(frozen=True)
class OpCost:
    """What one aten call costs, before the transistor weighting.

    ``kind`` says which kind of kernel does the call's matrix-unit work (:data:`MATMUL`,
    :data:`CONV`, or None for element-wise and other work): the same FLOPs in the same format
    run at different rates in a cuBLAS GEMM and a cuDNN convolution, so a time model needs
    to tell them apart. It never changes a count.

    ``vector_kernels`` says how many of the call's ``kernels`` do only its vector-unit work
    (a CUDA convolution's bias add, a convolution's bias gradient), so that a per-kernel
    model charges the matrix work's ramp to the other kernels only; 0 (the default): every
    kernel does all of the call's work, as counted before it existed.
    """

    ops: Mapping[OpKey, float] = field(default_factory=dict)
    bytes_read: int = 0
    bytes_written: int = 0
    kernels: int = 1
    flops: int = 0
    # False for the flagged fallback estimate given to ops without a formula.
    modelled: bool = True
    kind: str | None = None
    vector_kernels: int = 0


@dataclass(frozen=True)
class OpCall:
    """One aten call as the dispatch mode saw it."""

    func: torch._ops.OpOverload
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    out: Any

    @property
    def packet(self) -> torch._ops.OpOverloadPacket:
        return self.func.overloadpacket

    def tensors_in(self) -> list[torch.Tensor]:
        flat, _ = tree_flatten((self.args, dict(self.kwargs)))
        return [t for t in flat if isinstance(t, torch.Tensor)]

    def tensors_out(self) -> list[torch.Tensor]:
        flat, _ = tree_flatten(self.out)
        return [t for t in flat if isinstance(t, torch.Tensor)]

    def arg(self, name: str, default: Any = None) -> Any:
        """The argument the op's schema calls ``name``, passed by position or keyword.

        Returns ``default`` when the caller left it out.
        """
        index = _ARG_INDEX.get(self.func)
        if index is None:
            arguments = self.func._schema.arguments
            index = _ARG_INDEX[self.func] = {a.name: i for i, a in enumerate(arguments)}
        i = index.get(name)
        if i is not None and i < len(self.args):
            return self.args[i]
        return self.kwargs.get(name, default)


# schema argument positions by overload, filled on first use by OpCall.arg
_ARG_INDEX: dict[Any, dict[str, int]] = {}


Formula = Callable[[OpCall], OpCost]

_FORMULAS: dict[Any, Formula] = {}
_CHANGES = [0]  # registrations so far, so that callers can cache lookups


class DuplicateFormulaError(ValueError):
    """A second formula was registered for an op packet that already has one."""


def register(*packets: Any) -> Callable[[Formula], Formula]:
    """Register ``formula`` for each aten op packet (``torch.ops.aten.mm``) given.

    Raises:
        DuplicateFormulaError: a packet already has a formula.
    """

    def decorator(formula: Formula) -> Formula:
        for packet in packets:
            if packet in _FORMULAS:
                raise DuplicateFormulaError(
                    f"a formula for {packet} is already registered "
                    f"({_FORMULAS[packet].__qualname__}); found a second one "
                    f"({formula.__qualname__}). Remove one of them or register a different op."
                )
            _FORMULAS[packet] = formula
        _CHANGES[0] += 1
        return formula

    return decorator


SPECIAL_FLOATS = frozenset(
    {0.0, 0.5, -0.5, 1.0, -1.0, 2.0, -2.0, 3.0, -3.0, 4.0, -4.0, float("inf"), float("-inf")}
)
"""Float argument values a formula may single out (see the module docstring)."""

_VALUE_DEPENDENT: set[Any] = set()


def value_dependent(*packets: Any) -> None:
    """Mark ``packets`` whose formulas read tensor values (e.g. varlen offsets).

    The counter memoises formula results by the call's metadata (see the module docstring);
    the results of these packets are computed afresh for every call instead.
    """
    _VALUE_DEPENDENT.update(packets)
    _CHANGES[0] += 1


def registry_version() -> int:
    """A number that changes whenever a formula is registered or marked value-dependent."""
    return _CHANGES[0]


def is_value_dependent(packet: Any) -> bool:
    """True if ``packet``'s formula reads tensor values (see :func:`value_dependent`)."""
    return packet in _VALUE_DEPENDENT


def formula_for(packet: Any) -> Formula | None:
    """The formula registered for ``packet``, or None."""
    return _FORMULAS.get(packet)


def registered_packets() -> Iterable[Any]:
    return tuple(_FORMULAS)


# --- number formats -----------------------------------------------------------------------

_DTYPE_FORMATS: dict[torch.dtype, NumberFormat] = {
    torch.float64: NumberFormat.FP64,
    torch.float32: NumberFormat.FP32,
    torch.float16: NumberFormat.FP16,
    torch.bfloat16: NumberFormat.BF16,
    torch.int64: NumberFormat.INT64,
    torch.int32: NumberFormat.INT32,
    torch.int16: NumberFormat.INT16,
    torch.int8: NumberFormat.INT8,
    torch.uint8: NumberFormat.INT8,
    torch.bool: NumberFormat.BOOL,
}
for _name, _fmt in (
    ("float8_e4m3fn", NumberFormat.FP8_E4M3),
    ("float8_e4m3fnuz", NumberFormat.FP8_E4M3),
    ("float8_e5m2", NumberFormat.FP8_E5M2),
    ("float8_e5m2fnuz", NumberFormat.FP8_E5M2),
    # unsigned integers run on the signed datapath of their width, as uint8 does
    ("uint16", NumberFormat.INT16),
    ("uint32", NumberFormat.INT32),
    ("uint64", NumberFormat.INT64),
    ("complex64", NumberFormat.FP32),
    ("complex128", NumberFormat.FP64),
):
    if hasattr(torch, _name):
        _DTYPE_FORMATS[getattr(torch, _name)] = _fmt


def dtype_format(dtype: torch.dtype) -> NumberFormat:
    """The number format of element-wise arithmetic on ``dtype`` (fp32 stays fp32)."""
    return _DTYPE_FORMATS.get(dtype, NumberFormat.FP32)


def tf32_allowed(*, conv: bool, rnn: bool = False) -> bool:
    """Whether PyTorch may run fp32 CUDA convolutions (``conv``), cuDNN RNNs (``rnn``) or
    matmuls (neither) in TF32.

    Reads the ``fp32_precision`` settings of recent torch where one is set (cuDNN convolutions
    and RNNs default to TF32 there), else the legacy flags ``torch.backends.cuda.matmul.allow_tf32``
    / ``torch.set_float32_matmul_precision`` and ``torch.backends.cudnn.allow_tf32`` (which
    covers both cuDNN convolutions and cuDNN RNNs). Reading a legacy flag after the new API was
    used raises in recent torch, so the new one goes first.
    """
    op = "rnn" if rnn else "conv" if conv else "matmul"
    conv = conv or rnn  # the legacy cuDNN flag decides both
    getter = getattr(torch._C, "_get_fp32_precision_getter", None)
    if getter is not None:
        for backend, name in (("cuda", op), ("cuda", "all"), ("generic", "all")):
            try:
                precision = getter(backend, name)
            except RuntimeError:
                break
            if precision != "none":
                return bool(precision == "tf32")
    try:
        if conv:
            return bool(torch._C._get_cudnn_allow_tf32())
        return bool(
            torch._C._get_cublas_allow_tf32()
            or torch._C._get_float32_matmul_precision() != "highest"
        )
    except RuntimeError:  # mixed legacy and new settings: the new one said "none"
        return False


def matmul_format(
    dtype: torch.dtype, *, conv: bool = False, on_cuda: bool = True, rnn: bool = False
) -> NumberFormat:
    """The format the matrix units run in for ``dtype``: TF32 for fp32 where enabled.

    TF32 is not a dtype: PyTorch decides it per call from its flags (:func:`tf32_allowed`),
    separately for matmuls, cuDNN convolutions (``conv``) and cuDNN RNNs (``rnn``). The flags
    only act on CUDA devices.
    """
    fmt = dtype_format(dtype)
    if fmt is not NumberFormat.FP32 or not on_cuda:
        return fmt
    return NumberFormat.TF32 if tf32_allowed(conv=conv, rnn=rnn) else fmt


def on_cuda(t: torch.Tensor) -> bool:
    """Whether the kernel for ``t`` runs on CUDA: ``t.is_cuda``, or a CUDA count target.

    Counting for a target (``profile(hardware="h100-sxm")``) runs on meta tensors; formulas
    ask this instead of ``t.is_cuda`` so that CUDA's choices (TF32, cuDNN's bias kernel) apply.
    """
    if t.is_cuda:
        return True
    target = active_target()
    return target is not None and target.cuda


def nbytes(t: torch.Tensor) -> int:
    """Bytes a kernel touches to read or write ``t`` once (its logical elements)."""
    return t.numel() * t.element_size()


def read_bytes(t: torch.Tensor) -> int:
    """Bytes a kernel reads from ``t``: its distinct elements (an expanded dim is read once).

    A broadcast operand (stride 0, e.g. a batch-shared matrix or bias of ``baddbmm``) is
    served from cache after its first read, so only the elements it holds in memory count.
    """
    if t.is_nested:  # packed sequences have no strides, and no broadcast dims either
        return nbytes(t)
    distinct = 1
    for size, stride in zip(t.shape, t.stride(), strict=True):
        if stride != 0:
            distinct *= size
    return distinct * t.element_size()


def tensors_of(values: Iterable[Any]) -> list[torch.Tensor]:
    """The tensors among ``values`` and inside list/tuple values (aten nests no deeper).

    A fast stand-in for ``tree_flatten`` on aten arguments and outputs, for hot formulas.
    """
    found: list[torch.Tensor] = []
    for v in values:
        if isinstance(v, torch.Tensor):
            found.append(v)
        elif isinstance(v, (list, tuple)):
            found.extend(x for x in v if isinstance(x, torch.Tensor))
    return found


def matrix_read_bytes(t: torch.Tensor) -> int:
    """Bytes a matmul-style kernel reads from ``t``: a broadcast batch dim once, the matrices whole.

    Batched GEMMs take a batch stride of 0 (a weight shared by every batch entry is read once,
    then served from cache), but not a matrix with a stride-0 row or column: the kernel gets a
    materialised copy, so the last two dims count at their logical size.
    """
    if t.dim() <= 2 or t.is_nested:
        return nbytes(t)
    shape, stride = t.shape, t.stride()
    distinct = shape[-1] * shape[-2]
    for size, step in zip(shape[:-2], stride[:-2], strict=True):
        if step != 0:
            distinct *= size
    return distinct * t.element_size()


def io_bytes(call: OpCall, *, matrix: bool = False) -> tuple[int, int]:
    """(bytes read, bytes written) if a kernel reads every tensor argument and writes the output.

    Reads count each argument's distinct elements (:func:`read_bytes`; with ``matrix``, as a
    batched GEMM reads them, :func:`matrix_read_bytes`), writes the outputs' logical elements.
    ``out=`` tensors passed as keywords count as written, not read.
    """
    kwargs = call.kwargs
    read = tensors_of(call.args)
    if kwargs:
        read.extend(tensors_of(v for k, v in kwargs.items() if not k.startswith("out")))
    out = call.out
    if isinstance(out, torch.Tensor):
        written = [out]
    else:
        written = tensors_of(out) if isinstance(out, (list, tuple)) else []
    return sum(map(matrix_read_bytes if matrix else read_bytes, read)), sum(map(nbytes, written))
