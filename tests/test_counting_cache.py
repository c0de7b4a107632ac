"""Step signatures, the profile cache's re-check cadence and summing replayed steps."""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from _models import TinyMLP
from lightning_to_energy.counting import ProfileCache, ProfileSum, StepSignature, profile


@pytest.fixture
def model() -> TinyMLP:
    return TinyMLP()


@pytest.fixture
def restore_tf32() -> Iterator[None]:
    old = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
    )
    yield
    torch.backends.cuda.matmul.allow_tf32 = old[0]
    torch.backends.cudnn.allow_tf32 = old[1]
    torch.set_float32_matmul_precision(old[2])


def sig(batch: object, model: torch.nn.Module | None, **kw: Any) -> StepSignature:
    return StepSignature.capture(batch, model, **kw)


def test_equal_steps_have_equal_hashable_signatures(model: TinyMLP) -> None:
    a = sig((torch.randn(8, 16), torch.randn(8)), model)
    b = sig((torch.randn(8, 16), torch.randn(8)), model)
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    # non-tensor leaves count by type only: ids and strings change every batch
    assert sig({"x": torch.randn(8, 16), "id": 3}, model) == sig(
        {"x": torch.randn(8, 16), "id": 4}, model
    )


def test_signature_follows_batch_shape_dtype_and_structure(model: TinyMLP) -> None:
    base = sig(torch.randn(8, 16), model)
    assert sig(torch.randn(4, 16), model) != base
    assert sig(torch.randn(8, 16, dtype=torch.float64), model) != base
    assert sig([torch.randn(8, 16)], model) != base
    assert sig({"x": torch.randn(8, 16)}, model) != sig({"y": torch.randn(8, 16)}, model)
    nested = {"x": [torch.randn(8, 16), torch.randn(2)], "y": (torch.randn(3),)}
    assert sig(nested, model) == sig(
        {"x": [torch.randn(8, 16), torch.randn(2)], "y": (torch.randn(3),)}, model
    )
    assert sig(nested, model) != sig(
        {"x": [torch.randn(8, 16), torch.randn(3)], "y": (torch.randn(3),)}, model
    )


@dataclasses.dataclass
class _Batch:
    x: torch.Tensor
    label: str


class _Encoding(collections.UserDict):
    """Stands in for HuggingFace's BatchEncoding, a UserDict and no dict."""


def test_signature_follows_shapes_inside_containers_pytree_does_not_know(
    model: TinyMLP,
) -> None:
    # a dataclass batch and a UserDict batch of 8 rows, then a last batch of 4 rows: the
    # tensors inside decide the ops, so the signatures must differ (they did not: only the
    # container's type was kept, and the short batch replayed the full batch's profile)
    assert sig(_Batch(torch.randn(8, 16), "a"), model) != sig(
        _Batch(torch.randn(4, 16), "a"), model
    )
    assert sig(_Encoding(x=torch.randn(8, 16)), model) != sig(
        _Encoding(x=torch.randn(4, 16)), model
    )
    # equal contents still give equal signatures, non-tensor fields by type only
    assert sig(_Batch(torch.randn(8, 16), "a"), model) == sig(
        _Batch(torch.randn(8, 16), "b"), model
    )
    assert sig({"enc": _Encoding(ids=torch.zeros(2, 5))}, model) != sig(
        {"enc": _Encoding(ids=torch.zeros(2, 6))}, model
    )


def test_a_batchs_file_names_count_by_number_and_type_not_by_value(model: TinyMLP) -> None:
    def batch(n: int, names: list[str]) -> tuple[torch.Tensor, list[str]]:
        return torch.randn(n, 16), names

    # the same shapes, other names: one signature (the names change every batch)
    assert sig(batch(4, ["a", "b", "c", "d"]), model) == sig(batch(4, ["e", "f", "g", "h"]), model)
    # fewer names, or ids instead of names: another signature
    assert sig(batch(4, ["a", "b", "c", "d"]), model) != sig(batch(4, ["a", "b", "c"]), model)
    assert sig(batch(4, ["a", "b", "c", "d"]), model) != sig(batch(4, [1, 2, 3, 4]), model)  # type: ignore[arg-type]
    # a list that holds tensors is still walked: their shapes count
    assert sig([torch.randn(4, 16), "a"], model) != sig([torch.randn(2, 16), "a"], model)


def test_signature_follows_modes_and_flags(model: TinyMLP, restore_tf32: None) -> None:
    x = torch.randn(8, 16)
    base = sig(x, model)
    model.eval()
    assert sig(x, model) != base
    model.train()
    assert sig(x, model) == base
    with torch.no_grad():
        assert sig(x, model) != base
    with torch.inference_mode():
        assert sig(x, model) != base
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = sig(x, model)
    with torch.autocast("cpu", dtype=torch.float16):
        fp16 = sig(x, model)
    assert len({base, bf16, fp16}) == 3


