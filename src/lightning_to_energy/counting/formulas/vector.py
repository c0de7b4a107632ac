"""Vector-unit formulas: element-wise ops, reductions, softmax, norms, losses, pooling, gathers.

Every formula here counts scalar ALU operations per class (:class:`AluOp`) in the number format
of the tensors involved (:func:`dtype_format`), all on :attr:`Unit.VECTOR`, plus the bytes the
kernel reads and writes. FLOPs are 0 throughout: ``FlopCounterMode`` counts none of these ops.

Conventions shared by all formulas:

- Element-wise work is counted per OUTPUT element, so a broadcast operand costs no extra
  arithmetic; in-place variants (``add_``) count exactly like their out-of-place twins (``add``).
- A reduction of ``n`` inputs counts ``n`` accumulate operations (kernels start the accumulator
  at the identity and fold in every element).
- A read counts the distinct elements a tensor holds in memory (a stride-0, i.e. expanded,
  dimension is read once); a write counts the output's logical elements.
- Transcendental functions (exp, log, tanh, erf, sin, cos, ...) count as one EXP-class operation.
  Subtraction and negation are ADD-class; compare, select, abs, max/min and boolean logic are
  CMP-class; reciprocal is DIV-class; rsqrt is SQRT-class.
- Scalar work done once per call (bias corrections, 1/N factors) is not counted.

NB: half-precision kernels (fp16/bf16) usually compute in fp32 registers ("opmath") and round on
store; the counts stay in the tensor's own format, as the cost model is about the format the
data moves in.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

from lightning_to_energy.counting.cost_model import AluOp, NumberFormat, Unit
from lightning_to_energy.counting.registry import (
    Formula,
    OpCall,
    OpCost,
    OpKey,
    dtype_format,
    nbytes,
    read_bytes,
    register,
)

__all__ = [
    "POINTWISE",
    "RNG_OPS_PER_ELEMENT",
    "PerElement",
    "PerElementSpec",
    "aten_packets",
    "call_arg",
    "cast_ops",
    "count_ops",
    "input_tensors",
    "merge_ops",
    "norm_ops",
    "per_element_ops",
    "read_bytes",
    "written_tensors",
]

aten = torch.ops.aten

ADD, MUL, CMP, DIV, SQRT, EXP = AluOp.ADD, AluOp.MUL, AluOp.CMP, AluOp.DIV, AluOp.SQRT, AluOp.EXP

PerElement = Mapping[AluOp, float]
# A per-element table, or a function of the call that picks one (alpha, exponent, rounding...).
PerElementSpec = PerElement | Callable[[OpCall], PerElement]

# Packet names that this torch build does not have (older releases); a test checks it is empty.
MISSING_PACKETS: list[str] = []


# --- helpers shared with optim.py -------------------------------------------------------------


def aten_packets(*names: str) -> list[Any]:
    """The ``torch.ops.aten`` packets for ``names``; names this torch lacks are skipped.

    Skipped names are recorded in :data:`MISSING_PACKETS` so a test can tell a typo from an
    op that an older torch simply does not have.
    """
    found = []
    for name in names:
        try:
            found.append(getattr(aten, name))
        except (AttributeError, RuntimeError):
            MISSING_PACKETS.append(name)
    return found


def _with_inplace(*names: str) -> list[Any]:
    """Packets for each name and its in-place twin (``relu``, ``relu_``) where the twin exists."""
    packets = aten_packets(*names)
    for name in names:
        # many ops have no in-place variant; that is not an error
        with contextlib.suppress(AttributeError, RuntimeError):
            packets.append(getattr(aten, name + "_"))
    return packets


_NOT_GIVEN = object()
_ARG_INDEX: dict[Any, dict[str, tuple[int, Any]]] = {}


def call_arg(call: OpCall, name: str, default: Any = _NOT_GIVEN) -> Any:
    """The argument ``name`` of ``call``, positional or keyword, by the op's schema.

    Falls back to ``default`` when given, else to the schema's default, else None (also when the
    overload has no argument of that name, e.g. ``alpha`` on ``add.Scalar``'s foreach twin).
    """
    if name in call.kwargs:
        return call.kwargs[name]
    index = _ARG_INDEX.get(call.func)
    if index is None:
        index = {}
        for i, a in enumerate(call.func._schema.arguments):
            index[a.name] = (i, a.default_value if a.has_default_value() else None)
        _ARG_INDEX[call.func] = index
    if name in index:
        position, schema_default = index[name]
        if position < len(call.args):
            return call.args[position]
        if default is _NOT_GIVEN:
            return schema_default
    return None if default is _NOT_GIVEN else default


def _tensors(values: Iterable[Any]) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    for v in values:
        if isinstance(v, torch.Tensor):
            found.append(v)
        elif isinstance(v, list | tuple):
            found.extend(_tensors(v))
    return found


def input_tensors(call: OpCall, *, skip: Sequence[str] = ()) -> list[torch.Tensor]:
    """Input tensors of ``call`` (no ``out=`` buffers, nothing named in ``skip``), each once."""
    skip_set = {"out", "grad_input", *skip}
    values: list[Any] = []
    for i, a in enumerate(call.func._schema.arguments):
        if a.name in skip_set:
            continue
        if a.name in call.kwargs:
            values.append(call.kwargs[a.name])
        elif i < len(call.args):
            values.append(call.args[i])
    seen: set[int] = set()
    unique = []
    for t in _tensors(values):
        if id(t) not in seen:
            seen.add(id(t))
            unique.append(t)
    return unique


def _bytes_in(call: OpCall, *, skip: Sequence[str] = ()) -> int:
    return sum(read_bytes(t) for t in input_tensors(call, skip=skip))


def written_tensors(call: OpCall) -> list[torch.Tensor]:
    """Tensors ``call`` writes: its outputs, else (in-place ops returning nothing, such as the
    ``_foreach_*_`` family) the arguments its schema marks as written."""
    outs = call.tensors_out()
    if outs:
        return outs
    written: list[Any] = []
    for i, a in enumerate(call.func._schema.arguments):
        if a.alias_info is None or not a.alias_info.is_write:
            continue
        if a.name in call.kwargs:
            written.append(call.kwargs[a.name])
        elif i < len(call.args):
            written.append(call.args[i])
    return _tensors(written)


def _bytes_out(call: OpCall) -> int:
    return sum(nbytes(t) for t in written_tensors(call))


def count_ops(fmt: NumberFormat, per_element: PerElement, n: float) -> dict[OpKey, float]:
    """``n`` elements' worth of ``per_element`` operations in ``fmt`` on the vector unit."""
    return {(op, fmt, Unit.VECTOR): k * n for op, k in per_element.items() if k and n}


def merge_ops(*parts: Mapping[OpKey, float]) -> dict[OpKey, float]:
    """Sum several operation-count mappings."""
    total: dict[OpKey, float] = {}
    for part in parts:
        for key, value in part.items():
            total[key] = total.get(key, 0.0) + value
    return total


def per_element_ops(spec: PerElementSpec, call: OpCall) -> PerElement:
    """Resolve a :data:`PerElementSpec` for one call."""
    return spec(call) if callable(spec) else spec


def _fmt(t: torch.Tensor) -> NumberFormat:
    return dtype_format(t.dtype)


def _first_tensor_in(call: OpCall) -> torch.Tensor:
    for t in input_tensors(call):
        return t
    raise ValueError(
        f"{call.func} was expected to take at least one tensor input and took none; "
        "register a formula that does not need one for this op."
    )


def _first_out(call: OpCall) -> torch.Tensor:
    written = written_tensors(call)
    if not written:
        raise ValueError(
            f"{call.func} was expected to return or mutate a tensor and did neither; "
            "register a formula that does not need an output for this op."
        )
    return written[0]


def _cost(
    call: OpCall,
    ops: Mapping[OpKey, float],
    *,
    read: int | None = None,
    written: int | None = None,
    kernels: int = 1,
) -> OpCost:
    return OpCost(
        ops=ops,
        bytes_read=_bytes_in(call) if read is None else read,
        bytes_written=_bytes_out(call) if written is None else written,
        kernels=kernels,
        flops=0,
    )


# --- element-wise ----------------------------------------------------------------------------


def _alpha_add(call: OpCall) -> PerElement:
    # a + alpha*b: 1 add, plus 1 mul unless alpha == 1.
    alpha = call_arg(call, "alpha", 1)
    return {ADD: 1} if alpha == 1 else {ADD: 1, MUL: 1}


def _div(call: OpCall) -> PerElement:
    # a / b: 1 div; a rounding mode ('trunc', 'floor') adds 1 ADD-class rounding step (NB).
    return {DIV: 1} if call_arg(call, "rounding_mode", None) is None else {DIV: 1, ADD: 1}


