"""Does ``predict`` plan a real Lightning run's seconds per step? (issue 14, "done when").

On a machine whose energy is only estimated (no RAPL, no NVML) the joules of a run say little,
so this checks the step time ``predict`` plans with against real Lightning runs of the same
small model (an MLP on 64 features, batch 128, AdamW, a TQDM progress bar, as a user runs it):

1. one calibration run: ``Trainer(callbacks=[TOEnergy(calibration=FILE)])`` for ``--steps``
   steps (an explicit calibration file keeps the run's windows, estimated ones included, and
   records their sensor kind);
2. ``lightning-to-energy predict`` on that file (``--json``), which names its step time and
   where it came from; also the other two sources for reference: the step model with the
   stated Lightning overhead (a calibration holding no run of this model) and a bare step;
3. ``--runs`` (3) more Lightning runs of the same model, each timed end to end (``trainer.fit``
   wall time over its steps) and by TOEnergy's train windows (their seconds over their steps),
   each followed by bare steps of the same model (no Lightning): the difference is Lightning's
   per-step overhead on this machine.

Prints one JSON object: predicted seconds per step from each source, measured per run, and the
relative errors. Run from the repository root: ``python benchmarks/predict_step_time.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import platform
import statistics
import sys
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

BATCH = 128
FEATURES = 64
CLASSES = 10


def mlp() -> nn.Module:
    """The planned model: 64 -> 512 -> 512 -> 10 with ReLUs (``predict`` loads it by name)."""
    return nn.Sequential(
        nn.Linear(FEATURES, 512),
        nn.ReLU(),
        nn.Linear(512, 512),
        nn.ReLU(),
        nn.Linear(512, CLASSES),
    )


class Classifier(LightningModule):
    """The MLP under Lightning: cross-entropy, AdamW (what ``predict`` counts by default)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = mlp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


def lightning_run(steps: int, calibration: Path | None, report_dir: Path) -> dict[str, float]:
    """One Lightning run of ``steps`` steps: its wall seconds per step, and TOEnergy's.

    Its report files go to ``report_dir`` (not the working directory).
    """
    from lightning_to_energy import TOEnergy

    torch.manual_seed(0)
    data = TensorDataset(
        torch.randn(steps * BATCH, FEATURES), torch.randint(0, CLASSES, (steps * BATCH,))
    )
    callback = TOEnergy(
        calibration=str(calibration) if calibration else None, report_dir=report_dir, plot=False
    )
    trainer = Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[callback],
    )
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the end-of-run report
        trainer.fit(Classifier(), DataLoader(data, batch_size=BATCH, shuffle=True))
    wall_s = time.perf_counter() - start
    report = callback.report
    assert report is not None
    train = report.loops["train"]
    return {"wall_s_per_step": wall_s / steps, "windows_s_per_step": train.duration_s / train.steps}


def bare_step_s(steps: int = 50) -> float:
    """Median seconds of a bare training step of the same model (no Lightning), for the
    Lightning overhead: a Lightning run's seconds per step less this."""
    torch.manual_seed(0)
    model = mlp()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(BATCH, FEATURES), torch.randint(0, CLASSES, (BATCH,))
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
        if i:  # the first is a warm-up
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def predict(calibration: Path, *extra: str) -> dict[str, Any]:
    """``lightning-to-energy predict predict_step_time:mlp --json`` on ``calibration``."""
    from lightning_to_energy import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        argv = [
            "predict", "predict_step_time:mlp", "--input", f"{BATCH}x{FEATURES}",
            "--steps", "1000", "--calibration", str(calibration), "--json", *extra,
        ]  # fmt: skip
        code = cli.main(argv)
    assert code == 0, out.getvalue()
    result: dict[str, Any] = json.loads(out.getvalue())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="steps per Lightning run")
    parser.add_argument("--runs", type=int, default=3, help="measured runs after calibrating")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads (0: torch's default); 1 keeps a shared machine's "
        "oversubscribed threads from spinning",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    sys.path.insert(0, str(Path(__file__).parent))  # `predict` imports this file's mlp()
    with tempfile.TemporaryDirectory() as tmp:
        calibration = Path(tmp) / "calibration.json"
        lightning_run(args.steps, calibration, Path(tmp))
        planned = predict(calibration)
        # The other sources, for reference: a calibration without this model's runs (a copy
        # whose windows are another step's) takes the step model; --step-overhead 0 shows it bare.
        data = json.loads(calibration.read_text())
        for w in data["windows"]:
            w["features"]["kernels"] *= 3  # no longer this step's: kernels per step differ
        other = Path(tmp) / "other.json"
        other.write_text(json.dumps(data))
        modelled = predict(other)
        measured = []
        for _ in range(args.runs):  # each run next to a bare timing, under the same load
            run = lightning_run(args.steps, None, Path(tmp))
            run["bare_s_per_step"] = bare_step_s()
            measured.append(run)
    wall = [m["wall_s_per_step"] for m in measured]
    windows = [m["windows_s_per_step"] for m in measured]
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
        "steps_per_run": args.steps,
        "torch_threads": torch.get_num_threads(),
        "predicted_s_per_step": planned["step_time_s"],
        "predicted_source": planned["step_time_source"],
        "predicted_detail": planned["step_time_detail"],
        "sensor_kind": planned["sensor_kind"],
        "step_model_s_per_step": modelled["step_time_s"],
        "step_model_detail": modelled["step_time_detail"],
        "measured_wall_s_per_step": wall,
        "measured_windows_s_per_step": windows,
        "rel_err_wall": [planned["step_time_s"] / m - 1 for m in wall],
        "rel_err_windows": [planned["step_time_s"] / m - 1 for m in windows],
        "step_model_rel_err_wall": [modelled["step_time_s"] / m - 1 for m in wall],
        "bare_s_per_step": [m["bare_s_per_step"] for m in measured],
        "lightning_overhead_s_per_step": [
            m["windows_s_per_step"] - m["bare_s_per_step"] for m in measured
        ],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
