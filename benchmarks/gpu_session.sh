#!/usr/bin/env bash
# Every GPU check the project still owes, in stages that each fit a 10-minute call on a
# borrowed GPU machine (run from the repository root; no install needed: PYTHONPATH=src).
#
#   benchmarks/gpu_session.sh STAGE [OUT_DIR]      # OUT_DIR defaults to gpu-results
#
# Stages (run in this order; each writes OUT_DIR/<stage>.log and its own files):
#   check     nvidia-smi, `lightning-to-energy sensors`, the opt-in GPU tests (NVML for real,
#             the bf16 example); about 2 minutes
#   sensors   benchmarks/sensors.py: counter vs integrated power, per-window thread time
#   overhead  benchmarks/overhead.py on CUDA: bf16-mixed GPT, fp32 GPT, CNN (about 8 minutes)
#   counting  benchmarks/counting.py on CUDA
#   converge  examples/gpu_bf16.py: a real run, predicted vs measured joules per window
#   study     benchmarks/paper_study.py, resumable: repeat until it exits 0 (2 or 3 calls; the
#             study directory must survive between calls, or be carried back and forth);
#             then, where the repository lives: `lightning-to-energy study eval
#             OUT_DIR/study-h100 --results-md docs/results.md`
#
# Exit status: the stage's own (the study exits 3 while configurations are left).
set -uo pipefail

stage="${1:-}"
out="${2:-gpu-results}"
mkdir -p "$out"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
py="${PYTHON:-python}"
log="$out/$stage.log"

run() {  # run a command, echo it first, and keep its output in the stage's log
    echo "\$ $*" | tee -a "$log"
    "$@" 2>&1 | tee -a "$log"
    return "${PIPESTATUS[0]}"
}

case "$stage" in
    check)
        : > "$log"
        run nvidia-smi --query-gpu=name,driver_version,power.limit,memory.total --format=csv
        run "$py" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"
        run "$py" -m lightning_to_energy sensors
        if "$py" -c "import pytest" 2>/dev/null; then
            run "$py" -m pytest -q --run-gpu -m gpu -p no:cacheprovider tests
        else  # a device image without pytest: the bf16 example is the GPU test's body
            echo "pytest is not installed here: running the GPU example instead" | tee -a "$log"
            run "$py" examples/gpu_bf16.py --max-steps 200 --layers 2 --dim 128 --out "$out/check"
        fi
        ;;
    sensors)
        : > "$log"
        run "$py" benchmarks/sensors.py
        ;;
    overhead)
        : > "$log"
        run "$py" benchmarks/overhead.py --device cuda --rounds 6
        run "$py" benchmarks/overhead.py --device cuda --precision 32-true --rounds 6
        run "$py" benchmarks/overhead.py --device cuda --model cnn --rounds 6
        ;;
    counting)
        : > "$log"
        run "$py" benchmarks/counting.py --device cuda
        ;;
    converge)
        : > "$log"
        run "$py" examples/gpu_bf16.py --max-steps 3000 --out "$out/converge"
        ;;
    study)
        # appended, not truncated: the study is resumed over several calls
        run "$py" benchmarks/paper_study.py --out "$out/study-h100" --budget-min 9 \
            --results-md "$out/results.md"
        ;;
    *)
        echo "usage: benchmarks/gpu_session.sh check|sensors|overhead|counting|converge|study [OUT_DIR]" >&2
        exit 2
        ;;
esac
