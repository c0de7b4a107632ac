"""Cross-validate the physical step model on the shared H100 training steps (no GPU needed).

    PYTHONPATH=src python benchmarks/physical_eval.py \\
        --data ../shared/data/h100-training-steps.json --out docs/data/h100-shared-eval.json

Counts every configuration for h100-sxm on meta tensors, then scores ours and the FLOPs/TOs
baselines on leave one shape / family / configuration out (see
``lightning_to_energy.study.physical_eval``), and the fit on all 54 steps with every parameter's
source. Writes JSON (and prints the Markdown tables).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time

import torch

from lightning_to_energy.hardware.specs import find_hardware
from lightning_to_energy.model import fit_physical, prior_for
from lightning_to_energy.study.physical_eval import (
    SPLITS,
    SharedRow,
    evaluate,
    params_table,
    render_markdown,
)
from lightning_to_energy.study.shared_data import (
    load_shared_data,
    microbenchmark_samples,
    shared_samples,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", default=None)
    parser.add_argument("--splits", default=",".join(SPLITS))
    parser.add_argument("--hardware", default="h100-sxm")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    data = load_shared_data(args.data)
    pairs = shared_samples(data, args.hardware)
    samples = [s for _, s in pairs]
    extra = microbenchmark_samples(data)
    prior = prior_for(find_hardware(args.hardware))
    rows = [
        SharedRow(
            c.id,
            c.shape,
            c.family,
            s.profile.flops,
            s.profile.tos,
            c.time_s,
            c.energy_j,
            c.repeat_time_s,
            c.repeat_energy_j,
        )
        for c, s in pairs
    ]
    result = evaluate(
        rows,
        samples,
        prior,
        extra=extra,
        splits=args.splits.split(","),
        target=args.hardware,
        progress=lambda m: print(m, file=sys.stderr),
    )
    fit = fit_physical(samples + extra, prior)
    result["fit_all"] = {
        "parameters": params_table(fit),
        "time_rel_residuals": dict(zip(fit.labels, fit.time_rel_residuals, strict=True)),
        "energy_rel_residuals": dict(zip(fit.labels, fit.energy_rel_residuals, strict=True)),
    }
    result["source"] = data.source
    result["counted_as"] = f"profile(..., hardware={args.hardware!r}) on meta tensors"
    result["extra_samples"] = [s.label for s in extra]
    result["machine"] = f"{platform.processor() or platform.machine()}, torch {torch.__version__}"
    result["date"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(render_markdown(result))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1, sort_keys=False)
            f.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
