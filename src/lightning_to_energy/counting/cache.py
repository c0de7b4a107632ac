"""Step signatures and the profile cache: count a step once, replay its profile after.

Counting a step costs a dispatch-mode pass; most training steps repeat the same ops. A
:class:`StepSignature` captures, cheaply, everything that decides which ops a step runs and
in which number format (batch shapes, dtypes and devices, autocast, grad and inference mode,
train/eval, TF32 flags, which parameters train, the optimizer); :class:`ProfileCache` maps
signatures to counted profiles and asks for a periodic re-count to catch data-dependent paths.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Hashable, Mapping
from operator import attrgetter
from typing import Any, NamedTuple

import torch

from lightning_to_energy.counting.profile import StepProfile
from lightning_to_energy.counting.registry import tf32_allowed

__all__ = [
    "ProfileCache",
    "SlowKeys",
    "StepSignature",
]

_requires_grad = attrgetter("requires_grad")

# id(module) -> [weak reference to it, its parameters, captures left before a refresh]
_PARAMS: dict[int, list[Any]] = {}
_PARAMS_REFRESH = 256


_SCALARS = frozenset({str, bytes, int, float, bool, type(None)})


def _leaf(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        # (is_cuda, index) stands for the device: hashing a torch.device is slow
        return (x.shape, x.dtype, x.is_cuda, x.get_device())
    if type(x) in _SCALARS:  # the common non-tensor leaves, before the slower checks below
        return type(x)
    # Containers pytree does not know, which Lightning still moves to the device: mappings
    # that are not dicts (HuggingFace's BatchEncoding is a UserDict), dataclasses, list and
    # tuple subclasses. Their tensors' shapes decide the step's ops as much as a dict's do.
    if isinstance(x, Mapping):
        return (type(x), *((k, _leaf(v)) for k, v in x.items()))
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return (type(x), *(_leaf(getattr(x, f.name)) for f in dataclasses.fields(x)))
    if isinstance(x, (list, tuple)):
        kinds = {type(v) for v in x}
        if kinds <= _SCALARS:  # e.g. a batch's file names or ids: their count and types
            return (type(x), len(x), frozenset(kinds))
        return (type(x), *map(_leaf, x))
    # NB: other non-tensor leaves count by type only: ids, strings and step numbers change
    # every batch and rarely change the ops.
    return type(x)


def _batch_key(batch: Any) -> Hashable:
    """Shapes, dtypes and devices of the batch's tensors, with the batch's structure."""
    # fast paths for the common layouts; pytree for anything else
    if isinstance(batch, torch.Tensor):
        return _leaf(batch)
    if type(batch) in (tuple, list):
        if all(isinstance(x, torch.Tensor) for x in batch):
            return (type(batch), *map(_leaf, batch))
    elif type(batch) is dict and all(isinstance(x, torch.Tensor) for x in batch.values()):
        return (dict, *((k, _leaf(v)) for k, v in batch.items()))
    # NB: _leaf walks tuples, lists, mappings and dataclasses itself: much cheaper than
    # tree_flatten and str(spec) (a batch carrying 64 file names: about 120 -> 15 us a step).
    return _leaf(batch)


def _trainable_key(module: torch.nn.Module | None) -> Hashable:
    """Which parameters require grad, as a hashable bit pattern over a cached parameter list."""
    if module is None:
        return None
    entry = _PARAMS.get(id(module))
    if entry is None or entry[0]() is not module or entry[2] <= 0:
        if len(_PARAMS) > 64:  # forget modules that are gone
            for key in [k for k, e in _PARAMS.items() if e[0]() is None]:
                del _PARAMS[key]
        params = list(module.parameters())
        entry = _PARAMS[id(module)] = [weakref.ref(module), params, _PARAMS_REFRESH]
    entry[2] -= 1
    params = entry[1]
    # NB: the parameter list is refreshed every 256 captures, so a parameter added to the
    # module (rare outside lazy modules' first step) is seen with that delay. The bit
    # pattern costs about 0.1 us per parameter tensor on every capture.
    return (len(params), hash(tuple(map(_requires_grad, params))))


def _optimizer_key(optimizer: Any) -> Hashable:
    if optimizer is None:
        return None
    defaults = getattr(optimizer, "defaults", {})
    return (
        type(optimizer).__qualname__,
        defaults.get("foreach"),
        defaults.get("fused"),
        len(getattr(optimizer, "param_groups", ())),
    )


_NO_AUTOCAST = (False, None, False, None)

if hasattr(torch, "get_autocast_dtype"):  # torch >= 2.4

    def _autocast_key() -> Hashable:
        cpu = torch.is_autocast_enabled("cpu")
        cuda = torch.is_autocast_enabled("cuda")
        if not (cpu or cuda):  # the common case, answered without reading the dtypes
            return _NO_AUTOCAST
        return (
            cpu,
            torch.get_autocast_dtype("cpu") if cpu else None,
            cuda,
            torch.get_autocast_dtype("cuda") if cuda else None,
        )

else:  # pragma: no cover - older torch

    def _autocast_key() -> Hashable:
        cpu = torch.is_autocast_cpu_enabled()
        cuda = torch.is_autocast_enabled()
        return (
            cpu,
            torch.get_autocast_cpu_dtype() if cpu else None,
            cuda,
            torch.get_autocast_gpu_dtype() if cuda else None,
        )


def _tf32_key() -> Hashable:
    # TF32 flags act on CUDA tensors only, and reading them costs microseconds: a process that
    # has never initialised CUDA has no CUDA tensor whose ops they could change.
    if not torch.cuda.is_initialized():
        return None
    return (
        tf32_allowed(conv=False),
        tf32_allowed(conv=True),
        tf32_allowed(conv=False, rnn=True),
    )


SlowKeys = tuple[Hashable, Hashable, Hashable]
"""(tf32, trainable, optimizer) keys: see :meth:`StepSignature.slow_keys`."""


class StepSignature(NamedTuple):
    """What decides the ops of a step; equal signatures count equal work.

    Fields are opaque hashable keys; build one with :meth:`capture`. A named tuple rather
    than a dataclass: it is built and hashed on every step, and tuples do both fastest.
    """

    batch: Hashable
    autocast: Hashable
    grad_enabled: bool
    inference_mode: bool
    training: bool | None
    tf32: Hashable
    trainable: Hashable
    optimizer: Hashable
    will_step: bool
    accumulate: int

    @classmethod
    def capture(
        cls,
        batch: Any,
        module: torch.nn.Module | None,
        optimizer: Any = None,
        will_step: bool = True,
        accumulate: int = 1,
        slow: SlowKeys | None = None,
    ) -> StepSignature:
        """The signature of the step about to run on ``batch``.

        Args:
            batch: the step's batch (tensors nested in tuples, lists, dicts...).
            module: the model; its train/eval mode and trainable parameters are part of it.
            optimizer: the optimizer that steps, if any (its type and foreach/fused flags).
            will_step: whether the optimizer steps after this batch (gradient accumulation).
            accumulate: gradient accumulation factor.
            slow: the keys of :meth:`slow_keys` taken earlier for the same module and
                optimizer, to reuse; None takes them now.
        """
        if slow is None:
            slow = cls.slow_keys(module, optimizer)
        return cls(
            batch=_batch_key(batch),
            autocast=_autocast_key(),
            grad_enabled=torch.is_grad_enabled(),
            inference_mode=torch.is_inference_mode_enabled(),
            training=module.training if module is not None else None,
            tf32=slow[0],
            trainable=slow[1],
            optimizer=slow[2],
            will_step=will_step,
            accumulate=accumulate,
        )

    @staticmethod
    def slow_keys(module: torch.nn.Module | None, optimizer: Any = None) -> SlowKeys:
        """The parts of a signature that cost the most to read and change the least.

        TF32 flags, which parameters train and the optimizer's type and flags: in a training
        loop these change between epochs, if ever. Reading them costs tens of microseconds in
        a real step (the interpreter runs cache-cold after the model's kernels), so a caller
        may take them once in a while and pass them to :meth:`capture`.
        """
        return (_tf32_key(), _trainable_key(module), _optimizer_key(optimizer))


class ProfileCache:
    """Counted profiles by step signature, with a periodic re-count.

    Protocol per step: ``if cache.needs_count(sig)``: count the step and ``store(sig, p)``;
    else ``lookup(sig)`` returns the stored profile. A signature is counted when first seen
    and again on the step after every ``recheck_every - 1`` replays (so one step in
    ``recheck_every`` is counted). A re-count whose work differs replaces the profile and
    marks the signature as data-dependent (:attr:`changed_signatures`).

    The first count of a signature is provisional: a first step also does one-off work (an
    optimizer creating its state with ``zeros_like``, lazy buffers), so the second step of
    that signature is counted too, and its profile replaces the first without marking the
    signature as data-dependent. Replays then reproduce the steady state.

    Args:
        recheck_every: count one step in this many of the same signature (>= 1; 1 counts
            every step).

    Raises:
        ValueError: ``recheck_every`` is below 1.
    """

    def __init__(self, recheck_every: int = 1000) -> None:
        if recheck_every < 1:
            raise ValueError(
                f"recheck_every: expected an integer >= 1; found {recheck_every!r}. "
                "Use 1 to count every step, or a larger number to replay between counts."
            )
        self.recheck_every = recheck_every
        self._profiles: dict[StepSignature, StepProfile] = {}
        self._replays: dict[StepSignature, int] = {}
        self.changed_signatures: set[StepSignature] = set()
        self._provisional: set[StepSignature] = set()
        self.counts = 0
        self.replays = 0

    def __len__(self) -> int:
        return len(self._profiles)

    def __contains__(self, sig: object) -> bool:
        return sig in self._profiles

    def needs_count(self, sig: StepSignature) -> bool:
        """True if the step with this signature must be counted (new, or due for a re-check)."""
        replays = self._replays.get(sig)
        return replays is None or replays >= self.recheck_every - 1

    def lookup(self, sig: StepSignature) -> StepProfile | None:
        """The stored profile for ``sig`` (None if none), counting one replay of it."""
        profile = self._profiles.get(sig)
        if profile is not None:
            self._replays[sig] += 1
            self.replays += 1
        return profile

    def replay(self, sig: StepSignature) -> StepProfile | None:
        """The stored profile to replay for ``sig``, or None when the step must be counted.

        One call instead of :meth:`needs_count` then :meth:`lookup` (the hot path hashes the
        signature as few times as it can).
        """
        replays = self._replays.get(sig)
        if replays is None or replays >= self.recheck_every - 1:
            return None
        self._replays[sig] = replays + 1
        self.replays += 1
        return self._profiles[sig]

    def store(self, sig: StepSignature, profile: StepProfile) -> StepProfile:
        """Store a freshly counted profile; restarts the signature's replay count.

        Returns:
            The profile now held for ``sig``: ``profile``, or the stored one when ``profile``
            did the same work (a re-check that found nothing new). Callers keep that one, so
            that re-checks of unchanged work add no new profile object to sum.
        """
        old = self._profiles.get(sig)
        self.counts += 1
        if old is None:
            # Provisional: ask for the next step of this signature to be counted as well.
            self._profiles[sig] = profile
            self._provisional.add(sig)
            self._replays[sig] = max(self.recheck_every - 1, 0)
            return profile
        differs = not old.same_work(profile)
        if differs and sig not in self._provisional:
            self.changed_signatures.add(sig)
        if differs:
            self._profiles[sig] = profile
        self._provisional.discard(sig)
        self._replays[sig] = 0
        return profile if differs else old
