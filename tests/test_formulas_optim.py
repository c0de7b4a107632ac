"""Tests of the optimizer formulas (counting/formulas/optim.py) on the three optimizer paths.

The model is one ``Linear(4, 3)``: a 3x4 weight and a 3-element bias, 15 parameter elements.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from _capture import capture
from lightning_to_energy.counting.cost_model import AluOp, NumberFormat, Unit
from lightning_to_energy.counting.formulas import optim, vector
from lightning_to_energy.counting.registry import OpCall, OpCost, OpKey, formula_for

aten = torch.ops.aten
FP32 = NumberFormat.FP32

PATHS: dict[str, dict[str, bool]] = {
    "foreach": {"foreach": True},
    "for-loop": {"foreach": False},
    "fused": {"fused": True},
}
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd-momentum": lambda params, **kw: torch.optim.SGD(params, lr=0.1, momentum=0.9, **kw),
    "adam": lambda params, **kw: torch.optim.Adam(params, lr=1e-3, **kw),
    "adamw": lambda params, **kw: torch.optim.AdamW(params, lr=1e-3, **kw),
}


def ops(fmt: NumberFormat = FP32, **counts: float) -> dict[OpKey, float]:
    """Expected counts, e.g. ``ops(add=6)`` -> {(ADD, fp32, vector): 6}."""
    return {(AluOp(name), fmt, Unit.VECTOR): float(n) for name, n in counts.items() if n}


def apply(call: OpCall) -> OpCost:
    formula = formula_for(call.packet)
    assert formula is not None, f"no formula registered for {call.packet}"
    return formula(call)


def captured_steps(
    make: Callable[..., torch.optim.Optimizer], path: dict[str, bool], steps: int = 2
) -> list[list[OpCall]]:
    """The aten calls of each of ``steps`` optimizer steps on a fresh Linear(4, 3)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = make(model.parameters(), **path)
    found = []
    for _ in range(steps):
        model(torch.randn(5, 4)).sum().backward()
        found.append(capture(opt.step))
    return found


def total(calls: list[OpCall]) -> OpCost:
    costs = [apply(c) for c in calls if str(c.packet).startswith("aten.")]
    return OpCost(
        ops=vector.merge_ops(*(c.ops for c in costs)),
        bytes_read=sum(c.bytes_read for c in costs),
        bytes_written=sum(c.bytes_written for c in costs),
        kernels=sum(c.kernels for c in costs),
    )


@pytest.mark.parametrize("path", PATHS, ids=list(PATHS))
@pytest.mark.parametrize("name", OPTIMIZERS, ids=list(OPTIMIZERS))
def test_every_optimizer_path_is_fully_modelled_and_counts_work(name: str, path: str) -> None:
    for calls in captured_steps(OPTIMIZERS[name], PATHS[path]):
        # every aten op the step emits has a formula (views and allocations: zero.py's free
        # ones); profiler markers outside the aten namespace are the counting mode's concern
        unregistered = {
            str(c.packet)
            for c in calls
            if str(c.packet).startswith("aten.") and formula_for(c.packet) is None
        }
        assert unregistered == set()
        cost = total(calls)
        assert sum(cost.ops.values()) > 0
        assert cost.bytes_written > 0


def test_the_paths_emit_the_ops_we_model() -> None:
    # Checked on torch 2.13 CPU: the three paths really take these ops.
    foreach = {str(c.packet) for c in captured_steps(OPTIMIZERS["adam"], PATHS["foreach"])[1]}
    assert {"aten._foreach_lerp_", "aten._foreach_addcmul_", "aten._foreach_addcdiv_"} <= foreach
    loop = {str(c.packet) for c in captured_steps(OPTIMIZERS["adam"], PATHS["for-loop"])[1]}
    assert {"aten.lerp_", "aten.addcmul_", "aten.addcdiv_", "aten.sqrt"} <= loop
    fused = {str(c.packet) for c in captured_steps(OPTIMIZERS["adamw"], PATHS["fused"])[1]}
    assert "aten._fused_adamw_" in fused
    sgd = {str(c.packet) for c in captured_steps(OPTIMIZERS["sgd-momentum"], PATHS["fused"])[1]}
    assert "aten._fused_sgd_" in sgd


def _fused_call(calls: list[OpCall], packet: Any) -> OpCall:
    found = [c for c in calls if c.packet is packet]
    assert len(found) == 1, f"expected one {packet} call, found {len(found)}"
    return found[0]


def test_fused_adam_matches_the_hand_decomposition() -> None:
    calls = captured_steps(OPTIMIZERS["adam"], PATHS["fused"])[1]
    cost = apply(_fused_call(calls, aten._fused_adam_))
    # per element: m (2 mul, 1 add), v (3 mul, 1 add), denom (1 sqrt, 1 div, 1 add),
    # update (1 mul, 1 div, 1 add) = 6 mul, 4 add, 2 div, 1 sqrt; x 15 elements
    assert cost.ops == ops(mul=90, add=60, div=30, sqrt=15)
    # reads p, g, m, v (4 x 15 x 4 bytes = 240) + 2 fp32 step counters (8); writes p, m, v (180)
    assert (cost.bytes_read, cost.bytes_written, cost.kernels, cost.flops) == (248, 180, 1, 0)


