"""What TOEnergy adds to a training step, next to no callback and Lightning's ThroughputMonitor.

Every variant trains the same model on the same data with a fresh ``Trainer`` (no progress bar,
logger, checkpointing or model summary), so only the callbacks differ:

- ``baseline``: no callback;
- ``toenergy``: ``TOEnergy()`` with ``sensors="auto"`` (NVML on a GPU; on a machine without a
  readable counter, the labelled CPU-time estimate);
- ``toe-fake``: ``TOEnergy`` over a ``FakeSensor`` (a constant 100 W, no hardware read), with
  the same window cadence as the estimate (1 s): our own cost, apart from the sensor's;
- ``throughput``: Lightning's ``ThroughputMonitor`` (the reference; it syncs CUDA every step).

Rounds are interleaved (each round runs every variant once, in a rotated order) so that machine
noise hits all variants alike. In each run the first ``--warmup`` steps are not timed; the time
from the start of the first timed step to the end of the last one, divided by the number of
timed steps, is that run's step time (a default CPU run of 140 steps, about 4 s, spans two
window closes of the default 2 s windows). Two timing callbacks bracket the others (one first
and one last in ``trainer.callbacks``); on CUDA they synchronise only at the edges of the timed
span and of the first steps. Overheads are medians over rounds of the paired ratio variant /
baseline, in wall time and in process CPU time.

On a shared machine the end-to-end figures move by several percent from run to run, more than
the callbacks cost. So the timers also take the wall time spent *inside* the benchmarked
callbacks' per-step hooks (between the first timer's hook and the last timer's same hook only
those callbacks run), less the baseline's (the timers alone). That figure misses indirect costs
(caches, the allocator) and, on a GPU, overlaps with queued GPU work, but it resolves
microseconds.

Steps 0 and 1 are reported apart: TOEnergy counts both under the dispatch mode (the first count
of a step signature is provisional, its second step is counted again), then once every
``recheck_every`` replays. So are the ``on_train_start`` and ``on_fit_end`` hooks (sensor
discovery at the start; the report built and saved at the end).

First, the tracker alone (``EnergyTracker`` over a ``FakeSensor``, no model work, CPU side),
in a process that has not closed a window yet: the cost of a replayed step, of the first window
close, and of a window close after ``--close-at`` windows (the
cost of a close must not grow with the length of the run).

Goals: TOEnergy's overhead at most 1 % on a GPU, at most 3 % on a CPU, and below
ThroughputMonitor's.

Run (about 6 minutes on a 2-core CPU with the defaults):
``PYTHONPATH=src python benchmarks/overhead.py [--rounds 10] [--steps 140] [--warmup 5]
[--device cpu|cuda] [--precision 32-true|bf16-mixed] [--model cnn|gpt] [--threads 1]
[--close-at 10,1000,10000]``.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import logging
import math
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, ThroughputMonitor
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from lightning_to_energy import TOEnergy
from lightning_to_energy.reporting.records import WindowRecord
from lightning_to_energy.sensors import FakeSensor
from lightning_to_energy.tracking.tracker import DEFAULT_MIN_WINDOW_S, EnergyTracker

VARIANTS = ("baseline", "toenergy", "toe-fake", "throughput")
SENSORS_SEEN: dict[str, str] = {}  # TOEnergy variant -> the sensors its report names


# --- models -----------------------------------------------------------------------------------


class BenchCNN(nn.Module):
    """Three conv-bn-relu stages (two with max-pooling), then a linear head; [B, 3, 32, 32]."""

    def __init__(self, width: int = 16, classes: int = 10) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1, bias=False),
            nn.BatchNorm2d(4 * w),
            nn.ReLU(),
        )
        # 32 -> 16 -> 8 after two poolings: 4w channels x 8 x 8
        self.head = nn.Linear(4 * w * 8 * 8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class BenchGPT(nn.Module):
    """A decoder-only transformer: embeddings, pre-norm causal blocks, an LM head; [B, T] ids."""

    def __init__(self, vocab: int, dim: int, heads: int, layers: int, seq: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(seq, dim)
        layer = nn.TransformerEncoderLayer(
            dim, heads, 4 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(seq))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        x = self.blocks(x, mask=self.get_buffer("mask")[:t, :t], is_causal=True)
        return self.head(self.ln(x))


@dataclass(frozen=True)
class Workload:
    """A model factory and a fixed data set of ``steps`` batches."""

    name: str
    description: str
    make: Callable[[], nn.Module]
    inputs: torch.Tensor
    targets: torch.Tensor
    batch_size: int


def make_workload(model: str, device: str, steps: int) -> Workload:
    """The model sized for ``device``: >= 10 ms a step (CPU with 1 thread, or an H100)."""
    g = torch.Generator().manual_seed(0)
    if model == "cnn":
        # CPU: width 16, batch 32 of 32x32 images. CUDA: width 128, batch 512.
        width, batch = (16, 32) if device == "cpu" else (128, 512)
        inputs = torch.randn(steps * batch, 3, 32, 32, generator=g)
        targets = torch.randint(0, 10, (steps * batch,), generator=g)
        return Workload(
            "cnn",
            f"BenchCNN(width={width}), batch {batch} x 3 x 32 x 32, AdamW",
            lambda: BenchCNN(width),
            inputs,
            targets,
            batch,
        )
    # CPU: a small GPT to exercise the path; CUDA: about 100 M parameters, 8 k tokens a step.
    vocab, dim, heads, layers, seq, batch = (
        (512, 128, 4, 2, 64, 8) if device == "cpu" else (8192, 1024, 16, 8, 512, 16)
    )
    tokens = torch.randint(0, vocab, (steps * batch, seq + 1), generator=g)
    return Workload(
        "gpt",
        f"BenchGPT(vocab={vocab}, dim={dim}, heads={heads}, layers={layers}), "
        f"batch {batch} x {seq} tokens, AdamW",
        lambda: BenchGPT(vocab, dim, heads, layers, seq),
        tokens[:, :-1].contiguous(),
        tokens[:, 1:].contiguous(),
        batch,
    )


class BenchModule(LightningModule):
    """Cross-entropy training of ``net`` with AdamW; exposes ``flops_per_batch``."""

    def __init__(self, net: nn.Module, flops_per_batch: int) -> None:
        super().__init__()
        self.net = net
        self.flops_per_batch = flops_per_batch  # read by ThroughputMonitor on every step

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self.net(x)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-4)


def flops_per_batch(work: Workload) -> int:
    """FLOPs of one forward and backward pass, for ThroughputMonitor (on the meta device)."""
    with torch.device("meta"):
        net = work.make()
    x = work.inputs[: work.batch_size].to("meta")
    y = work.targets[: work.batch_size].to("meta")
    with FlopCounterMode(display=False) as fcm:
        logits = net(x)
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).backward()
    return int(fcm.get_total_flops())


# --- timing -----------------------------------------------------------------------------------


Mark = tuple[float, float]  # (wall seconds, process CPU seconds)

# The per-step hooks that TOEnergy or ThroughputMonitor implement (besides batch start and end).
_STEP_HOOKS = (
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
)


@dataclass
class RunTimes:
    """Marks of one ``fit``, written by the two timing callbacks."""

    step_start: dict[int, Mark] = field(default_factory=dict)
    step_end: dict[int, Mark] = field(default_factory=dict)
    train_start: list[Mark] = field(default_factory=list)
    fit_end: list[Mark] = field(default_factory=list)
    # Wall seconds spent inside the callbacks between the two timers, per step.
    in_hooks_s: dict[int, float] = field(default_factory=dict)
    step: int = -1
    hook_t0: float = 0.0


class _Timer(Callback):
    """Marks hook times. The ``first`` timer runs before every other callback, the last after.

    Between the first timer's hook and the last timer's same hook run only the benchmarked
    callbacks' hooks, so the time from one to the other is what those callbacks cost there.
    """

    def __init__(self, times: RunTimes, first: bool, timed: tuple[int, int], sync: bool) -> None:
        self.times = times
        self.first = first
        self.timed = timed  # (first timed step, last timed step)
        self.sync = sync
        for hook in _STEP_HOOKS:
            setattr(self, hook, self._hook)

    def _now(self, sync: bool) -> Mark:
        if sync and self.sync:
            torch.cuda.synchronize()
        return time.perf_counter(), time.process_time()

    def _hook(self, *args: Any, **kwargs: Any) -> None:
        t = self.times
        if self.first:
            t.hook_t0 = time.perf_counter()
        elif t.step >= 0:
            t.in_hooks_s[t.step] += time.perf_counter() - t.hook_t0

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.times.train_start.append(self._now(True))

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        t = self.times
        if self.first:
            t.step = batch_idx
            t.in_hooks_s[batch_idx] = 0.0
            t.step_start[batch_idx] = self._now(batch_idx in (0, self.timed[0]))
        else:
            t.in_hooks_s[batch_idx] += time.perf_counter() - t.step_start[batch_idx][0]

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        t = self.times
        if self.first:
            t.hook_t0 = time.perf_counter()
            return
        t.in_hooks_s[batch_idx] += time.perf_counter() - t.hook_t0  # before any sync
        edges = (0, 1, self.timed[0] - 1, self.timed[1])
        t.step_end[batch_idx] = self._now(batch_idx in edges)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.times.fit_end.append(self._now(True))


@dataclass(frozen=True)
class RunResult:
    """One variant's figures from one ``fit`` (wall seconds unless named ``cpu``)."""

    step_s: float  # mean wall time of a timed step
    cpu_step_s: float  # mean process CPU time of a timed step
    in_hooks_s: float  # mean time inside the benchmarked callbacks' hooks, per timed step
    step0_s: float  # step 0: under TOEnergy, counted (provisionally)
    step1_s: float  # step 1: counted again (the steady state; replays use this count)
    warmup_s: float  # the untimed steps 0 .. warmup - 1, end to end
    train_start_s: float  # the on_train_start hooks of the callbacks in between the timers
    fit_end_s: float  # the on_fit_end hooks (TOEnergy builds and saves its report here)
    closes: int = 0  # TOEnergy train windows closed inside the timed steps (0 without it)


