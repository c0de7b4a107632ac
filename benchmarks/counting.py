"""What counting costs: a counted train step against FlopCounterMode, and a replayed one.

For a small CNN and a small transformer, on CPU (and on CUDA when available), prints the
median time of a train step (forward, backward, AdamW step) run plainly, under ``OpCounter``
(module attribution on) and under ``FlopCounterMode``, and the ratio of the time counting adds
to the time FlopCounterMode adds (goal <= 0.5). Then the per-step cost of a replayed step:
capturing its signature, looking it up in the cache and adding its profile to a window's
running total (goal <= 20 us).

Run: ``python benchmarks/counting.py [--rounds 100] [--device cpu|cuda|all]``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _models import TinyCNN, TinyGPT
from lightning_to_energy.counting import (
    OpCounter,
    ProfileCache,
    ProfileSum,
    StepSignature,
    profile,
)


def _cases(device: torch.device) -> list[tuple[str, torch.nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    return [
        ("cnn", TinyCNN().to(device), torch.randn(8, 3, 16, 16, device=device)),
        ("transformer", TinyGPT().to(device), torch.randint(0, 64, (4, 32), device=device)),
    ]


def _step_timer(
    model: torch.nn.Module, batch: torch.Tensor, device: torch.device
) -> Callable[[Callable[[], Any]], float]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed(context: Callable[[], Any]) -> float:
        sync()
        t0 = time.perf_counter()
        with context():
            model(batch).float().sum().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        sync()
        return time.perf_counter() - t0

    return timed


def bench_counting(device: torch.device, rounds: int) -> None:
    print(f"\n== counted train step, {device} (median of {rounds} interleaved rounds) ==")
    print(f"{'model':<12} {'plain':>9} {'OpCounter':>10} {'FlopCounter':>12} {'ratio':>7}")
    for name, model, batch in _cases(device):
        timed = _step_timer(model, batch, device)
        contexts: dict[str, Callable[[], Any]] = {
            "plain": contextlib.nullcontext,
            "ours": partial(OpCounter, module=model),
            "fcm": lambda: FlopCounterMode(display=False),
        }
        times: dict[str, list[float]] = {k: [] for k in contexts}
        for i in range(rounds + 5):
            for key, context in contexts.items():
                t = timed(context)
                if i >= 5:  # warm-up: lazy optimizer state, allocator, memo tables
                    times[key].append(t)
        med = {k: statistics.median(v) for k, v in times.items()}
        ratio = (med["ours"] - med["plain"]) / (med["fcm"] - med["plain"])
        print(
            f"{name:<12} {med['plain'] * 1e3:>7.2f}ms {med['ours'] * 1e3:>8.2f}ms "
            f"{med['fcm'] * 1e3:>10.2f}ms {ratio:>7.2f}"
        )


def bench_replay(device: torch.device, n: int = 20_000) -> None:
    print(f"\n== replayed step, {device} (mean of {n}) ==")
    for name, model, batch in _cases(device):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        cache = ProfileCache(recheck_every=10**9)
        sig = StepSignature.capture(batch, model, optimizer=opt)
        # The first count of a signature is provisional (the cache asks for the second step
        # too): store twice so that every step below is a replay.
        counted = profile(model, batch, train=True, optimizer="adamw")
        cache.store(sig, counted)
        cache.store(sig, counted)
        window = ProfileSum()

        t0 = time.perf_counter()
        for _ in range(n):
            StepSignature.capture(batch, model, optimizer=opt)
        capture_us = (time.perf_counter() - t0) / n * 1e6

        t0 = time.perf_counter()
        for _ in range(n):
            s = StepSignature.capture(batch, model, optimizer=opt)
            if cache.needs_count(s):
                raise AssertionError("the benchmark expects replays only")
            found = cache.lookup(s)
            assert found is not None
            window.add(found)
        replay_us = (time.perf_counter() - t0) / n * 1e6
        print(
            f"{name:<12} signature capture {capture_us:6.2f} us, "
            f"capture + lookup + window add {replay_us:6.2f} us per step"
        )


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (``tests/test_benchmarks.py`` checks
    ``benchmarks/gpu_session.sh`` against it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--device", choices=("cpu", "cuda", "all"), default="all")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device (use --device cpu or all)")
    torch.set_num_threads(args.threads)
    devices = []
    if args.device in ("cpu", "all"):
        devices.append(torch.device("cpu"))
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    elif args.device == "all":
        print("CUDA part skipped: torch sees no CUDA device")
    print(f"torch {torch.__version__}, {args.threads} CPU thread(s)")
    for device in devices:
        bench_counting(device, args.rounds)
        bench_replay(device)


if __name__ == "__main__":
    main()
