"""Two-process DDP with TOEnergy: each rank measures its own device, rank 0 reports the sum.

On the CPU (two gloo processes, no GPU needed)::

    python examples/ddp.py                       # 2 epochs of digits
    python examples/ddp.py --max-steps 4 --out reports/ddp

On two GPUs (nccl)::

    python examples/ddp.py --gpu

Lightning re-launches this script once per extra rank (``strategy="ddp"``). Every rank reads
its own sensors (its GPU through NVML; host-wide RAPL only on local rank 0; a CPU-time estimate
per process where nothing can be measured). At the end TOEnergy gathers every rank's windows;
rank 0 prints the report, writes the report files to ``--out``, and this script prints one line
per rank, the total and where the files are::

    rank 0: 12.345 J measured (estimate), 3 windows, 8 steps
    rank 1: 12.001 J measured (estimate), 3 windows, 8 steps
    total: 24.346 J measured over 2 ranks; 4 of 6 windows predicted: 16.100 J for 16.346 J
    report files in /home/me/energy_reports/ddp
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from lightning_to_energy import EnergyReport, TOEnergy


class DigitsMLP(LightningModule):
    """64 -> 128 -> 10 on the flattened 8x8 digits."""

    def __init__(self, lr: float = 2e-3) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("loss", loss, prog_bar=True, sync_dist=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.lr)


def digits_loader(batch_size: int) -> DataLoader:
    """scikit-learn's bundled digits; Lightning adds the DistributedSampler under DDP."""
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True, drop_last=True)


def per_rank_lines(report: EnergyReport) -> list[str]:
    """One line per rank (measured joules, kind, windows, steps), then the total."""
    kinds = ", ".join(sorted({s.kind for s in report.sensors})) or "no sensor"
    lines = []
    for rank in sorted({w.rank for w in report.windows}):
        windows = [w for w in report.windows if w.rank == rank]
        measured = sum(w.measured_j or 0.0 for w in windows)
        steps = sum(w.steps for w in windows)
        lines.append(
            f"rank {rank}: {measured:.3f} J measured ({kinds}), {len(windows)} windows, "
            f"{steps} steps"
        )
    # The first windows are measured before the model can predict: compare the prediction
    # with the joules of the windows it covers, not with the whole total.
    paired = [w for w in report.windows if w.predicted_j is not None and w.measured_j is not None]
    predicted = (
        f"{sum(w.predicted_j or 0.0 for w in paired):.3f} J for "
        f"{sum(w.measured_j or 0.0 for w in paired):.3f} J"
        if paired
        else "none yet (the first windows are measured before the model can predict)"
    )
    lines.append(
        f"total: {report.measured_j:.3f} J measured over {report.world_size} ranks; "
        f"{len(paired)} of {len(report.windows)} windows predicted: {predicted}"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Train with DDP on two devices and print per-rank and total energy on rank 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="two CUDA GPUs instead of the CPU")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=-1, help="steps per rank (-1: no cap)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--window-s", type=float, default=None, help="energy window length (s)")
    parser.add_argument("--out", default="energy_reports/ddp", help="report directory")
    parser.add_argument("--quiet", action="store_true", help="do not print the full report")
    args = parser.parse_args(argv)

    if args.gpu and torch.cuda.device_count() < 2:
        found = torch.cuda.device_count() if torch.cuda.is_available() else 0
        print(
            f"ddp.py --gpu needs 2 CUDA GPUs, found {found}. Fix: run without --gpu (CPU).",
            file=sys.stderr,
        )
        return 2
    seed_everything(0)
    # two processes on a small machine: one thread each keeps them from fighting
    if not args.gpu:
        torch.set_num_threads(1)
    energy = TOEnergy(window_s=args.window_s, report_dir=args.out, print_report=not args.quiet)
    trainer = Trainer(
        accelerator="gpu" if args.gpu else "cpu",
        devices=2,
        strategy="ddp",
        max_epochs=args.epochs,
        max_steps=args.max_steps,
        callbacks=[energy],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=2,
    )
    trainer.fit(DigitsMLP(), digits_loader(args.batch_size))
    if trainer.global_rank == 0 and energy.report is not None:
        for line in per_rank_lines(energy.report):
            print(line)
        print(f"report files in {os.path.abspath(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
