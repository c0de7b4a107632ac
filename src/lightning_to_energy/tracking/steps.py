"""Step accounting: which profile each step ran, counted once per signature and replayed after.

A step whose signature is new is counted under the dispatch mode; every later step with that
signature replays the cached profile at the cost of a dictionary look-up and a few additions.
Each distinct profile is turned once into its feature vector (the features, then TOs, FLOPs
and roofline seconds), which the open window sums.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from lightning_to_energy.counting import (
    OpCounter,
    ProfileCache,
    ProfileSum,
    StepProfile,
    StepSignature,
)
from lightning_to_energy.counting.cache import SlowKeys
from lightning_to_energy.counting.cost_model import CostModel
from lightning_to_energy.tracking.ledger import LOOPS

__all__ = ["PROFILE_FEATURES", "SLOW_KEYS_EVERY", "StepAccounting"]

# Feature names the tracker knows how to compute from a step profile, besides duration_s.
PROFILE_FEATURES: dict[str, Callable[[StepProfile], float]] = {
    "tos": lambda p: float(p.tos),
    "flops": lambda p: float(p.flops),
    "tos_matrix_full": lambda p: float(p.tos_matrix_full),
    "tos_matrix_reduced": lambda p: float(p.tos_matrix_reduced),
    "tos_matrix_tf32": lambda p: float(p.tos_matrix_tf32),
    "tos_matrix_low": lambda p: float(p.tos_matrix_low),
    "tos_vector": lambda p: float(p.tos_vector),
    "bytes": lambda p: float(p.bytes_read + p.bytes_written),
    "kernels": lambda p: float(p.kernels),
    "steps": lambda p: 1.0,  # a window's sum is its step count: a fixed cost per step
}
# NB: the signature's slow keys (which parameters train, TF32 flags, the optimizer's flags)
# are read when a window opens and every SLOW_KEYS_EVERY steps, not every step: they cost
# tens of microseconds a step and change between epochs if ever. A change mid-window is seen
# at most SLOW_KEYS_EVERY steps late (and by the cache's periodic re-count).
SLOW_KEYS_EVERY = 64


class StepAccounting:
    """Counts or replays each step, and keeps the run's per-loop step counts and TO sums.

    Args:
        module: the model whose steps are counted.
        optimizer: its optimizer (part of a train step's signature), or None.
        cost_model: transistor costs of the counted operations.
        profile_features: the regression's features other than ``duration_s``.
        recheck_every: count one step in this many of a cached signature.
        roofline_s: a profile's roofline seconds on this device (NaN without a roofline).
    """

    def __init__(
        self,
        module: Any,
        optimizer: Any,
        cost_model: CostModel,
        profile_features: tuple[str, ...],
        recheck_every: int,
        roofline_s: Callable[[StepProfile], float],
    ) -> None:
        self.module = module
        self.optimizer = optimizer
        self.cost_model = cost_model
        self.profile_features = profile_features
        self.roofline_s = roofline_s
        self.cache = ProfileCache(recheck_every=recheck_every)
        self.profiles: dict[int, StepProfile] = {}
        self.vectors: dict[int, tuple[float, ...]] = {}
        # Every step completed, by profile: the report's breakdowns.
        self.run_steps = ProfileSum()
        self.steps: dict[str, int] = dict.fromkeys(LOOPS, 0)
        self.last_profile: dict[str, int] = {}  # loop -> id of the last profile used
        self.first_profile: dict[str, int] = {}  # loop -> id of its first step's profile
        self.tos_total = 0.0  # TOs of every step completed (restored checkpoints included)
        self._counter: OpCounter | None = None
        self._counting_sig: StepSignature | None = None
        self._pending: tuple[int, tuple[float, ...]] | None = None
        # The signature's slow keys (TF32 flags, trainable parameters, optimizer), per loop,
        # with the steps left before they are read again: see signature().
        self._slow: dict[str, tuple[SlowKeys, int]] = {}

    @property
    def in_step(self) -> bool:
        """Whether a step was begun and not yet ended or dropped."""
        return self._counter is not None or self._pending is not None

    def new_window(self) -> None:
        """A new window (a new epoch or loop) reads every slow key afresh."""
        self._slow.clear()

    def begin(self, batch: Any, loop: str, will_step: bool) -> None:
        """Start counting the step, or take its cached profile."""
        sig = self.signature(batch, loop, will_step)
        cached = self.cache.replay(sig)
        if cached is None:
            self._counting_sig = sig
            self._counter = OpCounter(cost_model=self.cost_model, module=self.module)
            self._counter.start()
            self._pending = None
        else:
            self._pending = self.vector_for(cached)

    def signature(self, batch: Any, loop: str, will_step: bool) -> StepSignature:
        """The step's signature; its slow keys are re-read every ``SLOW_KEYS_EVERY`` steps."""
        optimizer = self.optimizer if loop == "train" else None
        slow, left = self._slow.get(loop) or (None, 0)
        if slow is None or left <= 0:
            slow, left = StepSignature.slow_keys(self.module, optimizer), SLOW_KEYS_EVERY
        self._slow[loop] = (slow, left - 1)
        return StepSignature.capture(
            batch, self.module, optimizer=optimizer, will_step=will_step, slow=slow
        )

    def set_phase(self, phase: str) -> None:
        """Attribute the ops that follow to ``phase`` when the step is being counted."""
        if self._counter is not None:
            self._counter.set_phase(phase)

    def abort(self) -> None:
        """Drop the step begun: stop counting it, keep nothing of it."""
        counter, self._counter = self._counter, None
        self._counting_sig = None
        self._pending = None
        if counter is not None:
            with contextlib.suppress(Exception):
                counter.stop()

    def finish(self) -> tuple[int, tuple[float, ...]] | None:
        """The begun step's profile id and feature vector; None when no step was begun."""
        if self._counter is not None:
            profile = self._counter.stop()
            self._counter = None
            assert self._counting_sig is not None
            # The cache's profile where this one did the same work: one object per distinct
            # profile, so the run's sums do not grow with every re-check.
            profile = self.cache.store(self._counting_sig, profile)
            self._counting_sig = None
            return self.vector_for(profile)
        if self._pending is not None:
            done, self._pending = self._pending, None  # a stray second end must not add it again
            return done
        return None

    def add(self, loop: str, pid: int, vector: tuple[float, ...]) -> None:
        """Count a completed step of ``loop`` that ran profile ``pid``."""
        self.run_steps.add(self.profiles[pid])
        self.tos_total += vector[len(self.profile_features)]
        self.steps[loop] = self.steps.get(loop, 0) + 1
        self.last_profile[loop] = pid
        self.first_profile.setdefault(loop, pid)

    def vector_for(self, profile: StepProfile) -> tuple[int, tuple[float, ...]]:
        """``(id, vector)`` of ``profile``: its features, then TOs, FLOPs and roofline seconds."""
        pid = id(profile)
        vector = self.vectors.get(pid)
        if vector is None:
            vector = (
                *(PROFILE_FEATURES[f](profile) for f in self.profile_features),
                float(profile.tos),
                float(profile.flops),
                self.roofline_s(profile),
            )
            self.profiles[pid] = profile
            self.vectors[pid] = vector
        return pid, vector

    def features_of(self, loop: str, scale: float) -> dict[str, float] | None:
        """The features of ``scale`` steps of ``loop``'s last profile, ``duration_s`` aside;
        None before any step of ``loop``."""
        pid = self.last_profile.get(loop)
        if pid is None:
            return None
        vector = self.vectors[pid]
        return {f: vector[i] * scale for i, f in enumerate(self.profile_features)}

    def first_step(self) -> tuple[StepProfile, dict[str, float]] | None:
        """The run's first training step's profile and its features (``duration_s`` aside),
        else the first step's of another loop; None before any step."""
        pid = self.first_profile.get("train")
        if pid is None:
            pid = next(iter(self.first_profile.values()), None)
        if pid is None:
            return None
        vector = self.vectors[pid]
        return self.profiles[pid], {f: vector[i] for i, f in enumerate(self.profile_features)}
