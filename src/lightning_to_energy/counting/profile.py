"""Step profiles: what one training or inference step costs, and how to sum steps.

A :class:`StepProfile` is the counted cost of one step: ALU operation counts and their
transistor operations (TOs), FLOPs (as ``FlopCounterMode`` counts them), bytes moved and
kernels launched, split by phase, by module and by aten op. Profiles add and scale, so a
window of steps is a sum; :class:`ProfileSum` sums replayed steps in constant time.
:func:`~lightning_to_energy.counting.step.profile` counts one step of a model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any, TypeVar

from lightning_to_energy.counting.cost_model import AluOp, NumberFormat, Unit
from lightning_to_energy.counting.registry import OpCost, OpKey

__all__ = [
    "OTHER",
    "PHASES",
    "ROOT",
    "ModuleTotals",
    "OpTotals",
    "PhaseTotals",
    "ProfileSum",
    "StepProfile",
]

PHASES = ("forward", "backward", "optimizer", "other")
"""The phases a step is split into, in order."""

OTHER = "(other)"
"""Module name of ops run outside every module (loss, optimizer, user code)."""

ROOT = "(root)"
"""Module name of ops run by the profiled module itself, outside its children."""

_FULL_FORMATS = frozenset({NumberFormat.FP64, NumberFormat.FP32})

_T = TypeVar("_T", bound="_Totals")


@dataclass(frozen=True)
class _Totals:
    """Additive totals of a group of aten calls (numbers become floats once scaled)."""

    calls: float = 0
    tos: float = 0.0
    flops: float = 0
    bytes_read: float = 0
    bytes_written: float = 0
    kernels: float = 0

    @property
    def bytes(self) -> float:
        """Bytes read plus bytes written."""
        return self.bytes_read + self.bytes_written

    def __add__(self: _T, other: _T) -> _T:
        if not isinstance(other, type(self)):
            return NotImplemented
        return type(self)(
            **{
                f.name: _combine(getattr(self, f.name), getattr(other, f.name))
                for f in fields(self)
            }
        )

    def scaled(self: _T, k: float) -> _T:
        """These totals times ``k`` (a step repeated ``k`` times)."""
        return type(self)(**{f.name: _scale(getattr(self, f.name), k) for f in fields(self)})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the fields plus ``bytes``."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["bytes"] = self.bytes
        return d


def _combine(a: Any, b: Any) -> Any:
    return a and b if isinstance(a, bool) else a + b


def _scale(a: Any, k: float) -> Any:
    return a if isinstance(a, bool) else a * k


@dataclass(frozen=True)
class PhaseTotals(_Totals):
    """Totals of one phase of a step (forward, backward, optimizer, other)."""


@dataclass(frozen=True)
class ModuleTotals(_Totals):
    """Totals of the ops a module ran itself, outside its children (so modules sum to the step)."""


@dataclass(frozen=True)
class OpTotals(_Totals):
    """Totals of one aten op packet; ``modelled`` is False for the fallback estimate."""

    modelled: bool = True


def _sum_maps(a: Mapping[Any, Any], b: Mapping[Any, Any]) -> dict[Any, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out[k] + v if k in out else v
    return out


@dataclass(frozen=True)
class StepProfile:
    """The counted cost of one step.

    Args:
        counts: ALU operations by (operation class, number format, unit).
        tos_by_key: transistor operations by the same keys (counts weighted by the cost model).
        flops: FLOPs as ``torch.utils.flop_counter.FlopCounterMode`` counts them.
        bytes_read: bytes read by kernels (logical tensor sizes).
        bytes_written: bytes written by kernels.
        kernels: kernels launched (one per modelled aten call unless its formula says otherwise).
        by_phase: totals per phase; always has the keys of :data:`PHASES`.
        by_module: totals per module name (dotted, :data:`ROOT` for the root, :data:`OTHER`
            outside any module); each op belongs to its innermost module, so they sum to the step.
        by_op: totals per aten op packet name (``"aten.mm"``).
        unmodelled_ops: calls per aten op that had no formula and got the fallback estimate.
        op_costs: every distinct :class:`~lightning_to_energy.counting.registry.OpCost` the step
            ran, with its number of calls (summed over phases and modules): per-kernel ops,
            bytes and kernels, as a roofline estimate needs them. Left out of :meth:`to_dict`
            (it can be long) and of ``==`` (it splits the same work as ``counts``).

    Example:
        >>> import torch
        >>> from lightning_to_energy.counting import profile
        >>> p = profile(torch.nn.Linear(4, 3), torch.randn(2, 4))
        >>> p.flops  # 2 * (2 * 3 * 4)
        48
    """

    counts: Mapping[OpKey, float] = field(default_factory=dict)
    tos_by_key: Mapping[OpKey, float] = field(default_factory=dict)
    flops: float = 0
    bytes_read: float = 0
    bytes_written: float = 0
    kernels: float = 0
    by_phase: Mapping[str, PhaseTotals] = field(
        default_factory=lambda: {p: PhaseTotals() for p in PHASES}
    )
    by_module: Mapping[str, ModuleTotals] = field(default_factory=dict)
    by_op: Mapping[str, OpTotals] = field(default_factory=dict)
    unmodelled_ops: Mapping[str, int] = field(default_factory=dict)
    op_costs: tuple[tuple[OpCost, float], ...] = field(default=(), compare=False, repr=False)

    # --- derived figures ---------------------------------------------------------------------

    @cached_property
    def tos(self) -> float:
        """Total transistor operations."""
        return math.fsum(self.tos_by_key.values())

    @property
    def bytes(self) -> float:
        """Bytes read plus bytes written."""
        return self.bytes_read + self.bytes_written

    @cached_property
    def tos_by_class(self) -> Mapping[AluOp, float]:
        """TOs by ALU operation class."""
        return _group(self.tos_by_key, 0)

    @cached_property
    def tos_by_format(self) -> Mapping[NumberFormat, float]:
        """TOs by number format."""
        return _group(self.tos_by_key, 1)

    @cached_property
    def tos_by_unit(self) -> Mapping[Unit, float]:
        """TOs by hardware unit class."""
        return _group(self.tos_by_key, 2)

    @cached_property
    def tos_matrix_full(self) -> float:
        """Matrix-unit TOs in full precision (fp64, fp32)."""
        return math.fsum(
            v for (_, f, u), v in self.tos_by_key.items() if u is Unit.MATRIX and f in _FULL_FORMATS
        )

    @cached_property
    def tos_matrix_reduced(self) -> float:
        """Matrix-unit TOs in every other format (tf32, bf16, fp16, fp8, integers)."""
        return math.fsum(
            v
            for (_, f, u), v in self.tos_by_key.items()
            if u is Unit.MATRIX and f not in _FULL_FORMATS
        )

    @cached_property
    def tos_matrix_tf32(self) -> float:
        """Matrix-unit TOs in TF32 (fp32 matmuls and convolutions on tensor cores)."""
        return math.fsum(
            v
            for (_, f, u), v in self.tos_by_key.items()
            if u is Unit.MATRIX and f is NumberFormat.TF32
        )

    @cached_property
    def tos_matrix_low(self) -> float:
        """Matrix-unit TOs in 16-bit and narrower formats (bf16, fp16, fp8, integers)."""
        return self.tos_matrix_reduced - self.tos_matrix_tf32

    @cached_property
    def tos_vector(self) -> float:
        """Vector-unit TOs."""
        return math.fsum(v for (_, _, u), v in self.tos_by_key.items() if u is Unit.VECTOR)

    # --- arithmetic --------------------------------------------------------------------------

    def __add__(self, other: StepProfile) -> StepProfile:
        """The cost of running both steps."""
        if not isinstance(other, StepProfile):
            return NotImplemented
        return StepProfile(
            counts=_sum_maps(self.counts, other.counts),
            tos_by_key=_sum_maps(self.tos_by_key, other.tos_by_key),
            flops=self.flops + other.flops,
            bytes_read=self.bytes_read + other.bytes_read,
            bytes_written=self.bytes_written + other.bytes_written,
            kernels=self.kernels + other.kernels,
            by_phase=_sum_maps(self.by_phase, other.by_phase),
            by_module=_sum_maps(self.by_module, other.by_module),
            by_op=_sum_maps(self.by_op, other.by_op),
            unmodelled_ops=_sum_maps(self.unmodelled_ops, other.unmodelled_ops),
            op_costs=_merge_op_costs(self.op_costs, other.op_costs),
        )

    def scaled(self, k: float) -> StepProfile:
        """The cost of this step run ``k`` times (``k`` may be fractional, e.g. an average).

        Unmodelled call counts stay whole numbers, rounded up.
        """
        return StepProfile(
            counts={key: v * k for key, v in self.counts.items()},
            tos_by_key={key: v * k for key, v in self.tos_by_key.items()},
            flops=self.flops * k,
            bytes_read=self.bytes_read * k,
            bytes_written=self.bytes_written * k,
            kernels=self.kernels * k,
            by_phase={name: t.scaled(k) for name, t in self.by_phase.items()},
            by_module={name: t.scaled(k) for name, t in self.by_module.items()},
            by_op={name: t.scaled(k) for name, t in self.by_op.items()},
            # whole calls, rounded up: an unmodelled op stays flagged in a fractional average
            unmodelled_ops={name: math.ceil(n * k) for name, n in self.unmodelled_ops.items()},
            op_costs=tuple((cost, calls * k) for cost, calls in self.op_costs),
        )

    @classmethod
    def sum(cls, profiles: Iterable[StepProfile]) -> StepProfile:
        """The sum of ``profiles`` (an empty profile for none)."""
        total = cls()
        for p in profiles:
            total = total + p
        return total

    def same_work(self, other: StepProfile, rel_tol: float = 1e-9) -> bool:
        """True if ``other`` counts the same work: same ops, bytes, kernels and unmodelled calls.

        Module and op breakdowns are not compared: they only split the same totals.
        """
        if set(self.counts) != set(other.counts) or dict(self.unmodelled_ops) != dict(
            other.unmodelled_ops
        ):
            return False
        pairs = [(self.counts[k], other.counts[k]) for k in self.counts]
        pairs += [
            (self.flops, other.flops),
            (self.bytes_read, other.bytes_read),
            (self.bytes_written, other.bytes_written),
            (self.kernels, other.kernels),
        ]
        return all(math.isclose(a, b, rel_tol=rel_tol) for a, b in pairs)

    # --- output ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict: totals, TOs by class/format/unit, phases, modules, ops, counts."""
        return {
            "tos": self.tos,
            "flops": self.flops,
            "bytes": self.bytes,
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "kernels": self.kernels,
            "tos_matrix_full": self.tos_matrix_full,
            "tos_matrix_reduced": self.tos_matrix_reduced,
            "tos_matrix_tf32": self.tos_matrix_tf32,
            "tos_matrix_low": self.tos_matrix_low,
            "tos_vector": self.tos_vector,
            "by_class": {k.value: v for k, v in self.tos_by_class.items()},
            "by_format": {k.value: v for k, v in self.tos_by_format.items()},
            "by_unit": {k.value: v for k, v in self.tos_by_unit.items()},
            "by_phase": {k: v.to_dict() for k, v in self.by_phase.items()},
            "by_module": {k: v.to_dict() for k, v in self.by_module.items()},
            "by_op": {k: v.to_dict() for k, v in self.by_op.items()},
            "unmodelled_ops": dict(self.unmodelled_ops),
            "counts": {":".join(part.value for part in k): v for k, v in self.counts.items()},
        }


