"""The main job: a small CNN on scikit-learn's bundled digits, with TOEnergy watching.

Runs on the CPU with no download: ``make demo`` or ``python examples/digits_demo.py``.
The progress bar shows the energy measured so far (``energy_kJ``, or ``energy_est_kJ`` where
the machine has no readable energy counter and the CPU energy can only be estimated), the
error of the online model's recent predictions, each made before its window was measured
(``pred_err_%``), and, once it is within ±25 %, the forecast of the whole run (``run_kJ``).
At the end a short summary names the report's files; ``--verbose`` prints the full report.

The bar is Lightning's own Rich bar; when the output is not a terminal the script draws it
once at 120 columns, as any script may (see :func:`progress_bar`).
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import RichProgressBar
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset, random_split

from lightning_to_energy import TOEnergy


class DigitsCNN(LightningModule):
    """Two convolutions and a classifier for 8x8 grey-scale digits."""

    def __init__(self, width: int = 64, lr: float = 2e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.GELU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(0.1),
            nn.Linear(2 * width * 4 * 4, 128),
            nn.SiLU(),
            nn.Linear(128, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        # NB: not in the bar: at 120 columns Rich's bar leaves about 37 columns for every item.
        self.log("val_acc", (logits.argmax(-1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)


def digits_loaders(batch_size: int = 64) -> tuple[DataLoader, DataLoader]:
    """The 1,797 digits bundled with scikit-learn, scaled to [0, 1], split 85 / 15."""
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    train, val = random_split(TensorDataset(x, y), [0.85, 0.15])
    return (
        DataLoader(train, batch_size=batch_size, shuffle=True, drop_last=True),
        DataLoader(val, batch_size=256),
    )


def progress_bar(interactive: bool) -> list[RichProgressBar]:
    """The bar: Lightning's default in a terminal; drawn 120 columns wide in a file or a pipe.

    Not in a terminal, Rich draws its bar once, when it closes, 80 columns wide, where its
    metrics column holds about 17 characters: one item of four per line, some parted from
    their value. At 120 columns it holds about 37: the script's loss and the energy on one
    line, the error and the forecast on the next, as in a terminal that wide. The theme stays
    Lightning's (values printed with ``.3f``): an item's width then changes only when its value
    passes 10 or 100, so where Rich wraps barely moves, and values below 10 read as in TQDM.

    Args:
        interactive: the output is a terminal (``sys.stdout.isatty()``).

    Returns:
        No bar in a terminal (Lightning adds its own), else Rich's bar at 120 columns.
    """
    return [] if interactive else [RichProgressBar(console_kwargs={"width": 120})]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument(
        "--window-s", type=float, default=None, help="energy window length (default: the sensors')"
    )
    parser.add_argument("--out", default="energy_reports/digits", help="report directory")
    parser.add_argument("--verbose", action="store_true", help="print the full energy report")
    args = parser.parse_args()
    # A short demo: Lightning's start-up lines (devices, tips) and one deprecation it raises
    # under recent torch are not what it shows. Warnings of every other kind still print.
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")

    seed_everything(0)
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    train, val = digits_loaders()
    energy = TOEnergy(window_s=args.window_s, report_dir=args.out, verbose=args.verbose)
    trainer = Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        callbacks=[energy, *progress_bar(sys.stdout.isatty())],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        log_every_n_steps=5,
        check_val_every_n_epoch=4,
    )
    # TOEnergy prints a summary naming the files it wrote (and why the PNG was not, where
    # matplotlib is missing); energy.report holds the full report for programs.
    trainer.fit(DigitsCNN(), train, val)


if __name__ == "__main__":
    main()