def test_signature_follows_tf32_flags_once_cuda_is_in_use(
    model: TinyMLP, restore_tf32: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = torch.randn(8, 16)
    # Without CUDA the flags cannot change any op, and are not read (they cost microseconds).
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    base = sig(x, model)
    torch.backends.cuda.matmul.allow_tf32 = not torch.backends.cuda.matmul.allow_tf32
    assert sig(x, model) == base
    torch.backends.cuda.matmul.allow_tf32 = not torch.backends.cuda.matmul.allow_tf32
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    base = sig(x, model)
    torch.backends.cuda.matmul.allow_tf32 = not torch.backends.cuda.matmul.allow_tf32
    assert sig(x, model) != base
    torch.backends.cuda.matmul.allow_tf32 = not torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = not torch.backends.cudnn.allow_tf32
    assert sig(x, model) != base


def test_signature_follows_trainable_parameters_and_optimizer(model: TinyMLP) -> None:
    x = torch.randn(8, 16)
    base = sig(x, model)
    model.fc1.weight.requires_grad_(False)
    assert sig(x, model) != base
    model.fc1.weight.requires_grad_(True)
    assert sig(x, model) == base
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    adam = torch.optim.Adam(model.parameters())
    assert sig(x, model, optimizer=sgd) != base
    assert sig(x, model, optimizer=sgd) != sig(x, model, optimizer=adam)
    assert sig(x, model, optimizer=sgd, will_step=False) != sig(x, model, optimizer=sgd)
    assert sig(x, model, accumulate=4) != base
    assert sig(x, None) != base


def test_recheck_cadence() -> None:
    cache = ProfileCache(recheck_every=4)
    p = profile(TinyMLP(), torch.randn(8, 16))
    s = sig(torch.randn(8, 16), TinyMLP())
    decisions = []
    for _ in range(9):
        if cache.needs_count(s):
            decisions.append("count")
            cache.store(s, p)
        else:
            assert cache.lookup(s) is p
            decisions.append("replay")
    # the first two steps are counted (the first is provisional: one-off optimizer-state
    # work), then one step in 4: after every 3 replays. 9 steps: c c r r r c r r r.
    assert decisions == ["count", "count", "replay", "replay", "replay", "count"] + ["replay"] * 3
    assert (cache.counts, cache.replays, len(cache)) == (3, 6, 1)
    assert s in cache
    assert cache.changed_signatures == set()


def test_every_step_counts_with_recheck_every_1() -> None:
    cache = ProfileCache(recheck_every=1)
    s = sig(torch.randn(2, 16), None)
    p = profile(TinyMLP(), torch.randn(2, 16))
    cache.store(s, p)
    assert cache.needs_count(s)
    with pytest.raises(ValueError, match=">= 1"):
        ProfileCache(recheck_every=0)


def test_a_changed_recount_replaces_and_flags_the_signature() -> None:
    cache = ProfileCache(recheck_every=2)
    model = TinyMLP()
    s = sig(torch.randn(8, 16), model)
    small = profile(model, torch.randn(8, 16))
    same = profile(model, torch.randn(8, 16))
    big = profile(model, torch.randn(16, 16))
    assert cache.lookup(s) is None
    cache.store(s, small)
    cache.store(s, same)
    # an equal re-count keeps the first object (so per-profile caches stay valid)
    assert cache.lookup(s) is small
    assert cache.changed_signatures == set()
    cache.store(s, big)
    assert cache.lookup(s) is big
    assert cache.changed_signatures == {s}


def test_a_first_step_with_one_off_work_is_replaced_by_the_second_silently() -> None:
    # The first step of a signature creates optimizer state; the second is the steady state.
    cache = ProfileCache(recheck_every=1000)
    model = TinyMLP()
    s = sig(torch.randn(8, 16), model)
    first = profile(model, torch.randn(16, 16))  # stands in for a step with extra work
    steady = profile(model, torch.randn(8, 16))
    cache.store(s, first)
    assert cache.needs_count(s)  # provisional: the next step is counted again
    cache.store(s, steady)
    assert not cache.needs_count(s)
    assert cache.lookup(s) is steady
    assert cache.changed_signatures == set()  # not a data-dependent path


def test_replay_decides_as_needs_count_then_lookup() -> None:
    cache = ProfileCache(recheck_every=4)
    p = profile(TinyMLP(), torch.randn(8, 16))
    s = sig(torch.randn(8, 16), TinyMLP())
    decisions = []
    for _ in range(9):
        replayed = cache.replay(s)
        if replayed is None:
            decisions.append("count")
            cache.store(s, p)
        else:
            assert replayed is p
            decisions.append("replay")
    # the same cadence as test_recheck_cadence: c c r r r c r r r
    assert decisions == ["count", "count", "replay", "replay", "replay", "count"] + ["replay"] * 3
    assert (cache.counts, cache.replays) == (3, 6)


def test_slow_keys_passed_in_are_the_ones_the_signature_carries(model: TinyMLP) -> None:
    x = torch.randn(8, 16)
    slow = StepSignature.slow_keys(model)
    assert sig(x, model, slow=slow) == sig(x, model)
    model.fc1.weight.requires_grad_(False)
    # the stale keys still say every parameter trains; fresh ones see the frozen weight
    assert sig(x, model, slow=slow) != sig(x, model)
    assert sig(x, model, slow=StepSignature.slow_keys(model)) == sig(x, model)


def test_profile_sum_adds_replays_cheaply() -> None:
    a = profile(TinyMLP(), torch.randn(8, 16))
    b = profile(TinyMLP(), torch.randn(4, 16), train=True)
    window = ProfileSum()
    for _ in range(3):
        window.add(a)
    window.add(b, times=2)
    assert window.steps == 5
    total = window.total()
    assert total.same_work(a.scaled(3) + b.scaled(2))
    assert math.isclose(window.scalar("tos"), 3 * a.tos + 2 * b.tos, rel_tol=1e-12)
    assert math.isclose(window.scalar("bytes"), 3 * a.bytes + 2 * b.bytes, rel_tol=1e-12)
    window.clear()
    assert window.steps == 0
    assert window.total().tos == 0
