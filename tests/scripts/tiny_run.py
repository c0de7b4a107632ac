"""Training runs for the multi-process tests: DDP on the CPU, and kill-then-resume.

Usage:
    python tiny_run.py ddp OUT_DIR
    python tiny_run.py ddp-resume OUT_DIR  # DDP: 4 steps with a checkpoint, then resumed to 8
    python tiny_run.py kill OUT_DIR      # trains, checkpoints every 4 steps, dies at step 6
    python tiny_run.py resume OUT_DIR    # resumes from the step-4 checkpoint up to step 12

Every process uses a fake clock that advances 0.5 s per step and fake sensors, so the
expected joules can be worked out by hand in the tests.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_to_energy import FakeSensor, TOEnergy

STEP_S = 0.5


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Advance(Callback):
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def on_train_batch_end(self, *args: Any) -> None:
        self.clock.t += STEP_S


class DieAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            sys.stdout.flush()
            os._exit(3)  # a crash: no teardown, no report


class ShutDownGroup(Callback):
    """Destroy the gloo process group at the very end of each spawned worker, after TOEnergy's
    end-of-run gather. Lightning destroys only NCCL groups (at exit); a spawned worker leaves
    without running atexit, and gloo torn down by static destructors can abort the process
    ("terminate called without an active exception", seen about 1 run in 12 on a 2-core VM).
    PyTorch asks programs to call destroy_process_group before they exit."""

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()


class Tiny(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-2)


def loader(n: int) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(n, 8, generator=g), torch.randint(0, 2, (n,), generator=g))
    return DataLoader(data, batch_size=16)


class RankSensors:
    """Each rank: its own "GPU" at 10 W x (rank + 1); one host-wide sensor at 100 W that only
    local rank 0 may read. A class, not a closure, so that ddp_spawn can pickle it."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def __call__(self, local_rank: int, device: torch.device) -> list[FakeSensor]:
        return [
            FakeSensor(f"fake:{local_rank}", power_w=10.0 * (local_rank + 1), clock=self.clock),
            FakeSensor("host:0", power_w=100.0, clock=self.clock, host_wide=True),
        ]


def main() -> None:
    mode, out = sys.argv[1], Path(sys.argv[2])
    clock = Clock()
    common: dict[str, Any] = {
        "accelerator": "cpu",
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    if mode in ("ddp", "ddp-resume"):
        # ddp: one epoch of 256 rows; ddp-resume: 4 steps with a checkpoint, then resumed to 8
        runs = [(None, None)] if mode == "ddp" else [(4, None), (8, "step=4")]
        for max_steps, resume_from in runs:
            clock = Clock()
            energy = TOEnergy(
                RankSensors(clock),
                window_s=1.0,
                calibration=None,
                clock=clock,
                report_dir=out,
                print_report=False,
            )
            ddp_callbacks: list[Callback] = [Advance(clock), energy]
            if max_steps is not None:
                ddp_callbacks.append(
                    ModelCheckpoint(dirpath=out / "ckpt", every_n_train_steps=4, save_top_k=-1)
                )
            trainer = Trainer(
                devices=2,
                strategy="ddp_spawn",
                max_epochs=1 if max_steps is None else None,
                max_steps=-1 if max_steps is None else max_steps,
                enable_checkpointing=max_steps is not None,
                callbacks=[*ddp_callbacks, ShutDownGroup()],  # ShutDownGroup last
                **common,
            )
            path = None
            if resume_from is not None:
                path = next(p for p in (out / "ckpt").glob("*.ckpt") if resume_from in p.name)
            trainer.fit(Tiny(), loader(256 if max_steps is None else 1024), ckpt_path=path)
        return
    energy = TOEnergy(
        [FakeSensor("fake:0", power_w=10.0, clock=clock)],
        window_s=1.0,
        calibration=None,
        clock=clock,
        report_dir=out,
        print_report=False,
    )
    ckpt = ModelCheckpoint(dirpath=out / "ckpt", every_n_train_steps=4, save_top_k=-1)
    callbacks: list[Callback] = [Advance(clock), energy, ckpt]
    if mode == "kill":
        callbacks.append(DieAt(6))
        trainer = Trainer(max_steps=12, callbacks=callbacks, **common)
        trainer.fit(Tiny(), loader(1024))
    elif mode == "resume":
        trainer = Trainer(max_steps=12, callbacks=callbacks, **common)
        path = next(p for p in (out / "ckpt").glob("*.ckpt") if "step=4" in p.name)
        trainer.fit(Tiny(), loader(1024), ckpt_path=path)
    else:
        raise SystemExit(f"unknown mode {mode!r}: expected ddp, ddp-resume, kill or resume")


if __name__ == "__main__":
    main()
