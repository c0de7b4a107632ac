"""TOEnergy from the command line with LightningCLI: no code change, one ``--trainer`` flag.

Needs LightningCLI's parser (``pip install 'lightning[pytorch-extra]'`` or
``pip install 'jsonargparse[signatures]'``). Add the callback by its class path::

    python examples/lightning_cli.py fit \\
        --trainer.callbacks+=lightning_to_energy.TOEnergy --trainer.max_epochs=1

Its constructor arguments follow as ``init_args`` of the callback just added::

    python examples/lightning_cli.py fit --trainer.max_epochs=1 \\
        --trainer.callbacks+=lightning_to_energy.TOEnergy \\
        --trainer.callbacks.init_args.window_s=1.0 \\
        --trainer.callbacks.init_args.report_dir=energy_reports/cli

or in a config file (``--config config.yaml``)::

    trainer:
      callbacks:
        - class_path: lightning_to_energy.TOEnergy
          init_args:
            window_s: 1.0
            calibration: null

The model is a small MLP on scikit-learn's bundled digits (CPU, no download); its width, learning
rate and the batch size are ``--model.*`` and ``--data.*`` flags (``--help`` lists them). At the
end TOEnergy prints its report and writes ``energy_report.json`` / ``.csv`` / ``.png`` to
``report_dir`` (default: the trainer's log directory).
"""

from __future__ import annotations

import torch
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset, random_split


class DigitsData(LightningDataModule):
    """scikit-learn's 1,797 8x8 digits, flattened, scaled to [0, 1] and split 85 / 15.

    Args:
        batch_size: training and validation batch size.
        seed: seed of the train / validation split.
    """

    def __init__(self, batch_size: int = 64, seed: int = 0) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.seed = seed
        self.train: Dataset | None = None
        self.val: Dataset | None = None

    def setup(self, stage: str) -> None:
        digits = load_digits()
        x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
        y = torch.tensor(digits.target, dtype=torch.long)
        generator = torch.Generator().manual_seed(self.seed)
        self.train, self.val = random_split(TensorDataset(x, y), [0.85, 0.15], generator)

    def train_dataloader(self) -> DataLoader:
        assert self.train is not None
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        assert self.val is not None
        return DataLoader(self.val, batch_size=self.batch_size)


class DigitsClassifier(LightningModule):
    """An MLP 64 -> width -> width -> 10 with GELU activations.

    Args:
        width: hidden width.
        lr: AdamW learning rate.
    """

    def __init__(self, width: int = 128, lr: float = 2e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.lr = lr
        self.net = nn.Sequential(
            nn.Linear(64, width),
            nn.GELU(),
            nn.Linear(width, width),
            nn.GELU(),
            nn.Linear(width, 10),
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
        self.log("val_acc", (self(x).argmax(-1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.lr)


def main() -> None:
    """Run LightningCLI with the digits model and data module."""
    LightningCLI(DigitsClassifier, DigitsData, seed_everything_default=0)


if __name__ == "__main__":
    main()