def _merge_op_costs(
    a: tuple[tuple[OpCost, float], ...], b: tuple[tuple[OpCost, float], ...]
) -> tuple[tuple[OpCost, float], ...]:
    """``a`` and ``b`` merged: the calls of the same ``OpCost`` object add, order is kept."""
    if not b:
        return a
    if not a:
        return b
    # by id: the counter memoises costs, so a step replayed shares its OpCost objects, and
    # hashing an OpCost (a dataclass holding a dict) is neither possible nor cheap
    merged: dict[int, list[Any]] = {id(cost): [cost, calls] for cost, calls in a}
    for cost, calls in b:
        item = merged.get(id(cost))
        if item is None:
            merged[id(cost)] = [cost, calls]
        else:
            item[1] += calls
    return tuple((cost, calls) for cost, calls in merged.values())


def _group(tos_by_key: Mapping[OpKey, float], part: int) -> dict[Any, float]:
    out: dict[Any, float] = {}
    for key, v in tos_by_key.items():
        out[key[part]] = out.get(key[part], 0.0) + v
    return out


class ProfileSum:
    """A running sum of step profiles where adding a step costs a dict update.

    Replayed steps reuse the same few :class:`StepProfile` objects, so the sum keeps a
    multiplicity per distinct profile and only builds the summed profile when asked.

    Example:
        >>> window = ProfileSum()
        >>> window.add(step_profile)  # doctest: +SKIP
        >>> window.total().tos  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._items: dict[int, list[Any]] = {}  # id(profile) -> [profile, multiplicity]
        self.steps: float = 0

    def add(self, profile: StepProfile, times: float = 1) -> None:
        """Add ``profile`` ``times`` times."""
        item = self._items.get(id(profile))
        if item is None:
            self._items[id(profile)] = [profile, times]
        else:
            item[1] += times
        self.steps += times

    def clear(self) -> None:
        """Forget every step."""
        self._items.clear()
        self.steps = 0

    def scalar(self, name: str) -> float:
        """The sum of one scalar attribute (``"tos"``, ``"bytes"``, ``"tos_vector"``...)."""
        return math.fsum(getattr(p, name) * n for p, n in self._items.values())

    def total(self) -> StepProfile:
        """The summed profile of every step added."""
        return StepProfile.sum(p if n == 1 else p.scaled(n) for p, n in self._items.values())
