"""Target counting against golden CUDA traces (``benchmarks/record_cuda_traces.py``).

Every trace file under ``tests/data/cuda_traces/`` was recorded on a real GPU. For each, the same
training step is counted here with ``profile(..., hardware=...)`` for that GPU (its compute
capability, TF32 and SDPA settings), on meta tensors, and compared: the same aten ops with the
same input dtypes (ops the counter skips as free excepted), kernels within 5 % and FLOPs within
1 %. Bytes are our formulas' output and not golden. Without trace files the comparison skips,
saying so; the recorder itself is still exercised on the CPU.
"""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

from lightning_to_energy.counting import profile
from lightning_to_energy.counting.formulas.zero import is_free
from lightning_to_energy.counting.registry import formula_for
from lightning_to_energy.counting.target import CountTarget

ROOT = Path(__file__).resolve().parents[1]
TRACES = sorted((ROOT / "tests" / "data" / "cuda_traces").glob("*.json"))


def _recorder() -> Any:
    spec = importlib.util.spec_from_file_location(
        "record_cuda_traces", ROOT / "benchmarks" / "record_cuda_traces.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REC = _recorder()


def _counted(op: str) -> bool:
    """True for ops the counter costs (not skipped as free views, metadata or allocations)."""
    packet = getattr(torch.ops.aten, op.removeprefix("aten."), None)
    formula = formula_for(packet) if packet is not None else None
    return formula is None or not is_free(formula)


def op_signatures(records: list[dict[str, Any]]) -> Counter[tuple[str, tuple[str, ...]]]:
    """The multiset of (op, input dtypes) of the counted ops among ``records``."""
    return Counter((r["op"], tuple(_dtypes(r["inputs"]))) for r in records if _counted(r["op"]))


def _dtypes(items: Any) -> Iterator[str]:
    for item in items:
        if isinstance(item, dict):
            yield item["dtype"]
        elif isinstance(item, list):
            yield from _dtypes(item)


@contextmanager
def _settings(settings: dict[str, Any]) -> Iterator[None]:
    """The recording machine's TF32 and SDPA settings, restored afterwards."""
    cuda = torch.backends.cuda
    old = (
        cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
        cuda.flash_sdp_enabled(),
        cuda.mem_efficient_sdp_enabled(),
    )
    try:
        torch.set_float32_matmul_precision(settings["float32_matmul_precision"])
        cuda.matmul.allow_tf32 = settings["cuda.matmul.allow_tf32"]
        torch.backends.cudnn.allow_tf32 = settings["cudnn.allow_tf32"]
        cuda.enable_flash_sdp(settings["flash_sdp"])
        cuda.enable_mem_efficient_sdp(settings["mem_efficient_sdp"])
        yield
    finally:
        torch.set_float32_matmul_precision(old[2])
        cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old[0], old[1]
        cuda.enable_flash_sdp(old[3])
        cuda.enable_mem_efficient_sdp(old[4])


def count_case(case: str, hardware: Any) -> tuple[Any, list[dict[str, Any]]]:
    """Count ``case`` for ``hardware`` on meta tensors; also record its ops as the recorder does.

    The recording mode sits outside the counter's, so it sees the same ops; a forward pre-hook
    numbers the steps and only the counted one (after the warm-up) is kept.
    """
    family, dtype, optimizer = REC.parse_case(case)
    with torch.device("meta"):
        model, shape = REC.build_model(family)
    model.train()
    x = torch.empty(shape, device="meta")
    labels = torch.empty(shape[0], dtype=torch.long, device="meta")
    steps = [0]
    hook = model.register_forward_pre_hook(lambda *_: steps.__setitem__(0, steps[0] + 1))
    records: list[dict[str, Any]] = []
    amp = REC.autocast_dtype(dtype)
    try:
        with (
            torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None),
            REC.recording_mode(records, steps, keep=2),
        ):
            counted = profile(
                model, x, train=True, optimizer=optimizer, loss_fn=REC.loss_fn, target=labels,
                hardware=hardware,
            )  # fmt: skip
    finally:
        hook.remove()
    return counted, records