def _value_is_one(call: OpCall) -> bool:
    # The ScalarList/Tensor overloads of the foreach twins carry per-tensor values: assume != 1.
    value = call_arg(call, "value")
    return isinstance(value, int | float) and value == 1


def _addcmul(call: OpCall) -> PerElement:
    # self + value * t1 * t2: 1 mul (t1*t2), 1 mul unless value == 1, 1 add.
    return {MUL: 1, ADD: 1} if _value_is_one(call) else {MUL: 2, ADD: 1}


def _addcdiv(call: OpCall) -> PerElement:
    # self + value * t1 / t2: 1 div, 1 mul unless value == 1, 1 add.
    return {DIV: 1, ADD: 1} if _value_is_one(call) else {DIV: 1, MUL: 1, ADD: 1}


# pow(x, e) = exp(e * log(x)): 2 EXP-class (log, exp) + 1 mul, unless e is a value the kernels
# special-case (ATen's pow_tensor_scalar_optimized_kernel): 2 and 3 by multiplies, 0.5/-0.5 by
# sqrt/rsqrt, -1/-2 by reciprocal; 0 and 1 are a fill and a copy.
_POW_GENERAL: PerElement = {EXP: 2, MUL: 1}
_POW_SPECIAL: dict[float, PerElement] = {
    0.0: {},
    1.0: {},
    2.0: {MUL: 1},
    3.0: {MUL: 2},
    0.5: {SQRT: 1},
    -0.5: {SQRT: 1},
    -1.0: {DIV: 1},
    -2.0: {MUL: 1, DIV: 1},
}


def _pow(call: OpCall) -> PerElement:
    base = call_arg(call, "self")
    exponent = call_arg(call, "exponent")
    if not isinstance(base, torch.Tensor | list | tuple):
        # scalar ** tensor = exp(x * log(b)), log(b) computed once: 1 mul, 1 exp.
        return {EXP: 1, MUL: 1}
    if isinstance(exponent, int | float) and not isinstance(exponent, bool):
        return _POW_SPECIAL.get(float(exponent), _POW_GENERAL)
    return _POW_GENERAL


def _clamp(call: OpCall) -> PerElement:
    # clamp(x, min, max): 1 cmp per bound given.
    bounds = sum(call_arg(call, name) is not None for name in ("min", "max"))
    return {CMP: max(bounds, 1)}


def _gelu(call: OpCall) -> PerElement:
    if call_arg(call, "approximate", "none") == "tanh":
        # 0.5*x*(1 + tanh(k*(x + c*x^3))): x^3 2 mul, c*x^3 1 mul, x+ 1 add, k* 1 mul, tanh 1 exp,
        # 1+ 1 add, 0.5*x 1 mul, product 1 mul -> 6 mul, 2 add, 1 exp.
        return {MUL: 6, ADD: 2, EXP: 1}
    # 0.5*x*(1 + erf(x/sqrt(2))): x*(1/sqrt2) 1 mul, erf 1 exp, 1+ 1 add, 0.5*x 1 mul,
    # product 1 mul -> 3 mul, 1 add, 1 exp.
    return {MUL: 3, ADD: 1, EXP: 1}


def _gelu_backward(call: OpCall) -> PerElement:
    if call_arg(call, "approximate", "none") == "tanh":
        # ATen's GeluBackward (tanh): x^2, x^3, c*x^3, k*(.), 0.5*x, 0.5*(1+t), t^2, left*(1-t^2),
        # 3c*x^2, k*(.), right*inner, g*(.) = 12 mul; x+, 1+t, 1-t^2, 1+3c*x^2, sum = 5 add;
        # tanh 1 exp.
        return {MUL: 12, ADD: 5, EXP: 1}
    # g*(cdf + x*pdf): cdf = 0.5*(1+erf(x*k)): 2 mul, 1 add, 1 exp; pdf = exp(-0.5*x*x)*c: 3 mul,
    # 1 exp; x*pdf 1 mul, sum 1 add, g* 1 mul -> 7 mul, 2 add, 2 exp.
    return {MUL: 7, ADD: 2, EXP: 2}


def _elu_backward(call: OpCall) -> PerElement:
    if call_arg(call, "is_result", False):
        # x<=0 ? g*ic*(y + a) : g*s -- from the saved result: 1 cmp, 1 add, 3 mul.
        return {CMP: 1, ADD: 1, MUL: 3}
    # x<=0 ? g*ic*a*exp(x*ic) : g*s -- both branches, as SIMD kernels do: 1 cmp, 1 exp, 4 mul.
    return {CMP: 1, EXP: 1, MUL: 4}


