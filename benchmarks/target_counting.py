"""Counting for a target without running it: one training step of a GPT-style model for an H100.

Builds a GPT-2-medium-sized model (24 layers, width 1024, 16 heads, vocabulary 50257, context
1024: about 355 M parameters) under ``torch.device("meta")``, then counts one training step
(batch 8, sequence 1024, AdamW, bf16 autocast) with ``profile(..., hardware="h100-sxm")``.
Prints the time to build the model, the wall time of the count (goal <= 10 s), the process's
peak RSS (goal <= 2 GB) and the counted totals, as JSON. Nothing is materialised: the model,
its gradients and AdamW's state stay meta tensors.

Run: ``python benchmarks/target_counting.py [--layers 24 --width 1024 ...]`` (a fresh process
per configuration: the peak RSS is the process's).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightning_to_energy.counting import profile


class _Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.fc = nn.Linear(width, 4 * width)
        self.out = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, w = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(w, dim=-1)
        q, k, v = (t.view(b, s, self.heads, w // self.heads).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, s, w))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    """A GPT-2-style decoder: token and position embeddings, pre-norm blocks, tied head."""

    def __init__(self, vocab: int, context: int, width: int, heads: int, layers: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(_Block(width, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.tok.weight  # tied, as GPT-2's

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.tok(idx) + self.pos(pos)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def _loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten())


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Build the model on meta, count one step for ``args.hardware``, and time both."""
    t0 = time.perf_counter()
    with torch.device("meta"):
        model = GPT(args.vocab, args.seq, args.width, args.heads, args.layers)
    build_s = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    idx = torch.empty(args.batch, args.seq, dtype=torch.long, device="meta")
    labels = torch.empty(args.batch, args.seq, dtype=torch.long, device="meta")
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        step = profile(
            model,
            idx,
            train=True,
            optimizer="adamw",
            loss_fn=_loss,
            target=labels,
            hardware=args.hardware,
        )
    count_s = time.perf_counter() - t0
    peak_rss_b = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    materialised = [p for p in model.parameters() if p.device.type != "meta" or p.grad is not None]
    return {
        "config": {
            k: getattr(args, k) for k in ("layers", "width", "heads", "vocab", "batch", "seq")
        },
        "hardware": args.hardware,
        "parameters": params,
        "build_s": round(build_s, 3),
        "count_s": round(count_s, 3),
        "peak_rss_bytes": peak_rss_b,
        "materialised_parameters": len(materialised),
        "flops": step.flops,
        "tos": step.tos,
        "kernels": step.kernels,
        "bytes": step.bytes,
        "ops": {name: t.calls for name, t in sorted(step.by_op.items())},
        "unmodelled_ops": dict(step.unmodelled_ops),
        "machine": f"{platform.machine()} python {sys.version.split()[0]}",
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--hardware", default="h100-sxm")
    args = parser.parse_args(argv)
    result = measure(args)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