def test_fused_adamw_adds_decoupled_weight_decay() -> None:
    calls = captured_steps(OPTIMIZERS["adamw"], PATHS["fused"])[1]
    cost = apply(_fused_call(calls, aten._fused_adamw_))
    # Adam's 6 mul, 4 add, 2 div, 1 sqrt + p - (lr*wd)*p (1 mul, 1 add; AdamW's default
    # weight_decay is 0.01) = 7 mul, 5 add, 2 div, 1 sqrt; x 15 elements
    assert cost.ops == ops(mul=105, add=75, div=30, sqrt=15)


def test_fused_adam_options_change_the_per_element_counts() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(
        model.parameters(), lr=1e-3, fused=True, amsgrad=True, maximize=True, weight_decay=0.1
    )
    model(torch.randn(5, 4)).sum().backward()
    cost = apply(_fused_call(capture(opt.step), aten._fused_adam_))
    # 6 mul, 4 add, 2 div, 1 sqrt + weight decay (1 mul, 1 add) + maximize (1 add)
    # + amsgrad (1 cmp) = 7 mul, 6 add, 2 div, 1 sqrt, 1 cmp; x 15 elements
    assert cost.ops == ops(mul=105, add=90, div=30, sqrt=15, cmp=15)
    # amsgrad also reads and writes max_exp_avg_sqs: reads 248 + 60, writes 180 + 60
    assert (cost.bytes_read, cost.bytes_written) == (308, 240)


def test_fused_sgd_first_and_later_steps() -> None:
    first, second = captured_steps(OPTIMIZERS["sgd-momentum"], PATHS["fused"])
    one = apply(_fused_call(first, aten._fused_sgd_))
    # first step: buf = g (no arithmetic), p - lr*g (1 mul, 1 add); x 15 elements
    assert one.ops == ops(mul=15, add=15)
    # reads p, g (120 bytes); writes p and the new buffer (120 bytes)
    assert (one.bytes_read, one.bytes_written) == (120, 120)
    two = apply(_fused_call(second, aten._fused_sgd_))
    # later steps: buf = 0.9*buf + 1*g (2 mul, 1 add) + p - lr*buf (1 mul, 1 add) = 3 mul, 2 add
    assert two.ops == ops(mul=45, add=30)


def test_foreach_and_for_loop_adam_count_the_same_arithmetic() -> None:
    foreach = total(captured_steps(OPTIMIZERS["adam"], PATHS["foreach"])[1])
    loop = total(captured_steps(OPTIMIZERS["adam"], PATHS["for-loop"])[1])
    # per element: lerp m (2 add, 1 mul), v *= b2 (1 mul), v += (1-b2)*g*g (2 mul, 1 add),
    # sqrt(v) (1 sqrt), / sqrt(bc2) (1 div), + eps (1 add), p += -step*m/denom (1 div, 1 mul,
    # 1 add) = 5 add, 5 mul, 2 div, 1 sqrt; x 15 elements, + 2 adds for the step counters
    assert foreach.ops == loop.ops == ops(add=77, mul=75, div=30, sqrt=15)
    # the foreach path launches one kernel per op (8 ops), the loop one per op per tensor
    assert foreach.kernels == 8
    assert loop.kernels > foreach.kernels


def test_foreach_sgd_momentum() -> None:
    cost = total(captured_steps(OPTIMIZERS["sgd-momentum"], PATHS["foreach"])[1])
    # buf *= 0.9 (1 mul), buf += g (alpha 1: 1 add), p += -lr*buf (1 mul, 1 add); x 15
    assert cost.ops == ops(mul=30, add=30)


def test_foreach_ops_in_bf16_count_in_bf16() -> None:
    params = [torch.randn(3, 4, dtype=torch.bfloat16), torch.randn(3, dtype=torch.bfloat16)]
    calls = capture(lambda: torch._foreach_mul_(params, 0.5))
    cost = apply(calls[0])
    # 12 + 3 bf16 elements x 1 mul; one (device, dtype) group -> 1 kernel
    assert cost.ops == ops(NumberFormat.BF16, mul=15)
    assert (cost.bytes_read, cost.bytes_written, cost.kernels) == (30, 30, 1)


def test_foreach_out_of_place_scalar_list_and_mixed_groups() -> None:
    xs = [torch.randn(3, 4), torch.randn(3, dtype=torch.float64)]
    cost = apply(capture(lambda: torch._foreach_add(xs, xs, alpha=2.0))[0])
    # x + 2*x: 12 fp32 + 3 fp64 elements x (1 add, 1 mul); 2 (device, dtype) groups
    assert cost.ops == {**ops(add=12, mul=12), **ops(NumberFormat.FP64, add=3, mul=3)}
    assert cost.kernels == 2
    powed = apply(capture(lambda: torch._foreach_pow(xs, 2))[0])
    # x ** 2: 12 + 3 elements x 1 mul
    assert powed.ops == {**ops(mul=12), **ops(NumberFormat.FP64, mul=3)}