def test_recorder_covers_every_family_dtype_and_optimizer() -> None:
    # 3 families x 2 formats x 2 optimizers = 12 cases
    assert len(REC.case_names()) == 12
    assert {REC.parse_case(c) for c in REC.case_names()} == {
        (f, d, o) for f in REC.FAMILIES for d in REC.DTYPES for o in REC.OPTIMIZERS
    }


def test_recorder_dry_run_on_the_cpu_matches_cpu_counting() -> None:
    """The recorder's own pipeline, on the CPU: its ops and FLOPs are what we count there."""
    trace = REC.record("mlp-fp32-sgd", torch.device("cpu"))
    assert trace["format"] == REC.FORMAT and trace["kernels_total"] == 0  # no GPU: no kernels
    counted, records = count_case("mlp-fp32-sgd", "cpu")
    assert op_signatures(trace["ops"]) == op_signatures(records)
    # MLP 784-256-256-10, batch 64: forward 2 * 64 * (784*256 + 256*256 + 256*10) = 34,406,400;
    # backward twice that without the first layer's input grad (2 * 64 * 784*256 = 25,690,112):
    # 68,812,800 - 25,690,112 = 43,122,688; total 77,529,088
    assert trace["flops_total"] == counted.flops == 77_529_088


@pytest.mark.skipif(
    not TRACES,
    reason="no golden CUDA traces in tests/data/cuda_traces/ yet: run `python "
    "benchmarks/record_cuda_traces.py --out tests/data/cuda_traces` on a CUDA machine "
    "(benchmarks/gpu_session.sh does) and commit the files",
)
@pytest.mark.parametrize("path", TRACES, ids=[p.stem for p in TRACES])
def test_target_counting_reproduces_the_cuda_trace(path: Path) -> None:
    compare_to_trace(json.loads(path.read_text()))


def compare_to_trace(trace: dict[str, Any]) -> None:
    """Count the trace's case for its GPU here and assert it matches (ops, kernels, FLOPs)."""
    assert trace["format"] == REC.FORMAT
    target = CountTarget(
        f"trace:{trace['device']}", trace["device"], True, tuple(trace["compute_capability"])
    )
    with _settings(trace["settings"]):
        counted, records = count_case(trace["case"], target)
    ours, theirs = op_signatures(records), op_signatures(trace["ops"])
    assert ours == theirs, (
        f"only counted here: {dict(ours - theirs)}; only on {trace['device']}: "
        f"{dict(theirs - ours)}"
    )
    assert counted.kernels == pytest.approx(trace["kernels_total"], rel=0.05)
    assert counted.flops == pytest.approx(trace["flops_total"], rel=0.01)


def test_the_comparison_accepts_its_own_count_and_rejects_a_changed_one() -> None:
    """The comparison itself, on a trace made from our own H100 count (not golden data)."""
    counted, records = count_case("transformer-bf16-adamw", "h100-sxm")
    trace = {
        "format": REC.FORMAT,
        "case": "transformer-bf16-adamw",
        "device": "NVIDIA H100 80GB HBM3",
        "compute_capability": [9, 0],
        "settings": {
            "cuda.matmul.allow_tf32": False,
            "cudnn.allow_tf32": True,
            "float32_matmul_precision": "highest",
            "flash_sdp": True,
            "mem_efficient_sdp": True,
        },
        "ops": records,
        "kernels_total": counted.kernels,
        "flops_total": counted.flops,
    }
    compare_to_trace(trace)
    assert any(r["op"] == "aten._scaled_dot_product_flash_attention" for r in records)
    with pytest.raises(AssertionError, match="only on"):
        compare_to_trace({**trace, "ops": [*records, {"op": "aten.mm", "inputs": []}]})
    with pytest.raises(AssertionError):
        compare_to_trace({**trace, "flops_total": counted.flops * 1.02})