def make_callbacks(variant: str, report_dir: str, batch_size_fn: Callable[[Any], int]) -> list[Any]:
    """The callbacks of ``variant``, between the timers."""
    quiet: dict[str, Any] = {"print_report": False, "calibration": None, "report_dir": report_dir}
    if variant == "baseline":
        return []
    if variant == "toenergy":
        return [TOEnergy(**quiet)]
    if variant == "toe-fake":
        return [TOEnergy([FakeSensor("fake:0", power_w=100.0)], **quiet)]
    if variant == "throughput":
        return [ThroughputMonitor(batch_size_fn=batch_size_fn)]
    raise ValueError(f"variant: expected one of {VARIANTS}; found {variant!r}.")


def run_once(
    variant: str,
    work: Workload,
    flops: int,
    args: argparse.Namespace,
    report_dir: str,
) -> RunResult:
    """Train ``args.steps`` steps of ``work`` under ``variant``'s callbacks and time them."""
    torch.manual_seed(0)
    module = BenchModule(work.make(), flops)
    loader = DataLoader(
        TensorDataset(work.inputs, work.targets), batch_size=work.batch_size, shuffle=False
    )
    timed = (args.warmup, args.steps - 1)
    times = RunTimes()
    sync = args.device == "cuda"
    callbacks = [
        _Timer(times, True, timed, sync),
        *make_callbacks(variant, report_dir, lambda batch: int(batch[0].shape[0])),
        _Timer(times, False, timed, sync),
    ]
    trainer = Trainer(
        accelerator="gpu" if args.device == "cuda" else "cpu",
        devices=1,
        precision=args.precision,
        max_steps=args.steps,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=report_dir,
    )
    placed = trainer.callbacks  # type: ignore[attr-defined]
    if placed[0] is not callbacks[0] or placed[-1] is not callbacks[-1]:
        raise RuntimeError("the timing callbacks must be first and last in trainer.callbacks")
    gc.collect()
    trainer.fit(module, loader)
    closes = 0
    for cb in callbacks:
        if not isinstance(cb, TOEnergy) or cb.report is None:
            continue
        if variant not in SENSORS_SEEN:
            SENSORS_SEEN[variant] = "; ".join(f"{s.domain}: {s.source}" for s in cb.report.sensors)
        closes += timed_closes(cb.report.windows, timed)
    first, last = times.step_start[timed[0]], times.step_end[timed[1]]
    n_timed = timed[1] - timed[0] + 1
    start, end = times.step_start, times.step_end
    return RunResult(
        step_s=(last[0] - first[0]) / n_timed,
        cpu_step_s=(last[1] - first[1]) / n_timed,
        in_hooks_s=sum(times.in_hooks_s[i] for i in range(timed[0], timed[1] + 1)) / n_timed,
        step0_s=end[0][0] - start[0][0],
        step1_s=end[1][0] - start[1][0],
        warmup_s=end[timed[0] - 1][0] - start[0][0],
        train_start_s=times.train_start[1][0] - times.train_start[0][0],
        fit_end_s=times.fit_end[1][0] - times.fit_end[0][0],
        closes=closes,
    )


