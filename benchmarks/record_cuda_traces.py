"""Record golden CUDA traces of small training steps, for the CPU tests of target counting.

On a CUDA machine, for an MLP, a CNN with BatchNorm and a transformer with dropout, each in fp32
and in bf16 autocast, with SGD and with AdamW (12 cases), runs a warm-up step and then records
one training step (forward, cross-entropy loss, backward, optimizer step, ``zero_grad``):

- the aten ops as a dispatch mode sees them (op, input dtypes and shapes, output dtypes);
- the kernels launched per op, from ``torch.profiler`` (each kernel charged to the innermost
  aten op that launched it), and their total;
- the step's total FLOPs from ``FlopCounterMode``;
- the torch, CUDA and cuDNN versions, the device, its compute capability and the TF32 and SDPA
  settings.

One JSON file per case goes to ``--out DIR`` (``<case>.json``); ``tests/test_cuda_traces.py``
compares ``profile(..., hardware=...)`` run on a CPU against every file found under
``tests/data/cuda_traces/``. Finishes in well under 60 s on an H100.

Run: ``python benchmarks/record_cuda_traces.py --out DIR [--case NAME ...]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

FORMAT = "lightning-to-energy/cuda-trace"
VERSION = 1

FAMILIES = ("mlp", "cnn", "transformer")
DTYPES = ("fp32", "bf16")
OPTIMIZERS = ("sgd", "adamw")


class _Block(nn.Module):
    """Pre-norm transformer block with attention dropout and MLP dropout."""

    def __init__(self, width: int, heads: int, p: float) -> None:
        super().__init__()
        self.n1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, dropout=p, batch_first=True)
        self.n2 = nn.LayerNorm(width)
        self.ff = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Dropout(p), nn.Linear(4 * width, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.n1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.ff(self.n2(x))


def build_model(family: str) -> tuple[nn.Module, tuple[int, ...]]:
    """The model of ``family`` (on the current default device) and its input shape."""
    if family == "mlp":
        model = nn.Sequential(
            nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
            nn.Linear(256, 10),
        )  # fmt: skip
        return model, (64, 1, 28, 28)
    if family == "cnn":
        model = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
        )  # fmt: skip
        return model, (32, 3, 32, 32)
    if family == "transformer":
        model = nn.Sequential(_Block(128, 4, 0.1), _Block(128, 4, 0.1), nn.Flatten(1))
        model.append(nn.Linear(64 * 128, 10))
        return model, (16, 64, 128)
    raise ValueError(f"expected a family in {FAMILIES}; found {family!r}")


def case_names() -> list[str]:
    """Every case: ``<family>-<dtype>-<optimizer>``."""
    return [f"{f}-{d}-{o}" for f in FAMILIES for d in DTYPES for o in OPTIMIZERS]


def parse_case(name: str) -> tuple[str, str, str]:
    """``(family, dtype, optimizer)`` of a case name."""
    family, dtype, optimizer = name.split("-")
    if family not in FAMILIES or dtype not in DTYPES or optimizer not in OPTIMIZERS:
        raise ValueError(f"expected a case in {case_names()}; found {name!r}")
    return family, dtype, optimizer


def make_optimizer(name: str, params: Any) -> torch.optim.Optimizer:
    """The case's optimizer with PyTorch's defaults (foreach left to PyTorch)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=1e-3)
    return torch.optim.AdamW(params, lr=1e-3)


