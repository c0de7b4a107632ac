"""Transistor cost model: ALU operation classes, number formats, TOs per (operation, format).

A transistor operation (TO) count weighs each scalar ALU operation by the transistors of a
static-CMOS unit that performs it (Li, Tsourdos, Guo, arXiv 2205.15062). The paper's own tables
are not available, so the default table is reconstructed here from gate-level building blocks:
cells from Weste & Harris, *CMOS VLSI Design* (4th ed., ch. 9 and 11), composed into adders,
multipliers and shifters, then into floating-point units. Every formula, a worked example and
the resulting table are in ``docs/cost-model.md`` (regenerate the table with
``python -m lightning_to_energy.counting.cost_model``).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from lightning_to_energy._files import check_toml_or_json_path, load_toml_or_json

__all__ = [
    "AND2_TOS",
    "CARRY_CELL_TOS",
    "FLOAT_SPECS",
    "FULL_ADDER_TOS",
    "HALF_ADDER_TOS",
    "INT_BITS",
    "INV_TOS",
    "MUX2_TOS",
    "NAND2_TOS",
    "NOR2_TOS",
    "OR2_TOS",
    "SEED_BITS",
    "XOR2_TOS",
    "AluOp",
    "CostModel",
    "CostTable",
    "FloatSpec",
    "NumberFormat",
    "OpFormat",
    "Unit",
    "adder_tos",
    "as_cost_model",
    "comparator_tos",
    "derive_tos",
    "divider_tos",
    "exp_degree",
    "float_add_tos",
    "float_cmp_tos",
    "float_div_tos",
    "float_exp_tos",
    "float_fma_tos",
    "float_mul_tos",
    "float_sqrt_tos",
    "format_from_str",
    "incrementer_tos",
    "int_to_float_tos",
    "multiplier_tos",
    "normaliser_tos",
    "nr_iterations",
    "op_from_str",
    "or_tree_tos",
    "render_markdown_table",
    "seed_table_tos",
    "shifter_tos",
    "subtractor_tos",
]


class AluOp(str, Enum):
    """Classes of ALU operation the counter reports.

    One counted operation is one scalar operation on one element (a fused multiply-add
    counts once, as FMA, not as a multiply plus an add).
    """

    ADD = "add"  # add, subtract, negate, accumulate
    MUL = "mul"  # multiply
    FMA = "fma"  # fused multiply-add (matmul/conv inner products)
    CMP = "cmp"  # compare, select, max/min, abs, sign, relu-style clamps
    DIV = "div"  # divide, reciprocal
    SQRT = "sqrt"  # square root, reciprocal square root
    EXP = "exp"  # exp, log and other transcendental functions (tanh, erf via exp)


class NumberFormat(str, Enum):
    """Number formats, named as users know them."""

    FP64 = "fp64"
    FP32 = "fp32"
    TF32 = "tf32"
    FP16 = "fp16"
    BF16 = "bf16"
    FP8_E4M3 = "fp8_e4m3"
    FP8_E5M2 = "fp8_e5m2"
    INT64 = "int64"
    INT32 = "int32"
    INT16 = "int16"
    INT8 = "int8"
    BOOL = "bool"


class Unit(str, Enum):
    """Which hardware unit class executes an operation.

    MATRIX: inner-product work of matmuls, convolutions and attention (tensor cores where the
    format allows). VECTOR: everything else (element-wise, reductions, optimizer updates).
    """

    MATRIX = "matrix"
    VECTOR = "vector"


# ---------------------------------------------------------------------------------------------
# Static-CMOS cells, transistors per cell (Weste & Harris, CMOS VLSI Design, 4th ed.).
INV_TOS = 2
NAND2_TOS = 4
NOR2_TOS = 4
AND2_TOS = 6  # NAND2 + inverter
OR2_TOS = 6  # NOR2 + inverter
XOR2_TOS = 12
FULL_ADDER_TOS = 28  # mirror adder: 24 + two output inverters
HALF_ADDER_TOS = 18  # XOR2 + AND2
CARRY_CELL_TOS = 12  # the mirror adder's carry half: 10-transistor majority gate + inverter
# NB: an inverting AOI22 multiplexer; shifter stages alternate polarity so no output inverter
# is needed, and the select inverter is shared by the whole row (not counted).
MUX2_TOS = 8
SEED_BITS = 4  # Newton-Raphson seed table: 4 address bits, about 4 correct bits


def _stages(n: int) -> int:
    """Levels of a binary tree over ``n`` leaves: ceil(log2 n), at least 1."""
    return max(1, math.ceil(math.log2(n)))


def adder_tos(n: int) -> int:
    """n-bit ripple-carry adder: n full adders, 28n."""
    return FULL_ADDER_TOS * n


def subtractor_tos(n: int) -> int:
    """n-bit subtractor A + ~B + 1: adder plus one inverter per bit, 30n."""
    return adder_tos(n) + INV_TOS * n


def incrementer_tos(n: int) -> int:
    """n-bit incrementer (rounding, +1): a half-adder chain, 18n."""
    return HALF_ADDER_TOS * n


def multiplier_tos(n: int) -> int:
    """n x n unsigned array multiplier (Weste & Harris ch. 11), 34n^2 - 38n for n >= 2.

    n^2 AND2 partial products, n(n - 2) full adders and n half adders:
    6n^2 + 28(n^2 - 2n) + 18n = 34n^2 - 38n. A 1 x 1 multiplier is one AND2.
    """
    if n == 1:
        return AND2_TOS
    return AND2_TOS * n * n + FULL_ADDER_TOS * n * (n - 2) + HALF_ADDER_TOS * n


def comparator_tos(n: int) -> int:
    """n-bit magnitude comparator: the carry chain of A - B only, (INV + carry cell) x n = 14n."""
    return (INV_TOS + CARRY_CELL_TOS) * n


def or_tree_tos(n: int) -> int:
    """OR of n bits (sticky bit, zero test): n - 1 OR2."""
    return OR2_TOS * max(n - 1, 0)


def shifter_tos(n: int, max_shift: int | None = None) -> int:
    """n-bit logarithmic barrel shifter of 2:1 muxes: n x ceil(log2(max_shift + 1)) muxes.

    ``max_shift`` defaults to n - 1 (any shift), which gives ceil(log2 n) stages.
    """
    shift = n - 1 if max_shift is None else max_shift
    return MUX2_TOS * n * _stages(shift + 1)


def normaliser_tos(n: int) -> int:
    """Left-normalising shifter with its own leading-zero detection.

    Stage k (k = s-1 .. 0, s = ceil(log2 n)) shifts left by 2^k when the top 2^k bits are zero;
    that zero test is a NOR of 2^k bits ((2^k - 1) OR2 + INV) and the stage decisions are the
    shift count. Total: shifter_tos(n) + sum_k [(2^k - 1) OR2 + INV].
    """
    detect = sum(or_tree_tos(1 << k) + INV_TOS for k in range(_stages(n)))
    return shifter_tos(n) + detect


def seed_table_tos(bits: int) -> int:
    """Reciprocal seed table of 2^b words x b bits, addressed by b bits.

    NB: a NOR ROM (one transistor per stored bit) plus a decoder of 2^b b-input NANDs (2b each)
    and b address inverters: b 2^b + 2b 2^b + 2b.
    """
    words = 1 << bits
    return bits * words + 2 * bits * words + INV_TOS * bits


def divider_tos(n: int) -> int:
    """n-bit non-restoring array divider: n rows of (n XOR2 + n-bit adder), 40n^2."""
    return n * (n * XOR2_TOS + adder_tos(n))


@dataclass(frozen=True)
class FloatSpec:
    """A binary float format: significand bits ``p`` (hidden bit included), exponent bits ``e``."""

    p: int
    e: int


FLOAT_SPECS: Mapping[NumberFormat, FloatSpec] = MappingProxyType(
    {
        NumberFormat.FP64: FloatSpec(53, 11),
        NumberFormat.FP32: FloatSpec(24, 8),
        NumberFormat.TF32: FloatSpec(11, 8),
        NumberFormat.FP16: FloatSpec(11, 5),
        NumberFormat.BF16: FloatSpec(8, 8),
        NumberFormat.FP8_E4M3: FloatSpec(4, 4),
        NumberFormat.FP8_E5M2: FloatSpec(3, 5),
    }
)
INT_BITS: Mapping[NumberFormat, int] = MappingProxyType(
    {NumberFormat.INT64: 64, NumberFormat.INT32: 32, NumberFormat.INT16: 16, NumberFormat.INT8: 8}
)


def float_mul_tos(s: FloatSpec) -> int:
    """Float multiply: p x p significands, exponents Ea + Eb - bias (+1), normalise, round."""
    return (
        multiplier_tos(s.p)
        + 2 * adder_tos(s.e)  # Ea + Eb, then - bias
        + incrementer_tos(s.e)  # +1 when the product is in [2, 4)
        + (s.p + 1) * MUX2_TOS  # normalise: a 1-bit shift of p bits and the guard bit
        + or_tree_tos(s.p - 1)  # sticky of the low product bits
        + incrementer_tos(s.p)  # round to nearest even
        + XOR2_TOS  # sign
    )


def float_add_tos(s: FloatSpec) -> int:
    """Float add: exponent compare, swap, align, (p+3)-bit add, normalise, round."""
    w = s.p + 3  # significand + guard, round, sticky
    return (
        subtractor_tos(s.e)  # exponent compare: Ea - Eb
        + 2 * s.p * MUX2_TOS  # swap so the larger operand goes first
        + shifter_tos(w)  # alignment shifter
        + or_tree_tos(s.p)  # NB: sticky over the shifted-out bits, taken as a p-bit OR
        + w * XOR2_TOS  # conditional complement for effective subtraction
        + adder_tos(w)
        + normaliser_tos(w)
        + incrementer_tos(s.p)  # round
        + subtractor_tos(s.e)  # exponent adjust by the normalisation count
        + XOR2_TOS  # sign
    )


def float_fma_tos(s: FloatSpec) -> int:
    """Float FMA a*b + c: full product, addend aligned over 3p+2 bits, one rounding at the end."""
    p = s.p
    return (
        multiplier_tos(p)
        + 2 * adder_tos(s.e)  # Ea + Eb - bias
        + subtractor_tos(s.e)  # compare with Ec
        + shifter_tos(3 * p + 2)  # align the addend across the product window
        + (3 * p + 2) * XOR2_TOS  # conditional complement of the addend
        + or_tree_tos(p)  # sticky of the bits shifted out
        # NB: the upper p bits of the window go through an incrementer, the rest an adder.
        + adder_tos(2 * p + 3)
        + incrementer_tos(p)
        + normaliser_tos(2 * p + 3)
        + incrementer_tos(p)  # round once
        + subtractor_tos(s.e)  # exponent adjust
        + 2 * XOR2_TOS  # signs
    )


def float_cmp_tos(s: FloatSpec) -> int:
    """Float compare and select: magnitude compare of the e + p - 1 bit field, sign fix, mux."""
    return comparator_tos(s.e + s.p - 1) + XOR2_TOS + MUX2_TOS + (s.e + s.p) * MUX2_TOS


def nr_iterations(p: int, seed_bits: int = SEED_BITS) -> int:
    """Newton-Raphson iterations from a ``seed_bits`` seed to p bits: ceil(log2(p / seed_bits)).

    Each iteration doubles the correct bits; fp32 (p = 24) needs 3 from a 4-bit seed.
    """
    return max(0, math.ceil(math.log2(p / seed_bits)))


def float_div_tos(s: FloatSpec) -> int:
    """Divide a/d: seed 1/d, iterate r = r (2 - d r) (one FMA + one mul each), then q = a r."""
    n = nr_iterations(s.p)
    return seed_table_tos(SEED_BITS) + n * (float_fma_tos(s) + float_mul_tos(s)) + float_mul_tos(s)


def float_sqrt_tos(s: FloatSpec) -> int:
    """Square root (and rsqrt) by Newton-Raphson on 1/sqrt(x), then sqrt(x) = x y.

    Seed 1/sqrt(x), iterate y = y (3 - x y^2) / 2 (two muls + one FMA each; the halving is an
    exponent decrement, not counted), then one multiply.
    """
    n = nr_iterations(s.p)
    step = 2 * float_mul_tos(s) + float_fma_tos(s)
    return seed_table_tos(SEED_BITS) + n * step + float_mul_tos(s)


def exp_degree(p: int) -> int:
    """Polynomial degree for exp on |r| <= ln2 / 2: about 4 bits per degree, ceil(p / 4)."""
    return max(1, math.ceil(p / 4))


def float_exp_tos(s: FloatSpec) -> int:
    """exp(x) = 2^n e^r: range reduction plus a polynomial of FMAs.

    n = round(x / ln 2) (mul + rounding add), r = x - n ln 2 in two FMAs (Cody-Waite), e^r by
    Horner (exp_degree(p) FMAs), and n added to the exponent field (e-bit adder).
    """
    reduce = float_mul_tos(s) + float_add_tos(s) + 2 * float_fma_tos(s)
    return reduce + exp_degree(s.p) * float_fma_tos(s) + adder_tos(s.e)


def int_to_float_tos(n: int, s: FloatSpec) -> int:
    """Signed n-bit integer to float: absolute value, normalise, round, exponent = bias - count."""
    return (
        n * XOR2_TOS
        + incrementer_tos(n)
        + normaliser_tos(n)
        + incrementer_tos(s.p)
        + subtractor_tos(s.e)
    )


_FLOAT_BLOCKS = {
    AluOp.ADD: float_add_tos,
    AluOp.MUL: float_mul_tos,
    AluOp.FMA: float_fma_tos,
    AluOp.CMP: float_cmp_tos,
    AluOp.DIV: float_div_tos,
    AluOp.SQRT: float_sqrt_tos,
    AluOp.EXP: float_exp_tos,
}
# Bool arithmetic as torch does it: add is OR, mul is AND, addcmul is a | (b & c); compare is
# an XOR (equality; NB: a </> on bools is cheaper, an AND2 with an inverter).
_BOOL_GATES = {
    AluOp.ADD: OR2_TOS,
    AluOp.MUL: AND2_TOS,
    AluOp.FMA: AND2_TOS + OR2_TOS,
    AluOp.CMP: XOR2_TOS,
}


def derive_tos(op: AluOp, fmt: NumberFormat) -> float:
    """Transistors switched by one scalar ``op`` in ``fmt``, derived from the blocks above.

    Integer and bool formats have no sqrt or exp (and bools no division) in torch: those run in
    the default float format, fp32, so they cost a conversion plus the fp32 operation.
    """
    fp32 = FLOAT_SPECS[NumberFormat.FP32]
    if fmt in FLOAT_SPECS:
        return float(_FLOAT_BLOCKS[op](FLOAT_SPECS[fmt]))
    if fmt is NumberFormat.BOOL:
        if op in _BOOL_GATES:
            return float(_BOOL_GATES[op])
        # NB: converting a bool to 0.0 / 1.0 is a constant select, taken as free.
        return float(_FLOAT_BLOCKS[op](fp32))
    n = INT_BITS[fmt]
    ints = {
        AluOp.ADD: adder_tos(n),
        AluOp.MUL: multiplier_tos(n),
        AluOp.FMA: multiplier_tos(n) + adder_tos(2 * n),
        AluOp.CMP: comparator_tos(n) + XOR2_TOS + n * MUX2_TOS,  # XOR2: signed compare
        AluOp.DIV: divider_tos(n),  # floor_divide / remainder; true division yields fp32
    }
    if op in ints:
        return float(ints[op])
    return float(int_to_float_tos(n, fp32) + _FLOAT_BLOCKS[op](fp32))


# ---------------------------------------------------------------------------------------------
_FORMAT_ALIASES: dict[str, NumberFormat] = {
    **{f.value: f for f in NumberFormat},
    **dict.fromkeys(("float64", "double", "f64"), NumberFormat.FP64),
    **dict.fromkeys(("float32", "float", "f32"), NumberFormat.FP32),
    **dict.fromkeys(("tensorfloat32", "tensor_float32"), NumberFormat.TF32),
    **dict.fromkeys(("float16", "half", "f16"), NumberFormat.FP16),
    **dict.fromkeys(("bfloat16",), NumberFormat.BF16),
    **dict.fromkeys(("e4m3", "fp8e4m3", "float8_e4m3", "float8_e4m3fn"), NumberFormat.FP8_E4M3),
    **dict.fromkeys(("e5m2", "fp8e5m2", "float8_e5m2"), NumberFormat.FP8_E5M2),
    **dict.fromkeys(("long", "i64"), NumberFormat.INT64),
    **dict.fromkeys(("int", "i32"), NumberFormat.INT32),
    **dict.fromkeys(("short", "i16"), NumberFormat.INT16),
    # uint8 uses the same 8-bit datapath as int8.
    **dict.fromkeys(("i8", "uint8"), NumberFormat.INT8),
    **dict.fromkeys(("boolean",), NumberFormat.BOOL),
}


def format_from_str(s: str) -> NumberFormat:
    """Parse a number format name: "fp32", "float16", "torch.bfloat16", "e4m3", "fp8-e5m2"...

    Raises:
        ValueError: the name is not a known format or alias.
    """
    if isinstance(s, NumberFormat):
        return s
    key = str(s).strip().lower().removeprefix("torch.").replace("-", "_")
    if key in _FORMAT_ALIASES:
        return _FORMAT_ALIASES[key]
    known = ", ".join(f.value for f in NumberFormat)
    raise ValueError(
        f"expected a number format ({known}, or an alias such as float32, half, bfloat16, e4m3); "
        f"found {s!r}; fix: use one of the listed names"
    )


def op_from_str(s: str) -> AluOp:
    """Parse an ALU operation class name ("fma", "ADD").

    Raises:
        ValueError: the name is not an operation class.
    """
    if isinstance(s, AluOp):
        return s
    key = str(s).strip().lower()
    if key in AluOp._value2member_map_:
        return AluOp(key)
    known = ", ".join(op.value for op in AluOp)
    raise ValueError(f"expected an ALU operation ({known}); found {s!r}; fix: use one of those")


OpFormat = tuple[AluOp, NumberFormat]


def _parse_key(key: object) -> OpFormat:
    if isinstance(key, str):
        parts = key.split(":")
        if len(parts) != 2:
            raise ValueError(
                f'expected a key "op:format" such as "fma:bf16"; found {key!r}; '
                "fix: write the operation and the format separated by one colon"
            )
        return op_from_str(parts[0]), format_from_str(parts[1])
    if isinstance(key, tuple) and len(key) == 2:
        return op_from_str(key[0]), format_from_str(key[1])
    raise ValueError(
        f'expected a key (AluOp, NumberFormat) or "op:format"; found {key!r}; '
        'fix: use e.g. (AluOp.FMA, NumberFormat.BF16) or "fma:bf16"'
    )


def _parse_value(key: OpFormat, value: object) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or float(value) <= 0:  # type: ignore[arg-type]
        raise ValueError(
            f"expected a positive finite number of transistors for "
            f'"{key[0].value}:{key[1].value}"; found {value!r}; fix: give a number > 0'
        )
    return float(value)  # type: ignore[arg-type]


@dataclass(frozen=True)
class CostTable:
    """The cost table laid out for rendering: ``tos[i][j]`` is ``ops[i]`` in ``formats[j]``."""

    ops: tuple[AluOp, ...]
    formats: tuple[NumberFormat, ...]
    tos: tuple[tuple[float, ...], ...]


@dataclass(frozen=True, eq=False)
class CostModel:
    """An immutable table of transistors switched per scalar operation, by (op, format).

    Args:
        entries: TOs for every (AluOp, NumberFormat) pair; every pair must be present.

    Raises:
        ValueError: a pair is missing, or a key or value is malformed.

    Example:
        >>> cm = CostModel.default().with_overrides({"fma:bf16": 5000.0})
        >>> cm.tos(AluOp.FMA, NumberFormat.BF16)
        5000.0
    """

    entries: Mapping[OpFormat, float]

    def __post_init__(self) -> None:
        table = {}
        for key, value in self.entries.items():
            parsed = _parse_key(key)
            table[parsed] = _parse_value(parsed, value)
        missing = [
            f"{o.value}:{f.value}" for o in AluOp for f in NumberFormat if (o, f) not in table
        ]
        if missing:
            raise ValueError(
                f"expected TOs for every operation x format; found {len(missing)} missing "
                f"({', '.join(missing[:5])}...); fix: start from CostModel.default().with_overrides"
            )
        object.__setattr__(self, "entries", MappingProxyType(table))

    def __reduce__(self) -> tuple[type[CostModel], tuple[dict[OpFormat, float]]]:
        # Picklable (a mapping proxy is not), so that a TOEnergy holding a cost model crosses
        # into ddp_spawn's worker processes.
        return (CostModel, (dict(self.entries),))

    @classmethod
    def default(cls) -> CostModel:
        """The gate-level table of :func:`derive_tos` (built once, then cached)."""
        return _default_model()

    def tos(self, op: AluOp, fmt: NumberFormat) -> float:
        """Transistors switched by one scalar ``op`` in format ``fmt``."""
        return self.entries[(op, fmt)]

    def weigh(self, counts: Mapping[tuple[AluOp, NumberFormat, Unit], float]) -> float:
        """Total TOs of ``counts``: sum of count x tos(op, fmt) over (op, fmt, unit) keys.

        The unit does not change the transistor count; it is carried for the regression.

        Raises:
            ValueError: a key is not an (AluOp, NumberFormat, Unit) triple.
        """
        total = 0.0
        for key, count in counts.items():
            try:
                op, fmt, _unit = key
                total += count * self.entries[(op, fmt)]
            except (KeyError, ValueError, TypeError):
                raise ValueError(
                    f"expected count keys (AluOp, NumberFormat, Unit); found {key!r}; "
                    "fix: key counts as counting.registry.OpKey does"
                ) from None
        return total

    def with_overrides(self, mapping: Mapping[Any, float]) -> CostModel:
        """A copy with some entries replaced; keys are (AluOp, NumberFormat) or "op:format".

        Raises:
            ValueError: a key is not a known pair, or a value is not a positive finite number.
        """
        table = dict(self.entries)
        for key, value in mapping.items():
            parsed = _parse_key(key)
            table[parsed] = _parse_value(parsed, value)
        return CostModel(table)

    @classmethod
    def from_file(cls, path: str | Path) -> CostModel:
        """The default model overlaid with a TOML (``[tos]``) or JSON (``{"tos": {...}}``) file.

        Raises:
            FileNotFoundError: the file does not exist.
            ValueError: wrong suffix, malformed content, unknown keys or bad values.
        """
        path = Path(path)
        check_toml_or_json_path(path, "cost file")
        try:
            data = load_toml_or_json(path)
            if not isinstance(data, dict) or set(data) != {"tos"}:
                found = sorted(data) if isinstance(data, dict) else type(data).__name__
                raise ValueError(f"expected exactly one top-level table 'tos'; found {found}")
            if not isinstance(data["tos"], dict):
                raise ValueError(f"expected 'tos' to be a table; found {data['tos']!r}")
            return cls.default().with_overrides(data["tos"])
        except ValueError as exc:
            fix = "" if "fix:" in str(exc) else f"; fix: {_FILE_HINT}"
            raise ValueError(f"cost file {str(path)!r}: {exc}{fix}") from exc

    def to_dict(self) -> dict[str, float]:
        """Every entry as {"op:format": TOs}, in enum order (the file format of from_file)."""
        return {f"{o.value}:{f.value}": self.entries[(o, f)] for o in AluOp for f in NumberFormat}

    def table(self) -> CostTable:
        """The entries laid out as operation rows x format columns."""
        rows = tuple(tuple(self.entries[(o, f)] for f in NumberFormat) for o in AluOp)
        return CostTable(ops=tuple(AluOp), formats=tuple(NumberFormat), tos=rows)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CostModel) and dict(self.entries) == dict(other.entries)

    def __hash__(self) -> int:
        return hash(frozenset(self.entries.items()))


_FILE_HINT = 'write [tos] "fma:bf16" = 123.0 (TOML) or {"tos": {"fma:bf16": 123.0}} (JSON)'


@functools.lru_cache(maxsize=1)
def _default_model() -> CostModel:
    return CostModel({(o, f): derive_tos(o, f) for o in AluOp for f in NumberFormat})


def render_markdown_table(model: CostModel | None = None) -> str:
    """The cost table as markdown: operations as rows, formats as columns, TOs per operation."""
    t = (model or CostModel.default()).table()
    lines = [
        "| op | " + " | ".join(f.value for f in t.formats) + " |",
        "|---|" + "---:|" * len(t.formats),
    ]
    for op, row in zip(t.ops, t.tos, strict=True):
        lines.append(f"| {op.value} | " + " | ".join(f"{v:,.0f}" for v in row) + " |")
    return "\n".join(lines)


def as_cost_model(value: CostModel | str | os.PathLike[str] | None) -> CostModel:
    """``value`` as a :class:`CostModel`: itself, the default for None, or a TOML/JSON file of
    overrides read with :meth:`CostModel.from_file`.

    Raises:
        FileNotFoundError: a path to no file.
        ValueError: a malformed file, or a value of another type.
    """
    if value is None:
        return CostModel.default()
    if isinstance(value, CostModel):
        return value
    if isinstance(value, (str, os.PathLike)):
        return CostModel.from_file(Path(value))
    raise ValueError(
        f"cost_model: expected a CostModel, a path to a TOML/JSON cost file or None; found "
        f"{type(value).__name__} {value!r}; fix: e.g. CostModel.default().with_overrides(...)"
    )


if __name__ == "__main__":
    print(render_markdown_table())