def timed_closes(windows: Sequence[WindowRecord], timed: tuple[int, int]) -> int:
    """How many train windows closed inside the timed steps ``timed`` (first, last).

    A window that falls due closes in the hooks of its last step, before the timer that ends
    the step (the last callback): one ending at the last timed step counts too. The one still
    open after the last step closes at the end of training, outside the timed span: it is the
    ``boundary`` window ending there, not counted.
    """
    first, last = timed
    return sum(
        first <= end < last or (end == last and "boundary" not in w.flags)
        for w in windows
        if w.loop == "train"
        for end in (w.first_step + w.steps - 1,)
    )


# --- report -----------------------------------------------------------------------------------


def _pct(ratio: float) -> str:
    return f"{(ratio - 1.0) * 100:+.2f} %"


def _paired(runs: Sequence[RunResult], base: Sequence[RunResult], attr: str) -> float:
    """Median over rounds of (run / baseline run of the same round) - 1."""
    return (
        statistics.median(
            getattr(r, attr) / getattr(b, attr) for r, b in zip(runs, base, strict=True)
        )
        - 1.0
    )


def _spread(values: Sequence[float]) -> float:
    """Interquartile range as a fraction of the median."""
    if len(values) < 2:
        return 0.0
    q = statistics.quantiles(values, n=4)
    return (q[2] - q[0]) / statistics.median(values)