def test_clip_grad_norm_foreach_is_modelled() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    model(torch.randn(5, 4)).sum().backward()
    calls = capture(lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True))
    norms = apply(next(c for c in calls if c.packet is aten._foreach_norm))
    # 2-norm of each grad: 15 elements x (1 mul, 1 add) + 2 tensors x 1 sqrt
    assert norms.ops == ops(mul=15, add=15, sqrt=2)
    scale = apply(next(c for c in calls if c.packet is aten._foreach_mul_))
    # grads *= clip coefficient: 15 mul
    assert scale.ops == ops(mul=15)


def test_foreach_zero_and_copy() -> None:
    xs = [torch.randn(3, 4), torch.randn(3)]
    zero = apply(capture(lambda: torch._foreach_zero_(xs))[0])
    # writes 15 fp32 elements (60 bytes), reads nothing, no arithmetic
    assert (zero.ops, zero.bytes_read, zero.bytes_written) == ({}, 0, 60)
    dst = [torch.empty(3, 4, dtype=torch.bfloat16), torch.empty(3, dtype=torch.bfloat16)]
    copied = apply(capture(lambda: torch._foreach_copy_(dst, xs))[0])
    # fp32 -> bf16 cast: 15 x 1 add in bf16; reads 60 bytes, writes 30
    assert copied.ops == ops(NumberFormat.BF16, add=15)
    assert (copied.bytes_read, copied.bytes_written) == (60, 30)


def test_amp_unscale_and_update_scale() -> None:
    grads = [torch.randn(3, 4), torch.randn(3)]
    found_inf, inv_scale = torch.zeros(1), torch.ones(1)
    unscale = apply(
        capture(
            lambda: torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inv_scale)
        )[0]
    )
    # 15 grad elements x (1 mul, 1 cmp)
    assert unscale.ops == ops(mul=15, cmp=15)
    scale, tracker = torch.ones(1), torch.zeros(1, dtype=torch.int32)
    update = apply(
        capture(lambda: torch._amp_update_scale_(scale, tracker, found_inf, 2.0, 0.5, 100))[0]
    )
    # one element: 2 cmp, 1 mul, 1 add
    assert update.ops == ops(cmp=2, mul=1, add=1)


def test_fused_adagrad() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.Adagrad(model.parameters(), lr=0.1, fused=True)
    model(torch.randn(5, 4)).sum().backward()
    calls = capture(opt.step)
    cost = apply(_fused_call(calls, aten._fused_adagrad_))
    # s += g*g (1 mul, 1 add), sqrt(s) + eps (1 sqrt, 1 add), p -= clr*g/std (1 div, 1 mul,
    # 1 add) = 2 mul, 3 add, 1 sqrt, 1 div; x 15 elements
    assert cost.ops == ops(mul=30, add=45, sqrt=15, div=15)


def test_public_helpers() -> None:
    # foreach_packets finds both the out-of-place and the in-place twin
    assert optim.foreach_packets("add") == [aten._foreach_add, aten._foreach_add_]
    assert optim.foreach_packets("no_such_op") == []


# --- mutation-testing follow-ups: each test below failed on a deliberate mutant of optim.py -------


def test_fused_adam_unscales_the_gradient_by_amp_grad_scale() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    # GradScaler hands these to a fused optimizer; its step passes them to the kernel
    opt.grad_scale, opt.found_inf = torch.ones(()), torch.zeros(())  # type: ignore[attr-defined]
    model(torch.randn(5, 4)).sum().backward()
    cost = apply(_fused_call(capture(opt.step), aten._fused_adam_))
    # Adam's 6 mul, 4 add, 2 div, 1 sqrt + g / grad_scale (1 div) = 6 mul, 4 add, 3 div,
    # 1 sqrt; x 15 elements
    assert cost.ops == ops(mul=90, add=60, div=45, sqrt=15)
    # reads 248 bytes (test_fused_adam_matches_the_hand_decomposition) + the two fp32 scalars
    assert cost.bytes_read == 248 + 8


def test_fused_sgd_nesterov_with_weight_decay() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1, fused=True
    )
    steps = []
    for _ in range(2):
        model(torch.randn(5, 4)).sum().backward()
        steps.append(apply(_fused_call(capture(opt.step), aten._fused_sgd_)))
    # first step: weight decay (1 mul, 1 add), buf = g, nesterov g + 0.9*buf (1 mul, 1 add),
    # p - lr*g (1 mul, 1 add) = 3 mul, 3 add; x 15 elements
    assert steps[0].ops == ops(mul=45, add=45)
    # later: + momentum 0.9*buf + 1*g (2 mul, 1 add) = 5 mul, 4 add; x 15 elements
    assert steps[1].ops == ops(mul=75, add=60)
