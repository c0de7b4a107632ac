"""The op counter: a dispatch mode that costs every aten call of a step.

A ``TorchDispatchMode`` sees every aten op a step runs: functional calls, the backward
kernels autograd runs, ``_foreach_*`` and fused optimizer ops. For each one the counter finds
the formula registered for the op's packet and adds its ALU ops, bytes and kernels to the
bucket of (phase, module, op). TOs are weighed with the cost model once, at :meth:`stop`.

Ops without a formula get a flagged fallback estimate (one add per output element, every
input read and every output written, one kernel) and are listed in ``unmodelled_ops``.
Composite ops without a formula are decomposed first, so their parts are counted instead.

Phases: "backward" for ops that autograd's engine runs, "optimizer" for ops inside
``Optimizer.step()``, else the phase the caller set.

Module attribution: global module forward pre/post hooks (present only while counting) keep
a stack of the counted model's submodules during forward, and record at which autograd
sequence number each module started and ended.
During backward the counter asks autograd which graph node is running
(``torch._C._current_autograd_node``) and attributes the op to the module that created that
node in forward. This needs no backward hooks, so it is robust to in-place ops, modules
whose inputs need no grad, and outputs that are not tensors.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from collections.abc import Callable
from typing import Any

import torch
from torch.nn.modules.module import (
    register_module_forward_hook,
    register_module_forward_pre_hook,
)
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from lightning_to_energy.counting import formulas as _formulas  # noqa: F401  (registers them)
from lightning_to_energy.counting.cost_model import AluOp, CostModel, Unit, as_cost_model
from lightning_to_energy.counting.formulas.zero import is_free
from lightning_to_energy.counting.profile import (
    OTHER,
    PHASES,
    ROOT,
    ModuleTotals,
    OpTotals,
    PhaseTotals,
    StepProfile,
)
from lightning_to_energy.counting.registry import (
    SPECIAL_FLOATS,
    OpCall,
    OpCost,
    OpKey,
    dtype_format,
    formula_for,
    is_value_dependent,
    nbytes,
    registry_version,
    tensors_of,
    tf32_allowed,
)
from lightning_to_energy.counting.target import CountTarget, MetaCountingError, active_target
from lightning_to_energy.notices import warn as _notify

RECOMPUTE = " (recompute)"
"""Suffix of the module names that forward ops recomputed in backward are charged to
(activation checkpointing): ``"blocks.0.mlp (recompute)"``."""

__all__ = [
    "RECOMPUTE",
    "MetaErrors",
    "OpCounter",
    "fallback_cost",
    "uncompiled",
]

# Both exist in the torch releases this package supports; without them (a future rename)
# backward ops keep the caller's phase and go to "(other)" rather than break counting.
_current_node: Callable[[], Any] = getattr(torch._C, "_current_autograd_node", lambda: None)
_next_sequence_nr: Callable[[], int] = getattr(torch._C._autograd, "_get_sequence_nr", lambda: 0)

# How the mode handles an overload, decided once per overload: skip it (free ops), decompose
# it (composite ops without a formula), count it with a memoised formula, or count it afresh
# every call (formulas that read tensor values).
_SKIP, _DECOMPOSE, _COUNT, _COUNT_FRESH = 0, 1, 2, 3

# (kind, formula, packet name, memo of the formula's results by call metadata)
_Plan = tuple[int, Callable[[OpCall], OpCost], str, dict[tuple[Any, ...], OpCost]]

# Plans by id(OpOverload), and through them memoised formula results, per state of the TF32
# flags (formulas may read them), of the count target (formulas ask registry.on_cuda) and of
# the registry (formulas may be added at any time).
_PLANS: dict[tuple[Any, ...], dict[int, _Plan]] = {}
_MEMO_CALLS = 10_000  # distinct calls remembered per overload before starting afresh


def _meta(x: Any) -> Any:
    """What a formula may depend on in one argument or output: metadata, never values."""
    if isinstance(x, torch.Tensor):
        # NB: devices only as CUDA or not (what matmul_format asks); hashing a device is slow
        return (x.shape, x.dtype, x.stride(), x.is_cuda)
    if isinstance(x, (list, tuple)):
        return tuple(map(_meta, x))
    if type(x) is float and x not in SPECIAL_FLOATS:
        return float  # see registry.SPECIAL_FLOATS
    return x


def _kwargs_meta(kwargs: dict[str, Any]) -> tuple[Any, ...]:
    return tuple((k, _meta(v)) for k, v in kwargs.items()) if kwargs else ()


def _plan_table() -> dict[int, _Plan]:
    state = (
        registry_version(),
        active_target(),
        tf32_allowed(conv=False),
        tf32_allowed(conv=True),
        tf32_allowed(conv=False, rnn=True),
    )
    table = _PLANS.get(state)
    if table is None:
        _PLANS.clear()  # the older states are unlikely to come back
        table = _PLANS[state] = {}
    return table


def uncompiled(module: Any) -> Any:
    """The eager module behind a ``torch.compile``d one (``OptimizedModule._orig_mod``).

    A dispatch mode forces a compiled module to run eagerly anyway; counting the eager
    module keeps its submodule names free of the ``_orig_mod.`` prefix. Anything else is
    returned unchanged.
    """
    orig = getattr(module, "_orig_mod", None)
    if orig is not None and type(module).__name__ == "OptimizedModule":
        return orig
    return module


def fallback_cost(call: OpCall) -> OpCost:
    """The flagged estimate for an op without a formula.

    One ADD per element of the first tensor output, in that output's format, on the vector
    unit; every tensor argument read and every tensor output written; one kernel. FLOPs are
    ``FlopCounterMode``'s where it has a formula for the op.
    """
    outs = [call.out] if isinstance(call.out, torch.Tensor) else tensors_of(_as_seq(call.out))
    ops: dict[OpKey, float] = {}
    if outs:
        ops[(AluOp.ADD, dtype_format(outs[0].dtype), Unit.VECTOR)] = float(outs[0].numel())
    read = sum(map(nbytes, tensors_of(call.args))) + sum(
        map(nbytes, tensors_of(call.kwargs.values()))
    )
    flop_fn = flop_registry.get(call.packet)
    flops = int(flop_fn(*call.args, out_val=call.out, **call.kwargs)) if flop_fn else 0
    return OpCost(ops, read, sum(map(nbytes, outs)), 1, flops, modelled=False)


_FAILED: set[str] = set()  # ops whose formula raised, warned about once


def _apply(formula: Callable[[OpCall], OpCost], call: OpCall) -> OpCost:
    """``formula(call)``; if it raises, warn once and use the fallback: never break a step."""
    try:
        return formula(call)
    except Exception as exc:
        name = str(call.func)
        if name not in _FAILED:
            _FAILED.add(name)
            _notify(
                f"lightning-to-energy: the formula for {name} raised {type(exc).__name__}: "
                f"{exc}; expected it to cost the call. Counting it with the fallback estimate "
                "(listed in unmodelled_ops). Please report this with the op's arguments.",
                stacklevel=2,
            )
        if formula is fallback_cost:
            return OpCost(modelled=False)
        return _apply(fallback_cost, call)


def _as_seq(x: Any) -> tuple[Any, ...]:
    return tuple(x) if isinstance(x, (list, tuple)) else ()


_COMPOSITE = torch._C.DispatchKey.CompositeImplicitAutograd


def _decompose(func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run ``func``'s C++ composite kernel, whose parts then reach the mode one by one.

    Not ``func.decompose()``: that prefers the Python decompositions registered for tracing
    (``torch._decomp``), which differ from what eager PyTorch runs: ``dropout`` in eval
    returns ``input.clone()`` there (an extra copy kernel) where the C++ kernel returns the
    input itself, and ``gru`` or ``upsample_bicubic2d`` are rebuilt from other ops.
    """
    op_dk = getattr(func, "_op_dk", None)
    if op_dk is None:  # a torch without the private entry point: the public one
        return func.decompose(*args, **kwargs)
    return op_dk(_COMPOSITE, *args, **kwargs)