def summarise(results: dict[str, list[RunResult]], args: argparse.Namespace) -> None:
    """Print the table, the overheads, the one-time costs and the goals."""
    base = results["baseline"]
    fields = RunResult.__dataclass_fields__
    med = {
        v: {a: statistics.median(getattr(r, a) for r in runs) for a in fields}
        for v, runs in results.items()
    }
    b = med["baseline"]
    print(
        f"\nbaseline step: wall {b['step_s'] * 1e3:.3f} ms (interquartile range "
        f"{_spread([r.step_s for r in base]) * 100:.1f} % of the median over {len(base)} rounds),"
        f" process CPU {b['cpu_step_s'] * 1e3:.3f} ms "
        f"({_spread([r.cpu_step_s for r in base]) * 100:.1f} %)"
    )
    if b["step_s"] < 0.010:
        print("  NB: under 10 ms a step; callback overheads weigh more than on a real workload.")
    print(
        f"{'variant':<12} {'wall ms':>8} {'overhead':>9} {'CPU ms':>8} {'overhead':>9} "
        f"{'hooks us':>9} {'overhead':>9} {'step0 ms':>9} {'step1 ms':>9} {'start ms':>9} "
        f"{'end ms':>8}"
    )
    wall: dict[str, float] = {}
    hooks: dict[str, float] = {}
    for variant, runs in results.items():
        m = med[variant]
        wall[variant] = _paired(runs, base, "step_s")
        cpu = _paired(runs, base, "cpu_step_s")
        # The timers' own cost sits in the baseline's figure: subtract it.
        hooks_s = m["in_hooks_s"] - b["in_hooks_s"]
        hooks[variant] = hooks_s / b["step_s"]
        print(
            f"{variant:<12} {m['step_s'] * 1e3:>8.3f} {wall[variant] * 100:>+7.2f} % "
            f"{m['cpu_step_s'] * 1e3:>8.3f} {cpu * 100:>+7.2f} % "
            f"{hooks_s * 1e6:>9.1f} {hooks[variant] * 100:>+7.3f} % "
            f"{m['step0_s'] * 1e3:>9.2f} {m['step1_s'] * 1e3:>9.2f} "
            f"{m['train_start_s'] * 1e3:>9.2f} {m['fit_end_s'] * 1e3:>8.2f}"
        )
    print(
        "  wall / CPU ms: a timed step's mean wall / process-CPU time in a run, median over"
        "\n  rounds; overhead: median over rounds of (variant / baseline of the same round) - 1."
        "\n  hooks us: wall time inside the callbacks' per-step hooks (train batch start and end,"
        "\n  before/after backward, before optimizer step, before zero_grad), per timed step,"
        "\n  median over rounds, less the baseline's (the timers alone); overhead: that time over"
        "\n  the baseline's wall step. step0 / step1: the first two steps (wall; TOEnergy counts"
        "\n  both); start / end: the callbacks' on_train_start / on_fit_end hooks (wall)."
    )
    if "toenergy" not in results:
        return
    t = med["toenergy"]
    one_off = t["warmup_s"] - b["warmup_s"]
    recount = t["step1_s"] - b["step1_s"]
    print(
        f"\none-time cost (TOEnergy minus baseline over the {args.warmup} untimed steps, two of"
        f" them counted): {one_off * 1e3:.2f} ms = {one_off / b['step_s']:.2f} baseline steps"
        f"\n  (step 0: {(t['step0_s'] - b['step0_s']) * 1e3:+.2f} ms, step 1: "
        f"{recount * 1e3:+.2f} ms); one re-count per recheck_every=1000 steps (as step 1) adds"
        f" about {recount / b['step_s'] / 1000 * 100:.3f} %."
    )
    print(
        f"end of fit (report built and saved, PNG included): "
        f"{(t['fit_end_s'] - b['fit_end_s']) * 1e3:.0f} ms, once per fit."
    )
    print(closes_line(results, args, b["step_s"]))
    goal = 1.0 if args.device == "cuda" else 3.0
    noise = _spread([r.step_s for r in base]) * 100
    print(
        f"\ngoal: TOEnergy overhead <= {goal:g} % on {args.device}, and below ThroughputMonitor's"
    )
    for name, figures in (("end to end (wall)", wall), ("inside the hooks", hooks)):
        toe = figures["toenergy"]
        line = f"  {name:<18} TOEnergy {toe * 100:+.3f} % (<= {goal:g} %: "
        line += f"{'met' if toe * 100 <= goal else 'NOT met'})"
        if "throughput" in figures:
            tm = figures["throughput"]
            ratio = f"{toe / tm:.2f}" if tm > 0 and toe > 0 else "n/a (an overhead <= 0)"
            line += (
                f", ThroughputMonitor {tm * 100:+.3f} %, ratio {ratio} (below it: "
                f"{'yes' if toe < tm else 'no'})"
            )
        print(line)
    print(
        f"  NB: the end-to-end figures cannot resolve differences much below the baseline's"
        f" spread\n  ({noise:.1f} % here); the in-hook figures miss indirect costs (caches,"
        " allocator) but not noise."
    )