# Element-wise ops by aten name; each entry's comment is its decomposition per output element.
# The in-place twin (name + "_") shares the entry. Optimizer ``_foreach_<name>`` ops reuse it.
POINTWISE: dict[str, PerElementSpec] = {
    # --- activations
    # relu(x) = max(x, 0): 1 cmp
    "relu": {CMP: 1},
    # threshold(x, t, v) = x > t ? x : v: 1 cmp
    "threshold": {CMP: 1},
    # leaky_relu(x) = x > 0 ? x : s*x: 1 cmp, 1 mul
    "leaky_relu": {CMP: 1, MUL: 1},
    # _prelu_kernel(x, w) = x > 0 ? x : w*x: 1 cmp, 1 mul
    "_prelu_kernel": {CMP: 1, MUL: 1},
    # elu(x) = x > 0 ? s*x : s*a*(exp(ic*x) - 1): 1 cmp, 1 exp, 1 add, 3 mul (both branches, as
    # branch-free SIMD kernels evaluate them). selu arrives as elu; celu = elu(x, a, 1, 1/a).
    "elu": {CMP: 1, EXP: 1, ADD: 1, MUL: 3},
    "celu": {CMP: 1, EXP: 1, ADD: 1, MUL: 3},
    # gelu: see _gelu (erf and tanh approximations differ).
    "gelu": _gelu,
    # silu(x) = x / (1 + exp(-x)): 1 exp, 1 add, 1 div (negation folded)
    "silu": {EXP: 1, ADD: 1, DIV: 1},
    # mish(x) = x * tanh(log1p(exp(x))): 3 exp-class, 1 mul
    "mish": {EXP: 3, MUL: 1},
    # sigmoid(x) = 1 / (1 + exp(-x)): 1 exp, 1 add, 1 div (negation folded)
    "sigmoid": {EXP: 1, ADD: 1, DIV: 1},
    # tanh(x): 1 exp-class
    "tanh": {EXP: 1},
    # softplus(x) = b*x > t ? x : log1p(exp(b*x)) / b: 1 mul, 1 cmp, 2 exp, 1 div
    "softplus": {MUL: 1, CMP: 1, EXP: 2, DIV: 1},
    # hardswish(x) = x * min(max(x + 3, 0), 6) / 6: 1 add, 2 cmp, 2 mul (/6 as *1/6)
    "hardswish": {ADD: 1, CMP: 2, MUL: 2},
    # hardsigmoid(x) = min(max(x + 3, 0), 6) / 6: 1 add, 2 cmp, 1 mul
    "hardsigmoid": {ADD: 1, CMP: 2, MUL: 1},
    # hardtanh(x) = clamp(x, lo, hi): 2 cmp (relu6 arrives as hardtanh)
    "hardtanh": {CMP: 2},
    # log_sigmoid_forward(x) = min(x, 0) - log1p(exp(-|x|)): 2 cmp (min, abs), 2 exp, 1 add
    "log_sigmoid_forward": {CMP: 2, EXP: 2, ADD: 1},
    # --- activation backward
    # threshold_backward(g, x, t) = x > t ? g : 0: 1 cmp
    "threshold_backward": {CMP: 1},
    # sigmoid_backward(g, y) = g * y * (1 - y): 1 add, 2 mul
    "sigmoid_backward": {ADD: 1, MUL: 2},
    # tanh_backward(g, y) = g * (1 - y*y): 2 mul, 1 add
    "tanh_backward": {MUL: 2, ADD: 1},
    # gelu_backward: see _gelu_backward.
    "gelu_backward": _gelu_backward,
    # silu_backward(g, x) = g * s * (1 + x*(1 - s)), s = sigmoid(x): sigmoid (1 exp, 1 add, 1 div),
    # 1-s, 1+ (2 add), x*, s*, g* (3 mul)
    "silu_backward": {EXP: 1, ADD: 3, DIV: 1, MUL: 3},
    # leaky_relu_backward(g, x) = x > 0 ? g : s*g: 1 cmp, 1 mul
    "leaky_relu_backward": {CMP: 1, MUL: 1},
    # _prelu_kernel_backward(g, x, w) = (x > 0 ? g : w*g, x > 0 ? 0 : x*g): 1 cmp, 2 mul
    "_prelu_kernel_backward": {CMP: 1, MUL: 2},
    # elu_backward: see _elu_backward (from the input or from the saved result).
    "elu_backward": _elu_backward,
    # hardswish_backward(g, x) = x < -3 ? 0 : x <= 3 ? g*(x/3 + 0.5) : g: 2 cmp, 2 mul, 1 add
    "hardswish_backward": {CMP: 2, MUL: 2, ADD: 1},
    # hardsigmoid_backward(g, x) = -3 < x < 3 ? g/6 : 0: 2 cmp, 1 mul
    "hardsigmoid_backward": {CMP: 2, MUL: 1},
    # hardtanh_backward(g, x) = lo < x < hi ? g : 0: 2 cmp
    "hardtanh_backward": {CMP: 2},
    # softplus_backward(g, x) = b*x > t ? g : g*z/(z+1), z = exp(b*x): 2 mul, 1 cmp, 1 exp,
    # 1 add, 1 div
    "softplus_backward": {MUL: 2, CMP: 1, EXP: 1, ADD: 1, DIV: 1},
    # mish_backward(g, x) = g*(t + x*s*(1 - t*t)), t = tanh(softplus(x)) (3 exp), s = sigmoid(x)
    # (1 exp, 1 add, 1 div): t*t, x*, s*, g* (4 mul), 1-, t+ (2 add)
    "mish_backward": {EXP: 4, ADD: 3, DIV: 1, MUL: 4},
    # log_sigmoid_backward(g, x, buf) = g * (x < 0 ? 1 - s : -s)-style select with buf = exp(-|x|):
    # s = buf/(1+buf) 1 add, 1 div; 1 cmp; 1 add; g* 1 mul
    "log_sigmoid_backward": {CMP: 1, ADD: 2, DIV: 1, MUL: 1},
    # --- unary math
    # exp, exp2, expm1, log, log2, log10, log1p, erf, erfc, sin, cos, tan, atan: 1 exp-class each.
    # NB: sin/cos/tan/atan are range reduction + polynomial like exp; counted in the EXP class.
    **{
        name: {EXP: 1}
        for name in (
            "exp",
            "exp2",
            "expm1",
            "log",
            "log2",
            "log10",
            "log1p",
            "erf",
            "erfc",
            "sin",
            "cos",
            "tan",
            "atan",
        )
    },
    # sqrt(x), rsqrt(x): 1 sqrt-class
    "sqrt": {SQRT: 1},
    "rsqrt": {SQRT: 1},
    # reciprocal(x) = 1/x: 1 div
    "reciprocal": {DIV: 1},
    # abs(x): 1 cmp (sign-bit select)
    "abs": {CMP: 1},
    # neg(x): 1 add-class
    "neg": {ADD: 1},
    # sign(x), sgn(x) = (x > 0) - (x < 0): 2 cmp
    "sign": {CMP: 2},
    "sgn": {CMP: 2},
    # floor, ceil, round, trunc, frac: 1 add-class rounding step (NB)
    **{name: {ADD: 1} for name in ("floor", "ceil", "round", "trunc", "frac")},
    # square(x) = x*x: 1 mul (usually arrives as pow(x, 2))
    "square": {MUL: 1},
    # pow: see _pow (tensor ** scalar, tensor ** tensor, scalar ** tensor).
    "pow": _pow,
    # xlogy(x, y) = x == 0 ? 0 : x * log(y): 1 cmp, 1 exp, 1 mul
    "xlogy": {CMP: 1, EXP: 1, MUL: 1},
    # --- binary arithmetic
    # add/sub/rsub(a, b, alpha) = a +- alpha*b: 1 add (+1 mul when alpha != 1)
    "add": _alpha_add,
    "sub": _alpha_add,
    "rsub": _alpha_add,
    # mul(a, b): 1 mul
    "mul": {MUL: 1},
    # div(a, b, rounding_mode): see _div
    "div": _div,
    # floor_divide(a, b) = floor(a / b): 1 div, 1 add-class rounding (NB)
    "floor_divide": {DIV: 1, ADD: 1},
    # remainder(a, b) = a - floor(a/b)*b, fmod likewise with trunc: 1 div, 1 mul, 2 add
    "remainder": {DIV: 1, MUL: 1, ADD: 2},
    "fmod": {DIV: 1, MUL: 1, ADD: 2},
    # addcmul, addcdiv: see _addcmul, _addcdiv
    "addcmul": _addcmul,
    "addcdiv": _addcdiv,
    # lerp(a, b, w) = a + w*(b - a): 2 add, 1 mul
    "lerp": {ADD: 2, MUL: 1},
    # --- selection and comparison (CMP-class)
    # where(c, a, b), masked_fill(x, m, v): 1 select
    "where": {CMP: 1},
    "masked_fill": {CMP: 1},
    # clamp: see _clamp; clamp_min/clamp_max: 1 cmp
    "clamp": _clamp,
    "clamp_min": {CMP: 1},
    "clamp_max": {CMP: 1},
    # maximum, minimum, fmax, fmin: 1 cmp
    **{name: {CMP: 1} for name in ("maximum", "minimum", "fmax", "fmin")},
    # tril, triu: 1 index compare and select per element
    "tril": {CMP: 1},
    "triu": {CMP: 1},
    # isnan(x) = x != x: 1 cmp
    "isnan": {CMP: 1},
}

# These compare or combine their inputs and return bool: count in the input's format.
# eq, ne, lt, le, gt, ge, logical and/or/xor/not, bitwise and/or/xor/not: 1 cmp.
# NB: boolean logic counts as CMP-class (a comparator is a bank of XNOR gates).
COMPARISONS: tuple[str, ...] = (
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "logical_and",
    "logical_or",
    "logical_xor",
    "logical_not",
    "bitwise_and",
    "bitwise_or",
    "bitwise_xor",
    "bitwise_not",
)


def _pointwise(spec: PerElementSpec, *, input_format: bool = False) -> Formula:
    """A formula: ``spec`` per output element, in the output's (or first input's) format."""

    def formula(call: OpCall) -> OpCost:
        out = _first_out(call)
        fmt = _fmt(_first_tensor_in(call) if input_format else out)
        return _cost(call, count_ops(fmt, per_element_ops(spec, call), out.numel()))

    return formula


for _name, _spec in POINTWISE.items():
    register(*_with_inplace(_name))(_pointwise(_spec))
register(*_with_inplace(*COMPARISONS))(_pointwise({CMP: 1}, input_format=True))


# max/min have a binary overload ("other") beside their reductions: see the reduction section.


# --- casts and data movement -----------------------------------------------------------------

# Fills (zeros, fill_, ...) and copies (clone, copy_, _to_copy, cat, stack, constant_pad_nd,
# select/slice_backward) are registered in zero.py as pure data movement.


def cast_ops(src: torch.Tensor, dst: torch.Tensor) -> dict[OpKey, float]:
    """ALU ops of converting ``src`` into ``dst``'s dtype: none when the dtypes agree.

    A dtype change is a format conversion: 1 ADD-class op per element in the destination format.
    NB: a conversion is exponent re-biasing and significand rounding, closest to an add.
    """
    if src.dtype == dst.dtype:
        return {}
    return count_ops(_fmt(dst), {ADD: 1}, dst.numel())


# Data movement with no arithmetic that zero.py does not cover: flips, rolls, repeats,
# nearest-neighbour upsampling. Reads the inputs, writes the output.
@register(
    *aten_packets(
        "flip",
        "roll",
        "repeat",
        "upsample_nearest1d",
        "upsample_nearest2d",
        "upsample_nearest3d",
    )
)
def data_movement(call: OpCall) -> OpCost:
    return _cost(call, {})


# --- random numbers ---------------------------------------------------------------------------

# One uniform random number: Philox4x32-10 (cuRAND, PyTorch's CUDA generator) runs 10 rounds of
# 2 32-bit multiplies and about 6 add/xor steps per 4 outputs, so per number 5 int32 mul and
# 15 int32 ADD-class ops, plus 1 fp32 multiply scaling it to [0, 1).
# NB: xor counted as ADD-class; the CPU generator (mt19937) differs.
RNG_OPS_PER_ELEMENT: dict[OpKey, float] = {
    (MUL, NumberFormat.INT32, Unit.VECTOR): 5.0,
    (ADD, NumberFormat.INT32, Unit.VECTOR): 15.0,
    (MUL, NumberFormat.FP32, Unit.VECTOR): 1.0,
}


def _rng_ops(n: float) -> dict[OpKey, float]:
    return {key: value * n for key, value in RNG_OPS_PER_ELEMENT.items() if n}


