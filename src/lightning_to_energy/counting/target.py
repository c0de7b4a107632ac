"""Counting a step as a target device runs it, without running it.

``profile(..., hardware="h100-sxm")`` counts on meta tensors: every aten op runs its meta
kernel (shapes and dtypes only, no arithmetic, no device memory), and the parameters, buffers
and optimizer state of the counted step are meta stand-ins of the user's, which are never
touched or materialised. Where the local path differs from the one CUDA takes, CUDA's dispatch
choices are applied as rules while the target is active (see docs/counting.md, "Counting for
a target", for each rule and its PyTorch source):

- formulas read :func:`on_cuda` instead of ``tensor.is_cuda``, so fp32 matmuls, convolutions
  and cuDNN RNNs follow PyTorch's TF32 flags (cuDNN convolutions TF32 by default, matmuls not),
  and a convolution's bias is cuDNN's separate kernel;
- optimizers take CUDA's path: ``foreach`` where the user left it unset, fused when asked.

This module knows nothing of the hardware table: :func:`resolve_target` imports it late.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._pytree import tree_map

__all__ = [
    "CountTarget",
    "MetaCountingError",
    "active_target",
    "counting_for",
    "resolve_target",
]


@dataclass(frozen=True)
class CountTarget:
    """The device a step is counted for.

    Args:
        key: the hardware key (``"h100-sxm"``), or ``"cuda"`` for the local CUDA device.
        name: the device's product name.
        cuda: CUDA's dispatch rules apply (an NVIDIA GPU); False for a CPU target.
        compute_capability: CUDA compute capability ``(major, minor)``, None where unknown.
    """

    key: str
    name: str
    cuda: bool
    compute_capability: tuple[int, int] | None = None


class MetaCountingError(RuntimeError):
    """An op of the counted step cannot run on meta tensors (data-dependent or custom).

    Attributes:
        op: the aten op's name (``"aten.nonzero.default"``).
    """

    def __init__(self, op: str, reason: str) -> None:
        self.op = op
        super().__init__(
            f"counting for a target runs the step on meta tensors (no values); expected every "
            f"op to have a meta kernel, found {op} that cannot run there ({reason}). Fix: pass "
            "fallback='cpu' to profile() (the CLI does so itself) to run the step on the CPU "
            "with the target's rules applied, or count on the real device (hardware=None)."
        )


# The target of the step being counted (None: count what runs here). Module state rather
# than a context variable: formulas run on the thread that counts, inside the dispatch mode.
_ACTIVE: list[CountTarget | None] = [None]


def active_target() -> CountTarget | None:
    """The target the current count is for, or None (count what runs here)."""
    return _ACTIVE[0]


@contextmanager
def counting_for(target: CountTarget | None) -> Iterator[None]:
    """Make ``target`` the active target for the duration of the block (nests)."""
    previous = _ACTIVE[0]
    _ACTIVE[0] = target
    try:
        yield
    finally:
        _ACTIVE[0] = previous


def resolve_target(hardware: Any) -> CountTarget | None:
    """The :class:`CountTarget` for ``profile(hardware=...)``.

    Args:
        hardware: None (count what runs here), a hardware key or device name known to
            :func:`lightning_to_energy.roofline.find_hardware`, a
            :class:`~lightning_to_energy.roofline.HardwareSpec`, or ``"cuda"`` for the local
            CUDA device.

    Raises:
        ValueError: an unknown key (the message lists the known keys), ``"cuda"`` without a
            CUDA device, or a value of another type.
    """
    if hardware is None:
        return None
    if isinstance(hardware, CountTarget):
        return hardware
    # the hardware table sits beside counting, and imports it: import it late
    from lightning_to_energy.hardware.detect import detect_hardware
    from lightning_to_energy.hardware.specs import HardwareSpec, find_hardware

    if isinstance(hardware, str) and hardware.strip().lower() == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                "expected a CUDA device for the target 'cuda'; found none "
                f"(torch {torch.__version__}). Fix: name the target GPU instead "
                "(e.g. hardware='h100-sxm'), or pass None to count on this machine."
            )
        major, minor = torch.cuda.get_device_capability()
        try:
            name = detect_hardware("cuda").name
        except ValueError:  # a GPU missing from the table: its own name will do
            name = torch.cuda.get_device_name()
        return CountTarget("cuda", name, cuda=True, compute_capability=(major, minor))
    if isinstance(hardware, str):
        spec = find_hardware(hardware)  # ValueError listing the known keys
    elif isinstance(hardware, HardwareSpec):
        spec = hardware
    else:
        raise ValueError(
            "expected hardware None, 'cuda', a hardware key (e.g. 'h100-sxm') or a "
            f"HardwareSpec; found {type(hardware).__name__} {hardware!r}. Fix: pass one of "
            "those (lightning_to_energy.roofline.hardware_table() lists the keys)."
        )
    return CountTarget(
        spec.key,
        spec.name,
        cuda=spec.kind == "gpu",
        compute_capability=spec.compute_capability,
    )


# --- meta stand-ins -------------------------------------------------------------------------


def meta_like(t: torch.Tensor) -> torch.Tensor:
    """A meta tensor with ``t``'s shape, strides, dtype and ``requires_grad`` (no data)."""
    out = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")
    return out.requires_grad_(t.requires_grad) if t.is_floating_point() or t.is_complex() else out


