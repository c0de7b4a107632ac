"""The energy model's features: their names, the units of their coefficients, their vectors."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["FEATURES", "feature_unit", "feature_vector"]

FEATURES: tuple[str, ...] = (
    "duration_s",
    "tos_matrix_full",
    "tos_matrix_reduced",
    "tos_vector",
    "bytes",
    "kernels",
)

_UNIT_BY_PREFIX = (
    ("duration", "W"),
    ("roofline", "W"),  # a duration too: the roofline estimate of the step's time
    ("tos", "J/TO"),
    ("flops", "J/FLOP"),
    ("bytes", "J/B"),
    ("kernels", "J/kernel"),
    ("steps", "J/step"),
)


def feature_unit(name: str) -> str:
    """The physical unit of the coefficient of feature ``name``.

    ``duration_s`` and ``roofline_s`` -> ``"W"`` (static power), ``tos*`` -> ``"J/TO"``,
    ``bytes*`` -> ``"J/B"``, ``kernels*`` -> ``"J/kernel"``, ``flops*`` -> ``"J/FLOP"``,
    anything else -> ``"J/<name>"``.
    """
    for prefix, unit in _UNIT_BY_PREFIX:
        if name.startswith(prefix):
            return unit
    return f"J/{name}"


def feature_vector(
    names: tuple[str, ...], x: Mapping[str, float] | Sequence[float] | np.ndarray
) -> np.ndarray:
    """``x`` as the model's feature vector, in the order of ``names``.

    Raises:
        ValueError: a missing feature, a wrong length, or a value that is not a finite
            number >= 0 (the message names it and the fix).
    """
    if isinstance(x, Mapping):
        missing = [n for n in names if n not in x]
        if missing:
            raise ValueError(
                f"features: expected keys {list(names)}, found {sorted(map(str, x))} "
                f"(missing {missing}); fix: pass every feature the model was built with."
            )
        raw = [x[n] for n in names]
    elif isinstance(x, (str, bytes)):
        raise ValueError(
            f"features: expected a mapping or a sequence of numbers, found {x!r}; "
            f"fix: pass a dict keyed by {list(names)}."
        )
    else:
        raw = list(x)
        if len(raw) != len(names):
            raise ValueError(
                f"features: expected {len(names)} values in the order "
                f"{list(names)}, found {len(raw)}; fix: pass one value per feature, "
                "or a dict keyed by feature name."
            )
    out = np.empty(len(raw))
    for i, (name, value) in enumerate(zip(names, raw, strict=True)):
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = math.nan
        if not math.isfinite(v) or v < 0:
            raise ValueError(
                f"feature {name!r}: expected a finite number >= 0, found {value!r}; fix: "
                "skip or mark this window (features count seconds, operations, bytes)."
            )
        out[i] = v
    return out
