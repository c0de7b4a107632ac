"""Counting one step of a model: :func:`profile`, here, on meta tensors for a target GPU, or on
the CPU with the target's rules; the step's loss and optimizer, and the state it leaves as found.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils._pytree import tree_leaves

from lightning_to_energy.counting.cost_model import as_cost_model
from lightning_to_energy.counting.profile import StepProfile

__all__ = [
    "DefaultLossError",
    "make_optimizer",
    "profile",
    "random_label_loss",
    "step_loss",
]


# --- plain-PyTorch entry point ---------------------------------------------------------------

_OPTIMIZERS = ("sgd", "adam", "adamw")


class DefaultLossError(ValueError):
    """``profile(train=True)`` without ``loss_fn`` found no output to sum into a loss.

    Raised by :func:`profile` itself, never by the model, so callers (the CLI) can tell a
    model without a differentiable output from a model that failed.
    """


def profile(
    model_or_callable: Any,
    *inputs: Any,
    train: bool = False,
    optimizer: Any = None,
    loss_fn: Any = None,
    target: Any = None,
    cost_model: Any = None,
    warmup: bool | None = None,
    hardware: Any = None,
    kwargs: Mapping[str, Any] | None = None,
    fallback: str | None = None,
) -> StepProfile:
    """Count one step of a model or callable in plain PyTorch, here or for a target device.

    Forward only (``train=False``): ``model(*inputs)`` under ``torch.no_grad()``. Training
    step (``train=True``): forward with grad, the loss, backward, and with an optimizer its
    ``step()`` and ``zero_grad()``, each in its phase. The default loss is the sum of every
    floating-point output element (``loss_fn(output, target)`` or ``loss_fn(output)`` when a
    ``loss_fn`` is given; :func:`random_label_loss` gives a classifier's cross-entropy on
    random labels, as the CLI counts it); its ops count in the forward phase.

    The user's model is left as it was: for an ``nn.Module`` its buffers (batch-norm
    statistics), ``.grad`` tensors and, with an optimizer, its parameters are saved before and
    restored after (a copy of the parameters while profiling a step with an optimizer), as are
    a given optimizer's state, the RNG state and the ``.grad`` of inputs that require grad. The
    module's train/eval mode is used as it is: call ``model.eval()`` first for inference
    figures. A plain callable is called as is: undoing its side effects (beyond the optimizer
    state, the input gradients and the CPU RNG) is the caller's business.

    With a ``hardware`` target the step is counted as that device runs it, without computing
    anything: on meta tensors (stand-ins of the inputs, the module's parameters and buffers
    and the optimizer's state; nothing is materialised and the user's objects are not
    touched), with CUDA's dispatch choices applied as rules for a GPU target
    (:mod:`lightning_to_energy.counting.target`, docs/counting.md). A model built under
    ``torch.device("meta")`` counts the same way at no memory cost. Under a target, a plain
    callable (not an ``nn.Module``) is called with meta inputs.

    Args:
        model_or_callable: an ``nn.Module`` (a ``torch.compile``d one is counted eagerly), or
            any callable taking ``*inputs``.
        *inputs: the step's inputs.
        train: count a training step instead of a forward pass.
        optimizer: None, ``"sgd"``, ``"adam"``, ``"adamw"`` (a fresh one over the module's
            trainable parameters, lr 1e-3) or a ``torch.optim.Optimizer``.
        loss_fn: the loss, called as ``loss_fn(output, target)`` (or ``loss_fn(output)`` when
            ``target`` is None).
        target: the loss target.
        cost_model: the :class:`~lightning_to_energy.counting.cost_model.CostModel`, a TOML/JSON
            cost file, or None for the default.
        warmup: run one uncounted step first, so that the counted one is a steady-state step
            (optimizer state and lazy modules initialised). Default: True with an optimizer.
        hardware: the device to count for: None (what runs here), a hardware key or device
            name (``"h100-sxm"``, see ``roofline.hardware_table()``), a ``HardwareSpec``, or
            ``"cuda"`` for the local CUDA device.
        kwargs: keyword inputs of the model (``attention_mask=``, ``labels=``...).
        fallback: with ``hardware``, what to do when an op cannot run on meta tensors (a
            data-dependent shape, ``.item()``, a custom op): None raises
            :class:`~lightning_to_energy.counting.target.MetaCountingError` naming the op;
            ``"cpu"`` warns and counts the step on the CPU instead, computing it, with the
            target's rules that can run there (formats, bias kernel, optimizer path, dropout,
            autocast policy; attention keeps the CPU's kernel). A model on meta is then
            materialised on the CPU with freshly initialised weights, and meta inputs become
            random (floats) or zero (integers) CPU tensors.

    Returns:
        The step's :class:`StepProfile`.

    Raises:
        ValueError: an optimizer without ``train=True``, an unknown optimizer name, an
            optimizer name with no module parameters to build it over, a training step
            whose output has nothing to differentiate, or an unknown ``hardware`` (the
            message lists the known keys).
        MetaCountingError: with a ``hardware`` target, an op that cannot run on meta tensors
            (the message names it).
    """
    # mode.py builds StepProfiles, so it imports this module: import it late
    from lightning_to_energy.counting.mode import uncompiled
    from lightning_to_energy.counting.target import resolve_target

    cost_model = as_cost_model(cost_model)  # a bad file fails here, before the model runs
    count_target = resolve_target(hardware)  # an unknown key fails here too
    fn = uncompiled(model_or_callable)
    module = fn if isinstance(fn, torch.nn.Module) else None
    if optimizer is not None and not train:
        raise ValueError(
            f"profile(): an optimizer ({optimizer!r}) only runs in a training step; found "
            "train=False. Pass train=True or drop the optimizer."
        )
    call_kwargs: dict[str, Any] = dict(kwargs or {})
    if fallback not in (None, "cpu"):
        raise ValueError(
            f"profile(): expected fallback None or 'cpu'; found {fallback!r}. Pass one of those."
        )
    if count_target is not None:
        from lightning_to_energy.counting.target import MetaCountingError

        try:
            return _profile_on_meta(
                fn,
                module,
                inputs,
                call_kwargs,
                train=train,
                optimizer=optimizer,
                loss_fn=loss_fn,
                target=target,
                cost_model=cost_model,
                warmup=warmup,
                count_target=count_target,
            )
        except MetaCountingError as exc:
            if fallback != "cpu":
                raise
            warnings.warn(
                f"lightning-to-energy: {exc.op} cannot run on meta tensors; counting the step "
                f"for {count_target.key} on the CPU instead (it is computed: slower), with the "
                "target's rules that run there (attention keeps the CPU's kernel).",
                RuntimeWarning,
                stacklevel=2,
            )
            return _profile_on_cpu_for(
                fn,
                module,
                inputs,
                call_kwargs,
                train=train,
                optimizer=optimizer,
                loss_fn=loss_fn,
                target=target,
                cost_model=cost_model,
                warmup=warmup,
                count_target=count_target,
            )
    return _profile_here(
        fn,
        module,
        inputs,
        call_kwargs,
        train=train,
        optimizer=optimizer,
        loss_fn=loss_fn,
        target=target,
        cost_model=cost_model,
        warmup=warmup,
    )


def _profile_here(
    fn: Any,
    module: torch.nn.Module | None,
    inputs: tuple[Any, ...],
    call_kwargs: dict[str, Any],
    *,
    train: bool,
    optimizer: Any,
    loss_fn: Any,
    target: Any,
    cost_model: Any,
    warmup: bool | None,
) -> StepProfile:
    """:func:`profile` on the devices the model and inputs are on (no target)."""
    from lightning_to_energy.counting.mode import OpCounter

    opt = make_optimizer(optimizer, module)
    warmup = opt is not None if warmup is None else warmup

    def step(counter: OpCounter | None) -> None:
        with torch.enable_grad() if train else torch.no_grad():
            out = fn(*inputs, **call_kwargs)
            if not train:
                return
            loss = step_loss(out, loss_fn, target)
        if counter is not None:
            counter.set_phase("backward")
        loss.backward()
        if opt is not None:
            if counter is not None:
                counter.set_phase("optimizer")
            opt.step()
            opt.zero_grad(set_to_none=True)

    user_optimizer = optimizer if opt is optimizer else None
    # Inputs that are leaves requiring grad collect a .grad in backward: restored like the
    # parameters', and cleared before each step, so that the counted step neither accumulates
    # into the warm-up's (or the caller's) gradient nor leaves one behind.
    leaves = [
        t
        for t in tree_leaves((inputs, call_kwargs, target))
        if isinstance(t, torch.Tensor) and t.is_leaf and t.requires_grad
    ]
    with _preserved(module, user_optimizer, params=opt is not None, leaves=leaves):
        # a step in a loop that zeroes grads with set_to_none starts without any
        _clear_grads(module, leaves)
        if warmup:
            step(None)
            _clear_grads(module, leaves)
        # Autocast keeps its casts of the weights until the caller's outermost autocast region
        # exits: without this, the counted step would reuse the warm-up's (or an earlier
        # profile's) casts, where a training loop, entering autocast per step, casts every step.
        torch.clear_autocast_cache()
        counter = OpCounter(cost_model=cost_model, module=module)
        with counter:
            step(counter)
    assert counter.profile is not None
    return counter.profile


def _profile_on_meta(
    fn: Any,
    module: torch.nn.Module | None,
    inputs: tuple[Any, ...],
    call_kwargs: dict[str, Any],
    *,
    train: bool,
    optimizer: Any,
    loss_fn: Any,
    target: Any,
    cost_model: Any,
    warmup: bool | None,
    count_target: Any,
) -> StepProfile:
    """:func:`profile` for a target: the step on meta stand-ins, with the target's rules.

    The module runs through ``torch.func.functional_call`` with meta stand-ins of its
    parameters and buffers, so neither its tensors nor its optimizer are touched, and no
    parameter, gradient or optimizer state is ever materialised.
    """
    from torch.func import functional_call

    from lightning_to_energy.counting.cuda_rules import (
        ambient_autocast,
        clear_cast_cache,
        cuda_rules,
        outside_autocast,
    )
    from lightning_to_energy.counting.mode import MetaErrors, OpCounter
    from lightning_to_energy.counting.target import (
        counting_for,
        cuda_optimizer,
        cuda_optimizer_path,
        inputs_to_meta,
        meta_state,
    )

    meta_inputs, meta_kwargs, meta_target = inputs_to_meta((inputs, call_kwargs, target))
    if module is not None:
        by_name, by_id = meta_state(module)

        def run(*args: Any, **kw: Any) -> Any:
            return functional_call(module, by_name, args, kw, tie_weights=True, strict=False)

        params = [by_id[id(p)] for p in module.parameters() if p.requires_grad]
    else:
        by_id, run, params = {}, fn, []
    if isinstance(optimizer, torch.optim.Optimizer):
        opt = cuda_optimizer(optimizer, by_id)
    elif optimizer is not None:
        # a fresh optimizer over the stand-ins (or, without trainable ones, the error saying so)
        opt = make_optimizer(optimizer, _Params(params) if params else module)
    else:
        opt = None
    if opt is not None and count_target.cuda:
        cuda_optimizer_path(opt, settled=False)
    warmup = opt is not None if warmup is None else warmup

    def step(counter: OpCounter | None) -> None:
        clear_cast_cache()  # each step is its own autocast region
        with torch.enable_grad() if train else torch.no_grad():
            out = run(*meta_inputs, **meta_kwargs)
            if not train:
                return
            loss = step_loss(out, loss_fn, meta_target)
        if counter is not None:
            counter.set_phase("backward")
        with outside_autocast():  # as a training loop's backward and optimizer step run
            loss.backward()
            if opt is not None:
                if counter is not None:
                    counter.set_phase("optimizer")
                opt.step()
                opt.zero_grad(set_to_none=True)

    rules = (
        cuda_rules(count_target, ambient_autocast())
        if count_target.cuda
        else contextlib.nullcontext()
    )
    with counting_for(count_target), rules, torch.random.fork_rng(devices=[]):
        if warmup:
            with MetaErrors():
                step(None)
            for p in params:
                p.grad = None
        if opt is not None and count_target.cuda:
            cuda_optimizer_path(opt, settled=True)
        torch.clear_autocast_cache()
        counter = OpCounter(cost_model=cost_model, module=module)
        with counter:
            step(counter)
    assert counter.profile is not None
    return counter.profile


def _profile_on_cpu_for(
    fn: Any,
    module: torch.nn.Module | None,
    inputs: tuple[Any, ...],
    call_kwargs: dict[str, Any],
    *,
    train: bool,
    optimizer: Any,
    loss_fn: Any,
    target: Any,
    cost_model: Any,
    warmup: bool | None,
    count_target: Any,
) -> StepProfile:
    """:func:`profile`'s CPU fallback for a target: the step computed on the CPU, counted with
    the target's rules that run there (see ``fallback`` in :func:`profile`)."""
    from lightning_to_energy.counting.cuda_rules import ambient_autocast, cuda_rules
    from lightning_to_energy.counting.target import (
        counting_for,
        cuda_optimizer,
        cuda_optimizer_path,
    )

    def on_cpu(t: Any) -> Any:
        if not isinstance(t, torch.Tensor) or t.device.type != "meta":
            return t
        if t.is_floating_point():
            out = torch.randn(t.shape, dtype=t.dtype)
        else:
            out = torch.zeros(t.shape, dtype=t.dtype)  # valid indices, labels and masks
        return out.requires_grad_(t.requires_grad)

    from torch.utils._pytree import tree_map

    inputs, call_kwargs, target = tree_map(on_cpu, (tuple(inputs), call_kwargs, target))
    original = module
    if module is not None and any(
        t.device.type == "meta" for t in (*module.parameters(), *module.buffers())
    ):
        module = copy.deepcopy(module).to_empty(device="cpu")
        with torch.no_grad():
            for sub in module.modules():
                reset = getattr(sub, "reset_parameters", None)
                if callable(reset):
                    reset()
        fn = module
    opt = optimizer
    if isinstance(optimizer, torch.optim.Optimizer) and module is not None:
        # a fresh optimizer of the same settings: the user's is not switched to CUDA's path
        assert original is not None
        same = dict(zip(map(id, original.parameters()), module.parameters(), strict=True))
        opt = cuda_optimizer(optimizer, same)
    elif isinstance(optimizer, str):
        opt = make_optimizer(optimizer, module)
    if count_target.cuda and opt is not None:
        cuda_optimizer_path(opt, settled=True)  # fused kernels exist on the CPU too
    autocast = ambient_autocast()
    rules = (
        cuda_rules(count_target, autocast, key="AutogradCPU")
        if count_target.cuda
        else contextlib.nullcontext()
    )
    # the CPU's own autocast policy is replaced by the target's (applied by the rules)
    with counting_for(count_target), rules, torch.autocast("cpu", enabled=False):
        return _profile_here(
            fn,
            module,
            inputs,
            call_kwargs,
            train=train,
            optimizer=opt,
            loss_fn=loss_fn,
            target=target,
            cost_model=cost_model,
            warmup=warmup,
        )


