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

Prints one JSON object: predicted seconds and joules per step from each source, measured per
run, and the relative errors. The joules are checked (``energy_within_30pct``) only where the
runs' sensor measures (NVML or RAPL: issue 14's "with a measuring sensor, energy within 30 %");
with an estimate, the verdict is null and says why. Run from the repository root:
``python benchmarks/predict_step_time.py [--device cuda]`` (on a GPU, ``--steps 2000``: a run
must span a few energy windows).
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

from lightning_to_energy.sensors.base import MEASURED_KINDS, weakest_kind

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


def lightning_run(
    steps: int, calibration: Path | None, report_dir: Path, device: str = "cpu"
) -> dict[str, Any]:
    """One Lightning run of ``steps`` steps: its wall seconds per step, TOEnergy's, and the
    joules per step of TOEnergy's train windows with their sensor kind.

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
        accelerator=device,
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
    return {
        "wall_s_per_step": wall_s / steps,
        "windows_s_per_step": train.duration_s / train.steps,
        "j_per_step": train.measured_j / train.steps,
        "sensor_kind": weakest_kind({s.kind for s in report.sensors}),
    }


def bare_step_s(steps: int = 50, device: str = "cpu") -> float:
    """Median seconds of a bare training step of the same model (no Lightning), for the
    Lightning overhead: a Lightning run's seconds per step less this."""
    torch.manual_seed(0)
    model = mlp().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(BATCH, FEATURES, device=device)
    y = torch.randint(0, CLASSES, (BATCH,), device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times = []
    for i in range(steps + 1):
        sync()
        start = time.perf_counter()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
        sync()
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


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--steps", type=int, default=300, help="steps per Lightning run")
    parser.add_argument("--runs", type=int, default=3, help="measured runs after calibrating")
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="where the runs train"
    )
    parser.add_argument("--out", default=None, metavar="FILE", help="also write the JSON here")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads (0: torch's default); 1 keeps a shared machine's "
        "oversubscribed threads from spinning",
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    sys.path.insert(0, str(Path(__file__).parent))  # `predict` imports this file's mlp()
    with tempfile.TemporaryDirectory() as tmp:
        calibration = Path(tmp) / "calibration.json"
        lightning_run(args.steps, calibration, Path(tmp), args.device)
        planned = predict(calibration, "--device", args.device)
        # The other sources, for reference: a calibration without this model's runs (a copy
        # whose windows are another step's) takes the step model; --step-overhead 0 shows it bare.
        data = json.loads(calibration.read_text())
        for w in data["windows"]:
            w["features"]["kernels"] *= 3  # no longer this step's: kernels per step differ
        other = Path(tmp) / "other.json"
        other.write_text(json.dumps(data))
        modelled = predict(other, "--device", args.device)
        measured = []
        for _ in range(args.runs):  # each run next to a bare timing, under the same load
            run = lightning_run(args.steps, None, Path(tmp), args.device)
            run["bare_s_per_step"] = bare_step_s(device=args.device)
            measured.append(run)
    wall = [m["wall_s_per_step"] for m in measured]
    windows = [m["windows_s_per_step"] for m in measured]
    joules = [m["j_per_step"] for m in measured]
    kinds = {m["sensor_kind"] for m in measured}
    planned_j = planned["energy_j"] / 1000  # predict planned 1000 steps
    energy_err = [planned_j / j - 1 for j in joules]
    measuring = bool(kinds) and kinds <= MEASURED_KINDS
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}"
        + (f", {torch.cuda.get_device_name()}" if args.device == "cuda" else ""),
        "device": args.device,
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
        "predicted_j_per_step": planned_j,
        "measured_j_per_step": joules,
        "measured_sensor_kinds": sorted(kinds),
        "rel_err_energy": energy_err,
        "energy_within_30pct": all(abs(e) <= 0.30 for e in energy_err) if measuring else None,
        "energy_verdict": "checked: the runs' joules were measured"
        if measuring
        else f"not checked: the runs' joules are {sorted(kinds)}, not measured by hardware",
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
