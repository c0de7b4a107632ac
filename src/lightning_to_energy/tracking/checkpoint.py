"""Checkpoint state: the tracker's windows, totals and model as plain JSON-able values.

:func:`parse_state` reads back what the tracker's ``state_dict`` wrote, all or nothing: every
field is parsed before the tracker takes any of it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lightning_to_energy.model.regression import OnlineEnergyModel
from lightning_to_energy.reporting.records import LoopTotals, PriorRecord, WindowRecord
from lightning_to_energy.tracking.ledger import LOOPS, WindowLedger

__all__ = [
    "STATE_VERSION",
    "RestoredState",
    "parse_state",
    "totals_to_dict",
    "tracker_state",
    "window_from_dict",
    "window_to_dict",
]

STATE_VERSION = 1


@dataclass(frozen=True)
class RestoredState:
    """A checkpoint's tracker state, parsed (see :func:`parse_state`)."""

    model: OnlineEnergyModel
    windows: list[WindowRecord]
    archived: dict[str, LoopTotals]
    steps: dict[str, int]
    n_windows: int
    archived_unpredicted_j: float
    archived_unmeasured_predicted_j: float
    elapsed_s: float
    warnings: list[str]
    breakdown: dict[str, Any]
    run_id: str | None
    prior: PriorRecord | None
    warmup_indices: frozenset[int] | None = None  # None: a checkpoint from before they were saved

    @property
    def tos_total(self) -> float:
        """TOs of every step so far, as the live readout counts them: the restored windows'."""
        return math.fsum(t.tos for t in self.archived.values()) + math.fsum(
            w.tos for w in self.windows
        )

    def restore_ledger(self, ledger: WindowLedger) -> None:
        """Give ``ledger`` the restored windows, archive and counts."""
        ledger.restore(
            self.windows,
            self.archived,
            self.n_windows,
            self.archived_unpredicted_j,
            self.archived_unmeasured_predicted_j,
            self.warmup_indices,
        )


def parse_state(state: Mapping[str, Any], features: tuple[str, ...]) -> RestoredState:
    """The tracker state of a checkpoint, for a tracker on ``features``.

    Raises:
        ValueError: the state was written by another release or with other features.
        KeyError, TypeError: a malformed entry.
    """
    if state.get("version") != STATE_VERSION:
        raise ValueError(
            f"TOEnergy checkpoint state version {STATE_VERSION} expected, found "
            f"{state.get('version')!r}; this checkpoint was written by a different "
            "lightning-to-energy release."
        )
    saved_features = tuple(state["model"].get("feature_names", ()))
    if saved_features != features:
        raise ValueError(
            f"checkpoint state: expected a model on features {list(features)}, found "
            f"{list(saved_features)}; fix: construct the tracker with "
            f"features={list(saved_features)!r} to resume from it."
        )
    model = OnlineEnergyModel(features)
    model.load_state_dict(state["model"])
    windows = [WindowRecord(**window_from_dict(w)) for w in state["windows"]]
    # Checkpoints before "prior" existed say nothing of the prior: the report then neither.
    saved_prior = state.get("prior")
    # Checkpoints before "warmup_windows" existed: the first train window kept is the warm-up.
    saved_warmups = state.get("warmup_windows")
    return RestoredState(
        model=model,
        windows=windows,
        archived={
            loop: LoopTotals(**{**t, "energy_j": dict(t["energy_j"])})
            for loop, t in state.get("archived", {}).items()
        },
        steps={**dict.fromkeys(LOOPS, 0), **{k: int(v) for k, v in state["steps"].items()}},
        n_windows=int(state.get("n_windows", len(windows))),
        archived_unpredicted_j=float(state.get("archived_unpredicted_j", 0.0)),
        archived_unmeasured_predicted_j=float(state.get("archived_unmeasured_predicted_j", 0.0)),
        elapsed_s=float(state["elapsed_s"]),
        warnings=[str(w) for w in state.get("warnings", [])],
        # Checkpoints before "breakdown" existed restore none: the report's TO breakdowns then
        # cover the steps run since the resume.
        breakdown=dict(state.get("breakdown", {})),
        run_id=str(state["run_id"]) if state.get("run_id") else None,
        prior=None if saved_prior is None else PriorRecord(**saved_prior),
        warmup_indices=None if saved_warmups is None else frozenset(int(i) for i in saved_warmups),
    )


def totals_to_dict(t: LoopTotals) -> dict[str, Any]:
    """A loop's totals as plain values."""
    d = dict(t.__dict__)
    d["energy_j"] = dict(t.energy_j)
    return d


def window_to_dict(w: WindowRecord) -> dict[str, Any]:
    """A window record as plain values (tuples become lists)."""
    d = dict(w.__dict__)
    d["energy_j"] = dict(w.energy_j)
    d["features"] = dict(w.features)
    d["flags"] = list(w.flags)
    return d


def window_from_dict(d: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of the :class:`WindowRecord` that :func:`window_to_dict` wrote."""
    out = dict(d)
    out["energy_j"] = dict(d["energy_j"])
    out["features"] = dict(d["features"])
    out["flags"] = tuple(d["flags"])
    return out


def tracker_state(
    *,
    windows: Sequence[WindowRecord],
    n_windows: int,
    ledger: WindowLedger,
    steps: Mapping[str, int],
    elapsed_s: float,
    model: OnlineEnergyModel,
    warnings: Sequence[str],
    breakdown: Mapping[str, Any],
    run_id: str,
    prior: PriorRecord | None,
    warmup_indices: frozenset[int],
) -> dict[str, Any]:
    """The tracker's state as plain JSON-able values (read back by :func:`parse_state`).

    ``windows`` and ``n_windows`` are the ledger's with the open window's snapshot, when the
    tracker took one; ``model`` the model after it; ``warmup_indices`` the warm-up windows'
    (the snapshot's included when it is one).
    """
    return {
        "version": STATE_VERSION,
        "windows": [window_to_dict(w) for w in windows],
        "n_windows": n_windows,
        "archived": {loop: totals_to_dict(t) for loop, t in ledger.archived.items()},
        "archived_unpredicted_j": ledger.archived_unpredicted_j,
        "archived_unmeasured_predicted_j": ledger.archived_unmeasured_predicted_j,
        "steps": dict(steps),
        "elapsed_s": elapsed_s,
        "model": model.state_dict(),
        "warnings": list(warnings),
        "breakdown": breakdown,
        "run_id": run_id,
        "prior": None if prior is None else dict(prior.__dict__),
        "warmup_windows": sorted(warmup_indices),
    }
