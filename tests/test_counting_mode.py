"""The op counter: FLOPs against FlopCounterMode, phases, modules, fallbacks, formats, profile()."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from _models import Block, TinyCNN, TinyGPT, TinyMLP
from lightning_to_energy import counting
from lightning_to_energy.counting import OpCounter, StepProfile, profile, uncompiled
from lightning_to_energy.counting.cost_model import AluOp, CostModel, NumberFormat, Unit
from lightning_to_energy.counting.profile import OTHER, PHASES
from lightning_to_energy.counting.registry import (
    DuplicateFormulaError,
    OpCall,
    OpCost,
    formula_for,
    register,
)

FMA, ADD, MUL = AluOp.FMA, AluOp.ADD, AluOp.MUL


def test_public_api() -> None:
    assert counting.__all__ == [
        "ModuleTotals",
        "OpCounter",
        "OpTotals",
        "PhaseTotals",
        "ProfileCache",
        "ProfileSum",
        "StepProfile",
        "StepSignature",
        "profile",
        "uncompiled",
    ]


def _models() -> list[tuple[torch.nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    return [
        (TinyMLP(), torch.randn(8, 16)),
        (TinyCNN(), torch.randn(4, 3, 16, 16)),
        (Block(), torch.randn(2, 10, 32)),
    ]


@pytest.mark.parametrize("index", [0, 1, 2], ids=["mlp", "cnn", "attention"])
def test_flops_equal_flop_counter_mode_on_a_train_step(index: int) -> None:
    model, x = _models()[index]
    p = profile(model, x, train=True)
    with FlopCounterMode(display=False) as fcm:
        model(x).sum().backward()
    assert p.flops == fcm.get_total_flops()
    assert p.flops > 0
    assert p.unmodelled_ops == {}


def test_phases_of_a_train_step_with_an_optimizer() -> None:
    model, x = _models()[1]
    p = profile(model, x, train=True, optimizer="adamw")
    assert set(p.by_phase) == set(PHASES)
    for phase in ("forward", "backward", "optimizer"):
        assert p.by_phase[phase].tos > 0
        assert p.by_phase[phase].kernels > 0
    assert p.by_phase["other"].calls == 0
    # the optimizer step does no matrix work
    assert p.by_phase["optimizer"].flops == 0
    assert math.isclose(sum(t.tos for t in p.by_phase.values()), p.tos, rel_tol=1e-9)
    assert sum(t.bytes for t in p.by_phase.values()) == p.bytes
    assert sum(t.kernels for t in p.by_phase.values()) == p.kernels


def test_phases_need_no_set_phase_in_a_plain_loop() -> None:
    from torch.optim import optimizer as optim_module

    model, x = TinyMLP(), torch.randn(8, 16)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    hooks_before = len(optim_module._global_optimizer_pre_hooks)
    with OpCounter(module=model) as counter:
        model(x).sum().backward()
        opt.step()
        opt.zero_grad()
        x * 2
    assert len(optim_module._global_optimizer_pre_hooks) == hooks_before
    p = counter.profile
    assert p is not None
    assert p.by_phase["backward"].flops > 0
    assert p.by_phase["optimizer"].tos > 0
    # forward: addmm, relu, addmm, sum, the ones_like seeding backward() and, the phase
    # being the caller's again after the optimizer step, the last mul: 6 calls
    assert p.by_phase["forward"].calls == 6
    assert p.by_phase["optimizer"].flops == 0


def test_module_attribution_sums_to_the_total_and_follows_backward() -> None:
    model = TinyMLP()
    x = torch.randn(8, 16)
    p = profile(model, x, train=True, optimizer="sgd")
    assert math.isclose(sum(m.tos for m in p.by_module.values()), p.tos, rel_tol=1e-9)
    assert sum(m.flops for m in p.by_module.values()) == p.flops
    assert sum(m.calls for m in p.by_module.values()) == sum(o.calls for o in p.by_op.values())
    # fc1 ([8, 16] -> [8, 32]): forward addmm 2 * 8 * 32 * 16 = 8192 and, the input needing
    # no grad, only the weight-grad mm in backward: another 8192
    assert p.by_module["fc1"].flops == 16384
    # fc2 ([8, 32] -> [8, 4]): 2 * 8 * 4 * 32 = 2048 forward, grad_input and grad_weight
    assert p.by_module["fc2"].flops == 3 * 2048
    # the loss and the optimizer run outside every module
    assert p.by_module[OTHER].tos >= p.by_phase["optimizer"].tos > 0


def _global_hooks() -> int:
    from torch.nn.modules import module

    return len(module._global_forward_pre_hooks) + len(module._global_forward_hooks)


def test_hooks_exist_only_while_counting() -> None:
    model = TinyGPT()
    before = _global_hooks()
    counter = OpCounter(module=model).start()
    assert _global_hooks() == before + 2
    model(torch.randint(0, 64, (2, 8)))
    counter.stop()
    assert _global_hooks() == before
    # no module carries hooks of its own, even while counting (see the next test)
    for m in model.modules():
        assert not (m._forward_pre_hooks or m._forward_hooks)
        assert not (m._backward_hooks or m._backward_pre_hooks)


def test_counting_keeps_the_transformer_fast_path() -> None:
    layer = torch.nn.TransformerEncoderLayer(32, 4, 64, batch_first=True).eval()
    x = torch.randn(2, 10, 32)
    with torch.inference_mode(), OpCounter(module=layer) as counter:
        layer(x)
    p = counter.profile
    assert p is not None
    # the fused op that uncounted eval steps run, with a formula
    assert set(p.by_op) == {"aten._transformer_encoder_layer_fwd"}
    assert p.unmodelled_ops == {}
    # [20, 32] @ [32, 96] in-projection, attention 8 heads-batches x 10 x 10 x 8 x 2,
    # out-projection [20, 32] @ [32, 32], FFN 2 x [20, 32] x [32, 64]:
    # 61440 + 12800 + 20480 + 81920 = 176640 FMA
    assert p.counts[(FMA, NumberFormat.FP32, Unit.MATRIX)] == 176640
    assert set(p.by_module) == {"(root)"}


def test_counter_misuse_is_reported() -> None:
    counter = OpCounter()
    with pytest.raises(RuntimeError, match="start"):
        counter.stop()
    counter.start()
    try:
        with pytest.raises(RuntimeError, match="already counting"):
            counter.start()
        with pytest.raises(ValueError, match="phase"):
            counter.set_phase("warmup")
    finally:
        counter.stop()
    assert not counter.active


def test_unknown_ops_get_a_flagged_fallback() -> None:
    a = torch.randn(5, 5)
    a = a @ a.T + torch.eye(5)
    with OpCounter() as counter:
        torch.linalg.eigh(a)
    p = counter.profile
    assert p is not None
    assert p.unmodelled_ops == {"aten._linalg_eigh": 1}
    op = p.by_op["aten._linalg_eigh"]
    assert not op.modelled
    # fallback: one ADD per element of the first output (5 eigenvalues), inputs read
    # (25 * 4 B) and outputs written ((5 + 25) * 4 B), one kernel
    assert p.counts == {(ADD, NumberFormat.FP32, Unit.VECTOR): 5}
    assert (op.bytes_read, op.bytes_written, op.kernels) == (100, 120, 1)


@torch.library.custom_op("lte_test::twice", mutates_args=())
def _twice(x: torch.Tensor) -> torch.Tensor:
    return x * 2


def test_custom_library_ops_are_unmodelled_not_lost() -> None:
    x = torch.randn(3, 4)
    with OpCounter() as counter:
        _twice(x)
        _twice(x)
    assert counter.profile is not None
    assert counter.profile.unmodelled_ops == {"lte_test.twice": 2}


def test_duplicate_registration_raises() -> None:
    assert formula_for(torch.ops.aten.mm) is not None
    with pytest.raises(DuplicateFormulaError, match="already registered"):
        register(torch.ops.aten.mm)(lambda call: OpCost())


@torch.library.custom_op("lte_test::scale", mutates_args=())
def _scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    return x * factor


@register(torch.ops.lte_test.scale)
def _scale_formula(call: OpCall) -> OpCost:
    # a test formula that singles out factor == 2.0: one MUL per element, else two
    n = call.args[0].numel()
    per = 1 if call.args[1] == 2.0 else 2
    return OpCost({(MUL, NumberFormat.FP32, Unit.VECTOR): per * n})


def test_memoised_formulas_tell_special_floats_apart() -> None:
    x = torch.randn(10)
    with OpCounter() as counter:
        _scale(x, 2.0)
        _scale(x, 0.3)
        _scale(x, 0.7)
    assert counter.profile is not None
    # 10 (factor 2.0) + 20 + 20 (any other factor)
    assert counter.profile.counts == {(MUL, NumberFormat.FP32, Unit.VECTOR): 50}


def test_recounting_gives_the_same_profile() -> None:
    model, x = _models()[2]
    first = profile(model, x, train=True)
    second = profile(model, x, train=True)
    assert first.same_work(second)
    assert first.counts == second.counts
    assert first.by_module == second.by_module


def test_counting_under_inference_mode_and_no_grad() -> None:
    model = TinyGPT().eval()
    idx = torch.randint(0, 64, (2, 16))
    with torch.inference_mode(), OpCounter(module=model) as inference:
        model(idx)
    with torch.no_grad(), OpCounter(module=model) as no_grad:
        model(idx)
    with torch.inference_mode(), FlopCounterMode(display=False) as fcm:
        model(idx)
    assert inference.profile is not None and no_grad.profile is not None
    # inference mode sends composite ops (linear, layer_norm) to the mode: they are
    # decomposed and counted like under no_grad
    assert "aten.linear" not in inference.profile.by_op
    assert inference.profile.flops == no_grad.profile.flops == fcm.get_total_flops()
    assert inference.profile.same_work(no_grad.profile)
    assert inference.profile.by_phase["backward"].calls == 0


def test_bf16_autocast_costs_fewer_tos_than_fp32() -> None:
    model, x = TinyMLP(), torch.randn(8, 16)
    fp32 = profile(model, x, train=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = profile(model, x, train=True)
    assert (FMA, NumberFormat.BF16, Unit.MATRIX) in bf16.counts
    assert (FMA, NumberFormat.FP32, Unit.MATRIX) not in bf16.counts
    assert bf16.tos < fp32.tos
    assert bf16.tos_matrix_full == 0 < bf16.tos_matrix_reduced
    assert fp32.tos_matrix_reduced == 0 < fp32.tos_matrix_full
    # CPU tensors are never TF32: every reduced matrix TO is a 16-bit one
    assert bf16.tos_matrix_tf32 == 0 and bf16.tos_matrix_low == bf16.tos_matrix_reduced
    # the same matmuls: FLOPs do not see the format
    assert bf16.flops == fp32.flops


def test_inference_mode_runs_and_counts_the_eager_composite_kernels() -> None:
    x = torch.randn(4, 6)
    with torch.inference_mode():
        # dropout in eval returns its input: no kernel. torch._decomp's Python decomposition
        # (what OpOverload.decompose prefers) clones it instead: one copy the real step lacks.
        with OpCounter() as counter:
            y = torch.nn.functional.dropout(x, 0.5, training=False)
        assert y.data_ptr() == x.data_ptr()  # the counted step ran what an uncounted one runs
        assert counter.profile is not None
        assert (counter.profile.kernels, counter.profile.bytes) == (0, 0)
        # reshape of a transposed tensor cannot be a view: it copies, 6 * 4 = 24 fp32
        # elements read and written, 2 * 24 * 4 = 192 bytes, one kernel (as under no_grad)
        with OpCounter() as counter:
            x.t().reshape(-1)
        assert counter.profile is not None
        assert (counter.profile.kernels, counter.profile.bytes) == (1, 192)
        # contiguous of a contiguous tensor is the tensor itself: nothing to count
        with OpCounter() as counter:
            x.contiguous()
        assert counter.profile is not None
        assert (counter.profile.kernels, counter.profile.bytes) == (0, 0)


def test_a_warm_up_inside_autocast_leaves_the_counted_step_its_weight_casts() -> None:
    model, x = torch.nn.Linear(4, 3), torch.randn(2, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        p = profile(model, x, train=True, optimizer="sgd")  # a warm-up step runs first
        again = profile(model, x, train=True, optimizer="sgd")
    # forward casts x [2, 4], the weight [3, 4] and the bias [3] to bf16; backward casts the
    # weight and bias gradients back to fp32: 3 + 2 = 5 casts, as in a loop that enters
    # autocast every step (autocast's weight cache must not carry over from the warm-up)
    assert p.by_op["aten._to_copy"].calls == 5
    # bytes: forward reads fp32 (8 + 12 + 3) * 4 = 92 and writes bf16 23 * 2 = 46; backward
    # reads the bf16 gradients (12 + 3) * 2 = 30 and writes fp32 15 * 4 = 60
    casts = p.by_op["aten._to_copy"]
    assert (casts.bytes_read, casts.bytes_written) == (92 + 30, 46 + 60)
    assert p.same_work(again)


def test_matrix_tos_split_by_format_group() -> None:
    key = (FMA, NumberFormat.TF32, Unit.MATRIX)
    p = StepProfile(
        tos_by_key={
            (FMA, NumberFormat.FP32, Unit.MATRIX): 10.0,
            key: 20.0,
            (FMA, NumberFormat.BF16, Unit.MATRIX): 30.0,
            (FMA, NumberFormat.FP8_E4M3, Unit.MATRIX): 5.0,
            (FMA, NumberFormat.BF16, Unit.VECTOR): 7.0,
        }
    )
    # full 10; reduced 20 + 30 + 5 = 55 = tf32 20 + low (bf16 30 + fp8 5 = 35); vector 7
    assert (p.tos_matrix_full, p.tos_matrix_reduced, p.tos_vector) == (10.0, 55.0, 7.0)
    assert (p.tos_matrix_tf32, p.tos_matrix_low) == (20.0, 35.0)
    assert p.to_dict()["tos_matrix_tf32"] == 20.0


def test_tos_follow_the_cost_model() -> None:
    model, x = TinyMLP(), torch.randn(8, 16)
    base = profile(model, x)
    cm = CostModel.default()
    doubled = cm.with_overrides({"fma:fp32": 2 * cm.tos(FMA, NumberFormat.FP32)})
    p = profile(model, x, cost_model=doubled)
    fma_tos = base.tos_by_key[(FMA, NumberFormat.FP32, Unit.MATRIX)]
    assert math.isclose(p.tos, base.tos + fma_tos, rel_tol=1e-12)


def test_uncompiled_returns_the_eager_module() -> None:
    model = TinyMLP()
    compiled = torch.compile(model, backend="eager")
    assert uncompiled(compiled) is model
    assert uncompiled(model) is model
    p = profile(compiled, torch.randn(8, 16))
    assert set(p.by_module) == {"fc1", "act", "fc2"}


def _state(model: torch.nn.Module) -> dict[str, Any]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_profile_leaves_the_model_and_optimizer_as_they_were() -> None:
    model, x = TinyCNN(), torch.randn(4, 3, 16, 16)
    opt = torch.optim.Adam(model.parameters())
    model(x).sum().backward()
    opt.step()
    before = _state(model)
    grads = [p.grad for p in model.parameters()]
    opt_state = opt.state_dict()["state"][0]["exp_avg"].clone()
    rng = torch.get_rng_state()

    p = profile(model, x, train=True, optimizer=opt)

    assert p.by_phase["optimizer"].tos > 0
    after = _state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(a is b for a, b in zip(grads, (p.grad for p in model.parameters()), strict=True))
    assert torch.equal(opt.state_dict()["state"][0]["exp_avg"], opt_state)
    assert torch.equal(torch.get_rng_state(), rng)


def test_profile_neither_accumulates_into_nor_changes_an_input_gradient() -> None:
    model, x = torch.nn.Linear(4, 3), torch.randn(2, 4, requires_grad=True)
    first = profile(model, x, train=True)
    assert x.grad is None
    # a second call counted the same step plus an add_ of 2 * 4 = 8 elements accumulating
    # into the x.grad that the first call left behind
    assert profile(model, x, train=True).same_work(first)
    assert "aten.add_" not in first.by_op
    g = torch.ones(2, 4)
    x.grad = g
    with_warmup = profile(model, x, train=True, optimizer="sgd")
    assert x.grad is g and torch.equal(g, torch.ones(2, 4))
    assert with_warmup.by_phase["backward"].calls == first.by_phase["backward"].calls


def test_forward_profile_leaves_batch_norm_statistics_alone() -> None:
    model = TinyCNN().train()
    before = _state(model)
    p = profile(model, torch.randn(4, 3, 16, 16))
    assert "aten.native_batch_norm" in p.by_op  # training-mode batch norm ran, and updated
    after = _state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_profile_counts_a_steady_adam_step() -> None:
    model, x = TinyMLP(), torch.randn(8, 16)
    steady = profile(model, x, train=True, optimizer="adam")
    first = profile(model, x, train=True, optimizer="adam", warmup=False)
    # the first step also allocates the moment buffers (zeros_like fills), a steady one not
    assert "aten.zeros_like" in first.by_op
    assert "aten.zeros_like" not in steady.by_op


def test_profile_arguments_are_checked() -> None:
    model, x = TinyMLP(), torch.randn(8, 16)
    with pytest.raises(ValueError, match="train=True"):
        profile(model, x, optimizer="sgd")
    with pytest.raises(ValueError, match="expected optimizer"):
        profile(model, x, train=True, optimizer="lbfgs")
    with pytest.raises(ValueError, match="trainable parameters"):
        profile(lambda t: t * 2, x, train=True, optimizer="sgd")
    with pytest.raises(ValueError, match="loss_fn"):
        profile(lambda t: t.argmax(), x, train=True)


def test_profile_of_a_callable_with_a_loss() -> None:
    w = torch.randn(16, 4, requires_grad=True)
    x, target = torch.randn(8, 16), torch.randn(8, 4)
    p = profile(lambda t: t @ w, x, train=True, loss_fn=torch.nn.functional.mse_loss, target=target)
    # forward mm 2 * 8 * 4 * 16 = 1024; backward: only w needs grad, one more mm of 1024
    assert p.flops == 2048
    assert set(p.by_module) == {OTHER}


def test_step_profile_arithmetic() -> None:
    model, x = TinyMLP(), torch.randn(8, 16)
    p = profile(model, x, train=True)
    double = p + p
    assert math.isclose(double.tos, 2 * p.tos)
    assert double.flops == 2 * p.flops
    assert double.by_phase["forward"].calls == 2 * p.by_phase["forward"].calls
    assert double.by_module["fc1"].bytes == 2 * p.by_module["fc1"].bytes
    assert double.same_work(p.scaled(2))
    half = p.scaled(0.5)
    assert math.isclose(half.tos_vector, p.tos_vector / 2)
    assert StepProfile.sum([p, p, p]).same_work(p.scaled(3))
    assert StepProfile().tos == 0


def test_to_dict_is_json_able_and_complete() -> None:
    import json

    p = profile(TinyMLP(), torch.randn(8, 16), train=True, optimizer="sgd")
    d = json.loads(json.dumps(p.to_dict()))
    for key in (
        "tos",
        "flops",
        "bytes",
        "bytes_read",
        "bytes_written",
        "kernels",
        "by_class",
        "by_format",
        "by_unit",
        "by_phase",
        "by_module",
        "by_op",
        "unmodelled_ops",
    ):
        assert key in d
    assert d["by_phase"]["backward"]["tos"] == p.by_phase["backward"].tos
    assert d["by_class"]["fma"] == p.tos_by_class[FMA]
    assert math.isclose(sum(d["by_unit"].values()), p.tos, rel_tol=1e-9)


@torch.library.custom_op("lte_test::broken", mutates_args=())
def _broken(x: torch.Tensor) -> torch.Tensor:
    return x + 1


@register(torch.ops.lte_test.broken)
def _broken_formula(call: OpCall) -> OpCost:
    raise KeyError("a formula bug")


def test_a_failing_formula_warns_and_never_breaks_the_step() -> None:
    x = torch.randn(2, 3)
    with pytest.warns(RuntimeWarning, match="lte_test.broken"), OpCounter() as counter:
        y = _broken(x)
    assert torch.equal(y, x + 1)
    assert counter.profile is not None
    assert counter.profile.unmodelled_ops == {"lte_test.broken": 1}
    # the fallback estimate: one add per output element, 2 * 3 = 6
    assert counter.profile.counts == {(ADD, NumberFormat.FP32, Unit.VECTOR): 6}


def test_ops_of_an_optimizer_closure_keep_their_forward_and_backward_phases() -> None:
    # optimizer.step(closure) runs forward and backward inside the step (Lightning's automatic
    # optimization, LBFGS): only the update itself belongs to the optimizer phase.
    import torch
    from torch import nn

    from lightning_to_energy.counting import OpCounter

    model = nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(2, 4)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = model(x).sum()
        loss.backward()
        return loss

    with OpCounter(module=model) as counter:
        opt.step(closure=closure)
    p = counter.profile
    assert p is not None
    # forward: addmm 2x4 @ 4x3 = 24 FMAs plus the sum; backward: the two gradient matmuls.
    assert p.by_phase["forward"].flops == 2 * 2 * 4 * 3
    assert p.by_phase["backward"].flops > 0
    assert p.by_phase["optimizer"].flops == 0 and p.by_phase["optimizer"].tos > 0
    # The same with the closure passed positionally.
    with OpCounter(module=model) as counter:
        opt.step(closure)
    assert counter.profile is not None and counter.profile.by_phase["forward"].flops == 48


def test_the_same_network_with_relu_sigmoid_or_gelu_counts_different_tos() -> None:
    # Same shapes, same FLOPs; only the activation differs. Per element relu is one compare,
    # sigmoid an exp, an add and a divide, gelu (erf) a polynomial of several ops: TOs must
    # order relu < sigmoid and differ for all three, while FLOPs stay equal.
    import torch
    from torch import nn

    from lightning_to_energy import profile

    def net(act: nn.Module) -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(32, 64), act, nn.Linear(64, 8))

    x = torch.randn(16, 32)
    tos = {}
    flops = set()
    for name, act in (("relu", nn.ReLU()), ("sigmoid", nn.Sigmoid()), ("gelu", nn.GELU())):
        p = profile(net(act), x, train=True, optimizer="sgd")
        tos[name] = p.tos
        flops.add(p.flops)
    assert len(flops) == 1
    assert len(set(tos.values())) == 3
    assert tos["relu"] < tos["sigmoid"]