def inputs_to_meta(tree: Any) -> Any:
    """``tree`` with every tensor replaced by its meta stand-in (:func:`meta_like`)."""
    return tree_map(lambda x: meta_like(x) if isinstance(x, torch.Tensor) else x, tree)


def meta_state(module: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[int, torch.Tensor]]:
    """Meta stand-ins for ``module``'s parameters and buffers, for ``functional_call``.

    Returns:
        ``(by_name, by_id)``: stand-ins by dotted name (tied tensors share one stand-in, under
        every name they have) and by ``id()`` of the original tensor (to rebuild optimizers).
    """
    by_id: dict[int, torch.Tensor] = {}
    by_name: dict[str, torch.Tensor] = {}
    named = [
        *module.named_parameters(remove_duplicate=False),
        *module.named_buffers(remove_duplicate=False),
    ]
    for name, t in named:
        if t is None:
            continue
        stand_in = by_id.get(id(t))
        if stand_in is None:
            stand_in = by_id[id(t)] = meta_like(t)
        by_name[name] = stand_in
    return by_name, by_id


def cuda_optimizer(optimizer: torch.optim.Optimizer, stand_ins: Mapping[int, torch.Tensor]) -> Any:
    """A fresh optimizer of ``optimizer``'s class and settings over the meta stand-ins.

    Its state starts empty (the warm-up step allocates it on meta); the user's optimizer is
    not touched. A parameter without a stand-in is an error: the optimizer must be built over
    the counted module's parameters.

    Raises:
        ValueError: a parameter of ``optimizer`` is not one of the module's.
    """
    groups = []
    for group in optimizer.param_groups:
        params = []
        for p in group["params"]:
            stand_in = stand_ins.get(id(p))
            if stand_in is None:
                raise ValueError(
                    f"profile(hardware=...): expected the optimizer's parameters to belong to "
                    f"the counted module; found a {tuple(p.shape)} parameter that does not. "
                    "Fix: build the optimizer over model.parameters(), or pass its name."
                )
            params.append(stand_in)
        groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": params})
    # defaults the constructor does not take (AdamW's decoupled_weight_decay) ride in the groups
    accepted = inspect.signature(type(optimizer)).parameters
    defaults = {k: v for k, v in optimizer.defaults.items() if k in accepted}
    fused = [bool(g.get("fused")) for g in groups]
    # PyTorch refuses fused=True on meta parameters at construction and at the first step:
    # build it unfused, and switch it to fused in cuda_optimizer_path() after the warm-up.
    for g in groups:
        g.pop("fused", None)
    defaults.pop("fused", None)
    opt = type(optimizer)(groups, **defaults)
    for g, was_fused in zip(opt.param_groups, fused, strict=True):
        g["_lte_fused"] = was_fused
    return opt


def cuda_optimizer_path(opt: Any, *, settled: bool) -> None:
    """Put ``opt`` on the path CUDA takes: ``foreach`` where unset, fused where asked.

    ``torch.optim`` defaults to ``foreach`` when every parameter is on CUDA (and the optimizer
    is not ``differentiable``, nor Adam's tensor ``lr`` without ``capturable``): on meta it
    would take the per-parameter loop. Fused optimizers are switched on only once ``settled``
    (after the warm-up allocated their state), since PyTorch checks the device when it
    allocates it; their step counters then live on the parameters' device, as fused kernels
    keep them.
    """
    for g in opt.param_groups:
        wants_fused = bool(g.get("_lte_fused", g.get("fused")))
        if wants_fused:
            if settled:
                g["fused"], g["foreach"] = True, False
            continue
        if "foreach" in g and g["foreach"] is None and not g.get("differentiable", False):
            lr = g.get("lr")
            if not (isinstance(lr, torch.Tensor) and not g.get("capturable", False)):
                g["foreach"] = True
    if settled and any(g.get("fused") for g in opt.param_groups):
        opt._need_device_dtype_check_for_fused = False  # SGD checks once per optimizer
        for state in opt.state.values():
            step = state.get("step")
            if isinstance(step, torch.Tensor) and step.device.type != "meta":
                state["step"] = torch.empty((), dtype=torch.float32, device="meta")
