"""EnergyTracker in a plain PyTorch loop: no Lightning, same counting, measuring and prediction.

Trains a small MLP on scikit-learn's bundled digits (no download) on the CPU::

    python examples/plain_pytorch.py                     # 5 epochs, report printed
    python examples/plain_pytorch.py --epochs 1 --max-steps 20 --out reports/plain --quiet

Each step runs inside ``with tracker.step(batch):``. The first two steps of each new step
signature (batch shapes and dtypes, train or eval, ...) are counted under the dispatch mode (the
first count is provisional); later steps replay the cached count. Steps are grouped into
windows of at least ``--window-s`` seconds, and each window's joules are predicted before they
are measured. At the end the script prints one line per loop with measured joules (and the kind
of sensor behind them), predicted joules (with how many of the loop's windows had a prediction:
the first ones are measured before the model can predict) and transistor operations, a total
that compares predicted and measured joules over the same windows, then the full report
unless ``--quiet``; with ``--out DIR`` it also writes ``energy_report.json`` / ``.csv`` there.
"""

from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from lightning_to_energy import EnergyTracker, render_report, save_report


def digits_loader(batch_size: int, seed: int = 0) -> DataLoader:
    """The 1,797 8x8 digits bundled with scikit-learn, flattened and scaled to [0, 1]."""
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        TensorDataset(x, y),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        generator=generator,
    )


def make_model() -> nn.Module:
    """64 -> 256 -> 256 -> 10 with GELU activations."""
    return nn.Sequential(
        nn.Linear(64, 256),
        nn.GELU(),
        nn.Linear(256, 256),
        nn.GELU(),
        nn.Linear(256, 10),
    )


def main(argv: list[str] | None = None) -> int:
    """Train, track, print the totals; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--window-s", type=float, default=None, help="energy window length (s)")
    parser.add_argument("--out", default=None, help="directory for energy_report.json / .csv")
    parser.add_argument("--quiet", action="store_true", help="do not print the full report")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    loader = digits_loader(args.batch_size)
    model = make_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    steps_planned = args.epochs * len(loader)
    if args.max_steps is not None:
        steps_planned = min(steps_planned, args.max_steps)
    tracker = EnergyTracker(model, optimizer, window_s=args.window_s, total_steps=steps_planned)
    tracker.start()

    step = 0
    model.train()
    for _ in range(args.epochs):
        for x, y in loader:
            if step >= steps_planned:
                break
            with tracker.step((x, y)):
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            step += 1
    # Evaluation steps are windows of their own ("validate"), counted forward-only.
    model.eval()
    with torch.no_grad():
        for x, y in loader:
            with tracker.step((x, y), loop="validate", will_step=False):
                correct = (model(x).argmax(-1) == y).float().mean()
            break
    report = tracker.finish()

    kinds = ", ".join(sorted({s.kind for s in report.sensors})) or "no sensor"
    for name, totals in report.loops.items():
        # The first windows are measured before the model can predict: say how many windows
        # the predicted joules cover, or they read as an under-prediction.
        covered = sum(1 for w in report.windows if w.loop == name and w.predicted_j is not None)
        predicted = (
            "n/a"
            if covered == 0
            else f"{totals.predicted_j:.3f} J"
            + ("" if covered == totals.windows else f" ({covered} of {totals.windows} windows)")
        )
        steps = f"{totals.steps} step" + ("" if totals.steps == 1 else "s")
        windows = f"{totals.windows} window" + ("" if totals.windows == 1 else "s")
        print(
            f"{name}: {steps} in {windows}, "
            f"measured {totals.measured_j:.3f} J ({kinds}), predicted {predicted}, "
            f"{totals.tos:.4g} TOs"
        )
    precision = report.accuracy.get("precision_pct")
    shown = f"{precision:.1f} %" if precision is not None else "n/a"
    paired = [w for w in report.windows if w.predicted_j is not None and w.measured_j is not None]
    print(
        f"total: measured {report.measured_j:.3f} J; {len(paired)} of {len(report.windows)} "
        f"windows predicted: {sum(w.predicted_j or 0.0 for w in paired):.3f} J for "
        f"{sum(w.measured_j or 0.0 for w in paired):.3f} J, precision {shown}"
    )
    print(f"batch accuracy after training: {float(correct):.3f}")
    if args.out:
        saved = save_report(report, args.out, plot=False)
        print(f"report written to {saved.json_path}")
    if not args.quiet:
        render_report(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