# bernoulli(p): per output element 1 random number and 1 compare (u < p) in the output's format.
# The in-place forms overwrite self without reading it.
@register(*_with_inplace("bernoulli"))
def bernoulli(call: OpCall) -> OpCost:
    out = _first_out(call)
    n = out.numel()
    in_place = call.func.overloadpacket is aten.bernoulli_
    read = _bytes_in(call, skip=("self",)) if in_place else _bytes_in(call)
    return _cost(call, merge_ops(_rng_ops(n), count_ops(_fmt(out), {CMP: 1}, n)), read=read)


# uniform_(x, a, b), rand, rand_like: 1 random number, scaled to [a, b) by 1 mul, 1 add.
@register(*aten_packets("uniform_", "rand", "rand_like"))
def uniform(call: OpCall) -> OpCost:
    out = _first_out(call)
    n = out.numel()
    return _cost(call, merge_ops(_rng_ops(n), count_ops(_fmt(out), {MUL: 1, ADD: 1}, n)), read=0)


# normal_(x, m, s), randn, randn_like: Box-Muller turns 2 uniforms into 2 normals with 1 log,
# 1 sqrt, 1 sin and 1 cos, 2 mul; then m + s*z: per output 1 random number, 1 exp-class,
# 0.5 sqrt, 2 mul (Box-Muller) + 1 mul, 1 add (scale and shift).
@register(*aten_packets("normal_", "randn", "randn_like"))
def normal(call: OpCall) -> OpCost:
    out = _first_out(call)
    n = out.numel()
    per_element = {EXP: 1, SQRT: 0.5, MUL: 3, ADD: 1}
    return _cost(call, merge_ops(_rng_ops(n), count_ops(_fmt(out), per_element, n)), read=0)


# native_dropout(x, p, train) -> (out, mask): per element 1 random number, 1 cmp (u < p) and
# 1 mul (x * 1/(1-p), selected by the mask); writes out and the bool mask. Not training: a copy.
@register(aten.native_dropout)
def native_dropout(call: OpCall) -> OpCost:
    x = call_arg(call, "input")
    if call_arg(call, "train", True) is False:
        return _cost(call, {})
    n = x.numel()
    return _cost(call, merge_ops(_rng_ops(n), count_ops(_fmt(x), {CMP: 1, MUL: 1}, n)))


# native_dropout_backward(g, mask, scale) = g * mask * scale: 2 mul.
register(aten.native_dropout_backward)(_pointwise({MUL: 2}))


# --- reductions -------------------------------------------------------------------------------


def _reduction(
    per_input: PerElement,
    per_output: PerElement | None = None,
    *,
    input_format: bool = False,
) -> Formula:
    """``per_input`` ops per input element plus ``per_output`` ops per output element."""

    def formula(call: OpCall) -> OpCost:
        x = call_arg(call, "self")
        out = _first_out(call)
        fmt = _fmt(x if input_format else out)
        ops = merge_ops(
            count_ops(fmt, per_input, x.numel()),
            count_ops(fmt, per_output or {}, out.numel()),
        )
        return _cost(call, ops)

    return formula


# sum(x): 1 add per input element. nansum adds 1 cmp (isnan select).
register(aten.sum)(_reduction({ADD: 1}))
register(*aten_packets("nansum"))(_reduction({ADD: 1, CMP: 1}))
# mean(x) = sum(x) * (1/N): 1 add per input, 1 mul per output.
register(aten.mean)(_reduction({ADD: 1}, {MUL: 1}))
# prod(x): 1 mul per input element.
register(aten.prod)(_reduction({MUL: 1}))
# amax, amin, argmax, argmin: 1 cmp per input element, in the input's format.
register(aten.amax, aten.amin, aten.argmax, aten.argmin)(_reduction({CMP: 1}, input_format=True))
# all, any: 1 cmp (logic) per input element.
register(aten.all, aten.any)(_reduction({CMP: 1}, input_format=True))
# cumsum, cumprod: 1 add / 1 mul per element (a running accumulation).
register(*_with_inplace("cumsum"))(_reduction({ADD: 1}))
register(*_with_inplace("cumprod"))(_reduction({MUL: 1}))
# logsumexp(x) = m + log(sum(exp(x - m))), m = max(x): per input 1 cmp, 1 add (x - m), 1 exp,
# 1 add (sum); per output 1 exp (log), 1 add.
register(aten.logsumexp)(_reduction({CMP: 1, ADD: 2, EXP: 1}, {EXP: 1, ADD: 1}))

_max_min_reduction = _reduction({CMP: 1}, input_format=True)
_max_min_binary = _pointwise({CMP: 1})


# max/min: the reductions (max(x), max(x, dim) -> values, indices) count 1 cmp per input element;
# the binary overload max(a, b) ("other") counts 1 cmp per output element like maximum.
@register(aten.max, aten.min)
def max_min(call: OpCall) -> OpCost:
    if call.func._overloadname == "other":
        return _max_min_binary(call)
    return _max_min_reduction(call)


# var(x) (two-pass algebra): per input 1 add (sum for the mean), 1 add (x - mean), 1 mul
# (square), 1 add (accumulate); per output 2 div (mean, sum / (N - correction)).
# std adds 1 sqrt per output. var_mean/std_mean return the mean as a by-product.
# NB: kernels use Welford's update (about the same arithmetic, one pass over memory).
_VAR_PER_INPUT: PerElement = {ADD: 3, MUL: 1}
register(aten.var, aten.var_mean)(_reduction(_VAR_PER_INPUT, {DIV: 2}))
register(aten.std, aten.std_mean)(_reduction(_VAR_PER_INPUT, {DIV: 2, SQRT: 1}))


def norm_ops(order: Any) -> tuple[PerElement, PerElement]:
    """Per-input and per-output ops of a vector p-norm (shared with ``_foreach_norm``)."""
    p = 2.0 if order is None else float(order)
    if p == 2.0:
        # sqrt(sum(x*x)): per input 1 mul, 1 add; per output 1 sqrt.
        return {MUL: 1, ADD: 1}, {SQRT: 1}
    if p == 1.0:
        # sum(|x|): per input 1 cmp (abs), 1 add.
        return {CMP: 1, ADD: 1}, {}
    if math.isinf(p):
        # max(|x|) / min(|x|): per input 1 cmp (abs), 1 cmp (max).
        return {CMP: 2}, {}
    if p == 0.0:
        # count(x != 0): per input 1 cmp, 1 add.
        return {CMP: 1, ADD: 1}, {}
    # sum(|x|^p)^(1/p): per input 1 cmp (abs), pow (2 exp, 1 mul), 1 add; per output pow.
    return {CMP: 1, EXP: 2, MUL: 1, ADD: 1}, {EXP: 2, MUL: 1}


# linalg_vector_norm(x, ord), norm(x, p): see norm_ops.
@register(aten.linalg_vector_norm, aten.norm)
def vector_norm(call: OpCall) -> OpCost:
    order = call_arg(call, "ord") if call.packet is aten.linalg_vector_norm else call_arg(call, "p")
    per_input, per_output = norm_ops(order)
    return _reduction(per_input, per_output)(call)


# --- softmax ----------------------------------------------------------------------------------


def _rows(x: torch.Tensor, dim: int) -> int:
    return x.numel() // max(x.shape[dim], 1) if x.dim() else 1


def _softmax_family(per_element: PerElement, per_row: PerElement | None = None) -> Formula:
    def formula(call: OpCall) -> OpCost:
        out = _first_out(call)
        dim = call_arg(call, "dim")
        fmt = _fmt(out)
        ops = merge_ops(
            count_ops(fmt, per_element, out.numel()),
            count_ops(fmt, per_row or {}, _rows(out, dim)),
        )
        return _cost(call, ops)

    return formula


# _softmax(x, dim): per element 1 cmp (row max), 1 add (x - max), 1 exp, 1 add (row sum),
# 1 div (normalise).
register(aten._softmax)(_softmax_family({CMP: 1, ADD: 2, EXP: 1, DIV: 1}))
# _safe_softmax: softmax plus 1 select per element (fully masked rows give 0, not NaN).
register(*aten_packets("_safe_softmax"))(_softmax_family({CMP: 2, ADD: 2, EXP: 1, DIV: 1}))
# _log_softmax(x, dim) = x - max - log(sum(exp(x - max))): per element 1 cmp, 1 add (x - max),
# 1 exp, 1 add (sum), 1 add (subtract the log-sum); per row 1 exp (log).
register(aten._log_softmax)(_softmax_family({CMP: 1, ADD: 3, EXP: 1}, {EXP: 1}))
# _softmax_backward_data(g, y) = y * (g - sum(g*y)): per element 2 mul, 2 add.
register(aten._softmax_backward_data)(_softmax_family({MUL: 2, ADD: 2}))
# _log_softmax_backward_data(g, y) = g - exp(y) * sum(g): per element 1 add (sum), 1 exp, 1 mul,
# 1 add.
register(aten._log_softmax_backward_data)(_softmax_family({ADD: 2, EXP: 1, MUL: 1}))


