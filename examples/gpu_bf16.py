"""A small GPT trained in bf16 mixed precision on one NVIDIA GPU, with TOEnergy measuring it.

Needs a CUDA GPU (NVML through ``pip install 'lightning-to-energy[nvidia]'`` for measured joules;
without it the GPU's energy is not measured and the report says why)::

    python examples/gpu_bf16.py                     # about a minute on an H100
    python examples/gpu_bf16.py --max-steps 300 --out energy_reports/gpu_bf16

Without a CUDA GPU it prints why and exits with status 2 (use ``examples/digits_demo.py`` on a
CPU).

The data are random but deterministic: token sequences that follow a fixed random permutation
(``x[t + 1] = perm[x[t]]``), so the loss falls quickly and every run sees the same batches.
``precision="bf16-mixed"`` runs the matmuls and attention under autocast in bf16; the counter
reads the formats from the tensors' dtypes, so the report's "TOs by format" table shows bf16
for the matrix work and fp32 for the norms, the loss and the optimizer. Windows last 2 s (the
NVML energy counter's minimum trustworthy window); the progress bar shows measured and
predicted joules. At the end the script prints the totals, each window's prediction error from
first to last (how fast the model converges), and the share of TOs per format.
"""

from __future__ import annotations

import argparse
import sys

import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from lightning_to_energy import TOEnergy

NO_GPU_MESSAGE = (
    "gpu_bf16.py needs a CUDA GPU, found none (torch.cuda.is_available() is False). "
    "Fix: run it on a machine with an NVIDIA GPU and a CUDA build of torch, or run "
    "examples/digits_demo.py on the CPU."
)


class Block(nn.Module):
    """Pre-norm transformer block: causal self-attention and a GELU MLP, with residuals."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.ln2(x))


class TinyGPT(LightningModule):
    """Token and position embeddings, ``layers`` blocks, a final norm and a tied LM head."""

    def __init__(
        self, vocab: int = 256, dim: int = 256, heads: int = 4, layers: int = 4, seq: int = 128
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(seq, dim)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.tok.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))

    def training_step(self, batch: tuple[torch.Tensor], batch_idx: int) -> torch.Tensor:
        (tokens,) = batch
        logits = self(tokens[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
        self.log("loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=3e-4, weight_decay=0.1)


class PermutationSequences(Dataset):
    """Sequences of ``seq + 1`` tokens with ``x[t + 1] = perm[x[t]]`` for one fixed ``perm``.

    Item ``i`` starts at a token drawn once from a seeded generator, so every run sees the same
    data; the sequences are built on demand from the permutation's orbits (``vocab x (seq + 1)``).
    """

    def __init__(self, n: int, seq: int, vocab: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        perm = torch.randperm(vocab, generator=generator)
        orbits = torch.empty(vocab, seq + 1, dtype=torch.long)
        orbits[:, 0] = torch.arange(vocab)
        for t in range(seq):
            orbits[:, t + 1] = perm[orbits[:, t]]
        self.orbits = orbits
        self.starts = torch.randint(0, vocab, (n,), generator=generator)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> tuple[torch.Tensor]:
        return (self.orbits[self.starts[i]],)


def build_parser() -> argparse.ArgumentParser:
    """The command line of this example (``tests/test_benchmarks.py`` checks
    ``benchmarks/gpu_session.sh`` against it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--window-s", type=float, default=None, help="energy window (s)")
    parser.add_argument("--out", default="energy_reports/gpu_bf16", help="report directory")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Train on the GPU in bf16 with TOEnergy; returns the exit status (2 without a GPU)."""
    args = build_parser().parse_args(argv)

    if not torch.cuda.is_available():
        print(NO_GPU_MESSAGE, file=sys.stderr)
        return 2
    seed_everything(0)
    seq, vocab = 128, 256
    # one epoch covers the whole run: an epoch boundary would cut a measurement window short
    data = PermutationSequences(args.max_steps * args.batch_size, seq, vocab)
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True, drop_last=True)
    energy = TOEnergy(window_s=args.window_s, report_dir=args.out)
    trainer = Trainer(
        accelerator="gpu",
        devices=1,
        precision="bf16-mixed",
        max_steps=args.max_steps,
        max_epochs=1,
        callbacks=[energy],
        logger=False,
        enable_checkpointing=False,
        log_every_n_steps=20,
    )
    model = TinyGPT(vocab=vocab, dim=args.dim, layers=args.layers, seq=seq)
    trainer.fit(model, loader)
    report = energy.report
    if report is None:
        return 1
    kinds = ", ".join(sorted({s.kind for s in report.sensors})) or "no sensor"
    precision = report.accuracy.get("precision_pct")
    shown = f"{precision:.1f} %" if precision is not None else "n/a"
    print(
        f"measured {report.measured_j:.1f} J ({kinds}), predicted {report.predicted_j:.1f} J, "
        f"precision {shown}"
    )
    # Convergence: each train window's error, predicted before its measurement was seen.
    errors = [
        abs(w.predicted_j / w.measured_j - 1.0)
        for w in report.windows
        if w.loop == "train" and w.predicted_j is not None and w.measured_j
    ]
    if errors:
        shown_errors = errors if len(errors) <= 10 else [*errors[:5], *errors[-5:]]
        cells = [f"{100 * e:.1f}%" for e in shown_errors]
        if len(errors) > 10:
            cells.insert(5, "...")
        print(f"prediction error per window, first to last ({len(errors)}): " + " ".join(cells))
    total_tos = sum(report.tos_by_format.values()) or 1.0
    shares = sorted(report.tos_by_format.items(), key=lambda kv: -kv[1])
    print("TOs by format: " + ", ".join(f"{fmt} {tos / total_tos:.1%}" for fmt, tos in shares))
    print(f"report files in {args.out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
