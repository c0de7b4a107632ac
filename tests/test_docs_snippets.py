"""README's Python snippets run as written, in order, as a new user would paste them.

Only the names a snippet leaves to the reader are supplied (``model``, ``datamodule``,
``loader``, ``loss_fn``, ``optimizer``, ``torch``, and the calibration files the plan reads);
the snippets themselves are taken from README.md unchanged, so a snippet that drifts from the
API fails here. Everything runs on the CPU with tiny sizes: one batch per epoch.
"""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import LightningDataModule, LightningModule
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from lightning_to_energy.calibration.data import Calibration
from lightning_to_energy.calibration.store import CalibrationStore
from lightning_to_energy.hardware.identity import HardwareInfo
from lightning_to_energy.model.regression import OnlineEnergyModel

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(path: Path) -> list[str]:
    """The ```python fenced blocks of ``path``, in order."""
    return re.findall(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"), re.M | re.S)


class Net(LightningModule):
    """A conv and a classifier on [batch, 3, 32, 32]: what the snippets' inputs assume."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=4)
        self.head = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.conv(x)).flatten(1))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters())


class OneBatch(LightningDataModule):
    def __init__(self, data: TensorDataset) -> None:
        super().__init__()
        self.data = data

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=8)


def calibration_file(path: Path, time_feature: str, hardware: HardwareInfo) -> None:
    """A calibration of ``hardware`` on (time_feature, tos_matrix_full, tos_vector), fitted on
    windows that follow 100 W x time + 1 pJ/TO x TOs."""
    names = (time_feature, "tos_matrix_full", "tos_vector")
    model = OnlineEnergyModel(names)
    for seconds, matrix, vector in ((2.0, 1e12, 1e11), (3.0, 4e12, 2e11), (4.0, 2e12, 5e11)):
        features = dict(zip(names, (seconds, matrix, vector), strict=True))
        model.update(features, 100.0 * seconds + 1e-12 * (matrix + vector))
    CalibrationStore.from_path(path).save(Calibration.from_model(model, hardware))


def test_readme_python_snippets_run_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocks = python_blocks(README)
    # Use it (Lightning), Rich's bar with a theme, without Lightning, count one step, plan a run
    assert len(blocks) == 5, [b.splitlines()[0] for b in blocks]
    monkeypatch.chdir(tmp_path)  # the trainer's logs and report land here
    # Drawing the PNG takes most of a second or more; test_report checks it. Without
    # matplotlib the end of the run skips it, as it does for a user without the extra.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))
    model = Net()
    h100 = HardwareInfo(gpus=("NVIDIA H100 80GB HBM3",), driver_version="580.1", cpu="x")
    calibration_file(tmp_path / "h100.json", "roofline_s", h100)
    calibration_file(tmp_path / "measured.json", "duration_s", HardwareInfo.detect())
    namespace: dict[str, Any] = {
        "torch": torch,
        "model": model,
        "datamodule": OneBatch(data),
        "loader": DataLoader(data, batch_size=4),
        "loss_fn": nn.CrossEntropyLoss(),
        "optimizer": torch.optim.AdamW(model.parameters()),
    }
    with warnings.catch_warnings():
        # the CPU energy is an estimate here, and h100.json was made on other hardware:
        # both are announced by warnings, which are not what this test checks
        warnings.simplefilter("ignore")
        for block in blocks:
            exec(compile(block, str(README), "exec"), namespace)
    # the Lightning run wrote its report to the trainer's log directory, as README says
    assert list(tmp_path.glob("lightning_logs/version_0/energy_report.json"))
    assert namespace["report"].loops["train"].steps == 2  # 2 batches of 4 in the loop
    # the bar snippet builds a trainer with Lightning's Rich bar, printing 3 significant digits
    assert namespace["trainer"].progress_bar_callback is namespace["bar"]
    assert namespace["bar"].theme.metrics_format == ".3g"
    # the plans: a roofline one needs no step time; one on measured time got step_time_s
    plan = namespace["plan"]
    assert plan.energy_j > 0 and plan.low_j <= plan.energy_j <= plan.high_j
    out = capsys.readouterr().out.splitlines()
    assert float(out[-1]) > 0
