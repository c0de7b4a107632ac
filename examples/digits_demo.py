"""The main job: a small CNN on scikit-learn's bundled digits, with TOEnergy watching.

Runs on the CPU with no download: ``make demo`` or ``python examples/digits_demo.py``.
The progress bar shows measured joules (``energy_J``, or ``energy_est_J`` where the machine
has no readable energy counter and the CPU energy can only be estimated), the joules the
online model predicted for the same windows before seeing them (``energy_pred_J``) and the
recent prediction error (``energy_err_%``). The report at the end says which sensor produced
every number.
"""

from __future__ import annotations

import argparse

import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything
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
        self.log("val_acc", (logits.argmax(-1) == y).float().mean(), prog_bar=True)

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument(
        "--window-s", type=float, default=None, help="energy window length (default: the sensors')"
    )
    parser.add_argument("--out", default="energy_reports/digits", help="report directory")
    args = parser.parse_args()

    seed_everything(0)
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    train, val = digits_loaders()
    energy = TOEnergy(window_s=args.window_s, report_dir=args.out)
    trainer = Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        callbacks=[energy],
        logger=False,
        enable_checkpointing=False,
        log_every_n_steps=5,
        check_val_every_n_epoch=4,
    )
    # TOEnergy prints the report, then the files it wrote (and why the PNG was not, where
    # matplotlib is missing); energy.report holds the same report for programs.
    trainer.fit(DigitsCNN(), train, val)


if __name__ == "__main__":
    main()
