"""CUDA's dispatch choices, applied to a step counted on meta tensors for a CUDA target.

Meta tensors run the composite ops as the CPU does: dropout as ``bernoulli_`` + ``div_`` +
``mul``, attention on the unfused math path, and no autocast at all (meta tensors carry no
autocast dispatch key). While :func:`cuda_rules` is active, kernels registered for the
``AutogradMeta`` dispatch key of a few composite ops take CUDA's path instead, so autograd
records the ops CUDA records and the backward follows:

- ``scaled_dot_product_attention``: the backend CUDA selects (``sdp_utils.cpp``): flash,
  memory-efficient or math, by dtype, head dim, mask, causal shape, dropout and compute
  capability, and the user's ``torch.backends.cuda.enable_*_sdp`` switches;
- ``dropout``: the fused ``native_dropout`` kernel (``Dropout.cpp``,
  ``is_fused_kernel_acceptable``);
- under autocast (a CUDA or CPU autocast region around ``profile``): CUDA's autocast policy
  (``autocast_mode.cpp``) for the composite ops on its lists: matmuls and convolutions in the
  lower-precision format, layer and group norm, softmax, log-softmax and the losses in fp32,
  with the weight-cast cache of one autocast region.

The registrations exist only inside the ``with`` block and touch meta tensors only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from lightning_to_energy.counting.target import CountTarget

__all__ = [
    "EFFICIENT",
    "FLASH",
    "MATH",
    "ambient_autocast",
    "clear_cast_cache",
    "cuda_rules",
    "outside_autocast",
    "sdpa_backend",
]

aten = torch.ops.aten

_COMPOSITE = torch._C.DispatchKey.CompositeImplicitAutograd

# CUDA's autocast lists (aten/src/ATen/autocast_mode.cpp, TORCH_LIBRARY_IMPL(aten, AutocastCUDA)),
# restricted here to the composite ops: the only ones a Python kernel can take over at the
# AutogradMeta key while autograd still records what they run. NB: the non-composite ops of the
# lists (mm, bmm, addmm, exp, mse_loss, sum, cat...) called directly keep their input's dtype.
_LOWER = (
    "linear",
    "matmul",
    "einsum",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_tbc",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "prelu",
    "chain_matmul",
    "linalg_multi_dot",
    "lstm_cell",
    "gru_cell",
    "rnn_tanh_cell",
    "rnn_relu_cell",
)
_FP32 = (
    "layer_norm",
    "group_norm",
    "cosine_similarity",
    "poisson_nll_loss",
    "cosine_embedding_loss",
    "nll_loss",
    "nll_loss2d",
    "hinge_embedding_loss",
    "kl_div",
    "l1_loss",
    "margin_ranking_loss",
    "soft_margin_loss",
    "triplet_margin_loss",
    "cdist",
    "frobenius_norm",
    "nuclear_norm",
)
_FP32_SET_OPT_DTYPE = ("softmax", "log_softmax")

# The priority CUDA tries the fused backends in (sdp_utils.cpp, priority_order). NB: with
# cuDNN newer than 9.15 on sm90/sm100, recent PyTorch tries cuDNN attention first; its FLOPs
# equal flash attention's, and which one runs depends on the target's cuDNN, unknown here.
FLASH, EFFICIENT, MATH = "flash", "efficient", "math"


class _State:
    """What the rule kernels read: the target, the autocast dtype and the cast cache."""

    def __init__(self, target: CountTarget, autocast: torch.dtype | None) -> None:
        self.target = target
        self.autocast = autocast
        self.cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.active = True  # rules off inside a rule kernel's own composite call
        self.in_region = True  # off for backward and the optimizer (see outside_autocast)

    @property
    def casting(self) -> torch.dtype | None:
        """The autocast dtype where autocast applies now, else None."""
        return self.autocast if self.in_region else None


_STATE: list[_State | None] = [None]


def ambient_autocast() -> torch.dtype | None:
    """The lower-precision dtype of an enclosing CUDA or CPU autocast region, or None.

    Counting for a CUDA target reads either: on a machine without CUDA the user's region is
    a CPU one (``torch.autocast("cuda")`` disables itself there), and the target's own policy
    is applied in its place.
    """
    for device in ("cuda", "cpu"):
        try:
            if torch.is_autocast_enabled(device):
                return torch.get_autocast_dtype(device)
        except (RuntimeError, TypeError):  # a torch without the device-type forms
            continue
    return None


@contextmanager
def cuda_rules(
    target: CountTarget, autocast: torch.dtype | None, *, key: str = "AutogradMeta"
) -> Iterator[None]:
    """Apply CUDA's dispatch choices to meta tensors for the duration of the block.

    Args:
        target: the CUDA target (its compute capability decides the SDPA backend).
        autocast: the autocast dtype to apply CUDA's policy for, or None.
        key: the autograd dispatch key the rules take over: ``"AutogradMeta"``, or
            ``"AutogradCPU"`` for the CPU fallback (where attention keeps the CPU's kernel:
            CUDA's fused attention kernels have no CPU implementation).
    """
    lib = torch.library.Library("aten", "IMPL")
    state = _State(target, autocast)
    previous = _STATE[0]
    _STATE[0] = state
    try:
        _register(lib, key, "scaled_dot_product_attention", _sdpa)
        _register(lib, key, "dropout", _dropout)
        if autocast is not None:
            for name in _LOWER:
                _register(lib, key, name, _cast_kernel(name, _lower))
            for name in _FP32:
                _register(lib, key, name, _cast_kernel(name, _fp32))
            for name in _FP32_SET_OPT_DTYPE:
                _register(lib, key, name, _cast_kernel(name, _fp32))
        yield
    finally:
        _STATE[0] = previous
        lib._destroy()


@contextmanager
def outside_autocast() -> Iterator[None]:
    """Leave the emulated autocast region for the block (backward and the optimizer step run
    outside the user's ``autocast`` region in a training loop)."""
    state = _STATE[0]
    if state is None:
        yield
        return
    previous, state.in_region = state.in_region, False
    try:
        yield
    finally:
        state.in_region = previous


def clear_cast_cache() -> None:
    """Forget the weight casts of the emulated autocast region (a new step, a new region)."""
    state = _STATE[0]
    if state is not None:
        state.cache.clear()


def _register(lib: Any, key: str, name: str, kernel: Callable[..., Any]) -> None:
    packet = getattr(aten, name, None)
    if packet is None:
        return
    for overload in packet.overloads():
        op = getattr(packet, overload)
        try:
            composite = torch._C._dispatch_has_kernel_for_dispatch_key(
                op.name(), "CompositeImplicitAutograd"
            )
        except RuntimeError:  # an overload that exists in Python only (einsum.sublist)
            continue
        if not composite:
            continue
        schema_name = name if overload == "default" else f"{name}.{overload}"

        def impl(*args: Any, _op: Any = op, **kwargs: Any) -> Any:
            return kernel(_op, args, kwargs)

        lib.impl(schema_name, impl, key)


def _composite(op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``op``'s composite kernel, which the rule kernels replace for meta tensors."""
    return op._op_dk(_COMPOSITE, *args, **kwargs)


# --- autocast ---------------------------------------------------------------------------------


def _eligible(t: Any) -> bool:
    # autocast_mode.h, is_eligible: floating-point, not float64
    return isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64


def _lower(state: _State, t: torch.Tensor) -> torch.Tensor:
    dtype = state.autocast
    assert dtype is not None
    if t.dtype == dtype:
        return t
    # cached_cast: fp32 leaf tensors that require grad (the weights) are cast once per region
    cacheable = t.dtype == torch.float32 and t.requires_grad and t.is_leaf
    if cacheable:
        hit = state.cache.get(id(t))
        if hit is not None and hit[0] is t:
            return hit[1]
    out = t.to(dtype)
    if cacheable:
        state.cache[id(t)] = (t, out)
    return out


def _fp32(state: _State, t: torch.Tensor) -> torch.Tensor:
    return t if t.dtype == torch.float32 else t.float()


def _cast_kernel(
    name: str, cast: Callable[[_State, torch.Tensor], torch.Tensor]
) -> Callable[[Any, tuple[Any, ...], dict[str, Any]], Any]:
    def kernel(op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        state = _STATE[0]
        if state is None or state.casting is None or not state.active:
            return _composite(op, args, kwargs)

        def one(x: Any) -> Any:
            if _eligible(x):
                return cast(state, x)
            if isinstance(x, (list, tuple)) and any(_eligible(v) for v in x):
                return type(x)(cast(state, v) if _eligible(v) else v for v in x)
            return x

        args = tuple(map(one, args))
        kwargs = {k: one(v) for k, v in kwargs.items()}
        # The composite's own parts are not autocast again (CUDA excludes the autocast key
        # while it runs an autocast kernel's redispatch).
        state.active = False
        try:
            return _composite(op, args, kwargs)
        finally:
            state.active = True

    kernel.__name__ = f"autocast_{name}"
    return kernel


# --- dropout ----------------------------------------------------------------------------------


def _dropout(op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # dropout(input, p, train): Dropout.cpp runs native_dropout when train and
    # is_fused_kernel_acceptable: a CUDA input, 0 < p < 1 and at least one element
    names = ("input", "p", "train")
    bound = dict(zip(names, args, strict=False)) | kwargs
    x, p, train = bound["input"], float(bound["p"]), bool(bound["train"])
    if train and 0.0 < p < 1.0 and x.numel() > 0:
        return aten.native_dropout(x, p, True)[0]
    return _composite(op, args, kwargs)


# --- scaled dot-product attention -------------------------------------------------------------


def sdpa_backend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    attn_mask: torch.Tensor | None,
    dropout_p: float,
    is_causal: bool,
    enable_gqa: bool,
    compute_capability: tuple[int, int] | None,
    needs_grad: bool,
) -> str:
    """The SDPA backend CUDA selects for these arguments: "flash", "efficient" or "math".

    Follows ``select_sdp_backend`` in ``aten/src/ATen/native/transformers/cuda/sdp_utils.cpp``
    (flash first, then memory-efficient, then math) with the user's
    ``torch.backends.cuda.enable_{flash,mem_efficient,math}_sdp`` switches. An unknown compute
    capability is taken as 8.0 (every fused backend available). NB: nested (jagged) inputs and
    cuDNN attention are not modelled (see the module notes).
    """
    major, minor = compute_capability or (8, 0)
    cc = major * 10 + minor
    dense4 = all(t.dim() == 4 and not t.is_nested for t in (q, k, v))
    if not dense4:
        return MATH
    same_heads = q.shape[1] == k.shape[1] == v.shape[1]
    heads_ok = same_heads or (
        enable_gqa and q.shape[1] % k.shape[1] == 0 and k.shape[1] == v.shape[1]
    )
    batch_ok = q.shape[0] == k.shape[0] == v.shape[0]
    seq_ok = all(t.shape[-2] > 0 for t in (q, k, v))
    d_q, d_k, d_v = q.shape[-1], k.shape[-1], v.shape[-1]
    half = q.dtype in (torch.float16, torch.bfloat16)
    if (
        torch.backends.cuda.flash_sdp_enabled()
        and attn_mask is None
        and d_q == d_k == d_v
        and d_q <= 256
        and 80 <= cc <= 121
        and not (  # sm86/89/120: no training with head_dim in (192, 224], or (224, 256] + dropout
            needs_grad
            and (86 <= cc <= 89 or 120 <= cc <= 121)
            and not (d_q <= 192 or (dropout_p == 0.0 and d_q > 224))
        )
        and not (is_causal and q.shape[-2] != k.shape[-2])
        and (q.dtype in (torch.float16, torch.bfloat16) if cc >= 80 else q.dtype == torch.float16)
        and heads_ok
        and batch_ok
        and seq_ok
        and all(t.stride(-1) == 1 or t.shape[-1] == 1 for t in (q, k, v))
    ):
        return FLASH
    # minimum_gemm_alignment: 4 from sm80, and 128 bits on tensor cores (sm80+, or sm70 half)
    tensor_cores = cc >= 80 or (cc >= 70 and half)
    align = max(4 if cc >= 80 else 1, (128 // (16 if half else 32)) if tensor_cores else 1)
    dtypes_ok = q.dtype in (
        (torch.float16, torch.float32, torch.bfloat16)
        if cc >= 80
        else (torch.float16, torch.float32)
    )
    if (
        torch.backends.cuda.mem_efficient_sdp_enabled()
        and 50 <= cc <= 121
        and d_q == d_k
        and d_q % align == 0
        and d_v % align == 0
        and heads_ok
        and batch_ok
        and seq_ok
        and all(t.stride(-1) == 1 for t in (q, k, v))
        and dtypes_ok
    ):
        return EFFICIENT
    return MATH


def _cast_args(state: _State, bound: dict[str, Any]) -> dict[str, Any]:
    """``bound``'s eligible tensors cast as CUDA's autocast casts attention's (lower list)."""
    if state.casting is None:
        return bound
    return {k: _lower(state, v) if _eligible(v) else v for k, v in bound.items()}


def _sdpa(op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
    defaults: dict[str, Any] = {
        "attn_mask": None,
        "dropout_p": 0.0,
        "is_causal": False,
        "scale": None,
        "enable_gqa": False,
    }
    bound = defaults | dict(zip(names, args, strict=False)) | kwargs
    state = _STATE[0]
    if state is None or not state.active:
        return _composite(op, args, kwargs)
    q, k, v, mask = bound["query"], bound["key"], bound["value"], bound["attn_mask"]
    if q.device.type != "meta":  # the CPU fallback: CUDA's fused kernels do not run there
        state.active = False
        try:
            call = {**bound, **_cast_args(state, bound)}
            return _composite(op, (), call)
        finally:
            state.active = True
    if state.casting is not None:  # scaled_dot_product_attention is on the lower list
        q, k, v = (_lower(state, t) if _eligible(t) else t for t in (q, k, v))
        if _eligible(mask):
            mask = _lower(state, mask)
    dropout_p, is_causal, scale = (
        float(bound["dropout_p"]),
        bool(bound["is_causal"]),
        bound["scale"],
    )
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    backend = sdpa_backend(
        q,
        k,
        v,
        attn_mask=mask,
        dropout_p=dropout_p,
        is_causal=is_causal,
        enable_gqa=bool(bound["enable_gqa"]),
        compute_capability=state.target.compute_capability,
        needs_grad=needs_grad,
    )
    if backend == FLASH and q.shape[1] == k.shape[1]:
        d = q.shape[-1]
        pad = (-d) % 8  # attention.cpp pads the head dim to a multiple of 8 for flash
        if pad:
            q, k, v = (aten.constant_pad_nd(t, [0, pad]) for t in (q, k, v))
        og_scale = scale if scale is not None else 1.0 / math.sqrt(d)
        out = aten._scaled_dot_product_flash_attention(
            q, k, v, dropout_p, is_causal, False, scale=og_scale
        )[0]
        return out[..., :d] if pad else out
    if backend == EFFICIENT and q.shape[1] == k.shape[1]:
        if mask is not None and mask.dtype == torch.bool:
            # attention.cpp, convert_boolean_attn_mask: where(!mask, -inf, 0)
            mask = torch.where(mask.logical_not(), -math.inf, 0.0).to(q.dtype)
        return aten._scaled_dot_product_efficient_attention(
            q, k, v, mask, needs_grad, dropout_p, is_causal, scale=scale
        )[0]
    # the math path, as the composite runs it (with the autocast casts already applied)
    state.active = False
    try:
        call = {**bound, "query": q, "key": k, "value": v, "attn_mask": mask}
        return _composite(op, (), call)
    finally:
        state.active = True
