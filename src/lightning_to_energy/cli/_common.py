"""What the subcommands share: the one-line user error, the device and the input they run on."""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

__all__ = ["CliError", "cli_device", "make_input", "precision_context"]


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
    """A context that runs the step in ``name``, and how: "fp32", "autocast" or "cast"."""
    import torch

    if name == "fp32":
        return contextlib.nullcontext(), "fp32"
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
