"""What the subcommands share: the one-line user error, the device and the input they run on."""

from __future__ import annotations

import argparse
import contextlib
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning_to_energy._files import output_problem

__all__ = [
    "CliError",
    "check_hardware_arg",
    "check_output_path",
    "cli_device",
    "count_arg",
    "make_input",
    "precision_context",
]


class CliError(Exception):
    """A user error the CLI reports in one line (what was expected, what was found, the fix)."""


def cli_device(name: str | None, *, any_type: bool = False) -> Any:
    """The torch device of ``--device NAME`` (None: CUDA when available, else the CPU).

    Raises:
        CliError: not a device, or a CUDA device this machine lacks (see
            :func:`~lightning_to_energy.hardware.detect.resolve_device`).
    """
    import torch

    from lightning_to_energy.hardware.detect import resolve_device

    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return resolve_device(name, any_type=any_type)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def check_hardware_arg(key: str | None, option: str, *, local_cuda: bool = True) -> None:
    """Refuse, before any work and in one line, a hardware key the table does not know.

    The table's own error carries a multi-line TOML example for Python users; the command
    line shows the keys and points at the example (a TOML file is registered from Python).
    ``None`` passes, and so does ``"cuda"`` (the local GPU, checked where it is used) with
    ``local_cuda`` (for ``--target``, which counts for the local GPU).

    Raises:
        CliError: ``key`` is neither a key nor a device name of the hardware table.
    """
    if key is None or (local_cuda and key.strip().lower() == "cuda"):
        return
    from lightning_to_energy.hardware.specs import find_hardware, hardware_table

    try:
        find_hardware(key)
    except ValueError:
        known = ", ".join(sorted(hardware_table()))
        raise CliError(
            f"expected {option} to be a known hardware key or device name ({known}), found "
            f"{key!r}. Fix: use one of those keys; to add hardware, register it from Python "
            "with lightning_to_energy.roofline.load_hardware(PATH) (a TOML file, see "
            "docs/roofline.md)."
        ) from None


def make_input(shape: tuple[int, ...], dtype: str, high: int, device: Any) -> Any:
    """A random input tensor: bool, normal floats, or integers in ``[0, high)``."""
    import torch

    torch_dtype = getattr(torch, dtype)
    if torch_dtype == torch.bool:
        return torch.randint(0, 2, shape, device=device).bool()
    if torch_dtype.is_floating_point:
        return torch.randn(shape, dtype=torch_dtype, device=device)
    return torch.randint(0, high, shape, dtype=torch_dtype, device=device)


def precision_context(
    name: str, device: Any, model: Any, inputs: list[Any]
) -> tuple[contextlib.AbstractContextManager[Any], str]:
    """A context that runs the step in ``name``, and how: "fp32", "tf32", "autocast" or "cast".

    TF32 is no dtype but CUDA's matmul and cuDNN switches (read by the counter): on another
    device it is plain fp32, and says so.
    """
    import torch

    if name == "fp32":
        return contextlib.nullcontext(), "fp32"
    if name == "tf32":
        if device.type != "cuda":
            return contextlib.nullcontext(), "fp32 (tf32 applies to CUDA matmuls only)"
        return _tf32(), "tf32"
    dtype = torch.bfloat16 if name == "bf16" else torch.float16
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ctx = torch.autocast(device.type, dtype=dtype)
            supported = not any("autocast" in str(w.message).lower() for w in caught)
        except RuntimeError:
            supported = False
    if supported:
        return ctx, "autocast"
    # NB: without autocast the whole model runs in the reduced format (norms included).
    model.to(dtype)
    for i, t in enumerate(inputs):
        if t.is_floating_point():
            inputs[i] = t.to(dtype)
    return contextlib.nullcontext(), "cast"


@contextlib.contextmanager
def _tf32() -> Any:
    """CUDA matmuls and convolutions in TF32 for the block, the switches restored after it."""
    import torch

    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def count_arg(text: str) -> int:
    """An argparse type for whole numbers written as ``1000``, ``10_000`` or ``1e3``.

    The sign is left to the command, which checks its own range with a one-line error that
    names the fix (``--steps >= 1``, ``--top >= 0``).

    Raises:
        argparse.ArgumentTypeError: not a number, or not a whole one (``1.5``, ``1e-3``).
    """
    try:
        return int(text.replace("_", ""))
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number == int(number)):
        raise argparse.ArgumentTypeError(
            f"expected a whole number such as 1000 or 1e3, found {text!r}"
        ) from None
    return int(number)


def check_output_path(
    target: Path,
    option: str,
    example: str,
    *,
    existing: Callable[[Path], str | None] | None = None,
    kind: str | None = None,
) -> None:
    """Refuse, before any work, an output path that breaks the command line's one rule for
    output files (:func:`lightning_to_energy._files.output_problem`, which it raises as a
    :class:`CliError`; the arguments are its).

    Raises:
        CliError: a directory; a name without the kind's extension; an existing file not of
            the kind (where ``existing`` says so); a missing folder; a path not writable.
    """
    problem = output_problem(target, option, example, existing=existing, kind=kind)
    if problem is not None:
        raise CliError(problem)
