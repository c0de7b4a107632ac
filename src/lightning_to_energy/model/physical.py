"""A physical per-kernel model of a training step's time and energy on one accelerator.

Form (every parameter in SI units, with a physical range; see ``docs/physical-model.md``):

- a kernel's compute time for the work of one (unit, format) is ``flops / (peak x eff)`` with
  ``eff = s / (s + flop_half)`` at ``s`` FLOPs per kernel, i.e. ``(flops + flop_half x kernels)
  / peak``: each kernel pays a ramp of ``flop_half / peak`` seconds (waves, tails, latency);
  a convolution's matrix work (``OpCost.kind == "conv"``) has its own curve: ``(flops /
  conv_share + conv_flop_half x kernels) / peak``, and costs ``j_per_flop / conv_share`` per
  FLOP (it runs at the unit's full dynamic power, only slower);
- its memory time is ``(bytes + bytes_half x kernels) / bandwidth`` (the same curve in bytes);
- an op's time is ``calls x max(compute time, memory time, launch_s x kernels)``;
- device time is the sum over the step's ops; host time is ``host_step_s + sum over phases of
  kernels x dispatch_s[phase]``; the step takes ``max(device time, host time)``;
- energy is ``base_w x step time + sum flops x j_per_flop + bytes x j_per_byte + busy_w x
  device time``.

FLOPs here are peak-FLOP equivalents (:data:`~lightning_to_energy.hardware.roofline.OP_FLOPS`:
an FMA is 2, a divide or exp 16), the unit in which datasheet peaks and the microbenchmarks'
pJ/FLOP are stated. Priors are in :mod:`lightning_to_energy.model.physical_prior`, the fit in
:mod:`lightning_to_energy.model.physical_fit`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from lightning_to_energy.counting.cost_model import NumberFormat, Unit
from lightning_to_energy.counting.profile import PHASES, StepProfile
from lightning_to_energy.counting.registry import CONV
from lightning_to_energy.hardware.roofline import OP_FLOPS

__all__ = [
    "CONV_KEYED",
    "CONV_SHARE_RANGE",
    "ENERGY_PREFIXES",
    "EXTRAPOLATION_WIDENING",
    "FORMAT",
    "KEYED",
    "SCALARS",
    "STATED_WIDENING_BASIS",
    "TIME_PREFIXES",
    "UNITS",
    "VERSION",
    "Key",
    "PhysicalModel",
    "PhysicalParams",
    "PlannedStep",
    "StepDesign",
    "StepPrediction",
    "energy_at",
    "key_name",
    "matrix_curves",
    "optimizer_kernels",
    "parse_key",
    "predict_step",
    "predict_steps",
    "prefix_of",
]

Key = tuple[Unit, NumberFormat]
"""A (unit, number format) pair: one rate, one efficiency curve, one energy per FLOP."""

FORMAT = "lightning-to-energy/physical-params"
VERSION = 1

# Units of the flat parameter names, by prefix (the part before "[").
UNITS: Mapping[str, str] = {
    "base_w": "W",
    "busy_w": "W",
    "ramp_share": "1",
    "peak_flop_s": "FLOP/s",
    "flop_half": "FLOP",
    "conv_share": "1",
    "conv_flop_half": "FLOP",
    "bandwidth_b_s": "B/s",
    "bytes_half": "B",
    "launch_s": "s",
    "host_step_s": "s",
    "dispatch_s": "s/kernel",
    "j_per_flop": "J/FLOP",
    "j_per_byte": "J/B",
}
TIME_PREFIXES = frozenset(
    {"peak_flop_s", "flop_half", "bandwidth_b_s", "bytes_half", "launch_s", "host_step_s"}
    | {"dispatch_s", "conv_share", "conv_flop_half"}
)
"""Parameters of the time model (fitted on measured times)."""
ENERGY_PREFIXES = frozenset({"base_w", "busy_w", "ramp_share", "j_per_flop", "j_per_byte"})
"""Parameters of the energy model (fitted on measured energies at measured times)."""

KEYED = ("peak_flop_s", "flop_half", "j_per_flop", "conv_share", "conv_flop_half")
CONV_KEYED = ("conv_share", "conv_flop_half")
"""The keyed tables of convolutions' own curve: optional (not given = the matmul curve), so
params and files written before convolutions had their own curve still read."""
CONV_SHARE_RANGE = (0.05, 1.5)
"""Physical range of ``conv_share``: above 1 only for algorithms doing fewer FMAs than
counted (Winograd, FFT)."""
SCALARS = ("base_w", "bandwidth_b_s", "bytes_half", "launch_s", "host_step_s", "j_per_byte")


def key_name(key: Key) -> str:
    """``(Unit.MATRIX, NumberFormat.TF32)`` -> ``"matrix/tf32"``."""
    return f"{key[0].value}/{key[1].value}"


def parse_key(text: str) -> Key:
    """``"matrix/tf32"`` -> ``(Unit.MATRIX, NumberFormat.TF32)``.

    Raises:
        ValueError: not ``unit/format`` with a known unit and format.
    """
    unit, _, fmt = text.partition("/")
    try:
        return Unit(unit), NumberFormat(fmt)
    except ValueError:
        raise ValueError(
            f"physical params: expected a key 'unit/format' with unit in "
            f"{[u.value for u in Unit]} and format in {[f.value for f in NumberFormat]}; "
            f"found {text!r}; fix: write e.g. 'matrix/bf16'"
        ) from None


def prefix_of(name: str) -> str:
    """The parameter family of a flat name: ``"j_per_flop[matrix/bf16]"`` -> ``"j_per_flop"``."""
    return name.split("[", 1)[0]


@dataclass(frozen=True)
class PhysicalParams:
    """The parameters of the physical step model (SI units).

    Args:
        base_w: draw with a CUDA context attached and no kernel running, W.
        peak_flop_s: achieved asymptotic rate per (unit, format), FLOP/s.
        flop_half: FLOPs per kernel at which a kernel reaches half its peak rate, per
            (unit, format).
        bandwidth_b_s: achieved asymptotic memory bandwidth, B/s.
        bytes_half: bytes per kernel at which a kernel reaches half the bandwidth, B.
        launch_s: device-side floor per kernel, s.
        host_step_s: fixed host cost per step, s.
        dispatch_s: host cost per kernel launched in each phase (:data:`PHASES`), s.
        j_per_flop: dynamic energy per FLOP above base power, per (unit, format), J.
        j_per_byte: dynamic energy per byte read or written, J.
        busy_w: extra draw while the device runs kernels (clocks, schedulers), W.
        ramp_share: share of a unit's full-rate dynamic power drawn during a kernel's ramp
            (the ``flop_half / peak`` seconds each kernel loses to waves and tails), 0..1:
            the ramp's FLOP-equivalents cost ``ramp_share x j_per_flop`` each.
        conv_share: a convolution's asymptotic rate as a share of ``peak_flop_s``, per
            (unit, format) (cuDNN's implicit GEMM reaches less of the matrix units than a
            cuBLAS GEMM); its FLOPs cost ``j_per_flop / conv_share`` each. Not given (empty):
            filled with the matmul curve (share 1, ``flop_half``), as params written before
            modelled convolutions, with a note saying so.
        conv_flop_half: a convolution kernel's ramp, in FLOPs at ``peak_flop_s``, per
            (unit, format) (the ``flop_half`` of convolutions).
        ranges: physical range (low, high) per flat parameter name (see :meth:`flat`).
        notes: where each parameter's value comes from, per flat name.

    Raises:
        ValueError: a value is negative or not finite, or a table misses a key another table
            has.
    """

    base_w: float
    peak_flop_s: Mapping[Key, float]
    flop_half: Mapping[Key, float]
    bandwidth_b_s: float
    bytes_half: float
    launch_s: float
    host_step_s: float
    dispatch_s: Mapping[str, float]
    j_per_flop: Mapping[Key, float]
    j_per_byte: float
    busy_w: float = 0.0
    ramp_share: float = 0.0
    conv_share: Mapping[Key, float] = field(default_factory=dict)
    conv_flop_half: Mapping[Key, float] = field(default_factory=dict)
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict, compare=False)
    notes: Mapping[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for name, value in self.flat().items():
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(
                    f"physical params: expected {name} to be a finite number >= 0 "
                    f"({UNITS[prefix_of(name)]}); found {value!r}; fix: give a physical value"
                )
        keys = set(self.peak_flop_s)
        for name in KEYED:
            table = set(getattr(self, name))
            if table != keys and not (name in CONV_KEYED and not table):
                raise ValueError(
                    f"physical params: expected {name} to list the same (unit, format) keys as "
                    f"peak_flop_s ({sorted(key_name(k) for k in keys)}); found "
                    f"{sorted(key_name(k) for k in table)}; fix: give every table the same "
                    "keys (prior_for fills them all; the conv tables may be left empty)"
                )
        if bool(self.conv_share) != bool(self.conv_flop_half):
            raise ValueError(
                "physical params: expected conv_share and conv_flop_half both given or both "
                f"empty; found {len(self.conv_share)} and {len(self.conv_flop_half)} keys; "
                "fix: give both (prior_for fills them)"
            )
        if not self.conv_share:
            self._conv_on_matmul_curve()
        missing = [p for p in PHASES if p not in self.dispatch_s]
        if missing:
            raise ValueError(
                f"physical params: expected dispatch_s for every phase {list(PHASES)}; "
                f"found none for {missing}; fix: add them"
            )

    def _conv_on_matmul_curve(self) -> None:
        """Fill empty conv tables with the matmul curve (share 1, ``flop_half``), as params
        made before convolutions had their own curve modelled them, and say so."""
        ranges, notes = dict(self.ranges), dict(self.notes)
        for key in self.peak_flop_s:
            name = key_name(key)
            ranges.setdefault(f"conv_share[{name}]", CONV_SHARE_RANGE)
            half_range = self.ranges.get(f"flop_half[{name}]")
            if half_range is not None:
                ranges.setdefault(f"conv_flop_half[{name}]", half_range)
            for flat in (f"conv_share[{name}]", f"conv_flop_half[{name}]"):
                notes.setdefault(flat, "not given: convolutions on the matmul curve")
        # a frozen dataclass: set once, here, before anyone reads it
        object.__setattr__(self, "conv_share", dict.fromkeys(self.peak_flop_s, 1.0))
        object.__setattr__(self, "conv_flop_half", dict(self.flop_half))
        object.__setattr__(self, "ranges", ranges)
        object.__setattr__(self, "notes", notes)

    # --- flat view: one name per scalar parameter --------------------------------------------

    def flat(self) -> dict[str, float]:
        """Every scalar parameter by flat name (``"peak_flop_s[matrix/tf32]"``, ``"base_w"``)."""
        out: dict[str, float] = {name: float(getattr(self, name)) for name in SCALARS}
        out["busy_w"] = float(self.busy_w)
        out["ramp_share"] = float(self.ramp_share)
        for name in KEYED:
            for key, value in getattr(self, name).items():
                out[f"{name}[{key_name(key)}]"] = float(value)
        for phase, value in self.dispatch_s.items():
            out[f"dispatch_s[{phase}]"] = float(value)
        return out

    def with_values(
        self, values: Mapping[str, float], notes: Mapping[str, str] | None = None
    ) -> PhysicalParams:
        """A copy with the flat-named ``values`` replaced (and ``notes`` updated).

        Raises:
            KeyError: a name is not a parameter of these params.
        """
        known = self.flat()
        unknown = [n for n in values if n not in known]
        if unknown:
            raise KeyError(
                f"physical params: expected parameter names among {sorted(known)}; found "
                f"{unknown}; fix: use names as PhysicalParams.flat() gives them"
            )
        changes: dict[str, Any] = {}
        tables: dict[str, dict[Any, float]] = {}
        for name, value in values.items():
            prefix = prefix_of(name)
            if prefix == name:
                changes[name] = float(value)
                continue
            inner = name[len(prefix) + 1 : -1]
            table = tables.setdefault(prefix, dict(getattr(self, prefix)))
            table[inner if prefix == "dispatch_s" else parse_key(inner)] = float(value)
        changes.update(tables)
        if notes:
            changes["notes"] = {**self.notes, **notes}
        return replace(self, **changes)

    def range_of(self, name: str) -> tuple[float, float]:
        """The physical range of a flat-named parameter ((0, inf) where none is stated)."""
        low, high = self.ranges.get(name, (0.0, math.inf))
        return float(low), float(high)

    # --- serialisation ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict; keys carry units (``base_w``, ``j_per_byte``...)."""
        d: dict[str, Any] = {"format": FORMAT, "version": VERSION}
        for name in SCALARS:
            d[name] = getattr(self, name)
        d["busy_w"] = self.busy_w
        d["ramp_share"] = self.ramp_share
        for name in KEYED:
            d[name] = {key_name(k): v for k, v in getattr(self, name).items()}
        d["dispatch_s"] = dict(self.dispatch_s)
        d["ranges"] = {n: [lo, hi] for n, (lo, hi) in self.ranges.items()}
        d["notes"] = dict(self.notes)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], prior: PhysicalParams | None = None) -> PhysicalParams:
        """Read :meth:`to_dict`'s output back.

        Args:
            d: the dict.
            prior: where a dict written before convolutions had their own curve (no
                ``conv_share``) takes those tables, ranges and notes from (``prior_for`` of
                its hardware); without one, its convolutions use the matmul curve, as when it
                was written.

        Raises:
            ValueError: not a physical-params dict, a newer version, or a field missing.
        """
        if d.get("format") != FORMAT or not isinstance(d.get("version"), int):
            raise ValueError(
                f"physical params: expected a dict with format {FORMAT!r} and an integer "
                f"version; found format {d.get('format')!r}, version {d.get('version')!r}; "
                "fix: pass the output of PhysicalParams.to_dict()"
            )
        if d["version"] > VERSION:
            raise ValueError(
                f"physical params: expected version <= {VERSION}; found {d['version']}; "
                "fix: upgrade lightning-to-energy to read this file"
            )
        needed = (*SCALARS, *(n for n in KEYED if n not in CONV_KEYED), "dispatch_s")
        missing = [n for n in needed if n not in d]
        if missing:
            raise ValueError(
                f"physical params: expected fields {list(needed)}; found none for {missing}; "
                "fix: write the file with PhysicalParams.to_dict()"
            )
        kwargs: dict[str, Any] = {n: float(d[n]) for n in SCALARS}
        for name in KEYED:
            kwargs[name] = {parse_key(k): float(v) for k, v in d.get(name, {}).items()}
        kwargs["dispatch_s"] = {str(k): float(v) for k, v in d["dispatch_s"].items()}
        kwargs["busy_w"] = float(d.get("busy_w", 0.0))
        kwargs["ramp_share"] = float(d.get("ramp_share", 0.0))
        kwargs["ranges"] = {
            str(n): (float(r[0]), float(r[1])) for n, r in d.get("ranges", {}).items()
        }
        kwargs["notes"] = {str(n): str(v) for n, v in d.get("notes", {}).items()}
        if prior is not None and not kwargs["conv_share"] and prior.conv_share:
            # written before convolutions had their own curve: their prior, said so per name
            keys = kwargs["peak_flop_s"]
            why = "not in the file (written before convolutions had their own curve): "
            for name in CONV_KEYED:
                table = getattr(prior, name)
                kwargs[name] = {k: table[k] for k in keys if k in table}
                for k in kwargs[name]:
                    flat = f"{name}[{key_name(k)}]"
                    kwargs["ranges"].setdefault(flat, prior.range_of(flat))
                    kwargs["notes"][flat] = why + prior.notes.get(flat, "prior")
        return cls(**kwargs)


