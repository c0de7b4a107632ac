"""A minimal dispatch mode that records every aten call of a snippet as an ``OpCall``.

Formula tests use it to get the real call (overload, arguments, output) that PyTorch dispatches
for a tiny tensor snippet, then apply the registered formula to it directly. It does not depend
on the counting framework's own mode.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lightning_to_energy.counting.registry import OpCall


class CaptureMode(TorchDispatchMode):
    """Records an :class:`OpCall` for each aten call made while the mode is active."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[OpCall] = []

    def __torch_dispatch__(
        self,
        func: torch._ops.OpOverload,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        kwargs = dict(kwargs or {})
        out = func(*args, **kwargs)
        self.calls.append(OpCall(func=func, args=tuple(args), kwargs=kwargs, out=out))
        return out


def capture(snippet: Callable[[], Any]) -> list[OpCall]:
    """Run ``snippet`` under a :class:`CaptureMode` and return the calls it made, in order."""
    with CaptureMode() as mode:
        snippet()
    return mode.calls


def calls_of(calls: list[OpCall], packet: Any) -> list[OpCall]:
    """The calls whose overload packet is ``packet`` (``torch.ops.aten.relu``)."""
    return [c for c in calls if c.packet is packet]


def one_call(snippet: Callable[[], Any], packet: Any) -> OpCall:
    """Run ``snippet`` and return its single call of ``packet``.

    Raises:
        AssertionError: the snippet made no call, or several calls, of ``packet``.
    """
    calls = capture(snippet)
    found = calls_of(calls, packet)
    names = sorted({str(c.packet) for c in calls})
    assert len(found) == 1, (
        f"expected exactly one call of {packet}, found {len(found)}; the snippet called {names}"
    )
    return found[0]