# --- normalisation layers ---------------------------------------------------------------------

# Forward statistics per element, shared by layer/group/batch norm: mean (1 add), x - mean
# (1 add), square (1 mul), variance accumulate (1 add); normalise (x - mean)*rstd (1 add, 1 mul).
_NORM_STATS: PerElement = {ADD: 3, MUL: 1}
_NORM_APPLY: PerElement = {ADD: 1, MUL: 1}
# Per normalised row/channel: mean and variance scaled by 1/N (2 mul), + eps (1 add), rsqrt.
_NORM_PER_ROW: PerElement = {MUL: 2, ADD: 1, SQRT: 1}


def _affine(weight: Any, bias: Any) -> PerElement:
    # y = xhat * w + b: 1 mul with a weight, 1 add with a bias.
    return {MUL: float(weight is not None), ADD: float(bias is not None)}


def _mask(call: OpCall, size: int) -> list[bool]:
    mask = call_arg(call, "output_mask")
    return [True] * size if mask is None else [bool(m) for m in mask]


# native_layer_norm(x, shape, w, b, eps) -> (y, mean, rstd) over M rows of N elements:
# per element stats + normalise + affine (see above); per row 2 mul, 1 add, 1 sqrt.
@register(aten.native_layer_norm)
def native_layer_norm(call: OpCall) -> OpCost:
    x = call_arg(call, "input")
    n = math.prod(call_arg(call, "normalized_shape"))
    return _norm_forward(call, x, x.numel() // max(n, 1))


def _norm_forward(
    call: OpCall, x: torch.Tensor, rows: int, *, kernels: int = 1, read_passes: int = 1
) -> OpCost:
    fmt = _fmt(x)
    affine = _affine(call_arg(call, "weight"), call_arg(call, "bias"))
    ops = merge_ops(
        count_ops(fmt, _NORM_STATS, x.numel()),
        count_ops(fmt, _NORM_APPLY, x.numel()),
        count_ops(fmt, affine, x.numel()),
        count_ops(fmt, _NORM_PER_ROW, rows),
    )
    read = _bytes_in(call) + (read_passes - 1) * read_bytes(x)
    return _cost(call, ops, read=read, kernels=kernels)


# Backward of layer/group norm, with xhat = (x - mean)*rstd and gw = g*w:
#   dx = rstd * (gw - mean(gw) - xhat * mean(gw*xhat)): xhat (1 add, 1 mul), sum gw (1 add),
#        sum gw*xhat (1 mul, 1 add), xhat*c (1 mul), 2 subtractions (2 add), rstd* (1 mul)
#        -> 5 add, 4 mul per element (+1 mul for gw with a weight); per row 2 mul (the 1/N).
#   dw = sum over rows of g*xhat: 1 mul, 1 add per element; db = sum of g: 1 add per element.
# NB: CUDA runs dx and dw/db as separate kernels (2 launches), each reading g and x.
def _norm_backward(call: OpCall, x: torch.Tensor, rows: int) -> OpCost:
    fmt = _fmt(x)
    dx, dw, db = _mask(call, 3)
    weight = call_arg(call, "weight")
    n = x.numel()
    parts = []
    if dx:
        parts += [
            count_ops(fmt, {ADD: 5, MUL: 4 + float(weight is not None)}, n),
            count_ops(fmt, {MUL: 2}, rows),
        ]
    elif dw:
        parts.append(count_ops(fmt, {ADD: 1, MUL: 1}, n))  # xhat alone
    if dw:
        parts.append(count_ops(fmt, {ADD: 1, MUL: 1}, n))
    if db:
        parts.append(count_ops(fmt, {ADD: 1}, n))
    kernels = int(dx) + int(dw or db)
    read = _bytes_in(call) * max(kernels, 1)
    return _cost(call, merge_ops(*parts), read=read, kernels=max(kernels, 1))


@register(aten.native_layer_norm_backward)
def native_layer_norm_backward(call: OpCall) -> OpCost:
    x = call_arg(call, "input")
    n = math.prod(call_arg(call, "normalized_shape"))
    return _norm_backward(call, x, x.numel() // max(n, 1))


# native_group_norm(x, w, b, N, C, HxW, group, eps): rows = N * group, otherwise as layer norm.
# NB: CUDA runs statistics and the normalisation as 2 kernels, reading x twice.
@register(aten.native_group_norm)
def native_group_norm(call: OpCall) -> OpCost:
    x = call_arg(call, "input")
    rows = int(call_arg(call, "N")) * int(call_arg(call, "group"))
    return _norm_forward(call, x, rows, kernels=2, read_passes=2)


@register(aten.native_group_norm_backward)
def native_group_norm_backward(call: OpCall) -> OpCost:
    x = call_arg(call, "input")
    return _norm_backward(call, x, int(call_arg(call, "N")) * int(call_arg(call, "group")))


def _batch_norm(training: bool | None) -> Formula:
    """Batch norm forward; ``training`` None reads the op's ``training`` argument."""

    def formula(call: OpCall) -> OpCost:
        x = call_arg(call, "input")
        train = bool(call_arg(call, "training", False)) if training is None else training
        channels = x.shape[1] if x.dim() > 1 else 1
        fmt = _fmt(x)
        affine = _affine(call_arg(call, "weight"), call_arg(call, "bias"))
        if not train:
            # Eval: y = (x - running_mean) * invstd * w + b: normalise + affine per element;
            # per channel + eps (1 add), rsqrt (1 sqrt).
            ops = merge_ops(
                count_ops(fmt, _NORM_APPLY, x.numel()),
                count_ops(fmt, affine, x.numel()),
                count_ops(fmt, {ADD: 1, SQRT: 1}, channels),
            )
            return _cost(call, ops)
        # Training: statistics + normalise + affine per element, as layer norm; per channel
        # 2 mul, 1 add, 1 sqrt; running statistics r = (1-m)*r + m*s (2 mul, 1 add, twice, plus
        # 1 mul for the unbiased variance) when the module tracks them.
        running = call_arg(call, "running_mean") is not None
        ops = merge_ops(
            count_ops(fmt, _NORM_STATS, x.numel()),
            count_ops(fmt, _NORM_APPLY, x.numel()),
            count_ops(fmt, affine, x.numel()),
            count_ops(fmt, _NORM_PER_ROW, channels),
            count_ops(fmt, {MUL: 5, ADD: 2}, channels if running else 0),
        )
        # NB: 2 kernels (statistics, then normalise), each reading x; running stats are updated
        # in place (written once more).
        written = _bytes_out(call)
        if running:
            written += nbytes(call_arg(call, "running_mean")) + nbytes(
                call_arg(call, "running_var")
            )
        return _cost(call, ops, read=_bytes_in(call) + read_bytes(x), written=written, kernels=2)

    return formula


register(
    aten.native_batch_norm,
    aten._native_batch_norm_legit,
    aten._native_batch_norm_legit_functional,
    *aten_packets("cudnn_batch_norm", "miopen_batch_norm"),
)(_batch_norm(None))
register(aten._native_batch_norm_legit_no_training, *aten_packets("_batch_norm_no_update"))(
    _batch_norm(False)
)
register(*aten_packets("_batch_norm_with_update"))(_batch_norm(True))


def _batch_norm_backward(training: bool | None, train_arg: str = "train") -> Formula:
    """Batch norm backward with xhat = (x - mean)*invstd over each channel's M elements.

    Training: xhat (1 add, 1 mul), sum g (1 add), sum g*xhat (1 mul, 1 add) per element; dx =
    (g - mean(g) - xhat*mean(g*xhat)) * invstd*w: 1 mul (xhat*c), 2 add, 1 mul per element; dw and
    db are the two sums already taken. Eval: dx = g * invstd*w (1 mul); dw = sum g*xhat (xhat
    1 add 1 mul, then 1 mul 1 add); db = sum g (1 add).
    """

    def formula(call: OpCall) -> OpCost:
        grad_arg = "grad_out" if call_arg(call, "grad_out") is not None else "grad_output"
        g = call_arg(call, grad_arg)
        train = bool(call_arg(call, train_arg, True)) if training is None else training
        dx, dw, db = _mask(call, 3)
        fmt = _fmt(g)
        n = g.numel()
        if train:
            per_element: dict[AluOp, float] = {ADD: 4, MUL: 2}
            if dx:
                per_element = {ADD: 6, MUL: 4}
            # NB: 2 kernels (channel reductions, then the element-wise dx), each reading g and x.
            return _cost(call, count_ops(fmt, per_element, n), read=2 * _bytes_in(call), kernels=2)
        per_element = {MUL: float(dx)}
        if dw:
            per_element = {MUL: per_element[MUL] + 2, ADD: 2}
        if db:
            per_element[ADD] = per_element.get(ADD, 0) + 1
        return _cost(call, count_ops(fmt, per_element, n))

    return formula


register(aten.native_batch_norm_backward)(_batch_norm_backward(None, "train"))
register(*aten_packets("batch_norm_backward"))(_batch_norm_backward(None, "update"))
register(*aten_packets("cudnn_batch_norm_backward", "miopen_batch_norm_backward"))(
    _batch_norm_backward(True)
)


# _fused_rms_norm(x, shape, w, eps) -> (y, rstd) over M rows of N: per element 1 mul (square),
# 1 add (sum), 1 mul (x*rstd), 1 mul with a weight; per row 1 mul (1/N), 1 add (eps), 1 sqrt.
@register(*aten_packets("_fused_rms_norm"))
def fused_rms_norm(call: OpCall) -> OpCost:
    x = call_arg(call, "input")
    n = math.prod(call_arg(call, "normalized_shape"))
    fmt = _fmt(x)
    weight = call_arg(call, "weight")
    ops = merge_ops(
        count_ops(fmt, {MUL: 2 + float(weight is not None), ADD: 1}, x.numel()),
        count_ops(fmt, {MUL: 1, ADD: 1, SQRT: 1}, x.numel() // max(n, 1)),
    )
    return _cost(call, ops)


# _weight_norm_interface(v, g, dim) -> (w, norms): w = v * (g / ||v||), one norm per slice of v
# along ``dim`` (g holds one value per norm): per element of v 1 mul (square), 1 add (sum),
# 1 mul (scale); per norm 1 sqrt and 1 div (g / norm).
@register(*aten_packets("_weight_norm_interface"))
def weight_norm(call: OpCall) -> OpCost:
    v, g = call_arg(call, "v"), call_arg(call, "g")
    fmt = _fmt(v)
    ops = merge_ops(
        count_ops(fmt, {MUL: 2, ADD: 1}, v.numel()),
        count_ops(fmt, {SQRT: 1, DIV: 1}, g.numel()),
    )
    return _cost(call, ops)


# _weight_norm_interface_backward(grad_w, v, g, norms, dim) -> (grad_v, grad_g):
# grad_g = sum(grad_w * v) / norm: per element 1 mul, 1 add; per norm 1 div.
# grad_v = (g / norm) * (grad_w - v * grad_g / norm): per element 2 mul, 1 add (subtract);
# per norm 2 div (grad_g / norm, g / norm).
@register(*aten_packets("_weight_norm_interface_backward"))
def weight_norm_backward(call: OpCall) -> OpCost:
    v, g = call_arg(call, "saved_v"), call_arg(call, "saved_g")
    fmt = _fmt(v)
    ops = merge_ops(
        count_ops(fmt, {MUL: 3, ADD: 2}, v.numel()),
        count_ops(fmt, {DIV: 3}, g.numel()),
    )
    return _cost(call, ops)


# _fused_rms_norm_backward(g, x, shape, rstd, w, mask) -> (dx, dw): xhat = x*rstd (1 mul),
# gw = g*w (1 mul with a weight), sum gw*xhat (1 mul, 1 add), dx = rstd*(gw - xhat*c)
# (2 mul, 1 add) per element; per row 1 mul (1/N); dw = sum g*xhat (1 mul, 1 add).
@register(*aten_packets("_fused_rms_norm_backward"))
def fused_rms_norm_backward(call: OpCall) -> OpCost:
    x = call_arg(call, "input")
    n = math.prod(call_arg(call, "normalized_shape"))
    rows = x.numel() // max(n, 1)
    dx, dw = _mask(call, 2)
    fmt = _fmt(x)
    weight = call_arg(call, "weight")
    parts = [count_ops(fmt, {MUL: 1}, x.numel())]
    if dx:
        parts.append(count_ops(fmt, {MUL: 3 + float(weight is not None), ADD: 2}, x.numel()))
        parts.append(count_ops(fmt, {MUL: 1}, rows))
    if dw:
        parts.append(count_ops(fmt, {MUL: 1, ADD: 1}, x.numel()))
    kernels = max(int(dx) + int(dw), 1)
    return _cost(call, merge_ops(*parts), read=_bytes_in(call) * kernels, kernels=kernels)


# --- losses -----------------------------------------------------------------------------------


def _reduces(call: OpCall) -> bool:
    # reduction: 0 none, 1 mean, 2 sum
    return int(call_arg(call, "reduction", 1)) != 0


def _weight_ops(call: OpCall) -> dict[AluOp, float]:
    """Per-element ops of a loss's optional weights: ``weight`` scales each term (1 mul);
    ``pos_weight`` (BCE with logits) makes 1 + (p - 1) * y (1 add, 1 mul) and scales the
    log-sigmoid term by it (1 mul)."""
    ops: dict[AluOp, float] = {}
    if isinstance(call_arg(call, "weight", None), torch.Tensor):
        ops[MUL] = 1.0
    if isinstance(call_arg(call, "pos_weight", None), torch.Tensor):
        ops[ADD] = ops.get(ADD, 0.0) + 1.0
        ops[MUL] = ops.get(MUL, 0.0) + 2.0
    return ops


def _elementwise_loss(per_element: PerElement) -> Formula:
    """A loss over x, y of equal shape: ``per_element`` ops (and its weights', see
    :func:`_weight_ops`), +1 add per element when reduced (+1 div for the mean)."""

    def formula(call: OpCall) -> OpCost:
        x = call_arg(call, "self")
        fmt = _fmt(x)
        reduction = int(call_arg(call, "reduction", 1))
        extra: dict[AluOp, float] = {ADD: 1.0} if reduction != 0 else {}
        ops = merge_ops(
            count_ops(fmt, per_element, x.numel()),
            count_ops(fmt, _weight_ops(call), x.numel()),
            count_ops(fmt, extra, x.numel()),
            count_ops(fmt, {DIV: 1}, 1 if reduction == 1 else 0),
        )
        return _cost(call, ops)

    return formula


def _elementwise_loss_backward(per_element: PerElement) -> Formula:
    """The backward of :func:`_elementwise_loss`: ``per_element`` ops, and its weights'."""

    def formula(call: OpCall) -> OpCost:
        x = call_arg(call, "self")
        fmt = _fmt(x)
        return _cost(
            call,
            merge_ops(
                count_ops(fmt, per_element, x.numel()),
                count_ops(fmt, _weight_ops(call), x.numel()),
            ),
        )

    return formula


# mse_loss(x, y) = (x - y)^2: 1 add, 1 mul (+ reduction).
register(aten.mse_loss)(_elementwise_loss({ADD: 1, MUL: 1}))
# mse_loss_backward(g, x, y) = (2/N) * (x - y) * g: 1 add, 2 mul.
register(aten.mse_loss_backward)(_elementwise_loss_backward({ADD: 1, MUL: 2}))
# binary_cross_entropy(x, y, w) = -w * (y*max(log x, -100) + (1-y)*max(log(1-x), -100)):
# 2 exp (logs), 2 cmp (clamps), 2 add (1-x, 1-y), 2 mul, 1 add (sum); +1 mul with a weight.
register(aten.binary_cross_entropy)(_elementwise_loss({EXP: 2, CMP: 2, ADD: 3, MUL: 2}))
# binary_cross_entropy_backward(g, x, y, w) = g * (x - y) / max((1 - x) * x, eps): 2 add, 2 mul,
# 1 cmp, 1 div; +1 mul with a weight.
register(aten.binary_cross_entropy_backward)(
    _elementwise_loss_backward({ADD: 2, MUL: 2, CMP: 1, DIV: 1})
)
# binary_cross_entropy_with_logits(x, y) = (1 - y)*x - log_sigmoid(x): 1 add (1-y), 1 mul,
# 1 add, log_sigmoid (2 cmp, 2 exp, 1 add); weight and pos_weight as in _weight_ops.
register(aten.binary_cross_entropy_with_logits)(_elementwise_loss({ADD: 3, MUL: 1, CMP: 2, EXP: 2}))
# smooth_l1_loss(x, y, beta): d = |x - y| (1 add, 1 cmp); d < beta ? 0.5*d*d/beta : d - 0.5*beta
# (1 cmp, 2 mul, 1 add).
register(aten.smooth_l1_loss)(_elementwise_loss({ADD: 2, CMP: 2, MUL: 2}))
# smooth_l1_loss_backward(g, x, y, beta): d = x - y (1 add); d < -beta ? -g : d > beta ? g :
# d*g/beta (2 cmp, 2 mul).
register(aten.smooth_l1_loss_backward)(_elementwise_loss_backward({ADD: 1, CMP: 2, MUL: 2}))
# huber_loss(x, y, delta): d = |x - y| (1 add, 1 cmp); d < delta ? 0.5*d*d : delta*(d - 0.5*delta)
# (1 cmp, 3 mul, 1 add).
register(aten.huber_loss)(_elementwise_loss({ADD: 2, CMP: 2, MUL: 3}))
# huber_loss_backward(g, x, y, delta): d = x - y (1 add); clamp(d, -delta, delta) * g * norm
# (2 cmp, 2 mul).
register(aten.huber_loss_backward)(_elementwise_loss_backward({ADD: 1, CMP: 2, MUL: 2}))


# nll_loss_forward(logp, target, w, reduction, ignore) over N targets: per target 1 cmp (the
# ignore_index test, in the target's integer format), gather logp[t] (bytes), 1 add (sum, the
# negation folded); with a weight 1 mul and 1 add (the total weight); mean: 1 div in all.
# Reads the targets and one logp element per target (not the whole logp).
@register(aten.nll_loss_forward, aten.nll_loss2d_forward)
def nll_loss_forward(call: OpCall) -> OpCost:
    logp = call_arg(call, "self")
    target = call_arg(call, "target")
    weight = call_arg(call, "weight")
    n = target.numel()
    fmt = _fmt(logp)
    weighted = weight is not None
    ops = merge_ops(
        count_ops(_fmt(target), {CMP: 1}, n),
        count_ops(fmt, {ADD: 1 + float(weighted), MUL: float(weighted)}, n),
        count_ops(fmt, {DIV: 1}, 1 if int(call_arg(call, "reduction", 1)) == 1 else 0),
    )
    read = read_bytes(target) + n * logp.element_size() + (read_bytes(weight) if weighted else 0)
    return _cost(call, ops, read=read)


# nll_loss_backward(g, logp, target, w, reduction, ignore, total_weight): the gradient is zero
# except one element per target: per target 1 cmp (ignore_index, integer format) and 1 mul
# (-g * w[t] / total_weight, the scalar part computed once). Writes the whole gradient
# (zero fill + scatter).
@register(aten.nll_loss_backward, aten.nll_loss2d_backward)
def nll_loss_backward(call: OpCall) -> OpCost:
    logp = call_arg(call, "self")
    target = call_arg(call, "target")
    n = target.numel()
    ops = merge_ops(count_ops(_fmt(target), {CMP: 1}, n), count_ops(_fmt(logp), {MUL: 1}, n))
    return _cost(call, ops, read=_bytes_in(call, skip=("self",)))


# --- pooling ----------------------------------------------------------------------------------


def _window(call: OpCall, spatial_dims: int) -> int:
    kernel = list(call_arg(call, "kernel_size"))
    if len(kernel) == 1:
        kernel *= spatial_dims
    return math.prod(int(k) for k in kernel)


def _pool(spatial_dims: int, per_window: AluOp, per_output: PerElement | None = None) -> Formula:
    """Fixed-window pooling: window-size ``per_window`` ops (+ ``per_output``) per output element.

    NB: overlapping windows re-read inputs that the cache serves; bytes count each input once.
    """

    def formula(call: OpCall) -> OpCost:
        out = _first_out(call)
        fmt = _fmt(out)
        window = _window(call, spatial_dims)
        ops = merge_ops(
            count_ops(fmt, {per_window: window}, out.numel()),
            count_ops(fmt, per_output or {}, out.numel()),
        )
        return _cost(call, ops)

    return formula


# max_pool{1,2,3}d(_with_indices)(x, k): k_h*k_w(*k_d) cmp per output; writes values (+ indices).
register(aten.max_pool2d_with_indices, *aten_packets("max_pool2d"))(_pool(2, CMP))
register(*aten_packets("max_pool1d"))(_pool(1, CMP))
register(aten.max_pool3d_with_indices, *aten_packets("max_pool3d"))(_pool(3, CMP))
# avg_pool{2,3}d(x, k): per output k adds and 1 div (the divisor depends on padding).
register(aten.avg_pool2d)(_pool(2, ADD, {DIV: 1}))
register(aten.avg_pool3d)(_pool(3, ADD, {DIV: 1}))


def _pool_backward(per_window: AluOp | None, per_grad: PerElement) -> Formula:
    """Pooling backward over grad_output: ``per_grad`` per element (+ a window of ``per_window``).

    Writes the whole input-sized gradient (zero fill + scatter-add).
    """

    def formula(call: OpCall) -> OpCost:
        g = call_arg(call, "grad_output")
        fmt = _fmt(g)
        parts = [count_ops(fmt, per_grad, g.numel())]
        if per_window is not None:
            parts.append(count_ops(fmt, {per_window: _window(call, g.dim() - 2)}, g.numel()))
        return _cost(call, merge_ops(*parts), read=_bytes_in(call, skip=("self",)))

    return formula


# max_pool_with_indices_backward(g, x, ..., indices): 1 add per grad element (scatter-add at the
# argmax); adaptive_max_pool backward likewise.
register(
    aten.max_pool2d_with_indices_backward,
    aten.max_pool3d_with_indices_backward,
    aten.adaptive_max_pool2d_backward,
    aten.adaptive_max_pool3d_backward,
)(_pool_backward(None, {ADD: 1}))
# avg_pool_backward(g, x, k): per grad element 1 div, then k adds spreading it over the window.
register(aten.avg_pool2d_backward, aten.avg_pool3d_backward)(_pool_backward(ADD, {DIV: 1}))


def _adaptive_extent(in_size: int, out_size: int) -> int:
    # Adaptive window i spans [floor(i*in/out), ceil((i+1)*in/out)): the total over all windows.
    return sum(
        -(-(i + 1) * in_size // out_size) - (i * in_size // out_size) for i in range(out_size)
    )


def _adaptive_window_total(x: torch.Tensor, out_spatial: Sequence[int]) -> int:
    """Total number of input elements read by all windows of one (N, C) plane, times planes."""
    dims = len(out_spatial)
    in_spatial = x.shape[-dims:]
    planes = x.numel() // max(math.prod(in_spatial), 1)
    per_plane = math.prod(
        _adaptive_extent(int(i), int(o)) for i, o in zip(in_spatial, out_spatial, strict=True)
    )
    return planes * per_plane


def _adaptive_pool(op: AluOp, per_output: PerElement | None = None) -> Formula:
    """Adaptive pooling: 1 ``op`` per element of every window (+ ``per_output``)."""

    def formula(call: OpCall) -> OpCost:
        x = call_arg(call, "self")
        out = _first_out(call)
        out_spatial = out.shape[x.dim() - len(call_arg(call, "output_size")) :]
        fmt = _fmt(out)
        ops = merge_ops(
            count_ops(fmt, {op: 1}, _adaptive_window_total(x, out_spatial)),
            count_ops(fmt, per_output or {}, out.numel()),
        )
        return _cost(call, ops)

    return formula


# _adaptive_avg_pool(x, out): 1 add per window element, 1 div per output.
register(aten._adaptive_avg_pool2d, aten._adaptive_avg_pool3d)(_adaptive_pool(ADD, {DIV: 1}))
# adaptive_max_pool(x, out) -> (values, indices): 1 cmp per window element.
register(aten.adaptive_max_pool2d, aten.adaptive_max_pool3d)(_adaptive_pool(CMP))


# _adaptive_avg_pool_backward(g, x): per grad element 1 div, then 1 add per window element.
@register(aten._adaptive_avg_pool2d_backward, aten._adaptive_avg_pool3d_backward)
def adaptive_avg_pool_backward(call: OpCall) -> OpCost:
    g = call_arg(call, "grad_output")
    x = call_arg(call, "self")
    out_spatial = g.shape[2:] if g.dim() == x.dim() else g.shape[1:]
    fmt = _fmt(g)
    ops = merge_ops(
        count_ops(fmt, {DIV: 1}, g.numel()),
        count_ops(fmt, {ADD: 1}, _adaptive_window_total(x, out_spatial)),
    )
    return _cost(call, ops, read=_bytes_in(call, skip=("self",)))


# upsample_bilinear2d(x, size): per output 4 taps, 4 mul and 3 add (interpolation weights per
# row/column are precomputed). Backward spreads each grad element over 4 inputs: 4 mul, 4 add.
register(*aten_packets("upsample_bilinear2d"))(_pointwise({MUL: 4, ADD: 3}))


@register(*aten_packets("upsample_bilinear2d_backward"))
def upsample_bilinear2d_backward(call: OpCall) -> OpCost:
    g = call_arg(call, "grad_output")
    return _cost(call, count_ops(_fmt(g), {MUL: 4, ADD: 4}, g.numel()))


# upsample_nearest*_backward(g, ...): 1 add per grad element (summed into its source pixel).
@register(
    *aten_packets(
        "upsample_nearest1d_backward", "upsample_nearest2d_backward", "upsample_nearest3d_backward"
    )
)
def upsample_nearest_backward(call: OpCall) -> OpCost:
    g = call_arg(call, "grad_output")
    return _cost(call, count_ops(_fmt(g), {ADD: 1}, g.numel()))


# --- embedding, gather and scatter ------------------------------------------------------------


def _gathered(call: OpCall, source: str, index_args: Sequence[str]) -> OpCost:
    """A gather: reads the indices and one source element per output element, writes the output."""
    out = _first_out(call)
    src = call_arg(call, source)
    index_bytes = sum(
        read_bytes(t) for name in index_args for t in _tensors([call_arg(call, name)])
    )
    return _cost(call, {}, read=index_bytes + out.numel() * src.element_size())


# embedding(w, idx): no arithmetic; reads idx and the selected rows, writes the output.
@register(aten.embedding)
def embedding(call: OpCall) -> OpCost:
    return _gathered(call, "weight", ["indices"])


# index_select(x, dim, idx), gather(x, dim, idx), index(x, [idx...]): like embedding.
@register(aten.index_select, aten.gather)
def index_select(call: OpCall) -> OpCost:
    return _gathered(call, "self", ["index"])


@register(aten.index)
def index(call: OpCall) -> OpCost:
    return _gathered(call, "self", ["indices"])


# embedding_dense_backward(g, idx, num_weights, padding_idx, scale): per index 1 cmp
# (padding_idx, integer format); per grad element 1 add (accumulated into its row); with
# scale_grad_by_freq 1 div per grad element. Writes the whole (num_weights x D) gradient.
# NB: CUDA sorts the indices and reduces segments (several kernels); counted as 1 launch.
@register(aten.embedding_dense_backward)
def embedding_dense_backward(call: OpCall) -> OpCost:
    g = call_arg(call, "grad_output")
    indices = call_arg(call, "indices")
    per_grad = {ADD: 1.0, DIV: float(bool(call_arg(call, "scale_grad_by_freq", False)))}
    ops = merge_ops(
        count_ops(_fmt(indices), {CMP: 1}, indices.numel()),
        count_ops(_fmt(g), per_grad, g.numel()),
    )
    return _cost(call, ops)


# _embedding_bag(w, idx, offsets, ..., mode, ..., per_sample_weights, ...): each of the n
# indices gathers a D-wide row into its bag: mode 0 (sum) 1 add per gathered element, mode 1
# (mean) the same plus 1 div per output element, mode 2 (max) 1 cmp per gathered element;
# per_sample_weights (sum mode) 1 mul per gathered element. Reads the indices, offsets, the n
# gathered rows and the weights; writes the (bags x D) output and the auxiliary outputs.
# NB: the first element of a bag initialises rather than adds: counted as an add.
_BAG_OPS: dict[int, PerElement] = {0: {ADD: 1}, 1: {ADD: 1}, 2: {CMP: 1}}


@register(aten._embedding_bag, aten._embedding_bag_forward_only)
def embedding_bag(call: OpCall) -> OpCost:
    weight = call_arg(call, "weight")
    indices = call_arg(call, "indices")
    mode = int(call_arg(call, "mode", 0))
    psw = call_arg(call, "per_sample_weights", None)
    out = _first_out(call)
    d = weight.shape[-1] if weight.dim() > 1 else 1
    gathered = indices.numel() * d
    per: dict[AluOp, float] = dict(_BAG_OPS.get(mode, {ADD: 1}))
    if isinstance(psw, torch.Tensor):
        per[MUL] = per.get(MUL, 0) + 1
    ops = count_ops(_fmt(weight), per, gathered)
    if mode == 1:
        ops = merge_ops(ops, count_ops(_fmt(out), {DIV: 1}, out.numel()))
    read = (
        read_bytes(indices)
        + read_bytes(call_arg(call, "offsets"))
        + gathered * weight.element_size()
        + (read_bytes(psw) if isinstance(psw, torch.Tensor) else 0)
    )
    return _cost(call, ops, read=read)


# _embedding_bag_backward / _embedding_bag_dense_backward(grad, idx, ...): each index adds a
# D-wide slice of its bag's gradient into its weight row: 1 add per index x D; mean mode 1 div
# per index x D (the bag size), per_sample_weights 1 mul. Writes the (num_weights x D) grad.
# NB: CUDA sorts the indices and reduces segments (several kernels); counted as 1 launch.
@register(aten._embedding_bag_backward, aten._embedding_bag_dense_backward)
def embedding_bag_backward(call: OpCall) -> OpCost:
    grad = call_arg(call, "grad")
    indices = call_arg(call, "indices")
    mode = int(call_arg(call, "mode", 0))
    psw = call_arg(call, "per_sample_weights", None)
    d = grad.shape[-1] if grad.dim() > 1 else 1
    per: dict[AluOp, float] = {ADD: 1}
    if mode == 1:
        per[DIV] = 1
    if isinstance(psw, torch.Tensor):
        per[MUL] = 1
    ops = count_ops(_fmt(grad), per, indices.numel() * d)
    return _cost(call, ops)


def _scatter(source: str, spec: PerElementSpec) -> Formula:
    """Scatter-style writes of n elements into self, ``spec`` ops each.

    n is the index's element count (scatter*), or the source's (index_add: one slice per index).
    Out of place: reads all of self, writes the whole output (a copy plus the scatter).
    In place: reads and writes only the scattered elements.
    """

    def formula(call: OpCall) -> OpCost:
        self_t = call_arg(call, "self")
        index_t = call_arg(call, "index")
        src = call_arg(call, source)
        out = _first_out(call)
        has_src = isinstance(src, torch.Tensor)
        n = src.numel() if has_src and source == "source" else index_t.numel()
        size = self_t.element_size()
        in_place = call.func._schema.name.endswith("_")
        src_bytes = n * src.element_size() if has_src else 0
        read = read_bytes(index_t) + src_bytes + (n * size if in_place else read_bytes(self_t))
        written = n * size if in_place else nbytes(out)
        ops = count_ops(_fmt(out), per_element_ops(spec, call), n)
        return _cost(call, ops, read=read, written=written)

    return formula


# Reductions of scatter_reduce / scatter(reduce=...): sum/add 1 add, prod/multiply 1 mul,
# mean 1 add (+ a divide per output, NB not counted), amax/amin 1 cmp; no reduce: none.
_SCATTER_REDUCE: dict[Any, PerElement] = {
    "sum": {ADD: 1},
    "add": {ADD: 1},
    "mean": {ADD: 1},
    "prod": {MUL: 1},
    "multiply": {MUL: 1},
    "amax": {CMP: 1},
    "amin": {CMP: 1},
}


def _scatter_reduce_ops(call: OpCall) -> PerElement:
    return _SCATTER_REDUCE.get(call_arg(call, "reduce"), {})


# scatter(x, dim, idx, src|value): no arithmetic (a reduce= overload adds its operation);
# scatter_reduce(x, dim, idx, src, reduce): 1 op of the reduction per index element.
register(*_with_inplace("scatter", "scatter_reduce"))(_scatter("src", _scatter_reduce_ops))
# scatter_add(x, dim, idx, src): 1 add per index element.
register(*_with_inplace("scatter_add"))(_scatter("src", {ADD: 1}))
# index_add(x, dim, idx, source, alpha): 1 add per source element (+1 mul when alpha != 1).
register(*_with_inplace("index_add"))(_scatter("source", _alpha_add))


# index_put(x, [idx...], values, accumulate): writes values.numel() elements; accumulate adds
# 1 add each. NB: values broadcast against the indices are counted at their own size.
@register(*_with_inplace("index_put"))
def index_put(call: OpCall) -> OpCost:
    self_t = call_arg(call, "self")
    values = call_arg(call, "values")
    out = _first_out(call)
    n = values.numel()
    per_element = {ADD: 1} if call_arg(call, "accumulate", False) else {}
    in_place = call.func._schema.name.endswith("_")
    size = self_t.element_size()
    index_bytes = sum(read_bytes(t) for t in _tensors([call_arg(call, "indices")]))
    read = index_bytes + read_bytes(values) + (n * size if in_place else read_bytes(self_t))
    written = n * size if in_place else nbytes(out)
    return _cost(call, count_ops(_fmt(out), per_element, n), read=read, written=written)