# --- the forward model -------------------------------------------------------------------------


@dataclass(frozen=True)
class StepPrediction:
    """The model's time and energy of one step.

    Args:
        time_s: step time, s (``max(device_s, host_s)``).
        device_s: sum of the kernels' times, s.
        host_s: host time (fixed cost plus dispatch per kernel), s.
        bound: ``"device"`` or ``"host"``, whichever is longer.
        energy_j: ``static_j + work_j + busy_j``, J.
        static_j: ``base_w x time_s``, J.
        work_j: FLOPs x J/FLOP plus bytes x J/B, J.
        busy_j: ``busy_w x device_s``, J.
    """

    time_s: float
    device_s: float
    host_s: float
    bound: str
    energy_j: float
    static_j: float
    work_j: float
    busy_j: float = 0.0


def _check_profile(profile: StepProfile) -> None:
    if not profile.op_costs and (profile.kernels or profile.bytes or profile.counts):
        raise ValueError(
            "physical model: expected a profile with op_costs (per-kernel costs, filled by the "
            "counter); found one with work but no op_costs (built by hand or by an older "
            "version); fix: count the step with lightning_to_energy.counting.profile(...)"
        )


@dataclass(frozen=True)
class StepDesign:
    """The op rows of a set of profiles as arrays, so one forward pass is a few numpy ops.

    Columns are (unit, format) keys, split by kernel kind: a convolution's matrix work
    (``OpCost.kind == "conv"``) gets its own column of the same key (``conv`` marks it), which
    runs on the convolution curve. ``keys`` lists each column's key (a key may appear twice).
    ``ramp_kernels`` (rows x columns) counts the kernels that pay each column's ramp: all of
    the op's kernels, except where ``OpCost.vector_kernels`` sets some apart for its vector
    work (a CUDA convolution's bias add): those pay the vector ramp, the others the matrix one.
    """

    keys: tuple[Key, ...]
    sample: np.ndarray  # row -> profile index
    calls: np.ndarray
    kernels: np.ndarray
    row_bytes: np.ndarray
    row_flops: np.ndarray  # rows x columns, per call
    flops: np.ndarray  # profiles x columns, per step
    step_bytes: np.ndarray  # profiles
    phase_kernels: np.ndarray  # profiles x phases
    n: int
    conv: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # per column
    ramp_kernels: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    @classmethod
    def build(cls, profiles: Sequence[StepProfile]) -> StepDesign:
        cols: dict[tuple[Key, bool], int] = {}
        rows: list[tuple[int, float, float, float, dict[tuple[Key, bool], float], int]] = []
        for i, p in enumerate(profiles):
            _check_profile(p)
            for cost, n_calls in p.op_costs:
                conv = cost.kind == CONV
                work: dict[tuple[Key, bool], float] = {}
                for (op, fmt, unit), n in cost.ops.items():
                    # NB: only the matrix units run a convolution's inner products; its bias
                    # add and other vector work stay on the vector curve.
                    c = ((unit, fmt), conv and unit is Unit.MATRIX)
                    cols.setdefault(c, len(cols))
                    work[c] = work.get(c, 0.0) + n * OP_FLOPS[op]
                rows.append(
                    (
                        i,
                        float(n_calls),
                        float(cost.kernels),
                        float(cost.bytes_read + cost.bytes_written),
                        work,
                        min(cost.vector_kernels, cost.kernels),
                    )
                )
        r, K = len(rows), len(cols)
        row_flops = np.zeros((r, K))
        ramp_kernels = np.zeros((r, K))
        for j, (_, _, kernels, _, work, vector_kernels) in enumerate(rows):
            for c, v in work.items():
                row_flops[j, cols[c]] = v
                # each kernel pays the ramp of the work it runs: the vector kernels (a
                # convolution's bias add) the vector ramp, the rest the matrix one
                if vector_kernels:
                    matrix = c[0][0] is Unit.MATRIX
                    ramp_kernels[j, cols[c]] = (
                        kernels - vector_kernels if matrix else vector_kernels
                    )
                else:
                    ramp_kernels[j, cols[c]] = kernels
        sample = np.array([row[0] for row in rows], dtype=np.int64)
        calls = np.array([row[1] for row in rows])
        row_bytes = np.array([row[3] for row in rows])
        n = len(profiles)
        flops = np.zeros((n, K))
        np.add.at(flops, sample, row_flops * calls[:, None])
        step_bytes = np.bincount(sample, weights=row_bytes * calls, minlength=n)
        phase_kernels = np.array(
            [
                [float(p.by_phase[ph].kernels) if ph in p.by_phase else 0.0 for ph in PHASES]
                for p in profiles
            ]
        ).reshape(n, len(PHASES))
        return cls(
            keys=tuple(key for key, _ in cols),
            sample=sample,
            calls=calls,
            kernels=np.array([row[2] for row in rows]),
            row_bytes=row_bytes,
            row_flops=row_flops,
            flops=flops,
            step_bytes=step_bytes,
            phase_kernels=phase_kernels,
            n=n,
            conv=np.array([conv for _, conv in cols], dtype=bool),
            ramp_kernels=ramp_kernels,
        )

    def _table(self, table: Mapping[Key, float], name: str) -> np.ndarray:
        missing = [key_name(k) for k in self.keys if k not in table]
        if missing:
            raise KeyError(
                f"physical model: expected {name} for every (unit, format) the step runs; "
                f"found none for {missing}; fix: build the params with prior_for(spec), which "
                "fills every unit and format"
            )
        return np.array([table[k] for k in self.keys])

    def vec(self, p: PhysicalParams) -> dict[str, Any]:
        """The parameters as arrays aligned with this design's columns and :data:`PHASES`."""
        return {
            "peak_flop_s": self._table(p.peak_flop_s, "peak_flop_s"),
            "flop_half": self._table(p.flop_half, "flop_half"),
            "j_per_flop": self._table(p.j_per_flop, "j_per_flop"),
            "conv_share": self._table(p.conv_share, "conv_share"),
            "conv_flop_half": self._table(p.conv_flop_half, "conv_flop_half"),
            "dispatch_s": np.array([p.dispatch_s[ph] for ph in PHASES]),
            **{name: float(getattr(p, name)) for name in (*SCALARS, "busy_w", "ramp_share")},
        }

    def set(self, v: dict[str, Any], name: str, value: float) -> None:
        """Set flat-named parameter ``name`` in ``v`` (a :meth:`vec`), in place."""
        prefix = prefix_of(name)
        if prefix == name:
            v[name] = value
            return
        inner = name[len(prefix) + 1 : -1]
        if prefix == "dispatch_s":
            v[prefix][PHASES.index(inner)] = value
            return
        key = parse_key(inner)
        for j, k in enumerate(self.keys):
            if k == key:
                v[prefix][j] = value

    def _curve(self, v: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """(FLOP-equivalents per counted FLOP, ramp FLOPs per kernel) of each column."""
        share = np.where(self.conv, v["conv_share"], 1.0)
        half = np.where(self.conv, v["conv_flop_half"], v["flop_half"])
        return 1.0 / share, half

    def times(self, p: PhysicalParams | dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """(device seconds, host seconds) per profile."""
        v = self.vec(p) if isinstance(p, PhysicalParams) else p
        scale, half = self._curve(v)
        ramp = (self.row_flops > 0) * (half * self.ramp_kernels)
        compute = ((self.row_flops * scale + ramp) / v["peak_flop_s"]).sum(axis=1)
        memory = (self.row_bytes + (self.row_bytes > 0) * v["bytes_half"] * self.kernels) / v[
            "bandwidth_b_s"
        ]
        launch = v["launch_s"] * self.kernels
        row_s = np.maximum(np.maximum(compute, memory), launch) * self.calls
        device = np.bincount(self.sample, weights=row_s, minlength=self.n)
        host = v["host_step_s"] + self.phase_kernels @ v["dispatch_s"]
        return device, host

    def work_j(self, p: PhysicalParams | dict[str, Any]) -> np.ndarray:
        """FLOPs x J/FLOP + bytes x J/B per profile."""
        v = self.vec(p) if isinstance(p, PhysicalParams) else p
        scale, half = self._curve(v)
        # each kernel's ramp: half FLOP-equivalents per (unit, format) it runs; a convolution's
        # slower rate costs full power (conv_share x the rate at the same draw)
        ramp = np.zeros_like(self.flops)
        per_row = (self.row_flops > 0) * self.ramp_kernels * self.calls[:, None] * half
        np.add.at(ramp, self.sample, per_row)
        flops = self.flops * scale + v["ramp_share"] * ramp
        return flops @ v["j_per_flop"] + self.step_bytes * v["j_per_byte"]


def predict_step(profile: StepProfile, params: PhysicalParams) -> StepPrediction:
    """The modelled time and energy of one counted step.

    Raises:
        ValueError: the profile has work but no ``op_costs``.
        KeyError: the step runs a (unit, format) the params have no rate for.
    """
    design = StepDesign.build([profile])
    device, host = design.times(params)
    return _prediction(
        float(device[0]), float(host[0]), None, float(design.work_j(params)[0]), params
    )


def predict_steps(profiles: Sequence[StepProfile], params: PhysicalParams) -> list[StepPrediction]:
    """:func:`predict_step` of many profiles at once (one vectorised pass)."""
    design = StepDesign.build(list(profiles))
    device, host = design.times(params)
    work = design.work_j(params)
    return [
        _prediction(float(d), float(h), None, float(w), params)
        for d, h, w in zip(device, host, work, strict=True)
    ]


def energy_at(profile: StepProfile, params: PhysicalParams, time_s: float) -> StepPrediction:
    """The modelled energy of one step that took a measured ``time_s`` seconds."""
    design = StepDesign.build([profile])
    device, host = design.times(params)
    return _prediction(
        float(device[0]), float(host[0]), float(time_s), float(design.work_j(params)[0]), params
    )


def _prediction(
    device_s: float, host_s: float, time_s: float | None, work_j: float, p: PhysicalParams
) -> StepPrediction:
    t = max(device_s, host_s) if time_s is None else time_s
    static_j, busy_j = p.base_w * t, p.busy_w * min(device_s, t)
    return StepPrediction(
        time_s=t,
        device_s=device_s,
        host_s=host_s,
        bound="device" if device_s >= host_s else "host",
        energy_j=static_j + work_j + busy_j,
        static_j=static_j,
        work_j=work_j,
        busy_j=busy_j,
    )


def _prior_of(target: str) -> PhysicalParams | None:
    """``prior_for`` of a hardware key, or None for a key this version does not know."""
    # imported here: physical_prior builds on this module
    from lightning_to_energy.hardware.specs import find_hardware
    from lightning_to_energy.model.physical_prior import prior_for

    try:
        return prior_for(find_hardware(target))
    except (KeyError, ValueError):
        return None


# --- a calibrated model: parameters, the range they were fitted on, and measured intervals -----

EXTRAPOLATION_WIDENING = 2.0
"""The stated factor on the log half width of an interval outside the calibration's range, for
a model that carries no measured one (a file written before the widening was measured, or data
with fewer than two families to hold out): nothing measured lies there."""
STATED_WIDENING_BASIS = (
    f"stated x{EXTRAPOLATION_WIDENING:g}, not measured (no held-out family to measure it on)"
)
_SIZE_MARGIN = 10.0  # "10x larger (or smaller)" than any calibrated step is an extrapolation


def matrix_curves(profile: StepProfile) -> set[str]:
    """The matrix-unit curves a step's work runs on: ``"conv matrix/tf32"`` for a
    convolution's matrix work (``conv_share``, ``conv_flop_half``), ``"matmul matrix/fp32"``
    for any other matrix work (``flop_half``), as :class:`StepDesign` splits them."""
    return {
        f"{'conv' if cost.kind == CONV else 'matmul'} {key_name((unit, fmt))}"
        for cost, _ in profile.op_costs
        for (_, fmt, unit), n in cost.ops.items()
        if n > 0 and unit is Unit.MATRIX
    }


def optimizer_kernels(profile: StepProfile) -> float:
    """Kernels a step launches in its optimizer phase (each costs ``dispatch_s[optimizer]``):
    one per ``_foreach_*`` call (foreach SGD 1, with momentum 3, AdamW 9, fused AdamW 2), or one per
    parameter and operation on the per-parameter path."""
    phase = profile.by_phase.get("optimizer")
    return float(phase.kernels) if phase is not None else 0.0


@dataclass(frozen=True)
class PlannedStep:
    """One step's prediction with its intervals.

    Args:
        prediction: the model's time and energy.
        time_low_s, time_high_s: the time interval.
        energy_low_j, energy_high_j: the energy interval.
        level: the intervals' nominal coverage (0.9).
        extrapolation: why the step lies outside the calibration's range (empty inside it);
            the intervals are then widened in log space by the model's
            ``time_widening`` / ``energy_widening``.
        basis: what the intervals rest on, in words.
    """

    prediction: StepPrediction
    time_low_s: float
    time_high_s: float
    energy_low_j: float
    energy_high_j: float
    level: float
    extrapolation: tuple[str, ...]
    basis: str


@dataclass(frozen=True)
class PhysicalModel:
    """Fitted parameters with the range of steps they were fitted on and measured intervals.

    Args:
        params: the parameters.
        target: the hardware key the steps are counted for (``"h100-sxm"``).
        time_log_halfwidth, energy_log_halfwidth: half widths of the ``level`` intervals in
            log space, from cross-validated errors on held-out groups.
        level: the intervals' nominal coverage.
        basis: how the half widths were measured, in words.
        formats: the (unit, format) keys with work in the calibrated steps (``"matrix/tf32"``).
        flops_range: the smallest and largest FLOPs per calibrated step.
        kernels_range: the fewest and most kernels per calibrated step.
        source: the data the model was fitted on.
        time_widening, energy_widening: factors (>= 1) on the log half widths for a step outside
            the calibrated range; measured where the data hold several families (the ratio of
            the leave-one-family-out to the leave-one-shape-out half width), else
            :data:`EXTRAPOLATION_WIDENING` (stated).
        widening_basis: how the widening factors were obtained, in words.
        curves: the matrix curves (:func:`matrix_curves`) the calibrated steps ran; None for a
            file written before they were recorded (then not checked, as before).
        optimizer_kernels_range: the fewest and most optimizer-phase kernels per calibrated
            step (:func:`optimizer_kernels`); None for a file written before it was recorded
            (then not checked, as before).
    """

    params: PhysicalParams
    target: str
    time_log_halfwidth: float
    energy_log_halfwidth: float
    level: float
    basis: str
    formats: tuple[str, ...]
    flops_range: tuple[float, float]
    kernels_range: tuple[float, float]
    source: str = ""
    time_widening: float = EXTRAPOLATION_WIDENING
    energy_widening: float = EXTRAPOLATION_WIDENING
    widening_basis: str = STATED_WIDENING_BASIS
    curves: tuple[str, ...] | None = None
    optimizer_kernels_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        for name in ("time_widening", "energy_widening"):
            value = getattr(self, name)
            # below 1 an extrapolation would get a narrower interval than a calibrated step
            if not (math.isfinite(value) and value >= 1.0):
                raise ValueError(
                    f"PhysicalModel: expected {name} to be a finite factor >= 1; found "
                    f"{value!r}; fix: measure it (study.physical_eval.measure_widening) or "
                    f"leave it at the stated {EXTRAPOLATION_WIDENING:g}"
                )

    def extrapolation(self, profile: StepProfile) -> tuple[str, ...]:
        """Why ``profile`` lies outside the calibrated range (empty when it does not)."""
        why: list[str] = []
        used = sorted(
            {
                key_name((unit, fmt))
                for cost, _ in profile.op_costs
                for (_, fmt, unit), n in cost.ops.items()
                if n > 0
            }
        )
        unseen = [k for k in used if k not in self.formats]
        if unseen:
            why.append(f"formats no calibrated step ran: {unseen} (their rates are priors)")
        if self.curves is not None:
            curves = matrix_curves(profile) - set(self.curves)
            for kind, what in (("conv", "conv_share, conv_flop_half"), ("matmul", "flop_half")):
                keys = sorted(c.split(" ", 1)[1] for c in curves if c.startswith(kind + " "))
                if keys:
                    why.append(
                        f"{kind} work in {keys}, which no calibrated step ran as {kind} work "
                        f"(its curve there, {what}, is not calibrated on steps)"
                    )
        if self.optimizer_kernels_range is not None:
            olo, ohi = self.optimizer_kernels_range
            k = optimizer_kernels(profile)
            # no margin: the calibrated steps measured the dispatch of their optimizer's
            # kernels only; each kernel more rests on the prior dispatch_s[optimizer]
            if k > ohi:
                why.append(
                    f"{k:.0f} optimizer kernels per step, calibrated on {olo:.0f} to {ohi:.0f} "
                    "(another optimizer, e.g. AdamW against SGD steps: its host dispatch per "
                    "kernel, dispatch_s[optimizer], and its traffic are not calibrated)"
                )
        lo, hi = self.flops_range
        if profile.flops > _SIZE_MARGIN * hi or profile.flops * _SIZE_MARGIN < lo:
            why.append(f"{profile.flops:.3g} FLOPs per step, calibrated on {lo:.3g} to {hi:.3g}")
        klo, khi = self.kernels_range
        if profile.kernels > _SIZE_MARGIN * khi or profile.kernels * _SIZE_MARGIN < klo:
            why.append(
                f"{profile.kernels:.0f} kernels per step, calibrated on {klo:.0f} to {khi:.0f}"
            )
        return tuple(why)

    def plan(self, profile: StepProfile) -> PlannedStep:
        """The step's prediction with its intervals (widened outside the calibrated range)."""
        pred = predict_step(profile, self.params)
        why = self.extrapolation(profile)
        wt, we = (self.time_widening, self.energy_widening) if why else (1.0, 1.0)
        qt, qe = wt * self.time_log_halfwidth, we * self.energy_log_halfwidth
        basis = self.basis + (
            f"; extrapolation ({'; '.join(why)}): intervals widened in log space x{wt:.3g} "
            f"(time) and x{we:.3g} (energy), {self.widening_basis}"
            if why
            else ""
        )
        return PlannedStep(
            prediction=pred,
            time_low_s=pred.time_s * math.exp(-qt),
            time_high_s=pred.time_s * math.exp(qt),
            energy_low_j=pred.energy_j * math.exp(-qe),
            energy_high_j=pred.energy_j * math.exp(qe),
            level=self.level,
            extrapolation=why,
            basis=basis,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (what a calibration file carries under ``"physical"``)."""
        return {
            "params": self.params.to_dict(),
            "target": self.target,
            "time_log_halfwidth": self.time_log_halfwidth,
            "energy_log_halfwidth": self.energy_log_halfwidth,
            "level": self.level,
            "basis": self.basis,
            "formats": list(self.formats),
            "flops_range": list(self.flops_range),
            "kernels_range": list(self.kernels_range),
            "source": self.source,
            "time_widening": self.time_widening,
            "energy_widening": self.energy_widening,
            "widening_basis": self.widening_basis,
            **({} if self.curves is None else {"curves": list(self.curves)}),
            **(
                {}
                if self.optimizer_kernels_range is None
                else {"optimizer_kernels_range": list(self.optimizer_kernels_range)}
            ),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PhysicalModel:
        """Read :meth:`to_dict`'s output back.

        Raises:
            ValueError: a field is missing or mistyped.
        """
        try:
            return cls(
                params=PhysicalParams.from_dict(
                    d["params"],
                    # only a file written before the conv curve needs the prior
                    None if "conv_share" in d["params"] else _prior_of(str(d["target"])),
                ),
                target=str(d["target"]),
                time_log_halfwidth=float(d["time_log_halfwidth"]),
                energy_log_halfwidth=float(d["energy_log_halfwidth"]),
                level=float(d["level"]),
                basis=str(d["basis"]),
                formats=tuple(str(f) for f in d["formats"]),
                flops_range=(float(d["flops_range"][0]), float(d["flops_range"][1])),
                kernels_range=(float(d["kernels_range"][0]), float(d["kernels_range"][1])),
                source=str(d.get("source", "")),
                # a file written before the widening was measured: the stated factor
                time_widening=float(d.get("time_widening", EXTRAPOLATION_WIDENING)),
                energy_widening=float(d.get("energy_widening", EXTRAPOLATION_WIDENING)),
                widening_basis=str(d.get("widening_basis", STATED_WIDENING_BASIS)),
                # a file written before they were recorded: not checked, as then
                curves=tuple(str(c) for c in d["curves"]) if "curves" in d else None,
                optimizer_kernels_range=(
                    (float(d["optimizer_kernels_range"][0]), float(d["optimizer_kernels_range"][1]))
                    if "optimizer_kernels_range" in d
                    else None
                ),
            )
        except (KeyError, TypeError, IndexError) as exc:
            raise ValueError(
                f"physical model: expected params, target, time_log_halfwidth, "
                f"energy_log_halfwidth, level, basis, formats, flops_range, kernels_range; "
                f"found a missing or mistyped field ({exc!r}); fix: write it with "
                "PhysicalModel.to_dict() (lightning-to-energy fit --out)"
            ) from None
