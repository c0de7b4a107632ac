"""The energy scaling study's runner: train each configuration and write one run JSON per config.

Each configuration (:mod:`lightning_to_energy.study.grid`) is trained with
:class:`~lightning_to_energy.callbacks.to_energy.TOEnergy` until it has several trustworthy
energy windows. One training step of it is counted separately with
:func:`~lightning_to_energy.counting.profile` (TOs, FLOPs, bytes, kernels and a roofline time
for the hardware), and both go into ``<id>.run.json`` (format in ``docs/dev/CONTRACTS.md``),
which :mod:`lightning_to_energy.study.evaluation` evaluates. :func:`run_study` is resumable: a
configuration whose run JSON already exists is skipped, and a failing configuration leaves an
``<id>.error.json`` and the study goes on.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import gc
import json
import logging
import math
import os
import platform
import re
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils.data import DataLoader

from lightning_to_energy._files import atomic_write_text, parse_json
from lightning_to_energy.reporting.records import (
    EnergyReport,
    WindowRecord,
    fit_worthy,
)
from lightning_to_energy.sensors.base import MEASURED_KINDS, weakest_kind

if TYPE_CHECKING:
    from lightning_to_energy.hardware.specs import HardwareSpec
    from lightning_to_energy.sensors.base import Sensor
from lightning_to_energy.hardware.detect import resolve_device, resolve_spec
from lightning_to_energy.study.grid import StudyConfig
from lightning_to_energy.study.runs import RUN_FORMAT, RUN_SUFFIX, RUN_VERSION
from lightning_to_energy.study.workload import (
    SEED,
    CyclingBatches,
    build_model,
    count_step,
    make_batches,
)

__all__ = [
    "DEFAULT_MIN_SECONDS",
    "DEFAULT_WINDOWS",
    "ERROR_FORMAT",
    "ERROR_SUFFIX",
    "REPORT_SUFFIX",
    "first_config_guess_s",
    "fit_worthy_windows",
    "is_complete",
    "measured_summary",
    "run_config",
    "run_path",
    "run_study",
]

ERROR_FORMAT = "lightning-to-energy/study-error"
REPORT_SUFFIX = ".report.json"
ERROR_SUFFIX = ".error.json"
"""Samples in the synthetic CIFAR-shaped set."""
"""Distinct batches placed on the device and cycled through (no loading cost during training)."""

DEFAULT_MIN_SECONDS = 8.0
DEFAULT_WINDOWS = 3
_MAX_STEPS = 10_000_000  # "until stopped": the data loader cycles forever


# ----------------------------------------------------------------------------------------------
# Measured windows
# ----------------------------------------------------------------------------------------------


def fit_worthy_windows(windows: Sequence[WindowRecord]) -> list[WindowRecord]:
    """The train windows a study sums: measured (> 0 J), not short, no fault, not flagged
    ``not-fitted``, and not the first train window (it holds the counted step and warm-up)."""
    train = sorted((w for w in windows if w.loop == "train"), key=lambda w: w.index)
    return [w for w in train[1:] if fit_worthy(w.measured_j, w.flags)]


def measured_summary(report: EnergyReport) -> dict[str, Any]:
    """The run JSON's ``measured``: the fit-worthy train windows of ``report`` summed.

    Energy is summed over the domains that were measured (an energy counter or integrated
    power): a CPU-time estimate riding along (passed by name beside a GPU's sensor)
    would mix a model into the measurement, so it is left out and listed in
    ``excluded_j``. Where a GPU (``gpu:N``) was measured, only GPU domains are summed: the
    study's law is then the GPU's, and RAPL zones measure the whole socket, shared with data
    loading, other processes and, on a rented machine, other tenants; they are listed in
    ``excluded_j`` too. With no measured domain at all, every domain is summed and ``kind``
    says ``estimate`` (or ``fake``...). ``kind`` is the weakest kind among the summed domains.

    Raises:
        ValueError: the report has no fit-worthy train window.
    """
    chosen = fit_worthy_windows(report.windows)
    if not chosen:
        train = [w for w in report.windows if w.loop == "train"]
        raise ValueError(
            f"expected at least one fit-worthy train window after the first, found none among "
            f"{len(train)} train windows (flags: {[list(w.flags) for w in train]}). Fix: train "
            "longer (raise min_seconds or steps), or use a sensor that measures."
        )
    steps = sum(w.steps for w in chosen)
    duration_s = math.fsum(w.duration_s for w in chosen)
    by_domain: dict[str, float] = {}
    for w in chosen:
        for domain, joules in w.energy_j.items():
            by_domain[domain] = by_domain.get(domain, 0.0) + joules
    kinds = {s.domain: s.kind for s in report.sensors}
    measured = [d for d in by_domain if kinds.get(d) in MEASURED_KINDS]
    gpus = [d for d in measured if d.startswith("gpu:")]
    summed = gpus or measured or list(by_domain)
    energy_j = math.fsum(by_domain[d] for d in summed)
    return {
        "steps": steps,
        "energy_j": energy_j,
        "duration_s": duration_s,
        "windows": len(chosen),
        "kind": weakest_kind([kinds.get(d, "none") for d in summed]),
        "energy_per_step_j": energy_j / steps,
        "duration_per_step_s": duration_s / steps,
        "power_w": energy_j / duration_s if duration_s > 0 else None,
        "domains": sorted(summed),
        "excluded_j": {d: j for d, j in by_domain.items() if d not in summed},
        "energy_by_domain_j": by_domain,
        "train_windows": sum(1 for w in report.windows if w.loop == "train"),
    }


class _StopWhenMeasured(Callback):
    """Stops training right after a window closes once enough windows and time have passed,
    or at ``max_seconds`` whatever happened (a sensor that never gives a fit-worthy window)."""

    def __init__(
        self,
        energy: Any,
        windows: int,
        min_seconds: float,
        max_seconds: float,
        clock: Callable[[], float],
    ) -> None:
        self.energy = energy
        self.windows = windows
        self.min_seconds = min_seconds
        self.max_seconds = max_seconds
        self.clock = clock
        self._t0 = 0.0
        self._seen = 0

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._t0 = self.clock()

    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        elapsed = self.clock() - self._t0
        if elapsed >= self.max_seconds:
            trainer.should_stop = True
            return
        tracker = self.energy.tracker
        if tracker is None or len(tracker.windows) == self._seen:
            return
        # a window just closed: stopping now leaves no partial window behind
        self._seen = len(tracker.windows)
        if elapsed >= self.min_seconds and len(fit_worthy_windows(tracker.windows)) >= self.windows:
            trainer.should_stop = True


# ----------------------------------------------------------------------------------------------
# One configuration
# ----------------------------------------------------------------------------------------------


def _device_name(device: torch.device, info: Any) -> str:
    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    return str(info.cpu)


def _unknown_key(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "device"
    return f"unknown-{slug}"


def _environment(device: torch.device) -> dict[str, Any]:
    import lightning

    import lightning_to_energy

    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    return {
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "lightning_to_energy": lightning_to_energy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.version.cuda,
        "device": str(device),
        "date": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        # the number formats fp32 work really runs in (see docs/counting.md)
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
    }


def _atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Hush Lightning's per-Trainer banners and data-loader hints for the length of a run."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for pattern in (
                ".*does not have many workers.*",
                ".*Tensor Cores.*",
                ".*`IterableDataset`.*",
                ".*torch.cuda.amp.*",
                ".*enable_nested_tensor.*",
                ".*LeafSpec.*",
            ):
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def run_path(out_dir: str | os.PathLike[str], config: StudyConfig) -> Path:
    """Where ``config``'s run JSON goes."""
    return Path(out_dir) / f"{config.id}{RUN_SUFFIX}"


def run_config(
    config: StudyConfig,
    out_dir: str | os.PathLike[str],
    *,
    device: torch.device | str = "cpu",
    steps: int | None = None,
    min_seconds: float = DEFAULT_MIN_SECONDS,
    windows: int = DEFAULT_WINDOWS,
    max_seconds: float | None = None,
    sensors: str | Sequence[Sensor] = "auto",
    window_s: float | None = None,
    clock: Callable[[], float] | None = None,
    hardware: HardwareSpec | str | None = None,
    callbacks: Sequence[Callback] = (),
    seed: int = SEED,
) -> Path:
    """Train one configuration under ``TOEnergy`` and write ``<id>.run.json``.

    Training runs until ``windows`` fit-worthy train windows beyond the first exist and at
    least ``min_seconds`` have passed (stopping right after a window closes), or for exactly
    ``steps`` steps when given. One step is counted separately (:func:`count_step`). The
    energy report is copied to ``<id>.report.json``; the run JSON is written last and
    atomically, so its presence means the configuration is done.

    Args:
        config: the configuration.
        out_dir: where the files go (created).
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        steps: train exactly this many steps instead of stopping on time and windows.
        min_seconds: the least training time (by ``clock``) before stopping.
        windows: fit-worthy windows wanted beyond the first.
        max_seconds: stop here whatever the windows (default ``max(3 * min_seconds, 60)``).
        sensors: ``"auto"`` or a sequence of sensors (given to ``TOEnergy``).
        window_s: the window length (default: the sensors' minimum trustworthy window).
        clock: seconds (default ``time.perf_counter``); shared by ``TOEnergy`` and the stop rule.
        hardware: the roofline's hardware: a spec, a key of the table, or None to detect it.
        callbacks: extra callbacks, placed before ``TOEnergy`` (tests advance a fake clock).
        seed: weights and batches are drawn from it.

    Returns:
        The run JSON's path.

    Raises:
        ValueError: a bad device or hardware key, or no fit-worthy window was measured.
    """
    from lightning_to_energy.callbacks.to_energy import TOEnergy
    from lightning_to_energy.hardware.identity import HardwareInfo, hardware_fingerprint
    from lightning_to_energy.reporting.codec import report_to_dict

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    spec = resolve_spec(hardware, dev)
    clock = clock or time.perf_counter
    if steps is not None and steps < 1:
        raise ValueError(f"expected steps >= 1 or None, found {steps!r}.")
    if windows < 1 or not min_seconds >= 0:
        raise ValueError(
            f"expected windows >= 1 and min_seconds >= 0, found {windows!r} and {min_seconds!r}."
        )
    max_seconds = max_seconds if max_seconds is not None else max(3.0 * min_seconds, 60.0)

    model = build_model(config, seed=seed)
    batches = make_batches(config, dev, seed=seed)
    per_step = count_step(config, model, batches[0], spec)

    with tempfile.TemporaryDirectory(prefix=f"lte-study-{config.id}-") as scratch:
        energy = TOEnergy(
            sensors,
            window_s=window_s,
            calibration=None,
            clock=clock,
            report_dir=scratch,
            print_report=False,
            plot=False,  # the study keeps the report's JSON; a PNG per configuration costs ~0.5 s
            # NB: a re-count inside a measured window would slow one step by about 2x; the
            # step never changes here, so count it once.
            recheck_every=2**31,
        )
        stop: list[Callback] = []
        if steps is None:
            stop.append(_StopWhenMeasured(energy, windows, min_seconds, max_seconds, clock))
        loader = DataLoader(CyclingBatches(batches), batch_size=None)
        with _quiet_lightning():
            trainer = Trainer(
                accelerator="gpu" if dev.type == "cuda" else "cpu",
                devices=[dev.index] if dev.type == "cuda" else 1,
                precision="bf16-mixed" if config.dtype == "bf16" else "32-true",
                max_steps=steps if steps is not None else _MAX_STEPS,
                max_epochs=1,  # one endless epoch: no epoch boundary cuts a window short
                num_sanity_val_steps=0,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                default_root_dir=scratch,
                callbacks=[*callbacks, energy, *stop],
            )
            trainer.fit(model, train_dataloaders=loader)
    report = energy.report
    if report is None:
        raise RuntimeError(
            f"{config.id}: TOEnergy produced no report after training; see the warnings above."
        )
    measured = measured_summary(report)

    info = HardwareInfo.detect()
    name = _device_name(dev, info)
    report_file = out / f"{config.id}{REPORT_SUFFIX}"
    _atomic_write_json(report_file, report_to_dict(report))
    doc = {
        "format": RUN_FORMAT,
        "version": RUN_VERSION,
        "config": config.to_dict(),
        "hardware": {
            "key": spec.key if spec is not None else _unknown_key(name),
            "name": name,
            "spec_name": spec.name if spec is not None else None,
            "kind": spec.kind if spec is not None else ("gpu" if dev.type == "cuda" else "cpu"),
            "fingerprint": {"id": hardware_fingerprint(info), **info.to_dict()},
        },
        "sensors": [
            {"domain": s.domain, "kind": s.kind, "source": s.source} for s in report.sensors
        ],
        "environment": _environment(dev),
        "per_step": per_step,
        "measured": measured,
        "report": report_file.name,
    }
    path = run_path(out, config)
    _atomic_write_json(path, doc)
    return path


def first_config_guess_s(min_seconds: float) -> float:
    """How long :func:`run_study` expects a configuration to take before one has run in the
    call (``2 * min_seconds + 30`` s: training, the counted step and the Trainer's set-up)."""
    return 2.0 * min_seconds + 30.0


def _hardware_key(spec: HardwareSpec | None, device: torch.device) -> str:
    """The ``hardware.key`` a run JSON measured on ``device`` with ``spec`` gets."""
    if spec is not None:
        return spec.key
    from lightning_to_energy.hardware.identity import HardwareInfo

    return _unknown_key(_device_name(device, HardwareInfo.detect()))


def _check_same_hardware(out: Path, key: str) -> None:
    """Refuse to add runs of ``key`` to a directory holding runs of other hardware.

    ``study eval`` fits one energy law per machine and refuses such a mix; resuming a study on
    another machine (an H200 where an H100 began it) would otherwise skip the done
    configurations, measure the rest elsewhere, and leave a directory no evaluation can read.
    """
    if not out.is_dir():
        return
    others: dict[str, str] = {}
    for path in sorted(out.glob(f"*{RUN_SUFFIX}")):
        try:
            data = parse_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # unreadable: is_complete() reruns it
        hw = data.get("hardware") if isinstance(data, dict) else None
        found = hw.get("key") if isinstance(hw, dict) else None
        if isinstance(found, str) and found != key:
            others.setdefault(found, path.name)
    if others:
        listed = ", ".join(f"{k} (e.g. {name})" for k, name in sorted(others.items()))
        raise ValueError(
            f"expected {out} to hold runs of this hardware ({key}) only, found runs of {listed}. "
            "Fix: give each hardware its own output directory (e.g. study-" + key + "), move "
            "those runs away to measure them again here, or pass --hardware with their key if "
            "this is the same device."
        )


def _release_memory() -> None:
    """Free what the last configuration left (a failed one may hold its GPU tensors)."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def is_complete(path: str | os.PathLike[str], config: StudyConfig) -> bool:
    """True if ``path`` is a readable run JSON of this very configuration with a measurement."""
    try:
        data = parse_json(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(data, dict)
        and data.get("format") == RUN_FORMAT
        and data.get("version") == RUN_VERSION
        and data.get("config") == config.to_dict()
        and isinstance(data.get("per_step"), dict)
        and isinstance(data.get("measured"), dict)
        and isinstance(data["measured"].get("energy_j"), (int, float))
    )


# ----------------------------------------------------------------------------------------------
# The grid
# ----------------------------------------------------------------------------------------------


def _write_error(out: Path, config: StudyConfig, exc: BaseException) -> Path:
    path = out / f"{config.id}{ERROR_SUFFIX}"
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    _atomic_write_json(
        path,
        {
            "format": ERROR_FORMAT,
            "version": RUN_VERSION,
            "config": config.to_dict(),
            "error": type(exc).__name__,
            "message": str(exc),
            "traceback": traceback.format_exc(),
            "date": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    )
    return path


def run_study(
    configs: Sequence[StudyConfig],
    out_dir: str | os.PathLike[str],
    *,
    device: torch.device | str = "cpu",
    steps: int | None = None,
    min_seconds: float = DEFAULT_MIN_SECONDS,
    windows: int = DEFAULT_WINDOWS,
    sensors: str | Sequence[Sensor] = "auto",
    window_s: float | None = None,
    clock: Callable[[], float] | None = None,
    hardware: HardwareSpec | str | None = None,
    callbacks: Sequence[Callback] = (),
    budget_s: float | None = None,
    progress: bool = True,
    runner: Callable[..., Path] | None = None,
    console: Any = None,
) -> list[Path]:
    """Run every configuration not done yet; resumable, and a failure does not stop the rest.

    A configuration whose run JSON exists and is complete (:func:`is_complete`) is skipped. A
    failing one leaves ``<id>.error.json`` (error, message, traceback) and the study goes on;
    a later success removes the stale error file. With ``budget_s``, no configuration is
    started that would likely end past the budget (judged by the slowest one so far), so a
    study can be split over several time-limited calls: run the same command again to resume.
    A rich progress bar shows configurations done / total, the current id and the time spent.

    Args:
        configs: the grid (ids must be unique).
        out_dir: where the run files go (created).
        device, steps, min_seconds, windows, sensors, window_s, clock, hardware, callbacks:
            passed to :func:`run_config`.
        budget_s: wall-time budget of this call in seconds (None: no limit).
        progress: show the progress bar and the closing summary.
        runner: the function that runs one configuration (default :func:`run_config`).
        console: a ``rich.console.Console`` to print to (default: a new one).

    Returns:
        The run JSON paths of the configurations done, in grid order (skipped ones included).

    Raises:
        ValueError: duplicate configuration ids, a bad ``steps``, ``windows``, ``min_seconds``
            or ``budget_s``, an ``out_dir`` that is a file, a bad device or hardware key, or an
            ``out_dir`` already holding runs of other hardware (one energy law per machine).
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    ids = [c.id for c in configs]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"expected unique configuration ids, found duplicates: {duplicates}.")
    # Checked here, not only in run_config: a bad value would otherwise fail every
    # configuration one by one and leave an error file for each.
    if steps is not None and steps < 1:
        raise ValueError(f"expected steps >= 1 or None, found {steps!r}.")
    if windows < 1 or not min_seconds >= 0:
        raise ValueError(
            f"expected windows >= 1 and min_seconds >= 0, found {windows!r} and {min_seconds!r}."
        )
    if budget_s is not None and not budget_s > 0:
        raise ValueError(f"expected budget_s > 0 or None, found {budget_s!r}.")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(
            f"expected out_dir to be a directory, found a file at {out}. Fix: pick another path."
        )
    dev = resolve_device(device)
    spec = resolve_spec(hardware, dev)
    _check_same_hardware(out, _hardware_key(spec, dev))
    out.mkdir(parents=True, exist_ok=True)
    run_one = runner or run_config
    console = console or Console()
    kwargs: dict[str, Any] = {
        "device": device,
        "steps": steps,
        "min_seconds": min_seconds,
        "windows": windows,
        "sensors": sensors,
        "window_s": window_s,
        "clock": clock,
        # resolved once above: every configuration gets the same spec
        "hardware": spec if spec is not None else hardware,
        "callbacks": callbacks,
    }
    started = time.monotonic()
    first_guess_s = first_config_guess_s(min_seconds)  # until a configuration has run
    durations: list[float] = []
    done: dict[str, Path] = {}
    failed: dict[str, str] = {}
    left: list[str] = []
    columns = (
        TextColumn("[bold]study"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[current]}"),
    )
    with Progress(*columns, console=console, disable=not progress, transient=False) as bar:
        task = bar.add_task("study", total=len(configs), current="")
        for i, config in enumerate(configs):
            path = run_path(out, config)
            if is_complete(path, config):
                done[config.id] = path
                bar.update(task, advance=1, current=f"{config.id} (done before)")
                continue
            elapsed = time.monotonic() - started
            expected_s = max(durations) if durations else first_guess_s
            if budget_s is not None and elapsed + expected_s > budget_s:
                left = [c.id for c in configs[i:] if not is_complete(run_path(out, c), c)]
                break
            bar.update(task, current=config.id)
            t0 = time.monotonic()
            try:
                result = run_one(config, out, **kwargs)
            except Exception as exc:  # one configuration must not end a study of a hundred
                _write_error(out, config, exc)
                failed[config.id] = f"{type(exc).__name__}: {exc}"
            else:
                done[config.id] = Path(result)
                (out / f"{config.id}{ERROR_SUFFIX}").unlink(missing_ok=True)
            finally:
                _release_memory()
            durations.append(time.monotonic() - t0)
            bar.update(task, advance=1)
    if progress:
        total = len(configs)
        console.print(f"study: {len(done)} of {total} configurations done in {out}")
        for cid, text in failed.items():
            console.print(f"[red]failed[/red] {cid}: {text} (details in {cid}{ERROR_SUFFIX})")
        if left and not durations:
            # nothing started in this call: running it again would not get any further
            console.print(
                f"[red]time budget too short[/red]: {budget_s:.0f} s is less than one "
                f"configuration is expected to take ({first_guess_s:.0f} s), so none of the "
                f"{len(left)} left was started. Fix: raise the budget (--budget-min)."
            )
        elif left:
            console.print(
                f"[yellow]time budget reached[/yellow]: {len(left)} configuration(s) not run "
                "yet; run the same command again to resume."
            )
    return [done[c.id] for c in configs if c.id in done]