def loss_fn(out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The case's loss: cross-entropy on 10 classes."""
    return F.cross_entropy(out, labels)


def autocast_dtype(dtype: str) -> torch.dtype | None:
    """The autocast dtype of the case (None: fp32 without autocast)."""
    return torch.bfloat16 if dtype == "bf16" else None


# --- recording (CUDA only) ----------------------------------------------------------------------


def _describe(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return {"dtype": str(x.dtype).removeprefix("torch."), "shape": list(x.shape)}
    if isinstance(x, (list, tuple)):
        inner = [_describe(v) for v in x]
        return [v for v in inner if v is not None] or None
    return None


def recording_mode(records: list[dict[str, Any]], step: list[int], keep: int) -> Any:
    """A dispatch mode that appends each aten op of step ``keep`` to ``records``.

    ``step[0]`` is the step index, advanced by a forward pre-hook on the model.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Record(TorchDispatchMode):
        def __torch_dispatch__(
            self, func: Any, types: Any, args: Any = (), kwargs: Any = None
        ) -> Any:
            out = func(*args, **(kwargs or {}))
            if step[0] == keep:
                ins = [d for d in (_describe(a) for a in args) if d is not None]
                ins += [d for d in (_describe(v) for v in (kwargs or {}).values()) if d]
                records.append(
                    {"op": str(func.overloadpacket), "inputs": ins, "outputs": _describe(out)}
                )
            return out

    return _Record()


def _kernels_by_op(prof: Any) -> tuple[dict[str, int], int]:
    by_op: dict[str, int] = {}
    total = 0
    for evt in prof.events():
        kernels = getattr(evt, "kernels", None) or []
        n = len(kernels)
        if n and evt.name.startswith("aten::"):
            name = "aten." + evt.name.removeprefix("aten::")
            by_op[name] = by_op.get(name, 0) + n
        total += n
    return by_op, total


def record(name: str, device: torch.device) -> dict[str, Any]:
    """Record case ``name`` on ``device`` (a CUDA device; the CPU for a dry run of the tests)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    from torch.utils.flop_counter import FlopCounterMode

    family, dtype, opt_name = parse_case(name)
    torch.manual_seed(0)
    with device:
        model, shape = build_model(family)
        x = torch.randn(shape)
        labels = torch.randint(0, 10, (shape[0],))
    model.train()
    opt = make_optimizer(opt_name, model.parameters())
    amp = autocast_dtype(dtype)
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    def step() -> None:
        with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            loss = loss_fn(model(x), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    steps = [0]
    hook = model.register_forward_pre_hook(lambda *_: steps.__setitem__(0, steps[0] + 1))
    step()  # warm-up: optimizer state, cuDNN plans, lazy inits
    records: list[dict[str, Any]] = []
    with recording_mode(records, steps, keep=2):
        step()
    sync()
    with FlopCounterMode(display=False) as flop_counter:
        step()
    sync()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch_profile(activities=activities) as prof:
        step()
        sync()
    hook.remove()
    by_op, total = _kernels_by_op(prof)
    major, minor = torch.cuda.get_device_capability(device) if cuda else (0, 0)
    return {
        "format": FORMAT,
        "version": VERSION,
        "case": name,
        "family": family,
        "dtype": dtype,
        "optimizer": opt_name,
        "input_shape": list(shape),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "compute_capability": [major, minor],
        "settings": {
            "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "flash_sdp": torch.backends.cuda.flash_sdp_enabled(),
            "mem_efficient_sdp": torch.backends.cuda.mem_efficient_sdp_enabled(),
            "cudnn_sdp": torch.backends.cuda.cudnn_sdp_enabled(),
        },
        "ops": records,
        "kernels_by_op": by_op,
        "kernels_total": total,
        "flops_total": int(flop_counter.get_total_flops()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for <case>.json files")
    parser.add_argument(
        "--case", action="append", default=None, choices=case_names(), help="default: all"
    )
    parser.add_argument("--device", default="cuda", help="CUDA device (default: cuda)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("record_cuda_traces: expected a CUDA device, found none; nothing recorded.")
        return 2
    device = torch.device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for name in args.case or case_names():
        t0 = time.perf_counter()
        trace = record(name, device)
        path = args.out / f"{name}.json"
        path.write_text(json.dumps(trace, indent=1) + "\n")
        print(
            f"{name}: {len(trace['ops'])} ops, {trace['kernels_total']} kernels, "
            f"{trace['flops_total']:.4g} FLOPs, {time.perf_counter() - t0:.1f} s -> {path}",
            flush=True,
        )
    print(f"record_cuda_traces: done in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