class _Params:
    """A stand-in module for :func:`make_optimizer`: only ``parameters()`` is asked."""

    def __init__(self, params: list[torch.Tensor]) -> None:
        self._params = params

    def parameters(self) -> list[torch.Tensor]:
        return self._params


def _clear_grads(module: Any, leaves: list[torch.Tensor]) -> None:
    for t in leaves:
        t.grad = None
    if module is not None:
        for p in module.parameters():
            p.grad = None


def make_optimizer(optimizer: Any, module: Any) -> Any:
    """``optimizer`` as an optimizer over ``module``'s trainable parameters: itself, None, or
    one built from a name (``"sgd"``, ``"adam"``, ``"adamw"``; learning rate 1e-3).

    Raises:
        ValueError: another value, or a name with no trainable parameters to optimise.
    """
    if optimizer is None or isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if not isinstance(optimizer, str) or optimizer.lower() not in _OPTIMIZERS:
        raise ValueError(
            f"profile(): expected optimizer None, one of {_OPTIMIZERS} or a "
            f"torch.optim.Optimizer; found {optimizer!r}. Pass one of those."
        )
    params = [p for p in module.parameters() if p.requires_grad] if module is not None else []
    if not params:
        raise ValueError(
            f"profile(): optimizer {optimizer!r} needs an nn.Module with trainable parameters; "
            f"found {type(module).__name__ if module is not None else 'a plain callable'} with "
            "none. Pass a module, or a torch.optim.Optimizer built over your parameters."
        )
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    return cls[optimizer.lower()](params, lr=1e-3)