def _has_decomposition(func: torch._ops.OpOverload) -> bool:
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(
            func.name(), "CompositeImplicitAutograd"
        )
    except RuntimeError:
        return False


def _run_on_meta(func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``func(*args, **kwargs)`` while counting for a target, on meta tensors.

    An in-place op that returns nothing and has no meta kernel (the fused optimizer kernels
    ``_fused_adamw_``, ``_fused_sgd_``...) is skipped: on meta there is nothing to compute,
    and its formula reads only its arguments. Any other op that cannot run on meta (a
    data-dependent shape, ``.item()``, a custom op without a meta kernel) raises
    :class:`MetaCountingError` naming it.
    """
    try:
        return func(*args, **kwargs)
    except NotImplementedError as exc:
        if not func._schema.returns and func._schema.is_mutable:
            return None
        raise MetaCountingError(str(func), _first_line(exc)) from exc
    except RuntimeError as exc:
        text = str(exc)
        if "meta" not in text.lower() and "data-dependent" not in text.lower():
            raise  # an error of the model itself (a shape mismatch): the user's to see
        raise MetaCountingError(str(func), _first_line(exc)) from exc


class MetaErrors(TorchDispatchMode):
    """A dispatch mode that only names the op an uncounted meta step fails on.

    The warm-up step of a count for a target runs outside the counter; under this mode an op
    without a meta kernel raises :class:`MetaCountingError` naming it, as in the counted step.
    """

    def __torch_dispatch__(
        self,
        func: torch._ops.OpOverload,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        return _run_on_meta(func, args, kwargs or {})


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class _CountingMode(TorchDispatchMode):
    """The dispatch mode proper; all state lives in its :class:`OpCounter`.

    The hot path avoids per-op Python objects where it can: the plan of an overload is
    looked up by ``id(func)`` (``OpOverload.__hash__`` is Python code), a formula's result
    is memoised by the call's metadata, and a step's running total is a multiplicity per
    (phase, module, op, memoised cost) rather than sums of every field.
    """

    def __init__(self, counter: OpCounter) -> None:
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(
        self,
        func: torch._ops.OpOverload,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        if kwargs is None:
            kwargs = {}
        counter = self.counter
        plan = counter._plans.get(id(func))
        if plan is None:
            plan = counter._plan(func)
        kind, formula, name, memo = plan
        if kind == _SKIP:
            if counter._target is not None:
                return _run_on_meta(func, args, kwargs)
            return func(*args, **kwargs)
        if kind == _DECOMPOSE:
            with self:
                out = _decompose(func, args, kwargs)
            if out is not NotImplemented:
                return out
            kind, formula, name, memo = counter._plans[id(func)] = counter._fallback_plan(func)
        target = counter._target
        out = func(*args, **kwargs) if target is None else _run_on_meta(func, args, kwargs)
        if kind == _COUNT:
            # formulas are pure functions of the call's metadata: memoise them by it
            try:
                key = (*map(_meta, args), _meta(out), *_kwargs_meta(kwargs))
                cost = memo[key]
            except KeyError:
                cost = memo[key] = _apply(formula, OpCall(func, args, kwargs, out))
            except Exception:  # metadata we cannot hash (sparse strides, opaque objects)
                cost = _apply(formula, OpCall(func, args, kwargs, out))
        else:
            cost = _apply(formula, OpCall(func, args, kwargs, out))

        node = _current_node()
        if node is None:
            key = (counter._phase, counter._stack[-1], name, id(cost))
        elif len(counter._stack) > 1:
            # a module's forward running inside backward: activation checkpointing recomputing
            # it. Charged to the module that runs it, as recompute (not to the module whose
            # backward asked for it).
            key = ("backward", counter._stack[-1] + RECOMPUTE, name, id(cost))
        else:
            # inside autograd's backward engine, whatever phase the caller declared
            key = ("backward", counter._module_of_node(node), name, id(cost))
        entry = counter._tally.get(key)
        if entry is None:
            # the entry keeps ``cost`` alive, so its id stays unique while counting
            counter._tally[key] = [cost, 1]
        else:
            entry[1] += 1
        return out


class OpCounter:
    """Counts the ALU operations, bytes and kernels of the aten ops run between start and stop.

    Args:
        cost_model: weighs ALU operations into transistor operations: a :class:`CostModel`,
            a TOML/JSON cost file (:meth:`CostModel.from_file`), or None for the default.
        module: the model whose submodules ops are attributed to (``by_module``); without one
            every op is attributed to ``"(other)"``. Hooks are attached only while counting.

    Phases need no help in a plain loop: ops run by autograd's backward engine go to
    "backward" and ops inside any ``Optimizer.step()`` to "optimizer" (global optimizer hooks,
    present only while counting); the rest go to the phase last set with :meth:`set_phase`
    ("forward" at start).

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(4, 3)
        >>> with OpCounter(module=model) as counter:
        ...     loss = model(torch.randn(2, 4)).sum()
        ...     counter.set_phase("backward")
        ...     loss.backward()
        >>> counter.profile.by_phase["backward"].flops > 0
        True
    """

    def __init__(
        self, cost_model: CostModel | str | os.PathLike[str] | None = None, module: Any = None
    ) -> None:
        self.cost_model = as_cost_model(cost_model)
        self.module = uncompiled(module) if module is not None else None
        self.profile: StepProfile | None = None
        self._mode: _CountingMode | None = None
        self._hooks: list[Any] = []
        self._names: dict[int, str] = {}  # id(submodule) -> dotted name, while counting
        self._plans: dict[int, _Plan] = {}  # by id(OpOverload)
        self._tally: dict[tuple[str, str, str, int], list[Any]] = {}  # -> [OpCost, calls]
        self._phase = "forward"
        self._phase_before_step = "forward"
        self._target: CountTarget | None = None
        self._stack: list[str] = [OTHER]
        # module boundaries in forward: autograd sequence number -> innermost module from there
        self._seq_marks: list[int] = []
        self._seq_modules: list[str] = []

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._mode is not None

    def start(self) -> OpCounter:
        """Attach module hooks and start counting.

        Raises:
            RuntimeError: the counter is already counting.
        """
        if self._mode is not None:
            raise RuntimeError(
                "OpCounter.start(): expected a stopped counter; found one already counting. "
                "Call stop() first or use a new OpCounter."
            )
        self._tally = {}
        self._target = active_target()
        self._plans = _plan_table()
        for plan in self._plans.values():
            if len(plan[3]) > _MEMO_CALLS:  # e.g. a new sequence length every step
                plan[3].clear()
        self._phase = "forward"
        self._stack = [OTHER]
        self._seq_marks, self._seq_modules = [], []
        self.profile = None
        if self.module is not None:
            self._attach_hooks(self.module)
        self._hooks.append(register_optimizer_step_pre_hook(self._optimizer_enter))
        self._hooks.append(register_optimizer_step_post_hook(self._optimizer_exit))
        self._mode = _CountingMode(self)
        self._mode.__enter__()
        return self

    def set_phase(self, name: str) -> None:
        """Attribute the ops that follow to phase ``name``.

        Raises:
            ValueError: ``name`` is not one of "forward", "backward", "optimizer", "other".
        """
        if name not in PHASES:
            raise ValueError(
                f"expected a phase in {PHASES}; found {name!r}. Use one of those names."
            )
        self._phase = name

    def stop(self) -> StepProfile:
        """Stop counting, remove the hooks and return the step's profile.

        Raises:
            RuntimeError: the counter was not started.
        """
        if self._mode is None:
            raise RuntimeError(
                "OpCounter.stop(): expected a started counter; found none. Call start() first."
            )
        mode, self._mode = self._mode, None
        try:
            mode.__exit__(None, None, None)
        finally:
            self._detach_hooks()
        self.profile = self._build_profile()
        return self.profile

    def __enter__(self) -> OpCounter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self._mode is not None:
            self.stop()

    # --- per-op plans ---------------------------------------------------------------------

    def _plan(self, func: torch._ops.OpOverload) -> _Plan:
        packet = func.overloadpacket
        formula = formula_for(packet)
        if formula is None:
            plan = self._fallback_plan(func)
            if _has_decomposition(func):
                plan = (_DECOMPOSE, *plan[1:])
        elif is_free(formula):
            plan = (_SKIP, formula, str(packet), {})
        elif is_value_dependent(packet):
            plan = (_COUNT_FRESH, formula, str(packet), {})
        else:
            plan = (_COUNT, formula, str(packet), {})
        self._plans[id(func)] = plan
        return plan

    def _fallback_plan(self, func: torch._ops.OpOverload) -> _Plan:
        return (_COUNT, fallback_cost, str(func.overloadpacket), {})

    # --- module attribution ---------------------------------------------------------------

    def _attach_hooks(self, root: torch.nn.Module) -> None:
        # Global module hooks rather than hooks on each submodule: some modules change what
        # they run when they see hooks of their own (nn.TransformerEncoderLayer leaves its
        # fused fast path), and a counted step must run what an uncounted one runs.
        self._names = {id(mod): name or ROOT for name, mod in root.named_modules()}
        self._hooks.append(register_module_forward_pre_hook(self._enter_hook))
        self._hooks.append(register_module_forward_hook(self._exit_hook, always_call=True))

    def _enter_hook(self, module: torch.nn.Module, args: Any) -> None:
        label = self._names.get(id(module))
        if label is not None:  # modules outside the counted model (a loss, a metric) pass
            self._stack.append(label)
            self._mark()

    def _exit_hook(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        label = self._names.get(id(module))
        if label is not None:
            stack = self._stack
            # tolerate unbalanced hooks (a forward that raised before its peers' hooks ran)
            if len(stack) > 1 and stack[-1] == label:
                stack.pop()
            self._mark()

    def _optimizer_enter(self, optimizer: Any, args: Any, kwargs: Any) -> Any:
        self._phase_before_step = self._phase
        self._phase = "optimizer"
        # ``optimizer.step(closure)`` (LBFGS, Lightning's automatic optimization) runs the
        # forward and backward inside the step: give the closure's ops the phase declared
        # before the step, and return to "optimizer" for the update that follows.
        # ``args`` starts with the optimizer itself: step(self, closure=None).
        closure = kwargs["closure"] if "closure" in kwargs else (args[1] if len(args) > 1 else None)
        if not callable(closure):
            return None

        def counted_closure() -> Any:
            self._phase = self._phase_before_step
            try:
                return closure()
            finally:
                self._phase = "optimizer"

        if "closure" in kwargs:
            return args, {**kwargs, "closure": counted_closure}
        return (args[0], counted_closure, *args[2:]), kwargs

    def _optimizer_exit(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._phase = self._phase_before_step

    def _mark(self) -> None:
        seq = _next_sequence_nr()
        if self._seq_marks and self._seq_marks[-1] == seq:
            self._seq_modules[-1] = self._stack[-1]
        else:
            self._seq_marks.append(seq)
            self._seq_modules.append(self._stack[-1])

    def _module_of_node(self, node: Any) -> str:
        # The node was created in forward with this sequence number; the last mark at or
        # before it names the module that was innermost then.
        i = bisect_right(self._seq_marks, node._sequence_nr()) - 1
        return self._seq_modules[i] if i >= 0 else OTHER

    def _detach_hooks(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        self._names = {}

    # --- the profile ----------------------------------------------------------------------

    def _build_profile(self) -> StepProfile:
        tos_of = self.cost_model.tos
        unit_tos: dict[OpKey, float] = {}
        counts: dict[OpKey, float] = {}
        rows: dict[str, dict[str, list[tuple[float, ...]]]] = {"phase": {}, "module": {}, "op": {}}
        unmodelled: dict[str, int] = {}
        op_costs: dict[int, list[Any]] = {}  # id(cost) -> [OpCost, calls over phases, modules]
        for (phase, module, name, cost_id), (cost, calls) in self._tally.items():
            item = op_costs.get(cost_id)
            if item is None:
                op_costs[cost_id] = [cost, calls]
            else:
                item[1] += calls
            tos = 0.0
            for key, n in cost.ops.items():
                per_op = unit_tos.get(key)
                if per_op is None:
                    per_op = unit_tos[key] = tos_of(key[0], key[1])
                tos += n * per_op
                counts[key] = counts.get(key, 0.0) + n * calls
            row = (
                calls,
                tos * calls,
                cost.flops * calls,
                cost.bytes_read * calls,
                cost.bytes_written * calls,
                cost.kernels * calls,
            )
            rows["phase"].setdefault(phase, []).append(row)
            rows["module"].setdefault(module, []).append(row)
            rows["op"].setdefault(name, []).append(row)
            if not cost.modelled:
                unmodelled[name] = unmodelled.get(name, 0) + calls

        def totals(
            group: list[tuple[float, ...]],
        ) -> tuple[float, float, float, float, float, float]:
            calls, tos, flops, read, written, kernels = (sum(c) for c in zip(*group, strict=True))
            return calls, tos, flops, read, written, kernels

        by_phase = {p: PhaseTotals(*totals(rows["phase"].get(p, [(0,) * 6]))) for p in PHASES}
        return StepProfile(
            counts=counts,
            tos_by_key={key: n * unit_tos[key] for key, n in counts.items()},
            flops=sum(t.flops for t in by_phase.values()),
            bytes_read=sum(t.bytes_read for t in by_phase.values()),
            bytes_written=sum(t.bytes_written for t in by_phase.values()),
            kernels=sum(t.kernels for t in by_phase.values()),
            by_phase=by_phase,
            by_module={k: ModuleTotals(*totals(v)) for k, v in rows["module"].items()},
            by_op={
                k: OpTotals(*totals(v), modelled=k not in unmodelled) for k, v in rows["op"].items()
            },
            unmodelled_ops=unmodelled,
            op_costs=tuple((cost, calls) for cost, calls in op_costs.values()),
        )
