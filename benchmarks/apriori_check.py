"""The a-priori check: the shared H100 training steps predicted from a microbenchmark calibration.

After ``lightning-to-energy calibrate`` on a GPU (``benchmarks/gpu_session.sh``, stage
``calibrate``), where the repository and ``../shared/data`` live (no GPU needed)::

    PYTHONPATH=src python benchmarks/apriori_check.py docs/data/<gpu>/calibration.json \\
        --out docs/data/<gpu>/apriori.json [--compare]

or, with no calibration at all, from the datasheet priors a run starts from on that GPU
(``model.physical_prior.prior_for``: datasheet peaks, the shared format microbenchmarks)::

    PYTHONPATH=src python benchmarks/apriori_check.py --datasheet h100-sxm \\
        --out docs/data/h100-sxm/apriori-datasheet.json

Counts each shared configuration's step for the calibration's target (meta tensors), predicts
its time and energy with the calibrated physical parameters alone (no training step fitted),
and scores them against the measurements: precision = 100 x (1 - MAPE), R^2, median and worst
relative error, for the time, the energy at the predicted time (a plan) and the energy at the
measured time (the energy parameters alone). ``--compare`` also fits the physical model on the
shared steps themselves and prints its leave-one-shape-out precision next to it (about a
minute more). The shared data were measured on one H100 80GB HBM3: a calibration of another
GPU (an H200) predicts a different device, and the output says so.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

DEFAULT_DATA = "../shared/data/h100-training-steps.json"


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "calibration", nargs="?", default=None, help="a calibration file written by calibrate --out"
    )
    source.add_argument(
        "--datasheet",
        default=None,
        metavar="KEY",
        help="no calibration: the datasheet priors of hardware KEY (e.g. h100-sxm)",
    )
    parser.add_argument("--data", default=DEFAULT_DATA, help=f"default {DEFAULT_DATA}")
    parser.add_argument("--out", default=None, metavar="FILE", help="write the scores as JSON")
    parser.add_argument("--only", default=None, metavar="REGEX", help="configuration ids")
    parser.add_argument(
        "--compare", action="store_true", help="also fit on the shared steps (leave one shape out)"
    )
    return parser


def load_params(calibration: Path | None, datasheet: str | None) -> tuple[Any, str, str, str]:
    """(physical parameters, their target key, the GPU they describe, where they come from)."""
    from lightning_to_energy.calibration import Calibration
    from lightning_to_energy.hardware.specs import find_hardware
    from lightning_to_energy.model.physical import PhysicalModel
    from lightning_to_energy.model.physical_prior import prior_for

    if calibration is None:
        key = str(datasheet)
        spec = find_hardware(key)  # raises KeyError naming the known keys
        return prior_for(spec), spec.key, spec.name, f"datasheet priors of {spec.key}"
    found = Calibration.from_dict(json.loads(calibration.read_text(encoding="utf-8")))
    if found.physical is None:
        raise ValueError(
            f"expected a calibration with a physical model (written by calibrate --out), found "
            f"{calibration} without one. Fix: pass the calibrate run's --out file."
        )
    model = PhysicalModel.from_dict(found.physical)
    return model.params, model.target, found.hardware.label, str(calibration)


def check(
    calibration: Path | None,
    data: Path,
    only: str | None = None,
    compare: bool = False,
    datasheet: str | None = None,
) -> dict[str, Any]:
    """The a-priori scores of ``calibration`` (or of ``datasheet``'s priors when None) on the
    shared data (see the module docstring)."""
    import numpy as np

    from lightning_to_energy.model.physical import energy_at
    from lightning_to_energy.study.physical_eval import physical_predictions, precision_scores
    from lightning_to_energy.study.shared_data import TARGET, load_shared_data, shared_samples

    params, target, gpu, source = load_params(calibration, datasheet)
    shared = load_shared_data(data)
    ids = [c.id for c in shared.configs if only is None or re.search(only, c.id)]
    if not ids:
        raise ValueError(
            f"expected --only to match some of the {len(shared.configs)} configurations, found "
            f"none matching {only!r}. Fix: e.g. --only '^mlp-'."
        )
    # the steps as the shared data's GPU runs them; the parameters are the calibrated GPU's
    pairs = shared_samples(shared, TARGET, ids)
    samples = [s for _, s in pairs]
    pred = physical_predictions(params, samples)
    t = np.array([s.time_s for s in samples])
    e = np.array([s.energy_j for s in samples])
    at_measured = np.array([energy_at(s.profile, params, s.time_s).energy_j for s in samples])
    result: dict[str, Any] = {
        "calibration": source,
        "calibrated_gpu": gpu,
        "target": target,
        "data": str(data),
        "data_gpu": shared.hardware.get("gpu"),
        "same_gpu_kind": target == TARGET,
        "configurations": len(samples),
        "a_priori": {
            "time": precision_scores(pred[:, 0], t),
            "energy": precision_scores(pred[:, 1], e),
            "energy_at_measured_time": precision_scores(at_measured, e),
        },
        "per_config": [
            {
                "id": s.label,
                "time_s": s.time_s,
                "pred_time_s": float(p[0]),
                "energy_j": s.energy_j,
                "pred_energy_j": float(p[1]),
            }
            for s, p in zip(samples, pred, strict=True)
        ],
    }
    if compare:
        from lightning_to_energy.study.physical_eval import fit_shared

        result["fitted_leave_one_shape_out"] = dict(fit_shared(data, ids=ids).scores)
    return result


def render(result: dict[str, Any]) -> str:
    """The scores as a few lines of text."""
    lines = [
        f"a-priori check: {result['configurations']} shared steps ({result['data_gpu']}) "
        f"predicted from {result['calibration']} ({result['calibrated_gpu']}, {result['target']})"
    ]
    if not result["same_gpu_kind"]:
        lines.append(
            "  NB: the calibration is of another GPU than the data's: the scores mix the "
            "model's error with the difference between the two GPUs"
        )
    rows = [("a priori", k, v) for k, v in result["a_priori"].items()]
    rows += [
        ("fitted, held out", k, v) for k, v in result.get("fitted_leave_one_shape_out", {}).items()
    ]
    for how, target, sc in rows:
        lines.append(
            f"  {how:<17} {target:<24} precision {sc['precision_pct']:6.2f} %  median "
            f"{100 * sc['median_rel_err']:6.2f} %  worst {100 * sc['worst_rel_err']:7.2f} %"
        )
    return "\n".join(lines)


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as None (strict JSON; R^2 of one step is NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    """Run the check; 0 on success, 2 on bad input."""
    args = build_parser().parse_args(argv)
    try:
        calibration = None if args.calibration is None else Path(args.calibration)
        result = check(calibration, Path(args.data), args.only, args.compare, args.datasheet)
    except (OSError, ValueError, KeyError) as exc:
        print(f"apriori_check: error: {exc}", file=sys.stderr)
        return 2
    print(render(result))
    if args.out:
        Path(args.out).write_text(json.dumps(_finite(result), indent=1, allow_nan=False) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
