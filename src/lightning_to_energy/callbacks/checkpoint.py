"""The callback's checkpoint state: every rank's own energy state gathered into rank 0's, each
rank's part found again on resume, and a state tried before it is kept."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from lightning_to_energy.callbacks.trainer_info import rank_and_world
from lightning_to_energy.tracking.tracker import EnergyTracker

__all__ = ["gather_rank_states", "own_rank_state", "restorable_state"]


def gather_rank_states(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with every rank's own state under ``"ranks"`` (the writer's entry None: it is
    the state itself); ``state`` as it is in a single process.

    Lightning writes rank 0's callback state only and hands it to every rank on resume, so each
    rank's windows ride along. Lightning calls this on every rank when it saves
    (``Trainer.save_checkpoint`` is collective), so the gather stays in lockstep.
    """
    rank, world = rank_and_world()
    if world <= 1:
        return state
    gathered: list[Any] = [None] * world
    torch.distributed.all_gather_object(gathered, state)
    gathered[rank] = None
    return {**state, "ranks": gathered}


def own_rank_state(state: Any, note: Callable[[str], None]) -> Any:
    """This rank's part of a checkpoint's state (see :func:`gather_rank_states`); ``note`` is
    told when the checkpoint was written by another number of processes."""
    if not isinstance(state, dict):
        return state  # not a state at all: the callback says so
    rank, world = rank_and_world()
    ranks = state.get("ranks")
    if not isinstance(ranks, list):
        # One process wrote it (or an older release under DDP, with rank 0's windows
        # only): rank 0 takes it; loaded on every rank it would count them once per rank.
        if world > 1 and state:
            note(
                f"the checkpoint holds one process's energy state, resumed on {world} "
                "ranks: rank 0 restores it, the other ranks' totals start at the resume."
            )
        return dict(state) if rank == 0 else {}
    if len(ranks) != world:
        note(
            f"the checkpoint's energy state was written by {len(ranks)} ranks and is "
            f"resumed on {world}: ranks {world} and above are not restored, new ranks "
            "start at the resume."
        )
    own = ranks[rank] if rank < len(ranks) else {}
    if own is None:
        return {k: v for k, v in state.items() if k != "ranks"}
    return dict(own) if isinstance(own, dict) else own


def restorable_state(
    state: Any, tracker_kwargs: Mapping[str, Any], note: Callable[[str], None]
) -> bool:
    """Whether a checkpoint's state loads into a tracker built with ``tracker_kwargs``; if not,
    ``note`` is told why, and the energy totals start again from the resume.

    Tried on a throwaway tracker when the checkpoint is loaded, before there is a tracker to
    load it into: so the warning comes at the resume, and a state kept for later (and saved
    again by a checkpoint taken before training starts) is one that loads.
    """
    try:
        EnergyTracker(None, sensors=None, **tracker_kwargs).load_state_dict(state)
    except Exception as exc:  # any malformed state: training must go on without it
        detail = str(exc).rstrip(".")
        note(
            "the TOEnergy state in the checkpoint was not restored: expected a state "
            f"written by this release with features {list(tracker_kwargs['features'])}, "
            f"found {type(exc).__name__}: {detail}. Energy totals, windows and the model "
            "start again from the resume; training is not affected. Fix: resume with the "
            "TOEnergy(features=...) the checkpoint was written with, or the release that "
            "wrote it."
        )
        return False
    return True