def closes_line(
    results: dict[str, list[RunResult]], args: argparse.Namespace, base_step_s: float
) -> str:
    """The window closes per run inside the timed steps, and a warning when TOEnergy had none.

    The window close is TOEnergy's costliest moment (a CUDA sync, the sensor reads, the
    regression update): a timed span without one measures the replayed steps only.
    """
    counts = {
        v: statistics.median(r.closes for r in runs)
        for v, runs in results.items()
        if v in ("toenergy", "toe-fake")
    }
    line = "window closes inside the timed steps, median per run: " + ", ".join(
        f"{v} {n:g}" for v, n in counts.items()
    )
    if counts.get("toenergy", 1) < 1:
        # steps for two default windows: warmup + 2 x window / step
        wanted = args.warmup + math.ceil(2 * DEFAULT_MIN_WINDOW_S / base_step_s)
        line += (
            f"\n  NB: no TOEnergy window closed inside the timed steps (timed span "
            f"{(args.steps - args.warmup) * base_step_s:.2f} s, windows of at least "
            f"{DEFAULT_MIN_WINDOW_S:g} s),\n  so the overheads above miss the per-window cost "
            f"(CUDA sync, sensor reads, regression update). Fix: --steps {wanted} or more."
        )
    return line


# --- the tracker alone ------------------------------------------------------------------------