def random_label_loss(
    model: Any, *inputs: Any, kwargs: Mapping[str, Any] | None = None
) -> tuple[Any, Any]:
    """The loss of a typical classification step for ``model``, for ``profile(train=True)``.

    Cross-entropy of the output's last dimension (the classes) against random labels, made
    here, outside any counted step (a real step's labels come with its batch). The output's
    shape is read from one forward pass in eval mode without grad (no batch-norm statistics
    move), and the model's mode is put back. ``kwargs`` are the model's keyword inputs.

    Returns:
        ``(loss_fn, target)`` for :func:`profile`; ``(None, None)`` when the output is not one
        floating-point tensor with at least 2 classes on its last dimension (the default loss,
        the sum of the outputs, then applies).
    """
    module = model if isinstance(model, torch.nn.Module) else None
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    try:
        with torch.no_grad():
            out = model(*inputs, **(kwargs or {}))
    finally:
        if module is not None:
            module.train(was_training)
    if not (
        isinstance(out, torch.Tensor)
        and out.is_floating_point()
        and out.ndim >= 2
        and out.shape[-1] >= 2
    ):
        return None, None
    classes = out.shape[-1]
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(classes, (out.numel() // classes,), generator=generator)
    return _flat_cross_entropy, target.to(out.device)


def _flat_cross_entropy(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # [..., C] -> [N, C] is a view (no kernel); cross_entropy is log_softmax + nll_loss
    return torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), target)


def step_loss(out: Any, loss_fn: Any, target: Any) -> Any:
    """The loss of a step's output: ``loss_fn(out[, target])``, or the sum of its floating-point
    tensors that require grad without a ``loss_fn``.

    Raises:
        DefaultLossError: no ``loss_fn`` and no such tensor in ``out``.
    """
    if loss_fn is not None:
        return loss_fn(out) if target is None else loss_fn(out, target)
    parts = [
        t.sum()
        for t in tree_leaves(out)
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.requires_grad
    ]
    if not parts:
        raise DefaultLossError(
            "profile(train=True): expected an output with floating-point tensors that require "
            f"grad, to sum into a default loss; found {type(out).__name__} without any. Pass "
            "loss_fn=..., or a model with trainable parameters."
        )
    loss = parts[0]
    for part in parts[1:]:
        loss = loss + part
    return loss


@contextmanager
def _preserved(
    module: Any, optimizer: Any, *, params: bool, leaves: list[torch.Tensor]
) -> Iterator[None]:
    """Restore the RNG, ``optimizer``'s state, ``module``'s buffers and ``.grad`` tensors, and
    its parameters too when ``params`` (an optimizer is about to update them); and the
    ``.grad`` of the input ``leaves``."""
    saved: dict[str, torch.Tensor] = {}
    grads: list[tuple[Any, Any]] = [(t, t.grad) for t in leaves]
    devices: list[int] = []
    if module is not None:
        weights = {id(p) for p in module.parameters()}
        saved = {
            k: v.detach().clone()
            for k, v in module.state_dict(keep_vars=True).items()
            if params or id(v) not in weights
        }
        grads += [(p, p.grad) for p in module.parameters()]
        devices = sorted({p.device.index or 0 for p, _ in grads if p.is_cuda})
    opt_state = copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        if module is not None:
            live = module.state_dict(keep_vars=True)
            with torch.no_grad():
                for k, value in saved.items():
                    if k in live:
                        live[k].copy_(value)
        for p, g in grads:
            p.grad = g
        if opt_state is not None:
            optimizer.load_state_dict(opt_state)
