"""Counting defects found on real model code: weight norm and activation checkpointing."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from lightning_to_energy.counting import profile
from lightning_to_energy.counting.cost_model import AluOp, NumberFormat, Unit
from lightning_to_energy.counting.mode import RECOMPUTE

FP32, VEC = NumberFormat.FP32, Unit.VECTOR


def test_weight_norm_and_its_backward_have_formulas() -> None:
    v = torch.randn(6, 4, 3, requires_grad=True)
    g = torch.randn(6, 1, 1, requires_grad=True)
    p = profile(lambda v, g: torch._weight_norm(v, g, 0).sum(), v, g, train=True)
    assert p.unmodelled_ops == {}
    fwd = p.by_op["aten._weight_norm_interface"]
    bwd = p.by_op["aten._weight_norm_interface_backward"]
    assert (fwd.calls, bwd.calls) == (1, 1)
    # v has 6 * 4 * 3 = 72 elements and 6 norms. Forward: 2 * 72 = 144 mul, 72 add, 6 sqrt,
    # 6 div. Backward: 3 * 72 = 216 mul, 2 * 72 = 144 add, 3 * 6 = 18 div.
    # The step's other ops (sum, its backward's expand/ones) add no mul, sqrt or div.
    assert p.counts[(AluOp.MUL, FP32, VEC)] == 144 + 216
    assert p.counts[(AluOp.SQRT, FP32, VEC)] == 6
    assert p.counts[(AluOp.DIV, FP32, VEC)] == 6 + 18


class _Checkpointed(nn.Module):
    def __init__(self, reentrant: bool) -> None:
        super().__init__()
        self.reentrant = reentrant
        self.inner = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = checkpoint(self.inner, x, use_reentrant=self.reentrant)
        return self.head(h)


@pytest.mark.parametrize("reentrant", [False, True])
def test_checkpoint_recompute_is_charged_to_the_modules_that_ran_it(reentrant: bool) -> None:
    model = _Checkpointed(reentrant)
    x = torch.randn(4, 8, requires_grad=True)
    p = profile(model, x, train=True)
    plain = profile(model.inner, x, train=False)  # the forward that backward recomputes
    # non-reentrant checkpointing stops recomputing once backward's saved tensors are back:
    # inner.2's input comes from inner.1, so only the reentrant form recomputes inner.2
    recomputed_names = ("0", "1", "2") if reentrant else ("0", "1")
    recomputed = {k for k in p.by_module if k.endswith(RECOMPUTE)}
    assert recomputed == {f"inner.{n}{RECOMPUTE}" for n in recomputed_names}
    for name in recomputed_names:
        again, forward = p.by_module[f"inner.{name}{RECOMPUTE}"], plain.by_module[name]
        assert again.tos == pytest.approx(forward.tos)
        assert again.flops == forward.flops
    # the recompute of inner.2 (8 * 16 * 4 = 512 FMA: 1024 FLOPs) is not charged to its backward
    own_backward = p.by_module["inner.2"]
    # inner.2 forward 1024 FLOPs + backward input and weight grads 2 * 1024 = 3072
    assert own_backward.flops == 3072
    assert p.flops == profile(_Checkpointed(reentrant), x, train=True).flops