def _train_step(
    net: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> None:
    logits = net(x)
    F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def _replay(tracker: EnergyTracker, batch: Any) -> None:
    # What TOEnergy does on a replayed train step, without the model's work in between.
    tracker.begin_step(batch, loop="train", will_step=True)
    tracker.set_phase("forward")
    tracker.set_phase("backward")
    tracker.set_phase("optimizer")
    tracker.end_step(loop="train")


def tracker_costs(work: Workload, close_at: Sequence[int], n_replays: int = 2000) -> None:
    """Print the tracker's own per-step and per-window costs (CPU side, no model work)."""
    print("\n== the tracker alone (EnergyTracker over a FakeSensor; CPU side, no model work) ==")
    net = work.make()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x, y = work.inputs[: work.batch_size], work.targets[: work.batch_size]
    batch = [x, y]
    # A window that never closes by itself: closes happen only where this function asks.
    tracker = EnergyTracker(
        net, opt, sensors=[FakeSensor("fake:0", power_w=100.0)], calibration=None, window_s=1e9
    )
    tracker.start()
    with tracker.step(batch):  # the counted step
        _train_step(net, opt, x, y)
    for _ in range(100):
        _replay(tracker, batch)
    t0 = time.perf_counter()
    for _ in range(n_replays):
        _replay(tracker, batch)
    replay_s = (time.perf_counter() - t0) / n_replays
    print(f"replayed step (begin, 3 phases, end): {replay_s * 1e6:8.1f} us")

    t0 = time.perf_counter()
    tracker.close_window()
    first_s = time.perf_counter() - t0
    print(f"first window close: {first_s * 1e3:8.2f} ms (the solver was warmed at start)")

    def step_and_close() -> None:
        _replay(tracker, batch)
        tracker.close_window()

    for target in close_at:
        while len(tracker.windows) < target:
            step_and_close()
        n = 50
        t0 = time.perf_counter()
        for _ in range(n):
            step_and_close()
        close_s = (time.perf_counter() - t0) / n - replay_s
        print(
            f"window close after {target:>6} windows: {close_s * 1e3:8.3f} ms "
            f"({close_s * 100 / DEFAULT_MIN_WINDOW_S:.3f} % of a default "
            f"{DEFAULT_MIN_WINDOW_S:g} s window)"
        )


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def build_parser() -> argparse.ArgumentParser:
    """The command line of this benchmark (``tests/test_benchmarks.py`` checks
    ``benchmarks/gpu_session.sh`` against it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default 10)")
    parser.add_argument("--steps", type=int, default=140, help="steps per run (default 140)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per run (default 5)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--precision", default=None, help="Trainer precision (default 32-true; cuda bf16-mixed)"
    )
    parser.add_argument(
        "--model",
        choices=("cnn", "gpt"),
        default=None,
        help="workload (default cnn on cpu, gpt on cuda)",
    )
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated, from {VARIANTS}"
    )
    parser.add_argument(
        "--close-at",
        default="10,1000,10000",
        help="time a window close after this many windows (comma-separated; '' skips)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.warmup < 2 or args.steps <= args.warmup:
        parser.error("need 2 <= --warmup < --steps (steps 0 and 1 are counted, never timed)")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if "baseline" not in variants or any(v not in VARIANTS for v in variants):
        parser.error(f"--variants must include baseline and name only {VARIANTS}")
    args.precision = args.precision or ("bf16-mixed" if args.device == "cuda" else "32-true")
    args.model = args.model or ("gpt" if args.device == "cuda" else "cnn")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")  # Lightning's data-loader hints, the estimate notice
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)

    work = make_workload(args.model, args.device, args.steps)
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    print(f"benchmarks/overhead.py, {now}")
    print(
        f"CPU {_cpu_name()}, {torch.get_num_threads()} torch thread(s); torch {torch.__version__}"
        f", lightning {lightning.__version__}, Python {platform.python_version()}"
    )
    if args.device == "cuda":
        print(f"GPU {torch.cuda.get_device_name()}")
    print(f"workload: {work.description}; precision {args.precision}; device {args.device}")
    print(
        f"{args.rounds} interleaved rounds x {len(variants)} variants; {args.steps} steps per run,"
        f" the first {args.warmup} untimed"
    )
    # The tracker alone first, in a process that has not yet closed a window: the first close
    # then shows what a user's first window costs.
    close_at = [int(v) for v in args.close_at.split(",") if v.strip()]
    if close_at:
        tracker_costs(make_workload(args.model, "cpu", 1), close_at)
        print()
    flops = flops_per_batch(work)
    results: dict[str, list[RunResult]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        # One untimed run of every variant: imports, lazy initialisation, allocator warm-up.
        for variant in variants:
            run_once(variant, work, flops, args, tmp)
        for r in range(args.rounds):
            # Rotate the order so no variant always runs first (or right after another).
            k = r % len(variants)
            for variant in variants[k:] + variants[:k]:
                results[variant].append(run_once(variant, work, flops, args, tmp))
            line = ", ".join(f"{v} {results[v][-1].step_s * 1e3:.2f}" for v in variants)
            print(f"  round {r + 1}/{args.rounds} (ms/step): {line}", flush=True)
    for variant, sensors in SENSORS_SEEN.items():
        print(f"{variant} sensors: {sensors}")
    summarise(results, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
